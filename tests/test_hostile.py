"""Hostile input that used to get through: each refused quickly with a 4xx in the documented
``{"error": {"message", "type", "code"}}`` shape, the server healthy afterwards."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from dlmprompt import CompileError, Prompt, SchemaError, Tokenizer, compile, slot
from dlmprompt.serving.server import create_app
from dlmprompt.testing import RandomDenoiser

TOK = Tokenizer.bytes_level()


@pytest.fixture(scope="module")
def client():  # type: ignore[no-untyped-def]
    with TestClient(create_app(RandomDenoiser(TOK)), raise_server_exceptions=False) as c:
        yield c


def _refused(resp, status: int, words: str) -> None:  # type: ignore[no-untyped-def]
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "code"} and words in err["message"], err


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_in_a_schema(client, value) -> None:  # type: ignore[no-untyped-def]
    schema = f'{{"type": "integer", "maximum": {value}}}'
    body = (
        '{"model": "x", "messages": [{"role": "user", "content": "hi"}], "response_format": '
        f'{{"type": "json_schema", "json_schema": {{"name": "a", "schema": {schema}}}}}}}'
    )
    resp = client.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    _refused(resp, 400, "is not a JSON number")
    assert "/maximum" in resp.json()["error"]["message"]
    with pytest.raises(SchemaError, match="NaN and Infinity are not JSON"):
        compile(Prompt("x") + slot("a", schema={"enum": [1, float("nan")]}), TOK)


def test_a_huge_counted_repetition_is_refused_before_any_work(client) -> None:  # type: ignore[no-untyped-def]
    resp = client.post("/v1/completions", json={"model": "x", "prompt": "a", "regex": "x{0,100000}", "max_tokens": 8})
    _refused(resp, 400, "unrolls to more than 10,000 elements")
    resp = client.post("/v1/completions", json={"model": "x", "prompt": "a", "regex": "((ab){100}){200}"})
    _refused(resp, 400, "unrolls to more than")
    with pytest.raises(CompileError, match="use \\* or \\+ instead of a large"):
        compile(Prompt("x") + slot("a", regex="[0-9]{5000,20000}", max_tokens=4), TOK)
    compile(Prompt("x") + slot("a", regex="[a-z]{1,64}(-[a-z]{1,64}){0,8}", max_tokens=4), TOK)  # fine


def test_a_body_that_is_not_utf8_or_not_json(client) -> None:  # type: ignore[no-untyped-def]
    resp = client.post(
        "/v1/completions", content=b'{"model": "x", "prompt": "\xff\xfe"}', headers={"content-type": "application/json"}
    )
    _refused(resp, 400, "")
    resp = client.post("/v1/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert resp.status_code == 400 and "error" in resp.json()
    resp = client.get("/no/such/route")
    _refused(resp, 404, "Not Found")
    assert client.get("/health").json()["status"] == "ok"


LOOP = {"$ref": "#/$defs/a", "$defs": {"a": {"$ref": "#/$defs/a"}}}


@pytest.mark.parametrize(
    "extra",
    [
        {"grammar": 'start: start "a" | "b"'},  # left recursion: Earley takes it
        {"grammar": 'start: x | y\nx: "a"\ny: "a"'},  # ambiguous
        {"regex": "(a|a)*b"},  # an exponential backtracker's blow-up; one DFA here
        {"regex": "(x+x+)+y"},
        {"choice": [f"option{i}" for i in range(100_000)]},
        {"response_format": {"type": "json_schema", "json_schema": {"name": "loop", "schema": LOOP}}},
        {"prompt": "mask <|mask|> and pad <|pad|> in an anchor", "regex": "[a-z]{3}"},
    ],
    ids=["left-recursion", "ambiguous", "(a|a)*", "(x+x+)+", "choice-100k", "ref-loop", "special-tokens"],
)
def test_pathological_constraints_answer_or_refuse_cleanly(client, extra) -> None:  # type: ignore[no-untyped-def]
    body = {"model": "x", "prompt": "a", "max_tokens": 8, **extra}
    resp = client.post("/v1/completions", json=body)
    assert resp.status_code in (200, 400, 413), resp.text[:300]
    if resp.status_code in (400, 413):
        err = resp.json()["error"]
        assert set(err) == {"message", "type", "code"} and isinstance(err["code"], str) and err["message"], err
    else:
        assert isinstance(resp.json()["choices"][0]["text"], str)
    assert client.get("/health").json()["status"] == "ok"


# ------------------------------------------------------------------ compile budgets
SLOW = "[ab]*a[ab]{16}"  # a 2^16-state DFA: minutes to build (35 s at {14}, ×10 per step)


@pytest.fixture(scope="module")
def budgeted():  # type: ignore[no-untyped-def]
    from dlmprompt.serving.protocol import Limits
    from dlmprompt.serving.server import background

    with background(RandomDenoiser(TOK), limits=Limits(compile_seconds=3.0, compile_memory_mb=2048)) as srv:
        yield srv


def test_a_slow_compile_is_stopped_at_the_budget_and_blocks_nobody(budgeted) -> None:  # type: ignore[no-untyped-def]
    import threading

    import httpx

    pool = budgeted.app.state.server.compiler
    before = dict(pool.stats)
    slow: dict[str, httpx.Response] = {}
    body = {"model": "x", "prompt": "a", "regex": SLOW, "max_tokens": 20}
    thread = threading.Thread(
        target=lambda: slow.update(r=httpx.post(f"{budgeted.url}/v1/completions", json=body, timeout=60))
    )
    thread.start()
    thread.join(0.3)  # let the slow one take a worker first
    # a cheap request compiles in the other worker and finishes while the slow one still compiles
    fast = httpx.post(
        f"{budgeted.url}/v1/completions",
        json={"model": "x", "prompt": "a", "regex": "[0-9]{2}", "max_tokens": 4},
        timeout=60,
    )
    assert fast.status_code == 200 and thread.is_alive(), fast.text
    thread.join(60)
    _refused(slow["r"], 400, "compile budget of 3 s (compile_seconds)")
    assert slow["r"].json()["error"]["code"] == "compile_timeout"
    assert pool.stats["timeouts"] == before["timeouts"] + 1
    assert httpx.get(f"{budgeted.url}/health").json()["status"] == "ok"


def test_a_compile_past_the_memory_budget_is_refused() -> None:
    import asyncio

    from dlmprompt.serving.compiling import CompileBudgetError, CompilePool

    pool = CompilePool(TOK, workers=1, time_s=60, memory_mb=64)
    try:
        big = Prompt("a") + slot("a", regex="[ab]*a[ab]{13}", max_tokens=20)
        with pytest.raises(CompileBudgetError, match="compile memory budget of 64 MB") as err:
            asyncio.run(pool.compile(big))
        assert err.value.limit == "memory" and pool.stats["memory"] == 1
        small = asyncio.run(pool.compile(Prompt("b") + slot("a", regex="[0-9]{2}", max_tokens=4)))  # a fresh worker
        assert len(small.layout) > 0 and pool.workers_started == 2
    finally:
        pool.close()


def test_a_client_that_leaves_stops_its_compile(budgeted) -> None:  # type: ignore[no-untyped-def]
    import time

    import httpx

    pool = budgeted.app.state.server.compiler
    before = pool.stats["abandoned"]
    body = {"model": "x", "prompt": "c", "regex": SLOW, "max_tokens": 20}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{budgeted.url}/v1/completions", json=body, timeout=0.5)
    t = time.monotonic()
    while pool.stats["abandoned"] == before and time.monotonic() - t < 30:
        time.sleep(0.05)
    assert pool.stats["abandoned"] == before + 1
    assert all(w.proc.is_alive() for w in pool._idle)  # the killed worker is not handed out again


def test_a_program_compiled_in_a_worker_runs_like_one_compiled_here() -> None:
    import asyncio

    import torch

    from dlmprompt.compiler import _PROGRAMS
    from dlmprompt.sampling.sampler import generate
    from dlmprompt.serving.compiling import CompilePool

    prompt = (
        Prompt("Order: ")
        + slot("qty", regex="[1-9][0-9]?", max_tokens=2)
        + Prompt(" ")
        + slot("item", schema={"type": "object", "properties": {"n": {"enum": ["tea", "cake"]}}, "required": ["n"]})
    )
    pool = CompilePool(TOK, workers=1, time_s=30)
    try:
        _PROGRAMS.clear()
        remote = asyncio.run(pool.compile(prompt))
        assert pool.stats["compiled"] == 1 and pool.workers_started == 1
        _PROGRAMS.clear()
        local = compile(prompt, TOK)
        assert remote is not local and remote.tokenizer is TOK
        assert remote.layout.canvas.tolist() == local.layout.canvas.tolist()
        den = RandomDenoiser(TOK)
        a = generate(den, remote, generator=torch.Generator().manual_seed(3))
        b = generate(den, local, generator=torch.Generator().manual_seed(3))
        assert a.text == b.text and a.captures["item"].value == b.captures["item"].value
    finally:
        pool.close()


def test_derived_steps_are_bounded_like_asked_ones() -> None:
    from dlmprompt.serving.protocol import Limits

    app = create_app(RandomDenoiser(TOK), limits=Limits(max_steps=20))
    with TestClient(app) as c:
        body = {"model": "x", "prompt": "a", "regex": "[a-z]{30}", "max_tokens": 30}
        _refused(c.post("/v1/completions", json=body), 400, "takes up to 30 denoising steps; this server allows 20")
        assert c.post("/v1/completions", json={**body, "regex": "[a-z]{5}", "max_tokens": 5}).status_code == 200


def _nested(levels: int, kind: str) -> dict:  # type: ignore[type-arg]
    schema: dict = {"type": "integer"}  # type: ignore[type-arg]
    for _ in range(levels):
        if kind == "object":
            schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
        else:
            schema = {"type": "array", "items": schema, "maxItems": 1}
    return schema


@pytest.mark.parametrize(("levels", "kind"), [(300, "object"), (300, "array"), (63, "object"), (126, "array")])
def test_deeply_nested_schemas_are_refused_or_answered_not_crashed(client, levels, kind) -> None:  # type: ignore[no-untyped-def]
    fmt = {"type": "json_schema", "json_schema": {"name": "deep", "schema": _nested(levels, kind)}}
    body = {"model": "x", "messages": [{"role": "user", "content": "hi"}], "response_format": fmt}
    resp = client.post("/v1/chat/completions", json=body)
    assert resp.status_code in (200, 400), resp.text[:300]
    if levels == 300:  # past max_nesting: refused before any work
        _refused(resp, 400, "this server allows 128 (max_nesting)")
    assert client.get("/health").json()["status"] == "ok"


def test_a_large_program_comes_back_whole_on_any_event_loop() -> None:
    """uvloop (installed with Ray, used by uvicorn when present) leaves a watched socket
    non-blocking; a program of megabytes must still come back whole from its worker."""
    import asyncio

    from dlmprompt.compiler import _PROGRAMS
    from dlmprompt.serving.compiling import CompilePool

    try:
        import uvloop

        run = uvloop.run
    except ImportError:
        run = asyncio.run
    big = Prompt("Pick: ") + slot("a", choice=[f"option number {i}" for i in range(8000)], max_tokens=16)
    pool = CompilePool(TOK, workers=1, time_s=60)
    try:
        _PROGRAMS.clear()
        for _ in range(2):  # the second compile reuses the worker whose socket the loop watched
            program = run(pool.compile(big))
            _PROGRAMS.clear()
        assert pool.stats["compiled"] == 2 and pool.workers_started == 1
        assert len(program.layout) == len(compile(big, TOK).layout)
    finally:
        pool.close()
