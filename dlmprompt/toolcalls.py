"""Tool calls whose arguments always satisfy the tool's schema.

A tool call is one JSON value under ``anyOf`` of ``{"name": <const>, "arguments": <the tool's
parameters>}``, one branch per tool (an array of them, up to a bound, for parallel calls), so the
JSON machinery makes every call exact: the name is one of the tools and the arguments validate.

``tool_choice``: ``"required"`` or a named tool gives a call; ``"none"`` a text reply; ``"auto"``
lets the model decide first, **by a choice slot**: after the conversation and the tool list, the
slot ``action`` holds ``call`` or ``reply`` (the model's own probabilities decide, constrained to
those two), and the answer is then written under the chosen constraint. Tool messages and earlier
calls in the history go through the chat template: the model's own tool format when its template
takes ``tools``, else a shipped one (the tools listed in a system message, calls written as
``<tool_call>{...}</tool_call>``).
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
        params = t.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(params, (dict, bool)):
            raise SpecError(f"tool {t['name']!r}: parameters must be a JSON Schema object")
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
        name = (tool_choice.get("function") or {}).get("name") if tool_choice.get("type") == "function" else None
        named = [t for t in tools if t["name"] == name]
        if named:
            return "required", named
        raise SpecError(f"tool_choice names {name!r}, which is not among the tools {[t['name'] for t in tools]}")
    raise SpecError(f"tool_choice is 'auto', 'required', 'none' or {{'type': 'function', ...}}; got {tool_choice!r}")


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
    for m in messages:
        m = dict(m.model_dump() if hasattr(m, "model_dump") else m)
        calls = m.pop("tool_calls", None)
        if calls:
            written = [
                json.dumps({"name": c["function"]["name"], "arguments": json.loads(c["function"]["arguments"] or "{}")})
                for c in calls
            ]
            m["content"] = _text(m.get("content")) + "".join(f"<tool_call>{w}</tool_call>" for w in written)
        m.pop("tool_call_id", None)
        m.pop("name", None)
        history.append(m)
    return chat([system, *history], model=model)


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
    model: Any = None,
) -> tuple[str, Prompt | None, Prompt, Prompt]:
    """(mode, the decision prompt or None, the call prompt, the reply prompt). ``reply_slot``: the
    slot a text reply is written in, named ``reply`` (default: free text of ``max_reply_tokens``), e.g. a JSON
    Schema slot when the reply has a ``response_format``."""
    normal = normalize_tools(tools)
    mode, usable = _choice(tool_choice, normal)
    base = conversation(messages, normal, model=model)
    schema = call_schema(usable, parallel=parallel_tool_calls, max_calls=max_calls)
    call = base + "<tool_call>" + slot("call", schema=schema, max_tokens=max_tokens) + "</tool_call>"
    reply = base + (slot("reply", max_tokens=max_reply_tokens) if reply_slot is None else reply_slot)
    decide = base + "Next: " + slot("action", choice=["call", "reply"], max_tokens=2) if mode == "auto" else None
    return mode, decide, call, reply


def answer_of(mode: str, decided: str | None, result: Any) -> ToolAnswer:
    """The :class:`ToolAnswer` of the answer generation (``decided``: the decision's value)."""
    if mode == "none" or decided == "reply":
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
    ``max_calls``, ``max_tokens`` (the budget of each argument value), ``max_reply_tokens``."""
    from dlmprompt.sampling.sampler import generate

    mode, decide, call, reply = tool_prompts(messages, tools, model=model, **options)
    first = generate(model, decide, generator=generator) if decide is not None else None
    decided = None if first is None else first["action"]
    result = generate(model, reply if mode == "none" or decided == "reply" else call, generator=generator)
    answer = answer_of(mode, decided, result)
    return answer if first is None else ToolAnswer(answer.calls, answer.text, (first, result))
