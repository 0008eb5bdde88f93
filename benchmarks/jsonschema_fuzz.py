"""JSON Schema acceptance on instances nobody wrote: valid ones drawn from the schema, invalid near misses.

    python benchmarks/jsonschema_fuzz.py --data ../shared/data/jsonschemabench [--limit N] [--valid 10]
        [--invalid 10] [--json OUT] [--per-file OUT.jsonl]

The shared set's hand-written instances cover a schema thinly (a few valid ones, mostly the
obvious shape). This script asks the two questions of the JSON Schema issue on instances drawn
for each schema instead:

* **valid**: instances drawn from the schema by ``hypothesis-jsonschema`` (optional properties,
  extra properties, deep values, every branch), kept when two references agree they are valid:
  the ``jsonschema`` package (with its format checker) and ``jsonschema-rs`` (whose ``pattern``
  follows ECMA-262, as JSON Schema says: ``\\d`` is ``[0-9]``, where Python's ``re``, which
  hypothesis-jsonschema draws by, also takes other scripts' digits). Each must be accepted by
  the slot's token automata (``dlmprompt.compiler.json_accepts``): a miss is a valid value the
  sampler cannot produce.
* **invalid**: near misses made from those valid instances (a required key dropped, a leaf's type
  or value changed, an extra key, an item added or removed), kept when both references say they
  are invalid. Each must be rejected: an accepted one breaks the promise that every output
  satisfies its schema.

Schemas the compiler refuses, or that ``hypothesis-jsonschema`` cannot draw from, are counted and
skipped. Seeded: the same run gives the same instances. Prints a table by source and writes JSON.
"""

from __future__ import annotations

import argparse
import collections
import copy
import json
import os
import random
import signal
import sys
import time
import warnings
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from jsonschemabench import WARMUP, load_files, source_of, validator

from dlmprompt import Prompt, compile, slot
from dlmprompt.compiler import json_accepts
from dlmprompt.errors import CompileError
from dlmprompt.tokenizer import qwen25_tokenizer


class _Timeout(BaseException):
    """Past ``--timeout``: a BaseException, since hypothesis-jsonschema catches Exception while it
    merges sub-schemas (an Exception raised there is swallowed and the draw goes on)."""


def _alarm(*_: Any) -> None:
    raise _Timeout()


COUNTS = (
    "schemas",
    "compiled",
    "drawn",
    "valid_tests",
    "valid_accepted",
    "invalid_tests",
    "invalid_rejected",
)


class _OldMany:
    """hypothesis-jsonschema 0.23 drives ``cu.many`` with ``more()`` / ``reject()``; the pinned
    hypothesis has only the ``with many(...) as e: for _ in e:`` form. This adapts the old calls."""

    def __init__(self, data: Any, min_size: int, max_size: float, average_size: float) -> None:
        from hypothesis.internal.conjecture.utils import many

        self._many = many(data, min_size=min_size, max_size=max_size, average_size=average_size, observe=False)
        self._many.__enter__()
        self._steps = iter(self._many)

    def more(self) -> bool:
        if next(self._steps, False) is None:
            return True
        self._many.__exit__(None)
        return False

    def reject(self) -> None:
        self._many.reject()


def _patch_hypothesis_jsonschema() -> None:
    import hypothesis_jsonschema._from_schema as fs
    from hypothesis.internal.conjecture import utils

    if not hasattr(utils.many, "more") and getattr(fs, "cu", None) is utils:
        shim = type(
            "cu", (), {name: staticmethod(getattr(utils, name)) for name in dir(utils) if not name.startswith("_")}
        )
        shim.many = _OldMany
        fs.cu = shim


def draw_valid(schema: Any, n: int, seed: int) -> list[Any]:
    """Up to ``n`` instances drawn from ``schema`` by hypothesis-jsonschema (raises if it cannot)."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed
    from hypothesis_jsonschema import from_schema

    _patch_hypothesis_jsonschema()
    strategy = from_schema(copy.deepcopy(schema))  # it edits the schema it is given
    found: list[Any] = []

    @hseed(seed)
    @settings(
        max_examples=n,
        phases=[Phase.generate],
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(value: Any) -> None:
        found.append(value)

    collect()
    return found


class _CannotDraw(Exception):
    pass


def _draw_quietly(schema: Any, n: int, seed: int) -> tuple[str, Any]:
    """In the worker: ("ok", instances) or ("error", the exception's type name). Hypothesis
    sometimes calls the draws of hypothesis-jsonschema 0.23 inconsistent (FlakyStrategyDefinition):
    fewer examples, down to one, usually get past it."""
    error = ""
    while n >= 1:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return "ok", draw_valid(schema, n, seed)
        except Exception as exc:
            error = type(exc).__name__
            if error != "FlakyStrategyDefinition":
                break
            n //= 2
    return "error", error


class _Drawer:
    """Draws in a worker process, killed and replaced past the timeout: hypothesis-jsonschema
    can spin for minutes on some schemas inside code that catches whatever an alarm raises."""

    def __init__(self) -> None:
        self.pool: Any = None

    def draw(self, schema: Any, n: int, seed: int, timeout: float) -> list[Any]:
        import multiprocessing

        if self.pool is None:
            self.pool = multiprocessing.get_context("fork").Pool(1)
        job = self.pool.apply_async(_draw_quietly, (schema, n, seed))
        try:
            status, value = job.get(timeout)
        except multiprocessing.TimeoutError:
            self.pool.terminate()
            self.pool = None
            raise _Timeout() from None
        if status != "ok":
            raise _CannotDraw(value)
        return value


def _leaves(value: Any, path: tuple = ()) -> list[tuple]:
    out = [path]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _leaves(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _leaves(v, (*path, i))
    return out


def _get(value: Any, path: tuple) -> Any:
    for p in path:
        value = value[p]
    return value


def _set(value: Any, path: tuple, new: Any) -> Any:
    if not path:
        return new
    _get(value, path[:-1])[path[-1]] = new
    return value


REPLACEMENTS = (None, True, 0, -1, 1.5, 10**12, "", "x", "zz-not-a-value", [], {}, [1], {"k": 1})


def near_misses(instance: Any, rng: random.Random, n: int) -> list[Any]:
    """Up to ``n`` small edits of ``instance`` (most of them invalid under a strict schema)."""
    out = []
    paths = _leaves(instance)
    for _ in range(n * 3):
        if len(out) >= n:
            break
        value = copy.deepcopy(instance)
        path = rng.choice(paths)
        node = _get(value, path)
        kind = rng.random()
        if isinstance(node, dict) and node and kind < 0.3:  # drop a key
            del node[rng.choice(list(node))]
        elif isinstance(node, dict) and kind < 0.5:  # add a key
            node[rng.choice(["extra", "zz", next(iter(node), "a")])] = rng.choice(REPLACEMENTS)
        elif isinstance(node, list) and kind < 0.5:  # add or remove an item
            if node and rng.random() < 0.5:
                node.pop(rng.randrange(len(node)))
            else:
                node.append(
                    copy.deepcopy(rng.choice(node)) if node and rng.random() < 0.5 else rng.choice(REPLACEMENTS)
                )
        elif isinstance(node, str) and kind < 0.6:  # a longer or an edited string
            value = _set(
                value, path, node + rng.choice(["a", "0", " ", "-", node or "x"]) if rng.random() < 0.5 else node[:-1]
            )
        elif isinstance(node, (int, float)) and not isinstance(node, bool) and kind < 0.6:
            value = _set(value, path, rng.choice([node + 1, node - 1, -node, node * 10 + 1, node + 0.5]))
        else:
            value = _set(value, path, rng.choice(REPLACEMENTS))
        out.append(value)
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    tok = qwen25_tokenizer()
    files = load_files(args.data, args.limit, args.seed)
    if args.only:
        files = [f for f in files if os.path.basename(f) in args.only.split(",")]
    ours: collections.Counter = collections.Counter()
    by_source: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    skipped: collections.Counter = collections.Counter()
    misses: list[dict[str, Any]] = []
    signal.signal(signal.SIGALRM, _alarm)
    drawer = _Drawer()
    for warm in WARMUP:
        compile(Prompt(slot("value", schema=warm, max_tokens=args.value_tokens)), tok)
    per_file = open(args.per_file, "w") if args.per_file else None
    t_start = time.perf_counter()
    for i, path in enumerate(files):
        if i % 100 == 0:
            print(
                f"[{time.perf_counter() - t_start:6.0f}s] {i}/{len(files)} schemas; valid "
                f"{ours['valid_accepted']}/{ours['valid_tests']} accepted, invalid "
                f"{ours['invalid_rejected']}/{ours['invalid_tests']} rejected",
                file=sys.stderr,
                flush=True,
            )
        name = os.path.basename(path)
        with open(path) as f:
            schema = json.load(f)["schema"]
        row = by_source[source_of(path)]
        ours["schemas"] += 1
        row["schemas"] += 1
        record: dict[str, Any] = {"file": name}
        signal.alarm(args.timeout)
        try:
            program = compile(Prompt(slot("value", schema=schema, max_tokens=args.value_tokens)), tok)
        except (CompileError, _Timeout, RecursionError):
            program = None
        finally:
            signal.alarm(0)
        if program is None:
            skipped["refused by the compiler"] += 1
            continue
        ours["compiled"] += 1
        row["compiled"] += 1
        try:
            check = _References(schema)
        except Exception:  # a pattern a reference cannot read (\p{L} for Python's re): no reference
            skipped["no reference validator"] += 1
            continue
        try:
            drawn = drawer.draw(schema, args.valid, args.seed, timeout=args.timeout * 3)
        except _Timeout:
            skipped["drawing timed out"] += 1
            continue
        except _CannotDraw as exc:  # hypothesis-jsonschema cannot draw from it (unsupported, unsatisfiable)
            skipped[f"hypothesis-jsonschema: {exc}"] += 1
            continue
        valid = [v for v in drawn if _is_valid(check, v)]
        ours["references_disagree"] += sum(_is_valid(check, v) is None for v in drawn)
        if not valid:
            skipped["nothing valid drawn"] += 1
            continue
        ours["drawn"] += 1
        row["drawn"] += 1
        rng = random.Random(f"{args.seed}:{name}")
        invalid = []
        for v in valid:
            invalid += [
                m for m in near_misses(v, rng, max(1, args.invalid // len(valid))) if _is_valid(check, m) is False
            ]
        record["valid"], record["invalid"] = len(valid), len(invalid)
        record["valid_missed"], record["invalid_accepted"] = 0, 0
        for key, instances in (("valid", valid), ("invalid", invalid[: args.invalid])):
            for inst in instances:
                signal.alarm(args.timeout)
                try:
                    _, ok = json_accepts(program, "value", inst)
                except _Timeout:
                    skipped["acceptance check timed out"] += 1
                    continue
                finally:
                    signal.alarm(0)
                ours[f"{key}_tests"] += 1
                row[f"{key}_tests"] += 1
                good = ok if key == "valid" else not ok
                word = "accepted" if key == "valid" else "rejected"
                ours[f"{key}_{word}"] += good
                row[f"{key}_{word}"] += good
                if not good:
                    record["valid_missed" if key == "valid" else "invalid_accepted"] += 1
                    if len(misses) < args.keep_misses:
                        misses.append({"file": name, "kind": key, "instance": json.dumps(inst)[:20000]})
        if per_file is not None:
            per_file.write(json.dumps(record) + "\n")
            per_file.flush()
    if per_file is not None:
        per_file.close()
    out: dict[str, Any] = {k: int(ours[k]) for k in COUNTS}
    out["valid_accepted_rate"] = round(ours["valid_accepted"] / max(1, ours["valid_tests"]), 5)
    out["invalid_accepted"] = int(ours["invalid_tests"] - ours["invalid_rejected"])
    out["references_disagree"] = int(ours["references_disagree"])
    out["skipped"] = dict(skipped.most_common())
    out["by_source"] = {k: dict(v) for k, v in sorted(by_source.items())}
    out["misses"] = misses
    out["seconds"] = round(time.perf_counter() - t_start, 1)
    return out


class _References:
    """The ``jsonschema`` package (format checker on) and ``jsonschema-rs`` (ECMA-262 patterns,
    formats checked): ``is_valid`` is True or False where both agree, None where they do not."""

    def __init__(self, schema: Any) -> None:
        import jsonschema_rs

        self.py = validator(schema)
        self.py.is_valid(None)
        self.rs = jsonschema_rs.validator_for(schema, validate_formats=True)

    def is_valid(self, value: Any) -> bool | None:
        a, b = self.py.is_valid(value), self.rs.is_valid(value)
        return a if a == b else None


def _is_valid(check: _References, value: Any) -> bool | None:
    try:
        return check.is_valid(value)
    except Exception:  # a reference cannot decide (a pattern it cannot read, a huge number)
        return None


def print_table(out: dict[str, Any]) -> None:
    print(f"{'source':<16} {'schemas':>8} {'compiled':>9} {'drawn':>6} {'valid acc.':>14} {'invalid rej.':>14}")
    for src, r in out["by_source"].items():
        print(
            f"{src:<16} {r.get('schemas', 0):>8} {r.get('compiled', 0):>9} {r.get('drawn', 0):>6} "
            f"{r.get('valid_accepted', 0):>6}/{r.get('valid_tests', 0):<7} "
            f"{r.get('invalid_rejected', 0):>6}/{r.get('invalid_tests', 0):<7}"
        )
    print(
        f"valid instances accepted: {out['valid_accepted']}/{out['valid_tests']} "
        f"({100 * out['valid_accepted_rate']:.2f} %); "
        f"invalid accepted: {out['invalid_accepted']} of {out['invalid_tests']}; {out['seconds']} s"
    )
    print("skipped:", out["skipped"])
    for m in out["misses"][:20]:
        print(f"  {m['kind']:<7} {m['file']}: {m['instance'][:160]}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--data", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "jsonschemabench")
    )
    p.add_argument("--limit", type=int, default=None, help="a seeded sample of this many schemas")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--valid", type=int, default=10, help="valid instances drawn per schema")
    p.add_argument("--invalid", type=int, default=10, help="near misses per schema")
    p.add_argument("--timeout", type=int, default=10, help="seconds per compile / per acceptance check")
    p.add_argument("--value-tokens", type=int, default=4096)
    p.add_argument("--only", default=None, help="comma-separated file names: just these schemas")
    p.add_argument("--keep-misses", type=int, default=200)
    p.add_argument("--json", default=None)
    p.add_argument("--per-file", default=None)
    args = p.parse_args(argv)
    out = run(args)
    print_table(out)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
