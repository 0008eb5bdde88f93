from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import dlmprompt as d
from dlmprompt import CompileError, Prompt, Tokenizer, compile, slot


def test_layout_positions_and_ids(byte_tok: Tokenizer) -> None:
    p = Prompt("Name: ") + slot("name", max_tokens=4) + "\nAge: " + slot("age", regex=r"[0-9]+", max_tokens=3)
    prog = compile(p, byte_tok)
    lay = prog.layout
    bos = [byte_tok.bos_id]
    head = bos + byte_tok.encode("Name: ")
    assert lay.canvas[: len(head)].tolist() == head
    name, age = prog.slots
    assert (name.start, name.length) == (len(head), 4)
    assert lay.canvas[name.start : name.stop].tolist() == [byte_tok.mask_id] * 4
    assert lay.slot_of[name.start : name.stop].tolist() == [0] * 4
    assert lay.canvas[name.stop : age.start].tolist() == byte_tok.encode("\nAge: ")
    assert age.stop == len(lay)
    # prompt anchors: before the first slot (BOS excluded)
    assert lay.prompt.tolist() == [False] + [True] * 6 + [False] * (len(lay) - 7)
    assert prog.schedule.blocks == ((name.start, age.stop),)
    # no schedule given: the confidence threshold of DEFAULT_THRESHOLD; one per step on request
    from dlmprompt.compiler import DEFAULT_THRESHOLD

    assert prog.schedule.threshold == DEFAULT_THRESHOLD and prog.schedule.steps is None
    assert compile(p, byte_tok, tokens_per_step=1).schedule.counts == ((1,) * 7,)
    assert compile(p, byte_tok, steps=3).schedule.threshold is None


def test_compile_is_cached_and_keyed_by_options(byte_tok: Tokenizer) -> None:
    p = Prompt("x") + slot("a", regex="[ab]+", max_tokens=3)
    assert compile(p, byte_tok) is compile(Prompt.from_json(p.model_dump_json()), byte_tok)
    assert compile(p, byte_tok, steps=2) is not compile(p, byte_tok)
    assert compile(p, byte_tok, steps=2).schedule.counts == ((2, 1),)


def test_anchor_text_is_merged_and_canonical(qwen_tok: Tokenizer) -> None:
    # two adjacent anchors tokenize as one text, as the model saw such text in training
    p = Prompt("Hello", " world", slot("a", tokens=1))
    prog = compile(p, qwen_tok)
    assert prog.layout.canvas[: prog.slots[0].start].tolist() == qwen_tok.encode("Hello world")


def test_schedules(byte_tok: Tokenizer) -> None:
    p = Prompt("q", slot("a", tokens=5), "mid", slot("b", tokens=5))
    s = compile(p, byte_tok, block_length=4, steps=6).schedule
    assert all(
        sum(c) == int(((compile(p, byte_tok).layout.slot_of[a:z]) >= 0).sum()) for (a, z), c in zip(s.blocks, s.counts)
    )
    assert sum(len(c) for c in s.counts) >= 4
    t = compile(p, byte_tok, tokens_per_step=3).schedule
    assert t.counts == ((3, 3, 3, 1),)
    th = compile(p, byte_tok, threshold=0.9).schedule
    assert th.threshold == 0.9 and th.steps is None


def test_compile_imports_no_torch() -> None:
    code = (
        "import sys, dlmprompt as d\n"
        "tok = d.Tokenizer.bytes_level()\n"
        "p = d.Prompt('Age: ') + d.slot('age', regex='[0-9]+', max_tokens=3)\n"
        "p = p + d.slot('c', choice=['a', 'b'], tokens=1)\n"
        "d.compile(p, tok)\n"
        "from dlmprompt.tokenizer import qwen25_tokenizer\n"
        "d.compile(p, qwen25_tokenizer())\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


@pytest.mark.parametrize(
    ("prompt", "options", "match", "slot_name"),
    [
        (
            Prompt("x", slot("age", regex="[0-9", tokens=2)),
            {},
            "invalid regex: unterminated character set at position 0",
            "age",
        ),
        (Prompt("x", slot("age", regex="(?=1)[0-9]", tokens=2)), {}, "lookahead", "age"),
        (Prompt("x", slot("age", regex=r"(a)\1", tokens=2)), {}, "back-references", "age"),
        (Prompt("x", slot("age", regex=r"a\bb", tokens=2)), {}, "anchors", "age"),
        (Prompt("x", slot("c", choice=[], tokens=2)), {}, "empty", "c"),
        (Prompt("x", slot("age", regex="[0-9]{5}", max_tokens=2)), {}, "needs at least 3 tokens", "age"),
        (Prompt("x", slot("age", regex="[0-9]{5}", tokens=2)), {}, "use tokens=3 or more", "age"),
        (
            Prompt("x", slot("w", choice=["abc"], tokens=4)),
            {},
            r"no value of exactly 4 tokens; lengths that work up to 4: \[1, 2, 3\]",
            "w",
        ),
        (Prompt("x", slot("e", regex="[^\\s\\S]", max_tokens=3)), {}, "matches no string", "e"),
        (Prompt("x", slot("a", tokens=2)), {"colour": 1}, "unknown compile option", None),
        (Prompt("x", slot("a", tokens=2)), {"strategy": "best"}, "bad sampling option", None),
        (Prompt("x", slot("a", tokens=2)), {"cfg_scale": -1}, "cfg_scale must be >= 0", None),
        (Prompt("x"), {}, "no slot", None),
    ],
)
def test_compile_errors_name_slot_and_fix(byte_tok, prompt, options, match, slot_name) -> None:
    with pytest.raises(CompileError, match=match) as info:
        compile(prompt, byte_tok, **options)
    assert info.value.slot == slot_name
    if slot_name is not None:
        assert str(info.value).startswith(f"slot {slot_name!r}: ")


def test_vocabulary_that_cannot_spell_the_pattern() -> None:
    tok = Tokenizer([b"a", b"b", None, None], lambda s: [0] * len(s), mask_id=2, pad_id=3, name="ab-only")
    with pytest.raises(CompileError, match="cannot spell"):
        compile(Prompt("a", slot("x", regex="[0-9]", tokens=1)), tok)
    with pytest.raises(CompileError, match="cannot spell every option"):
        compile(Prompt("a", slot("x", choice=["c"], tokens=1)), tok)


def test_tokenizer_without_pad_needs_exact_length() -> None:
    tok = Tokenizer([b"a", b"b", None], lambda s: [0] * len(s), mask_id=2)
    with pytest.raises(CompileError, match="needs a pad token"):
        compile(Prompt("a", slot("x", max_tokens=2)), tok)
    prog = compile(Prompt("a", slot("x", tokens=2)), tok)
    assert prog.pad_id is None


def test_tokenizer_without_mask_is_refused() -> None:
    tok = Tokenizer([b"a", b"b"], lambda s: [0] * len(s))
    with pytest.raises(d.TokenizerError, match="no mask token"):
        compile(Prompt("a", slot("x", tokens=2)), tok)


def test_automaton_classes_at_qwen_size(qwen_tok: Tokenizer) -> None:
    prog = compile(Prompt("x", slot("s", regex=r'"([^"\\\x00-\x1f]|\\["\\/bfnrt])*"', max_tokens=8)), qwen_tok)
    auto = prog.slots[0].automaton
    assert auto.token_class.shape == (qwen_tok.vocab_size,)
    # a handful of classes stand for 151k tokens
    assert auto.n_classes < 100
    assert auto.token_class[qwen_tok.mask_id] == -1 and auto.token_class[qwen_tok.eos_id] == auto.pad_class
    quote = qwen_tok.encode('"')[0]
    assert auto.step(auto.start, quote) >= 0
    assert auto.accepts(qwen_tok.encode('"hi there"')) and not auto.accepts(qwen_tok.encode('"hi'))
    assert np.all(auto.next_state < auto.n_states)


def test_backslash_d_means_ascii_digits(qwen_tok: Tokenizer) -> None:
    """As in JSON Schema patterns: structured output wants 0-9, whatever Unicode version."""
    auto = compile(Prompt("n=", slot("n", regex=r"\d+", max_tokens=4)), qwen_tok).slots[0].automaton
    assert auto.accepts(qwen_tok.encode("42") + [qwen_tok.pad_id] * 2)
    for text in ["٣", "७", "𞓱"]:
        assert not auto.accepts(qwen_tok.encode(text)), text
    neg = compile(Prompt("n=", slot("n", regex=r"\D", tokens=1)), qwen_tok).slots[0].automaton
    assert not neg.accepts(qwen_tok.encode("7")) and neg.accepts(qwen_tok.encode("x"))


def test_unique_rows_groups_exactly_and_keeps_the_projection_order() -> None:
    """Token classes come from ``_unique_rows``: every row maps to an equal distinct row, the
    distinct rows are all different, and they come in the order of the fixed projection (class
    numbers, and with them seeded draws, do not depend on the process's hash seed)."""
    import numpy as np

    from dlmprompt.constraints.automaton import _projection, _unique_rows

    rng = np.random.default_rng(3)
    for trial in range(100):
        base = rng.integers(-1, 6, size=(int(rng.integers(1, 30)), int(rng.integers(1, 40)))).astype(np.int32)
        a = base[rng.integers(0, len(base), size=int(rng.integers(1, 400)))]
        if trial % 3 == 0:
            a = a[:, ::2]  # not contiguous
        uniq, inverse = _unique_rows(a)
        assert np.array_equal(uniq[inverse], a)
        assert len(np.unique(uniq, axis=0)) == len(uniq)
        key = _projection(uniq)
        if len(np.unique(key)) == len(key):
            assert (key[1:] > key[:-1]).all()
        else:  # a projection collision: np.unique's own order
            assert np.array_equal(uniq, np.unique(a, axis=0))
