"""The one seam every framework adapter talks to: OpenAI chat bodies in, OpenAI answers out.

:func:`chat_backend` takes what ``dlmprompt.load`` takes (nothing for the embedded model, a
checkpoint folder, a loaded denoiser, a ``http(s)://`` URL of ``dlmprompt serve`` or a
``dlmprompt.remote`` backend) and gives a :class:`ChatBackend`:

* in process (:class:`LocalChat`), a body runs through the server's own mapping
  (:mod:`dlmprompt.serving.chat`: messages, tools, ``response_format`` and the other constraint
  dialects) on :func:`~dlmprompt.sampling.sampler.generate`;
* over HTTP (:class:`RemoteChat`), the body is sent to ``/v1/chat/completions``.

So an adapter writes one OpenAI body and reads one OpenAI answer (or chunk stream) whichever the
backend, and tool calls / structured outputs keep the same exactness either way.
"""

from __future__ import annotations

import asyncio
import functools
import queue
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

from dlmprompt.errors import DLMPromptError, SpecError


class RequestRefused(SpecError):
    """A chat body the mapping refuses, with the HTTP ``status`` and ``code`` a server would give."""

    def __init__(self, message: str, status: int = 400, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class ChatBackend:
    """``complete(body)`` → an OpenAI ``chat.completion`` dict; ``stream(body)`` → its chunks;
    ``acomplete`` / ``astream`` the same without blocking the event loop."""

    model_name: str = "dlmprompt-default"

    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def stream(self, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        raise NotImplementedError

    async def acomplete(self, body: dict[str, Any]) -> dict[str, Any]:
        return await asyncio.to_thread(self.complete, body)

    async def astream(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        it = iter(self.stream(body))
        done = object()
        try:
            while True:
                item = await asyncio.to_thread(next, it, done)
                if item is done:
                    return
                yield item
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                await asyncio.to_thread(close)


_LOCKS: dict[int, tuple[Any, threading.Lock]] = {}
_LOCKS_GUARD = threading.Lock()


def _lock_of(denoiser: Any) -> threading.Lock:
    with _LOCKS_GUARD:
        held = _LOCKS.get(id(denoiser))
        if held is None or held[0] is not denoiser:
            held = _LOCKS[id(denoiser)] = (denoiser, threading.Lock())
        return held[1]


class _Stopped(Exception):
    """The reader of a stream went away: the generation stops at its next step."""


class LocalChat(ChatBackend):
    """A denoiser in this process. Generations run one at a time (a lock), each to the end."""

    def __init__(self, denoiser: Any, *, model_name: str = "dlmprompt-default") -> None:
        from dlmprompt.serving.protocol import Limits

        self.denoiser = denoiser
        self.model_name = model_name
        self.limits = Limits()
        self.lock = _lock_of(denoiser)  # one per model: adapters that share a model take turns

    def _plan(self, body: dict[str, Any]) -> Any:
        from pydantic import ValidationError

        from dlmprompt.serving.chat import chat_plan
        from dlmprompt.serving.protocol import APIError, ChatRequest, check_unsupported

        try:
            req = ChatRequest.model_validate(body)
            check_unsupported(req)
            return req, chat_plan(req, self.denoiser, self.limits)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise RequestRefused(f"bad chat request at {where}: {first['msg']}", 400, "invalid_body") from None
        except APIError as exc:
            raise RequestRefused(exc.message, exc.status, exc.code) from None

    def _generate(self, prompt: Any, seed: int | None, on_step: Any = None) -> Any:
        import torch

        from dlmprompt.sampling.sampler import generate

        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        with self.lock:
            return generate(self.denoiser, prompt, generator=gen, on_step=on_step)

    def _head(self, req: Any) -> tuple[str, int, str]:
        return "chatcmpl-" + uuid.uuid4().hex[:24], int(time.time()), req.model or self.model_name

    def _compiled(self, plan: Any) -> dict[int, Any]:
        """Every program the answer may run, compiled first: a schema the compiler refuses is a
        :class:`RequestRefused` before anything runs, as on the server."""
        from dlmprompt.compiler import compile
        from dlmprompt.errors import CompileError

        try:
            return {id(p): compile(p, self.denoiser.tokenizer) for p in plan.programs_to_check()}
        except CompileError as exc:
            raise RequestRefused(f"{type(exc).__name__}: {exc}", 400, "compile_error") from None

    def _choices(self, plan: Any, seed: int | None) -> list[Any]:
        """Run the plan's choice stages (whether to call a tool, which one)."""
        done: list[Any] = []
        while (stage := plan.next(done))[0] == "choice":
            done.append(self._generate(stage[1], seed))
        return done

    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        from dlmprompt.serving.chat import chat_message, completion, total_usage
        from dlmprompt.serving.protocol import stops_for

        req, plan = self._plan(body)
        programs = self._compiled(plan)
        done = self._choices(plan, req.seed)
        kind, prompt = plan.next(done)
        program = programs[id(prompt)]
        result = self._generate(program, req.seed)
        message, finish = chat_message(kind, result, stops_for(req, program))
        return completion(*self._head(req), message, finish, total_usage([*done, result]))

    def stream(self, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        from dlmprompt.serving.chat import Chunks
        from dlmprompt.serving.protocol import stops_for

        req, plan = self._plan(body)
        programs = self._compiled(plan)
        include = req.stream_options is not None and req.stream_options.include_usage
        out: queue.Queue[Any] = queue.Queue()
        gone = threading.Event()

        def work() -> None:
            try:
                done = self._choices(plan, req.seed)
                kind, prompt = plan.next(done)
                program = programs[id(prompt)]
                chunks = Chunks(*self._head(req), include_usage=include, stop=stops_for(req, program))

                def on_step(step: Any) -> None:
                    if gone.is_set():
                        raise _Stopped
                    for c in chunks.step(program, step) if kind == "reply" else chunks.start():
                        out.put(c)

                result = self._generate(program, req.seed, on_step)
                for c in chunks.finish(kind, result, [*done, result]):
                    out.put(c)
            except _Stopped:
                pass
            except BaseException as exc:  # handed to the reader, raised there
                out.put(exc)
            out.put(None)

        threading.Thread(target=work, name="dlmprompt-chat-stream", daemon=True).start()
        try:
            while (item := out.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            gone.set()  # a reader that stops early (break, cancel) frees the model at the next step


class RemoteChat(ChatBackend):
    """A ``dlmprompt serve`` server: bodies go to its ``/v1/chat/completions``."""

    def __init__(self, url: str, *, model_name: str | None = None, client: Any = None, **client_options: Any) -> None:
        from dlmprompt.serving.client import Client

        self.client = client if client is not None else Client(url, **client_options)
        self.url = url
        self.model_name = model_name or "dlmprompt-default"

    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.client.chat(body)

    def stream(self, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        yield from self.client.chat_stream(body)


def chat_backend(model: Any = None, **options: Any) -> ChatBackend:
    """A :class:`ChatBackend` for ``model``: nothing (the embedded model), a checkpoint folder, a
    loaded denoiser, a server URL, a ``dlmprompt.remote`` backend or a :class:`ChatBackend`.
    ``options``: the client's (``api_key=``, ``timeout=``) for a URL, ``load_model``'s for a folder."""
    if isinstance(model, ChatBackend):
        return model
    if isinstance(model, str) and model.startswith(("http://", "https://")):
        return RemoteChat(model, **options)
    if hasattr(model, "remote_generate") and hasattr(model, "client"):  # dlmprompt.remote(url)
        return RemoteChat(model.client.url, client=model.client)  # its API key and retries too
    if model is None and not options:
        return embedded_chat()
    if model is None or isinstance(model, str) or hasattr(model, "__fspath__"):
        from dlmprompt.models.backends import load_model

        name = "dlmprompt-default" if model is None else str(model)
        return LocalChat(load_model(model, **options), model_name=name)
    if not hasattr(model, "tokenizer"):
        raise DLMPromptError(
            f"cannot chat with a {type(model).__name__}; give a model from dlmprompt.load(), a folder or a server URL"
        )
    return LocalChat(model)


@functools.lru_cache(maxsize=1)
def embedded_chat() -> LocalChat:
    """The embedded default model, loaded once per process for every adapter that asks for it."""
    from dlmprompt.models.backends import load_model

    return LocalChat(load_model())


def json_schema_of(schema: Any) -> dict[str, Any]:
    """A JSON Schema dict from a dict, a pydantic model class or any type pydantic can describe
    (a ``TypedDict``, a dataclass, ``list[int]``)."""
    if isinstance(schema, dict):
        return schema
    if hasattr(schema, "model_json_schema"):
        return schema.model_json_schema()
    try:
        from pydantic import TypeAdapter

        return TypeAdapter(schema).json_schema()
    except Exception as exc:
        raise SpecError(f"cannot make a JSON Schema of {schema!r}: {exc}") from None


def tool_spec(tool: Any) -> dict[str, Any]:
    """OpenAI's ``{"type": "function", "function": {...}}`` from that shape, a bare function
    object, or a pydantic model class (its name and schema)."""
    if isinstance(tool, dict):
        if tool.get("type") == "function" and "function" in tool:
            return tool
        if "name" in tool:
            return {"type": "function", "function": tool}
    if isinstance(tool, type) and hasattr(tool, "model_json_schema"):
        schema = tool.model_json_schema()
        desc = schema.pop("description", "") or (tool.__doc__ or "").strip()
        return {"type": "function", "function": {"name": tool.__name__, "description": desc, "parameters": schema}}
    raise SpecError(f"cannot make a tool of {tool!r}; give an OpenAI function tool dict or a pydantic model")
