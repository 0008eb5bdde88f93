"""Train the embedded default model: corpus, tokenizer, masked-diffusion training, packaging.

    dlmprompt train-default --out runs/default [--max-steps 3200] [--time-limit-min 100]
    dlmprompt train-default --out runs/read --corpus read --init-from dlmprompt/models/default_model --lr 6e-4

``--corpus legacy`` (default): the original few phrasings per family (``_PROSE``); ``--corpus read``:
the read-and-copy grammar of ``dlmprompt.models.corpus`` (many phrasings, distractors, noise, values
from many locales, span copying, small methods for the code demo). The built canvases are cached in
``OUT/examples.json``, so a resumed run keeps the corpus it started with.

Reproducible from a seed; shows progress and loss; resumes from ``--out`` after an interruption;
uses a GPU when one is present. Needs the ``train`` extra (faker).
"""

from __future__ import annotations

import ast
import json
import math
import os
import random
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlmprompt.models.records import FAMILIES, extraction_prompt, free_json_prompt, render_json

SPECIALS = ["[MASK]", "[PAD]", "[EOS]", "[BOS]"]
CANVAS = 128

# --------------------------------------------------------------------------- corpus

_PROSE = {
    "person": [
        "{name} is {age} years old and lives in {city}. You can reach {first} at {email}.",
        "Meet {name}, {age}, from {city} (email: {email}).",
        "Contact: {email}. {name} ({age}) is based in {city}.",
        "{name}, aged {age}, moved to {city} last year; write to {email}.",
        "Our new member {name} lives in {city}. Age: {age}. Email {email}.",
        "From {city}, {name} ({email}) turned {age} this spring.",
    ],
    "company": [
        "{name} was founded in {founded} in {city} and now employs {employees} people.",
        "Based in {city}, {name} has {employees} employees; it started in {founded}.",
        "Since {founded}, {name} ({city}) has grown to {employees} staff.",
        "{name}: headquarters {city}, founded {founded}, headcount {employees}.",
    ],
    "product": [
        "The {name} costs ${price} and is listed under {category}.",
        "New in {category}: {name}, now only {price} dollars.",
        "{name} ({category}) - price {price} USD.",
        "Buy the {name} for ${price}; find it in our {category} section.",
    ],
    "order": [
        "Order {order_id} for {customer}: {quantity} items, status {status}.",
        "{customer} placed order {order_id} ({quantity} units). It is {status}.",
        "Status of {order_id}: {status}. Customer {customer} ordered {quantity}.",
        "We have {status} order {order_id} of {quantity} pieces for {customer}.",
    ],
    "event": [
        "{title} takes place in {city} on {date}.",
        "Join us on {date} in {city} for {title}.",
        "{title} ({city}, {date}) is open for registration.",
        "On {date}, {city} hosts {title}.",
    ],
}

_CATEGORIES = FAMILIES["product"][2].options
_ITEMS = [
    "Lamp",
    "Kettle",
    "Novel",
    "Drone",
    "Ball",
    "Jacket",
    "Guitar",
    "Shovel",
    "Puzzle",
    "Speaker",
    "Blender",
    "Racket",
]
_STATUSES = FAMILIES["order"][3].options


def _record(fake: Any, rng: random.Random, family: str) -> dict[str, Any]:
    if family == "person":
        name = fake.name()
        return {
            "name": name,
            "age": rng.randint(18, 90),
            "email": fake.email(),
            "city": fake.city(),
            "first": name.split()[0],
        }
    if family == "company":
        return {
            "name": fake.company(),
            "founded": rng.randint(1850, 2024),
            "employees": rng.choice([rng.randint(2, 99), rng.randint(100, 9999), rng.randint(10000, 250000)]),
            "city": fake.city(),
        }
    if family == "product":
        name = f"{fake.color_name()} {rng.choice(_ITEMS)}"
        return {
            "name": name,
            "price": f"{rng.randint(1, 999)}.{rng.randint(0, 99):02d}",
            "category": rng.choice(_CATEGORIES),
        }
    if family == "order":
        return {
            "order_id": f"ORD-{rng.randint(0, 999999):06d}",
            "customer": fake.name(),
            "quantity": rng.randint(1, 99),
            "status": rng.choice(_STATUSES),
        }
    words = fake.words(nb=rng.randint(1, 3))
    title = (
        " ".join(w.capitalize() for w in words)
        + " "
        + rng.choice(["Summit", "Festival", "Meetup", "Conference", "Fair", "Workshop"])
    )
    return {
        "title": title,
        "date": fake.date_between(start_date="-3y", end_date="+3y").isoformat(),
        "city": fake.city(),
    }


def make_records(n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` records with prose, reproducible from ``seed`` (held-out data: another seed)."""
    from faker import Faker

    fake = Faker("en_US")
    fake.seed_instance(seed)
    rng = random.Random(seed)
    out = []
    families = list(FAMILIES)
    for _ in range(n):
        family = rng.choice(families)
        values = _record(fake, rng, family)
        text = rng.choice(_PROSE[family]).format(**values)
        values = {f.name: values[f.name] for f in FAMILIES[family]}
        out.append({"family": family, "text": text, "values": values})
    return out


def python_functions(limit: int, seed: int) -> list[str]:
    """Short functions from this machine's standard library source."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.glob("*.py"))
    rng = random.Random(seed)
    rng.shuffle(files)
    out: list[str] = []
    for path in files:
        try:
            src = path.read_text(encoding="utf-8")
            tree = ast.parse(src)
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        lines = src.splitlines()
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.end_lineno and node.end_lineno - node.lineno < 8:
                code = "\n".join(lines[node.lineno - 1 : node.end_lineno])
                indent = len(code) - len(code.lstrip())
                code = "\n".join(line[indent:] for line in code.splitlines())
                if len(code) < 400:
                    out.append(code)
        if len(out) >= limit:
            break
    return out[:limit]


# --------------------------------------------------------------------------- tokenizer


def train_tokenizer(texts: list[str], vocab_size: int = 4096) -> Any:
    from tokenizers import Tokenizer as HFTok
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = HFTok(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return tok


def hf_tokenizer(tok_or_path: Any) -> Any:
    from transformers import PreTrainedTokenizerFast

    kw = (
        {"tokenizer_file": str(tok_or_path)}
        if isinstance(tok_or_path, (str, Path))
        else {"tokenizer_object": tok_or_path}
    )
    return PreTrainedTokenizerFast(**kw, mask_token="[MASK]", pad_token="[PAD]", eos_token="[EOS]", bos_token="[BOS]")


# --------------------------------------------------------------------------- sequences


@dataclass
class Example:
    ids: list[int]
    loss: list[bool]  # positions the diffusion loss may mask


def record_example(rec: dict[str, Any], tok: Any, *, free_json: bool) -> Example | None:
    """The canvas the SDK builds for this record, its slots filled with the true values + pad."""
    family, text, values = rec["family"], rec["text"], rec["values"]
    if free_json:
        prompt = free_json_prompt(family, text)
        fills = {"json": render_json(family, values)}
    else:
        prompt = extraction_prompt(family, text)
        fills = {k: str(v) for k, v in values.items()}
    return fill_example(prompt, fills, tok)


def code_example(code: str, tok: Any) -> Example | None:
    ids = [tok.bos_id, *tok.encode(code), tok.eos_id]
    if len(ids) > CANVAS:
        return None
    n = len(ids)
    return Example(ids, [False] + [True] * (n - 1))


def fill_example(prompt: Any, fills: dict[str, str], tok: Any) -> Example | None:
    """Any prompt's canvas with its slots filled (value + pad), loss on the slots, like ``record_example``."""
    from dlmprompt.compiler import compile

    prog = compile(prompt, tok, constraints=False)
    ids = prog.layout.canvas.tolist()
    loss = [False] * len(ids)
    for s in prog.slots:
        value = tok.encode(fills[s.name])
        if len(value) > s.length:
            return None
        ids[s.start : s.stop] = value + [tok.pad_id] * (s.length - len(value))
        loss[s.start : s.stop] = [True] * s.length
    if len(ids) > CANVAS:
        return None
    return Example(ids, loss)


def copy_example(prefix: str, span: str, tok: Any) -> Example | None:
    """``prefix`` (a text holding ``span`` and a cue) then ``span``: loss on the copied span only."""
    head = [tok.bos_id, *tok.encode(prefix)]
    tail = [*tok.encode(span), tok.eos_id]
    ids = head + tail
    if len(ids) > CANVAS:
        return None
    return Example(ids, [False] * len(head) + [True] * len(tail))


def build_read_examples(n_records: int, n_code: int, seed: int, tok: Any, log: Any = print) -> list[Example]:
    """The read-and-copy corpus (``dlmprompt.models.corpus``): ~80% grammar records (a fifth as free
    JSON), ~12% legacy ``_PROSE`` records, ~8% span copying; code: small methods in the demo's slot
    layout and as source, plus standard-library functions."""
    from dlmprompt.models import corpus

    rng = random.Random(seed + 1)
    out: list[Example] = []
    n_legacy = n_records * 12 // 100
    n_copy = n_records * 8 // 100
    recs = corpus.make_corpus_records(n_records - n_legacy - n_copy, seed) + make_records(n_legacy, seed)
    t0 = time.time()
    dropped = 0
    for i, rec in enumerate(recs):
        ex = record_example(rec, tok, free_json=rng.random() < 0.2)
        if ex is None:
            ex = record_example(rec, tok, free_json=False)
        if ex is not None:
            out.append(ex)
        else:
            dropped += 1
        if (i + 1) % 10000 == 0:
            log(f"  built {i + 1}/{len(recs)} record canvases ({time.time() - t0:.0f}s)")
    log(f"  records: {len(recs) - dropped} canvases, {dropped} dropped (too long)")
    for prefix, span in corpus.copy_pairs(n_copy, seed):
        ex = copy_example(prefix, span, tok)
        if ex is not None:
            out.append(ex)
    demo = corpus.demo_code_prompt()
    pairs = corpus.method_pairs(n_code, seed)
    for k, (name, expr) in enumerate(pairs):
        ex = fill_example(demo, {"name": name, "expr": expr}, tok) if k % 2 == 0 else None
        if ex is None:
            ex = code_example(corpus.method_source(name, expr, rng), tok)
        if ex is not None:
            out.append(ex)
    for code in python_functions(n_code // 2, seed):
        ex = code_example(code, tok)
        if ex is not None:
            out.append(ex)
    rng.shuffle(out)
    return out


def build_examples(n_records: int, n_code: int, seed: int, tok: Any, log: Any = print) -> list[Example]:
    rng = random.Random(seed + 1)
    out: list[Example] = []
    recs = make_records(n_records, seed)
    t0 = time.time()
    for i, rec in enumerate(recs):
        ex = record_example(rec, tok, free_json=rng.random() < 0.25)
        if ex is not None:
            out.append(ex)
        if (i + 1) % 10000 == 0:
            log(f"  built {i + 1}/{n_records} record canvases ({time.time() - t0:.0f}s)")
    for code in python_functions(n_code, seed):
        ex = code_example(code, tok)
        if ex is not None:
            out.append(ex)
    rng.shuffle(out)
    return out


# --------------------------------------------------------------------------- model and training


def model_config(vocab_size: int, tok: Any) -> Any:
    from transformers import ModernBertConfig

    return ModernBertConfig(
        vocab_size=vocab_size,
        hidden_size=256,
        num_hidden_layers=6,
        num_attention_heads=4,
        intermediate_size=512,
        max_position_embeddings=CANVAS,
        global_attn_every_n_layers=1,
        local_attention=CANVAS,
        pad_token_id=tok.pad_id,
        bos_token_id=tok.bos_id,
        eos_token_id=tok.eos_id,
        cls_token_id=tok.bos_id,
        sep_token_id=tok.eos_id,
        mask_token_id=tok.mask_id,
        tie_word_embeddings=True,
    )


def _batch(examples: list[Example], idx: list[int], pad: int, device: Any) -> tuple[Any, Any, Any]:
    import torch

    width = max(len(examples[i].ids) for i in idx)
    ids = torch.full((len(idx), width), pad, dtype=torch.long)
    att = torch.zeros((len(idx), width), dtype=torch.bool)
    loss = torch.zeros((len(idx), width), dtype=torch.bool)
    for r, i in enumerate(idx):
        ex = examples[i]
        ids[r, : len(ex.ids)] = torch.tensor(ex.ids)
        att[r, : len(ex.ids)] = True
        loss[r, : len(ex.ids)] = torch.tensor(ex.loss)
    return ids.to(device), att.to(device), loss.to(device)


def _length_batches(examples: list[Example], batch_size: int, rng: random.Random) -> list[list[int]]:
    """One epoch of batches of similar lengths (less padding per step), in random order."""
    perm = list(range(len(examples)))
    rng.shuffle(perm)
    out: list[list[int]] = []
    pool = batch_size * 64
    for i in range(0, len(perm), pool):
        chunk = sorted(perm[i : i + pool], key=lambda j: len(examples[j].ids))
        out.extend(chunk[k : k + batch_size] for k in range(0, len(chunk), batch_size))
    rng.shuffle(out)
    return out


def diffusion_loss(model: Any, ids: Any, att: Any, eligible: Any, mask_id: int, gen: Any) -> Any:
    """Masked-diffusion loss: t ~ U(0, 1] per sequence, each eligible token masked with
    probability t, cross-entropy on masked tokens weighted by 1/t, averaged per eligible token."""
    import torch

    b = ids.shape[0]
    t = (torch.rand(b, generator=gen) * 0.98 + 0.02).to(ids.device)
    masked = eligible & (torch.rand(ids.shape, generator=gen).to(ids.device) < t[:, None])
    # at least one masked token per sequence
    none = ~masked.any(1)
    if none.any():
        first = eligible.float().argmax(1)
        masked[none, first[none]] = True
    inp = torch.where(masked, torch.full_like(ids, mask_id), ids)
    hidden = model.model(input_ids=inp, attention_mask=att.long()).last_hidden_state
    h = hidden[masked]
    logits = model.decoder(model.head(h))
    ce = torch.nn.functional.cross_entropy(logits.float(), ids[masked], reduction="none")
    w = (1.0 / t)[:, None].expand_as(ids)[masked]
    return (ce * w).sum() / eligible.sum().clamp(min=1)


def train_default(
    out: str | os.PathLike[str],
    *,
    seed: int = 0,
    max_steps: int = 3200,
    batch_size: int = 64,
    lr: float = 1e-3,
    n_records: int = 120_000,
    n_code: int = 6000,
    time_limit_min: float | None = None,
    save_every: int = 100,
    log_file: Any = None,
    init_from: str | os.PathLike[str] | None = None,
    corpus: str = "legacy",
) -> Path:
    """Train (or resume) the default model into ``out``; returns the folder of the final model."""
    import torch

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        print(msg, flush=True)
        if log_file is not None:
            with open(log_file, "a") as f:
                f.write(msg + "\n")

    from dlmprompt.tokenizer import Tokenizer

    tok_path = out / "tokenizer.json"
    if not tok_path.exists() and init_from is not None:
        import shutil

        shutil.copy(Path(init_from) / "tokenizer.json", tok_path)  # the model's own vocabulary
    if not tok_path.exists():
        log("corpus: generating records and code for the tokenizer")
        sample = make_records(20000, seed)
        texts = [r["text"] + "\n" + render_json(r["family"], r["values"]) for r in sample]
        texts += python_functions(n_code, seed)
        texts += [f"Kind: {f}\nText: \nRecord: " for f in FAMILIES]
        train_tokenizer(texts).save(str(tok_path))
    hf = hf_tokenizer(tok_path)
    tok = Tokenizer.from_hf(hf)
    data_path = out / "examples.json"
    if data_path.exists():
        raw = json.loads(data_path.read_text())
        examples = [Example(r[0], [bool(x) for x in r[1]]) for r in raw]
    else:
        log(f"corpus: building {n_records} {corpus} record canvases and {n_code} code snippets (seed {seed})")
        build = build_read_examples if corpus == "read" else build_examples
        examples = build(n_records, n_code, seed, tok, log)
        data_path.write_text(json.dumps([[e.ids, [int(x) for x in e.loss]] for e in examples]))
    log(f"corpus: {len(examples)} training sequences")

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    from transformers import ModernBertForMaskedLM

    torch.manual_seed(seed)
    model = ModernBertForMaskedLM(model_config(len(tok), tok)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    step = 0
    ckpt = out / "checkpoint.pt"
    gen = torch.Generator().manual_seed(seed)
    order_rng = random.Random(seed)
    if ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step = state["step"]
        gen.set_state(state["gen"])
        order_rng.setstate(state["order"])
        log(f"resumed from step {step}")
    elif init_from is not None:
        from safetensors.torch import load_file

        weights = load_file(str(Path(init_from) / "model.safetensors"))
        missing, unexpected = model.load_state_dict(weights, strict=False)
        if unexpected or [m for m in missing if not m.endswith("decoder.weight")]:
            raise ValueError(f"{init_from} does not match the model: missing {missing}, unexpected {unexpected}")
        log(f"initialised from {init_from} (fresh optimizer and schedule)")
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: ModernBertForMaskedLM {n_params / 1e6:.1f}M parameters on {device}; {max_steps} steps of {batch_size}")

    def lr_at(s: int) -> float:
        warm = 200
        if s < warm:
            return lr * (s + 1) / warm
        frac = (s - warm) / max(1, max_steps - warm)
        return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))

    model.train()
    t0 = time.time()
    start_step = step
    ema = None
    batches: list[list[int]] = []
    while step < max_steps:
        if not batches:
            batches = _length_batches(examples, batch_size, order_rng)
        idx = batches.pop()
        ids, att, eligible = _batch(examples, idx, tok.pad_id, device)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        loss = diffusion_loss(model, ids, att, eligible, tok.mask_id, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        if step % 10 == 0 or step == max_steps:
            rate = (step - start_step) / (time.time() - t0)
            eta = (max_steps - step) / max(rate, 1e-9)
            per_step = 1 / max(rate, 1e-9)
            rate_txt = f"{per_step:.2f}s/step eta {eta / 60:.0f} min"
            log(f"step {step}/{max_steps} loss {ema:.3f} lr {lr_at(step):.2e} {rate_txt}")
        stop = time_limit_min is not None and (time.time() - t0) > time_limit_min * 60
        if step % save_every == 0 or step == max_steps or stop:
            torch.save(
                {
                    "model": model.state_dict(),
                    "opt": opt.state_dict(),
                    "step": step,
                    "gen": gen.get_state(),
                    "order": order_rng.getstate(),
                },
                ckpt,
            )
            model.save_pretrained(out / "model")
            hf.save_pretrained(out / "model")
        if stop:
            log(f"time limit reached at step {step}; run again to resume")
            break
    model.save_pretrained(out / "model")
    hf.save_pretrained(out / "model")
    log(f"saved {out / 'model'} at step {step}")
    return out / "model"


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(
        prog="dlmprompt train-default", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", default="runs/default")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-steps", type=int, default=3200)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (lower it to continue a trained model)")
    ap.add_argument("--records", type=int, default=120_000)
    ap.add_argument("--code", type=int, default=6000)
    ap.add_argument("--time-limit-min", type=float, default=None)
    ap.add_argument("--log", default=None, help="also append progress to this file")
    ap.add_argument("--init-from", default=None, help="start from this model folder (e.g. the shipped model)")
    ap.add_argument(
        "--corpus",
        choices=("legacy", "read"),
        default="legacy",
        help="legacy: the original few phrasings per family; read: the read-and-copy grammar (models/corpus.py)",
    )
    args = ap.parse_args(argv)
    try:
        import faker  # noqa: F401
    except ImportError:
        print("training needs faker: pip install 'dlmprompt[train]'", file=sys.stderr)
        return 2
    train_default(
        args.out,
        seed=args.seed,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        lr=args.lr,
        n_records=args.records,
        n_code=args.code,
        time_limit_min=args.time_limit_min,
        log_file=args.log,
        init_from=args.init_from,
        corpus=args.corpus,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
