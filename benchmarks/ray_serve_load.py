"""Throughput per replica on Ray Serve: ``server_load.py`` against 1, 2, ... model replicas.

Starts a local Ray instance (``--num-cpus``), runs ``dlmprompt.serving.ray_serve.application``
with each replica count in turn on a loopback port and loads it with ``benchmarks/server_load.py
--url`` (``--clients`` for ``--duration`` seconds; every answer checked there). Prints one row
per replica count and writes JSON. Needs the ray extra (``pip install -e ".[ray]"``).

    python benchmarks/ray_serve_load.py [--replicas 1,2] [--clients 16] [--duration 40] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--replicas", default="1,2", help="replica counts, comma-separated")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--duration", type=float, default=40.0)
    ap.add_argument("--num-cpus", type=float, default=2, help="CPUs of the local Ray instance")
    ap.add_argument("--replica-cpus", type=float, default=0.5, help="num_cpus of each replica")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    try:
        import ray
        from ray import serve
    except ImportError:
        print('Ray Serve is not installed: pip install -e ".[ray]"', file=sys.stderr)
        return 2
    from dlmprompt.serving.ray_serve import application

    counts = [int(x) for x in args.replicas.split(",")]
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    rows: list[dict[str, Any]] = []
    try:
        for n in counts:
            print(f"{n} replica(s)", flush=True)
            serve.run(application(replicas=n, num_cpus=args.replica_cpus), name="dlmprompt", route_prefix="/")
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "load.json"
                cmd = [sys.executable, str(HERE / "server_load.py"), "--url", f"http://127.0.0.1:{port}"]
                cmd += ["--clients", str(args.clients), "--duration", str(args.duration), "--json", str(out)]
                subprocess.run(cmd, check=False)
                r = json.loads(out.read_text())
            rows.append(
                {
                    "replicas": n,
                    **{k: r[k] for k in ("requests", "ok", "invalid", "errors", "p50_ms", "p99_ms", "throughput_rps")},
                }
            )
            rows[-1]["rps_per_replica"] = round(r["throughput_rps"] / n, 3)
            serve.delete("dlmprompt")
            time.sleep(2)
    finally:
        serve.shutdown()
        ray.shutdown()
    cols = ["replicas", "requests", "ok", "invalid", "errors", "p50_ms", "p99_ms", "throughput_rps", "rps_per_replica"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"clients": args.clients, "duration_s": args.duration, "rows": rows}, indent=2) + "\n"
        )
        print("wrote", args.json)
    return 0 if all(r["invalid"] == 0 and r["errors"] == 0 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
