"""What exact constraints cost the sampler per denoising step, at the Qwen2.5 vocabulary size.

For a canvas of 256 and of 1024 positions filled with JSON-like records (JSON string, integer,
email, date and choice slots between anchors), with random logits, measured in the same run:

(a) ``sampler_ms_per_step``: the sampler's own work after the forward pass (softmax, Gumbel
    noise in float64, confidences, choosing and committing positions), constraints off;
(b) ``constraint_ms_per_step``: what the exact constraints add to that step (same state: the
    first step, every slot position masked);
(c) over a whole generation (``--steps`` steps): ``ours_ms_total``, our constraint time (the
    constrained run minus the unconstrained run on the same logits), and ``llguidance_ms_total``,
    what llguidance needs to constrain the same outputs written left to right, one mask per token.

Run: python benchmarks/constraint_overhead.py [--json OUT] [--sizes 256 1024] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from dlmprompt import Prompt, compile, slot
from dlmprompt.sampling.rows import Row
from dlmprompt.tokenizer import qwen25_encoding, qwen25_tokenizer

JSON_STRING = r'"([^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*"'
INTEGER = r"-?(0|[1-9][0-9]*)"
EMAIL = r"[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}"
DATE = r"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
TIERS = ["gold", "silver", "bronze"]


def record(i: int) -> Prompt:
    return (
        Prompt(f'{{"id": {i}, "name": ')
        + slot(f"name{i}", regex=JSON_STRING, max_tokens=12)
        + ', "age": '
        + slot(f"age{i}", regex=INTEGER, max_tokens=4)
        + ', "email": "'
        + slot(f"email{i}", regex=EMAIL, max_tokens=14)
        + '", "born": "'
        + slot(f"born{i}", regex=DATE, max_tokens=10)
        + '", "tier": "'
        + slot(f"tier{i}", choice=TIERS, max_tokens=3)
        + '"}\n'
    )


def canvas_prompt(tok, size: int) -> Prompt:
    """Records until the canvas is full; a free-text slot takes what room is left."""
    p = Prompt("Records:\n")
    used = len(tok.encode("Records:\n"))
    i = 0
    while True:
        nxt = p + record(i)
        n = len(compile(nxt, tok, constraints=False).layout)
        if n > size:
            break
        p, used = nxt, n
        i += 1
    if size > used:
        p = p + slot("notes", max_tokens=size - used)
    return p


def step_ms(programs, logits, repeats: int) -> list[float]:
    """Median time of the first step of each program, runs interleaved (A B A B ...) so that
    machine noise hits both alike."""
    times: list[list[float]] = [[] for _ in programs]
    for r in range(repeats):
        for i, program in enumerate(programs):
            row = Row(0, program, torch.Generator().manual_seed(r))
            t = time.perf_counter()
            row.step(logits)
            times[i].append((time.perf_counter() - t) * 1e3)
    return [statistics.median(t) for t in times]


def whole_generation(program, logits) -> tuple[float, list[Row]]:
    row = Row(0, program, torch.Generator().manual_seed(0))
    total = 0.0
    while not row.done:
        t = time.perf_counter()
        row.step(logits)
        total += time.perf_counter() - t
    return total * 1e3, [row]


def llguidance_ms(program, row: Row, lltok) -> float:
    import llguidance
    import llguidance.numpy as lln

    total = 0.0
    mask = lln.allocate_token_bitmask(1, lltok.vocab_size)
    for s in program.layout.slots:
        c = s.constraint
        if c.type == "regex":
            grammar = llguidance.LLMatcher.grammar_from_regex(c.pattern)
        elif c.type == "choice":
            grammar = llguidance.LLMatcher.grammar_from_regex("(" + "|".join(c.options) + ")")
        else:
            grammar = llguidance.LLMatcher.grammar_from_regex(r"(?s:.*)")
        seg = row.canvas[s.start : s.stop].tolist()
        if program.pad_id in seg:
            seg = seg[: seg.index(program.pad_id)]
        t = time.perf_counter()
        m = llguidance.LLMatcher(lltok, grammar, log_level=0)
        for tok in seg:
            lln.fill_next_token_bitmask(m, mask)
            m.consume_token(tok)
        lln.fill_next_token_bitmask(m, mask)  # the mask that lets the slot end
        total += time.perf_counter() - t
        if m.is_error():
            raise RuntimeError(f"llguidance rejected our output for {s.name}: {m.get_error()}")
    return total * 1e3


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 1024])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--steps", type=int, default=32, help="denoising steps of the whole generation (c)")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    t0 = time.perf_counter()
    tok = qwen25_tokenizer()
    from llguidance.tiktoken import lltokenizer_from_encoding

    lltok = lltokenizer_from_encoding(qwen25_encoding(), n_vocab=tok.vocab_size, eos_token=tok.eos_id)
    out: dict = {"vocab": tok.vocab_size, "torch_threads": torch.get_num_threads(), "sizes": {}}
    for size in args.sizes:
        print(f"[{time.perf_counter() - t0:6.1f}s] canvas {size}: compiling", file=sys.stderr, flush=True)
        prompt = canvas_prompt(tok, size).with_sampling(temperature=1.0, steps=args.steps)
        t = time.perf_counter()
        cons = compile(prompt, tok)
        compile_ms = (time.perf_counter() - t) * 1e3
        free = compile(prompt, tok, constraints=False)
        length = len(cons.layout)
        g = torch.Generator().manual_seed(size)
        logits = torch.randn(length, tok.vocab_size, generator=g) * 3.0
        print(f"[{time.perf_counter() - t0:6.1f}s] canvas {size}: per-step timing", file=sys.stderr, flush=True)
        step_ms([free, cons], logits, 1)  # warm-up
        base, full = step_ms([free, cons], logits, args.repeats)
        print(f"[{time.perf_counter() - t0:6.1f}s] canvas {size}: whole generations", file=sys.stderr, flush=True)
        free_total, _ = whole_generation(free, logits)
        cons_total, rows = whole_generation(cons, logits)
        ll = llguidance_ms(cons, rows[0], lltok)
        n_slots = len(cons.layout.slots)
        slot_positions = int((cons.layout.slot_of >= 0).sum())
        out["sizes"][str(size)] = {
            "canvas": length,
            "slots": n_slots,
            "slot_positions": slot_positions,
            "compile_ms": round(compile_ms, 1),
            "sampler_ms_per_step": round(base, 2),
            "constraint_ms_per_step": round(full - base, 2),
            "ratio_step": round((full - base) / base, 3),
            "steps": args.steps,
            "ours_ms_total": round(cons_total - free_total, 1),
            "sampler_ms_total": round(free_total, 1),
            "llguidance_ms_total": round(ll, 1),
        }
    print()
    cols = [
        ("canvas", "canvas"),
        ("slots", "slots"),
        ("sampler_ms_per_step", "sampler ms/step"),
        ("constraint_ms_per_step", "constraint ms/step"),
        ("ratio_step", "ratio"),
        ("ours_ms_total", "ours ms total"),
        ("llguidance_ms_total", "llguidance ms total"),
    ]
    print(" | ".join(h for _, h in cols))
    for v in out["sizes"].values():
        print(" | ".join(str(v[k]) for k, _ in cols))
    print(f"\nvocabulary {tok.vocab_size}, torch threads {torch.get_num_threads()}, {time.perf_counter() - t0:.0f}s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
