"""LangChain: :class:`ChatDLMPrompt`, a ``BaseChatModel`` over an in-process model or a server.

    from dlmprompt.integrations.langchain import ChatDLMPrompt

    llm = ChatDLMPrompt()                          # the embedded model; or model="http://host:8000"
    llm.invoke("Hello")
    llm.bind_tools([get_weather], tool_choice="any").invoke("Weather in Paris?")   # exact calls
    llm.with_structured_output(Person).invoke("Ada Lovelace, 36")                  # a valid Person
    llm.bind(regex=r"\\d{3}-\\d{4}").invoke("A phone number:")                      # any constraint

Every constraint is exact: a tool call names one of the bound tools with arguments valid under its
schema, and every ``with_structured_output`` method (``json_schema``, ``function_calling``,
``json_mode``) gives a value valid under the schema. ``json_mode`` constrains to the schema too
(LangChain passes it; a bare JSON object would be weaker than what we can promise).

``stop`` sequences cut a free-text answer after generation (a diffusion model fills its whole slot
at once; a constrained answer is never cut);
``max_tokens`` is the text slot's length, or each free JSON value's budget (at most 64).
Requires ``pip install "dlmprompt[langchain]"``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from operator import itemgetter
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, convert_to_openai_messages
from langchain_core.messages.ai import UsageMetadata
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.output_parsers.openai_tools import JsonOutputKeyToolsParser, PydanticToolsParser
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.utils.function_calling import convert_to_json_schema, convert_to_openai_tool
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr

from dlmprompt.errors import SpecError
from dlmprompt.integrations.core import ChatBackend, chat_backend

# request fields a caller may bind or pass per call (llm.bind(regex=...), llm.invoke(x, seed=1))
_BODY_KEYS = {
    "tools", "tool_choice", "parallel_tool_calls", "response_format", "regex", "choice", "grammar",
    "grounded", "steps", "seed", "temperature", "max_tokens", "structured_outputs", "model",
}  # fmt: skip


def _is_pydantic_class(obj: Any) -> bool:
    from pydantic.v1 import BaseModel as BaseModelV1

    return isinstance(obj, type) and issubclass(obj, (BaseModel, BaseModelV1))


def _usage(use: dict[str, int] | None) -> UsageMetadata | None:
    if not use:
        return None
    return UsageMetadata(
        input_tokens=use["prompt_tokens"], output_tokens=use["completion_tokens"], total_tokens=use["total_tokens"]
    )


_BACKEND_LOCK = threading.Lock()


def _tool_calls(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "name": c["function"]["name"],
            "args": json.loads(c["function"]["arguments"]),
            "id": c["id"],
            "type": "tool_call",
        }
        for c in calls
    ]


class ChatDLMPrompt(BaseChatModel):
    """A diffusion language model as a LangChain chat model (see the module docstring).

    ``model``: what ``dlmprompt.load`` takes (nothing: the embedded model; a checkpoint folder;
    a loaded model; a ``http(s)://`` URL of ``dlmprompt serve``)."""

    model_config = ConfigDict(arbitrary_types_allowed=True, populate_by_name=True)

    model: Any = None
    model_name: str = "dlmprompt-default"
    temperature: float | None = None
    max_tokens: int | None = None
    stop: list[str] | None = Field(default=None, alias="stop_sequences")
    seed: int | None = None
    steps: int | None = None
    timeout: float | None = None
    max_retries: int = 2
    api_key: SecretStr | None = None
    streaming: bool = False
    _backend: ChatBackend | None = PrivateAttr(default=None)

    @property
    def _llm_type(self) -> str:
        return "dlmprompt"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        where = self.model if isinstance(self.model, str) or self.model is None else type(self.model).__name__
        return {"model": where, "model_name": self.model_name, "temperature": self.temperature}

    @property
    def backend(self) -> ChatBackend:
        with _BACKEND_LOCK:  # llm.batch on a checkpoint folder loads it once
            return self._make_backend()

    def _make_backend(self) -> ChatBackend:
        if self._backend is None:
            opts: dict[str, Any] = {}
            if isinstance(self.model, str) and self.model.startswith(("http://", "https://")):
                if self.api_key is not None:
                    opts["api_key"] = self.api_key.get_secret_value()
                if self.timeout is not None:
                    opts["timeout"] = self.timeout
                opts["retries"] = self.max_retries
            self._backend = chat_backend(self.model, **opts)
        return self._backend

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider="dlmprompt",
            ls_model_name=kwargs.get("model") or self.model_name,
            ls_model_type="chat",
        )
        temperature = kwargs.get("temperature", self.temperature)
        if temperature is not None:
            params["ls_temperature"] = temperature
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        if max_tokens is not None:
            params["ls_max_tokens"] = max_tokens
        if stop or self.stop:
            params["ls_stop"] = stop or self.stop
        return params

    # ------------------------------------------------------------------ requests
    def _body(self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(kwargs) - _BODY_KEYS - {"ls_structured_output_format", "stream_options"})
        if unknown:
            raise SpecError(f"ChatDLMPrompt does not take {unknown}; it takes {sorted(_BODY_KEYS)}")
        body: dict[str, Any] = {"messages": convert_to_openai_messages(messages, text_format="string")}
        for key, value in (("temperature", self.temperature), ("max_tokens", self.max_tokens)):
            if value is not None:
                body[key] = value
        for key, value in (("seed", self.seed), ("steps", self.steps)):
            if value is not None:
                body[key] = value
        body.update({k: v for k, v in kwargs.items() if k in _BODY_KEYS and v is not None})
        body["model"] = kwargs.get("model") or self.model_name
        if stop or self.stop:
            body["stop"] = list(stop or self.stop or [])
        return body

    def _message(self, answer: dict[str, Any]) -> AIMessage:
        choice = answer["choices"][0]
        msg, finish = choice["message"], choice["finish_reason"]
        meta = {"model_name": answer.get("model", self.model_name), "finish_reason": finish}
        meta["model_provider"] = "dlmprompt"
        if msg.get("tool_calls"):
            return AIMessage(
                content="",
                tool_calls=_tool_calls(msg["tool_calls"]),
                usage_metadata=_usage(answer.get("usage")),
                response_metadata=meta,
                id=answer.get("id"),
            )
        text = msg.get("content") or ""
        return AIMessage(
            content=text, usage_metadata=_usage(answer.get("usage")), response_metadata=meta, id=answer.get("id")
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.streaming:
            from langchain_core.language_models.chat_models import generate_from_stream

            return generate_from_stream(self._stream(messages, stop, run_manager, **kwargs))
        answer = self.backend.complete(self._body(messages, stop, kwargs))
        return ChatResult(generations=[ChatGeneration(message=self._message(answer))])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        answer = await self.backend.acomplete(self._body(messages, stop, kwargs))
        return ChatResult(generations=[ChatGeneration(message=self._message(answer))])

    # ------------------------------------------------------------------ streaming
    def _to_chunks(self, item: dict[str, Any]) -> Iterator[ChatGenerationChunk]:
        """LangChain's chunks of one OpenAI chunk."""
        if item.get("usage") and not item.get("choices"):
            meta = {"model_name": item.get("model", self.model_name)}
            yield ChatGenerationChunk(
                message=AIMessageChunk(content="", usage_metadata=_usage(item["usage"]), response_metadata=meta)
            )
            return
        for ch in item.get("choices", []):
            delta, finish = ch.get("delta") or {}, ch.get("finish_reason")
            calls = [
                {
                    "name": (c.get("function") or {}).get("name"),
                    "args": (c.get("function") or {}).get("arguments"),
                    "id": c.get("id"),
                    "index": c.get("index"),
                }
                for c in delta.get("tool_calls") or []
            ]
            text = delta.get("content") or ""
            meta = {"finish_reason": finish, "model_name": item.get("model", self.model_name)} if finish else {}
            if text or calls or finish:
                yield ChatGenerationChunk(
                    message=AIMessageChunk(content=text, tool_call_chunks=calls, response_metadata=meta)
                )

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        body = self._body(messages, stop, kwargs)
        body["stream_options"] = {"include_usage": True}
        for item in self.backend.stream(body):
            for chunk in self._to_chunks(item):
                if run_manager and chunk.text:
                    run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk
        yield ChatGenerationChunk(message=AIMessageChunk(content="", chunk_position="last"))

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        body = self._body(messages, stop, kwargs)
        body["stream_options"] = {"include_usage": True}
        async for item in self.backend.astream(body):
            for chunk in self._to_chunks(item):
                if run_manager and chunk.text:
                    await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk
        yield ChatGenerationChunk(message=AIMessageChunk(content="", chunk_position="last"))

    # ------------------------------------------------------------------ tools and structure
    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable | Any],
        *,
        tool_choice: str | dict | bool | None = None,
        parallel_tool_calls: bool | None = None,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools; ``tool_choice``: ``"auto"`` (default), ``"any"`` / ``"required"`` / ``True``
        (a call), ``"none"``, or a tool's name (a call of that tool). Calls are exact whatever
        ``strict`` says."""
        specs = [convert_to_openai_tool(t) for t in tools]
        names = [s["function"]["name"] for s in specs]
        if tool_choice in ("any", True):
            tool_choice = "required"
        elif isinstance(tool_choice, str) and tool_choice not in ("auto", "required", "none"):
            if tool_choice not in names:
                raise SpecError(f"tool_choice {tool_choice!r} is not among the bound tools {names}")
            tool_choice = {"type": "function", "function": {"name": tool_choice}}
        elif tool_choice is False:
            tool_choice = "none"
        bound: dict[str, Any] = {"tools": specs, **kwargs}
        if tool_choice is not None:
            bound["tool_choice"] = tool_choice
        if parallel_tool_calls is not None:
            bound["parallel_tool_calls"] = parallel_tool_calls
        return self.bind(**bound)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type | None = None,
        *,
        method: Literal["json_schema", "function_calling", "json_mode"] = "json_schema",
        include_raw: bool = False,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict | BaseModel]:
        """A runnable whose output is valid under ``schema`` (a pydantic class gives an instance,
        a dict schema / TypedDict a dict). ``include_raw=True`` gives ``{"raw", "parsed",
        "parsing_error"}``."""
        if kwargs:
            raise SpecError(f"with_structured_output does not take {sorted(kwargs)}")
        if schema is None:
            if method != "json_mode":
                raise SpecError("give a schema (a pydantic class, a TypedDict or a JSON Schema dict)")
            json_schema: dict[str, Any] = {"type": "object"}
        else:
            json_schema = convert_to_json_schema(schema)
        fmt = {"schema": json_schema, "kwargs": {"method": method, "strict": strict}}
        if method == "function_calling":
            tool = convert_to_openai_tool(schema)
            name = tool["function"]["name"]
            llm = self.bind_tools([tool], tool_choice=name, ls_structured_output_format=fmt)
            parser: Runnable = (
                PydanticToolsParser(tools=[schema], first_tool_only=True)  # type: ignore[list-item]
                if _is_pydantic_class(schema)
                else JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)
            )
        elif method in ("json_schema", "json_mode"):
            name = getattr(schema, "__name__", None) or json_schema.get("title") or "response"
            if method == "json_schema":
                rf = {"type": "json_schema", "json_schema": {"name": str(name), "schema": json_schema, "strict": True}}
            else:  # the older json_object form with the schema: still exact
                rf = {"type": "json_object", "schema": json_schema}
            llm = self.bind(response_format=rf, ls_structured_output_format=fmt)
            parser = PydanticOutputParser(pydantic_object=schema) if _is_pydantic_class(schema) else JsonOutputParser()
        else:
            raise SpecError(f"method is 'json_schema', 'function_calling' or 'json_mode'; got {method!r}")
        if not include_raw:
            return llm | parser
        parsed = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser, parsing_error=lambda _: None)
        fallback = RunnablePassthrough.assign(parsed=lambda _: None)
        return RunnableMap(raw=llm) | parsed.with_fallbacks([fallback], exception_key="parsing_error")
