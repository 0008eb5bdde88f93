"""LlamaIndex: an ``LLM`` on a dlmprompt model whose structured outputs are exact.

``pip install llama-index-core``; then::

    from dlmprompt.integrations.llamaindex import DLMPromptLLM

    llm = DLMPromptLLM()                          # the embedded model
    llm = DLMPromptLLM("http://127.0.0.1:8000")   # a ``dlmprompt serve`` server
    llm.chat([ChatMessage(role="user", content="Hi")])
    person = llm.structured_predict(Person, PromptTemplate("Ann Lee (41) is on our staff. {q}"), q="Who?")

:class:`DLMPromptLLM` subclasses ``llama_index.core.llms.LLM`` (not ``CustomLLM``: that one turns
chat messages into one prompt string, while the backend renders chat turns itself). Every call
becomes one OpenAI chat body for the :func:`~dlmprompt.integrations.core.chat_backend` seam (in
process or over HTTP, the same mapping); ``complete`` sends its prompt as one user turn.

**Exact structured outputs.** LlamaIndex's default ``structured_predict`` asks for JSON in the
prompt and parses the text, which a model can get wrong. Here ``structured_predict``,
``astructured_predict``, ``stream_structured_predict`` and ``astream_structured_predict`` send the
output class's JSON Schema as a ``response_format`` constraint instead, so the answer is valid under
it by construction and validates into the class; ``as_structured_llm(cls)`` rides on them (its
``chat`` / ``achat`` / ``stream_chat`` return or stream objects of ``cls``).

Budgets: ``max_tokens`` bounds a text answer; in a structured answer it means the budget of each
free value (a string, a number), capped by ``value_tokens`` (default 16), as ``dlmprompt serve``
reads it. Per call, ``max_tokens``, ``temperature``, ``seed``, ``response_format`` (an OpenAI dict
or a pydantic class), ``tools`` / ``tool_choice`` (OpenAI shapes) and dlmprompt's constraint extras
(``regex``, ``choice``, ``grammar``, ``grounded``, ``steps``) may be passed as keyword arguments.

Errors: content a dlmprompt model cannot read (images, audio, video, documents) and unknown
keyword arguments raise :class:`UnsupportedInput`, a :class:`~dlmprompt.errors.SpecError`.

This module imports ``llama_index.core`` when it is imported; ``import dlmprompt.integrations``
does not.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Generator, Sequence
from typing import Any, TypeVar

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
    TextBlock,
)
from llama_index.core.bridge.pydantic import BaseModel, Field, PrivateAttr
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events.llm import (
    LLMStructuredPredictEndEvent,
    LLMStructuredPredictInProgressEvent,
    LLMStructuredPredictStartEvent,
)
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.llm import LLM
from llama_index.core.program.utils import process_streaming_objects
from llama_index.core.prompts import BasePromptTemplate

from dlmprompt.errors import SpecError
from dlmprompt.integrations.core import ChatBackend, chat_backend, json_schema_of

__all__ = ["DLMPromptLLM", "UnsupportedInput"]

Model = TypeVar("Model", bound=BaseModel)
dispatcher = get_dispatcher(__name__)

VALUE_TOKENS = 16  # per free JSON value, the server's default
CALL_OPTIONS = frozenset(
    {
        "max_tokens",
        "temperature",
        "seed",
        "response_format",
        "regex",
        "choice",
        "grammar",
        "grounded",
        "steps",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
    }
)
_ROLES = {
    MessageRole.SYSTEM: "system",
    MessageRole.DEVELOPER: "system",
    MessageRole.USER: "user",
    MessageRole.ASSISTANT: "assistant",
    MessageRole.CHATBOT: "assistant",
    MessageRole.MODEL: "assistant",
    MessageRole.TOOL: "tool",
    MessageRole.FUNCTION: "tool",
}
_SKIPPED_BLOCKS = {"thinking", "cache"}  # an earlier turn's reasoning, a provider cache marker


class UnsupportedInput(SpecError):
    """A LlamaIndex call carries something a dlmprompt model cannot take (an image, an unknown option)."""


def _message(index: int, message: ChatMessage) -> dict[str, Any]:
    role = _ROLES.get(message.role, "user")
    texts: list[str] = []
    calls: list[dict[str, Any]] = list(message.additional_kwargs.get("tool_calls") or [])
    for block in message.blocks:
        kind = getattr(block, "block_type", type(block).__name__)
        if isinstance(block, TextBlock):
            texts.append(block.text)
        elif kind == "tool_call":
            args = block.tool_kwargs if isinstance(block.tool_kwargs, str) else json.dumps(block.tool_kwargs)
            ident = block.tool_call_id or f"call_{index}_{len(calls)}"
            calls.append({"id": ident, "type": "function", "function": {"name": block.tool_name, "arguments": args}})
        elif kind not in _SKIPPED_BLOCKS:
            raise UnsupportedInput(
                f"message {index} ({role}) holds a {kind} block; dlmprompt models read text only. "
                "Pass text instead (for an image or a document, a description or its text)"
            )
    out: dict[str, Any] = {"role": role, "content": "\n".join(texts) if texts or not calls else None}
    if calls and role == "assistant":
        out["tool_calls"] = calls
    if role == "tool":
        out["tool_call_id"] = message.additional_kwargs.get("tool_call_id") or f"call_{index}"
    return out


def _schema_format(output_cls: Any) -> dict[str, Any]:
    schema = json_schema_of(output_cls)
    name = getattr(output_cls, "__name__", None) or "response"
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def _content(answer: dict[str, Any]) -> str:
    return answer["choices"][0]["message"].get("content") or ""


class _ChatStream:
    """OpenAI chunks -> LlamaIndex chat responses: text as it grows, and tool calls (assembled from
    their deltas) in ``additional_kwargs["tool_calls"]`` of the response sent when they finish."""

    def __init__(self) -> None:
        self.text = ""
        self.calls: dict[int, dict[str, Any]] = {}

    def feed(self, chunk: dict[str, Any]) -> list[ChatResponse]:
        out = []
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            for d in delta.get("tool_calls") or []:
                call = self.calls.setdefault(
                    d.get("index", 0), {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
                )
                call["id"] = d.get("id") or call["id"]
                fn = d.get("function") or {}
                call["function"]["name"] += fn.get("name") or ""
                call["function"]["arguments"] += fn.get("arguments") or ""
            text = delta.get("content") or ""
            if text:
                self.text += text
                out.append(
                    ChatResponse(
                        message=ChatMessage(role=MessageRole.ASSISTANT, content=self.text), delta=text, raw=chunk
                    )
                )
            if choice.get("finish_reason") == "tool_calls" and self.calls:
                extra = {"tool_calls": [self.calls[i] for i in sorted(self.calls)]}
                reply = ChatMessage(role=MessageRole.ASSISTANT, content=self.text, additional_kwargs=extra)
                out.append(ChatResponse(message=reply, delta="", raw=chunk))
        return out


class DLMPromptLLM(LLM):
    """A LlamaIndex ``LLM`` on a dlmprompt model: ``model`` is anything
    :func:`~dlmprompt.integrations.core.chat_backend` takes (nothing for the embedded model, a model
    from ``dlmprompt.load()``, a checkpoint folder, a ``dlmprompt serve`` URL or a ChatBackend).
    ``backend_options`` go to ``chat_backend`` (``api_key=``, ``timeout=`` for a URL); other keyword
    arguments are LlamaIndex's (``system_prompt``, ``callback_manager``, ...)."""

    max_tokens: int = Field(default=256, gt=0, description="Token budget of a text answer.")
    temperature: float | None = Field(
        default=None, ge=0.0, description="Sampling temperature (the sampler's default when None)."
    )
    seed: int | None = Field(default=None, description="Seed of the sampler, for reproducible answers.")
    value_tokens: int = Field(default=VALUE_TOKENS, gt=0, description="Budget of each free value of a JSON answer.")
    context_window: int = Field(default=2048, gt=0, description="Canvas tokens a request may use.")

    _backend: ChatBackend = PrivateAttr()

    def __init__(
        self,
        model: Any = None,
        *,
        max_tokens: int = 256,
        temperature: float | None = None,
        seed: int | None = None,
        value_tokens: int = VALUE_TOKENS,
        backend_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        backend = chat_backend(model, **(backend_options or {}))
        super().__init__(max_tokens=max_tokens, temperature=temperature, seed=seed, value_tokens=value_tokens, **kwargs)
        self._backend = backend

    @classmethod
    def class_name(cls) -> str:
        return "DLMPromptLLM"

    @property
    def backend(self) -> ChatBackend:
        """The :class:`~dlmprompt.integrations.core.ChatBackend` the calls go to."""
        return self._backend

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(
            context_window=self.context_window,
            num_output=self.max_tokens,
            is_chat_model=True,
            is_function_calling_model=False,
            model_name=self._backend.model_name,
        )

    # ------------------------------------------------------------------------------------------ bodies
    def _body(self, messages: Sequence[ChatMessage], options: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(options) - CALL_OPTIONS)
        if unknown:
            raise UnsupportedInput(f"DLMPromptLLM does not take {unknown}; per call it takes {sorted(CALL_OPTIONS)}")
        body: dict[str, Any] = {"messages": [_message(i, m) for i, m in enumerate(messages)]}
        if not body["messages"]:
            raise UnsupportedInput("give at least one message")
        settings = {"max_tokens": self.max_tokens, "temperature": self.temperature, "seed": self.seed}
        body.update({k: v for k, v in {**settings, **options}.items() if v is not None})
        fmt = body.get("response_format")
        if isinstance(fmt, type) or (fmt is not None and not isinstance(fmt, dict)):
            body["response_format"] = _schema_format(fmt)  # a pydantic class, a TypedDict, list[int], ...
        if fmt is not None or body.get("tools"):  # JSON answers and tool arguments: a budget per value
            body["max_tokens"] = min(options.get("max_tokens") or self.value_tokens, self.value_tokens)
        return body

    @staticmethod
    def _chat_response(answer: dict[str, Any]) -> ChatResponse:
        message = answer["choices"][0]["message"]
        extra = {"tool_calls": message["tool_calls"]} if message.get("tool_calls") else {}
        reply = ChatMessage(role=MessageRole.ASSISTANT, content=message.get("content") or "", additional_kwargs=extra)
        return ChatResponse(message=reply, raw=answer, additional_kwargs={"usage": answer.get("usage")})

    @staticmethod
    def _user(prompt: str) -> list[ChatMessage]:
        return [ChatMessage(role=MessageRole.USER, content=prompt)]

    # ------------------------------------------------------------------------------------------ chat / complete
    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self._chat_response(self._backend.complete(self._body(messages, kwargs)))

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        body = self._body(messages, kwargs)

        def gen() -> ChatResponseGen:
            acc = _ChatStream()
            for chunk in self._backend.stream(body):
                yield from acc.feed(chunk)

        return gen()

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        answer = self._backend.complete(self._body(self._user(prompt), kwargs))
        return CompletionResponse(text=_content(answer), raw=answer)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        body = self._body(self._user(prompt), kwargs)

        def gen() -> CompletionResponseGen:
            text = ""
            for chunk in self._backend.stream(body):
                for choice in chunk.get("choices") or []:
                    delta = (choice.get("delta") or {}).get("content") or ""
                    if delta:
                        text += delta
                        yield CompletionResponse(text=text, delta=delta, raw=chunk)

        return gen()

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self._chat_response(await self._backend.acomplete(self._body(messages, kwargs)))

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        body = self._body(messages, kwargs)

        async def gen() -> ChatResponseAsyncGen:
            acc = _ChatStream()
            async for chunk in self._backend.astream(body):
                for response in acc.feed(chunk):
                    yield response

        return gen()

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        answer = await self._backend.acomplete(self._body(self._user(prompt), kwargs))
        return CompletionResponse(text=_content(answer), raw=answer)

    @llm_completion_callback()
    async def astream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseAsyncGen:
        body = self._body(self._user(prompt), kwargs)

        async def gen() -> CompletionResponseAsyncGen:
            text = ""
            async for chunk in self._backend.astream(body):
                for choice in chunk.get("choices") or []:
                    delta = (choice.get("delta") or {}).get("content") or ""
                    if delta:
                        text += delta
                        yield CompletionResponse(text=text, delta=delta, raw=chunk)

        return gen()

    # ------------------------------------------------------------------------------------------ structured
    def _structured_body(
        self, output_cls: type[BaseModel], prompt: BasePromptTemplate, llm_kwargs: dict[str, Any] | None, args: Any
    ) -> dict[str, Any]:
        messages = self._get_messages(prompt, **args)
        return self._body(messages, {**(llm_kwargs or {}), "response_format": _schema_format(output_cls)})

    @dispatcher.span
    def structured_predict(
        self,
        output_cls: type[Model],
        prompt: BasePromptTemplate,
        llm_kwargs: dict[str, Any] | None = None,
        **prompt_args: Any,
    ) -> Model:
        """An ``output_cls`` object for the prompt, its JSON Schema the exact constraint of the answer."""
        dispatcher.event(
            LLMStructuredPredictStartEvent(output_cls=output_cls, template=prompt, template_args=prompt_args)
        )
        answer = self._backend.complete(self._structured_body(output_cls, prompt, llm_kwargs, prompt_args))
        result = output_cls.model_validate_json(_content(answer))
        dispatcher.event(LLMStructuredPredictEndEvent(output=result))
        return result

    @dispatcher.span
    async def astructured_predict(
        self,
        output_cls: type[Model],
        prompt: BasePromptTemplate,
        llm_kwargs: dict[str, Any] | None = None,
        **prompt_args: Any,
    ) -> Model:
        """The async :meth:`structured_predict`."""
        dispatcher.event(
            LLMStructuredPredictStartEvent(output_cls=output_cls, template=prompt, template_args=prompt_args)
        )
        answer = await self._backend.acomplete(self._structured_body(output_cls, prompt, llm_kwargs, prompt_args))
        result = output_cls.model_validate_json(_content(answer))
        dispatcher.event(LLMStructuredPredictEndEvent(output=result))
        return result

    @dispatcher.span
    def stream_structured_predict(
        self,
        output_cls: type[Model],
        prompt: BasePromptTemplate,
        llm_kwargs: dict[str, Any] | None = None,
        **prompt_args: Any,
    ) -> Generator[Any, None, None]:
        """Partial objects (LlamaIndex's flexible models) as the answer settles left to right, then
        the complete ``output_cls`` object."""
        dispatcher.event(
            LLMStructuredPredictStartEvent(output_cls=output_cls, template=prompt, template_args=prompt_args)
        )
        body = self._structured_body(output_cls, prompt, llm_kwargs, prompt_args)
        text, current = "", None
        for chunk in self._backend.stream(body):
            for choice in chunk.get("choices") or []:
                delta = (choice.get("delta") or {}).get("content") or ""
                if delta:
                    text += delta
                    current = process_streaming_objects(
                        CompletionResponse(text=text), output_cls, cur_objects=None if current is None else [current]
                    )
                    dispatcher.event(LLMStructuredPredictInProgressEvent(output=current))
                    yield current
        result = output_cls.model_validate_json(text)
        dispatcher.event(LLMStructuredPredictEndEvent(output=result))
        yield result

    @dispatcher.span
    async def astream_structured_predict(
        self,
        output_cls: type[Model],
        prompt: BasePromptTemplate,
        llm_kwargs: dict[str, Any] | None = None,
        **prompt_args: Any,
    ) -> AsyncGenerator[Any, None]:
        """The async :meth:`stream_structured_predict` (awaited, it gives the async generator)."""
        body = self._structured_body(output_cls, prompt, llm_kwargs, prompt_args)

        async def gen() -> AsyncGenerator[Any, None]:
            dispatcher.event(
                LLMStructuredPredictStartEvent(output_cls=output_cls, template=prompt, template_args=prompt_args)
            )
            text, current = "", None
            async for chunk in self._backend.astream(body):
                for choice in chunk.get("choices") or []:
                    delta = (choice.get("delta") or {}).get("content") or ""
                    if delta:
                        text += delta
                        current = process_streaming_objects(
                            CompletionResponse(text=text),
                            output_cls,
                            cur_objects=None if current is None else [current],
                        )
                        yield current
            result = output_cls.model_validate_json(text)
            dispatcher.event(LLMStructuredPredictEndEvent(output=result))
            yield result

        return gen()
