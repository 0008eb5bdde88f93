"""``dlmprompt serve``: the sampler behind HTTP, constraints kept.

Two APIs over one batching :class:`~dlmprompt.serving.engine.Engine`:

* the native API, ``POST /v1/generate``: a :class:`~dlmprompt.spec.Prompt` as JSON in, the result
  with typed captures out; ``"stream": true`` sends one server-sent event per denoising step and a
  final ``result`` event;
* an OpenAI-compatible API, ``POST /v1/chat/completions`` and ``POST /v1/completions``, with
  ``response_format`` (``json_schema`` / ``json_object``) and dlmprompt extras (``regex``,
  ``choice``, a whole ``prompt`` spec) as extra body fields; ``GET /v1/models``.

Plus ``GET /health``, ``GET /metrics`` (Prometheus text) and the playground page at ``GET /``
(``ui=False``, ``--no-ui``: none). Requests are pydantic-validated JSON;
nothing a request sends is executed or unpickled. Every refusal is a 4xx with a JSON body
``{"error": {"message", "type", "code"}}``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from dlmprompt.compiler import Program
from dlmprompt.errors import DLMPromptError
from dlmprompt.sampling.events import Result, Step
from dlmprompt.serving.chat import ChatPlan, Chunks, chat_message, chat_plan, completion, total_usage
from dlmprompt.serving.compiling import CompileBudgetError, CompilePool, RemoteCompileError
from dlmprompt.serving.engine import Engine, Job, QueueFull
from dlmprompt.serving.protocol import (
    APIError,
    ChatRequest,
    CompletionRequest,
    GenerateRequest,
    Limits,
    OpenAIRequest,
    answer_text,
    check_unsupported,
    cut_at_stop,
    error_body,
    finish_reason,
    nesting,
    openai_prompt,
    sse,
    stops_for,
)
from dlmprompt.spec import Json, Prompt


# ---------------------------------------------------------------------------------------------- app
class Server:
    """The state behind the app: a denoiser, its engine, limits and counters."""

    def __init__(
        self,
        denoiser: Any,
        *,
        model_name: str = "dlmprompt-default",
        api_key: str | None = None,
        limits: Limits | None = None,
        max_batch: int = 32,
        max_queue: int = 128,
        templates_dir: str | None = None,
        allow_template_source: bool = False,
        compile_workers: int = 2,
    ) -> None:
        self.denoiser = denoiser
        self.templates_dir = templates_dir
        self.allow_template_source = allow_template_source
        self.tokenizer = denoiser.tokenizer
        self.model_name = model_name
        self.api_key = api_key
        self.limits = limits or Limits()
        self.compiler = CompilePool(
            denoiser.tokenizer,
            workers=compile_workers,
            time_s=self.limits.compile_seconds,
            memory_mb=self.limits.compile_memory_mb,
        )
        self.engine = Engine(denoiser, max_batch=max_batch, max_queue=max_queue)
        self.started = time.time()
        self.requests: dict[tuple[str, int], int] = {}

    # ------------------------------------------------------------------ compile with limits
    def check_prompt(self, prompt: Prompt) -> None:
        lim = self.limits
        slots = prompt.slots
        if len(slots) > lim.max_slots:
            raise APIError(
                400, f"{len(slots)} slots; this server allows at most {lim.max_slots}", code="too_many_slots"
            )
        for s in slots:
            c = s.constraint
            if isinstance(c, Json) and (depth := nesting(c.json_schema)) > lim.max_nesting:
                raise APIError(
                    400,
                    f"slot {s.name!r}: its schema is nested {depth} levels deep (JSON objects and arrays of the "
                    f"schema's text); this server allows {lim.max_nesting} (max_nesting)",
                    code="schema_too_deep",
                )
            size = len(json.dumps(c.model_dump(mode="json", by_alias=True)))
            if size > lim.max_grammar_chars:
                raise APIError(
                    400,
                    f"slot {s.name!r}: its constraint is {size} characters; this server allows {lim.max_grammar_chars}",
                    code="grammar_too_large",
                )
            if not isinstance(c, Json) and s.length.tokens > lim.max_tokens:
                raise APIError(
                    400,
                    f"slot {s.name!r} asks for {s.length.tokens} tokens; this server allows {lim.max_tokens}",
                    code="too_many_tokens",
                )
        if prompt.sampling.steps is not None and prompt.sampling.steps > lim.max_steps:
            raise APIError(
                400, f"steps={prompt.sampling.steps}; this server allows at most {lim.max_steps}", code="too_many_steps"
            )

    # ------------------------------------------------------------------ templates
    def template(self, name: str) -> Any:
        """A template by name: the server's folder first (``--templates DIR``), then the shipped ones."""
        from dlmprompt.prompt_template import load_template, template

        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name) or ".." in name:
            message = f"template {name[:40]!r}: a template name is letters, digits, '_', '-' and '.'"
            raise APIError(400, message, code="bad_template_name")
        try:
            if self.templates_dir is not None and (Path(self.templates_dir) / f"{name}.jinja").is_file():
                return load_template(name, folder=self.templates_dir)
            return template(name)
        except DLMPromptError as exc:
            raise APIError(404, str(exc), code="template_not_found") from None

    def template_names(self) -> list[str]:
        from dlmprompt.prompt_template import template_names

        names = set(template_names())
        if self.templates_dir is not None:
            names |= {p.stem for p in Path(self.templates_dir).glob("*.jinja")}
        return sorted(names)

    async def prompt_of(self, req: GenerateRequest) -> Prompt:
        """The request's prompt: given, or rendered from its template (in a worker thread)."""
        given = [k for k in ("prompt", "template", "template_source") if getattr(req, k) is not None]
        if len(given) != 1:
            message = f"give one of prompt, template or template_source; got {given or 'none'}"
            raise APIError(400, message, code="bad_prompt")
        if req.prompt is not None:
            if req.variables:
                raise APIError(400, "variables go with a template, not with a prompt", code="bad_prompt")
            return req.prompt
        if req.template_source is not None and not self.allow_template_source:
            raise APIError(
                403,
                "this server renders only its own templates; start it with --allow-template-source to take "
                "template source from requests",
                code="template_source_not_allowed",
            )
        from dlmprompt.prompt_template import render_isolated

        try:
            if req.template_source is not None:  # untrusted: in a child process, memory and time bounded
                return await asyncio.to_thread(render_isolated, req.template_source, req.variables, name="request")
            tmpl = await asyncio.to_thread(self.template, str(req.template))
            return await asyncio.to_thread(tmpl.render, **req.variables)
        except DLMPromptError as exc:
            raise APIError(400, str(exc), code="template_error") from None

    async def compile(self, prompt: Prompt, request: Request | None = None) -> Program:
        """Compile in a worker process under the compile budget; a client that leaves stops it."""
        self.check_prompt(prompt)
        abandoned = request.is_disconnected if request is not None else None
        try:
            program = await self.compiler.compile(prompt, abandoned=abandoned)
        except CompileBudgetError as exc:
            if exc.limit == "abandoned":
                raise asyncio.CancelledError from None
            if exc.limit == "killed":
                raise APIError(503, str(exc), type="server_error", code="compile_worker_stopped") from None
            code = "compile_timeout" if exc.limit == "time" else "compile_memory"
            raise APIError(400, str(exc), code=code) from None
        except RemoteCompileError as exc:
            raise APIError(400, f"{exc.kind}: {exc}", code="compile_error") from None
        except DLMPromptError as exc:
            raise APIError(400, f"{type(exc).__name__}: {exc}", code="compile_error") from None
        check = getattr(self.denoiser, "check_program", None)
        if check is not None:  # what this model's loop cannot run (DiffusionGemma, block-causal models)
            try:
                check(program)
            except DLMPromptError as exc:
                raise APIError(400, str(exc), code="unsupported_by_model") from None
        n = len(program.layout)
        if n > self.limits.max_canvas:
            raise APIError(
                400,
                f"the compiled canvas has {n} tokens; this server allows {self.limits.max_canvas}",
                code="canvas_too_large",
            )
        steps = program.schedule.steps  # steps the schedule derived, not asked for
        if steps is None:  # a confidence threshold: at worst one position per step
            steps = int((program.layout.slot_of >= 0).sum())
        if steps > self.limits.max_steps:
            raise APIError(
                400,
                f"the compiled prompt takes up to {steps} denoising steps; this server allows {self.limits.max_steps} "
                "(give fewer slots or tokens, or sampling steps=N)",
                code="too_many_steps",
            )
        return program

    def submit(self, program: Program, seed: int | None, on_step: Any = None) -> Job:
        try:
            return self.engine.submit(program, seed=seed, on_step=on_step)
        except QueueFull as exc:
            raise APIError(429, str(exc), type="rate_limit_error", code="queue_full") from None

    def count(self, route: str, status: int) -> None:
        self.requests[(route, status)] = self.requests.get((route, status), 0) + 1

    # ------------------------------------------------------------------ metrics
    def metrics(self) -> str:
        st = self.engine.stats
        lines = [
            "# HELP dlmprompt_requests_total HTTP requests by route and status.",
            "# TYPE dlmprompt_requests_total counter",
        ]
        for (route, status), n in sorted(self.requests.items()):
            lines.append(f'dlmprompt_requests_total{{route="{route}",status="{status}"}} {n}')
        gauges = [
            ("queue_depth", "Jobs waiting for a batch slot.", self.engine.queue_depth),
            ("in_flight", "Jobs in the running batch.", self.engine.in_flight),
            ("steps_per_second", "Row denoising steps per second over the last 10 s.", round(st.steps_per_s(), 3)),
            (
                "batch_cap",
                "Rows per shared pass now (below max_batch for a while after running out of memory).",
                self.engine.batch_cap,
            ),
        ]
        for name, help_, value in gauges:
            lines += [f"# HELP dlmprompt_{name} {help_}", f"# TYPE dlmprompt_{name} gauge", f"dlmprompt_{name} {value}"]
        counters = [
            ("jobs_submitted_total", "Jobs accepted by the engine.", st.submitted),
            ("jobs_finished_total", "Jobs that finished.", st.finished),
            ("jobs_failed_total", "Jobs that failed.", st.failed),
            ("jobs_cancelled_total", "Jobs cancelled (client gone).", st.cancelled),
            ("jobs_rejected_total", "Jobs refused because the queue was full (429).", st.rejected),
            ("forward_passes_total", "Shared forward passes.", st.forward_passes),
            ("batch_rows_total", "Rows over all shared forward passes (mean batch = this / passes).", st.rows_sum),
            ("denoise_steps_total", "Row denoising steps.", st.steps),
            (
                "out_of_memory_total",
                "Shared passes that ran out of memory (split, then fewer rows per pass).",
                st.out_of_memory,
            ),
            ("compile_timeouts_total", "Compiles stopped at the compile time budget.", self.compiler.stats["timeouts"]),
            (
                "compile_memory_refusals_total",
                "Compiles stopped at the compile memory budget.",
                self.compiler.stats["memory"],
            ),
        ]
        for name, help_, value in counters:
            lines += [
                f"# HELP dlmprompt_{name} {help_}",
                f"# TYPE dlmprompt_{name} counter",
                f"dlmprompt_{name} {value}",
            ]
        return "\n".join(lines) + "\n"

    # ------------------------------------------------------------------ results as JSON
    def result_json(self, result: Result) -> dict[str, Any]:
        caps = {}
        for name, c in result.captures.items():
            value: Any = c.text
            if isinstance(c.constraint, Json):
                value = json.loads(c.text)
            caps[name] = {"text": c.text, "value": value, "tokens": list(c.tokens), "span": list(c.span)}
        return {
            "object": "dlmprompt.result",
            "model": self.model_name,
            "text": result.text,
            "captures": caps,
            "steps": result.steps,
            "forward_passes": result.forward_passes,
            "canvas_positions": result.canvas_positions,
            "canvas": result.canvas.tolist(),
        }

    def step_json(self, step: Step, program: Program | None = None) -> dict[str, Any]:
        """A step as JSON. ``pieces``: each canvas position's token decoded (``None``: still
        masked); with the ``program``, ``slot_of`` (each position's slot index, -1 for an anchor)
        and ``slots`` (the slots' names by index), for a client that draws the canvas."""
        tok = self.tokenizer
        ids = step.canvas.tolist()
        layout: dict[str, Any] = {}
        if program is not None:
            layout = {"slot_of": program.layout.slot_of.tolist(), "slots": [s.name for s in program.slots]}
        return {
            "index": step.index,
            "canvas": step.canvas.tolist(),
            "committed": step.committed.tolist(),
            "tokens": step.tokens.tolist(),
            "confidences": [round(float(x), 6) for x in step.confidences],
            "forward_passes": step.forward_passes,
            "settled": None if step.settled is None else step.settled.tolist(),
            "text": "".join(
                "_" if t == tok.mask_id else tok.decode_bytes([t]).decode("utf-8", errors="replace")
                for t in step.canvas.tolist()
                if t != tok.pad_id
            ),
            "pieces": [
                None if t == tok.mask_id else tok.decode_bytes([t]).decode("utf-8", errors="replace") for t in ids
            ],
            **layout,
        }


class _Guard:
    """Pure ASGI middleware in front of /v1 and /metrics: API key (constant-time compare) and the
    body size bound, checked before any handler reads the body (chunked bodies are buffered up to
    the bound, then replayed)."""

    def __init__(self, app: Any, server: Server) -> None:
        self.app = app
        self.server = server

    async def _refuse(self, send: Any, path: str, status: int, message: str, code: str) -> None:
        self.server.count(path, status)
        body = json.dumps(error_body(message, "invalid_request_error", code)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path.startswith("/v1/") or path == "/metrics"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        key = self.server.api_key
        if key is not None:
            given = headers.get("authorization", "")
            token = given[7:] if given.lower().startswith("bearer ") else ""
            if not hmac.compare_digest(token.encode(), key.encode()):
                return await self._refuse(
                    send, path, 401, "missing or wrong API key (send 'Authorization: Bearer KEY')", "bad_api_key"
                )
        limit = self.server.limits.max_body_bytes
        too_big = f"request body over {limit} bytes; this server's limit is max_body_bytes={limit}"
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit() or int(length) > limit:
                return await self._refuse(send, path, 413, too_big, "body_too_large")
            return await self.app(scope, receive, send)
        if scope.get("method") != "POST":
            return await self.app(scope, receive, send)
        body = b""
        while True:
            msg = await receive()
            if msg["type"] != "http.request":
                return
            body += msg.get("body", b"")
            if len(body) > limit:
                return await self._refuse(send, path, 413, too_big, "body_too_large")
            if not msg.get("more_body"):
                break
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


# ---------------------------------------------------------------------------------------------- the ASGI app
def create_app(denoiser: Any = None, *, ui: bool = True, **options: Any) -> Any:
    """The FastAPI app. ``denoiser`` defaults to the embedded model; ``ui``: the playground page at
    ``GET /`` (:mod:`dlmprompt.serving.playground`); ``options`` go to :class:`Server`
    (``model_name``, ``api_key``, ``limits``, ``max_batch``, ``max_queue``, ``templates_dir``,
    ``allow_template_source``)."""
    if denoiser is None:
        from dlmprompt.models.backends import load_model

        denoiser = load_model()
    server = Server(denoiser, **options)

    @asynccontextmanager
    async def lifespan(app: Any):  # type: ignore[no-untyped-def]
        yield
        server.engine.close()
        server.compiler.close()

    app = FastAPI(title="dlmprompt", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.server = server

    def err(status: int, message: str, type: str = "invalid_request_error", code: str | None = None) -> Any:
        headers = {"Retry-After": "1"} if status in (429, 503) else None
        return JSONResponse(error_body(message, type, code), status_code=status, headers=headers)

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> Any:
        server.count(request.url.path, exc.status)
        return err(exc.status, exc.message, exc.type, exc.code)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Any:
        server.count(request.url.path, 400)
        msgs = []
        for e in exc.errors()[:5]:
            loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
            msgs.append(f"{loc or 'body'}: {e.get('msg')}")
        return err(400, "invalid request: " + "; ".join(msgs), code="invalid_request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Any:
        # FastAPI's own refusals (a body that is not JSON or not UTF-8, an unknown route, ...) in our shape
        server.count(request.url.path, exc.status_code)
        code = "invalid_body" if exc.status_code == 400 else None
        return err(exc.status_code, str(exc.detail), code=code)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> Any:
        server.count(request.url.path, 500)
        return err(500, f"internal error: {type(exc).__name__}: {exc}", type="server_error")

    app.add_middleware(_Guard, server=server)

    async def wait(job: Job, request: Request) -> Result:
        fut = asyncio.wrap_future(job.future)
        while True:
            done, _ = await asyncio.wait({fut}, timeout=0.25)
            if done:
                return fut.result()
            if await request.is_disconnected():
                job.cancel()
                raise asyncio.CancelledError

    def streamer(job_factory: Any, to_events: Any) -> Any:
        """An SSE body fed by the engine thread; a client that goes away cancels the job."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()

        def on_step(step: Step) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, ("step", step))

        job: Job = job_factory(on_step)
        job.future.add_done_callback(lambda f: loop.call_soon_threadsafe(queue.put_nowait, ("done", f)))

        async def body() -> Any:
            try:
                while True:
                    kind, item = await queue.get()
                    if kind == "step":
                        for chunk in to_events.step(item):
                            yield chunk
                        continue
                    try:
                        result = item.result()
                    except Exception as exc:
                        yield sse(error_body(f"{type(exc).__name__}: {exc}", "server_error", None), "error")
                        return
                    for chunk in to_events.final(result):
                        yield chunk
                    return
            finally:
                job.cancel()  # no-op once finished; frees the batch slot when the client left

        return StreamingResponse(body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    # ------------------------------------------------------------------ routes
    @app.get("/health")
    async def health() -> Any:
        return {"status": "ok", "model": server.model_name, "uptime_s": round(time.time() - server.started, 1)}

    @app.get("/metrics")
    async def metrics() -> Any:
        return PlainTextResponse(server.metrics(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models() -> Any:
        server.count("/v1/models", 200)
        return {
            "object": "list",
            "data": [
                {"id": server.model_name, "object": "model", "created": int(server.started), "owned_by": "dlmprompt"}
            ],
        }

    @app.get("/v1/templates")
    async def templates_route() -> Any:
        server.count("/v1/templates", 200)
        return {
            "object": "list",
            "data": [{**server.template(n).describe(), "name": n} for n in server.template_names()],
        }

    @app.post("/v1/generate")
    async def generate_route(req: GenerateRequest, request: Request) -> Any:
        prompt = await server.prompt_of(req)
        program = await server.compile(prompt, request)
        rendered = {"prompt": prompt.model_dump(mode="json", by_alias=True)} if req.prompt is None else {}
        if req.stream:

            class Native:
                @staticmethod
                def step(step: Step) -> list[bytes]:
                    return [sse(server.step_json(step, program), "step")]

                @staticmethod
                def final(result: Result) -> list[bytes]:
                    return [sse({**server.result_json(result), **rendered}, "result")]

            resp = streamer(lambda cb: server.submit(program, req.seed, cb), Native)
            server.count("/v1/generate", 200)
            return resp
        job = server.submit(program, req.seed)
        result = await wait(job, request)
        server.count("/v1/generate", 200)
        return {**server.result_json(result), **rendered}

    async def run_job(program: Program, req: OpenAIRequest, request: Request) -> Result:
        return await wait(server.submit(program, req.seed), request)

    async def openai_answer(req: OpenAIRequest, request: Request, plan: ChatPlan, chat: bool) -> Any:
        """Run the plan: the choices (if any), then the call or the reply, streamed or not."""
        route = "/v1/chat/completions" if chat else "/v1/completions"
        compiled = {}
        for prompt in plan.programs_to_check():  # compile errors before anything runs
            compiled[id(prompt)] = await server.compile(prompt, request)
        done: list[Result] = []  # the choices run so far (whether to call, which tool)
        while (stage := plan.next(done))[0] == "choice":
            done.append(await run_job(await server.compile(stage[1], request), req, request))
        kind, prompt = stage
        program = compiled[id(prompt)]
        ident = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        created = int(time.time())
        model = req.model or server.model_name
        if not req.stream:
            result = await run_job(program, req, request)
            server.count(route, 200)
            use = total_usage([*done, result])
            if chat:
                message, finish = chat_message(kind, result, stops_for(req, program))
                return completion(ident, created, model, message, finish, use)
            text, cut = cut_at_stop(answer_text(result), stops_for(req, program))
            choice = {
                "index": 0,
                "text": text,
                "finish_reason": "stop" if cut else finish_reason(result),
                "logprobs": None,
            }
            return {
                "id": ident,
                "object": "text_completion",
                "created": created,
                "model": model,
                "choices": [choice],
                "usage": use,
            }

        include = req.stream_options is not None and req.stream_options.include_usage
        chunks = Chunks(ident, created, model, chat=chat, include_usage=include, stop=stops_for(req, program))

        class Events:
            @staticmethod
            def step(step: Step) -> list[bytes]:
                return [sse(c) for c in (chunks.step(program, step) if kind == "reply" else chunks.start())]

            @staticmethod
            def final(result: Result) -> list[bytes]:
                return [sse(c) for c in chunks.finish(kind, result, [*done, result])] + [b"data: [DONE]\n\n"]

        resp = streamer(lambda cb: server.submit(program, req.seed, cb), Events)
        server.count(route, 200)
        return resp

    @app.post("/v1/chat/completions")
    async def chat_completions(req: ChatRequest, request: Request) -> Any:
        check_unsupported(req)
        return await openai_answer(req, request, chat_plan(req, server.denoiser, server.limits), chat=True)

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest, request: Request) -> Any:
        check_unsupported(req)
        prompt = openai_prompt(req, req.prompt, req.suffix, server.limits, server.tokenizer)
        return await openai_answer(req, request, ChatPlan(prompt), chat=False)

    if ui:
        from dlmprompt.serving.playground import add_playground

        add_playground(app)
    return app


def serve(
    model: str | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    device: str | None = None,
    trust_remote_code: bool = False,
    max_batch: int = 32,
    max_queue: int = 128,
    templates_dir: str | None = None,
    allow_template_source: bool = False,
    log_level: str = "info",
    ui: bool = True,
    limits: Limits | None = None,
    compile_workers: int = 2,
    graceful_timeout: float = 30.0,
) -> None:
    """Load a model and serve it with uvicorn until interrupted. On SIGTERM (or Ctrl-C) the server
    stops taking connections, lets in-flight requests finish for up to ``graceful_timeout``
    seconds, then cancels what is left and exits."""
    import uvicorn

    from dlmprompt.models.backends import load_model

    denoiser = load_model(model, device=device, trust_remote_code=trust_remote_code)
    name = "dlmprompt-default" if model is None else str(model)
    app = create_app(
        denoiser,
        model_name=name,
        api_key=api_key,
        max_batch=max_batch,
        max_queue=max_queue,
        templates_dir=templates_dir,
        allow_template_source=allow_template_source,
        ui=ui,
        limits=limits,
        compile_workers=compile_workers,
    )
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=graceful_timeout)


class background:
    """Serve in a background thread of this process on a loopback port (0: a free one), e.g. for a
    notebook or a test::

        with background(denoiser) as srv:
            backend = dlmprompt.load(srv.url)

    ``srv.app`` is the ASGI app (``srv.app.state.server`` its state). Options go to :func:`create_app`.
    """

    def __init__(self, denoiser: Any = None, *, host: str = "127.0.0.1", port: int = 0, **options: Any) -> None:
        self.app = create_app(denoiser, **options)
        self.host = host
        self.port = port
        self.url = ""
        self._server: Any = None
        self._thread: Any = None

    def __enter__(self) -> background:
        import threading

        import uvicorn

        self._server = uvicorn.Server(uvicorn.Config(self.app, host=self.host, port=self.port, log_level="warning"))
        self._thread = threading.Thread(target=self._server.run, name="dlmprompt-serve", daemon=True)
        self._thread.start()
        t = time.monotonic()
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() - t > 60:
                raise DLMPromptError(f"the server did not start on {self.host}:{self.port}")
            time.sleep(0.01)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://{self.host}:{port}"
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.should_exit = True
        self._thread.join(30)
