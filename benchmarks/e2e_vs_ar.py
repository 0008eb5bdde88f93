"""End to end: dlmprompt on diffusion models against an autoregressive model with llguidance.

The same three structured jobs, on the same device, with random weights in bf16 (float32 on a CPU):

* ``extraction``: a 6-field record (JSON Schema) from an 80-token document;
* ``form``: a 20-field form (JSON Schema: strings, integers, booleans, enums, dates);
* ``code``: a Python function template with 3 holes (regex-constrained).

(a) **dlmprompt** on an LLaDA-8B-shaped bidirectional model (hidden 4096, 32 layers, 32 heads,
MLP 12288) and on an LLaDA2-mini-shaped block-causal model (hidden 2048, 20 layers, 16 heads,
block 32, finished blocks in a KV cache: :mod:`dlmprompt.models.blockcausal`). LLaDA2-mini is a
mixture of experts (16B parameters, 1.4B active); the stand-in is dense with the active MLP width
(8 experts x 512 + a shared one = 4,608), so routing costs are not modelled. Keys, braces and the
code around the holes are anchors; only the values are denoised, at a fixed number of tokens per
forward pass (``tokens_per_step`` 4 and 8: random weights give no real confidences). (b) An
**autoregressive** model of the 7B class (transformers' ``Qwen2ForCausalLM`` of Qwen2.5-7B's
shape: hidden 3584, 28 layers, 28 heads, 4 KV heads, MLP 18944) runs transformers ``generate``
(greedy, KV cache) with an llguidance logits processor for the same output: the JSON Schema
(compact) or the code template as one regex; it writes every token of the output, keys
included. All three models share one vocabulary: the first 126,460 tokens of Qwen2.5 plus mask,
pad, EOS and BOS (126,464 ids, LLaDA's size), so the output heads cost the same.

Per job, batch (1 and 8) and tokens per forward: latency p50 of the whole request (compiled
programs and grammars are cached before the clock starts, as a server's caches hold them;
llguidance matchers are copied from a compiled one inside the clock), output tokens (the output's
text: the canvas from the first slot on without pad for dlmprompt, the generated tokens without
EOS for the AR model), output tokens/s, forward passes (for the block-causal model: denoising
passes plus one cache fill per block), tokens per forward pass, and whether every output is valid
(``jsonschema`` for the JSON jobs, the template's regex for the code job) on both sides.

Run: ``python benchmarks/e2e_vs_ar.py [--small] [--json OUT] [--repeats N]``. Without ``--json``
the figures go to ``benchmarks/results/e2e_vs_ar_<gpu>.json``. ``--small`` runs 2-layer,
hidden-64 models over the embedded model's 4,096-token vocabulary, batch 1 and 2, on a CPU in
seconds (tested in CI); its figures say nothing about speed.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from gpu_step import Block, LLaDAShaped, llada_vocab, timed

import dlmprompt
from dlmprompt import Prompt, Tokenizer, compile, generate, slot
from dlmprompt.models.backends import TransformersDenoiser
from dlmprompt.models.blockcausal import BlockCausalDenoiser

SHAPES = {
    "full": {
        "llada8b": {"d": 4096, "layers": 32, "heads": 32, "ff": 12288},
        "llada2mini": {"d": 2048, "layers": 20, "heads": 16, "ff": 4608, "block": 32},
        "ar": {"d": 3584, "layers": 28, "heads": 28, "kv_heads": 4, "ff": 18944},
    },
    "small": {
        "llada8b": {"d": 64, "layers": 2, "heads": 2, "ff": 128},
        "llada2mini": {"d": 64, "layers": 2, "heads": 2, "ff": 128, "block": 32},
        "ar": {"d": 64, "layers": 2, "heads": 2, "kv_heads": 1, "ff": 128},
    },
}

# ---------------------------------------------------------------------------------------------- jobs
DOCUMENT = (
    "Maria Alvarez joined Northwind Traders in Lisbon last spring as a senior data analyst. She is 34, "
    "grew up in Porto, and before the move worked six years for a shipping firm. Colleagues reach her at "
    "maria.alvarez@northwind.example during office hours; she leads the quarterly pricing review and "
    "mentors two junior analysts on the forecasting team."
)

EXTRACTION = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "pattern": "^[A-Z][a-z]{1,12}( [A-Z][a-z]{1,12})?$"},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "city": {"type": "string", "pattern": "^[A-Z][a-z]{1,15}$"},
        "email": {"type": "string", "pattern": "^[a-z0-9._-]{1,20}@[a-z0-9-]{1,15}\\.[a-z]{2,6}$"},
        "employer": {"type": "string", "pattern": "^[A-Z][A-Za-z]{1,12}( [A-Z][A-Za-z]{1,12})?$"},
        "role": {"enum": ["analyst", "senior data analyst", "manager", "engineer", "director"]},
    },
    "required": ["name", "age", "city", "email", "employer", "role"],
    "additionalProperties": False,
}


def _form_schema() -> dict[str, Any]:
    word = {"type": "string", "pattern": "^[A-Za-z][a-z]{0,9}( [A-Za-z][a-z]{0,9})?$"}
    props: dict[str, Any] = {}
    kinds = [
        ("first_name", word),
        ("last_name", word),
        ("age", {"type": "integer", "minimum": 0, "maximum": 120}),
        ("birth_date", {"type": "string", "pattern": "^[12][0-9]{3}-[01][0-9]-[0-3][0-9]$"}),
        ("street", word),
        ("house_number", {"type": "integer", "minimum": 1, "maximum": 9999}),
        ("postcode", {"type": "string", "pattern": "^[0-9]{4,5}$"}),
        ("city", word),
        ("country", {"enum": ["PT", "ES", "FR", "DE", "IT", "NL"]}),
        ("phone", {"type": "string", "pattern": "^\\+[0-9]{8,12}$"}),
        ("email", {"type": "string", "pattern": "^[a-z0-9.]{1,12}@[a-z0-9]{1,10}\\.[a-z]{2,4}$"}),
        ("employed", {"type": "boolean"}),
        ("employer", word),
        ("job_title", word),
        ("income_band", {"enum": ["low", "middle", "high"]}),
        ("dependents", {"type": "integer", "minimum": 0, "maximum": 12}),
        ("newsletter", {"type": "boolean"}),
        ("preferred_contact", {"enum": ["email", "phone", "post"]}),
        ("start_date", {"type": "string", "pattern": "^[12][0-9]{3}-[01][0-9]-[0-3][0-9]$"}),
        ("notes", {"type": "string", "pattern": "^[A-Za-z ,.]{0,20}$"}),
    ]
    for name, schema in kinds:
        props[name] = schema
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


FORM = _form_schema()
FORM_TEXT = "Fill in the registration form for Maria Alvarez, 34, Rua Augusta 120, 1100-048 Lisbon, Portugal.\nForm: "

CODE_HOLES = {
    "name": r"[a-z][a-z0-9_]{0,15}",
    "cond": r"item(\.[a-z]+)? (>|<|>=|<=|==) [0-9]{1,3}",
    "expr": r"item(\.[a-z]+)?( \* [0-9]{1,2})?",
}
CODE_PARTS = [
    "def ",
    ("name", 6),
    "(items):\n    total = 0\n    for item in items:\n        if ",
    ("cond", 10),
    ":\n            total += ",
    ("expr", 8),
    "\n    return total\n",
]
CODE_TEXT = "Write a function that sums the prices of the items that cost more than 10.\n"


def dlm_prompt(job: str, value_tokens: int) -> Prompt:
    if job == "extraction":
        return Prompt(DOCUMENT + "\nRecord: ") + slot(
            "record", schema=EXTRACTION, max_tokens=value_tokens, layout="template"
        )
    if job == "form":
        return Prompt(FORM_TEXT) + slot("form", schema=FORM, max_tokens=value_tokens, layout="template")
    p = Prompt(CODE_TEXT)
    for part in CODE_PARTS:
        if isinstance(part, str):
            p = p + part
        else:
            name, n = part
            p = p + slot(name, regex=CODE_HOLES[name], max_tokens=n)
    return p


def ar_job(job: str) -> tuple[str, str]:
    """(prompt text, llguidance grammar) for the autoregressive model."""
    import llguidance as ll

    if job == "extraction":
        return DOCUMENT + "\nRecord: ", ll.LLMatcher.grammar_from_json_schema(
            json.dumps(EXTRACTION), defaults={"whitespace_flexible": False}
        )
    if job == "form":
        return FORM_TEXT, ll.LLMatcher.grammar_from_json_schema(
            json.dumps(FORM), defaults={"whitespace_flexible": False}
        )
    regex = "".join(re.escape(p) if isinstance(p, str) else f"(?:{CODE_HOLES[p[0]]})" for p in CODE_PARTS)
    return CODE_TEXT, ll.LLMatcher.grammar_from_regex(regex)


JOBS = ("extraction", "form", "code")


# ---------------------------------------------------------------------------------------------- models
class LLaDA2Shaped(nn.Module):
    """Block-causal decoder with LLaDA2's forward interface: 4D additive mask, position ids,
    ``past_key_values`` (no rotary embedding: timing only)."""

    def __init__(self, d: int, layers: int, heads: int, ff: int, vocab: int, block: int) -> None:
        super().__init__()
        self.config = SimpleNamespace(block_length=block, _name_or_path="llada2mini-shaped")
        self.emb = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(Block(d, heads, ff, i) for i in range(layers))
        self.norm = nn.RMSNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)

    def forward(self, input_ids, attention_mask, position_ids=None, past_key_values=None, use_cache=False):  # type: ignore[no-untyped-def]
        x = self.emb(input_ids)
        for blk in self.blocks:
            x = blk(x, attention_mask.to(x.dtype), past_key_values if use_cache else None)
        return SimpleNamespace(logits=self.head(self.norm(x)), past_key_values=past_key_values)


def build(kind: str, shape: dict[str, int], vocab: int, device: torch.device, dtype: torch.dtype) -> nn.Module:
    torch.manual_seed(0)
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # built in its dtype on the device: no float32 copy of 8B weights
    try:
        return _build(kind, shape, vocab, device, dtype)
    finally:
        torch.set_default_dtype(before)


def _build(kind: str, shape: dict[str, int], vocab: int, device: torch.device, dtype: torch.dtype) -> nn.Module:
    with torch.device(device):
        if kind == "llada8b":
            model: nn.Module = LLaDAShaped(shape["d"], shape["layers"], shape["heads"], shape["ff"], vocab)
        elif kind == "llada2mini":
            model = LLaDA2Shaped(shape["d"], shape["layers"], shape["heads"], shape["ff"], vocab, shape["block"])
        else:
            from transformers import Qwen2Config, Qwen2ForCausalLM

            cfg = Qwen2Config(
                vocab_size=vocab,
                hidden_size=shape["d"],
                num_hidden_layers=shape["layers"],
                num_attention_heads=shape["heads"],
                num_key_value_heads=shape["kv_heads"],
                intermediate_size=shape["ff"],
                max_position_embeddings=4096,
                tie_word_embeddings=False,
            )
            model = Qwen2ForCausalLM(cfg)
    return model.to(dtype).eval()


class _LLaDAWrapper(nn.Module):
    """``LLaDAShaped`` behind the transformers-style call :class:`TransformersDenoiser` makes."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.config = SimpleNamespace(_name_or_path="llada8b-shaped")

    def forward(self, input_ids, attention_mask=None):  # type: ignore[no-untyped-def]
        mask = None if attention_mask is None else attention_mask.bool()[:, None, None, :]
        return SimpleNamespace(logits=self.inner(input_ids, mask))


class GrammarProcessor:
    """A transformers logits processor: one llguidance matcher per row, tokens outside its mask
    set to -inf before the greedy pick."""

    def __init__(self, matchers: list[Any], vocab: int) -> None:
        from llguidance.torch import allocate_token_bitmask

        self.matchers = matchers
        self.bitmask = allocate_token_bitmask(len(matchers), vocab)
        self.started = False

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        from llguidance.torch import apply_token_bitmask_inplace, fill_next_token_bitmask

        for i, m in enumerate(self.matchers):
            if self.started and not m.is_stopped():
                m.consume_token(int(input_ids[i, -1]))
            fill_next_token_bitmask(m, self.bitmask, i)
        self.started = True
        apply_token_bitmask_inplace(scores, self.bitmask.to(scores.device, non_blocking=True))
        return scores


# ---------------------------------------------------------------------------------------------- runs
def valid_output(job: str, text: str) -> bool:
    """Whether an output is what the job asks for: a JSON value valid under the job's schema (by
    the ``jsonschema`` package), or the code template with every hole matching its regex."""
    if job == "code":
        regex = "".join(re.escape(p) if isinstance(p, str) else f"(?:{CODE_HOLES[p[0]]})" for p in CODE_PARTS)
        return re.fullmatch(regex, text) is not None
    import jsonschema

    try:
        value = json.loads(text)
    except ValueError:
        return False
    return jsonschema.Draft202012Validator(EXTRACTION if job == "extraction" else FORM).is_valid(value)


def dlm_text(job: str, res: Any) -> str:
    if job == "code":
        return "".join(p if isinstance(p, str) else res[p[0]] for p in CODE_PARTS)
    return res["record" if job == "extraction" else "form"]


def dlm_run(den: Any, prog: Any, batch: int) -> list[Any]:
    out = generate(den, [prog] * batch, generator=torch.Generator().manual_seed(0))
    return out


def output_tokens(res: Any, pad: int | None) -> int:
    first = int(next(s.start for s in res.program.layout.slots))
    tail = res.canvas[first:]
    return int((tail != pad).sum()) if pad is not None else len(tail)


def ar_run(model: Any, tok: Tokenizer, ids: torch.Tensor, proto: Any, batch: int, max_new: int) -> torch.Tensor:
    from transformers import LogitsProcessorList

    proc = GrammarProcessor([proto.deep_copy() for _ in range(batch)], tok.vocab_size)
    with torch.inference_mode():
        return model.generate(
            input_ids=ids.repeat(batch, 1),
            attention_mask=torch.ones(batch, ids.shape[1], dtype=torch.long, device=ids.device),
            max_new_tokens=max_new,
            do_sample=False,
            logits_processor=LogitsProcessorList([proc]),
            eos_token_id=tok.eos_id,
            pad_token_id=tok.pad_id,
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="tiny models, batch 1 and 2: runs on a CPU in seconds")
    ap.add_argument("--json", help="where to write the figures (default benchmarks/results/e2e_vs_ar_<gpu>.json)")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per setting (default 5; 1 with --small)")
    ap.add_argument("--jobs", default=",".join(JOBS))
    ap.add_argument("--batches", default=None, help="comma-separated batch sizes (default 1,8; 1,2 with --small)")
    args = ap.parse_args(argv)
    import llguidance as ll

    from dlmprompt.constraints.grammar import ll_tokenizer

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    shapes = SHAPES["small" if args.small else "full"]
    batches = [1, 2] if args.small else [1, 8]
    if args.batches:
        batches = [int(b) for b in args.batches.split(",") if b]
    per_forward = [4, 8]
    repeats = args.repeats or (1 if args.small else 5)
    jobs = [j for j in args.jobs.split(",") if j]
    unknown = sorted(set(jobs) - set(JOBS))
    if unknown:
        ap.error(f"unknown jobs {unknown}; the jobs are {list(JOBS)}")
    gpu = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    tok = dlmprompt.load().tokenizer if args.small else llada_vocab()
    vocab = tok.vocab_size
    t0 = time.perf_counter()

    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:7.1f}s] {msg}", file=sys.stderr, flush=True)

    say(f"device {gpu}, {dtype}, vocabulary {vocab}, jobs {jobs}, batches {batches}, repeats {repeats}")
    value_tokens = {"extraction": 8, "form": 6, "code": 0}
    programs = {}
    for job in jobs:
        for k in per_forward:
            p = dlm_prompt(job, value_tokens[job]).with_sampling(tokens_per_step=k, temperature=0.0, length="fixed")
            programs[job, k] = compile(p, tok)
        say(f"compiled {job}: canvas {len(programs[job, per_forward[0]].layout)} positions")
    runs: list[dict[str, Any]] = []
    # (a) dlmprompt, one model at a time (the 8B-shaped one alone needs 16 GB)
    for kind in ("llada8b", "llada2mini"):
        say(f"building {kind} {shapes[kind]}")
        model = build(kind, shapes[kind], vocab, device, dtype)
        if kind == "llada8b":
            den: Any = TransformersDenoiser(_LLaDAWrapper(model), tok, family="llada", name="llada8b-shaped")
        else:
            den = BlockCausalDenoiser(model, tok, block_length=shapes[kind]["block"], name="llada2mini-shaped")
        for job in jobs:
            for batch in batches:
                for k in per_forward:
                    prog = programs[job, k]
                    res = dlm_run(den, prog, batch)  # warm-up (first use of these shapes)
                    run = lambda den=den, prog=prog, batch=batch: dlm_run(den, prog, batch)  # noqa: E731
                    times = [timed(device, run) for _ in range(repeats)]
                    ms = statistics.median(times)
                    passes = res[0].forward_passes
                    out_tok = sum(output_tokens(r, tok.pad_id) for r in res)
                    runs.append(
                        {
                            "job": job,
                            "batch": batch,
                            "tokens_per_forward": k,
                            "model": kind,
                            "canvas": len(prog.layout),
                            "dlm_ms": round(ms, 2),
                            "dlm_forward_passes": passes,
                            "dlm_output_tokens": out_tok,
                            "dlm_tokens_per_s": round(out_tok / ms * 1e3, 1),
                            "dlm_tokens_per_forward": round(out_tok / batch / passes, 2),
                            "dlm_valid": all(valid_output(job, dlm_text(job, r)) for r in res),
                            "gpu": gpu,
                        }
                    )
                    say(f"{kind} {job} batch {batch} k {k}: {ms:.1f} ms, {passes} passes, {out_tok} tokens")
        del model, den
        if device.type == "cuda":
            torch.cuda.empty_cache()
    # (b) the autoregressive model with llguidance
    say(f"building the autoregressive model {shapes['ar']}")
    ar = build("ar", shapes["ar"], vocab, device, dtype)
    lltok = ll_tokenizer(tok)
    ar_fig: dict[tuple[str, int], dict[str, Any]] = {}
    for job in jobs:
        text, grammar = ar_job(job)
        proto = ll.LLMatcher(lltok, grammar, log_level=0)
        if proto.is_error():
            raise SystemExit(f"llguidance refused the {job} grammar: {proto.get_error()}")
        ids = torch.tensor([tok.encode(text)], device=device)
        max_new = 4 * len(programs[job, per_forward[0]].layout)
        for batch in batches:
            out = ar_run(ar, tok, ids, proto, batch, max_new)  # warm-up
            run = lambda ids=ids, proto=proto, batch=batch, n=max_new: ar_run(ar, tok, ids, proto, batch, n)  # noqa: E731
            times = [timed(device, run) for _ in range(repeats)]
            ms = statistics.median(times)
            gen = out[:, ids.shape[1] :]
            produced = int(((gen != tok.pad_id) & (gen != tok.eos_id)).sum())
            texts = [tok.decode([int(t) for t in row if int(t) not in (tok.pad_id, tok.eos_id)]) for row in gen]
            ar_fig[job, batch] = {
                "ar_ms": round(ms, 2),
                "ar_forward_passes": int(gen.shape[1]),
                "ar_output_tokens": produced,
                "ar_tokens_per_s": round(produced / ms * 1e3, 1),
                "ar_valid": all(valid_output(job, t) for t in texts),
                "ar_text": texts[0],
            }
            say(f"ar {job} batch {batch}: {ms:.1f} ms, {gen.shape[1]} passes, {produced} tokens")
    for r in runs:
        fig = ar_fig[r["job"], r["batch"]]
        r.update({k: v for k, v in fig.items() if k != "ar_text"})
        r["latency_ratio"] = round(r["dlm_ms"] / r["ar_ms"], 3)
    cols = ["job", "model", "batch", "tokens_per_forward", "dlm_ms", "ar_ms", "latency_ratio"]
    cols += ["dlm_forward_passes", "ar_forward_passes", "dlm_tokens_per_s", "ar_tokens_per_s", "dlm_valid", "ar_valid"]
    print(" | ".join(cols))
    for r in runs:
        print(" | ".join(str(r[c]) for c in cols))
    for (job, batch), fig in ar_fig.items():
        if batch == batches[0]:
            print(f"AR output ({job}): {fig['ar_text'][:160]!r}")
    path = Path(args.json) if args.json else Path(__file__).parent / "results" / f"e2e_vs_ar_{_slug(gpu)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"gpu": gpu, "dtype": str(dtype), "small": args.small, "vocab": vocab, "repeats": repeats, "shapes": shapes}
    path.write_text(json.dumps({**meta, "runs": runs}, indent=2))
    say(f"wrote {path}")
    return 0


def _slug(name: str) -> str:
    low = name.lower()
    for short in ("h200", "h100", "a100", "l40s", "l4"):
        if short in low:
            return short
    return re.sub(r"[^a-z0-9]+", "_", low).strip("_") or "cpu"


if __name__ == "__main__":
    raise SystemExit(main())
