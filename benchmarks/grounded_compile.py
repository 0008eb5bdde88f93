"""What a grounded slot costs: compile time and automaton size against the source text's length.

For source texts of 250 to 8,000 characters (real English: the docstrings of Python standard
library modules, joined) at the Qwen2.5 vocabulary (151,643 tokens), and three constraints —
free text, a capitalised-name regex, free text of whole words — measured in one run:

* ``compile_ms``: building the grounded token automaton from nothing (the suffix automaton, the
  product with the regex DFA, the walk to tokens, the classes), caches cleared; the vocabulary
  trie is built once per tokenizer and reported on its own (``trie_ms``);
* ``states``, ``classes``, ``edges`` and ``kind``: the automaton's size and form (``dense``: a
  classes x states table any sampler path takes; ``sparse``: edge lists, host path);
* ``chain_ms``: one forward-backward pass over an 8-position slot of it (sampling and
  constrained weights), the per-step work the constraint adds.

Run: python benchmarks/grounded_compile.py [--json OUT] [--sizes 250 1000 8000] [--small]
(``--small``: the byte-level tokenizer and short texts, for the test suite.)
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import sys
import time

import numpy as np

from dlmprompt.constraints import grounded as g
from dlmprompt.sampling.chain import run_chains

MODULES = ["json", "re", "argparse", "collections", "dataclasses", "functools", "itertools", "pathlib", "typing"]
CONSTRAINTS = [
    ("free text", r"[\s\S]*", False),
    ("name regex", r"[A-Z][a-z]+( [A-Z][a-z]+)*", False),
    ("whole words", r"[\s\S]*", True),
]


def source_text(n: int) -> str:
    parts = []
    for name in MODULES:
        doc = inspect.getdoc(importlib.import_module(name)) or ""
        parts.append(" ".join(doc.split()))
    text = " ".join(parts)
    while len(text) < n:
        text += " " + text
    return text[:n]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--sizes", type=int, nargs="+", default=[250, 500, 1000, 2000, 4000, 8000])
    ap.add_argument("--small", action="store_true", help="byte-level tokenizer, short texts (a quick check)")
    args = ap.parse_args(argv)
    if args.small:
        from dlmprompt.tokenizer import Tokenizer

        tok, vocab, sizes = Tokenizer.bytes_level(["th", "the", "in", "er", "on"]), "bytes", [100, 400]
    else:
        from dlmprompt.tokenizer import qwen25_tokenizer

        tok, vocab, sizes = qwen25_tokenizer(), "qwen2.5", args.sizes
    t = time.perf_counter()
    g._trie_for(tok)
    trie_ms = (time.perf_counter() - t) * 1e3
    print(f"vocabulary {vocab} ({len(tok.token_bytes):,} tokens): trie built in {trie_ms:.0f} ms", file=sys.stderr)
    rng = np.random.default_rng(0)
    rows = []
    for n in sizes:
        text = source_text(n)
        for label, pattern, whole in CONSTRAINTS:
            g._AUTOMATA.clear()
            g._GROUND.clear()
            t = time.perf_counter()
            auto = g.grounded_automaton((text,), pattern, tok, whole_words=whole)
            compile_ms = (time.perf_counter() - t) * 1e3
            sparse = isinstance(auto, g.SparseTokenAutomaton)
            edges = len(auto.src) if sparse else int((auto.next_state >= 0).sum())
            committed = [np.full(8, -1, dtype=np.int64)]
            logP = rng.normal(size=(8, auto.n_classes))
            noise = -np.log(-np.log(rng.uniform(size=(8, auto.n_classes))))
            t = time.perf_counter()
            run_chains(auto, committed, logP, noise=noise)
            chain_ms = (time.perf_counter() - t) * 1e3
            rows.append(
                {
                    "chars": n,
                    "constraint": label,
                    "compile_ms": round(compile_ms, 2),
                    "states": auto.n_states,
                    "classes": auto.n_classes,
                    "edges": edges,
                    "kind": "sparse" if sparse else "dense",
                    "chain_ms": round(chain_ms, 2),
                }
            )
            print(f"  {n:6d} chars  {label:12s} {compile_ms:8.1f} ms", file=sys.stderr, flush=True)
    head = (
        f"{'chars':>6}  {'constraint':12} {'compile ms':>10} {'states':>7} {'classes':>7} {'edges':>8} kind    chain ms"
    )
    print(head)
    for r in rows:
        print(
            f"{r['chars']:6d}  {r['constraint']:12} {r['compile_ms']:10.1f} {r['states']:7d} {r['classes']:7d} "
            f"{r['edges']:8d} {r['kind']:7} {r['chain_ms']:8.2f}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"vocabulary": vocab, "trie_ms": round(trie_ms, 1), "runs": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
