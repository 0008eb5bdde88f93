from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import check_result
from hypothesis import given, settings
from hypothesis import strategies as st
from test_properties import programs

from dlmprompt import BackendError, Prompt, Tokenizer, compile, generate, sample, slot
from dlmprompt.testing import RandomDenoiser, ScriptedDenoiser

pytestmark = pytest.mark.usefixtures("both_paths")  # host and device sampler paths


@settings(max_examples=40)
@given(data=st.data())
def test_batch_of_mixed_layouts_equals_one_by_one(byte_tok, data) -> None:
    progs = [data.draw(programs(byte_tok)) for _ in range(data.draw(st.integers(2, 4)))]
    seed = data.draw(st.integers(0, 10_000))
    den = RandomDenoiser(byte_tok, seed=seed)
    g = torch.Generator().manual_seed(seed)
    batch = generate(den, progs, generator=g)
    g = torch.Generator().manual_seed(seed)
    alone = [generate(den, p, generator=g) for p in progs]
    for b, a, p in zip(batch, alone, progs):
        check_result(p, b)
        assert np.array_equal(b.canvas, a.canvas)
        assert b.steps == a.steps and b.forward_passes == a.forward_passes


def test_batch_shares_forward_passes(byte_tok) -> None:
    progs = [
        compile(Prompt("a: ", slot("x", regex="[0-9]+", max_tokens=4)), byte_tok),
        compile(
            Prompt("longer prompt: ", slot("y", choice=["yes", "no"], max_tokens=3), "!", slot("z", tokens=5)), byte_tok
        ),
    ]
    den = RandomDenoiser(byte_tok)
    res = generate(den, progs, generator=torch.Generator().manual_seed(0))
    assert den.calls == max(r.steps for r in res)


def test_classifier_free_guidance_masks_only_prompt_anchors(byte_tok) -> None:
    seen: list[np.ndarray] = []

    class Spy(RandomDenoiser):
        def __call__(self, ids, att):
            seen.extend(ids.numpy().copy())
            return super().__call__(ids, att)

    p = Prompt("Q: hi", slot("a", tokens=2), " tail", slot("b", tokens=1)).with_guidance(cfg_scale=2.0)
    prog = compile(p, byte_tok)
    res = generate(Spy(byte_tok), prog, generator=torch.Generator().manual_seed(0))
    assert res.forward_passes == 2 * res.steps
    uncond = seen[1]
    lay = prog.layout
    assert (uncond[lay.prompt] == byte_tok.mask_id).all()
    assert lay.prompt.sum() == len(byte_tok.encode("Q: hi"))
    template = (lay.slot_of < 0) & ~lay.prompt
    assert np.array_equal(uncond[template], lay.canvas[template])  # BOS and " tail" stay visible


def test_guidance_changes_the_choice(byte_tok) -> None:
    """cond prefers 'b', uncond prefers 'a' much less; guidance amplifies cond - uncond."""
    p = Prompt("Q", slot("x", choice=["a", "b"], tokens=1))

    def prefer(row, j):
        return ord("a") if row[1] == byte_tok.mask_id else ord("b")

    res = generate(ScriptedDenoiser(byte_tok, prefer, strength=2.0), p.with_guidance(cfg_scale=3.0))
    assert res["x"] == "b"


def test_sample_yields_steps_and_generate_matches(byte_tok) -> None:
    p = Prompt("n=", slot("n", regex="[1-9][0-9]*", max_tokens=4), ";").with_sampling(steps=2, temperature=1.0)
    prog = compile(p, byte_tok)
    den = RandomDenoiser(byte_tok, seed=3)
    steps = list(sample(den, prog, generator=torch.Generator().manual_seed(5)))
    assert [s.index for s in steps] == [0, 1]
    assert sum(len(s.committed) for s in steps) == 4
    res = generate(den, prog, generator=torch.Generator().manual_seed(5))
    assert np.array_equal(steps[-1].canvas, res.canvas)
    assert res.text.startswith("n=") and res.text.endswith(";")


def test_generate_accepts_a_prompt_and_compiles_with_the_denoiser_tokenizer(byte_tok) -> None:
    res = generate(RandomDenoiser(byte_tok), Prompt("x", slot("a", choice=["yes"], tokens=3)))
    assert res["a"] == "yes" and res.values == {"a": "yes"}
    with pytest.raises(KeyError, match="no slot 'b'"):
        res["b"]


def test_mismatched_denoiser_is_refused(byte_tok) -> None:
    other = Tokenizer.bytes_level(["xyz"])
    prog = compile(Prompt("x", slot("a", tokens=1)), byte_tok)
    with pytest.raises(BackendError, match="mask id"):
        generate(RandomDenoiser(other), prog)

    class Short(RandomDenoiser):
        def __call__(self, ids, att):
            return super().__call__(ids, att)[..., :100]

    with pytest.raises(BackendError, match="scores 100 tokens"):
        generate(Short(byte_tok), prog)


def test_generator_argument_checked(byte_tok) -> None:
    prog = compile(Prompt("x", slot("a", tokens=1)), byte_tok)
    with pytest.raises(ValueError, match="one per program"):
        generate(RandomDenoiser(byte_tok), [prog, prog], generator=[torch.Generator()])


def test_model_with_larger_embedding_than_tokenizer(byte_tok) -> None:
    """Real checkpoints pad the vocabulary; ids past the tokenizer are never written."""
    prog = compile(Prompt("x", slot("a", tokens=6)), byte_tok)
    den = RandomDenoiser(byte_tok, vocab_size=byte_tok.vocab_size + 50, scale=10)
    res = generate(den, prog, generator=torch.Generator().manual_seed(0))
    assert (res.canvas < byte_tok.vocab_size).all()
    check_result(prog, res)


def test_minus_infinity_logits_still_give_valid_values(byte_tok) -> None:
    class NegInf(RandomDenoiser):
        def __call__(self, ids, att):
            out = super().__call__(ids, att)
            out[..., ord("0") : ord("9") + 1] = -torch.inf
            out[..., 5] = torch.nan
            return out

    prog = compile(Prompt("x", slot("a", regex="[0-9]{3}", tokens=3)), byte_tok)
    res = generate(NegInf(byte_tok), prog, generator=torch.Generator().manual_seed(0))
    check_result(prog, res)


def test_run_chains_draws_what_run_chain_draws_slot_by_slot() -> None:
    """The sampler's vectorised forward-backward over slots sharing an automaton gives the same
    classes and constrained weights as the per-slot reference, with committed tokens, pads,
    different slot lengths, sampling and greedy (max-product) modes."""
    from dlmprompt.constraints.automaton import regex_automaton
    from dlmprompt.sampling.chain import run_chain, run_chains

    tok = Tokenizer.bytes_level(["ab", "12", "a1"])
    rng = np.random.default_rng(0)
    for pat in [r"[a-z]+[0-9]{1,3}", r"(ab|a1)*x?", r"[0-9]+(\.[0-9]+)?", r"\"[A-Z][a-z]+( [A-Z][a-z]+)*\""]:
        auto = regex_automaton(pat, tok).with_pad(tok.pad_id)
        c_n = auto.n_classes
        lengths = np.nonzero(auto.feasible_lengths(10))[0]
        for trial in range(25):
            committed = []
            for _ in range(int(rng.integers(1, 5))):
                n = int(rng.choice(lengths[lengths > 0]))
                full = run_chain(
                    auto, np.full(n, -1), rng.normal(size=(n, c_n)), noise=rng.gumbel(size=(n, c_n)), want=None
                )
                c = full.classes.copy()
                c[rng.random(n) < 0.6] = -1  # a valid partial canvas
                committed.append(c)
            sizes = [int((c < 0).sum()) for c in committed]
            lp = [rng.normal(size=(m, c_n)) * 2 for m in sizes]
            conf = [x + rng.normal(size=x.shape) for x in lp]
            noise = [rng.gumbel(size=(m, c_n)) for m in sizes]
            for greedy in (False, True):
                use_conf = greedy or trial % 2 == 1
                got = run_chains(
                    auto,
                    committed,
                    np.concatenate(lp),
                    noise=None if greedy else np.concatenate(noise),
                    logP_conf=np.concatenate(conf) if use_conf else None,
                )
                ref = [
                    run_chain(
                        auto,
                        c,
                        lp[i],
                        noise=None if greedy else noise[i],
                        want=np.ones(sizes[i], bool),
                        logP_conf=conf[i] if use_conf else None,
                    )
                    for i, c in enumerate(committed)
                ]
                assert np.array_equal(got.classes, np.concatenate([r.classes for r in ref]))
                want_w = np.concatenate([r.logw if r.logw is not None else np.zeros((0, c_n)) for r in ref])
                np.testing.assert_allclose(got.logw, want_w, atol=1e-8)
