"""Quality of the embedded default model on held-out documents (a seed the training never saw).

* ``field_exact``: share of fields filled exactly right through the extraction template (typed
  slots, exact constraints);
* ``unconstrained_json_valid``: share of outputs that parse as JSON when the whole record is one
  free slot and constraints are off;
* ``mask_acc`` / ``unigram_mask_acc``: masked-token accuracy in one forward pass, against
  predicting the most frequent training token, measured in the same run.

Run: python benchmarks/default_model_quality.py [--json OUT] [--n 200] [--model PATH]
Needs faker (pip install 'dlmprompt[train]').
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time

import torch

import dlmprompt
from dlmprompt import compile, generate
from dlmprompt.models.records import FAMILIES, extraction_prompt, free_json_prompt
from dlmprompt.models.train import make_records, record_example

HELD_OUT_SEED = 424242


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json")
    ap.add_argument("--n", type=int, default=200, help="held-out documents")
    ap.add_argument("--model", default=None, help="checkpoint folder (default: the embedded model)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=None, help="denoising steps per record (default: one token per step)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    den = dlmprompt.load(args.model)  # first load in this process: includes importing transformers
    load_s = time.perf_counter() - t0
    print(f"loaded in {load_s:.2f}s: {den!r}", file=sys.stderr, flush=True)
    tok = den.tokenizer
    recs = make_records(args.n, HELD_OUT_SEED)
    g = torch.Generator().manual_seed(0)

    # field-exact with constraints
    exact = total = 0
    per_family: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    sampling = {"steps": args.steps} if args.steps else {}
    for i in range(0, len(recs), args.batch):
        chunk = recs[i : i + args.batch]
        progs = [compile(extraction_prompt(r["family"], r["text"]).with_sampling(**sampling), tok) for r in chunk]
        for r, res in zip(chunk, generate(den, progs, generator=g)):
            for f in FAMILIES[r["family"]]:
                ok = res[f.name] == str(r["values"][f.name])
                exact += ok
                total += 1
                per_family[r["family"]][0] += ok
                per_family[r["family"]][1] += 1
        print(
            f"[{time.perf_counter() - t0:6.1f}s] field-exact {i + len(chunk)}/{len(recs)}: {exact / total:.3f}",
            file=sys.stderr,
            flush=True,
        )

    # unconstrained JSON
    valid = 0
    n_json = min(len(recs), max(50, len(recs) // 2))
    for i in range(0, n_json, args.batch):
        chunk = recs[i : min(i + args.batch, n_json)]
        progs = [
            compile(free_json_prompt(r["family"], r["text"]).with_sampling(**sampling), tok, constraints=False)
            for r in chunk
        ]
        for res in generate(den, progs, generator=g):
            try:
                json.loads(res["json"])
                valid += 1
            except ValueError:
                pass
    print(f"[{time.perf_counter() - t0:6.1f}s] unconstrained JSON valid: {valid}/{n_json}", file=sys.stderr, flush=True)

    # masked-token accuracy vs unigram
    train_counts: collections.Counter[int] = collections.Counter()
    for r in make_records(2000, 0):
        ex = record_example(r, tok, free_json=False)
        if ex is not None:
            train_counts.update(t for t, e in zip(ex.ids, ex.loss) if e)
    unigram = train_counts.most_common(1)[0][0]
    correct = uni = seen = 0
    mg = torch.Generator().manual_seed(1)
    for r in recs:
        ex = record_example(r, tok, free_json=False)
        if ex is None:
            continue
        ids = torch.tensor([ex.ids])
        eligible = torch.tensor([ex.loss])
        t = torch.rand(1, generator=mg).item() * 0.9 + 0.1
        masked = eligible & (torch.rand(ids.shape, generator=mg) < t)
        if not masked.any():
            continue
        inp = torch.where(masked, torch.full_like(ids, den.mask_id), ids)
        pred = den(inp, torch.ones_like(ids, dtype=torch.bool))[0].argmax(-1)
        correct += int((pred[masked[0]] == ids[0][masked[0]]).sum())
        uni += int((ids[0][masked[0]] == unigram).sum())
        seen += int(masked.sum())
    out = {
        "documents": len(recs),
        "fields": total,
        "field_exact": round(exact / total, 4),
        "field_exact_by_family": {k: round(a / b, 4) for k, (a, b) in per_family.items()},
        "unconstrained_json_valid": round(valid / n_json, 4),
        "mask_acc": round(correct / seen, 4),
        "unigram_mask_acc": round(uni / seen, 4),
        "masked_tokens": seen,
        "load_s": round(load_s, 2),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print("\nmetric | value")
    for k in ("field_exact", "unconstrained_json_valid", "mask_acc", "unigram_mask_acc", "load_s"):
        print(f"{k} | {out[k]}")
    print("by family | " + ", ".join(f"{k} {v}" for k, v in out["field_exact_by_family"].items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
