"""The native regex -> byte DFA construction (dlmprompt.constraints.regexdfa) against Python's
``re`` on random regexes and strings, and the negated string enums it builds, through the compiled
slot, against the ``jsonschema`` package."""

from __future__ import annotations

import re

import jsonschema
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlmprompt import Prompt, compile, slot
from dlmprompt.compiler import json_accepts
from dlmprompt.constraints.regexdfa import Unsupported, build_byte_dfa, utf8_sequences

CHARS = "ab\n é☃😀"


def _matches(dfa: tuple[np.ndarray, int, np.ndarray], text: str) -> bool:
    table, state, accept = dfa
    for b in text.encode():
        state = int(table[state, b])
    return bool(accept[state])


atoms = st.sampled_from(["a", "b", "é", "☃", "😀", ".", "[ab]", "[^a]", "[a-é]", r"\w", r"\s", r"[\s\S]", r"\x20"])


def _regex(kids: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return (
        st.builds(lambda a, b: a + b, kids, kids)
        | st.builds(lambda a, b: f"(?:{a}|{b})", kids, kids)
        | st.builds(lambda a, op: f"(?:{a}){op}", kids, st.sampled_from(["?", "*", "+", "{2}", "{0,2}", "{1,}"]))
        | st.builds(lambda a: f"(?:|{a})", kids)
    )


regexes = st.recursive(atoms, _regex, max_leaves=6)


@settings(max_examples=150, deadline=None)
@given(pattern=regexes, texts=st.lists(st.text(alphabet=CHARS, max_size=6), min_size=1, max_size=12))
def test_the_native_dfa_accepts_what_python_re_accepts(pattern, texts):
    dfa = build_byte_dfa(pattern)
    for text in texts:
        assert _matches(dfa, text) == (re.fullmatch(pattern, text) is not None), (pattern, text)
    # and the strings the regex itself spells
    for m in {re.fullmatch(pattern, t) for t in texts} - {None}:
        assert _matches(dfa, m.group(0))


def test_utf8_sequences_cover_exactly_the_range():
    for lo, hi in [(0, 0x7F), (0x70, 0x900), (0x7FF, 0x800), (0xE000, 0x10FFFF), (0x10000, 0x10400), (0x5C, 0x5C)]:
        rx = build_byte_dfa(f"[{re.escape(chr(lo))}-{re.escape(chr(hi))}]")
        for cp in {lo, hi, (lo + hi) // 2, lo - 1, hi + 1, 0x7F, 0x80, 0x7FF, 0x800, 0xFFFF, 0x10000}:
            if cp < 0 or cp > 0x10FFFF or 0xD800 <= cp <= 0xDFFF:
                continue
            assert _matches(rx, chr(cp)) == (lo <= cp <= hi), (hex(lo), hex(hi), hex(cp))
        for seq in utf8_sequences(lo, hi):  # one encoded length per sequence, ranges in order
            assert 1 <= len(seq) <= 4 and all(0 <= a <= b <= 0xFF for a, b in seq)


def test_what_it_does_not_take_is_said():
    for pattern in (r"^a", r"(?=a)a", r"(a)\1", r"(?i)a"):
        with pytest.raises(Unsupported):
            build_byte_dfa(pattern)


words = st.text(alphabet="ab é", min_size=0, max_size=14)


@settings(max_examples=40, deadline=None)
@given(excluded=st.lists(words, min_size=1, max_size=3, unique=True), others=st.lists(words, max_size=4))
def test_not_of_long_string_enums_is_exact_through_the_slot(byte_tok, excluded, others):
    """``not: {enum: [...]}`` of strings longer than outlines-core builds in time: the slot's token
    automata accept exactly the strings jsonschema accepts (the excluded ones, their prefixes and
    extensions, and others)."""
    schema = {"type": "string", "not": {"enum": excluded}}
    prog = compile(Prompt(slot("value", schema=schema, max_tokens=24)), byte_tok)
    check = jsonschema.Draft202012Validator(schema)
    candidates = set(excluded) | set(others) | {w[:-1] for w in excluded} | {w + "a" for w in excluded}
    for text in sorted(candidates):
        assert json_accepts(prog, "value", text)[1] == check.is_valid(text), (excluded, text)
