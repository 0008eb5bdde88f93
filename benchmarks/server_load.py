"""Load test of `dlmprompt serve`: N concurrent clients for a fixed time, every answer checked.

    python benchmarks/server_load.py [--clients 32] [--duration 60] [--json OUT] [--url URL]
    python benchmarks/server_load.py --ramp 1,2,4,8,16,32,64,128 --duration 20 --json OUT
    python benchmarks/server_load.py --soak 600 [--clients N] --json OUT

``--ramp`` runs each number of clients for ``--duration`` seconds and prints one row per level
(throughput, p50 / p99 latency, 429 share) and the knee: the fewest clients that reach 95 % of the
best throughput. ``--soak S`` holds ``--clients`` (default: the knee of a short ramp) for S seconds
and samples the server's resident memory (its process and its compile workers) every 10 s: it
reports errors, invalid answers, and memory growth (first to last sample after a 60 s warm-up,
and the least-squares slope in MB per minute).

Without ``--url`` it starts its own server (the embedded model) on a free loopback port and stops
it at the end. Each client loops over three kinds of request: a native ``/v1/generate`` with a
regex, a choice and free text; a native JSON Schema slot; and an OpenAI-style chat completion with
a ``json_schema`` response format. Every answer is checked against its constraint (``re``,
membership, ``jsonschema``) here, independently of the server. Prints throughput, latency
percentiles, the mean batch (rows per shared forward pass, from ``/metrics``) and writes JSON with
``requests``, ``ok``, ``invalid``, ``errors``, ``rejected_429``, ``p50_ms``, ``p99_ms``,
``throughput_rps``, ``mean_batch``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import jsonschema

from dlmprompt import Prompt, slot

RECORD = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 16},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "kind": {"enum": ["customer", "staff"]},
    },
    "required": ["name", "age", "kind"],
    "additionalProperties": False,
}
NAME_RX, CODE_RX = r"[A-Z][a-z]+", r"[A-Z]{2}-[0-9]{3}"
MIXED = (
    Prompt("Name: ")
    + slot("name", regex=NAME_RX, max_tokens=5)
    + ", code "
    + slot("code", regex=CODE_RX, max_tokens=8)
    + ". Color: "
    + slot("color", choice=["red", "green", "blue"], max_tokens=2)
    + "? "
    + slot("free", max_tokens=6)
)
RECORD_PROMPT = Prompt("Ann Lee (41) is on our staff.\nRecord: ") + slot("rec", schema=RECORD, max_tokens=8)


def _request(kind: int, seed: int) -> tuple[str, dict[str, Any]]:
    if kind == 0:
        return "/v1/generate", {"prompt": MIXED.model_dump(mode="json", by_alias=True), "seed": seed}
    if kind == 1:
        return "/v1/generate", {"prompt": RECORD_PROMPT.model_dump(mode="json", by_alias=True), "seed": seed}
    return "/v1/chat/completions", {
        "model": "dlmprompt-default",
        "seed": seed,
        "temperature": 0.7,
        "max_tokens": 8,
        "messages": [{"role": "user", "content": "Bob Stone, 29, buys from us. His record?"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "rec", "schema": RECORD}},
    }


def _valid(kind: int, data: dict[str, Any]) -> bool:
    try:
        if kind == 0:
            c = data["captures"]
            return (
                re.fullmatch(NAME_RX, c["name"]["text"]) is not None
                and re.fullmatch(CODE_RX, c["code"]["text"]) is not None
                and c["color"]["text"] in {"red", "green", "blue"}
                and isinstance(c["free"]["text"], str)
            )
        if kind == 1:
            jsonschema.validate(json.loads(data["captures"]["rec"]["text"]), RECORD)
            return True
        jsonschema.validate(json.loads(data["choices"][0]["message"]["content"]), RECORD)
        return True
    except (jsonschema.ValidationError, ValueError, KeyError, TypeError):
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _metrics(url: str) -> dict[str, float]:
    text = httpx.get(url + "/metrics", timeout=30).text
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


async def _client(i: int, url: str, stop_at: float, stats: dict[str, Any]) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=300) as http:
        n = 0
        while time.monotonic() < stop_at:
            kind = (i + n) % 3
            path, body = _request(kind, seed=i * 100_000 + n)
            n += 1
            t = time.perf_counter()
            try:
                resp = await http.post(path, json=body)
            except httpx.HTTPError as exc:
                stats["errors"] += 1
                stats["error_samples"].append(f"{type(exc).__name__}: {exc}")
                continue
            ms = (time.perf_counter() - t) * 1000
            stats["requests"] += 1
            if resp.status_code == 429:
                stats["rejected_429"] += 1
                await asyncio.sleep(float(resp.headers.get("retry-after", "1")))
                continue
            if resp.status_code != 200:
                stats["errors"] += 1
                stats["error_samples"].append(f"HTTP {resp.status_code}: {resp.text[:200]}")
                continue
            stats["latencies"].append(ms)
            if _valid(kind, resp.json()):
                stats["ok"] += 1
            else:
                stats["invalid"] += 1
                stats["invalid_samples"].append(resp.text[:300])


async def _progress(stop_at: float, t0: float, stats: dict[str, Any]) -> None:
    while time.monotonic() < stop_at:
        await asyncio.sleep(min(10.0, max(0.1, stop_at - time.monotonic())))
        print(
            f"  {time.monotonic() - t0:5.0f} s  requests {stats['requests']:5d}  ok {stats['ok']:5d}  "
            f"invalid {stats['invalid']}  errors {stats['errors']}",
            flush=True,
        )


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def _rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (compile workers), in MB."""
    total = 0
    pids = [pid]
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            pids += [int(c) for c in (task / "children").read_text().split()]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def _new_stats() -> dict[str, Any]:
    return {
        "requests": 0,
        "ok": 0,
        "invalid": 0,
        "errors": 0,
        "rejected_429": 0,
        "latencies": [],
        "error_samples": [],
        "invalid_samples": [],
    }


def _level(url: str, clients: int, duration: float, pid: int | None = None) -> dict[str, Any]:
    """``clients`` looping clients for ``duration`` seconds; the figures of that run."""
    before = _metrics(url)
    stats = _new_stats()
    memory: list[tuple[float, float]] = []
    print(f"{clients} clients for {duration:.0f} s against {url}", flush=True)
    t0 = time.monotonic()
    stop_at = t0 + duration

    async def sample_memory() -> None:
        while pid is not None and time.monotonic() < stop_at:
            memory.append((round(time.monotonic() - t0, 1), round(_rss_mb(pid), 1)))
            await asyncio.sleep(10.0)

    async def run() -> None:
        await asyncio.gather(
            _progress(stop_at, t0, stats),
            sample_memory(),
            *[_client(i, url, stop_at, stats) for i in range(clients)],
        )

    asyncio.run(run())
    wall = time.monotonic() - t0
    after = _metrics(url)
    passes = after["dlmprompt_forward_passes_total"] - before["dlmprompt_forward_passes_total"]
    rows = after["dlmprompt_batch_rows_total"] - before["dlmprompt_batch_rows_total"]
    lat = stats["latencies"]
    out = {
        "clients": clients,
        "duration_s": round(wall, 1),
        "requests": stats["requests"],
        "ok": stats["ok"],
        "invalid": stats["invalid"],
        "errors": stats["errors"],
        "rejected_429": stats["rejected_429"],
        "share_429": round(stats["rejected_429"] / stats["requests"], 4) if stats["requests"] else 0.0,
        "p50_ms": round(_pct(lat, 0.5), 1),
        "p99_ms": round(_pct(lat, 0.99), 1),
        "throughput_rps": round(stats["ok"] / wall, 3),
        "mean_batch": round(rows / passes, 2) if passes else 0.0,
        "forward_passes": int(passes),
        "error_samples": stats["error_samples"][:5],
        "invalid_samples": stats["invalid_samples"][:5],
    }
    if memory:
        out["rss_mb"] = memory
    return out


_COLS = ["clients", "requests", "ok", "invalid", "errors", "share_429", "p50_ms", "p99_ms", "throughput_rps"]


def _table(rows: list[dict[str, Any]]) -> None:
    heads = ["clients", "requests", "ok", "invalid", "errors", "429 share", "p50 ms", "p99 ms", "req/s", "mean batch"]
    print("| " + " | ".join(f"{h:>9}" for h in heads) + " |")
    print("|" + "|".join("-" * 11 for _ in heads) + "|")
    for r in rows:
        cells = [r[c] for c in _COLS] + [r["mean_batch"]]
        print("| " + " | ".join(f"{c:>9}" for c in cells) + " |")


def _knee(rows: list[dict[str, Any]]) -> int:
    best = max(r["throughput_rps"] for r in rows)
    return min(r["clients"] for r in rows if r["throughput_rps"] >= 0.95 * best)


def _growth(memory: list[tuple[float, float]], warmup: float = 60.0) -> dict[str, float]:
    pts = [(t, m) for t, m in memory if t >= warmup] or memory
    if len(pts) < 2:
        return {"first_mb": pts[0][1] if pts else 0.0, "last_mb": pts[-1][1] if pts else 0.0, "slope_mb_per_min": 0.0}
    n = len(pts)
    mt = sum(t for t, _ in pts) / n
    mm = sum(m for _, m in pts) / n
    var = sum((t - mt) ** 2 for t, _ in pts)
    slope = sum((t - mt) * (m - mm) for t, m in pts) / var if var else 0.0
    return {
        "first_mb": pts[0][1],
        "last_mb": pts[-1][1],
        "growth_mb": round(pts[-1][1] - pts[0][1], 1),
        "peak_mb": max(m for _, m in memory),
        "slope_mb_per_min": round(slope * 60, 3),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=None, help="concurrent clients (default 32; --soak: the knee)")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of load, per level with --ramp (<= 900)")
    ap.add_argument("--ramp", default=None, metavar="N,N,...", help="client counts to run one after another")
    ap.add_argument("--soak", type=float, default=None, metavar="S", help="hold the load S seconds, sample memory")
    ap.add_argument("--url", default=None, help="a running server (default: start one on a free loopback port)")
    ap.add_argument("--max-batch", type=int, default=32, help="for the server this script starts")
    ap.add_argument("--json", default=None, help="write the figures here")
    args = ap.parse_args(argv)
    levels = [args.clients or 32]
    if args.ramp:
        try:
            levels = [int(x) for x in args.ramp.split(",")]
        except ValueError:
            ap.error("--ramp takes client counts separated by commas, e.g. 1,2,4,8")
    if not all(1 <= n <= 256 for n in levels) or not 0 < args.duration <= 900:
        ap.error("client counts must be 1..256 and --duration 0..900 seconds")
    if args.soak is not None and not 0 < args.soak <= 3600:
        ap.error("--soak takes 1..3600 seconds")
    proc = None
    url = args.url
    if url is None:
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "dlmprompt", "serve", "--host", "127.0.0.1", "--port", str(port)]
        cmd += ["--max-batch", str(args.max_batch), "--log-level", "warning", "--no-ui"]
        print("starting", " ".join(cmd[2:]), flush=True)
        proc = subprocess.Popen(cmd)
        t = time.monotonic()
        while True:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() - t > 120:
                print("the server did not start", file=sys.stderr)
                return 1
            time.sleep(0.3)
    pid = proc.pid if proc is not None else None
    out: dict[str, Any] = {}
    try:
        url = url.rstrip("/")
        # warm-up: compile the three programs once (compiles are cached), outside the timed window
        for kind in range(3):
            path, body = _request(kind, 0)
            httpx.post(url + path, json=body, timeout=300).raise_for_status()
        if args.soak is not None:
            clients = args.clients
            if clients is None:
                ramp = [_level(url, n, 15.0) for n in (1, 4, 16, 64)]
                _table(ramp)
                clients = _knee(ramp)
                out["ramp"] = ramp
                print(f"knee: {clients} clients", flush=True)
            soak = _level(url, clients, args.soak, pid)
            soak["memory"] = _growth(soak.get("rss_mb", []))
            out["soak"] = soak
            rows = [soak]
        elif args.ramp:
            rows = [_level(url, n, args.duration) for n in levels]
            out = {"ramp": rows, "knee_clients": _knee(rows)}
        else:
            rows = [_level(url, levels[0], args.duration, pid)]
            out = rows[0]
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
    print()
    _table(rows)
    if "knee_clients" in out:
        print(f"knee: {out['knee_clients']} clients (fewest reaching 95 % of the best throughput)")
    if "soak" in out:
        m = out["soak"]["memory"]
        print(f"soak memory (after 60 s): {m}")
    for r in rows:
        for s in r["error_samples"] + r["invalid_samples"]:
            print("  sample:", s)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
        print("wrote", args.json)
    bad = sum(r["invalid"] + r["errors"] for r in rows)
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
