"""dlmprompt on Ray Serve: a local Ray instance started here, two replicas of the embedded model
behind one endpoint, the openai client and the native client (streaming too), and a replica killed
under load: its requests fail with a clean retryable 503, the others succeed, and Ray Serve
brings the replica back. A slow suite: ``pytest -m ray`` (``.ci/run`` runs it)."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import pytest

ray = pytest.importorskip("ray", reason='Ray Serve is not installed: pip install -e ".[ray]"')
serve = pytest.importorskip("ray.serve")

import dlmprompt  # noqa: E402
from dlmprompt import Prompt, slot  # noqa: E402

pytestmark = pytest.mark.ray

NAME = Prompt("Name: ") + slot("name", regex="[A-Z][a-z]{1,10}", max_tokens=6)
# one position per step, so that requests are still running when a replica is killed
STORY = (Prompt("A long story: ") + slot("story", max_tokens=64)).with_sampling(tokens_per_step=1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _model_replicas() -> list[str]:
    names = ray.util.list_named_actors(all_namespaces=True)
    return sorted(n["name"] for n in names if "DLMPromptModel" in n["name"] and n["namespace"] == "serve")


def _running(app: str = "dlmprompt") -> int:
    status = serve.status().applications.get(app)
    if status is None:
        return 0
    return int(status.deployments["DLMPromptModel"].replica_states.get("RUNNING", 0))


@pytest.fixture(scope="module")
def cluster():  # type: ignore[no-untyped-def]
    from dlmprompt.serving.ray_serve import application

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    port = _free_port()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(application(replicas=2, num_cpus=0.5, max_batch=8), name="dlmprompt", route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


def _compile_log() -> str:
    """What the replicas logged about their compile workers (the exit code or the out-of-memory
    traceback), for an assertion message: a replica's errors are not in the test's output."""
    import glob

    lines: list[str] = []
    for path in glob.glob("/tmp/ray/session_latest/logs/**/*", recursive=True):
        try:
            with open(path, errors="replace") as f:
                lines += [ln.rstrip() for ln in f if "compile worker" in ln]
        except OSError:
            continue
    return "\n".join(lines[-20:]) or "(no compile worker log)"


def _gen(url: str, prompt: Prompt, seed: int, timeout: float = 120) -> httpx.Response:
    body = {"prompt": prompt.model_dump(mode="json", by_alias=True), "seed": seed}
    return httpx.post(f"{url}/v1/generate", json=body, timeout=timeout)


def test_the_apis_answer_through_ray_serve_as_they_do_alone(cluster: str) -> None:
    import openai

    seen = set()
    for seed in range(40):  # Ray Serve spreads requests over both replicas
        resp = _gen(cluster, NAME, seed)
        assert resp.status_code == 200, resp.text
        seen.add(resp.headers["x-dlmprompt-replica"])
        assert resp.json()["captures"]["name"]["text"][:1].isupper()
        if len(seen) == 2:
            break
    assert len(seen) == 2, seen
    # the same seed gives the same answer on any replica, and as dlmprompt serve alone
    from dlmprompt.serving.server import background

    with background() as alone:
        assert _gen(alone.url, NAME, 3).json()["text"] == _gen(cluster, NAME, 3).json()["text"]

    with dlmprompt.Client(cluster) as client:  # the native client, streaming too
        events = list(client.stream(NAME, seed=4))
        result = events[-1]
        assert result["name"][:1].isupper() and len(events) - 1 == result.steps
        assert client.generate(NAME, seed=4).text == result.text

    oa = openai.OpenAI(base_url=f"{cluster}/v1", api_key="none")
    schema = {
        "type": "object",
        "properties": {"color": {"enum": ["red", "blue"]}, "n": {"type": "integer", "minimum": 0, "maximum": 9}},
        "required": ["color", "n"],
        "additionalProperties": False,
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "pick", "schema": schema}}
    chat = oa.chat.completions.create(
        model="dlmprompt-default", messages=[{"role": "user", "content": "Pick."}], response_format=fmt, seed=1
    )
    value = json.loads(chat.choices[0].message.content or "")
    assert value["color"] in {"red", "blue"} and 0 <= value["n"] <= 9
    chunks = list(
        oa.chat.completions.create(
            model="dlmprompt-default",
            messages=[{"role": "user", "content": "Pick."}],
            response_format=fmt,
            seed=1,
            stream=True,
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert json.loads(streamed) == value
    bad = httpx.post(f"{cluster}/v1/completions", json={"model": "x", "prompt": "a", "regex": "x{0,100000}"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "compile_error"


def test_a_replica_killed_under_load_fails_only_its_requests_and_comes_back(cluster: str) -> None:
    replicas = _model_replicas()
    assert len(replicas) == 2, replicas
    out: list[httpx.Response] = []
    lock = threading.Lock()

    def one(seed: int) -> None:
        resp = _gen(cluster, STORY, seed)
        with lock:
            out.append(resp)

    threads = [threading.Thread(target=one, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    time.sleep(1.5)  # requests are in flight on both replicas
    victim = ray.get_actor(replicas[0], namespace="serve")
    ray.kill(victim, no_restart=True)
    for t in threads:
        t.join(180)
    codes = sorted(r.status_code for r in out)
    assert len(out) == 8 and set(codes) <= {200, 503}, [(r.status_code, r.text[:200]) for r in out]
    failed = [r for r in out if r.status_code == 503]
    assert failed and len(failed) < 8, codes  # the killed replica's requests failed, the others' did not
    for r in failed:
        err = r.json()["error"]
        # the replica died under the request (or, dying, stopped its compile worker first)
        assert err["code"] in {"replica_unavailable", "compile_worker_stopped"}, err
        assert "retry" in err["message"] and r.headers["retry-after"] == "1"
    for r in out:
        if r.status_code == 200:
            assert len(r.json()["captures"]["story"]["tokens"]) <= 64
    # Ray Serve replaces the replica; then both serve again
    t = time.monotonic()
    while not (_running() == 2 and len(_model_replicas()) == 2 and replicas[0] not in _model_replicas()):
        assert time.monotonic() - t < 120, (serve.status(), _model_replicas())
        time.sleep(0.5)
    seen = set()
    t = time.monotonic()
    while len(seen) < 2:
        assert time.monotonic() - t < 120, seen
        resp = _gen(cluster, NAME, len(seen))
        assert resp.status_code == 200, (resp.text, _compile_log())
        seen.add(resp.headers["x-dlmprompt-replica"])
