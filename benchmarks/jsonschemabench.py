"""JSONSchemaBench harness: coverage, correctness and generation of JSON Schema slots.

    python benchmarks/jsonschemabench.py --data ../shared/data/jsonschemabench [--limit N] [--json OUT]

For each file (``{"schema": ..., "tests": [{"data": ..., "valid": bool}, ...]}``):

* **compile**: the schema as one JSON slot (``slot("value", schema=...)``) through
  ``dlmprompt.compile`` at the tokenizer (Qwen2.5 by default), timed after a warm-up compile of a
  template and of a span (what is built once per tokenizer is not counted; ``--no-warmup``
  counts it); refused schemas keep the compiler's reason, and one past ``--timeout`` is refused.
* **acceptance**: every test instance is written as JSON text in the template's layout (compact,
  key order of the schema; one text per anyOf branch order) and checked twice: the template regex
  by Python ``re``, and every hole's value by the hole's **token automaton** (the constraint the
  sampler enforces). Both must agree (``engine_disagreements``). A valid instance must be accepted,
  an invalid one rejected.
* **generation**: one sample under a random-logits denoiser, parsed and validated with the
  ``jsonschema`` package (with its format checker).
* **llguidance** (the reference): the same schema compiled by llguidance (strict) and the same
  instances (compact ``json.dumps``) checked by its matcher, in the same run.

Prints a table by source and writes JSON with the keys the issue asks for.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import random
import re
import signal
import statistics
import sys
import time
from typing import Any

import torch

from dlmprompt import Prompt, compile, slot
from dlmprompt.compiler import json_accepts
from dlmprompt.errors import CompileError
from dlmprompt.sampling.sampler import generate
from dlmprompt.testing import RandomDenoiser
from dlmprompt.tokenizer import qwen25_encoding, qwen25_tokenizer

COUNTS = (
    "schemas",
    "compiled",
    "valid_tests",
    "valid_accepted",
    "invalid_tests",
    "invalid_rejected",
    "generated",
    "generated_valid",
)


class _Timeout(Exception):
    pass


def _alarm(*_: Any) -> None:
    raise _Timeout()


def source_of(path: str) -> str:
    name = os.path.basename(path)
    return name.split("---")[0] if "---" in name else re.sub(r"_[0-9]+\.json$", "", name).split("_")[0]


def load_files(data: str, limit: int | None, seed: int) -> list[str]:
    files = sorted(glob.glob(os.path.join(data, "*.json")))
    if not files:
        raise SystemExit(f"no *.json files in {data}")
    if limit is not None and limit < len(files):
        files = sorted(random.Random(seed).sample(files, limit))
    return files


# the keywords the coverage table counts (a schema counts under each keyword it uses anywhere)
KEYWORDS = frozenset(
    "not if dependencies dependentRequired dependentSchemas oneOf anyOf allOf patternProperties "
    "propertyNames additionalProperties uniqueItems contains minProperties maxProperties prefixItems "
    "pattern format enum const $ref minimum multipleOf minLength minItems".split()
)
_DATA = frozenset({"enum", "const", "default", "examples", "example"})
_NAMES = frozenset({"properties", "patternProperties", "definitions", "$defs", "dependentSchemas", "dependencies"})


def keywords_of(schema: Any) -> set[str]:
    """The keywords used anywhere in ``schema`` (property names and instance data are skipped)."""
    out: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for v in node:
                walk(v)
        elif isinstance(node, dict):
            for k, v in node.items():
                out.add(k)
                if k in _DATA:
                    continue
                if k in _NAMES and isinstance(v, dict):
                    for sub in v.values():
                        walk(sub)
                else:
                    walk(v)

    walk(schema)
    return out


def validator(schema: Any) -> Any:
    """The reference: ``jsonschema`` with its format checker, and ``multipleOf`` checked in
    decimal (JSON numbers are decimals: -78.32 is a multiple of 0.01, though -78.32 / 0.01 is
    -7832.000000000001 in binary floats, where ``jsonschema`` says it is not)."""
    import jsonschema

    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    cls = jsonschema.validators.extend(cls, {"multipleOf": _multiple_of})
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def _multiple_of(validator: Any, divisor: Any, instance: Any, schema: Any) -> Any:
    import decimal

    import jsonschema

    if not validator.is_type(instance, "number") or not isinstance(divisor, (int, float)) or divisor <= 0:
        return
    try:
        with decimal.localcontext() as ctx:
            ctx.prec = 2000  # exact for every float and integer a JSON text here holds
            ok = decimal.Decimal(repr(instance)) % decimal.Decimal(repr(divisor)) == 0
    except (decimal.InvalidOperation, ValueError):  # inf / nan
        ok = False
    if not ok:
        yield jsonschema.ValidationError(f"{instance!r} is not a multiple of {divisor}")


# a template and a context-free span: what every later compile shares is built by these two
WARMUP = (
    {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"], "additionalProperties": False},
    {"type": "object", "properties": {"s": {"type": "string", "maxLength": 300}}, "required": ["s"]},
)


def run(args: argparse.Namespace) -> dict[str, Any]:
    tok = qwen25_tokenizer() if args.tokenizer == "qwen2.5" else _tokenizer_from(args.tokenizer)
    files = load_files(args.data, args.limit, args.seed)
    den = RandomDenoiser(tok, seed=args.seed)
    ll = _llguidance(tok) if not args.no_llguidance and args.tokenizer == "qwen2.5" else None
    ours = collections.Counter()
    ref = collections.Counter()
    by_source: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    refusals = collections.Counter()
    by_keyword: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    ll_refusals = collections.Counter()
    times: list[float] = []
    ll_times: list[float] = []
    problems: list[str] = []
    signal.signal(signal.SIGALRM, _alarm)
    if not args.no_warmup:  # once per tokenizer, not per schema: the vocabulary trie, llguidance's tokenizer
        t = time.perf_counter()
        for warm in WARMUP:
            compile(Prompt(slot("value", schema=warm, max_tokens=args.value_tokens)), tok)
        print(f"[warm-up] {time.perf_counter() - t:.1f} s (not counted)", file=sys.stderr, flush=True)
    per_file = open(args.per_file, "w") if args.per_file else None
    t_start = time.perf_counter()
    for i, path in enumerate(files):
        if i % 100 == 0:
            print(
                f"[{time.perf_counter() - t_start:6.0f}s] {i}/{len(files)} schemas; compiled {ours['compiled']}",
                file=sys.stderr,
                flush=True,
            )
        with open(path) as f:
            case = json.load(f)
        schema, tests = case["schema"], case.get("tests", [])
        src = source_of(path)
        row = by_source[src]
        ours["schemas"] += 1
        row["schemas"] += 1
        # ---- ours: compile
        signal.alarm(args.timeout)
        t = time.perf_counter()
        refused = None
        try:
            program = compile(Prompt(slot("value", schema=schema, max_tokens=args.value_tokens)), tok)
        except CompileError as exc:
            signal.alarm(0)
            refused, full_reason = _reason(str(exc)), str(exc)
        except _Timeout:
            refused = full_reason = f"compile took over {args.timeout} s"
        except RecursionError:
            signal.alarm(0)
            refused = full_reason = "schema nested too deeply"
        signal.alarm(0)
        ms = (time.perf_counter() - t) * 1e3
        record: dict[str, Any] = {"file": os.path.basename(path), "ms": round(ms, 2)}
        if refused is not None:
            refusals[refused] += 1
            record["refused"] = full_reason[:300]
            program = None
        if program is not None:
            times.append(ms)
            record["misses"] = []
            ours["compiled"] += 1
            row["compiled"] += 1
            for test in tests:
                key = "valid" if test["valid"] else "invalid"
                ok_re = ok_auto = False
                signal.alarm(args.timeout)
                try:
                    ok_re, ok_auto = json_accepts(program, "value", test["data"])
                except _Timeout:
                    problems.append(f"{os.path.basename(path)}: acceptance check timed out")
                signal.alarm(0)
                if ok_re != ok_auto:
                    ours["engine_disagreements"] += 1
                    problems.append(f"{os.path.basename(path)}: re={ok_re} automata={ok_auto} on a {key} instance")
                ours[f"{key}_tests"] += 1
                row[f"{key}_tests"] += 1
                good = ok_auto if test["valid"] else not ok_auto
                ours[f"{key}_{'accepted' if test['valid'] else 'rejected'}"] += good
                row[f"{key}_{'accepted' if test['valid'] else 'rejected'}"] += good
                if not good and not test["valid"]:
                    problems.append(f"{os.path.basename(path)}: INVALID instance accepted")
                if not good:
                    record["misses"].append(key)
            if len(program.layout) <= args.max_canvas and (ours["compiled"] - 1) % args.generate_every == 0:
                _generate(den, program, schema, ours, row, problems, path, args)
        if per_file is not None:
            per_file.write(json.dumps(record) + "\n")
            per_file.flush()
        # ---- llguidance: compile + acceptance
        ll_ok = None
        if ll is not None:
            ll_ok = _llguidance_case(ll, schema, tests, ref, ll_refusals, ll_times)
        for kw in keywords_of(schema) & KEYWORDS:
            row_kw = by_keyword[kw]
            row_kw["schemas"] += 1
            row_kw["ours"] += program is not None
            if ll_ok is not None:
                row_kw["llguidance"] += ll_ok
    total = time.perf_counter() - t_start
    if per_file is not None:
        per_file.close()
    out = _summary(ours, times)
    out["tokenizer"] = args.tokenizer
    out["vocab"] = tok.vocab_size
    out["engine_disagreements"] = ours["engine_disagreements"]
    out["generation_skipped_canvas"] = ours["gen_skipped"]
    out["seconds"] = round(total, 1)
    out["refusals"] = dict(refusals.most_common(25))
    out["by_source"] = {k: dict(v) for k, v in sorted(by_source.items())}
    out["by_keyword"] = {k: dict(v) for k, v in sorted(by_keyword.items(), key=lambda kv: -kv[1]["schemas"])}
    out["problems"] = problems[:50]
    if ll is not None:
        out["llguidance"] = _summary(ref, ll_times)
        out["llguidance"]["refusals"] = dict(ll_refusals.most_common(15))
    return out


def _generate(den, program, schema, ours, row, problems, path, args) -> None:
    signal.alarm(args.timeout * 3)
    try:
        prog = compile(program.spec.with_sampling(tokens_per_step=args.tokens_per_step), program.tokenizer)
        res = generate(den, prog, generator=torch.Generator().manual_seed(args.seed))
        text = res["value"]
        ours["generated"] += 1
        row["generated"] += 1
        try:
            value = json.loads(text)
            errors = list(validator(schema).iter_errors(value))
        except json.JSONDecodeError as exc:
            errors = [exc]
        except re.error as exc:  # the reference validator (Python re) cannot read a pattern, e.g. \p{L}
            ours["gen_unverifiable"] = ours.get("gen_unverifiable", 0) + 1
            problems.append(f"{os.path.basename(path)}: the reference validator cannot check this schema: {exc}")
            return
        if errors:
            problems.append(f"{os.path.basename(path)}: generated invalid JSON {text[:120]!r}: {str(errors[0])[:160]}")
        else:
            ours["generated_valid"] += 1
            row["generated_valid"] += 1
    except _Timeout:
        ours["gen_skipped"] += 1
    finally:
        signal.alarm(0)


def _reason(msg: str) -> str:
    msg = re.sub(r"^slot 'value': ", "", msg)
    msg = re.sub(r"^at \S+: ", "", msg)
    msg = re.sub(r"'[^']{12,}'", "'...'", msg)
    msg = re.sub(r"[0-9]+", "N", msg)
    return msg[:110]


def _summary(c: collections.Counter, times: list[float]) -> dict[str, Any]:
    out: dict[str, Any] = {k: int(c[k]) for k in COUNTS}
    out["coverage"] = round(c["compiled"] / max(1, c["schemas"]), 4)
    times = sorted(times)
    out["compile_ms_p50"] = round(statistics.median(times), 2) if times else None
    out["compile_ms_p99"] = round(times[min(len(times) - 1, int(0.99 * len(times)))], 2) if times else None
    return out


def _tokenizer_from(path: str) -> Any:
    """'default': the embedded model's tokenizer; otherwise a folder with a Hugging Face tokenizer."""
    if path == "default":
        from dlmprompt import load

        return load().tokenizer
    from transformers import AutoTokenizer

    from dlmprompt.tokenizer import Tokenizer

    return Tokenizer.from_hf(AutoTokenizer.from_pretrained(path))


def _llguidance(tok: Any) -> Any:
    try:
        import llguidance
        from llguidance.tiktoken import lltokenizer_from_encoding
    except ImportError:
        print("llguidance is not installed: no reference figures", file=sys.stderr)
        return None
    enc = qwen25_encoding()
    return llguidance, lltokenizer_from_encoding(enc, n_vocab=tok.vocab_size, eos_token=tok.eos_id), enc


def _llguidance_case(ll, schema, tests, ref, refusals, times) -> bool:
    llguidance, lltok, enc = ll
    ref["schemas"] += 1
    t = time.perf_counter()
    try:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(
            json.dumps(schema), defaults={"whitespace_flexible": False}
        )
        matcher = llguidance.LLMatcher(lltok, grammar, log_level=0)
        failed = matcher.is_error()
        err = matcher.get_error() if failed else ""
    except Exception as exc:  # llguidance raises on some schemas instead of reporting
        failed, err = True, str(exc)
    if failed:
        refusals[_reason(err)] += 1
        return False
    times.append((time.perf_counter() - t) * 1e3)
    ref["compiled"] += 1
    for test in tests:
        m = llguidance.LLMatcher(lltok, grammar, log_level=0)
        toks = enc.encode(json.dumps(test["data"], separators=(",", ":"), ensure_ascii=False))
        accepted = m.try_consume_tokens(toks) == len(toks) and m.is_accepting()
        key = "valid" if test["valid"] else "invalid"
        ref[f"{key}_tests"] += 1
        ref[f"{key}_{'accepted' if test['valid'] else 'rejected'}"] += accepted if test["valid"] else not accepted
    return True


def print_table(out: dict[str, Any]) -> None:
    cols = ("schemas", "compiled", "valid_tests", "valid_accepted", "invalid_tests", "invalid_rejected")
    cols += ("generated", "generated_valid")
    print(f"{'source':<16}" + "".join(f"{c:>17}" for c in cols))
    for src, row in out["by_source"].items():
        print(f"{src:<16}" + "".join(f"{row.get(c, 0):>17}" for c in cols))
    print(f"{'all (ours)':<16}" + "".join(f"{out[c]:>17}" for c in cols))
    if "llguidance" in out:
        r = out["llguidance"]
        print(f"{'llguidance':<16}" + "".join(f"{r[c]:>17}" for c in cols))
    print()
    line = f"coverage ours {out['coverage']:.4f}"
    if "llguidance" in out:
        line += f", llguidance {out['llguidance']['coverage']:.4f}"
    print(line)
    print(
        f"compile ms p50/p99 ours {out['compile_ms_p50']}/{out['compile_ms_p99']}"
        + (
            f", llguidance {out['llguidance']['compile_ms_p50']}/{out['llguidance']['compile_ms_p99']}"
            if "llguidance" in out
            else ""
        )
    )
    print(f"engine disagreements (Python re vs token automata): {out['engine_disagreements']}")
    print("coverage by keyword (schemas using it anywhere: compiled by us / by llguidance):")
    for kw, row in out["by_keyword"].items():
        ll = f"{row.get('llguidance', 0):>6}" if "llguidance" in out else "     -"
        print(f"  {kw:<22}{row['schemas']:>6}{row.get('ours', 0):>6}{ll}")
    print("top refusals:")
    for reason, n in list(out["refusals"].items())[:10]:
        print(f"  {n:5d}  {reason}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="folder of JSONSchemaBench files")
    ap.add_argument("--limit", type=int, default=None, help="a seeded sample of this many files")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--tokenizer", default="qwen2.5", help="'qwen2.5' (default), 'default' (embedded) or a path")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=int, default=20, help="seconds per schema before it counts as refused")
    ap.add_argument("--value-tokens", type=int, default=12, help="token budget of each value")
    ap.add_argument("--tokens-per-step", type=int, default=256, help="positions committed per generation step")
    ap.add_argument("--max-canvas", type=int, default=2048, help="skip generation above this canvas length")
    ap.add_argument("--per-file", help="write one JSON line per schema here (compile ms, refusal, missed instances)")
    ap.add_argument("--no-llguidance", action="store_true", help="skip the reference")
    ap.add_argument(
        "--no-warmup",
        action="store_true",
        help="count the once-per-tokenizer set-up (vocabulary trie, llguidance tokenizer) in the first schemas",
    )
    ap.add_argument(
        "--generate-every",
        type=int,
        default=1,
        help="generate for every k-th compiled schema (1: all; the full set is slow)",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    out = run(args)
    print_table(out)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
