"""``dlmprompt serve`` on Ray Serve: replicas of the model behind one endpoint.

Two deployments (``pip install "dlmprompt[ray]"``):

* ``DLMPromptModel``: each replica loads the model and runs the whole dlmprompt app of
  :func:`dlmprompt.serving.server.create_app` (its own batching engine, compile workers, limits,
  API key): native, OpenAI and streaming APIs unchanged. Requests reach it over a
  :class:`~ray.serve.handle.DeploymentHandle` as plain ASGI (scope and body in, response
  messages streamed back), so what a replica answers is exactly what ``dlmprompt serve`` answers.
* ``DLMPromptIngress``: the HTTP ingress. It forwards each request to a model replica chosen by
  Ray Serve's router (fewest ongoing requests of two picked at random) and streams the answer
  back. A replica that dies under a request turns into a clean, retryable error:
  ``503`` with ``{"error": {"type": "server_error", "code": "replica_unavailable"}}`` and
  ``Retry-After: 1`` when nothing was sent yet, else a final ``event: error`` of the same body in
  the stream. Ray Serve starts a replacement replica.

Scaling: ``num_replicas`` fixed, or ``autoscaling_config`` on queue depth (Ray Serve's
``target_ongoing_requests`` per replica: requests queued or running in it). Each replica's
resources are ``ray_actor_options`` (``num_cpus``, ``num_gpus``: a fraction shares a GPU).

Python, for your own Ray Serve config::

    from ray import serve
    from dlmprompt.serving.ray_serve import application

    serve.run(application(model="/models/llada", replicas=4, num_gpus=0.5), route_prefix="/")

or in a config file, ``import_path: dlmprompt.serving.ray_serve:build`` with ``args`` (the
keyword arguments of :func:`application`). ``dlmprompt serve --ray --replicas N`` starts (or
joins, ``--ray-address``) a Ray instance and runs it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from dlmprompt.errors import DLMPromptError

_SCOPE_KEYS = ("type", "http_version", "method", "scheme", "path", "raw_path", "query_string", "root_path", "headers")


def _serve() -> Any:
    try:
        from ray import serve
    except ImportError:
        raise DLMPromptError('Ray Serve is not installed: pip install "dlmprompt[ray]"') from None
    return serve


def _error(status: int, message: str, code: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    body = json.dumps({"error": {"message": message, "type": "server_error", "code": code}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status in (429, 503):
        headers.append((b"retry-after", b"1"))
    return status, headers, body


def _with_limits(options: dict[str, Any] | None) -> dict[str, Any]:
    """Server options with ``limits`` as a :class:`~dlmprompt.serving.protocol.Limits` (a config
    file gives a mapping)."""
    from dlmprompt.serving.protocol import Limits

    out = dict(options or {})
    limits = out.get("limits")
    if limits is None:
        out["limits"] = Limits()
    elif isinstance(limits, dict):
        try:
            out["limits"] = Limits(**limits)
        except TypeError as exc:
            raise DLMPromptError(f"limits: {exc}; the fields are those of dlmprompt.serving.protocol.Limits") from None
    return out


def _replica_gone(exc: BaseException) -> bool:
    """An error of the replica's process or actor, not of the request."""
    try:
        from ray import exceptions as rx
    except ImportError:  # pragma: no cover
        return False
    kinds = [getattr(rx, n, None) for n in ("RayActorError", "ActorDiedError", "ActorUnavailableError")]
    kinds += [getattr(rx, n, None) for n in ("WorkerCrashedError", "NodeDiedError", "ObjectLostError")]
    return any(k is not None and isinstance(exc, k) for k in kinds)


class ModelReplica:
    """One replica: the model and the whole dlmprompt app, driven as ASGI."""

    def __init__(
        self,
        model: str | None = None,
        device: str | None = None,
        trust_remote_code: bool = False,
        server_options: dict[str, Any] | None = None,
    ) -> None:
        from dlmprompt.models.backends import load_model
        from dlmprompt.serving.server import create_app

        denoiser = load_model(model, device=device, trust_remote_code=trust_remote_code)
        options = _with_limits(server_options)
        options.setdefault("model_name", "dlmprompt-default" if model is None else str(model))
        self.app = create_app(denoiser, **options)
        self.server = self.app.state.server
        try:
            self.replica = _serve().get_replica_context().replica_id.unique_id
        except Exception:  # outside a Ray Serve replica
            self.replica = "local"

    async def handle(self, scope: dict[str, Any], body: bytes) -> Any:
        """Run one HTTP request through the app; yields ``("start", status, headers)`` then
        ``("body", bytes)`` chunks. When the caller goes away (the generator is closed or
        cancelled) the app sees ``http.disconnect`` and drops the request's job."""
        out: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        gone = asyncio.Event()
        first = True

        async def receive() -> dict[str, Any]:
            nonlocal first
            if first:
                first = False
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if gone.is_set():
                raise OSError("the client went away")
            await out.put(message)

        scope = {**scope, "client": ("ray-serve", 0), "server": ("dlmprompt-replica", 0), "state": {}}
        task = asyncio.ensure_future(self.app(scope, receive, send))
        try:
            while True:
                getter = asyncio.ensure_future(out.get())
                done, _ = await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    if out.empty():
                        task.result()  # raises what the app raised
                        return
                    continue
                message = getter.result()
                if message["type"] == "http.response.start":
                    headers = [tuple(h) for h in message.get("headers", [])]
                    headers.append((b"x-dlmprompt-replica", self.replica.encode()))
                    yield ("start", int(message["status"]), headers)
                elif message["type"] == "http.response.body":
                    chunk = message.get("body", b"")
                    if chunk:
                        yield ("body", bytes(chunk))
                    if not message.get("more_body", False):
                        return
        finally:
            gone.set()
            if not task.done():
                try:
                    await asyncio.wait_for(asyncio.shield(task), 2.0)
                except BaseException:
                    task.cancel()

    def engine_stats(self) -> dict[str, Any]:
        st = self.server.engine.stats
        return {
            "queue_depth": self.server.engine.queue_depth,
            "in_flight": self.server.engine.in_flight,
            "finished": st.finished,
            "failed": st.failed,
            "forward_passes": st.forward_passes,
        }

    def __del__(self) -> None:  # Ray Serve calls it when it stops the replica
        server = getattr(self, "server", None)
        if server is not None:
            server.engine.close()
            server.compiler.close()


class Ingress:
    """The HTTP ingress: forwards requests to the model deployment as ASGI, streams answers back."""

    def __init__(self, model: Any, max_body_bytes: int = 1 << 20) -> None:
        self.model = model
        self.max_body_bytes = max_body_bytes

    def __serve_build_asgi_app__(self) -> Any:  # Ray Serve builds the ingress app with this
        return _ASGI(self)

    async def asgi(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].rsplit(".", 1)[-1]
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes + 1:  # the replica's own bound answers 413
                break
            if not message.get("more_body"):
                break
        plain = {k: scope[k] for k in _SCOPE_KEYS if k in scope}
        plain["headers"] = [(bytes(k), bytes(v)) for k, v in scope.get("headers", [])]
        started = streaming = False
        try:
            stream = self.model.options(stream=True).handle.remote(plain, body)
            async for item in stream:
                if item[0] == "start":
                    headers = item[2]
                    streaming = any(k.lower() == b"content-type" and b"event-stream" in v for k, v in headers)
                    await send({"type": "http.response.start", "status": item[1], "headers": headers})
                    started = True
                else:
                    await send({"type": "http.response.body", "body": item[1], "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except Exception as exc:
            if not _replica_gone(exc) and started:
                raise
            gone = _replica_gone(exc)
            message = (
                "the model replica serving this request stopped; retry (Ray Serve starts another)"
                if gone
                else f"internal error: {type(exc).__name__}: {exc}"
            )
            status, headers, payload = _error(503 if gone else 500, message, "replica_unavailable" if gone else None)  # type: ignore[arg-type]
            if not started:
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": payload, "more_body": False})
            elif streaming:
                event = b"event: error\ndata: " + payload + b"\n\n"
                await send({"type": "http.response.body", "body": event, "more_body": False})
            else:
                await send({"type": "http.response.body", "body": b"", "more_body": False})


class _ASGI:
    """An ASGI 3 callable (uvicorn takes a bound method for ASGI 2)."""

    def __init__(self, ingress: Ingress) -> None:
        self.ingress = ingress

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await self.ingress.asgi(scope, receive, send)


def application(
    model: str | None = None,
    *,
    replicas: int = 1,
    autoscaling: dict[str, Any] | None = None,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
    device: str | None = None,
    trust_remote_code: bool = False,
    max_ongoing_requests: int = 64,
    ingress_replicas: int = 1,
    **server_options: Any,
) -> Any:
    """The Ray Serve application: ``replicas`` model replicas (or ``autoscaling``, a Ray Serve
    ``autoscaling_config`` such as ``{"min_replicas": 1, "max_replicas": 8,
    "target_ongoing_requests": 16}``) behind one ingress. ``num_cpus`` / ``num_gpus`` per model
    replica (a GPU fraction shares one GPU between replicas); ``server_options`` go to
    :func:`~dlmprompt.serving.server.create_app` in every replica (``api_key``, ``limits``,
    ``max_batch``, ``max_queue``, ``compile_workers``, ``templates_dir``, ...)."""
    serve = _serve()
    if replicas < 1 and autoscaling is None:
        raise DLMPromptError("replicas must be at least 1 (or give autoscaling)")
    scale: dict[str, Any] = {"autoscaling_config": autoscaling} if autoscaling else {"num_replicas": replicas}
    model_dep = serve.deployment(
        ModelReplica,
        name="DLMPromptModel",
        ray_actor_options={"num_cpus": num_cpus, "num_gpus": num_gpus},
        max_ongoing_requests=max_ongoing_requests,
        health_check_period_s=2,
        **scale,
    )
    ingress_dep = serve.deployment(
        serve.ingress()(Ingress),
        name="DLMPromptIngress",
        num_replicas=ingress_replicas,
        ray_actor_options={"num_cpus": 0},
        max_ongoing_requests=max(256, max_ongoing_requests * max(replicas, 1) * 2),
    )
    server_options = _with_limits(server_options)
    body_bound = server_options["limits"].max_body_bytes
    model_app = model_dep.bind(model, device, trust_remote_code, server_options)
    return ingress_dep.bind(model_app, body_bound)


def build(args: dict[str, Any]) -> Any:
    """The builder for a Ray Serve config file (``import_path: dlmprompt.serving.ray_serve:build``):
    ``args`` are :func:`application`'s keyword arguments."""
    return application(**dict(args))


def run(
    model: str | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    address: str | None = None,
    blocking: bool = True,
    **options: Any,
) -> Any:
    """Start (or join, ``address``) Ray, run the application on ``host:port`` and, with
    ``blocking``, wait until interrupted."""
    serve = _serve()
    import ray

    if not ray.is_initialized():
        ray.init(address=address, ignore_reinit_error=True)
    serve.start(http_options={"host": host, "port": port})
    handle = serve.run(application(model, **options), name="dlmprompt", route_prefix="/")
    if not blocking:
        return handle
    import time

    print(f"dlmprompt on Ray Serve at http://{host}:{port} (Ctrl-C stops it)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.shutdown()
    return None
