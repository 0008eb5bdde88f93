"""Clients for a ``dlmprompt serve`` server, and a remote backend that runs like a local model.

``Client`` / ``AsyncClient`` speak the native API (``/v1/generate``): they send a
:class:`~dlmprompt.spec.Prompt` and get back a :class:`~dlmprompt.sampling.events.Result` whose captures
keep their constraints (``result.value("person")`` is the pydantic instance again). Requests
answered 429 or 503 are retried with exponential backoff (honouring ``Retry-After``).

``remote(url)`` (or ``dlmprompt.load("http://host:port")``) returns a :class:`RemoteBackend`:
``dlmprompt.generate(backend, prompt, ...)`` and ``dlmprompt.sample(backend, prompt)`` work on it
as on a local denoiser.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import httpx
import numpy as np

from dlmprompt.compiler import Program
from dlmprompt.errors import BackendError, DLMPromptError
from dlmprompt.spec import Prompt


class RemoteError(DLMPromptError):
    """The server refused the request (4xx) or failed (5xx); ``status`` and ``code`` say which."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.code = code


_RETRY = {429, 503}


def _as_prompt(prompt: Any) -> Prompt:
    if isinstance(prompt, Program):
        return prompt.spec  # the server compiles with its own tokenizer
    if isinstance(prompt, Prompt):
        return prompt
    if isinstance(prompt, str):
        raise BackendError("send a Prompt (for a plain string, Prompt(text) + slot(...))")
    if isinstance(prompt, dict):
        return Prompt.model_validate(prompt)
    raise BackendError(f"expected a Prompt, got {type(prompt).__name__}")


def _raise_for(resp: httpx.Response) -> None:
    if resp.status_code < 400:
        return
    try:
        err = resp.json()["error"]
        raise RemoteError(resp.status_code, err.get("message", ""), err.get("code"))
    except (ValueError, KeyError, TypeError):
        raise RemoteError(resp.status_code, resp.text[:500]) from None


def _delay(resp: httpx.Response, attempt: int, backoff: float) -> float:
    after = resp.headers.get("retry-after", "")
    base = float(after) if after.replace(".", "", 1).isdigit() else 0.0
    return max(base, backoff * (2**attempt))


def _result(prompt: Prompt, data: dict[str, Any]) -> Any:
    from dlmprompt.sampling.events import Capture, Result

    constraints = {s.name: s.constraint for s in prompt.slots}
    caps = {
        name: Capture(
            name=name,
            text=c["text"],
            tokens=tuple(c["tokens"]),
            span=(c["span"][0], c["span"][1]),
            constraint=constraints.get(name),
        )
        for name, c in data["captures"].items()
    }
    return Result(
        text=data["text"],
        captures=caps,
        canvas=np.asarray(data["canvas"], dtype=np.int64),
        steps=data["steps"],
        forward_passes=data["forward_passes"],
        program=None,  # type: ignore[arg-type]  # compiled on the server
        canvas_positions=data.get("canvas_positions", 0),
    )


def _step(row: int, data: dict[str, Any]) -> Any:
    from dlmprompt.sampling.events import Step

    return Step(
        row=row,
        index=data["index"],
        canvas=np.asarray(data["canvas"], dtype=np.int64),
        committed=np.asarray(data["committed"], dtype=np.int64),
        tokens=np.asarray(data["tokens"], dtype=np.int64),
        confidences=np.asarray(data["confidences"], dtype=np.float32),
        forward_passes=data["forward_passes"],
        settled=None if data.get("settled") is None else np.asarray(data["settled"], dtype=bool),
    )


def _events(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    event = "message"
    for line in lines:
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            yield event, json.loads(line[5:].strip())
            event = "message"


def _http_options(api_key: str | None, timeout: float, transport: Any) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return {"headers": headers, "timeout": timeout, "transport": transport}


def _body(prompt: Prompt, seed: int | None, stream: bool) -> dict[str, Any]:
    return {"prompt": prompt.model_dump(mode="json", by_alias=True), "seed": seed, "stream": stream}


def _template_body(template: str, variables: dict[str, Any] | None, seed: int | None) -> dict[str, Any]:
    return {"template": template, "variables": variables or {}, "seed": seed}


def _filled(data: dict[str, Any]) -> Any:
    """The result of a template request: the server sends the prompt it rendered beside it."""
    return _result(Prompt.model_validate(data["prompt"]), data)


class Client:
    """A synchronous client for the native API."""

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        timeout: float = 300.0,
        retries: int = 4,
        backoff: float = 0.25,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url, self.retries, self.backoff = url.rstrip("/"), retries, backoff
        self.http = httpx.Client(base_url=self.url, **_http_options(api_key, timeout, transport))

    def _post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        for attempt in range(self.retries + 1):
            try:
                resp = self.http.post(path, json=body)
            except httpx.TransportError as exc:
                if attempt == self.retries:
                    raise BackendError(f"cannot reach {self.url}: {exc}") from None
                time.sleep(self.backoff * (2**attempt))
                continue
            if resp.status_code in _RETRY and attempt < self.retries:
                time.sleep(_delay(resp, attempt, self.backoff))
                continue
            _raise_for(resp)
            return resp
        raise AssertionError("unreachable")  # pragma: no cover

    def generate(self, prompt: Prompt | Program, *, seed: int | None = None) -> Any:
        """Run one prompt on the server; returns a :class:`~dlmprompt.sampling.events.Result`."""
        p = _as_prompt(prompt)
        return _result(p, self._post("/v1/generate", _body(p, seed, False)).json())

    def fill(self, template: str, variables: dict[str, Any] | None = None, *, seed: int | None = None) -> Any:
        """Render a template on the server (a shipped one, or one of its ``--templates`` folder) with
        ``variables`` (JSON values) and run it; returns a :class:`~dlmprompt.sampling.events.Result`."""
        return _filled(self._post("/v1/generate", _template_body(template, variables, seed)).json())

    def templates(self) -> list[dict[str, Any]]:
        """The templates the server renders: name, description, variables, example."""
        resp = self.http.get("/v1/templates")
        _raise_for(resp)
        return resp.json()["data"]

    def stream(self, prompt: Prompt | Program, *, seed: int | None = None) -> Iterator[Any]:
        """Yield a :class:`~dlmprompt.sampling.events.Step` per denoising step, then the
        :class:`~dlmprompt.sampling.events.Result`."""
        p = _as_prompt(prompt)
        with self.http.stream("POST", "/v1/generate", json=_body(p, seed, True)) as resp:
            if resp.status_code >= 400:
                resp.read()
                _raise_for(resp)
            for event, data in _events(resp.iter_lines()):
                if event == "step":
                    yield _step(0, data)
                elif event == "result":
                    yield _result(p, data)
                elif event == "error":
                    raise RemoteError(500, data["error"]["message"])

    def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/chat/completions`` with an OpenAI body; the OpenAI answer as a dict."""
        return self._post("/v1/chat/completions", {**body, "stream": False}).json()

    def chat_stream(self, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """The same, streamed: OpenAI's chunk dicts as they arrive."""
        with self.http.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as resp:
            if resp.status_code >= 400:
                resp.read()
                _raise_for(resp)
            event = None
            for line in resp.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    data = line[6:]
                    if data == "[DONE]":
                        return
                    item = json.loads(data)
                    if event == "error":
                        err = item.get("error", {})
                        raise RemoteError(500, err.get("message", ""), err.get("code"))
                    yield item
                    event = None

    def health(self) -> dict[str, Any]:
        resp = self.http.get("/health")
        _raise_for(resp)
        return resp.json()

    def models(self) -> list[str]:
        resp = self.http.get("/v1/models")
        _raise_for(resp)
        return [m["id"] for m in resp.json()["data"]]

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class AsyncClient:
    """The asyncio twin of :class:`Client`."""

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        timeout: float = 300.0,
        retries: int = 4,
        backoff: float = 0.25,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url, self.retries, self.backoff = url.rstrip("/"), retries, backoff
        self.http = httpx.AsyncClient(base_url=self.url, **_http_options(api_key, timeout, transport))

    async def _post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        for attempt in range(self.retries + 1):
            try:
                resp = await self.http.post(path, json=body)
            except httpx.TransportError as exc:
                if attempt == self.retries:
                    raise BackendError(f"cannot reach {self.url}: {exc}") from None
                await asyncio.sleep(self.backoff * (2**attempt))
                continue
            if resp.status_code in _RETRY and attempt < self.retries:
                await asyncio.sleep(_delay(resp, attempt, self.backoff))
                continue
            _raise_for(resp)
            return resp
        raise AssertionError("unreachable")  # pragma: no cover

    async def generate(self, prompt: Prompt | Program, *, seed: int | None = None) -> Any:
        p = _as_prompt(prompt)
        return _result(p, (await self._post("/v1/generate", _body(p, seed, False))).json())

    async def fill(self, template: str, variables: dict[str, Any] | None = None, *, seed: int | None = None) -> Any:
        return _filled((await self._post("/v1/generate", _template_body(template, variables, seed))).json())

    async def stream(self, prompt: Prompt | Program, *, seed: int | None = None) -> AsyncIterator[Any]:
        p = _as_prompt(prompt)
        async with self.http.stream("POST", "/v1/generate", json=_body(p, seed, True)) as resp:
            if resp.status_code >= 400:
                await resp.aread()
                _raise_for(resp)
            event = "message"
            async for line in resp.aiter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data = json.loads(line[5:].strip())
                    if event == "step":
                        yield _step(0, data)
                    elif event == "result":
                        yield _result(p, data)
                    elif event == "error":
                        raise RemoteError(500, data["error"]["message"])
                    event = "message"

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


class RemoteBackend:
    """A server as a backend: ``generate(backend, prompt)`` / ``sample(backend, prompt)`` run there.

    Prompts are compiled by the server (with its model's tokenizer); a :class:`Program` is sent as
    its spec. ``generator=`` (a ``torch.Generator``) draws one seed per prompt from it.
    """

    tokenizer = None
    mask_id = None

    def __init__(self, url: str, **client_options: Any) -> None:
        self.client = Client(url, **client_options)
        self.name = url

    def _seeds(self, generator: Any, n: int) -> list[int | None]:
        if generator is None:
            return [None] * n
        import torch

        if isinstance(generator, torch.Generator):
            return [int(x) for x in torch.randint(0, 2**62, (n,), generator=generator).tolist()]
        gens = list(generator)
        if len(gens) != n:
            raise ValueError(f"generator= takes one torch.Generator or a list of {n} (one per program)")
        return [int(torch.randint(0, 2**62, (1,), generator=g).item()) for g in gens]

    def remote_generate(self, programs: Any, generator: Any, on_step: Any) -> Any:
        single = isinstance(programs, (Program, Prompt, dict))
        items: Sequence[Any] = [programs] if single else list(programs)
        seeds = self._seeds(generator, len(items))
        results = []
        for row, (p, seed) in enumerate(zip(items, seeds)):
            if on_step is None:
                results.append(self.client.generate(p, seed=seed))
                continue
            for item in self.client.stream(p, seed=seed):
                if hasattr(item, "captures"):
                    results.append(item)
                else:
                    on_step(_with_row(item, row))
        return results[0] if single else results

    def remote_sample(self, programs: Any, generator: Any) -> Iterator[Any]:
        single = isinstance(programs, (Program, Prompt, dict))
        items: Sequence[Any] = [programs] if single else list(programs)
        seeds = self._seeds(generator, len(items))
        for row, (p, seed) in enumerate(zip(items, seeds)):
            for item in self.client.stream(p, seed=seed):
                if not hasattr(item, "captures"):
                    yield _with_row(item, row)

    def __repr__(self) -> str:
        return f"RemoteBackend({self.name!r})"


def _with_row(step: Any, row: int) -> Any:
    from dataclasses import replace

    return replace(step, row=row)


def remote(url: str, **client_options: Any) -> RemoteBackend:
    """A :class:`RemoteBackend` for a ``dlmprompt serve`` server at ``url``."""
    return RemoteBackend(url, **client_options)
