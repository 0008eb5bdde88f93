"""The sampler's device path (``devicepath.py``, ``devicechain.py``), run here on the CPU.

The modules test_sampler, test_properties and test_exactness_edges run whole on both paths (the
``both_paths`` fixture); these tests cover what is the device path's own: its merged
forward-backward pass against the numpy reference, its agreement with the host path where both
are deterministic, its step events, and which rows it takes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dlmprompt import Prompt, Tokenizer, compile, generate, sample, slot
from dlmprompt.constraints.automaton import regex_automaton
from dlmprompt.sampling import devicechain as dc
from dlmprompt.sampling.chain import run_chain
from dlmprompt.testing import RandomDenoiser


@pytest.fixture
def device_path(monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("DLMPROMPT_SAMPLER", "device")


def test_merged_chains_of_different_automata_draw_what_the_reference_draws() -> None:
    """Chains of four automata and of different lengths in one merged pass: the same classes as
    ``chain.run_chain`` slot by slot given the same noise, in sampling and greedy (max-product)
    mode, and the same constrained class weights, with a separate confidence distribution too."""
    from chain_kernel_check import automata, layout_weights, random_chains

    rng = np.random.default_rng(0)
    autos = automata()
    checked = 0
    for trial in range(40):
        chain_autos, committed, sizes, lp, conf, noise = random_chains(rng, autos, max_len=10)
        ch = dc.pack(chain_autos, torch.device("cpu"))
        for greedy in (False, True):
            use_conf = greedy or trial % 2 == 1
            ws = torch.from_numpy(layout_weights(ch, committed, lp))
            wc = torch.from_numpy(layout_weights(ch, committed, conf if use_conf else lp))
            nz = None
            if not greedy:
                g = np.zeros(tuple(ws.shape))
                for i, c in enumerate(committed):
                    g[i, np.nonzero(c < 0)[0], : noise[i].shape[1]] = noise[i]
                nz = torch.from_numpy(g)
            beta = dc.backward(ch, ws, torch.full((ch.n_chains,), greedy))
            classes, ok = dc.sample(ch, ws, beta, nz)
            logw = dc.weights(ch, wc, dc.backward(ch, wc, None))
            assert bool(ok.all())
            for i, c in enumerate(committed):
                ref = run_chain(
                    chain_autos[i],
                    c,
                    lp[i],
                    noise=None if greedy else noise[i],
                    want=np.ones(sizes[i], bool),
                    logP_conf=conf[i] if use_conf else None,
                )
                m = np.nonzero(c < 0)[0]
                assert np.array_equal(classes[i, m].numpy(), ref.classes)
                fixed = np.nonzero(c >= 0)[0]
                assert np.array_equal(classes[i, fixed].numpy(), c[fixed])
                assert bool((classes[i, len(c) :] == ch.n_classes - 1).all())  # the identity pads
                if len(m) == 0:
                    continue
                assert ref.logw is not None
                np.testing.assert_allclose(logw[i, m, : chain_autos[i].n_classes].numpy(), ref.logw, atol=1e-8)
                checked += 1
    assert checked > 200


def test_impossible_chain_is_flagged_not_filled() -> None:
    """A committed prefix no completion can follow: the pass says so (the sampler turns the
    flag into an error) instead of returning a class sequence."""
    from chain_kernel_check import layout_weights

    tok = Tokenizer.bytes_level([])
    auto = regex_automaton(r"[0-9]{3}", tok)
    ch = dc.pack([auto], torch.device("cpu"))
    committed = np.array([-1, -1, -1])
    lm = np.zeros((3, auto.n_classes))
    w = torch.from_numpy(layout_weights(ch, [committed], [lm]))
    w[0, 1] = dc.NEG  # no class at all at position 1
    beta = dc.backward(ch, w, None)
    _, ok = dc.sample(ch, w, beta, None)
    assert not bool(ok.any())


def _prompts() -> list[Prompt]:
    # step-count schedules; the tests add confidence thresholds
    return [
        (
            Prompt("Name: ")
            + slot("name", regex=r"[A-Z][a-z]{1,6}", max_tokens=5)
            + ", age "
            + slot("age", regex=r"[1-9][0-9]?", max_tokens=2)
            + ". Likes "
            + slot("pet", choice=["cats", "dogs", "fish"], max_tokens=4)
            + ". "
            + slot("note", max_tokens=6)
        ).with_sampling(tokens_per_step=1),
        (Prompt("Code: ") + slot("code", regex=r"[a-c]{2}-[0-9]{2}", max_tokens=5) + " / " + slot("free", max_tokens=4))
        .with_sampling(block_length=4, strategy="margin", tokens_per_step=1)
        .with_guidance(cfg_scale=1.0),
    ]


@pytest.mark.parametrize("threshold", [None, 0.5, 0.9])
@pytest.mark.parametrize("strategy", ["low_confidence", "margin", "entropy"])
def test_greedy_device_path_equals_host_path(byte_tok, monkeypatch, strategy, threshold) -> None:
    """At temperature 0 both paths are deterministic and run the same algorithm (max-product
    assignment, per-class best token, constrained confidences): the same canvases and step counts,
    for step counts and for confidence thresholds (the device picks how many it commits)."""
    from dlmprompt.sampling import devicepath

    runs = []
    real_init = devicepath.DeviceRun.__init__

    def counting_init(self, denoiser, rows):  # type: ignore[no-untyped-def]
        runs.append(len(rows))
        real_init(self, denoiser, rows)

    monkeypatch.setattr(devicepath.DeviceRun, "__init__", counting_init)
    den = RandomDenoiser(byte_tok, seed=3)
    extra = {} if threshold is None else {"threshold": threshold}
    progs = [compile(p.with_sampling(temperature=0.0, strategy=strategy, **extra), byte_tok) for p in _prompts()]
    out = {}
    for mode in ("host", "device"):
        monkeypatch.setenv("DLMPROMPT_SAMPLER", mode)
        out[mode] = generate(den, progs, generator=torch.Generator().manual_seed(0))
    assert runs == [2]  # the host run took no row to the device path, the device run both
    for h, d in zip(out["host"], out["device"]):
        assert np.array_equal(h.canvas, d.canvas)
        assert (h.steps, h.forward_passes) == (d.steps, d.forward_passes)
        if threshold is not None:  # several positions per pass, as the host path commits them
            assert h.steps < int((h.program.layout.slot_of >= 0).sum())


@pytest.mark.parametrize("threshold", [None, 0.3])
def test_step_events_rebuild_the_canvas_generate_reads_once(byte_tok, device_path, threshold) -> None:
    """``sample()`` reads each step back (its event); ``generate()`` without ``on_step`` reads the
    canvas once at the end. Same seeds, same result; the events commit masked slot positions only,
    the schedule's number per step (or the device's count under a threshold), and replay into the
    final canvas."""
    den = RandomDenoiser(byte_tok, seed=5)
    extra = {} if threshold is None else {"threshold": threshold}
    progs = [compile(p.with_sampling(temperature=1.0, **extra), byte_tok) for p in _prompts()]
    final = generate(den, progs, generator=torch.Generator().manual_seed(7))
    canvases = [p.layout.canvas.copy() for p in progs]
    per_row: dict[int, list[int]] = {0: [], 1: []}
    for st in sample(den, progs, generator=torch.Generator().manual_seed(7)):
        c = canvases[st.row]
        assert np.all(c[st.committed] == progs[st.row].mask_id)
        assert np.all(progs[st.row].layout.slot_of[st.committed] >= 0)
        assert np.all((st.confidences >= 0) & (st.confidences <= 1))
        c[st.committed] = st.tokens
        assert np.array_equal(c, st.canvas)
        per_row[st.row].append(len(st.committed))
    for i, (p, r) in enumerate(zip(progs, final)):
        assert np.array_equal(canvases[i], r.canvas)
        assert sum(per_row[i]) == int((p.layout.canvas == p.mask_id).sum())
        assert len(per_row[i]) == r.steps


def test_rows_the_device_path_cannot_take_run_on_the_host(byte_tok, device_path, monkeypatch) -> None:
    """Grammar slots stay on the host path (confidence thresholds no longer do); a bad setting is named."""
    from dlmprompt.sampling import devicepath
    from dlmprompt.sampling.rows import Row

    den = RandomDenoiser(byte_tok, seed=1)
    plain = compile(_prompts()[0], byte_tok)
    thresh = compile(_prompts()[0].with_sampling(threshold=0.5), byte_tok)
    gram = compile(Prompt("x=") + slot("g", grammar='start: "a"+ "b"', max_tokens=4), byte_tok)
    rows = [Row(i, p, torch.Generator().manual_seed(i)) for i, p in enumerate([plain, thresh, gram])]
    assert [devicepath.eligible(den, [r]) for r in rows] == [True, True, False]
    monkeypatch.setenv("DLMPROMPT_SAMPLER", "gpu")
    with pytest.raises(ValueError, match=r"DLMPROMPT_SAMPLER='gpu'.*auto, device or host"):
        devicepath.eligible(den, rows[:1])
    monkeypatch.setenv("DLMPROMPT_SAMPLER", "auto")
    assert not devicepath.eligible(den, rows[:1])  # auto: CUDA only


def test_fused_triton_kernel_matches_the_torch_version_in_the_interpreter() -> None:
    """The CUDA path's fused forward-backward kernel (``dlmprompt.sampling.tritonchain``), run by triton's CPU
    interpreter: the same classes, validity flags and class weights as the torch loops, over
    sampling, greedy and mixed chains and chains with no valid completion. (tests/test_gpu.py
    runs the same check compiled, on CUDA.)"""
    pytest.importorskip("triton", minversion="3.6")
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).with_name("chain_kernel_check.py")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    out = subprocess.run(
        [sys.executable, str(script), "cpu", "10"], capture_output=True, text=True, env=env, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "chain kernel: 30 cases agree" in out.stdout


def test_batching_engine_steps_device_rows_like_generate(byte_tok, device_path) -> None:
    """The server's engine admits rows between steps: device-path rows (their canvases stay on the
    device between engine iterations) and a grammar row (host path) in flight together. Each job
    gets what ``generate`` gives it alone, and its streamed steps replay into its result."""
    from dlmprompt.serving.engine import Engine

    den = RandomDenoiser(byte_tok, seed=2)
    progs = [compile(p.with_sampling(temperature=1.0), byte_tok) for p in _prompts()]
    progs.append(compile(Prompt("x=") + slot("g", grammar='start: "a"+ "b"', max_tokens=4), byte_tok))
    engine = Engine(den, max_batch=8)
    seen: dict[int, list] = {i: [] for i in range(len(progs))}
    try:
        jobs = [engine.submit(p, seed=30 + i, on_step=seen[i].append) for i, p in enumerate(progs)]
        results = [j.future.result(timeout=120) for j in jobs]
    finally:
        engine.close()
    assert [j.row.device_state is not None for j in jobs] == [True, True, False]
    for i, (p, res) in enumerate(zip(progs, results)):
        alone = generate(den, p, generator=torch.Generator().manual_seed(30 + i))
        assert np.array_equal(res.canvas, alone.canvas)
        assert len(seen[i]) == res.steps
        assert np.array_equal(seen[i][-1].canvas, res.canvas)


def test_a_step_that_fails_leaves_its_rows_as_they_were(byte_tok, device_path, monkeypatch) -> None:
    """A device step whose read-back reports a failure changes no row (canvas on the device,
    counts on the host); the next step goes on from the same state. A shared step whose device
    half fails after the host half committed hands the host rows' steps to the caller (the engine
    passes them on instead of stepping those rows twice)."""
    from dlmprompt import DLMPromptError
    from dlmprompt.sampling.devicepath import DeviceRun
    from dlmprompt.sampling.rows import Row
    from dlmprompt.sampling.sampler import forward_step

    den = RandomDenoiser(byte_tok, seed=4)
    prog = compile(_prompts()[0].with_sampling(temperature=1.0), byte_tok)
    row = Row(0, prog, torch.Generator().manual_seed(0))
    run = DeviceRun(den, [row])
    run.step([row])
    before = (row.device_state.canvas.clone(), row.device_state.left, row.steps, row.block, row.canvas.copy())
    run.bad = torch.ones((), dtype=torch.bool)  # as if a slot's pass had found no completion
    with pytest.raises(DLMPromptError, match="internal error"):
        run.step([row])
    st = row.device_state
    assert torch.equal(st.canvas, before[0]) and (st.left, row.steps, row.block) == before[1:4]
    assert np.array_equal(row.canvas, before[4])
    run.bad = torch.zeros((), dtype=torch.bool)
    (step,) = run.step([row])
    assert np.all(before[4][step.committed] == prog.mask_id)
    while not row.done:
        run.step([row])
    # the failed step drew nothing either: the row ends as it does without the failure
    clean = Row(0, prog, torch.Generator().manual_seed(0))
    for _ in DeviceRun(den, [clean]).run(events=False):
        pass
    assert np.array_equal(row.canvas, clean.canvas)

    gram = compile(Prompt("x=") + slot("g", grammar='start: "a"+ "b"', max_tokens=4), byte_tok)
    dev_row, host_row = Row(0, prog, torch.Generator()), Row(1, gram, torch.Generator())

    def broken(self, rows, events=True):  # type: ignore[no-untyped-def]
        raise RuntimeError("device half failed")

    monkeypatch.setattr(DeviceRun, "step", broken)
    with pytest.raises(RuntimeError, match="device half failed") as info:
        forward_step(den, [dev_row, host_row])
    done = info.value.dlmprompt_steps  # type: ignore[attr-defined]
    assert list(done) == [id(host_row)] and done[id(host_row)].index == 0 and host_row.steps == 1
    assert dev_row.steps == 0

    # an exception object raised again must not carry the steps of an earlier failure
    shared = RuntimeError("model down")

    class Down:
        tokenizer, mask_id = byte_tok, byte_tok.mask_id

        def __call__(self, ids, att):  # type: ignore[no-untyped-def]
            raise shared

    shared.dlmprompt_steps = done  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError, match="model down") as info:
        forward_step(Down(), [Row(0, prog, torch.Generator()), Row(1, gram, torch.Generator())])
    assert info.value.dlmprompt_steps == {}  # type: ignore[attr-defined]
