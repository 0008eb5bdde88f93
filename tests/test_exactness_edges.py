"""Regressions for the numerics of exact sampling: tiny class masses, greedy decoding, tiny
temperatures, and clear errors for malformed denoisers and arguments."""

from __future__ import annotations

import pytest
import torch

from dlmprompt import BackendError, Prompt, SpecError, compile, generate, slot

pytestmark = pytest.mark.usefixtures("both_paths")  # host and device sampler paths


class TableDenoiser:
    """Every position gets the same logits: ``default`` except for the given bytes."""

    name = "table"

    def __init__(self, tok, table: dict[str, float], default: float = 0.0) -> None:
        self.tokenizer = tok
        self.mask_id = tok.mask_id
        self.table = table
        self.default = default

    def __call__(self, ids, att):
        out = torch.full((*ids.shape, self.tokenizer.vocab_size), self.default)
        for ch, value in self.table.items():
            out[..., ord(ch)] = value
        return out


def _first(tok, pattern: str, table: dict[str, float], temperature: float, seeds: int = 1, default: float = 0.0):
    prog = compile(Prompt("v=", slot("v", regex=pattern, tokens=2)).with_sampling(temperature=temperature), tok)
    den = TableDenoiser(tok, table, default)
    return [generate(den, prog, generator=torch.Generator().manual_seed(s))["v"] for s in range(seeds)]


@pytest.mark.parametrize("preferred", ["7a", "3b"])
def test_tiny_class_masses_keep_their_relative_weight(byte_tok, preferred) -> None:
    # the model wants 'x' (forbidden); of the allowed first characters, the preferred one is e^30
    # times likelier than the other (both orders: a floor that ties them would pick by class order)
    good, bad = preferred[0], "3" if preferred[0] == "7" else "7"
    table = {"x": 100.0, good: -30.0, bad: -60.0, "a": -30.0, "b": -30.0}
    outs = _first(byte_tok, "7a|3b", table, temperature=0.2, seeds=40, default=-1e4)
    assert outs.count(preferred) == 40
    # at temperature 1 both class masses underflow float32 (e^-130): they still stay apart
    outs = _first(byte_tok, "7a|3b", table, temperature=1.0, seeds=40, default=-1e4)
    assert outs.count(preferred) == 40


def test_greedy_follows_the_model_beyond_float_underflow(byte_tok) -> None:
    table = {"x": 100.0, "3": -120.0, "7": -200.0, "a": -100.0, "b": -100.0}
    assert _first(byte_tok, "7a|3b", table, temperature=0.0, default=-1e4) == ["3b"]


def test_greedy_does_not_depend_on_how_tokens_group_into_classes(byte_tok) -> None:
    # ten digits at ~0.07 each, 'x' at ~0.31: the single most likely valid value is "xa"
    table = {d: 0.0 for d in "0123456789"} | {"x": 1.5, "a": 3.0}
    assert _first(byte_tok, "[0-9]a|xa", table, 0.0, default=-50.0) == ["xa"]
    assert _first(byte_tok, "([0-9]|x)a", table, 0.0, default=-50.0) == ["xa"]


@pytest.mark.parametrize("temperature", [1e-9, 1e-4, 0.05])
def test_tiny_temperature_with_huge_logits(byte_tok, temperature) -> None:
    table = {"7": float("inf"), "3": 60.0, "a": 60.0, "b": 1e30}
    outs = _first(byte_tok, "7a|3b", table, temperature=temperature, seeds=3)
    assert set(outs) <= {"7a", "3b"}


def test_malformed_arguments_raise_clear_errors(byte_tok) -> None:
    with pytest.raises(SpecError, match="slot 'c'"):
        slot("c", choice=[1, 2], tokens=1)
    with pytest.raises(SpecError, match="slot 'r'"):
        slot("r", regex=5, tokens=1)
    prog = compile(Prompt("x", slot("a", tokens=1)), byte_tok)
    den = TableDenoiser(byte_tok, {})
    with pytest.raises(ValueError, match="generator= takes"):
        generate(den, prog, generator=0)

    class Output:
        def __init__(self, logits):
            self.logits = logits

    class HFLike(TableDenoiser):
        def __call__(self, ids, att):
            return Output(super().__call__(ids, att))

    with pytest.raises(BackendError, match=r"return its \.logits"):
        generate(HFLike(byte_tok, {}), prog)


def test_batch_of_programs_for_different_tokenizers_is_refused(byte_tok) -> None:
    from dlmprompt import Tokenizer

    other = Tokenizer.bytes_level(["xyz"])
    with pytest.raises(BackendError, match="same tokenizer"):
        generate(
            TableDenoiser(byte_tok, {}),
            [compile(Prompt("x", slot("a", tokens=1)), byte_tok), compile(Prompt("x", slot("a", tokens=1)), other)],
        )
