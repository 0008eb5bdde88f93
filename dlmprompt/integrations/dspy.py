"""DSPy: a language model for ``dspy.configure(lm=DLMPromptLM(model))`` whose typed outputs are exact.

``pip install dspy``; then::

    import dspy
    from dlmprompt.integrations.dspy import DLMPromptLM

    dspy.configure(lm=DLMPromptLM(), adapter=dspy.JSONAdapter())  # the embedded model
    dspy.configure(lm=DLMPromptLM("http://127.0.0.1:8000"))        # a ``dlmprompt serve`` server

**The DSPy interface used.** DSPy 3.4 deprecates custom LMs written as ``BaseLM`` subclasses with
``forward(prompt, messages, **kwargs)`` (scheduled for removal in 3.5, with a ``DeprecationWarning``
on every call) and recommends an *engine*: an object with ``complete(Request) -> Response`` (and
``stream(Request)``) over the canonical ``dspy.lm15`` types, passed to ``dspy.LM(engine=...,
async_engine=...)``. :class:`DLMPromptLM` is exactly that: a ``dspy.LM`` whose engines are
:class:`DLMPromptEngine` / :class:`AsyncDLMPromptEngine`. DSPy keeps its own cache, retries,
history, callbacks and adapters; the engine turns each ``Request`` into one OpenAI chat body for
the :func:`~dlmprompt.integrations.core.chat_backend` seam (in process or over HTTP, the same
mapping) and reads the answer back with ``dspy.lm15.response_from_openai_chat``.

**Exact typed outputs.** The engine declares ``supports_response_schema``, so DSPy's
``JSONAdapter`` sends each signature's output fields as a strict JSON Schema ``response_format``;
that schema becomes the exact constraint of the answer, so an ``int`` field is an integer, a
``Literal[...]`` one of its values, a pydantic field an object valid under its model. With the
default ``ChatAdapter`` the first call is free text in DSPy's ``[[ ## field ## ]]`` format; when it
does not parse, DSPy falls back to the ``JSONAdapter`` and so to the exact path. Tool calls
(``dspy.ToolCalls`` outputs with native function calling) map onto the backend's exact tool calls.

Budgets: ``max_tokens`` bounds a text answer; in a JSON answer it means the budget of each free
value (a string, a number), capped by ``value_tokens`` (default 16), as ``dlmprompt serve`` reads it.
DSPy's response cache is off by default (``cache=True`` turns it on): its key is the model string,
which does not say which checkpoint or server answers.

Errors: inputs a dlmprompt model cannot read (images, audio, files, built-in tools) raise
:class:`UnsupportedInput`; a request the backend refuses (a schema it cannot compile, too many
tokens) raises :class:`RequestRefused`. Both are :class:`~dlmprompt.errors.DLMPromptError` and DSPy
``LMError`` subclasses, so DSPy neither rewraps nor retries them.

This module imports ``dspy`` when it is imported; ``import dlmprompt.integrations`` does not.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import dspy
from dspy import lm15
from dspy.utils.exceptions import LMInvalidRequestError, LMUnsupportedFeatureError

from dlmprompt.errors import DLMPromptError
from dlmprompt.integrations.core import ChatBackend, chat_backend

__all__ = ["AsyncDLMPromptEngine", "DLMPromptEngine", "DLMPromptLM", "RequestRefused", "UnsupportedInput"]

VALUE_TOKENS = 16  # per free JSON value, the server's default
SUPPORTED_PARAMS = frozenset(
    {"temperature", "max_tokens", "seed", "response_format", "stream", "tools", "tool_choice", "parallel_tool_calls"}
)
_FINISH = {"stop": "stop", "length": "length", "tool_calls": "tool_call", "content_filter": "content_filter"}


class UnsupportedInput(DLMPromptError, LMUnsupportedFeatureError):
    """A DSPy request carries something a dlmprompt model cannot take (an image, a built-in tool)."""

    def __init__(self, message: str, *, feature: str | None = None) -> None:
        LMUnsupportedFeatureError.__init__(self, message, feature=feature, model="dlmprompt")


class RequestRefused(DLMPromptError, LMInvalidRequestError):
    """The dlmprompt backend refused the request; the message says why and what to change."""

    def __init__(self, message: str) -> None:
        LMInvalidRequestError.__init__(self, message, model="dlmprompt")


# ---------------------------------------------------------------------------------------------- Request -> body
def _text_of(parts: Any, where: str) -> str:
    """The text of a system prompt or a tool result (text parts only)."""
    if isinstance(parts, str):
        return parts
    out = []
    for part in parts:
        if not isinstance(part, lm15.TextPart):
            _refuse(part, where)
        out.append(part.text)
    return "\n".join(out)


def _refuse(part: Any, where: str) -> None:
    kind = getattr(part, "type", type(part).__name__)
    raise UnsupportedInput(
        f"{where} holds a {kind} part; dlmprompt models read text only. Pass text instead "
        f"(for a dspy.Image, a description or a caption of it)",
        feature=f"{kind}_input",
    )


def _messages(request: lm15.Request) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if request.system is not None:
        out.append({"role": "system", "content": _text_of(request.system, "the system prompt")})
    for i, message in enumerate(request.messages):
        where = f"message {i} ({message.role})"
        if message.role == "tool":
            for part in message.parts:
                content = _text_of(part.content, where)
                out.append({"role": "tool", "tool_call_id": part.id, "content": content})
            continue
        texts: list[str] = []
        calls: list[dict[str, Any]] = []
        for part in message.parts:
            if isinstance(part, lm15.TextPart):
                texts.append(part.text)
            elif isinstance(part, lm15.ToolCallPart) and message.role == "assistant":
                arguments = json.dumps(part.input, ensure_ascii=False)
                calls.append(
                    {"id": part.id, "type": "function", "function": {"name": part.name, "arguments": arguments}}
                )
            elif isinstance(part, lm15.ThinkingPart):
                continue  # an earlier turn's reasoning: not part of what the model reads
            else:
                _refuse(part, where)
        role = "system" if message.role == "developer" else message.role
        entry: dict[str, Any] = {"role": role, "content": "\n".join(texts) if texts or not calls else None}
        if calls:
            entry["tool_calls"] = calls
        out.append(entry)
    return out


def _tools(request: lm15.Request, body: dict[str, Any]) -> None:
    if not request.tools:
        return
    choice = request.config.tool_choice
    allowed = set(choice.allowed) if choice is not None and choice.allowed else None
    tools = []
    for tool in request.tools:
        if not isinstance(tool, lm15.FunctionTool):
            raise UnsupportedInput(
                f"the built-in tool {tool.name!r} runs on a provider's servers; give dlmprompt function tools",
                feature="builtin_tools",
            )
        if allowed is None or tool.name in allowed:
            function = {"name": tool.name, "parameters": tool.parameters}
            if tool.description:
                function["description"] = tool.description
            tools.append({"type": "function", "function": function})
    body["tools"] = tools
    if choice is None:
        return
    if choice.mode == "required" and len(tools) == 1 and allowed is not None:
        body["tool_choice"] = {"type": "function", "function": {"name": tools[0]["function"]["name"]}}
    else:
        body["tool_choice"] = choice.mode
    if choice.parallel is not None:
        body["parallel_tool_calls"] = choice.parallel


def openai_body(request: lm15.Request, *, value_tokens: int = VALUE_TOKENS) -> dict[str, Any]:
    """The OpenAI chat body of a ``dspy.lm15.Request`` for the dlmprompt backend. ``top_p`` is
    passed on and ignored, ``stop`` cuts a free-text answer, penalties are accepted only at 0 and
    ``logprobs`` is refused (as by ``dlmprompt serve``); ``top_k`` is not sent."""
    body: dict[str, Any] = {"messages": _messages(request)}
    config = request.config
    fmt = config.response_format
    if fmt is not None and fmt.get("type") == "json_schema":
        spec = {"name": fmt.get("name") or "response", "schema": fmt["schema"]}
        if "strict" in fmt:
            spec["strict"] = fmt["strict"]
        body["response_format"] = {"type": "json_schema", "json_schema": spec}
    elif fmt is not None:
        body["response_format"] = {"type": "json_object"}
    if config.max_tokens is not None:
        body["max_tokens"] = config.max_tokens
    if fmt is not None or request.tools:  # JSON answers and tool arguments: a budget per value
        body["max_tokens"] = min(config.max_tokens or value_tokens, value_tokens)
    for key in ("temperature", "seed", "top_p", "frequency_penalty", "presence_penalty", "service_tier"):
        if getattr(config, key) is not None:
            body[key] = getattr(config, key)
    if config.stop:
        body["stop"] = list(config.stop)
    if config.logprobs:
        raise UnsupportedInput("dlmprompt does not report log-probabilities; drop logprobs=", feature="logprobs")
    if config.reasoning is not None:
        raise UnsupportedInput("dlmprompt models have no reasoning mode; drop reasoning=", feature="reasoning")
    if config.probabilities is not None:
        raise UnsupportedInput("dlmprompt does not report judgment probabilities", feature="probabilities")
    body.update(config.extensions or {})
    _tools(request, body)
    return body


# ---------------------------------------------------------------------------------------------- answer -> Response
def _response(answer: dict[str, Any], model: str) -> lm15.Response:
    answer = dict(answer)
    answer.setdefault("model", model)
    return lm15.response_from_openai_chat(answer, model=model)


class _Stream:
    """OpenAI chunks → ``dspy.lm15`` stream events (start, text / tool-call deltas, end)."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.started = False
        self.finish: str | None = None
        self.usage: lm15.Usage | None = None
        self.calls: dict[int, int] = {}  # OpenAI tool-call index -> part index
        self.emitted = False  # text sent
        self.tools = False  # tool calls sent

    def events(self, chunk: dict[str, Any]) -> Iterator[Any]:
        if not self.started:
            self.started = True
            yield lm15.StreamStartEvent(id=chunk.get("id") or None, model=chunk.get("model") or self.model)
        if chunk.get("usage"):
            u = chunk["usage"]
            self.usage = lm15.Usage(input_tokens=u.get("prompt_tokens"), output_tokens=u.get("completion_tokens"))
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                self.emitted = True
                yield lm15.StreamDeltaEvent(delta=lm15.TextDelta(text=delta["content"], part_index=0))
            for call in delta.get("tool_calls") or []:
                part = self.calls.setdefault(call.get("index", 0), len(self.calls) + int(self.emitted))
                fn = call.get("function") or {}
                self.tools = True
                yield lm15.StreamDeltaEvent(
                    delta=lm15.ToolCallDelta(
                        input=fn.get("arguments") or "", part_index=part, id=call.get("id"), name=fn.get("name")
                    )
                )
            if choice.get("finish_reason"):
                self.finish = _FINISH.get(choice["finish_reason"], "stop")

    def end(self) -> Iterator[Any]:
        if not self.emitted and not self.tools:  # an empty answer is one empty text part, as in a complete Response
            yield lm15.StreamDeltaEvent(delta=lm15.TextDelta(text="", part_index=0))
        yield lm15.StreamEndEvent(finish_reason=self.finish or "stop", usage=self.usage or lm15.Usage())


def _refused(exc: DLMPromptError) -> RequestRefused:
    return RequestRefused(f"{type(exc).__name__}: {exc}")


# ---------------------------------------------------------------------------------------------- engines
class DLMPromptEngine:
    """A DSPy 3.4 engine (``complete(Request) -> Response``, ``stream(Request)``) over a
    :class:`~dlmprompt.integrations.core.ChatBackend`."""

    supports_response_schema = True
    supports_function_calling = True
    supports_reasoning = False
    supported_params = SUPPORTED_PARAMS

    def __init__(self, backend: ChatBackend, *, value_tokens: int = VALUE_TOKENS) -> None:
        self.backend = backend
        self.value_tokens = value_tokens

    def body(self, request: lm15.Request) -> dict[str, Any]:
        """The OpenAI body this engine sends for ``request``."""
        return openai_body(request, value_tokens=self.value_tokens)

    def complete(self, request: lm15.Request) -> lm15.Response:
        body = self.body(request)
        try:
            answer = self.backend.complete(body)
        except DLMPromptError as exc:
            raise _refused(exc) from exc
        return _response(answer, request.model)

    def stream(self, request: lm15.Request) -> Iterator[Any]:
        body = {**self.body(request), "stream_options": {"include_usage": True}}
        state = _Stream(request.model)
        try:
            for chunk in self.backend.stream(body):
                yield from state.events(chunk)
        except DLMPromptError as exc:
            raise _refused(exc) from exc
        if not state.started:
            yield lm15.StreamStartEvent(id="chatcmpl-" + uuid.uuid4().hex[:24], model=request.model)
        yield from state.end()

    def close(self) -> None:
        """Nothing to release: the backend is borrowed."""


class AsyncDLMPromptEngine:
    """The async counterpart of :class:`DLMPromptEngine` (``async complete``, async ``stream``)."""

    supports_response_schema = True
    supports_function_calling = True
    supports_reasoning = False
    supported_params = SUPPORTED_PARAMS

    def __init__(self, sync: DLMPromptEngine) -> None:
        self.sync = sync

    async def complete(self, request: lm15.Request) -> lm15.Response:
        body = self.sync.body(request)
        try:
            answer = await self.sync.backend.acomplete(body)
        except DLMPromptError as exc:
            raise _refused(exc) from exc
        return _response(answer, request.model)

    async def stream(self, request: lm15.Request) -> AsyncIterator[Any]:
        body = {**self.sync.body(request), "stream_options": {"include_usage": True}}
        state = _Stream(request.model)
        try:
            async for chunk in self.sync.backend.astream(body):
                for event in state.events(chunk):
                    yield event
        except DLMPromptError as exc:
            raise _refused(exc) from exc
        if not state.started:
            yield lm15.StreamStartEvent(id="chatcmpl-" + uuid.uuid4().hex[:24], model=request.model)
        for event in state.end():
            yield event

    async def aclose(self) -> None:
        """Nothing to release: the backend is borrowed."""


class DLMPromptLM(dspy.LM):
    """A ``dspy.LM`` on a dlmprompt model: ``model`` is anything
    :func:`~dlmprompt.integrations.core.chat_backend` takes (nothing for the embedded model, a model
    from ``dlmprompt.load()``, a checkpoint folder, a ``dlmprompt serve`` URL or a ChatBackend).

    ``max_tokens`` bounds a text answer (in a JSON answer: each free value, at most
    ``value_tokens``); ``temperature`` and ``seed`` are the sampler's. ``backend_options`` go to
    ``chat_backend`` (``api_key=``, ``timeout=`` for a URL); other keyword arguments are DSPy's
    (``callbacks``, ``num_retries``, default request parameters)."""

    def __init__(
        self,
        model: Any = None,
        *,
        max_tokens: int = 256,
        temperature: float | None = None,
        seed: int | None = None,
        value_tokens: int = VALUE_TOKENS,
        cache: bool = False,
        backend_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if isinstance(model, str) and model.startswith("dlmprompt/") and not os.path.exists(model):
            raise DLMPromptError(
                f"DLMPromptLM takes the model itself, not a DSPy model string: give nothing, a folder, a URL "
                f"or dlmprompt.load(...), not {model!r}"
            )
        backend = chat_backend(model, **(backend_options or {}))
        engine = DLMPromptEngine(backend, value_tokens=value_tokens)
        if seed is not None:
            kwargs["seed"] = seed
        super().__init__(
            "dlmprompt/" + backend.model_name,
            model_type="chat",
            temperature=temperature,
            max_tokens=max_tokens,
            cache=cache,
            engine=engine,
            async_engine=AsyncDLMPromptEngine(engine),
            **kwargs,
        )

    @property
    def backend(self) -> ChatBackend:
        """The :class:`~dlmprompt.integrations.core.ChatBackend` the engine talks to."""
        return self.engine.backend
