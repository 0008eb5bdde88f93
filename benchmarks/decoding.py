"""Decoding schedules and guidance terms on the embedded model, constraints exact throughout.

For each configuration and each extraction set it reports:

* ``field_exact``: share of fields filled exactly right (the extraction template, typed slots);
* ``passes_per_record``: forward passes per record; ``tokens_per_pass``: slot positions
  committed per forward pass (every slot position is committed once);
* ``positions_per_record``: canvas positions the model processed per record (canvas length
  times forward passes), the compute a fixed-length canvas pays;
* ``garbled``: share of string values with a doubled piece the gold value does not have
  ("Londonon", "Annann");
* ``valid``: share of slots whose value the slot's constraint accepts, checked again here (the
  compiled automaton on the tokens, and Python's ``re`` / membership on the text): must be 1.0;
* ``seconds``: wall time of the configuration on this machine.

Sets: ``read_heldout`` (held-out documents of the read-and-copy training grammar, a seed the
training never saw) and ``ood`` (``benchmarks/ood_extraction.py``: its own templates and values
plus hand-written sentences, never trained on). Configurations: one position per step
(``tokens_per_step=1``, the default before), ``tokens_per_step`` 2 and 4, confidence thresholds,
the default schedule (no schedule given: ``threshold=0.9``), the repetition and frequency
penalties (one position per step), and combinations.

    python benchmarks/decoding.py [--n-read 60] [--n-ood 142] [--only NAME,...] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from typing import Any

import torch

import dlmprompt
from dlmprompt import Choice, Regex, compile, generate
from dlmprompt.models.records import FAMILIES, extraction_prompt
from dlmprompt.models.train import record_example

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ood_extraction import ood_documents

HELD_OUT_SEED = 424242
CONFIGS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {  # name: (sampling, guidance)
    "one_per_step": ({"tokens_per_step": 1}, {}),
    "tokens_per_step_2": ({"tokens_per_step": 2}, {}),
    "tokens_per_step_4": ({"tokens_per_step": 4}, {}),
    "threshold_0.9": ({"threshold": 0.9}, {}),
    "threshold_0.7": ({"threshold": 0.7}, {}),
    "threshold_0.5": ({"threshold": 0.5}, {}),
    "default": ({}, {}),  # no schedule given: compiler.DEFAULT_THRESHOLD
    "repetition_1.3": ({"tokens_per_step": 1}, {"repetition_penalty": 1.3}),
    "frequency_0.5": ({"tokens_per_step": 1}, {"frequency_penalty": 0.5}),
    "threshold_0.7+repetition_1.3": ({"threshold": 0.7}, {"repetition_penalty": 1.3}),
}
_DOUBLED = re.compile(r"(\w{2,})\1", re.UNICODE)


def _garbled(value: str, gold: str) -> bool:
    return _DOUBLED.search(value) is not None and _DOUBLED.search(gold) is None


def _valid(res: Any) -> tuple[int, int]:
    """(slots whose value their constraint accepts, slots), checked twice: the automaton on the
    canvas tokens, and Python's re / membership on the text."""
    prog = res.program
    ok = total = 0
    for sl in prog.layout.slots:
        if sl.grammar is not None:
            continue
        total += 1
        tokens = res.canvas[sl.start : sl.stop]
        good = sl.automaton.accepts(tokens)
        if sl.parent is None:
            text = res[sl.name]
            c = sl.constraint
            if isinstance(c, Regex):
                good = good and re.fullmatch(c.pattern, text) is not None
            elif isinstance(c, Choice):
                good = good and text in c.options
        ok += good
    return ok, total


def run(
    den: Any, docs: list[dict[str, Any]], sampling: dict[str, Any], guidance: dict[str, Any], batch: int
) -> dict[str, Any]:
    tok = den.tokenizer
    kept = [d for d in docs if record_example(d, tok, free_json=False) is not None]
    g = torch.Generator().manual_seed(0)
    exact = fields = passes = positions = slot_positions = garbled = strings = valid = slots = 0
    t0 = time.perf_counter()
    for i in range(0, len(kept), batch):
        chunk = kept[i : i + batch]
        progs = []
        for d in chunk:
            p = extraction_prompt(d["family"], d["text"]).with_sampling(**sampling)
            progs.append(compile(p.with_guidance(**guidance) if guidance else p, tok))
        for d, res in zip(chunk, generate(den, progs, generator=g)):
            prog = res.program
            passes += res.forward_passes
            positions += res.forward_passes * len(prog.layout)
            slot_positions += int((prog.layout.slot_of >= 0).sum())
            a, b = _valid(res)
            valid += a
            slots += b
            for f in FAMILIES[d["family"]]:
                gold = str(d["values"][f.name])
                got = res[f.name]
                exact += got == gold
                fields += 1
                if any(ch.isalpha() for ch in gold):
                    strings += 1
                    garbled += _garbled(got, gold)
    n = max(len(kept), 1)
    return {
        "documents": len(kept),
        "field_exact": round(exact / max(fields, 1), 4),
        "passes_per_record": round(passes / n, 2),
        "tokens_per_pass": round(slot_positions / max(passes, 1), 2),
        "positions_per_record": round(positions / n, 1),
        "garbled": round(garbled / max(strings, 1), 4),
        "valid": round(valid / max(slots, 1), 6),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-read", type=int, default=60, help="held-out read-and-copy documents")
    ap.add_argument("--n-ood", type=int, default=142, help="out-of-distribution documents (all: 142)")
    ap.add_argument("--only", default=None, help="configurations to run, comma-separated (default: all)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--model", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    names = list(CONFIGS) if args.only is None else args.only.split(",")
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        ap.error(f"unknown configuration(s) {unknown}; known: {', '.join(CONFIGS)}")
    from dlmprompt.models.corpus import make_corpus_records

    den = dlmprompt.load(args.model)
    sets = {"read_heldout": make_corpus_records(args.n_read, HELD_OUT_SEED), "ood": ood_documents()[: args.n_ood]}
    out: dict[str, Any] = {"model": repr(den), "configs": {}}
    t0 = time.perf_counter()
    for name in names:
        sampling, guidance = CONFIGS[name]
        out["configs"][name] = {"sampling": sampling, "guidance": guidance}
        for set_name, docs in sets.items():
            r = run(den, docs, sampling, guidance, args.batch)
            out["configs"][name][set_name] = r
            print(
                f"[{time.perf_counter() - t0:6.1f}s] {name:30s} {set_name:12s} field_exact {r['field_exact']:.3f} "
                f"passes {r['passes_per_record']:6.1f} tokens/pass {r['tokens_per_pass']:5.2f} "
                f"garbled {r['garbled']:.3f} valid {r['valid']}",
                file=sys.stderr,
                flush=True,
            )
    cols = [
        "field_exact",
        "passes_per_record",
        "tokens_per_pass",
        "positions_per_record",
        "garbled",
        "valid",
        "seconds",
    ]
    print()
    print("| config | set | " + " | ".join(cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    for name in names:
        for set_name in sets:
            r = out["configs"][name][set_name]
            print(f"| {name} | {set_name} | " + " | ".join(str(r[c]) for c in cols) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
        print("wrote", args.json)
    bad = [n for n in names for s in sets if out["configs"][n][s]["valid"] != 1.0]
    if bad:
        print(f"constraint violations in {bad}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
