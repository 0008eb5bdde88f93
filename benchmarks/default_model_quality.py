"""Quality of the embedded default model on held-out documents (a seed the training never saw).

* ``field_exact``: share of fields filled exactly right through the extraction template (typed
  slots, exact constraints);
* ``unconstrained_json_valid``: share of outputs that parse as JSON when the whole record is one
  free slot and constraints are off;
* ``mask_acc`` / ``unigram_mask_acc``: masked-token accuracy in one forward pass, against
  predicting the most frequent training token, measured in the same run;
* ``read_heldout``: field_exact on held-out documents of the read-and-copy training grammar
  (``dlmprompt.models.corpus``, a seed the training never saw), per family;
* ``ood``: field_exact on the out-of-distribution set (``benchmarks/ood_extraction.py``: its own
  templates and values plus hand-written sentences, never trained on), per family and per source;
* ``ood_grounded`` / ``read_heldout_grounded``: the same with ``extraction_prompt(..., grounded=True)``
  (string values constrained to spans of the text), or "grounded: not available" where the SDK has
  no grounded slots yet.

Run: python benchmarks/default_model_quality.py [--json OUT] [--n 200] [--n-ood 142] [--model PATH]
     [--only ood] (skip the legacy metrics: a quick check of a checkpoint)
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


OLD_SLOT_LENGTHS = {
    ("person", "name"): 8,
    ("person", "email"): 14,
    ("person", "city"): 8,
    ("company", "name"): 10,
    ("company", "city"): 8,
    ("product", "name"): 8,
    ("order", "customer"): 8,
    ("event", "title"): 10,
    ("event", "city"): 8,
}


def use_old_slot_lengths() -> None:
    """Patch FAMILIES (in place, this process only) back to the slot lengths of the earlier shipped model."""
    import dataclasses

    for fam, fields in list(FAMILIES.items()):
        FAMILIES[fam] = tuple(
            dataclasses.replace(f, max_tokens=OLD_SLOT_LENGTHS.get((fam, f.name), f.max_tokens)) for f in fields
        )


def grounded_prompt(family: str, text: str):  # type: ignore[no-untyped-def]
    """The grounded extraction prompt, or None where ``extraction_prompt`` has no ``grounded`` yet."""
    try:
        return extraction_prompt(family, text, grounded=True)  # type: ignore[call-arg]
    except TypeError:
        return None


def score(den, docs, *, grounded=False, batch=16, sampling=None, generator=None):  # type: ignore[no-untyped-def]
    """field_exact over ``docs`` ({"family", "text", "values"[, "source"]}); documents whose gold
    values do not fit their slots (or the canvas) under this tokenizer are skipped and counted.
    Returns None when ``grounded`` and grounded prompts are not available."""
    tok = den.tokenizer
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    kept = [d for d in docs if record_example(d, tok, free_json=False) is not None]
    fam: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    src: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    misses: list[str] = []
    fallbacks: list[str] = []
    exact = total = 0
    for i in range(0, len(kept), batch):
        chunk = kept[i : i + batch]
        progs = []
        for d in chunk:
            pr = grounded_prompt(d["family"], d["text"]) if grounded else extraction_prompt(d["family"], d["text"])
            if pr is None:
                return None
            try:
                progs.append(compile(pr.with_sampling(**(sampling or {})), tok))
            except Exception as exc:  # a grounded prompt the compiler refuses: count it, score it ungrounded
                if not grounded:
                    raise
                fallbacks.append(f"{d['family']}: {type(exc).__name__}: {str(exc)[:120]}")
                plain = extraction_prompt(d["family"], d["text"]).with_sampling(**(sampling or {}))
                progs.append(compile(plain, tok))
        for d, res in zip(chunk, generate(den, progs, generator=g)):
            for f in FAMILIES[d["family"]]:
                ok = res[f.name] == str(d["values"][f.name])
                exact += ok
                total += 1
                for table, key in ((fam, d["family"]), (src, d.get("source", "all"))):
                    table[key][0] += ok
                    table[key][1] += 1
                if not ok and len(misses) < 12:
                    misses.append(f"{d['family']}.{f.name}: {res[f.name]!r} != {d['values'][f.name]!r}")
    return {
        "documents": len(kept),
        "skipped_too_long": len(docs) - len(kept),
        "fields": total,
        "field_exact": round(exact / max(total, 1), 4),
        "by_family": {k: round(a / b, 4) for k, (a, b) in sorted(fam.items())},
        "by_source": {k: round(a / b, 4) for k, (a, b) in sorted(src.items())},
        "misses": misses,
        **({"grounded_compile_errors": len(fallbacks), "grounded_errors": fallbacks[:5]} if grounded else {}),
    }


def extra_sets(den, args, sampling, t0):  # type: ignore[no-untyped-def]
    """read_heldout and ood, each without and with grounding."""
    import os

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from ood_extraction import ood_documents

    from dlmprompt.models.corpus import make_corpus_records

    sets = {"read_heldout": make_corpus_records(args.n_read, HELD_OUT_SEED), "ood": ood_documents()[: args.n_ood]}
    if args.n_ood < len(ood_documents()):  # keep the hand-written ones in a short run
        from ood_extraction import handwritten

        sets["ood"] = ood_documents()[: max(0, args.n_ood - len(handwritten()))] + handwritten()
    out: dict[str, object] = {}
    for name, docs in sets.items():
        for grounded in (False,) if args.no_grounded else (False, True):
            key = name + ("_grounded" if grounded else "")
            r = score(den, docs, grounded=grounded, batch=args.batch, sampling=sampling)
            out[key] = r if r is not None else "grounded: not available"
            shown = r["field_exact"] if r is not None else "grounded: not available"
            print(f"[{time.perf_counter() - t0:6.1f}s] {key}: {shown}", file=sys.stderr, flush=True)
    return out


def print_extra(extra) -> None:  # type: ignore[no-untyped-def]
    for key, r in extra.items():
        if isinstance(r, str):
            print(f"{key} | {r}")
            continue
        fams = ", ".join(f"{k} {v}" for k, v in r["by_family"].items())
        srcs = ", ".join(f"{k} {v}" for k, v in r["by_source"].items())
        print(f"{key} field_exact | {r['field_exact']} ({r['documents']} docs, {r['skipped_too_long']} skipped)")
        print(f"{key} by family | {fams}")
        if r.get("grounded_compile_errors"):
            print(f"{key} | {r['grounded_compile_errors']} grounded prompts failed to compile, scored ungrounded")
        if len(r["by_source"]) > 1:
            print(f"{key} by source | {srcs}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json")
    ap.add_argument("--n", type=int, default=200, help="held-out documents")
    ap.add_argument("--model", default=None, help="checkpoint folder (default: the embedded model)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=None, help="denoising steps per record (default: one token per step)")
    ap.add_argument("--n-read", type=int, default=100, help="held-out documents of the read-and-copy grammar")
    ap.add_argument("--n-ood", type=int, default=142, help="out-of-distribution documents (all: 142)")
    ap.add_argument(
        "--only",
        choices=("all", "ood", "legacy"),
        default="all",
        help="ood: only read_heldout and ood; legacy: only the original metrics",
    )
    ap.add_argument("--no-grounded", action="store_true", help="skip the grounded runs")
    ap.add_argument(
        "--old-slot-lengths",
        action="store_true",
        help="the slot lengths the model shipped before the read-and-copy corpus was trained with (a fair baseline)",
    )
    args = ap.parse_args(argv)
    if args.old_slot_lengths:
        use_old_slot_lengths()
    t0 = time.perf_counter()
    den = dlmprompt.load(args.model)  # first load in this process: includes importing transformers
    load_s = time.perf_counter() - t0
    print(f"loaded in {load_s:.2f}s: {den!r}", file=sys.stderr, flush=True)
    tok = den.tokenizer
    if args.only == "ood":
        extra = extra_sets(den, args, {"steps": args.steps} if args.steps else {}, t0)
        print()
        print_extra(extra)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"load_s": round(load_s, 2), **extra}, f, indent=2)
        return 0
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
    extra = extra_sets(den, args, sampling, t0) if args.only == "all" else {}
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
    out.update(extra)
    print_extra(extra)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
