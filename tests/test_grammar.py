"""Lark grammar slots: every output is parsed by lark (an independent check), never truncated, and
always closes within its length, whatever the model prefers."""

from __future__ import annotations

import lark
import pytest
import torch
from helpers import check_result
from hypothesis import given
from hypothesis import strategies as st

from dlmprompt import CompileError, GrammarError, Prompt, Tokenizer, compile, generate, slot
from dlmprompt.testing import RandomDenoiser, ScriptedDenoiser

ARITH = r"""
start: expr
expr: term (("+" | "-") term)*
term: NUMBER | "(" expr ")"
NUMBER: /[0-9]+/
"""

JSON_SUBSET = r"""
start: value
value: object | array | STRING | NUMBER | "true" | "false" | "null"
object: "{" [pair ("," pair)*] "}"
pair: STRING ":" value
array: "[" [value ("," value)*] "]"
STRING: /"[a-z ]*"/
NUMBER: /-?[0-9]+/
"""

PROGRAM = r"""
start: stmt+
stmt: NAME "=" expr ";"
expr: atom (OP atom)*
atom: NAME | NUMBER | "(" expr ")"
OP: "+" | "-" | "*"
NAME: /[a-z_][a-z0-9_]*/
NUMBER: /[0-9]+/
%ignore " "
"""

GRAMMARS = {"arith": ARITH, "json": JSON_SUBSET, "program": PROGRAM}
PARSERS = {k: lark.Lark(g) for k, g in GRAMMARS.items()}

TOK = Tokenizer.bytes_level(['{"', '":', "+(", "10", "true", "null", " = ", "x_", ";\n"])


def _prompt(kind: str, n: int, temperature: float = 1.0) -> Prompt:
    return (
        Prompt("Input: ")
        + slot("g", grammar=GRAMMARS[kind], max_tokens=n)
        + "\nTag: "
        + slot("tag", regex="[A-Z]{2}", max_tokens=3)
    ).with_sampling(temperature=temperature)


@pytest.mark.parametrize("kind", sorted(GRAMMARS))
def test_random_models_always_give_sentences(kind) -> None:
    lengths = set()
    for seed in range(12):
        n = 6 + seed % 4 * 5
        prog = compile(_prompt(kind, n), TOK)
        den = RandomDenoiser(TOK, seed=seed, scale=1.0 + seed % 3)
        res = generate(den, prog, generator=torch.Generator().manual_seed(seed))
        check_result(prog, res)  # anchors, pads, the regex slot; the grammar slot's tokens are text
        text = res["g"]
        PARSERS[kind].parse(text)  # raises if not a whole sentence
        assert len(res.captures["g"].tokens) <= n
        lengths.add(len(res.captures["g"].tokens))
    assert len(lengths) > 2  # the model's choices matter, not only the witness


@given(seed=st.integers(0, 2**30), kind=st.sampled_from(sorted(GRAMMARS)), extra=st.integers(0, 8))
def test_tight_budgets_still_close(seed, kind, extra) -> None:
    witness = len(compile(_prompt(kind, 40), TOK).slots[0].grammar.witness)
    prog = compile(_prompt(kind, witness + extra), TOK)
    res = generate(
        RandomDenoiser(TOK, seed=seed % 1000, scale=4.0), prog, generator=torch.Generator().manual_seed(seed)
    )
    PARSERS[kind].parse(res["g"])


def test_an_adversarial_model_that_never_wants_to_stop() -> None:
    """The model always prefers "1+" (never the pad): the slot still closes, with a sentence."""
    plus_open = TOK.encode("+(")[0]
    one = TOK.encode("1")[0]
    den = ScriptedDenoiser(TOK, lambda row, j: plus_open if j % 2 else one, strength=30.0)
    for n in (1, 2, 5, 9):
        prog = compile(Prompt("E: ") + slot("g", grammar=ARITH, max_tokens=n), TOK)
        res = generate(den, prog)
        PARSERS["arith"].parse(res["g"])


def test_confident_tokens_commit_several_per_pass() -> None:
    target = TOK.encode("12+34")
    prog = compile(Prompt("E: ") + slot("g", grammar=ARITH, max_tokens=8), TOK)
    a = prog.slots[0].start
    den = ScriptedDenoiser(TOK, lambda row, j: target[j - a] if a <= j < a + len(target) else TOK.pad_id, strength=30.0)
    res = generate(den, prog)
    assert res["g"] == "12+34"
    assert res.forward_passes == 1  # the whole sentence and its pad tail in one pass


def test_grammar_errors_name_line_and_column() -> None:
    with pytest.raises(GrammarError) as info:
        compile(Prompt("x") + slot("g", grammar='start: "a" b\n', max_tokens=4), TOK)
    assert "'g'" in str(info.value)
    with pytest.raises(GrammarError) as info:
        compile(Prompt("x") + slot("g", grammar='start: ("a" \nfoo: "b"\n', max_tokens=4), TOK)
    assert info.value.line is not None and info.value.excerpt
    with pytest.raises(CompileError, match="use max_tokens=5 or more"):
        compile(Prompt("x") + slot("g", grammar='start: "abcde"\n', max_tokens=2), Tokenizer.bytes_level())


def test_grammar_slots_batch_with_other_layouts() -> None:
    progs = [compile(_prompt(k, 12), TOK) for k in sorted(GRAMMARS)]
    results = generate(RandomDenoiser(TOK, seed=3), progs, generator=torch.Generator().manual_seed(0))
    for k, prog, res in zip(sorted(GRAMMARS), progs, results):
        check_result(prog, res)
        PARSERS[k].parse(res["g"])


def test_grammar_slot_on_the_qwen_vocabulary(qwen_tok) -> None:
    prog = compile(Prompt("Code:\n") + slot("g", grammar=PROGRAM, max_tokens=12), qwen_tok)
    for seed in range(2):
        den = RandomDenoiser(qwen_tok, seed=seed, scale=2.0)
        res = generate(den, prog.spec.with_sampling(temperature=1.0), generator=torch.Generator().manual_seed(seed))
        PARSERS["program"].parse(res["g"])
