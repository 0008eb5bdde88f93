"""Token-level automata for regular slot constraints.

A :class:`TokenAutomaton` is a DFA whose alphabet is the tokenizer's vocabulary. Tokens with the
same transitions from every state are grouped into **token classes** (the JSON-string automaton
at the Qwen2.5 vocabulary has ~55 of them for 151k tokens), so per-position work over the
vocabulary is a single segment-sum of probabilities into classes, and everything after that
works on ``classes x states`` tables.

Regex -> byte DFA is outlines-core's ``Index`` (Rust) over the 256 single bytes; byte DFA ->
token DFA is a vectorised walk of the vocabulary here (milliseconds at 151k tokens). This module
also trims dead states, adds the pad tail of "at most n" slots and answers length questions.
No torch here.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from dlmprompt.constraints.tokenwalk import (
    CACHE_SIZE,
    build_costs,
    byte_dfa,
    signatures,
    string_states,
    vocabulary_for,
)
from dlmprompt.errors import CompileError

if TYPE_CHECKING:
    from dlmprompt.tokenizer import Tokenizer

try:  # Python 3.11+
    import re._parser as _sre_parse  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - Python 3.10
    import sre_parse as _sre_parse  # type: ignore[no-redef]


class Walks:
    """What every token automaton answers from ``token_class``, ``n_classes``, ``start``,
    ``accept`` and its own ``step`` (dense :class:`TokenAutomaton`, sparse edge lists)."""

    @cached_property
    def class_members(self) -> list[np.ndarray]:
        """The token ids of each class."""
        order = np.argsort(self.token_class, kind="stable")  # type: ignore[attr-defined]
        counts = np.bincount(self.token_class[self.token_class >= 0], minlength=self.n_classes)  # type: ignore[attr-defined]
        start = int((self.token_class < 0).sum())
        out = []
        for c in range(self.n_classes):
            out.append(order[start : start + counts[c]])
            start += counts[c]
        return out

    def accepts(self, tokens: list[int] | np.ndarray) -> bool:
        """Whether the token sequence is a complete value."""
        s = self.start
        for t in tokens:
            s = self.step(s, int(t))
            if s < 0:
                return False
        return bool(self.accept[s])


@dataclass(frozen=True, eq=False)
class TokenAutomaton(Walks):
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

    def step(self, state: int, token: int) -> int:
        """The state after ``token`` (-1 if not allowed)."""
        if state < 0:
            return -1
        c = int(self.token_class[token]) if 0 <= token < len(self.token_class) else -1
        return -1 if c < 0 else int(self.next_state[c, state])

    @cached_property
    def _edges(self) -> tuple[np.ndarray, np.ndarray]:
        """The distinct (state, next state) pairs of the table, as two arrays."""
        ns = self.next_state
        q = ns.shape[1]
        valid = ns >= 0
        src = np.broadcast_to(np.arange(q, dtype=np.int64), ns.shape)[valid]
        pairs = np.unique(src * q + ns[valid])
        return pairs // q, pairs % q

    def feasible_lengths(self, up_to: int, *, first: bool = False) -> np.ndarray:
        """``ok[k]`` for k in 0..up_to: whether some accepted token sequence has exactly k tokens
        (``first``: stop at the first such k; later entries stay False)."""
        src, dst = self._edges
        ok = np.zeros(up_to + 1, dtype=bool)
        # states reachable from the start in exactly k tokens
        cur = np.zeros(self.n_states, dtype=bool)
        cur[self.start] = True
        for k in range(up_to + 1):
            ok[k] = bool((cur & self.accept).any())
            if ok[k] and first:
                break
            nxt = np.zeros_like(cur)
            nxt[dst[cur[src]]] = True
            if not nxt.any():
                break
            cur = nxt
        return ok

    def with_pad(self, pad_id: int) -> TokenAutomaton:
        """The "value then pad" automaton of an "at most n" slot: from every accepting state the
        pad token leads to a pad state that only loops on pad."""
        if self.pad_class is not None:
            return self
        cached = self.__dict__.get("_padded")
        if cached is not None and cached[0] == pad_id:
            return cached[1]  # one object per constraint: the sampler batches slots that share it
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
        padded = TokenAutomaton(tc, ns, self.start, acc, self.description, pad_class=c)
        self.__dict__["_padded"] = (pad_id, padded)
        return padded


# --------------------------------------------------------------------------- construction


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


def checked_pattern(pattern: str, slot: str | None) -> str:
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


MAX_REGEX_SIZE = 10_000  # elements a regex may unroll to (counted repetitions multiply)


def check_regex_size(pattern: str, slot: str | None, limit: int = MAX_REGEX_SIZE) -> None:
    """Refuse a regex whose counted repetitions unroll past ``limit`` elements (``x{0,100000}``
    would build an automaton of that many states, for minutes and gigabytes) before any work."""
    body = checked_pattern(pattern, slot)

    def size(items: object) -> int:
        total = 0
        for op, av in items:  # type: ignore[attr-defined]
            name = str(op)
            if name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
                lo, hi, sub = av
                times = lo + 1 if hi == _sre_parse.MAXREPEAT else hi
                total += max(times, 1) * size(sub)
            elif name == "SUBPATTERN":
                total += size(av[-1])
            elif name == "BRANCH":
                total += sum(size(b) for b in av[1])
            else:
                total += 1
            if total > limit:
                return total
        return total

    n = size(_sre_parse.parse(body))
    if n > limit:
        raise CompileError(
            f"regex {pattern[:60]!r} unrolls to more than {limit:,} elements (counted repetitions multiply); "
            "a constraint this large takes too long to build: use * or + instead of a large {m,n}",
            slot=slot,
        )


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


_AUTOMATA: OrderedDict[tuple[str, str], TokenAutomaton] = OrderedDict()


def _token_dfa(pattern: str, tokenizer: Tokenizer, description: str) -> TokenAutomaton:
    """Regex -> byte DFA -> token DFA with token classes.

    Mostly, the vocabulary's trie is walked once for all states together, level by level, keeping
    only the (start state, trie node) pairs still alive: a structural state dies on most first
    bytes, so the work is the number of live pairs, not states x tokens x bytes. Each token's live
    pairs are its transition signature; tokens with equal signatures share a token class. When
    most states are inside strings, the dense walk over byte classes is cheaper and is used."""
    table, start, accept = byte_dfa(pattern)
    q = table.shape[0] - 1
    vocab = vocabulary_for(tokenizer)
    sig, row_of = signatures(table, q, vocab)
    return _from_signatures(sig, row_of, start, accept[:q], q, description)


def automaton_seconds(pattern: str, tokenizer: Tokenizer) -> float:
    """About how long :func:`regex_automaton` takes to build ``pattern`` (0 when cached)."""
    if ("regex:" + pattern, tokenizer.identity) in _AUTOMATA:
        return 0.0
    table, _start, _accept = byte_dfa(pattern)
    q, vocab = table.shape[0] - 1, vocabulary_for(tokenizer)
    inside = string_states(table, q, vocab)
    return min(build_costs(table, q, vocab, np.array([x for x in range(q) if x not in inside], dtype=np.int64)))


def _projection(a: np.ndarray) -> np.ndarray:
    """Each row hashed to int64 by a fixed random projection (the order of token classes)."""
    rng = np.random.default_rng(0x5EED)
    weights = rng.integers(1, 2**62, size=a.shape[1], dtype=np.int64) | 1
    with np.errstate(over="ignore"):
        return (a.astype(np.int64) * weights).sum(axis=1) + (a.astype(np.int64) ** 2 * weights[::-1]).sum(axis=1)


def _unique_rows(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(a, axis=0, return_inverse=True)`` with the rows ordered by
    :func:`_projection`, fast: rows are grouped by a hash of their bytes (checked exactly
    afterwards), and only the distinct rows are projected to order them. At 76k rows of 572
    states this takes a tenth of the time of projecting every row."""
    if a.shape[0] == 0 or a.shape[1] == 0:
        uniq, inverse = np.unique(a, axis=0, return_inverse=True)
        return uniq, inverse.ravel()
    a = np.ascontiguousarray(a)
    by_bytes = np.fromiter((hash(row) for row in map(bytes, a)), dtype=np.int64, count=a.shape[0])
    _keys, first, inverse = np.unique(by_bytes, return_index=True, return_inverse=True)
    uniq = a[first]
    inverse = inverse.ravel()
    key = _projection(uniq)
    if not np.array_equal(uniq[inverse], a) or len(np.unique(key)) < len(key):  # pragma: no cover - a collision
        uniq, inverse = np.unique(a, axis=0, return_inverse=True)
        return uniq, inverse.ravel()
    order = np.argsort(key, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return uniq[order], rank[inverse]


def _from_signatures(
    sig: np.ndarray, row_of: np.ndarray, start: int, accept: np.ndarray, dead: int, description: str
) -> TokenAutomaton:
    """Token classes from per-row transition signatures (``sig[r, s]``, ``dead`` = not allowed):
    keep states reachable from the start that can still reach acceptance, merge equal rows."""
    uniq, inverse = _unique_rows(sig)
    q = sig.shape[1]
    valid = uniq != dead
    pairs = np.unique(np.broadcast_to(np.arange(q, dtype=np.int64), uniq.shape)[valid] * (q + 1) + uniq[valid])
    succ: list[set[int]] = [set() for _ in range(q)]
    pred: list[set[int]] = [set() for _ in range(q + 1)]
    for s, t in zip((pairs // (q + 1)).tolist(), (pairs % (q + 1)).tolist(), strict=True):
        succ[s].add(t)
        pred[t].add(s)
    reachable = _closure([start], succ)
    live = _closure([int(i) for i in np.nonzero(accept)[0]], pred)
    keep = sorted(reachable & live)
    if start not in keep:
        keep = [start]  # empty language; callers report it
    remap = np.full(q + 1, -1, dtype=np.int32)
    remap[keep] = np.arange(len(keep), dtype=np.int32)
    remap[dead] = -1
    table = remap[uniq[:, keep]]  # [rows, kept states], -1 = not allowed
    classes, cls_of_row = _unique_rows(table)
    allowed = (classes >= 0).any(axis=1)
    renum = np.full(len(classes), -1, dtype=np.int32)
    renum[allowed] = np.arange(int(allowed.sum()), dtype=np.int32)
    token_class = np.full(len(row_of), -1, dtype=np.int32)
    has = row_of >= 0
    token_class[has] = renum[cls_of_row[inverse[row_of[has]]]]
    next_state = np.ascontiguousarray(classes[allowed].astype(np.int32))
    acc = accept[keep].astype(bool)
    trivial = len(keep) == 1 and next_state.shape[0] == 1 and bool(acc[0]) and int(next_state[0, 0]) == 0
    return TokenAutomaton(token_class, next_state, remap[start], acc, description, trivial=trivial)


def _index_automaton(
    key: tuple[str, str], pattern: str, tokenizer: Tokenizer, description: str, on_error: Callable[[str], CompileError]
) -> TokenAutomaton:
    """The token automaton of ``pattern`` through the LRU cache."""
    hit = _AUTOMATA.get(key)
    if hit is not None:
        _AUTOMATA.move_to_end(key)
        return hit
    try:
        auto = _token_dfa(pattern, tokenizer, description)
    except (ValueError, RuntimeError) as exc:
        raise on_error(str(exc)) from None
    if not auto.accept.any():  # trimmed to live states: no accepting state means no value
        table, start, accept = byte_dfa(pattern)
        seen, todo = {start}, [start]
        while todo:
            for nxt in set(table[todo.pop()].tolist()) - seen:
                seen.add(nxt)
                todo.append(nxt)
        if accept[sorted(seen)].any():
            raise on_error("unspellable")
    _AUTOMATA[key] = auto
    while len(_AUTOMATA) > CACHE_SIZE:
        _AUTOMATA.popitem(last=False)
    return auto


def regex_automaton(pattern: str, tokenizer: Tokenizer, *, slot: str | None = None) -> TokenAutomaton:
    """The token automaton of ``pattern`` (full match) over ``tokenizer``'s vocabulary; cached."""
    key = ("regex:" + pattern, tokenizer.identity)
    if key in _AUTOMATA:
        return _index_automaton(key, pattern, tokenizer, "", CompileError)
    body = checked_pattern(pattern, slot)

    def error(msg: str) -> CompileError:
        if msg == "unspellable":
            return CompileError(f"the tokenizer cannot spell any string the pattern {pattern!r} matches", slot=slot)
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


UNCONSTRAINED = "any tokens"  # the description of the automaton of a slot compiled with constraints=False


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
    auto = TokenAutomaton(tc, np.zeros((1, 1), dtype=np.int32), 0, np.ones(1, dtype=bool), UNCONSTRAINED, trivial=True)
    _AUTOMATA[key] = auto
    return auto
