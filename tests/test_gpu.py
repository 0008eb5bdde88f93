"""The sampler on a CUDA device: models in float32 and bfloat16, every constraint holding, batches,
determinism, and the GPU benchmark's path. Skipped where torch sees no CUDA device (CI); run on a
GPU machine with `python -m pytest tests/test_gpu.py`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import MIXED_PROMPT, check_result

import dlmprompt
from dlmprompt import compile, generate
from dlmprompt.models.records import FAMILIES, extraction_prompt

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

TEXT = "Meet Ada Lovelace, 36, from London (email: ada@example.org)."


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_embedded_model_on_cuda_keeps_every_constraint(dtype) -> None:
    den = dlmprompt.load(device="cuda", dtype=dtype)
    assert den.device.type == "cuda"
    assert next(den.model.parameters()).dtype == dtype
    progs = [compile(extraction_prompt(f, TEXT), den.tokenizer) for f in FAMILIES]
    progs += [
        compile(MIXED_PROMPT.with_sampling(steps=s, temperature=t), den.tokenizer) for s, t in [(4, 0.0), (9, 1.0)]
    ]
    first = generate(den, progs, generator=torch.Generator().manual_seed(0))
    again = generate(den, progs, generator=torch.Generator().manual_seed(0))
    for prog, a, b in zip(progs, first, again):
        check_result(prog, a)
        assert np.array_equal(a.canvas, b.canvas), "same seed, same device: same output"
    # a batch gives what each program gives alone with its own generator
    alone = [generate(den, [p], generator=[torch.Generator().manual_seed(7)])[0] for p in progs[-2:]]
    batch = generate(den, progs[-2:], generator=[torch.Generator().manual_seed(7) for _ in range(2)])
    for x, y in zip(alone, batch):
        assert np.array_equal(x.canvas, y.canvas)


def test_greedy_extraction_agrees_between_cpu_and_cuda() -> None:
    """float32 greedy decoding of the trained model: the same record on both devices."""
    prompt = extraction_prompt("person", TEXT).with_sampling(temperature=0.0)
    cpu = dlmprompt.load()
    gpu = dlmprompt.load(device="cuda")
    a = generate(cpu, compile(prompt, cpu.tokenizer))
    b = generate(gpu, compile(prompt, gpu.tokenizer))
    assert a.values == b.values


def test_gpu_step_benchmark_small_runs_on_cuda(tmp_path) -> None:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import gpu_step

    out = tmp_path / "gpu_step.json"
    assert gpu_step.main(["--small", "--json", str(out), "--repeats", "2"]) == 0
    data = json.loads(out.read_text())
    assert data["device"] == torch.cuda.get_device_name()
    assert {r["canvas"] for r in data["shapes"]} == {64, 128}
    assert all(r["step_ms"] > 0 and r["step_ms_constrained"] > 0 for r in data["shapes"])


def test_diffusion_gemma_on_cuda(tmp_path) -> None:
    """Block diffusion on the GPU: constraints hold, a batch equals its rows alone, and without
    constraints the output equals transformers' own generate from the same seed (CUDA streams)."""
    pytest.importorskip("transformers.models.diffusion_gemma")
    from helpers import build_tiny_diffusion_gemma

    den = dlmprompt.load(build_tiny_diffusion_gemma(tmp_path), device="cuda")
    progs = [compile(MIXED_PROMPT.with_sampling(steps=s), den.tokenizer) for s in (3, 3)]
    gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
    batch = generate(den, progs, generator=gens)
    for i, (prog, res) in enumerate(zip(progs, batch)):
        check_result(prog, res)
        alone = generate(den, [prog], generator=[torch.Generator().manual_seed(i + 1)])[0]
        assert np.array_equal(alone.canvas, res.canvas)
    free = compile(
        (dlmprompt.Prompt("Name: Ada") + dlmprompt.slot("out", tokens=16)).with_sampling(steps=5),
        den.tokenizer,
        constraints=False,
    )
    start = int(np.nonzero(free.layout.slot_of >= 0)[0][0])
    prefix = torch.from_numpy(free.layout.canvas[:start])[None].cuda()
    ours = generate(den, [free], generator=[torch.Generator().manual_seed(3)])[0]
    torch.manual_seed(3)
    ref = den.model.generate(prefix, max_new_tokens=16, max_denoising_steps=5).sequences[0].cpu()
    assert ours.canvas.tolist() == ref[: len(ours.canvas)].tolist()


def test_device_path_waits_for_nothing_between_steps() -> None:
    """On CUDA the sampler's device path queues step after step: from the first step to the last
    no operation waits for the device (torch's sync debug mode raises on any). Constrained and
    free slots, sampling and greedy rows, a batch of two programs, two blocks."""
    from torch import nn

    from dlmprompt import Prompt, Tokenizer, slot
    from dlmprompt.sampling.devicepath import DeviceRun
    from dlmprompt.sampling.rows import Row

    tok = Tokenizer.bytes_level(["ab", "12"])

    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(tok.vocab_size, 32)
            self.mix = nn.Linear(32, 32)
            self.head = nn.Linear(32, tok.vocab_size)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            x = self.emb(ids)
            return self.head(torch.tanh(self.mix(x) + x.mean(dim=1, keepdim=True)))

    class Den:
        host_attention_mask = True
        tokenizer = tok
        mask_id = tok.mask_id
        device = torch.device("cuda")
        model = Tiny().cuda()

        def __call__(self, ids: torch.Tensor, att: torch.Tensor) -> torch.Tensor:
            return self.model(ids)

    den = Den()
    prompt = (
        Prompt("id ")
        + slot("code", regex=r"[a-c]{2}-[0-9]{2}", max_tokens=6)
        + " is "
        + slot("kind", choice=["ab", "ba"], max_tokens=2)
        + " / "
        + slot("note", max_tokens=5)
    )
    progs = [
        # fixed step counts: a confidence threshold reads each step's count back (one small wait)
        compile(prompt.with_sampling(temperature=1.0, block_length=8, tokens_per_step=2), tok),
        compile(prompt.with_sampling(temperature=0.0, strategy="margin", steps=6), tok),
    ]
    for mode in ("warn", "error"):  # the first run builds the plans and class tables (warns only)
        rows = [Row(i, p, torch.Generator().manual_seed(i)) for i, p in enumerate(progs)]
        run = DeviceRun(den, rows)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode(mode)
        try:
            for _ in run.steps(events=False):
                pass
        finally:
            torch.cuda.set_sync_debug_mode("default")
        run.finish()
        for p, r in zip(progs, rows):
            check_result(p, r.result())


def test_triton_chain_kernel_matches_torch_on_cuda() -> None:
    """The fused forward-backward kernel compiled for this GPU against the torch loops."""
    pytest.importorskip("triton")
    from chain_kernel_check import check

    assert check(torch.device("cuda"), 20) == 60
