"""`dlmprompt serve`: the engine (continuous batching), the ASGI app in-process, a real uvicorn
server on a loopback port, our client / remote backend, and the official `openai` client."""

from __future__ import annotations

import json
import re
import threading
import time
from typing import Literal

import httpx
import jsonschema
import lark
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from helpers import MIXED_PROMPT, check_result
from pydantic import BaseModel, Field

import dlmprompt
from dlmprompt import Prompt, compile, generate, sample, slot
from dlmprompt.serving.engine import Engine, QueueFull
from dlmprompt.serving.protocol import Limits
from dlmprompt.serving.server import background, create_app


class Gated:
    """The embedded model behind a gate: forward passes wait until the test opens it."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.tokenizer = inner.tokenizer
        self.mask_id = inner.mask_id
        self.device = inner.device
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.batch_sizes: list[int] = []

    def __call__(self, ids, att):
        self.entered.set()
        assert self.gate.wait(30), "the test never opened the gate"
        self.batch_sizes.append(int(ids.shape[0]))
        return self.inner(ids, att)


class Person(BaseModel):
    name: str = Field(max_length=12)
    age: int = Field(ge=0, le=120)
    kind: Literal["customer", "staff"]


@pytest.fixture(scope="module")
def den():
    return dlmprompt.load()


def _wait(cond, timeout: float = 30.0) -> None:
    t = time.monotonic()
    while not cond():
        assert time.monotonic() - t < timeout, "condition not reached"
        time.sleep(0.01)


# ---------------------------------------------------------------------------------------------- engine
def test_engine_batches_different_layouts_and_matches_generate(den) -> None:
    gated = Gated(den)
    engine = Engine(gated, max_batch=8)
    prompts = [
        MIXED_PROMPT,
        Prompt("Code: ") + slot("code", regex="[A-Z]{2}-[0-9]{3}", max_tokens=8) + ".",
        Prompt("Answer: ") + slot("yes", choice=["yes", "no"], max_tokens=2) + "\nWhy: " + slot("why", max_tokens=6),
    ]
    progs = [compile(p, den.tokenizer) for p in prompts]
    try:
        first = engine.submit(progs[0], seed=11)
        assert gated.entered.wait(10)  # the first job's first pass is waiting at the gate
        rest = [engine.submit(p, seed=12 + i) for i, p in enumerate(progs[1:])]
        gated.gate.set()
        results = [j.future.result(timeout=60) for j in [first, *rest]]
    finally:
        engine.close()
    assert max(gated.batch_sizes) == 3, gated.batch_sizes  # three layouts in one forward pass
    st = engine.stats
    assert st.finished == 3 and st.rows_sum / st.forward_passes > 1
    for i, (prog, res) in enumerate(zip(progs, results)):
        check_result(prog, res)
        alone = generate(den, prog, generator=torch.Generator().manual_seed(11 + i))
        assert res.text == alone.text  # batching does not change what a request gets


def test_engine_queue_bound_and_cancel(den) -> None:
    gated = Gated(den)
    engine = Engine(gated, max_batch=4, max_queue=2)
    prog = compile(MIXED_PROMPT, den.tokenizer)
    try:
        a = engine.submit(prog, seed=1)
        b = engine.submit(prog, seed=2)
        with pytest.raises(QueueFull, match="retry later"):
            engine.submit(prog, seed=3)
        b.cancel()
        gated.gate.set()
        assert a.future.result(timeout=60).captures["age"].text.isdigit()
        with pytest.raises(dlmprompt.DLMPromptError, match="cancelled"):
            b.future.result(timeout=60)
    finally:
        engine.close()
    assert engine.stats.rejected == 1 and engine.stats.cancelled == 1


def test_engine_isolates_a_failing_row(den) -> None:
    class Picky:
        tokenizer = den.tokenizer
        mask_id = den.mask_id
        device = den.device

        def __call__(self, ids, att):
            if ids.shape[1] > 40:  # only the long layout's rows make the model fail
                raise RuntimeError("boom")
            return den(ids, att)

    engine = Engine(Picky())
    short = compile(Prompt("A: ") + slot("a", regex="[0-9]", max_tokens=1), den.tokenizer)
    long = compile(Prompt("B " * 40) + slot("b", max_tokens=3), den.tokenizer)
    try:
        jobs = [engine.submit(long), engine.submit(short)]
        with pytest.raises(RuntimeError, match="boom"):
            jobs[0].future.result(timeout=60)
        assert re.fullmatch("[0-9]", jobs[1].future.result(timeout=60)["a"])
    finally:
        engine.close()


# ---------------------------------------------------------------------------------------------- app in-process
@pytest.fixture(scope="module")
def app_client(den):
    with TestClient(create_app(den, limits=Limits(max_body_bytes=20_000, max_slots=6, max_canvas=300))) as c:
        yield c


def _body(prompt: Prompt, **kw) -> dict:
    return {"prompt": prompt.model_dump(mode="json", by_alias=True), **kw}


def test_native_generate_and_stream(app_client, den) -> None:
    r = app_client.post("/v1/generate", json=_body(MIXED_PROMPT, seed=5))
    assert r.status_code == 200, r.text
    data = r.json()
    alone = generate(den, MIXED_PROMPT, generator=torch.Generator().manual_seed(5))
    assert data["text"] == alone.text and data["canvas"] == alone.canvas.tolist()
    assert data["captures"]["age"]["text"] == alone["age"] and re.fullmatch("[0-9]+", data["captures"]["age"]["value"])
    events = []
    with app_client.stream("POST", "/v1/generate", json=_body(MIXED_PROMPT, seed=5, stream=True)) as s:
        assert s.headers["content-type"].startswith("text/event-stream")
        event = None
        for line in s.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                events.append((event, json.loads(line[5:])))
    steps = [d for e, d in events if e == "step"]
    assert [e for e, _ in events][-1] == "result" and len(steps) == data["steps"]
    assert steps[-1]["canvas"] == data["canvas"] and "_" in steps[0]["text"]  # masks shown while filling


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_request"),
        ({"prompt": {"parts": 5}}, 400, "invalid_request"),
        ({"prompt": {}, "unknown": 1}, 400, "invalid_request"),
        (_body(Prompt("x") + slot("r", regex="((", max_tokens=3)), 400, "compile_error"),
        (_body(Prompt("x") + slot("n", regex="[0-9]{20}", max_tokens=3)), 400, "compile_error"),
        (
            _body(Prompt.format("{a}{b}{c}{d}{e}{f}{g}", **{k: slot(max_tokens=1) for k in "abcdefg"})),
            400,
            "too_many_slots",
        ),
        (_body(Prompt("word " * 400) + slot("x", max_tokens=2)), 400, "canvas_too_large"),
        (_body(Prompt("x") + slot("x", max_tokens=5000)), 400, "too_many_tokens"),
        (_body(Prompt("x") + slot("x", max_tokens=2), seed="abc"), 400, "invalid_request"),
        (_body((Prompt("x") + slot("x", max_tokens=2)).with_sampling(steps=5000)), 400, "too_many_steps"),
    ],
)
def test_bad_requests_are_4xx_with_a_message(app_client, body, status, code) -> None:
    if isinstance(body, bytes):
        r = app_client.post("/v1/generate", content=body, headers={"content-type": "application/json"})
    else:
        r = app_client.post("/v1/generate", json=body)
    assert r.status_code == status, r.text
    if code is not None:
        err = r.json()["error"]
        assert err["code"] == code and err["message"]
    assert app_client.get("/health").json()["status"] == "ok"  # the server is still up


def test_oversized_bodies_are_413(app_client) -> None:
    big = _body(Prompt("x" * 30_000) + slot("x", max_tokens=2))
    r = app_client.post("/v1/generate", json=big)
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"

    def chunks():  # no content-length: the guard buffers up to the bound
        yield json.dumps(big).encode()

    r = app_client.post("/v1/generate", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_api_key_and_429(den) -> None:
    gated = Gated(den)
    app = create_app(gated, api_key="s3cret", max_queue=1)
    with TestClient(app) as c:
        assert c.get("/health").status_code == 200  # health is open
        assert c.get("/v1/models").status_code == 401
        assert c.get("/v1/models", headers={"Authorization": "Bearer nope"}).status_code == 401
        auth = {"Authorization": "Bearer s3cret"}
        assert c.get("/v1/models", headers=auth).json()["data"][0]["id"] == "dlmprompt-default"
        out: dict = {}
        t = threading.Thread(
            target=lambda: out.setdefault("r", c.post("/v1/generate", json=_body(MIXED_PROMPT, seed=1), headers=auth))
        )
        t.start()
        assert gated.entered.wait(30)
        r = c.post("/v1/generate", json=_body(MIXED_PROMPT, seed=2), headers=auth)
        assert r.status_code == 429 and r.headers["retry-after"] == "1"
        gated.gate.set()
        t.join(60)
        assert out["r"].status_code == 200
        metrics = c.get("/metrics", headers=auth).text
        assert "dlmprompt_jobs_rejected_total 1" in metrics and "dlmprompt_queue_depth 0" in metrics


# ---------------------------------------------------------------------------------------------- a real server
@pytest.fixture(scope="module")
def live(den):
    gated = Gated(den)
    gated.gate.set()
    with background(gated) as srv:  # uvicorn on a free loopback port
        yield srv.url, srv.app, gated


def test_remote_backend_runs_like_a_local_model(live, den) -> None:
    url, _, _ = live
    backend = dlmprompt.load(url)
    prompt = Prompt("Ann Lee (41) is on our staff.\nRecord: ") + slot("person", schema=Person, max_tokens=6)
    local = generate(den, prompt, generator=torch.Generator().manual_seed(3))
    seen = []
    there = generate(backend, prompt, generator=torch.Generator().manual_seed(3), on_step=seen.append)
    assert len(seen) == there.steps and np.array_equal(seen[-1].canvas, there.canvas)
    person = there.value("person")
    assert isinstance(person, Person) and 0 <= person.age <= 120
    # seeds drawn from the generator differ from the local rows' seeds, so compare as the server saw it
    with dlmprompt.Client(url) as client:
        direct = client.generate(
            prompt, seed=int(torch.randint(0, 2**62, (1,), generator=torch.Generator().manual_seed(3)))
        )
    assert direct.text == there.text
    assert isinstance(local.value("person"), Person)
    steps = list(sample(backend, [MIXED_PROMPT, MIXED_PROMPT], generator=torch.Generator().manual_seed(1)))
    assert {s.row for s in steps} == {0, 1}


def test_the_server_runs_adaptive_length_and_remasking_as_generate_does(live, den) -> None:
    """The batching engine steps adaptive-length, remasking rows (windows, views, held positions)
    exactly as the local loop: the same seed gives the same text and the same positions count."""
    url, _, _ = live
    prompt = (
        Prompt("Note: ") + slot("note", max_tokens=80) + "\nAge: " + slot("age", regex=r"\d{1,3}", max_tokens=4)
    ).with_sampling(length="adaptive", remask=True)
    seed = 11
    local = generate(den, prompt, generator=torch.Generator().manual_seed(seed))
    with dlmprompt.Client(url) as client:
        there = client.generate(
            prompt, seed=int(torch.randint(0, 2**62, (1,), generator=torch.Generator().manual_seed(seed)))
        )
    assert there.text == local.text and there.canvas_positions == local.canvas_positions
    assert 0 < local.canvas_positions < local.forward_passes * len(local.program.layout)


def test_async_client_concurrent_requests_share_passes(live) -> None:
    import asyncio

    url, _, gated = live
    before = len(gated.batch_sizes)

    async def main():
        async with dlmprompt.AsyncClient(url) as client:
            return await asyncio.gather(*[client.generate(MIXED_PROMPT, seed=i) for i in range(6)])

    results = asyncio.run(main())
    for r in results:
        assert re.fullmatch("[A-Z][a-z]+", r["name"]) and r["color"] in {"red", "blue"}
    assert max(gated.batch_sizes[before:]) > 1


def test_client_disconnect_cancels_its_job(live) -> None:
    url, app, gated = live
    engine = app.state.server.engine
    cancelled = engine.stats.cancelled
    gated.gate.clear()
    try:
        with httpx.Client(base_url=url, timeout=30) as http:
            with http.stream("POST", "/v1/generate", json=_body(MIXED_PROMPT, stream=True)) as resp:
                assert resp.status_code == 200
                _wait(lambda: gated.entered.is_set() and engine.in_flight == 1)
        # the connection is closed: the stream ends and the job is dropped before it finishes
        gated.gate.set()
        _wait(lambda: engine.stats.cancelled == cancelled + 1)
    finally:
        gated.gate.set()
    assert engine.in_flight == 0


def test_official_openai_client(live) -> None:
    from openai import OpenAI

    url, _, _ = live
    client = OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list()] == ["dlmprompt-default"]
    msgs = [{"role": "user", "content": "Ann Lee (41) is on our staff. Her record?"}]
    done = client.chat.completions.parse(model="dlmprompt-default", messages=msgs, response_format=Person, seed=1)
    parsed = done.choices[0].message.parsed
    assert isinstance(parsed, Person) and done.usage.completion_tokens > 0
    schema = {
        "type": "object",
        "properties": {"id": {"type": "string", "pattern": "^[A-Z]{3}[0-9]{2}$"}, "n": {"type": "integer"}},
        "required": ["id"],
    }
    out = client.chat.completions.create(
        model="dlmprompt-default",
        messages=msgs,
        response_format={"type": "json_schema", "json_schema": {"name": "rec", "schema": schema}},
    )
    jsonschema.validate(json.loads(out.choices[0].message.content), schema)
    rx = client.completions.create(model="x", prompt="Zip: ", max_tokens=6, extra_body={"regex": "[0-9]{5}"})
    assert re.fullmatch("[0-9]{5}", rx.choices[0].text)
    ch = client.chat.completions.create(model="x", messages=msgs, extra_body={"choice": ["staff", "customer"]})
    assert ch.choices[0].message.content in {"staff", "customer"}
    # streaming: the deltas put together are the non-streamed answer of the same seed
    whole = client.chat.completions.create(model="x", messages=msgs, max_tokens=8, seed=4).choices[0].message.content
    parts = [
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(model="x", messages=msgs, max_tokens=8, seed=4, stream=True)
    ]
    assert "".join(parts) == whole and len(whole) > 0
    # infill through the legacy completions suffix
    fill = client.completions.create(model="x", prompt="def ", suffix="(x):\n", extra_body={"regex": "[a-z_]+"})
    assert re.fullmatch("[a-z_]+", fill.choices[0].text)
    import openai

    arith = 'start: expr\nexpr: NUMBER (("+" | "-") NUMBER)*\nNUMBER: /[0-9]+/\n'
    sums = client.completions.create(model="x", prompt="1+", max_tokens=10, extra_body={"grammar": arith})
    lark.Lark(arith).parse(sums.choices[0].text)  # a whole sentence of the grammar
    with pytest.raises(openai.BadRequestError, match="GrammarError"):
        client.completions.create(model="x", prompt="1+", extra_body={"grammar": "start: NUMBER ("})
    with pytest.raises(openai.BadRequestError, match=r"CompileError"):
        client.completions.create(model="x", prompt="1+", extra_body={"regex": "(("})


def test_structured_output_dialects_of_other_clients(den) -> None:  # type: ignore[no-untyped-def]
    """vLLM's structured_outputs and guided_* fields, the older json_object + schema form, and
    stream_options.include_usage, through the real openai client."""
    from openai import OpenAI

    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    with background(den) as srv:
        client = OpenAI(base_url=srv.url + "/v1", api_key="x")
        msgs = [{"role": "user", "content": "A number?"}]
        answers = {
            "structured_outputs.json": dict(extra_body={"structured_outputs": {"json": schema}}),
            "guided_json": dict(extra_body={"guided_json": json.dumps(schema)}),
            "json_object+schema": dict(response_format={"type": "json_object", "schema": schema}),
        }
        for name, kw in answers.items():
            done = client.chat.completions.create(model="x", messages=msgs, seed=1, **kw)
            content = done.choices[0].message.content
            assert content.startswith("{"), name
            jsonschema.validate(json.loads(content), schema)
        for kw, check in (
            (dict(extra_body={"structured_outputs": {"regex": "[0-9]{3}"}}), lambda t: re.fullmatch("[0-9]{3}", t)),
            (dict(extra_body={"guided_regex": "[a-c]{2}"}), lambda t: re.fullmatch("[a-c]{2}", t)),
            (dict(extra_body={"guided_choice": ["up", "down"]}), lambda t: t in ("up", "down")),
            (dict(extra_body={"structured_outputs": {"choice": ["yes", "no"]}}), lambda t: t in ("yes", "no")),
            (dict(extra_body={"guided_grammar": 'start: "a"+ "b"'}, max_tokens=6), lambda t: re.fullmatch("a+b", t)),
        ):
            done = client.chat.completions.create(model="x", messages=msgs, **kw)
            assert check(done.choices[0].message.content), (kw, done.choices[0].message.content)
        with pytest.raises(Exception, match=r"give one constraint; got structured_outputs\.choice and guided_regex"):
            client.chat.completions.create(
                model="x", messages=msgs, extra_body={"guided_regex": "a", "structured_outputs": {"choice": ["b"]}}
            )
        chunks = list(
            client.chat.completions.create(
                model="x", messages=msgs, stream=True, stream_options={"include_usage": True}, max_tokens=4
            )
        )
        assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens >= 1
        assert all(c.usage is None for c in chunks[:-1])
