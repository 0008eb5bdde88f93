"""pydantic-ai: :class:`DLMPromptModel`, a pydantic-ai ``Model`` for a dlmprompt model, in process or
behind ``dlmprompt serve``::

    from pydantic_ai import Agent
    from dlmprompt.integrations.pydantic_ai import DLMPromptModel

    agent = Agent(DLMPromptModel(), output_type=Person)  # the embedded model, in this process
    agent = Agent(DLMPromptModel("http://127.0.0.1:8000"), output_type=Person)  # a server
    agent.run_sync("Ann Lee (41) is on our staff.").output  # a Person, valid under its schema

Design. The model is pydantic-ai's own :class:`~pydantic_ai.models.openai.OpenAIChatModel`, so every
message mapping, tool and streaming rule is pydantic-ai's, with two changes:

* its profile (:func:`dlmprompt_profile`) says what dlmprompt guarantees: native structured output
  (``response_format`` json_schema, exact: the default output mode is ``"native"``), JSON object
  output, tools (every call names a given tool, arguments valid under its schema), ``tool_choice``
  ``"required"`` and named; no thinking, no native (provider-side) tools, and schemas sent as
  pydantic writes them (no OpenAI "strict" rewriting: dlmprompt keeps any schema exactly);
* :class:`~pydantic_ai.output.PromptedOutput` is made exact too: pydantic-ai still writes the schema
  into the instructions and parses the text, but the request also carries the schema as a
  ``response_format`` (pass ``exact_prompted=False`` for plain prompting, where pydantic-ai sends
  ``{"type": "json_object"}``, which keeps the answer an object, not the schema).

Where the requests go. A ``http(s)://`` URL (or a ``dlmprompt.remote`` backend) is a server: the
OpenAI client talks to its ``/v1``. Anything else (nothing for the embedded model, a loaded
denoiser, a checkpoint folder, a :class:`~dlmprompt.integrations.core.ChatBackend`) runs in this
process: the OpenAI client gets an HTTP transport (:class:`ChatTransport`) that hands each chat body
to :func:`~dlmprompt.integrations.core.chat_backend`'s in-process backend, which maps it with the
server's own functions (messages, tools, constraints) and runs it on ``generate``. No socket is
opened; a stream is sent chunk by chunk as the model denoises (an ``httpx`` ``ASGITransport`` over
the server's app would buffer a whole stream before returning it, and skip the app's lifespan).

``pydantic_ai`` is imported only by this module.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import httpx2
from openai import AsyncOpenAI
from pydantic_ai.models import ModelRequestParameters
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.profiles import ModelProfileSpec
from pydantic_ai.profiles.openai import OpenAIModelProfile
from pydantic_ai.providers.openai import OpenAIProvider
from pydantic_ai.settings import ModelSettings

from dlmprompt.errors import DLMPromptError, SpecError
from dlmprompt.integrations.core import ChatBackend, RemoteChat, RequestRefused, chat_backend

__all__ = ["ChatTransport", "DLMPromptModel", "DLMPromptProvider", "dlmprompt_profile", "local_client"]

LOCAL_BASE_URL = "http://dlmprompt.local/v1"


def dlmprompt_profile(model_name: str = "dlmprompt-default") -> OpenAIModelProfile:
    """The pydantic-ai profile of a dlmprompt model: native structured output by default, tools,
    forced and named tool choice; no thinking, images or provider-side tools."""
    return OpenAIModelProfile(
        supports_tools=True,
        supports_json_schema_output=True,
        supports_json_object_output=True,
        default_structured_output_mode="native",
        json_schema_transformer=None,
        native_output_requires_schema_in_instructions=False,
        supports_image_output=False,
        supports_inline_system_prompts=True,
        supports_thinking=False,
        thinking_always_enabled=False,
        supported_native_tools=frozenset(),
        tool_deferral_mode=None,
        tool_addition_mode=None,
        openai_supports_strict_tool_definition=True,
        openai_supports_tool_choice_required=True,
        openai_chat_supports_max_completion_tokens=True,
        openai_chat_supports_web_search=False,
        openai_chat_send_back_thinking_parts=False,
        openai_supports_reasoning=False,
        openai_supports_encrypted_reasoning_content=False,
        openai_reasoning_enabled_by_default=False,
        openai_supports_phase=False,
        openai_supports_prompt_cache_breakpoints=False,
    )


class DLMPromptProvider(OpenAIProvider):
    """pydantic-ai's OpenAI provider, named ``dlmprompt``, with :func:`dlmprompt_profile`."""

    @property
    def name(self) -> str:
        return "dlmprompt"

    @staticmethod
    def model_profile(model_name: str) -> OpenAIModelProfile:
        return dlmprompt_profile(model_name)


# ---------------------------------------------------------------------------------------------- in process
class _Chunks(httpx2.AsyncByteStream):
    """The server-sent events of one streamed answer, made as the backend yields its chunks."""

    def __init__(self, chunks: AsyncIterator[dict[str, Any]]) -> None:
        self.chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self.chunks:
                yield b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"
        except DLMPromptError as exc:
            error = {"error": {"message": str(exc), "type": "server_error", "code": None}}
            yield b"event: error\ndata: " + json.dumps(error).encode() + b"\n\n"
            return
        yield b"data: [DONE]\n\n"

    async def aclose(self) -> None:
        close = getattr(self.chunks, "aclose", None)
        if close is not None:
            await close()


def _error(status: int, message: str, code: str | None) -> httpx2.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "code": code}}
    return httpx2.Response(status, json=body)


class ChatTransport(httpx2.AsyncBaseTransport):
    """An ``httpx2`` transport that answers ``POST /v1/chat/completions`` (and ``GET /v1/models``)
    from a :class:`~dlmprompt.integrations.core.ChatBackend` in this process, so an OpenAI client
    (and anything built on one) can use a model without a server. A refused body is a 400 with
    the server's error shape; a failure while streaming is an ``error`` event, as the server sends."""

    def __init__(self, backend: ChatBackend) -> None:
        self.backend = backend

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        path = request.url.path.rstrip("/")
        if request.method == "GET" and path.endswith("/v1/models"):
            model = {"id": self.backend.model_name, "object": "model", "created": 0, "owned_by": "dlmprompt"}
            return httpx2.Response(200, json={"object": "list", "data": [model]})
        if request.method != "POST" or not path.endswith("/v1/chat/completions"):
            return _error(404, f"no route {request.method} {path} in process (only chat completions)", None)
        try:
            body = json.loads(await request.aread())
        except ValueError:
            return _error(400, "the body is not JSON", "invalid_body")
        if not isinstance(body, dict):
            return _error(400, "the body is not a JSON object", "invalid_body")
        try:
            if body.get("stream"):
                chunks = self.backend.astream(body)
                first = await anext(chunks, None)  # a refused body fails here, before the 200
                if first is None:
                    return _error(500, "the backend sent no chunk", None)
                return httpx2.Response(
                    200, headers={"content-type": "text/event-stream"}, stream=_Chunks(_prepend(first, chunks))
                )
            return httpx2.Response(200, json=await self.backend.acomplete(body))
        except RequestRefused as exc:
            return _error(exc.status, str(exc), exc.code)
        except SpecError as exc:
            return _error(400, str(exc), "invalid_request")
        except DLMPromptError as exc:
            return _error(500, f"{type(exc).__name__}: {exc}", None)


async def _prepend(first: dict[str, Any], rest: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    try:
        yield first
        async for item in rest:
            yield item
    finally:  # a reader that leaves early stops the generation too
        close = getattr(rest, "aclose", None)
        if close is not None:
            await close()


def local_client(backend: ChatBackend) -> AsyncOpenAI:
    """An ``openai.AsyncOpenAI`` whose chat completions run on ``backend`` in this process."""
    http = httpx2.AsyncClient(transport=ChatTransport(backend), base_url=LOCAL_BASE_URL, timeout=None)
    return AsyncOpenAI(base_url=LOCAL_BASE_URL, api_key="in-process", http_client=http, max_retries=0)


# ---------------------------------------------------------------------------------------------- the model
def _server_url(model: Any) -> str | None:
    if isinstance(model, str) and model.startswith(("http://", "https://")):
        return model
    if isinstance(model, RemoteChat):
        return model.url
    if hasattr(model, "remote_generate") and hasattr(model, "client"):  # dlmprompt.remote(url)
        return str(model.client.url)
    return None


class DLMPromptModel(OpenAIChatModel):
    """A pydantic-ai model over a dlmprompt model (see the module docstring).

    ``model``: nothing (the embedded model), a loaded denoiser, a checkpoint folder, a
    :class:`~dlmprompt.integrations.core.ChatBackend`, or a ``dlmprompt serve`` URL (``/v1`` is
    added when missing). ``api_key``: the server's key (else ``$DLMPROMPT_API_KEY``). ``profile``
    and ``settings`` as for any pydantic-ai model, on top of :func:`dlmprompt_profile`.
    ``exact_prompted``: send :class:`~pydantic_ai.output.PromptedOutput`'s schema as a constraint.
    ``load_options`` go to the loader for a folder (``device=``, ``trust_remote_code=``).
    """

    def __init__(
        self,
        model: Any = None,
        *,
        model_name: str | None = None,
        api_key: str | None = None,
        profile: ModelProfileSpec | None = None,
        settings: ModelSettings | None = None,
        exact_prompted: bool = True,
        **load_options: Any,
    ) -> None:
        url = _server_url(model)
        self.backend: ChatBackend | None = None
        if url is not None:
            base = url.rstrip("/")
            base = base if base.endswith("/v1") else base + "/v1"
            key = api_key or os.environ.get("DLMPROMPT_API_KEY") or "not-needed"
            provider = DLMPromptProvider(base_url=base, api_key=key)
            name = model_name or getattr(model, "model_name", None) or "dlmprompt-default"
        else:
            self.backend = chat_backend(model, **load_options)
            provider = DLMPromptProvider(openai_client=local_client(self.backend))
            name = model_name or self.backend.model_name
        self.exact_prompted = exact_prompted
        super().__init__(name, provider=provider, profile=profile, settings=settings)

    def prepare_request(
        self, model_settings: ModelSettings | None, model_request_parameters: ModelRequestParameters
    ) -> tuple[ModelSettings | None, ModelRequestParameters]:
        """pydantic-ai's preparation; then a prompted output (its instructions already written)
        goes out with its schema as ``response_format``, so the text it parses is valid."""
        model_settings, params = super().prepare_request(model_settings, model_request_parameters)
        if (
            self.exact_prompted
            and params.output_mode == "prompted"
            and params.output_object is not None
            and self.profile.get("supports_json_schema_output", False)
        ):
            params = replace(params, output_mode="native")
        return model_settings, params
