"""Hypothesis strategies: random regexes, choices, layouts and sampling settings."""

from __future__ import annotations

from hypothesis import strategies as st

ALPHABET = "abc01 é@."

_atoms = st.one_of(
    st.sampled_from(list("abc01 @.")).map(lambda c: {"@": "@", ".": r"\.", " ": " "}.get(c, c)),
    st.just("é"),
    st.sampled_from(["[abc]", "[0-9]", "[a-c0-1]", "[^ab]", r"\d", "[ @]"]),
)


def _wrap(children):
    return st.one_of(
        st.tuples(children, children).map(lambda t: t[0] + t[1]),
        st.tuples(children, children).map(lambda t: f"(?:{t[0]}|{t[1]})"),
        children.map(lambda r: f"(?:{r})?"),
        children.map(lambda r: f"(?:{r})*"),
        children.map(lambda r: f"(?:{r})+"),
        st.tuples(children, st.integers(0, 2), st.integers(0, 2)).map(lambda t: f"(?:{t[0]}){{{t[1]},{t[1] + t[2]}}}"),
    )


regexes = st.recursive(_atoms, _wrap, max_leaves=6)

choice_options = st.lists(st.text(alphabet="abc01 é", min_size=0, max_size=5), min_size=1, max_size=4)


@st.composite
def slot_specs(draw, index: int):
    """(kind, constraint argument) of one slot."""
    kind = draw(st.sampled_from(["regex", "regex", "choice", "text"]))
    if kind == "regex":
        return kind, draw(regexes)
    if kind == "choice":
        return kind, tuple(draw(choice_options))
    return kind, None


anchors = st.text(alphabet='xyz:, \n{}"é', min_size=0, max_size=6)


@st.composite
def sampling_settings(draw):
    mode = draw(st.sampled_from(["steps", "tokens_per_step", "threshold", "default"]))
    s: dict = {}
    if mode == "steps":
        s["steps"] = draw(st.integers(1, 12))
    elif mode == "tokens_per_step":
        s["tokens_per_step"] = draw(st.integers(1, 4))
    elif mode == "threshold":
        s["threshold"] = draw(st.sampled_from([0.3, 0.7, 0.95]))
    if draw(st.booleans()):
        s["block_length"] = draw(st.integers(2, 12))
    s["strategy"] = draw(st.sampled_from(["low_confidence", "margin", "entropy", "random"]))
    s["temperature"] = draw(st.sampled_from([0.0, 0.5, 1.0, 1.7]))
    return s


def compile_or_skip(prompt, tok):
    """The compiled prompt; a random spec whose lengths cannot hold its constraint (the only
    compile error random specs should meet: checked) skips the example."""
    from hypothesis import assume

    from dlmprompt import CompileError, compile

    try:
        return compile(prompt, tok)
    except CompileError as exc:
        msg = str(exc)
        assert "tokens" in msg or "no value" in msg or "matches no string" in msg, msg
        assume(False)


@st.composite
def slot_parts(draw, length, extra=None):
    """1 to 3 random slots (regex, choice, free text), each maybe after a random anchor:
    ``length`` draws each slot's length keywords, ``extra`` (optional) more keywords."""
    from dlmprompt import slot

    parts: list = []
    for i in range(draw(st.integers(1, 3))):
        if draw(st.booleans()):
            parts.append(draw(anchors))
        kind, arg = draw(slot_specs(i))
        kw = {"regex": arg} if kind == "regex" else {"choice": arg} if kind == "choice" else {}
        kw.update(draw(length))
        if extra is not None:
            kw.update(draw(extra))
        parts.append(slot(f"s{i}", **kw))
    return parts
