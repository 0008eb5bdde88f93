"""Token-level automata for regular slot constraints.

A :class:`TokenAutomaton` is a DFA whose alphabet is the tokenizer's vocabulary. Tokens with the
same transitions from every state are grouped into **token classes** (the JSON-string automaton
at the Qwen2.5 vocabulary has ~55 of them for 151k tokens), so per-position work over the
vocabulary is a single segment-sum of probabilities into classes, and everything after that
works on ``classes x states`` tables.

Regex -> byte DFA -> token DFA is done by outlines-core's ``Index`` (Rust). This module turns its
transitions into dense class tables, trims dead states, adds the pad tail of "at most n" slots,
and answers length questions. No torch here.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from .errors import CompileError

if TYPE_CHECKING:
    from .tokenizer import Tokenizer

try:  # Python 3.11+
    import re._parser as _sre_parse  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - Python 3.10
    import sre_parse as _sre_parse  # type: ignore[no-redef]


@dataclass(frozen=True, eq=False)
class TokenAutomaton:
    """A deterministic automaton over token ids, with tokens grouped in classes.

    * ``token_class[v]``: the class of token ``v``, or -1 if ``v`` is never allowed.
    * ``next_state[c, s]``: the state reached from ``s`` by a token of class ``c`` (-1: not allowed).
    * ``accept[s]``: whether the slot may end in state ``s``.
    """

    token_class: np.ndarray  # int32 [V]
    next_state: np.ndarray  # int32 [C, Q]
    start: int
    accept: np.ndarray  # bool [Q]
    description: str = ""
    pad_class: int | None = None
    trivial: bool = field(default=False)  # one state, every class loops: no constraint to enforce

    @property
    def n_states(self) -> int:
        return int(self.next_state.shape[1])

    @property
    def n_classes(self) -> int:
        return int(self.next_state.shape[0])

    @cached_property
    def class_members(self) -> list[np.ndarray]:
        order = np.argsort(self.token_class, kind="stable")
        counts = np.bincount(self.token_class[self.token_class >= 0], minlength=self.n_classes)
        start = int((self.token_class < 0).sum())
        out = []
        for c in range(self.n_classes):
            out.append(order[start : start + counts[c]])
            start += counts[c]
        return out

    def step(self, state: int, token: int) -> int:
        """The state after ``token`` (-1 if not allowed)."""
        if state < 0:
            return -1
        c = int(self.token_class[token]) if 0 <= token < len(self.token_class) else -1
        return -1 if c < 0 else int(self.next_state[c, state])

    def accepts(self, tokens: list[int] | np.ndarray) -> bool:
        s = self.start
        for t in tokens:
            s = self.step(s, int(t))
            if s < 0:
                return False
        return bool(self.accept[s])

    def feasible_lengths(self, up_to: int) -> np.ndarray:
        """``ok[k]`` for k in 0..up_to: whether some accepted token sequence has exactly k tokens."""
        ns = self.next_state
        valid = ns >= 0
        safe = np.where(valid, ns, 0)
        ok = np.zeros(up_to + 1, dtype=bool)
        # states reachable from the start in exactly k tokens
        cur = np.zeros(self.n_states, dtype=bool)
        cur[self.start] = True
        for k in range(up_to + 1):
            ok[k] = bool((cur & self.accept).any())
            nxt = np.zeros_like(cur)
            src = np.nonzero(cur)[0]
            if len(src) == 0:
                break
            tgt = safe[:, src][valid[:, src]]
            nxt[tgt] = True
            cur = nxt
        return ok

    def with_pad(self, pad_id: int) -> TokenAutomaton:
        """The "value then pad" automaton of an "at most n" slot: from every accepting state the
        pad token leads to a pad state that only loops on pad."""
        if self.pad_class is not None:
            return self
        q = self.n_states
        c = self.n_classes
        ns = np.full((c + 1, q + 1), -1, dtype=np.int32)
        ns[:c, :q] = self.next_state
        ns[c, :q] = np.where(self.accept, q, -1)
        ns[c, q] = q
        tc = self.token_class.copy()
        if tc[pad_id] >= 0:
            raise CompileError(f"the pad token {pad_id} spells text; it cannot end a value")
        tc[pad_id] = c
        acc = np.append(self.accept, True)
        return TokenAutomaton(tc, ns, self.start, acc, self.description, pad_class=c)


# --------------------------------------------------------------------------- construction


def _dense(
    transitions: dict[int, dict[int, int]],
    start_raw: int,
    finals_raw: set[int],
    vocab_size: int,
    drop_tokens: set[int],
    description: str,
) -> TokenAutomaton:
    """Dense class tables from an outlines-core transition dict; trims dead states."""
    states = sorted(set(transitions) | {start_raw} | set(finals_raw))
    for d in transitions.values():
        states.extend(d.values())
    states = sorted(set(states))
    index = {s: i for i, s in enumerate(states)}
    q = len(states)
    # successor relation for trimming
    succ: list[set[int]] = [set() for _ in range(q)]
    for s, d in transitions.items():
        si = index[s]
        for t, s2 in d.items():
            if t not in drop_tokens:
                succ[si].add(index[s2])
    accept = np.zeros(q, dtype=bool)
    for f in finals_raw:
        accept[index[f]] = True
    reachable = _closure([index[start_raw]], succ)
    pred: list[set[int]] = [set() for _ in range(q)]
    for s, ss in enumerate(succ):
        for s2 in ss:
            pred[s2].add(s)
    live = _closure([int(i) for i in np.nonzero(accept)[0]], pred)
    keep = sorted(reachable & live)
    if index[start_raw] not in keep:
        keep = [index[start_raw]]  # empty language; callers report it
    renum = {old: new for new, old in enumerate(keep)}
    qk = len(keep)
    table = np.full((vocab_size, qk), -1, dtype=np.int32)
    for s, d in transitions.items():
        si = index[s]
        if si not in renum:
            continue
        col = renum[si]
        if not d:
            continue
        toks = np.fromiter(d.keys(), dtype=np.int64, count=len(d))
        tgts = np.fromiter((renum.get(index[x], -1) for x in d.values()), dtype=np.int32, count=len(d))
        inside = toks < vocab_size
        table[toks[inside], col] = tgts[inside]
    for t in drop_tokens:
        if 0 <= t < vocab_size:
            table[t, :] = -1
    return _from_table(table, renum[index[start_raw]], accept[keep], description)


def _from_table(table: np.ndarray, start: int, accept: np.ndarray, description: str) -> TokenAutomaton:
    q = table.shape[1]
    rows = np.ascontiguousarray(table).view(np.dtype((np.void, 4 * q))).ravel()
    uniq, inverse = np.unique(rows, return_inverse=True)
    sigs = uniq.view(np.int32).reshape(-1, q)
    allowed_cls = (sigs >= 0).any(axis=1)
    remap = np.full(len(sigs), -1, dtype=np.int32)
    remap[allowed_cls] = np.arange(int(allowed_cls.sum()), dtype=np.int32)
    token_class = remap[inverse.ravel()].astype(np.int32)
    next_state = np.ascontiguousarray(sigs[allowed_cls].astype(np.int32))
    trivial = q == 1 and next_state.shape[0] == 1 and bool(accept[0]) and int(next_state[0, 0]) == 0
    return TokenAutomaton(token_class, next_state, start, accept.astype(bool), description, trivial=trivial)


def _closure(seeds: list[int], edges: list[set[int]]) -> set[int]:
    seen = set(seeds)
    stack = list(seeds)
    while stack:
        s = stack.pop()
        for t in edges[s]:
            if t not in seen:
                seen.add(t)
                stack.append(t)
    return seen


_UNSUPPORTED = {
    "ASSERT": "lookahead / lookbehind",
    "ASSERT_NOT": "negative lookahead / lookbehind",
    "GROUPREF": "back-references",
    "GROUPREF_EXISTS": "conditional groups",
    "AT": "anchors (^, $, \\b, \\A, \\Z) inside the pattern",
    "ATOMIC_GROUP": "atomic groups",
    "POSSESSIVE_REPEAT": "possessive repeats",
}


def _check_python_regex(pattern: str, slot: str | None) -> str:
    """Validate with Python's parser for good messages; strip a leading ^ and trailing $."""
    try:
        re.compile(pattern)
    except re.error as exc:
        pos = f" at position {exc.pos}" if exc.pos is not None else ""
        caret = f"\n  {pattern}\n  {' ' * (exc.pos or 0)}^" if exc.pos is not None else ""
        raise CompileError(f"invalid regex: {exc.msg}{pos}{caret}", slot=slot) from None
    body = pattern
    if body.startswith("^"):
        body = body[1:]
    if body.endswith("$") and not body.endswith("\\$"):
        body = body[:-1]
    if body.startswith("\\A"):
        body = body[2:]
    if body.endswith("\\Z") or body.endswith("\\z"):
        body = body[:-2]
    body = _ascii_digits(body)
    parsed = _sre_parse.parse(body)
    bad = _find_unsupported(parsed)
    if bad:
        raise CompileError(
            f"regex uses {bad}, which a regular constraint cannot express; rewrite the pattern "
            "without it (the whole slot must match the pattern, so ^ and $ are implied)",
            slot=slot,
        )
    return body


def _ascii_digits(pattern: str) -> str:
    """``\\d`` means ``[0-9]`` (as in JSON Schema / ECMA-262), ``\\D`` its complement: structured
    output wants ASCII digits, and Unicode's digit set changes between versions."""
    out: list[str] = []
    i, in_class = 0, False
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            nxt = pattern[i + 1]
            if nxt == "d":
                out.append("0-9" if in_class else "[0-9]")
            elif nxt == "D" and not in_class:
                out.append("[^0-9]")
            else:
                out.append(pattern[i : i + 2])
            i += 2
            continue
        if ch == "[" and not in_class:
            in_class = True
            out.append(ch)
            i += 1
            if i < len(pattern) and pattern[i] == "^":
                out.append("^")
                i += 1
            if i < len(pattern) and pattern[i] == "]":
                out.append("]")
                i += 1
            continue
        if ch == "]" and in_class:
            in_class = False
        out.append(ch)
        i += 1
    return "".join(out)


def _find_unsupported(parsed: object) -> str | None:
    for op, av in parsed:  # type: ignore[attr-defined]
        name = str(op)
        if name in _UNSUPPORTED:
            return _UNSUPPORTED[name]
        children: list[object] = []
        if name in ("SUBPATTERN",):
            children.append(av[-1])
        elif name in ("MAX_REPEAT", "MIN_REPEAT"):
            children.append(av[2])
        elif name == "BRANCH":
            children.extend(av[1])
        for child in children:
            found = _find_unsupported(child)
            if found:
                return found
    return None


def escape_literal(text: str) -> str:
    """A regex (outlines-core / Rust syntax) matching ``text`` literally."""
    out = []
    for ch in text:
        if ch.isalnum() and ord(ch) < 128:
            out.append(ch)
        elif ord(ch) < 128:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)


class _Vocab:
    """outlines-core vocabulary of one tokenizer, built once."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        import outlines_core

        mapping: dict[bytes, list[int]] = {}
        for i, tb in enumerate(tokenizer.token_bytes):
            if tb:
                mapping.setdefault(tb, []).append(i)
        self.eos = len(tokenizer.token_bytes)  # an id outside the vocabulary: its edges are dropped
        self.vocab = outlines_core.Vocabulary(self.eos, mapping)
        self.size = len(tokenizer.token_bytes)


_VOCABS: OrderedDict[str, _Vocab] = OrderedDict()
_AUTOMATA: OrderedDict[tuple[str, str], TokenAutomaton] = OrderedDict()
_CACHE_SIZE = 256


def _vocab_for(tokenizer: Tokenizer) -> _Vocab:
    key = tokenizer.identity
    v = _VOCABS.get(key)
    if v is None:
        v = _Vocab(tokenizer)
        _VOCABS[key] = v
        while len(_VOCABS) > 8:
            _VOCABS.popitem(last=False)
    return v


def _index_automaton(
    key: tuple[str, str], pattern: str, tokenizer: Tokenizer, description: str, on_error: Callable[[str], CompileError]
) -> TokenAutomaton:
    """outlines-core index of ``pattern`` -> dense class tables, through the LRU cache."""
    hit = _AUTOMATA.get(key)
    if hit is not None:
        _AUTOMATA.move_to_end(key)
        return hit
    import outlines_core

    vocab = _vocab_for(tokenizer)
    try:
        index = outlines_core.Index(pattern, vocab.vocab)
    except (ValueError, RuntimeError) as exc:
        raise on_error(str(exc)) from None
    auto = _dense(
        index.get_transitions(),
        index.get_initial_state(),
        set(index.get_final_states()),
        vocab.size,
        {vocab.eos},
        description=description,
    )
    _AUTOMATA[key] = auto
    while len(_AUTOMATA) > _CACHE_SIZE:
        _AUTOMATA.popitem(last=False)
    return auto


def regex_automaton(pattern: str, tokenizer: Tokenizer, *, slot: str | None = None) -> TokenAutomaton:
    """The token automaton of ``pattern`` (full match) over ``tokenizer``'s vocabulary; cached."""
    key = ("regex:" + pattern, tokenizer.identity)
    if key in _AUTOMATA:
        return _index_automaton(key, pattern, tokenizer, "", CompileError)
    body = _check_python_regex(pattern, slot)

    def error(msg: str) -> CompileError:
        if "incompatible" in msg and "characters: []" in msg:
            return CompileError(f"the pattern {pattern!r} matches no string; no value is possible", slot=slot)
        if "incompatible" in msg:
            return CompileError(
                f"the tokenizer cannot spell some strings the regex needs: {msg.split('. This may')[0]}", slot=slot
            )
        return CompileError(
            f"regex {pattern!r} cannot be compiled to an automaton ({msg}); use plain regular syntax: "
            "literals, classes, groups, |, ?, *, +, {m,n}",
            slot=slot,
        )

    return _index_automaton(key, body, tokenizer, f"regex {pattern!r}", error)


def choice_automaton(options: tuple[str, ...], tokenizer: Tokenizer, *, slot: str | None = None) -> TokenAutomaton:
    if not options:
        raise CompileError("choice needs at least one option; got an empty list", slot=slot)
    pattern = "(?:" + "|".join(escape_literal(o) for o in options) + ")"

    def error(msg: str) -> CompileError:
        return CompileError(f"the tokenizer cannot spell every option: {msg.split('. This may')[0]}", slot=slot)

    return _index_automaton(
        ("choice:" + pattern, tokenizer.identity), pattern, tokenizer, f"choice {list(options)!r}", error
    )


def free_text_automaton(tokenizer: Tokenizer) -> TokenAutomaton:
    """Any valid UTF-8 text (tokens that split a character must be completed)."""
    return regex_automaton(r"[\s\S]*", tokenizer)


def unconstrained_automaton(tokenizer: Tokenizer, *, with_pad: bool = False) -> TokenAutomaton:
    """Any sequence of text tokens (and pad, if ``with_pad``), no UTF-8 check, no structure: the
    sampler's baseline without constraints."""
    key = (f"any:pad={with_pad}", tokenizer.identity)
    hit = _AUTOMATA.get(key)
    if hit is not None:
        return hit
    tc = np.array([0 if tb else -1 for tb in tokenizer.token_bytes], dtype=np.int32)
    if with_pad and tokenizer.pad_id is not None:
        tc[tokenizer.pad_id] = 0
    auto = TokenAutomaton(tc, np.zeros((1, 1), dtype=np.int32), 0, np.ones(1, dtype=bool), "any tokens", trivial=True)
    _AUTOMATA[key] = auto
    return auto
