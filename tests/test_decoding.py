"""Diffusion-native decoding: adaptive slot length, low-confidence remasking and the
structure_first strategy. Each keeps every constraint exact (property-tested with random
logits, aggressive settings), and each does what it says (a slot grows when the model wants
more room, a finished value's pad tail leaves the forward pass, committed tokens go back to the
mask, structure is committed before words)."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest
import torch
from helpers import check_result
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import compile_or_skip, sampling_settings, slot_parts

import dlmprompt.sampling.adaptive as adaptive
from dlmprompt import Prompt, Remask, SpecError, Tokenizer, compile, generate, sample, slot
from dlmprompt.sampling import devicepath
from dlmprompt.sampling.remasking import structural_tokens
from dlmprompt.sampling.rows import Row
from dlmprompt.testing import RandomDenoiser

TOK = Tokenizer.bytes_level()
EAGER = Remask(below=1.0, per_step=3, budget=1.0)  # remask whatever it may


@contextmanager
def small_windows(start: int = 2):  # type: ignore[no-untyped-def]
    """Adaptive slots start at ``start`` positions, so short test slots grow too."""
    old = adaptive.ADAPTIVE_START
    adaptive.ADAPTIVE_START = start
    try:
        yield
    finally:
        adaptive.ADAPTIVE_START = old


class Wants(RandomDenoiser):
    """Random logits plus a strong wish for pad at slot offsets >= ``stop_at`` of every masked run
    (an answer of ``stop_at`` tokens), or never (``stop_at=None``)."""

    def __init__(self, tok: Tokenizer, stop_at: int | None, **kw) -> None:  # type: ignore[no-untyped-def]
        super().__init__(tok, **kw)
        self.stop_at = stop_at

    def __call__(self, ids, att):  # type: ignore[no-untyped-def]
        out = super().__call__(ids, att)
        pad = self.tokenizer.pad_id
        out[..., pad] -= 20.0
        out[..., ord("a")] += 30.0
        if self.stop_at is not None:
            # the slot is the run after the anchor "=": pad from stop_at on
            for i in range(ids.shape[0]):
                row = ids[i].tolist()
                if ord("=") in row:
                    k = row.index(ord("=")) + 1 + self.stop_at
                    out[i, k:, pad] += 60.0
        return out


@st.composite
def programs(draw):  # type: ignore[no-untyped-def]
    lengths = st.one_of(
        st.integers(1, 12).map(lambda n: {"max_tokens": n}), st.integers(1, 6).map(lambda n: {"tokens": n})
    )
    parts = draw(slot_parts(lengths))
    sampling = draw(sampling_settings())
    sampling["length"] = draw(st.sampled_from(["fixed", "adaptive", "adaptive"]))
    sampling["remask"] = draw(st.sampled_from([None, True, EAGER]))
    if draw(st.booleans()):
        sampling["strategy"] = "structure_first"
    prompt = Prompt(*parts).with_sampling(**sampling)
    if draw(st.booleans()):
        prompt = prompt.with_guidance(cfg_scale=1.5)
    return compile_or_skip(prompt, TOK)


@settings(max_examples=120)
@given(data=st.data())
def test_adaptive_length_remasking_and_structure_first_keep_constraints_exact(data) -> None:  # type: ignore[no-untyped-def]
    prog = data.draw(programs())
    seed = data.draw(st.integers(0, 2**31))
    den = RandomDenoiser(TOK, seed=seed, scale=data.draw(st.sampled_from([0.5, 3.0, 12.0])))
    with small_windows(data.draw(st.sampled_from([1, 2, 3]))):
        res = generate(den, prog, generator=torch.Generator().manual_seed(seed))
    check_result(prog, res)
    assert res.canvas_positions > 0


def _free(n: int = 48, length: str = "adaptive", **kw):  # type: ignore[no-untyped-def]
    return compile((Prompt("x=") + slot("v", max_tokens=n) + ";").with_sampling(length=length, **kw), TOK)


def test_a_slot_grows_while_the_model_wants_more_room() -> None:
    prog = _free(48, tokens_per_step=1)
    with small_windows(4):
        res = generate(Wants(TOK, None), prog, generator=torch.Generator().manual_seed(0))
        row = Row(0, prog, torch.Generator())
        assert row.window == {0: 4}  # starts short: the rest is out of the forward pass
        assert len(row.view()) == len(prog.layout) - 44
    check_result(prog, res)
    assert res["v"] == "a" * 48  # never ready to end: grew 4 -> 8 -> ... -> 48


def test_a_short_answer_costs_a_fraction_of_a_long_slot() -> None:
    """max_tokens=256, answers of 12 tokens: the adaptive canvas processes far fewer positions
    than the fixed one, for the same answer."""
    got = {}
    for length in ("fixed", "adaptive"):
        prog = _free(256, length=length, tokens_per_step=2)
        got[length] = generate(Wants(TOK, 12), prog, generator=torch.Generator().manual_seed(0))
        check_result(prog, got[length])
    assert got["fixed"]["v"] == got["adaptive"]["v"] == "a" * 12
    assert got["adaptive"].canvas_positions * 3 < got["fixed"].canvas_positions
    # every pass of the fixed canvas has all 256 slot positions; the adaptive one never more than 32
    assert got["fixed"].canvas_positions == got["fixed"].forward_passes * len(got["fixed"].program.layout)
    anchors = len(got["adaptive"].program.layout) - 256
    assert got["adaptive"].canvas_positions <= got["adaptive"].forward_passes * (anchors + 32)


def test_a_finished_values_pad_tail_leaves_the_forward_pass() -> None:
    prog = _free(24)
    seen = []

    class Record(Wants):
        def __call__(self, ids, att):  # type: ignore[no-untyped-def]
            seen.append(int(att.sum()))
            return super().__call__(ids, att)

    res = generate(Record(TOK, 5), prog, generator=torch.Generator().manual_seed(0))
    check_result(prog, res)
    assert res["v"] == "aaaaa"
    assert seen[0] == len(prog.layout)  # 24 <= ADAPTIVE_START: the whole slot at first
    assert res.canvas_positions == sum(seen)


def test_the_device_path_leaves_adaptive_remasking_and_structure_first_rows_to_the_host(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("DLMPROMPT_SAMPLER", "device")
    den = RandomDenoiser(TOK)
    assert devicepath.eligible(den, [Row(0, _free(8, length="fixed", steps=4), torch.Generator())])
    assert devicepath.eligible(den, [Row(0, _free(8, steps=4), torch.Generator())])  # fits its window
    for n, kw in ((48, {}), (8, {"remask": True}), (8, {"strategy": "structure_first"})):
        assert not devicepath.eligible(den, [Row(0, _free(n, steps=4, **kw), torch.Generator())])


def _regressions(prog, den, seed: int = 0) -> int:  # type: ignore[no-untyped-def]
    """Positions that went from a committed token back to the mask during a run."""
    before = prog.layout.canvas.copy()
    n = 0
    for step in sample(den, prog, generator=torch.Generator().manual_seed(seed)):
        n += int(((before != prog.mask_id) & (step.canvas == prog.mask_id)).sum())
        before = step.canvas
    return n


def test_remasking_returns_committed_tokens_to_the_mask_within_its_budget() -> None:
    p = Prompt("id: ") + slot("a", regex=r"[a-c]{6}", tokens=6) + " n: " + slot("b", regex=r"\d{2,5}", max_tokens=6)
    den = RandomDenoiser(TOK, seed=3, scale=0.5)  # unsure everywhere: low confidences
    off = compile(p.with_sampling(tokens_per_step=2), TOK)
    on = compile(p.with_sampling(tokens_per_step=2, remask=Remask(below=1.0, per_step=2, budget=0.5)), TOK)
    assert _regressions(off, den) == 0
    n = _regressions(on, den)
    assert 0 < n <= int(0.5 * 12)  # the budget: half of the 12 slot positions
    res = generate(den, on, generator=torch.Generator().manual_seed(0))
    check_result(on, res)


def test_remasking_leaves_grammar_slots_and_anchors_alone() -> None:
    p = (
        Prompt("e: ")
        + slot("e", grammar='start: "(" start ")" | "x"', max_tokens=9)
        + " w: "
        + slot("w", regex="[ab]{4}", tokens=4)
    )
    prog = compile(p.with_sampling(tokens_per_step=1, remask=EAGER), TOK)
    e = prog.slot("e")
    before = prog.layout.canvas.copy()
    for step in sample(RandomDenoiser(TOK, seed=1, scale=0.5), prog, generator=torch.Generator().manual_seed(1)):
        back = (before != prog.mask_id) & (step.canvas == prog.mask_id)
        assert not back[e.start : e.stop].any()
        before = step.canvas
    res = generate(RandomDenoiser(TOK, seed=1, scale=0.5), prog, generator=torch.Generator().manual_seed(1))
    check_result(prog, res)


def test_structure_first_commits_punctuation_before_words() -> None:
    """A schema slot with optional properties: under structure_first the structural tokens (quotes,
    colons, commas, braces, the pad ending a value) of the value spans are committed before the
    words, on average."""
    schema = {
        "type": "object",
        "properties": {"a": {"type": "string"}, "b": {"type": "integer"}},
        "additionalProperties": False,
    }
    struct = structural_tokens(TOK)
    order = {}
    for strategy in ("low_confidence", "structure_first"):
        prog = compile(
            (Prompt("r: ") + slot("r", schema=schema, max_tokens=8)).with_sampling(
                tokens_per_step=1, strategy=strategy
            ),
            TOK,
        )
        ranks_s, ranks_w = [], []
        for seed in range(6):
            i = 0
            for step in sample(RandomDenoiser(TOK, seed=seed), prog, generator=torch.Generator().manual_seed(seed)):
                for t in step.tokens:
                    (ranks_s if struct[int(t)] else ranks_w).append(i)
                    i += 1
            res = generate(RandomDenoiser(TOK, seed=seed), prog, generator=torch.Generator().manual_seed(seed))
            check_result(prog, res)
        order[strategy] = np.mean(ranks_s) - np.mean(ranks_w)
    assert order["structure_first"] < order["low_confidence"]
    assert order["structure_first"] < 0


def test_sampling_options_are_checked_with_what_to_change() -> None:
    p = Prompt("x") + slot("v", max_tokens=4)
    assert p.with_sampling(remask=True).sampling.remask == Remask()
    assert p.with_sampling(remask="low_confidence").sampling.remask == Remask()
    assert p.with_sampling(remask="off").sampling.remask is None
    assert p.with_sampling(remask={"below": 0.2}).sampling.remask.below == 0.2  # type: ignore[union-attr]
    with pytest.raises(SpecError, match=r"fixed.*adaptive"):
        p.with_sampling(length="short")
    with pytest.raises(SpecError, match="below"):
        p.with_sampling(remask={"below": 2.0})
    with pytest.raises(SpecError, match="structure_first"):
        p.with_sampling(strategy="structure")


@settings(max_examples=60)
@given(data=st.data())
def test_settled_positions_hold_their_final_token(data) -> None:  # type: ignore[no-untyped-def]
    """``Step.settled`` is what a stream may send: under adaptive length and remasking, every
    position a step calls settled holds, in that step, the token the finished canvas holds
    (the chat stream of the OpenAI API sends up to the first unsettled position)."""
    prog = data.draw(programs())
    seed = data.draw(st.integers(0, 2**31))
    den = RandomDenoiser(TOK, seed=seed, scale=data.draw(st.sampled_from([0.5, 3.0])))
    with small_windows(data.draw(st.sampled_from([1, 2]))):
        steps = list(sample(den, prog, generator=torch.Generator().manual_seed(seed)))
    final = steps[-1].canvas
    for s in steps:
        settled = s.canvas != prog.mask_id if s.settled is None else s.settled
        assert np.array_equal(s.canvas[settled], final[settled])
