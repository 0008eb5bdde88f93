"""Tool calls whose arguments always satisfy the tool's schema.

A call is one JSON value ``{"name": <const>, "arguments": <the tool's parameters>}`` under that
tool's schema, so the JSON machinery makes every call exact: the name is one of the tools and the
arguments validate. Parallel calls are an array (up to a bound) under ``anyOf`` of one such branch
per tool.

``tool_choice``: ``"none"`` writes a text reply; ``"auto"`` lets the model decide first, **by a
choice slot**: after the conversation and the tool list, the slot ``action`` holds ``call`` or
``reply`` (the model's own probabilities decide, constrained to those two). A call of one of
several tools then runs a second choice slot, ``tool``, over their names, and the call is written
under that tool's schema alone. So the structure comes first (whether to call, then what), then
the arguments, as a template of that one tool. ``"required"`` with several tools runs the name
choice alone; a named tool (or a single one) needs no choice. Tool messages and earlier calls in the history go through
the chat template: the model's own tool format when its template takes ``tools``, else a shipped
one (the tools listed in a system message, calls written as ``<tool_call>{...}</tool_call>``).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from dlmprompt.errors import SpecError
from dlmprompt.spec import Prompt, slot
from dlmprompt.templating import chat


@dataclass(frozen=True)
class ToolCall:
    """One call: its id (``call_...``), the tool's name and the arguments (a dict valid under the
    tool's ``parameters``)."""

    id: str
    name: str
    arguments: Any

    def as_openai(self) -> dict[str, Any]:
        args = json.dumps(self.arguments, ensure_ascii=False)
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": args}}


@dataclass(frozen=True)
class ToolAnswer:
    """What the model answered: tool calls, or a text reply (``text``; ``calls`` empty)."""

    calls: tuple[ToolCall, ...]
    text: str | None
    results: tuple[Any, ...]  # the Result of each generation (the decision, then the answer)

    @property
    def finish_reason(self) -> str:
        return "tool_calls" if self.calls else "stop"


def normalize_tools(tools: Any) -> list[dict[str, Any]]:
    """``[{"name", "description", "parameters"}]`` from OpenAI's ``{"type": "function",
    "function": {...}}`` shape or the bare function objects."""
    if not isinstance(tools, (list, tuple)) or not tools:
        raise SpecError("tools must be a non-empty list of function tools")
    out: list[dict[str, Any]] = []
    for i, t in enumerate(tools):
        if hasattr(t, "model_dump"):
            t = t.model_dump()
        if isinstance(t, dict) and t.get("type", "function") == "function" and isinstance(t.get("function"), dict):
            t = t["function"]
        if not isinstance(t, dict) or not isinstance(t.get("name"), str) or not t["name"]:
            raise SpecError(f"tool {i}: give {{'type': 'function', 'function': {{'name': ..., 'parameters': ...}}}}")
        params = t.get("parameters")
        if params is None or params is True or params == {}:
            params = {"type": "object", "properties": {}}
        if not isinstance(params, dict):
            raise SpecError(f"tool {t['name']!r}: parameters must be a JSON Schema object")
        kind = params.get("type", "object")
        if kind != "object" and kind != ["object"]:
            raise SpecError(f"tool {t['name']!r}: parameters must describe an object (named arguments); got {kind!r}")
        if "type" not in params:  # arguments are an object, as every client reads them
            params = {**params, "type": "object"}
        out.append({"name": t["name"], "description": str(t.get("description") or ""), "parameters": params})
    names = [t["name"] for t in out]
    if len(set(names)) != len(names):
        raise SpecError(f"tool names must be unique; got {names}")
    return out


def call_schema(tools: list[dict[str, Any]], *, parallel: bool = False, max_calls: int = 4) -> dict[str, Any]:
    """The JSON Schema every answer of these tools satisfies."""
    branches = [
        {
            "type": "object",
            "properties": {"name": {"const": t["name"]}, "arguments": t["parameters"]},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for t in tools
    ]
    one = branches[0] if len(branches) == 1 else {"anyOf": branches}
    if not parallel:
        return one
    return {"type": "array", "items": one, "minItems": 1, "maxItems": max_calls}


def _choice(tool_choice: Any, tools: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """(mode, the tools a call may use) for ``tool_choice``."""
    if tool_choice in (None, "auto", "required", "none"):
        return tool_choice or "auto", tools
    if isinstance(tool_choice, dict):
        fn = tool_choice.get("function")
        name = fn.get("name") if tool_choice.get("type") == "function" and isinstance(fn, dict) else None
        if name is None:
            shape = "{'type': 'function', 'function': {'name': ...}}"
            raise SpecError(f"tool_choice as an object is {shape}; got {tool_choice!r}")
        named = [t for t in tools if t["name"] == name]
        if named:
            return "required", named
        raise SpecError(f"tool_choice names {name!r}, which is not among the tools {[t['name'] for t in tools]}")
    raise SpecError(f"tool_choice is 'auto', 'required', 'none' or {{'type': 'function', ...}}; got {tool_choice!r}")


def _history_call(i: int, call: Any) -> dict[str, Any]:
    """``{"name", "arguments"}`` of an earlier call in message ``i`` (OpenAI's shape)."""
    fn = call.get("function") if isinstance(call, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        shape = "{'id', 'type': 'function', 'function': {'name', 'arguments'}}"
        raise SpecError(f"message {i}: each tool_calls entry is {shape}")
    args = fn.get("arguments") or "{}"
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            raise SpecError(f"message {i}: the arguments of the call of {fn['name']!r} are not JSON") from None
    return {"name": fn["name"], "arguments": args}


def _text(content: Any) -> str:
    """A message's text: a string, or the text parts of OpenAI's content list (tool-call parts of
    an assistant message are carried by its ``tool_calls``)."""
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return content or ""


def conversation(messages: Any, tools: list[dict[str, Any]], *, model: Any = None) -> Prompt:
    """The conversation with the tools, under the model's chat template (see the module doc)."""
    from dlmprompt.templating import chat_template_for

    source, _ = chat_template_for(model, None)
    if "tools" in source:  # the model's own tool format
        return chat(messages, model=model, tools=tools)
    listing = "\n".join(
        f"- {t['name']}: {t['description']} Arguments (JSON Schema): {json.dumps(t['parameters'])}" for t in tools
    )
    system = {
        "role": "system",
        "content": 'You can call these tools; write a call as <tool_call>{"name": ..., "arguments": ...}'
        f"</tool_call>.\n{listing}",
    }
    history = []
    for i, m in enumerate(messages):
        m = dict(m.model_dump() if hasattr(m, "model_dump") else m)
        calls = m.pop("tool_calls", None)
        if calls:
            written = [json.dumps(_history_call(i, c)) for c in calls]
            m["content"] = _text(m.get("content")) + "".join(f"<tool_call>{w}</tool_call>" for w in written)
        m.pop("tool_call_id", None)
        m.pop("name", None)
        history.append(m)
    return chat([system, *history], model=model)


@dataclass(frozen=True)
class ToolPrompts:
    """What to run for a turn with tools, stage by stage (see :meth:`next`).

    ``decide``: under ``"auto"``, a choice slot ``action`` (``call`` or ``reply``) after the
    conversation. ``pick``: with several usable tools (and no parallel calls), a choice slot
    ``tool`` over their names. The call is then written under the chosen tool's schema alone:
    whether, then which, then the arguments, as a template whose free strings can be grounded.
    With ``parallel_tool_calls`` the calls are one array under ``anyOf`` of every tool."""

    mode: str
    decide: Prompt | None
    pick: Prompt | None
    calls: dict[str, Prompt]  # a tool's name (or "*": the parallel array) -> the call prompt
    reply: Prompt

    def next(self, done: list[Any]) -> tuple[str, Prompt]:
        """The next stage given the results of the choices run so far: ``("choice", prompt)``
        (run it, append its result, ask again), or the answer, ``("call" | "reply", prompt)``."""
        if self.mode == "none":
            return "reply", self.reply
        chosen = {k: r[k] for r in done for k in ("action", "tool") if k in r.captures}
        if self.decide is not None and "action" not in chosen:
            return "choice", self.decide
        if chosen.get("action") == "reply":
            return "reply", self.reply
        if "*" in self.calls or len(self.calls) == 1:
            return "call", next(iter(self.calls.values()))
        if "tool" not in chosen:
            assert self.pick is not None
            return "choice", self.pick
        return "call", self.calls[chosen["tool"]]


def tool_prompts(
    messages: Any,
    tools: Any,
    *,
    tool_choice: Any = "auto",
    parallel_tool_calls: bool = False,
    max_calls: int = 4,
    max_tokens: int = 16,
    max_reply_tokens: int = 64,
    reply_slot: Any = None,
    grounded: Any = None,
    model: Any = None,
) -> ToolPrompts:
    """The :class:`ToolPrompts` of a turn. ``reply_slot``: the slot a text reply is written in,
    named ``reply`` (default: free text of ``max_reply_tokens``), e.g. a JSON Schema slot when the
    reply has a ``response_format``. ``grounded``: the calls' free string arguments are spans of
    these sources (what ``slot(grounded=...)`` takes), so a model copies a city or a name from the
    conversation instead of spelling it: the strings of required arguments, which the template
    lays out as holes of their own (not optional ones, nor with ``parallel_tool_calls``: those are
    written inside one region)."""
    normal = normalize_tools(tools)
    mode, usable = _choice(tool_choice, normal)
    base = conversation(messages, normal, model=model)

    def call_prompt(chosen: list[dict[str, Any]], parallel: bool) -> Prompt:
        schema = call_schema(chosen, parallel=parallel, max_calls=max_calls)
        ground = None if parallel else grounded
        # arguments the tool does not name are never written (still valid: a subset of its values)
        call = slot("call", schema=schema, max_tokens=max_tokens, grounded=ground, additional_properties=False)
        return base + "<tool_call>" + call + "</tool_call>"

    names = [t["name"] for t in usable]
    if parallel_tool_calls:
        calls = {"*": call_prompt(usable, True)}
    else:
        calls = {t["name"]: call_prompt([t], False) for t in usable}
    reply = base + (slot("reply", max_tokens=max_reply_tokens) if reply_slot is None else reply_slot)
    decide = base + "Next: " + slot("action", choice=["call", "reply"], max_tokens=2) if mode == "auto" else None
    pick = None
    if len(calls) > 1 and mode != "none":
        pick = base + "Tool: " + slot("tool", choice=names, max_tokens=max(len(n) for n in names))
    return ToolPrompts(mode, decide, pick, calls, reply)


def answer_of(result: Any) -> ToolAnswer:
    """The :class:`ToolAnswer` of the answer generation (a call prompt's or the reply's result)."""
    if "call" not in result.captures:
        return ToolAnswer((), result["reply"], (result,))
    value = json.loads(result["call"])
    calls = value if isinstance(value, list) else [value]
    out = tuple(ToolCall("call_" + uuid.uuid4().hex[:24], c["name"], c["arguments"]) for c in calls)
    return ToolAnswer(out, None, (result,))


def tool_call(model: Any, messages: Any, tools: Any, *, generator: Any = None, **options: Any) -> ToolAnswer:
    """Answer a conversation with tool calls (or a reply, as ``tool_choice`` allows), in process.
    Every call names one of ``tools`` and its arguments are valid under that tool's ``parameters``.

    Options (those of :func:`tool_prompts`): ``tool_choice`` (``"auto"``, ``"required"``,
    ``"none"`` or ``{"type": "function", "function": {"name": ...}}``), ``parallel_tool_calls``,
    ``max_calls``, ``max_tokens`` (the budget of each argument value), ``max_reply_tokens``,
    ``grounded``."""
    from dlmprompt.sampling.sampler import generate

    plan = tool_prompts(messages, tools, model=model, **options)
    done: list[Any] = []
    while (stage := plan.next(done))[0] == "choice":
        done.append(generate(model, stage[1], generator=generator))
    answer = answer_of(generate(model, stage[1], generator=generator))
    return ToolAnswer(answer.calls, answer.text, (*done, *answer.results))
