"""schemathesis against a real server, from the server's own OpenAPI schema: every route, valid
and invalid bodies; no 5xx, every 4xx in the documented error shape with a code, the server
healthy after (a bounded run here; ``benchmarks/fuzz_api.py --examples N`` for a longer one)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("schemathesis")
ROOT = Path(__file__).resolve().parents[1]


def test_fuzzing_every_route_finds_no_server_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "fuzz.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "fuzz_api.py"), "--examples", "25", "--json", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.exists(), f"fuzz_api.py exited {run.returncode} without figures: {run.stderr[-3000:]}"
    figures = json.loads(out.read_text())
    assert figures["server_errors"] == 0 and figures["bad_error_shape"] == 0 and figures["timeouts"] == 0, figures[
        "failures"
    ]
    assert figures["healthy"] and run.returncode == 0, run.stderr[-2000:]
    routes = figures["routes"]
    assert {"POST /v1/generate", "POST /v1/chat/completions", "POST /v1/completions", "GET /health"} <= set(routes)
    for name in ("POST /v1/generate", "POST /v1/chat/completions", "POST /v1/completions"):
        assert routes[name]["cases"] >= 20  # hypothesis may stop early on a small space, not this early
    # the valid half of the cases gets through: the fuzzer reaches the model, not only the validators
    assert routes["POST /v1/chat/completions"]["statuses"].get("200", 0) > 0
