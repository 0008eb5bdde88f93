"""Guidance terms beyond CFG: phrase and token biases, avoided phrases, the copy bias, repetition,
frequency and presence penalties, per-slot scales, and OpenAI's logit_bias / penalties. Each
term moves the answer the way it says, and no term can break a constraint."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from helpers import check_result
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import compile_or_skip, sampling_settings, slot_parts

from dlmprompt import CompileError, Prompt, SpecError, Tokenizer, compile, generate, slot
from dlmprompt.testing import RandomDenoiser

TOK = Tokenizer.bytes_level()


def _run(prompt: Prompt, den=None, seed: int = 0):  # type: ignore[no-untyped-def]
    prog = compile(prompt, TOK)
    res = generate(den or RandomDenoiser(TOK, seed=seed), prog, generator=torch.Generator().manual_seed(seed))
    check_result(prog, res)
    return res


class WantsO(RandomDenoiser):
    """Random logits plus a strong wish for "o" everywhere."""

    def __call__(self, ids, att):  # type: ignore[no-untyped-def]
        out = super().__call__(ids, att)
        out[..., ord("o")] += 4.0
        return out


@st.composite
def guided_programs(draw):  # type: ignore[no-untyped-def]
    parts = draw(
        slot_parts(
            st.integers(1, 8).map(lambda n: {"max_tokens": n}),
            st.sampled_from([0.0, 0.5, 1.0, 3.0]).map(lambda g: {"guidance": g}),
        )
    )
    words = st.text(alphabet="abc01 é@.x", min_size=1, max_size=4)
    big = st.floats(-100, 100, allow_nan=False)
    terms = {
        "bias": draw(st.dictionaries(words, big, max_size=3)),
        "avoid": tuple(draw(st.lists(words, max_size=3))),
        "token_bias": draw(st.dictionaries(st.integers(1, 255), big, max_size=4)),
        "copy_from": draw(st.one_of(st.none(), words)),
        "copy_bias": draw(st.sampled_from([-50.0, 1.0, 50.0])),
        "repetition_penalty": draw(st.sampled_from([1.0, 1.3, 10.0])),
        "frequency_penalty": draw(st.sampled_from([-2.0, 0.0, 2.0])),
        "presence_penalty": draw(st.sampled_from([-2.0, 0.0, 2.0])),
        "cfg_scale": draw(st.sampled_from([0.0, 0.0, 1.5])),
    }
    prompt = Prompt(*parts).with_sampling(**draw(sampling_settings())).with_guidance(**terms)
    return compile_or_skip(prompt, TOK)


@settings(max_examples=200)
@given(data=st.data())
def test_no_guidance_term_can_break_a_constraint(data) -> None:  # type: ignore[no-untyped-def]
    prog = data.draw(guided_programs())
    seed = data.draw(st.integers(0, 2**31))
    den = RandomDenoiser(TOK, seed=seed, scale=data.draw(st.sampled_from([0.5, 3.0, 12.0])))
    res = generate(den, prog, generator=torch.Generator().manual_seed(seed))
    check_result(prog, res)


def test_biases_and_avoid_move_the_answer_their_way() -> None:
    ask = Prompt("City: ") + slot("city", choice=["London", "Paris", "Rome"], max_tokens=6)
    base = [_run(ask, seed=s)["city"] for s in range(12)]
    assert len(set(base)) > 1  # random logits pick different cities
    assert {_run(ask.with_guidance(bias={"Paris": 12.0}), seed=s)["city"] for s in range(12)} == {"Paris"}
    avoided = [_run(ask.with_guidance(avoid=["London", "Rome"], avoid_bias=-30), seed=s)["city"] for s in range(12)]
    assert set(avoided) == {"Paris"}
    only = Prompt("Code: ") + slot("c", regex="[a-z]{4}", tokens=4)
    assert _run(only.with_guidance(token_bias={ord("q"): 60.0}))["c"] == "qqqq"
    # avoiding every allowed token leaves the constraint satisfiable: guidance only reweights
    assert _run(only.with_guidance(avoid=list("abcdefghijklmnopqrstuvwxyz")))["c"].isalpha()


def test_the_copy_bias_pulls_toward_the_source() -> None:
    src = "zebra"
    ask = Prompt("Animal: ") + slot("a", regex="[a-z]{5}", tokens=5)
    plain = [_run(ask, seed=s)["a"] for s in range(8)]
    copied = [_run(ask.with_guidance(copy_from=src, copy_bias=8.0), seed=s)["a"] for s in range(8)]
    share = lambda xs: np.mean([c in src for x in xs for c in x])  # noqa: E731
    assert share(copied) > 0.95 > share(plain)


def test_penalties_cut_repetition() -> None:
    # a model that wants "o" at every position: "oooooooo" unless the penalties push back
    den = WantsO(TOK, scale=1.0)
    ask = Prompt("Word: ") + slot("w", regex="[a-z]{8}", tokens=8)
    assert _run(ask, den)["w"] == "oooooooo"
    for terms in ({"repetition_penalty": 10.0}, {"frequency_penalty": 2.0}, {"presence_penalty": 2.0}):
        word = _run(ask.with_guidance(**terms), den)["w"]
        assert word.count("o") < 8, (terms, word)
    assert _run(ask.with_guidance(frequency_penalty=2.0), den)["w"].count("o") <= 2


def test_a_slots_scale_turns_terms_off_or_up_there() -> None:
    ask = (
        Prompt("A: ")
        + slot("a", choice=["London", "Paris"], max_tokens=6, guidance=0.0)
        + " B: "
        + slot("b", choice=["London", "Paris"], max_tokens=6)
    )

    class Positional(RandomDenoiser):  # logits by position only: slot b's tokens cannot move slot a's
        def __call__(self, ids, att):  # type: ignore[no-untyped-def]
            g = torch.Generator().manual_seed(self.seed)
            return torch.randn(1, ids.shape[1], self.vocab_size, generator=g).expand(ids.shape[0], -1, -1) * 3.0

    plain = [_run(ask, Positional(TOK, seed=s)) for s in range(10)]
    guided = [_run(ask.with_guidance(bias={"Paris": 15.0}), Positional(TOK, seed=s)) for s in range(10)]
    plain = [(p["a"], p["b"]) for p in plain]
    assert len({a for a, _ in plain}) > 1
    assert [g["a"] for g in guided] == [a for a, _ in plain]  # scale 0: slot a is as without guidance
    assert {g["b"] for g in guided} == {"Paris"}
    with pytest.raises(SpecError, match="guidance= is a scale"):
        slot("x", max_tokens=2, guidance=-1.0)


def test_bad_terms_are_refused_with_what_to_change() -> None:
    ask = Prompt("x") + slot("a", max_tokens=2)
    with pytest.raises(SpecError, match="biases are finite, in \\[-100, 100\\]"):
        ask.with_guidance(bias={"a": 1e9})
    with pytest.raises(CompileError, match="token_bias names token 999"):
        compile(ask.with_guidance(token_bias={999: 1.0}), TOK)
    with pytest.raises(SpecError, match="repetition_penalty"):
        ask.with_guidance(repetition_penalty=0.5)


def test_openai_logit_bias_and_penalties_map_onto_guidance() -> None:
    from dlmprompt.serving.server import create_app

    with TestClient(create_app(WantsO(TOK, scale=1.0))) as c:
        body = {"model": "x", "prompt": "Code: ", "regex": "[a-z]{4}", "max_tokens": 4, "seed": 1}
        plain = c.post("/v1/completions", json=body).json()["choices"][0]["text"]
        biased = c.post("/v1/completions", json={**body, "logit_bias": {str(ord("q")): 60}})
        assert biased.status_code == 200 and biased.json()["choices"][0]["text"] == "qqqq" != plain
        assert plain == "oooo"  # what the model wants, unpenalized
        pen = c.post("/v1/completions", json={**body, "frequency_penalty": 2.0, "presence_penalty": 1.0})
        assert pen.status_code == 200 and pen.json()["choices"][0]["text"].count("o") < 4
        bads = [({"logit_bias": {"abc": 1}}, "not a token id"), ({"logit_bias": {"²": 1}}, "not a token id")]
        for bad, words in [*bads, ({"frequency_penalty": 5}, "less than")]:
            resp = c.post("/v1/completions", json={**body, **bad})
            assert resp.status_code == 400 and words in resp.json()["error"]["message"], resp.text
