"""Shared checks for the property tests: every output satisfies every slot, anchors untouched."""

from __future__ import annotations

import re

import lark
import numpy as np

from dlmprompt import Choice, FreeText, Grammar, Program, Prompt, Regex, slot

# anchors, a regex slot, a choice slot and free text: what every backend test generates
MIXED_PROMPT = (
    Prompt("Name: ")
    + slot("name", regex="[A-Z][a-z]+", max_tokens=5)
    + ", age "
    + slot("age", regex="[0-9]+", max_tokens=3)
    + ". Color: "
    + slot("color", choice=["red", "blue"], max_tokens=2)
    + "? "
    + slot("free", max_tokens=4)
)


def check_result(program: Program, result) -> None:
    layout = program.layout
    canvas = result.canvas
    anchors = layout.slot_of < 0
    assert np.array_equal(canvas[anchors], layout.canvas[anchors]), "an anchor changed"
    assert not (canvas == program.mask_id).any(), "a mask token is left on the canvas"
    tok = program.tokenizer
    for s in layout.slots:
        seg = canvas[s.start : s.stop].tolist()
        cap = result.captures[s.name]
        if s.mode == "at_most":
            n_value = len(cap.tokens)
            assert all(t == program.pad_id for t in seg[n_value:]), f"{s.name}: pad tail broken {seg}"
            assert program.pad_id not in seg[:n_value]
        else:
            assert len(cap.tokens) == s.length
        value = list(cap.tokens)
        for t in value:
            assert tok.token_bytes[t] is not None, f"{s.name}: special token {t} in the value"
        data = tok.decode_bytes(value)
        text = data.decode("utf-8")  # strict: every value is valid UTF-8
        c = s.constraint
        if isinstance(c, Regex):
            assert re.fullmatch(c.pattern, text, flags=re.ASCII) is not None, f"{s.name}: {text!r} !~ {c.pattern!r}"
        elif isinstance(c, Choice):
            assert text in c.options, f"{s.name}: {text!r} not in {c.options}"
        elif isinstance(c, Grammar):
            _parser(c.lark).parse(text)  # lark itself: the text is a whole sentence
        else:
            assert isinstance(c, FreeText)
        assert cap.text == text


_PARSERS: dict[str, lark.Lark] = {}


def _parser(grammar: str) -> lark.Lark:
    if grammar not in _PARSERS:
        _PARSERS[grammar] = lark.Lark(grammar)
    return _PARSERS[grammar]
