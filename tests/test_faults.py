"""Faults in the model or the network fail only what they touch; the engine keeps serving.

A forward that raises, runs out of memory (simulated with ``torch.OutOfMemoryError``) or returns
NaN logits; a client that leaves mid-stream; a client that stops reading; SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import torch

from dlmprompt import Prompt, Tokenizer, compile, slot
from dlmprompt.sampling.rows import NonFiniteLogits
from dlmprompt.sampling.sampler import generate
from dlmprompt.serving.engine import Engine
from dlmprompt.serving.server import background
from dlmprompt.testing import RandomDenoiser

TOK = Tokenizer.bytes_level()
POISON = b"POISON"


def _has(ids: torch.Tensor, word: bytes) -> bool:
    return word in bytes(int(t) % 256 for t in ids.tolist())


class Faulty(RandomDenoiser):
    """Random logits, except: rows whose canvas spells POISON make the model ``fault`` (raise, or
    NaN logits for those rows), and a batch of more than ``fits`` rows runs out of memory."""

    def __init__(self, fault: str = "raise", fits: int = 1 << 30, delay: float = 0.0) -> None:
        super().__init__(TOK)
        self.fault = fault
        self.fits = fits
        self.delay = delay
        self.batches: list[int] = []

    def __call__(self, ids: torch.Tensor, att: torch.Tensor) -> torch.Tensor:
        if self.delay:
            time.sleep(self.delay)
        self.batches.append(int(ids.shape[0]))
        if ids.shape[0] > self.fits:
            raise torch.OutOfMemoryError(f"simulated: {ids.shape[0]} rows do not fit, {self.fits} do")
        out = super().__call__(ids, att)
        for i in range(ids.shape[0]):
            if _has(ids[i], POISON):
                if self.fault == "raise":
                    raise RuntimeError("simulated model failure on a poisoned row")
                out[i] = float("nan")
        return out


def _prog(text: str, n: int = 6):  # type: ignore[no-untyped-def]
    return compile(Prompt(text) + slot("a", regex="[a-z]{2,6}", max_tokens=n), TOK)


def _alone(den: RandomDenoiser, prog, seed: int) -> str:  # type: ignore[no-untyped-def]
    return generate(den, prog, generator=torch.Generator().manual_seed(seed)).text


@pytest.mark.parametrize("fault", ["raise", "nan"])
def test_a_faulty_row_fails_alone_and_the_engine_keeps_serving(fault: str) -> None:
    den = Faulty(fault)
    engine = Engine(den, max_batch=8)
    try:
        good = [_prog(f"ok {i}: ") for i in range(3)]
        jobs = [engine.submit(p, seed=i) for i, p in enumerate(good)]
        bad = engine.submit(_prog("POISON: "), seed=9)
        jobs.append(engine.submit(_prog("ok 3: "), seed=3))
        error = RuntimeError if fault == "raise" else NonFiniteLogits
        with pytest.raises(error, match="poisoned row" if fault == "raise" else "NaN or infinite logits only"):
            bad.future.result(timeout=60)
        texts = [j.future.result(timeout=60).text for j in jobs]
        assert texts == [_alone(RandomDenoiser(TOK), p, i) for i, p in enumerate([*good, _prog("ok 3: ")])]
        after = engine.submit(_prog("later: "), seed=5).future.result(timeout=60)  # still serving
        assert after.text == _alone(RandomDenoiser(TOK), _prog("later: "), 5)
    finally:
        engine.close()
    assert engine.stats.failed == 1 and engine.stats.finished == 5


def test_nan_logits_are_an_error_not_a_silent_answer() -> None:
    with pytest.raises(NonFiniteLogits, match="nothing was committed"):
        generate(Faulty("nan"), _prog("POISON "), generator=torch.Generator().manual_seed(0))


def test_running_out_of_memory_splits_the_batch_and_lowers_the_cap() -> None:
    den = Faulty(fits=2)
    engine = Engine(den, max_batch=8)
    progs = [_prog(f"row {i}: ") for i in range(6)]
    try:
        jobs = [engine.submit(p, seed=i) for i, p in enumerate(progs)]
        texts = [j.future.result(timeout=120).text for j in jobs]
    finally:
        engine.close()
    assert texts == [_alone(RandomDenoiser(TOK), p, i) for i, p in enumerate(progs)]  # nothing lost or changed
    st = engine.stats
    assert st.out_of_memory >= 1 and st.failed == 0 and st.finished == 6
    assert engine.batch_cap <= 2
    # the first pass (6 rows) and its halves (3 + 3) ran out of memory; no pass was too big after that
    too_big = [b for b in den.batches if b > 2]
    assert len(too_big) == st.out_of_memory <= 3, den.batches


# ------------------------------------------------------------------ over HTTP
@pytest.fixture(scope="module")
def live():  # type: ignore[no-untyped-def]
    den = Faulty("raise", delay=0.1)  # a step takes 0.1 s: the server notices a gone client in time
    with background(den) as srv:
        yield srv, den


def _gen_body(text: str, n: int = 6, stream: bool = False, seed: int = 1) -> dict:  # type: ignore[type-arg]
    prompt = (Prompt(text) + slot("a", regex="[a-z]{2,64}", max_tokens=n)).with_sampling(tokens_per_step=1)
    return {"prompt": prompt.model_dump(mode="json", by_alias=True), "seed": seed, "stream": stream}


def test_a_failed_row_gets_a_5xx_json_error_the_others_answers(live) -> None:  # type: ignore[no-untyped-def]
    srv, _ = live
    out: dict[str, httpx.Response] = {}

    def post(name: str, text: str) -> None:
        out[name] = httpx.post(f"{srv.url}/v1/generate", json=_gen_body(text), timeout=60)

    threads = [threading.Thread(target=post, args=(n, t)) for n, t in [("bad", "POISON "), ("a", "x "), ("b", "y ")]]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert out["bad"].status_code == 500
    err = out["bad"].json()["error"]
    assert (
        set(err) == {"message", "type", "code"} and err["type"] == "server_error" and "poisoned row" in err["message"]
    )
    assert out["a"].status_code == 200 and out["b"].status_code == 200
    with httpx.stream("POST", f"{srv.url}/v1/generate", json=_gen_body("POISON ", stream=True), timeout=60) as resp:
        events = [line for line in resp.iter_lines() if line.startswith("event:")]
    assert events == ["event: error"]
    assert httpx.get(f"{srv.url}/health").json()["status"] == "ok"


def test_a_client_that_leaves_mid_stream_frees_its_row_within_a_step(live) -> None:  # type: ignore[no-untyped-def]
    srv, _ = live
    engine = srv.app.state.server.engine
    cancelled = engine.stats.cancelled
    with httpx.stream(
        "POST", f"{srv.url}/v1/generate", json=_gen_body("leave ", n=64, stream=True), timeout=60
    ) as resp:
        lines = resp.iter_lines()
        steps = 0
        for line in lines:
            steps += line.startswith("event: step")
            if steps == 3:
                break
        job = next(j for j in engine._active)
        at_close = job.row.steps
    t = time.monotonic()
    while engine.stats.cancelled == cancelled and time.monotonic() - t < 30:
        time.sleep(0.005)
    assert engine.stats.cancelled == cancelled + 1 and job not in engine._active
    # the engine notices before the row's next step (or the one after, if a step was running)
    assert job.row.steps <= at_close + 2, (at_close, job.row.steps)


def test_a_client_that_stops_reading_stalls_no_one(live) -> None:  # type: ignore[no-untyped-def]
    srv, _ = live
    engine = srv.app.state.server.engine
    finished = engine.stats.finished
    host, port = srv.url.removeprefix("http://").split(":")
    body = json.dumps(_gen_body("slow reader ", n=64, stream=True)).encode()
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(
        b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    try:  # never read: the other requests go on, and the stalled stream's job still finishes
        for i in range(3):
            resp = httpx.post(f"{srv.url}/v1/generate", json=_gen_body(f"other {i} "), timeout=60)
            assert resp.status_code == 200
        t = time.monotonic()
        while engine.stats.finished < finished + 4 and time.monotonic() - t < 60:
            time.sleep(0.02)
        assert engine.stats.finished == finished + 4 and engine.in_flight == 0
    finally:
        sock.close()


# ------------------------------------------------------------------ SIGTERM
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_sigterm_finishes_in_flight_work_and_exits_cleanly(tmp_path: Path) -> None:
    port = _free_port()
    log = open(tmp_path / "serve.log", "w")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dlmprompt", "serve", "--port", str(port), "--log-level", "info"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        t = time.monotonic()
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() - t < 120, (tmp_path / "serve.log").read_text()
            time.sleep(0.2)
        out: dict[str, httpx.Response] = {}
        # one position per step: still running when SIGTERM comes
        prompt = (Prompt("Tell a story: ") + slot("story", max_tokens=96)).with_sampling(tokens_per_step=1)
        body = {"prompt": prompt.model_dump(mode="json", by_alias=True), "seed": 1}
        worker = threading.Thread(target=lambda: out.update(r=httpx.post(f"{url}/v1/generate", json=body, timeout=120)))
        worker.start()
        t = time.monotonic()
        while "dlmprompt_in_flight 1" not in httpx.get(f"{url}/metrics", timeout=5).text:
            assert time.monotonic() - t < 60 and worker.is_alive()
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        worker.join(120)
        assert out["r"].status_code == 200, out["r"].text
        assert len(out["r"].json()["captures"]["story"]["tokens"]) <= 96
        # uvicorn shuts down gracefully, then re-raises the signal so that the exit status says SIGTERM
        assert proc.wait(60) in (0, -signal.SIGTERM)
        text = (tmp_path / "serve.log").read_text()
        assert "Application shutdown complete" in text and "Traceback" not in text, text
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/health", timeout=2)
