"""Fuzz `dlmprompt serve` from its own OpenAPI schema with schemathesis: every route, valid and
invalid bodies drawn by hypothesis, every answer checked.

    python benchmarks/fuzz_api.py [--examples 200] [--json OUT] [--url URL]

Without ``--url`` it starts its own server (the embedded model) on a free loopback port. For each
operation of ``/openapi.json`` it draws ``--examples`` cases (half from the schema's positive
mode, half negative: wrong types, missing fields, out-of-range values; the same cases every run)
and sends each over HTTP.
A case fails when the answer is a 5xx, or a 4xx whose body is not the documented
``{"error": {"message", "type", "code"}}`` with a code, or a request that gets no answer within 120 s. After
the run ``/health`` must answer. Prints one row per route (cases, status counts, failures) and
writes JSON with ``cases``, ``server_errors``, ``bad_error_shape``, ``timeouts``, ``healthy``,
``routes`` and the first failures (each with its body, to reproduce).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from typing import Any

import httpx


def _error_shape_ok(resp: Any) -> bool:
    try:
        body = resp.json()
    except ValueError:
        return False
    err = body.get("error") if isinstance(body, dict) else None
    # every refusal names its code, so a client can branch on it
    return isinstance(err, dict) and isinstance(err.get("message"), str) and isinstance(err.get("code"), str)


def _route_test(strategy: Any, n: int, url: str, name: str, statuses: Counter[str], failures: list) -> Any:
    """The hypothesis test of one route: send each case, count its status, keep its failures."""
    from hypothesis import HealthCheck, given, settings

    @settings(max_examples=n, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def run(case: Any) -> None:
        try:
            resp = case.call(base_url=url, timeout=120)
        except httpx.TimeoutException:
            statuses["timeout"] += 1
            failures.append({"route": name, "problem": "no answer in 120 s", "body": case.body})
            return
        except httpx.TransportError as exc:  # a reset connection: the server dropped it
            statuses["reset"] += 1
            failures.append({"route": name, "problem": f"connection: {exc}", "body": case.body})
            return
        statuses[str(resp.status_code)] += 1
        if resp.status_code >= 500:
            failures.append({"route": name, "problem": f"HTTP {resp.status_code}", "answer": resp.text[:500],
                             "body": case.body})  # fmt: skip
        elif resp.status_code >= 400 and not _error_shape_ok(resp):
            failures.append({"route": name, "problem": "4xx without the error shape", "answer": resp.text[:500],
                             "body": case.body})  # fmt: skip

    return run


def fuzz(url: str, examples: int, progress: bool = True) -> dict[str, Any]:
    import schemathesis
    from hypothesis import strategies as st

    schema = schemathesis.openapi.from_url(url.rstrip("/") + "/openapi.json")
    routes: dict[str, dict[str, Any]] = {}
    failures: list[dict[str, Any]] = []
    for result in schema.get_all_operations():
        op = result.ok()
        name = f"{op.method.upper()} {op.path}"
        statuses: Counter[str] = Counter()
        t0 = time.monotonic()
        n = 1 if op.method == "get" else examples  # a GET route takes no input here
        strategy = st.one_of(
            op.as_strategy(schemathesis.GenerationMode.POSITIVE), op.as_strategy(schemathesis.GenerationMode.NEGATIVE)
        )

        _route_test(strategy, n, url, name, statuses, failures)()
        routes[name] = {"cases": sum(statuses.values()), "statuses": dict(statuses), "seconds": time.monotonic() - t0}
        if progress:
            print(f"  {name}: {dict(statuses)} ({routes[name]['seconds']:.1f} s)", file=sys.stderr, flush=True)
    try:
        healthy = httpx.get(url.rstrip("/") + "/health", timeout=30).json().get("status") == "ok"
    except (httpx.HTTPError, ValueError):
        healthy = False
    return {
        "cases": sum(r["cases"] for r in routes.values()),
        "server_errors": sum(1 for f in failures if f["problem"].startswith("HTTP 5")),
        "bad_error_shape": sum(1 for f in failures if f["problem"].startswith("4xx")),
        "timeouts": sum(1 for f in failures if f["problem"].startswith(("no answer", "connection"))),
        "healthy": healthy,
        "routes": routes,
        "failures": failures[:20],
    }


def _json_default(x: Any) -> Any:
    return repr(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=200, help="cases per POST route (default 200)")
    parser.add_argument("--url", help="fuzz a running server instead of starting one")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    try:
        import schemathesis  # noqa: F401
    except ImportError:
        sys.exit("needs schemathesis: pip install -e '.[test]'")
    if args.url:
        out = fuzz(args.url, args.examples)
    else:
        from dlmprompt.serving.server import background

        print("starting a server on the embedded model ...", file=sys.stderr, flush=True)
        with background() as srv:
            out = fuzz(srv.url, args.examples)
    print(f"{'route':<28} {'cases':>6}  statuses")
    for name, r in out["routes"].items():
        print(f"{name:<28} {r['cases']:>6}  {r['statuses']}")
    print(
        f"cases {out['cases']}, 5xx {out['server_errors']}, 4xx without the error shape {out['bad_error_shape']}, "
        f"timeouts/resets {out['timeouts']}, healthy after: {out['healthy']}"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, default=_json_default)
    ok = out["server_errors"] == out["bad_error_shape"] == out["timeouts"] == 0 and out["healthy"]
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
