"""OpenAI chat completions with tools: a request becomes a :class:`ChatPlan` (the prompts to run),
its results become an OpenAI message, and a stream becomes OpenAI's chunks.

One plan, two drivers: the server runs each prompt as a job on its batching engine, the in-process
backend of the framework adapters (:mod:`dlmprompt.integrations.core`) runs it with
:func:`~dlmprompt.sampling.sampler.generate`. Both then build the same answer from the same
functions here, so a framework sees the same shapes in process and over HTTP.

Tools (see :mod:`dlmprompt.toolcalls`): ``"auto"`` (the default when tools are given) first runs a
choice slot after the conversation and the tool list, ``call`` or ``reply``; the model's own
probabilities, restricted to those two, decide. A call of one of several tools then runs a choice
over their names, and the call is written under the chosen tool's schema (``{"name",
"arguments"}``), so every call names one of the tools and its arguments are valid under that
tool's ``parameters``. ``"required"`` runs the name choice alone; a named tool runs its call
directly. ``parallel_tool_calls: true`` writes an array (up to ``MAX_PARALLEL_CALLS``) under
``anyOf`` of every tool. ``"none"`` writes a text reply. A text reply keeps the request's
``response_format`` (or other constraint); ``grounded`` grounds the reply's and the calls' free
strings.

``parallel_tool_calls`` absent means one call per turn: a diffusion model fills a fixed canvas,
and an array of calls costs canvas for every call it might hold.
"""

from __future__ import annotations

import codecs
import functools
from dataclasses import dataclass
from typing import Any

from dlmprompt.compiler import Program
from dlmprompt.errors import DLMPromptError
from dlmprompt.sampling.events import Result, Step
from dlmprompt.serving.protocol import (
    APIError,
    ChatRequest,
    Limits,
    answer_slot,
    answer_span,
    answer_text,
    cut_at_stop,
    finish_reason,
    openai_prompt,
    usage,
    with_options,
)
from dlmprompt.spec import Prompt
from dlmprompt.templating import render_chat
from dlmprompt.toolcalls import ToolPrompts, answer_of, tool_prompts

MAX_PARALLEL_CALLS = 4


@dataclass(frozen=True)
class ChatPlan:
    """What to run for one chat request: the reply prompt alone (no tools), or the prompts of a
    turn with tools."""

    reply: Prompt
    tools: ToolPrompts | None = None

    def next(self, done: list[Result]) -> tuple[str, Prompt]:
        """The next stage: ``("choice", prompt)`` to run and append to ``done``, or the answer's
        ``("call" | "reply", prompt)`` (see :meth:`dlmprompt.toolcalls.ToolPrompts.next`)."""
        return ("reply", self.reply) if self.tools is None else self.tools.next(done)

    def programs_to_check(self) -> list[Prompt]:
        """Every prompt the answer may run, to compile (and refuse) before anything runs."""
        if self.tools is None or self.tools.mode == "none":
            return [self.reply]
        return [self.reply, *self.tools.calls.values()]


def messages_of(req: ChatRequest) -> list[dict[str, Any]]:
    return [m.model_dump(exclude_none=True) for m in req.messages]


def chat_plan(req: ChatRequest, denoiser: Any, limits: Limits) -> ChatPlan:
    """The plan of a chat request (raises :class:`APIError` 400 for bad messages or tools)."""
    messages = messages_of(req)
    tokenizer = denoiser.tokenizer
    try:
        if not req.tools:
            if req.tool_choice not in (None, "none"):
                raise APIError(400, "tool_choice needs tools", code="bad_tools")
            text = render_chat(messages, model=denoiser)
            return ChatPlan(openai_prompt(req, text, None, limits, tokenizer))
        tools = [t.model_dump(exclude_none=True) for t in req.tools]
        n = req.max_completion_tokens or req.max_tokens
        grounded_text = render_chat(messages, model=denoiser) if req.grounded is True else ""
        # grounded: true, a text or texts: a reply's free strings and the calls' string arguments
        # are spans of them (true: of the conversation)
        ground = grounded_text if req.grounded is True else (req.grounded or None)
        if req.prompt_spec is not None:
            raise APIError(400, "give tools or dlmprompt_prompt, not both", code="bad_tools")
        plan = tool_prompts(
            messages,
            tools,
            tool_choice=req.tool_choice or "auto",
            parallel_tool_calls=bool(req.parallel_tool_calls),
            max_calls=MAX_PARALLEL_CALLS,
            max_tokens=min(n or 16, 64),
            reply_slot=answer_slot(req, limits, tokenizer, grounded_text, name="reply"),
            grounded=ground,
            model=denoiser,
        )
    except (DLMPromptError, ValueError, TypeError, KeyError) as exc:
        raise APIError(400, f"{type(exc).__name__}: {exc}", code="bad_tools" if req.tools else "bad_messages") from None
    opts = functools.partial(with_options, req)
    plan = ToolPrompts(
        plan.mode,
        None if plan.decide is None else opts(plan.decide),
        None if plan.pick is None else opts(plan.pick),
        {k: opts(v) for k, v in plan.calls.items()},
        opts(plan.reply),
    )
    return ChatPlan(plan.reply, plan)


def chat_message(kind: str, result: Result, stop: list[str] | None = None) -> tuple[dict[str, Any], str]:
    """(the assistant message, the finish reason) of the final result; a text reply is cut before
    the first of ``stop`` (:func:`~dlmprompt.serving.protocol.stops_for`)."""
    if kind == "call":
        calls = [c.as_openai() for c in answer_of(result).calls]
        return {"role": "assistant", "content": None, "tool_calls": calls}, "tool_calls"
    text, cut = cut_at_stop(answer_text(result), stop or [])
    return {"role": "assistant", "content": text}, "stop" if cut else finish_reason(result)


def total_usage(results: list[Result]) -> dict[str, int]:
    """Usage over every generation of the answer (the choices read the conversation too)."""
    out = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    for r in results:
        for k, v in usage(r).items():
            out[k] += v
    return out


def _partial_stop(text: str, stop: list[str]) -> int:
    """The length of the longest end of ``text`` that begins some stop sequence."""
    best = 0
    for s in stop:
        for n in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:n]):
                best = n
                break
    return best


def completion(ident: str, created: int, model: str, message: dict[str, Any], finish: str, use: dict) -> dict:
    return {
        "id": ident,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": use,
    }


class Chunks:
    """OpenAI's stream of one answer, as chunk dicts (the server sends each as an SSE ``data:``).

    A text answer streams as deltas of its settled left-to-right prefix while it is denoised; a
    tool call is sent once complete (its id and name, then its arguments), as OpenAI sends them.
    ``stop``: what :func:`~dlmprompt.serving.protocol.stops_for` gives for the answer's program.
    """

    def __init__(
        self,
        ident: str,
        created: int,
        model: str,
        *,
        chat: bool = True,
        include_usage: bool = False,
        stop: list[str] | None = None,
    ) -> None:
        self.ident, self.created, self.model, self.chat = ident, created, model, chat
        self.include_usage = include_usage
        self.stop = stop or []
        self.text_so_far = ""  # the text sent, to find a stop sequence across deltas
        self.held = ""  # an end of the text that may begin a stop sequence: sent once it cannot
        self.stopped = False
        self.sent = 0  # canvas positions of the answer already sent
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.started = False

    def chunk(self, delta: dict[str, Any] | None, finish: str | None, text: str = "") -> dict[str, Any]:
        if self.chat:
            ch: dict[str, Any] = {"index": 0, "delta": delta or {}, "finish_reason": finish, "logprobs": None}
            obj = "chat.completion.chunk"
        else:
            ch = {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}
            obj = "text_completion"
        return {"id": self.ident, "object": obj, "created": self.created, "model": self.model, "choices": [ch]}

    def start(self) -> list[dict[str, Any]]:
        if self.started or not self.chat:
            return []
        self.started = True
        return [self.chunk({"role": "assistant", "content": ""}, None)]

    def text(self, text: str, final: bool = False) -> dict[str, Any] | None:
        if self.stop:
            if self.stopped:
                return None
            kept, self.stopped = cut_at_stop(self.text_so_far + self.held + text, self.stop)
            hold = 0 if (self.stopped or final) else _partial_stop(kept, self.stop)
            text = kept[len(self.text_so_far) : len(kept) - hold]
            self.text_so_far = kept[: len(kept) - hold]
            self.held = kept[len(kept) - hold :]
            if not text:
                return None
        return self.chunk({"content": text}, None, text)

    def _advance(self, program: Program, canvas: Any, settled: Any = None) -> str:
        first, last = answer_span(program)
        stop = first + self.sent
        if settled is None:  # every committed token is final
            settled = canvas != program.mask_id
        while stop < last and settled[stop]:
            stop += 1
        ids = [int(t) for t in canvas[first + self.sent : stop].tolist() if t != program.pad_id]
        self.sent = stop - first
        return self.decoder.decode(program.tokenizer.decode_bytes(ids)) if ids else ""

    def step(self, program: Program, step: Step) -> list[dict[str, Any]]:
        """The chunks a denoising step of a text answer releases."""
        out = self.start()
        text = self._advance(program, step.canvas, step.settled)
        if text and (c := self.text(text)) is not None:
            out.append(c)
        return out

    def finish(self, kind: str, result: Result, results: list[Result]) -> list[dict[str, Any]]:
        """The last chunks: the rest of the text (or the tool calls), the finish reason, usage."""
        out = self.start()
        if kind == "call":
            message, finish = chat_message(kind, result)
            for i, call in enumerate(message["tool_calls"]):
                fn = call["function"]
                named = {"name": fn["name"], "arguments": ""}
                head = {"index": i, "id": call["id"], "type": "function", "function": named}
                out.append(self.chunk({"tool_calls": [head]}, None))
                out.append(self.chunk({"tool_calls": [{"index": i, "function": {"arguments": fn["arguments"]}}]}, None))
        else:
            text = self._advance(result.program, result.canvas) + self.decoder.decode(b"", final=True)
            if (text or self.held) and (c := self.text(text, final=True)) is not None:
                out.append(c)
            finish = "stop" if self.stopped else finish_reason(result)
        out.append(self.chunk({}, finish))
        if self.include_usage:
            tail = self.chunk(None, None)
            tail["choices"] = []
            tail["usage"] = total_usage(results)
            out.append(tail)
        return out
