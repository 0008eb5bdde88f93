"""Property tests: for random regexes, choices, layouts, schedules and logits, every output
satisfies every slot constraint and leaves every anchor untouched."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import check_result
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import anchors, compile_or_skip, sampling_settings, slot_specs

from dlmprompt import Prompt, compile, generate, sample, slot
from dlmprompt.testing import RandomDenoiser, ScriptedDenoiser

pytestmark = pytest.mark.usefixtures("both_paths")  # host and device sampler paths


@st.composite
def programs(draw, tok):
    n_slots = draw(st.integers(1, 3))
    parts: list = []
    if draw(st.booleans()):
        parts.append(draw(anchors))
    for i in range(n_slots):
        kind, arg = draw(slot_specs(i))
        mode = draw(st.sampled_from(["at_most", "at_most", "exact"]))
        n = draw(st.integers(1, 8))
        kw = {"regex": arg} if kind == "regex" else {"choice": arg} if kind == "choice" else {}
        kw["max_tokens" if mode == "at_most" else "tokens"] = n
        parts.append(slot(f"s{i}", **kw))
        if draw(st.booleans()):
            parts.append(draw(anchors))
    length = draw(st.sampled_from(["fixed", "adaptive"]))
    prompt = Prompt(*parts).with_sampling(**draw(sampling_settings()), length=length)
    if draw(st.integers(0, 4)) == 0:
        prompt = prompt.with_guidance(cfg_scale=1.5)
    return compile_or_skip(prompt, tok)


@settings(max_examples=1200)
@given(data=st.data())
def test_every_output_satisfies_every_slot(byte_tok, data) -> None:
    prog = data.draw(programs(byte_tok))
    seed = data.draw(st.integers(0, 2**31))
    den = RandomDenoiser(byte_tok, seed=seed, scale=data.draw(st.sampled_from([0.5, 3.0, 12.0])))
    res = generate(den, prog, generator=torch.Generator().manual_seed(seed))
    check_result(prog, res)
    if prog.schedule.steps is not None:
        if prog.schedule.length == "fixed":
            assert res.steps == prog.schedule.steps
        else:  # adaptive: a finished value's pad tail is set, not committed step by step
            assert res.steps <= prog.schedule.steps
    assert res.forward_passes == res.steps * (2 if prog.schedule.cfg_scale > 0 else 1)


@settings(max_examples=500)
@given(data=st.data())
def test_adversarial_model_cannot_break_constraints(byte_tok, data) -> None:
    """A model that wants one fixed token everywhere (often invalid) still yields valid slots."""
    prog = data.draw(programs(byte_tok))
    want = data.draw(
        st.sampled_from([ord("x"), ord("a"), ord("0"), byte_tok.pad_id, byte_tok.mask_id, byte_tok.eos_id])
    )
    den = ScriptedDenoiser(byte_tok, lambda row, j: want, strength=data.draw(st.sampled_from([5.0, 60.0, 1e4])))
    res = generate(den, prog, generator=torch.Generator().manual_seed(1))
    check_result(prog, res)


@settings(max_examples=300)
@given(data=st.data())
def test_steps_commit_only_masked_slot_positions(byte_tok, data) -> None:
    prog = data.draw(programs(byte_tok))
    den = RandomDenoiser(byte_tok, seed=data.draw(st.integers(0, 1000)))
    filled = np.zeros(len(prog.layout), dtype=bool)
    block_of = np.full(len(prog.layout), -1)
    for b, (a, z) in enumerate(prog.schedule.blocks):
        block_of[a:z] = b
    last_block = 0
    n_steps = 0
    for step in sample(den, prog, generator=torch.Generator().manual_seed(0)):
        assert len(step.committed) >= 1
        assert (prog.layout.slot_of[step.committed] >= 0).all(), "an anchor was committed"
        assert not filled[step.committed].any(), "a position was committed twice"
        filled[step.committed] = True
        blocks = set(block_of[step.committed].tolist())
        assert len(blocks) == 1 and min(blocks) >= last_block, "semi-AR blocks out of order"
        last_block = min(blocks)
        assert ((step.confidences >= 0) & (step.confidences <= 1.0 + 1e-9)).all()
        assert np.array_equal(step.canvas[step.committed], step.tokens)
        n_steps += 1
        if prog.schedule.threshold is None and prog.schedule.length == "fixed":
            counts = [c for cs in prog.schedule.counts for c in cs]
            assert len(step.committed) == counts[step.index]
    if prog.schedule.length == "fixed":
        assert (filled == (prog.layout.slot_of >= 0)).all()
    else:  # adaptive: every slot position committed once, or pad after its value's end
        end = step.canvas
        assert (filled | ((prog.layout.slot_of >= 0) & (end == prog.pad_id)) == (prog.layout.slot_of >= 0)).all()
        assert not (filled & (prog.layout.slot_of < 0)).any()


@pytest.mark.parametrize("strategy", ["low_confidence", "margin", "entropy", "random"])
def test_confident_model_is_followed_where_valid(byte_tok, strategy) -> None:
    """Where the model's favourite text is valid, the constrained sampler writes exactly it."""
    target = "Ada 1815"
    prompt = Prompt("Name: ") + slot("name", regex=r"[A-Za-z]+ [0-9]{4}", tokens=len(target)) + "."
    prog = compile(prompt.with_sampling(strategy=strategy), byte_tok)
    start = prog.slots[0].start
    ids = [ord(c) for c in target]

    def prefer(row, j):
        return ids[j - start] if start <= j < start + len(ids) else 0

    res = generate(ScriptedDenoiser(byte_tok, prefer), prog, generator=torch.Generator().manual_seed(0))
    assert res["name"] == target
    assert res.text == "Name: Ada 1815."
