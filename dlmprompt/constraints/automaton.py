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


class _Vocab:
    """The tokenizer's byte strings as a trie, level by level, built once per tokenizer.

    Level ``d`` lists the nodes of depth ``d`` in lexicographic order: ``byte[d][i]`` is the last
    byte of node ``i``, the children of node ``j`` of level ``d - 1`` are
    ``child_start[d - 1][j] : child_start[d - 1][j + 1]`` of level ``d``, and ``token[d][i]`` is
    the token that spells node ``i`` (-1: none). Special tokens (no bytes) are never part of a
    text automaton; tokens with the same bytes as another are listed in ``duplicates``."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        tb = [b or b"" for b in tokenizer.token_bytes]
        self.size = len(tb)
        self.bytes_of = tb
        self.has_bytes = np.array([bool(b) for b in tb], dtype=bool)
        self._string_walk: _StringWalk | None = None
        lens = np.fromiter((len(b) for b in tb), dtype=np.int64, count=len(tb))
        self.groups: list[tuple[np.ndarray, np.ndarray]] = []  # (ids, bytes [n, length]) per length
        for n in np.unique(lens):
            if n:
                ids = np.nonzero(lens == n)[0]
                mat = np.frombuffer(b"".join(tb[i] for i in ids), dtype=np.uint8).reshape(len(ids), int(n))
                self.groups.append((ids, mat))
        self.duplicates: list[tuple[int, int]] = []
        bytes_: list[list[int]] = [[]]
        parents: list[list[int]] = [[]]
        tokens: list[list[int]] = [[]]
        path = [0]  # the node of the current prefix at each depth (the root at depth 0)
        prev, prev_id = b"", -1
        for b, tid in sorted((b, i) for i, b in enumerate(tb) if b):
            if b == prev:
                self.duplicates.append((tid, prev_id))
                continue
            lcp, m = 0, min(len(b), len(prev))
            while lcp < m and b[lcp] == prev[lcp]:
                lcp += 1
            del path[lcp + 1 :]
            for d in range(lcp + 1, len(b) + 1):
                if len(bytes_) <= d:
                    bytes_.append([])
                    parents.append([])
                    tokens.append([])
                bytes_[d].append(b[d - 1])
                parents[d].append(path[d - 1])
                tokens[d].append(-1)
                path.append(len(bytes_[d]) - 1)
            tokens[len(b)][path[len(b)]] = tid
            prev, prev_id = b, tid
        self.byte = [np.array(x, dtype=np.int64) for x in bytes_]
        self.token = [np.array(x, dtype=np.int64) for x in tokens]
        self.first_bytes = self.byte[1] if len(self.byte) > 1 else np.zeros(0, dtype=np.int64)
        self.n_nodes = sum(len(b) for b in self.byte)
        self.n_bytes = int(lens.sum())
        self.child_start: list[np.ndarray] = []
        n_prev = 1
        for d in range(1, len(bytes_)):
            parent = np.array(parents[d], dtype=np.int64)
            self.child_start.append(np.searchsorted(parent, np.arange(n_prev + 1)))
            n_prev = len(parent)

    def string_walk(self) -> _StringWalk:
        """Every token read from inside a JSON string (built once per tokenizer)."""
        if self._string_walk is None:
            table, start, _accept = byte_dfa(f"\\x22{JSON_CHAR}*\\x22")
            q = table.shape[0] - 1
            inside = int(table[start, 0x22])
            end = np.full(self.size, -1, dtype=np.int64)
            exit_at = np.full(self.size, -1, dtype=np.int64)
            for ids, mat in self.groups:
                cur = np.full(len(ids), inside, dtype=np.int64)
                closed = np.full(len(ids), -1, dtype=np.int64)
                for p in range(mat.shape[1]):
                    open_ = closed < 0
                    quote = open_ & (cur == inside) & (mat[:, p] == 0x22)
                    closed[quote] = p + 1
                    step = open_ & ~quote
                    cur[step] = table[cur[step], mat[step, p]]
                end[ids] = np.where((closed < 0) & (cur != q), cur, -1)
                exit_at[ids] = closed
            exits = np.nonzero(exit_at >= 0)[0]
            lens = np.array([len(self.bytes_of[t]) - exit_at[t] for t in exits], dtype=np.int64)
            suffixes = np.zeros((len(exits), int(lens.max()) if len(exits) else 0), dtype=np.int64)
            for i, t in enumerate(exits):
                tail = self.bytes_of[t][exit_at[t] :]
                suffixes[i, : len(tail)] = list(tail)
            self._string_walk = _StringWalk(table, inside, q, end, exits, suffixes, lens)
        return self._string_walk

    def walk(self, table: np.ndarray, q: int, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(token, start state, end state) for every token and start state in ``starts`` from
        which the byte DFA ``table`` (dead state ``q``) reads the whole token."""
        src = starts.astype(np.int64)
        cur = src.copy()
        node = np.zeros(len(src), dtype=np.int64)
        out_t, out_s, out_c = [], [], []
        for d in range(1, len(self.byte)):
            cs = self.child_start[d - 1]
            lo = cs[node]
            cnt = cs[node + 1] - lo
            total = int(cnt.sum())
            if total == 0:
                break
            pair = np.repeat(np.arange(len(node)), cnt)
            child = lo[pair] + (np.arange(total) - np.repeat(np.cumsum(cnt) - cnt, cnt))
            nxt = table[cur[pair], self.byte[d][child]]
            alive = nxt != q
            node, cur, src = child[alive], nxt[alive], src[pair[alive]]
            tk = self.token[d][node]
            end = tk >= 0
            out_t.append(tk[end])
            out_s.append(src[end])
            out_c.append(cur[end])
        if not out_t:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, empty
        return np.concatenate(out_t), np.concatenate(out_s), np.concatenate(out_c)


_VOCABS: OrderedDict[str, _Vocab] = OrderedDict()
_AUTOMATA: OrderedDict[tuple[str, str], TokenAutomaton] = OrderedDict()
_BYTE_DFAS: OrderedDict[str, tuple[np.ndarray, int, np.ndarray]] = OrderedDict()
_CACHE_SIZE = 512


def token_bytes_of(tokenizer: Tokenizer) -> list[bytes]:
    """Each token's bytes (``b""`` for special tokens, which never spell text)."""
    return [b or b"" for b in tokenizer.token_bytes]


def _vocab_for(tokenizer: Tokenizer) -> _Vocab:
    key = tokenizer.identity
    v = _VOCABS.get(key)
    if v is None:
        v = _Vocab(tokenizer)
        _VOCABS[key] = v
        while len(_VOCABS) > 8:
            _VOCABS.popitem(last=False)
    return v


def byte_dfa(pattern: str) -> tuple[np.ndarray, int, np.ndarray]:
    """The byte-level DFA of ``pattern``: ``table[q, byte]`` (state ``Q`` is dead), start, accept.

    Built by outlines-core (Rust) over a vocabulary of the 256 single bytes, which takes
    milliseconds; the walk over the real vocabulary is done here, vectorised (:func:`_token_dfa`)."""
    hit = _BYTE_DFAS.get(pattern)
    if hit is not None:
        _BYTE_DFAS.move_to_end(pattern)
        return hit
    import outlines_core

    global _BYTE_VOCAB
    if _BYTE_VOCAB is None:
        _BYTE_VOCAB = outlines_core.Vocabulary(256, {bytes([b]): [b] for b in range(256)})
    # outlines-core (0.2.x) drops the edges that leave an accepting state towards a non-accepting
    # one (``(?:ab)?`` loses its "a"). So the pattern is indexed followed by an end marker, where
    # only the marker's last byte reaches acceptance, and a state accepts iff the marker's bytes
    # lead from it to acceptance (w.M is in L.M iff w is in L, for any L)
    index = outlines_core.Index(f"(?:{pattern}){_END_MARK}", _BYTE_VOCAB)
    trans = index.get_transitions()
    init = index.get_initial_state()
    finals = set(index.get_final_states())
    states = sorted(set(trans) | {init} | finals | {s2 for d in trans.values() for s2 in d.values()})
    number = {x: i for i, x in enumerate(states)}
    q = len(states)
    table = np.full((q + 1, 256), q, dtype=np.int32)
    for x, d in trans.items():
        row = table[number[x]]
        for b, x2 in d.items():
            if b < 256:
                row[b] = number[x2]
    final = np.zeros(q + 1, dtype=bool)
    for f in finals:
        final[number[f]] = True
    cur = np.arange(q + 1)
    for byte in _END_MARK.encode():
        cur = table[cur, byte]
    accept = final[cur]
    accept[q] = False
    out = (table, number[init], accept)
    _BYTE_DFAS[pattern] = out
    while len(_BYTE_DFAS) > _CACHE_SIZE:
        _BYTE_DFAS.popitem(last=False)
    return out


_BYTE_VOCAB = None
_POS_WEIGHTS = np.random.default_rng(0x5EED).integers(1, 2**62, size=4096, dtype=np.int64) | 1
_LEN_WEIGHT = np.int64(0x2545F4914F6CDD1D)
_END_MARK = "\U0010ffff"  # a noncharacter: texts holding it are the only ones this can narrow


def _token_dfa(pattern: str, tokenizer: Tokenizer, description: str) -> TokenAutomaton:
    """Regex -> byte DFA -> token DFA with token classes.

    Mostly, the vocabulary's trie is walked once for all states together, level by level, keeping
    only the (start state, trie node) pairs still alive: a structural state dies on most first
    bytes, so the work is the number of live pairs, not states x tokens x bytes. Each token's live
    pairs are its transition signature; tokens with equal signatures share a token class. When
    most states are inside strings, the dense walk over byte classes is cheaper and is used."""
    table, start, accept = byte_dfa(pattern)
    q = table.shape[0] - 1
    vocab = _vocab_for(tokenizer)
    sig, row_of = _signatures(table, q, vocab)
    return _from_signatures(sig, row_of, start, accept[:q], q, description)


def _signatures(table: np.ndarray, q: int, vocab: _Vocab) -> tuple[np.ndarray, np.ndarray]:
    """``sig[r, s]`` (``q``: dead) for the distinct token behaviours and each token's row, by the
    cheaper of the two walks (:func:`build_costs`). States inside a JSON string are read from
    the tokenizer's precomputed string walk instead (:func:`_string_states`)."""
    inside = _string_states(table, q, vocab)
    rest = np.array([x for x in range(q) if x not in inside], dtype=np.int64)
    sparse, dense = build_costs(table, q, vocab, rest)
    if dense < sparse:
        return _dense_signatures(table, q, vocab, np.arange(q))
    tok, src, dst = vocab.walk(table, q, rest)
    sig, row_of = _sparse_signatures(tok, src, dst, q, vocab.size)
    for dup, same in vocab.duplicates:
        row_of[dup] = row_of[same]
    if not inside:
        return sig, row_of
    # inside a string, a token is its end state in the string (a few classes) or, if it closes
    # the string, the walk of the rest of its bytes from there (a few thousand tokens)
    walk = vocab.string_walk()
    states = np.array(sorted(inside), dtype=np.int64)
    n_sub = walk.n_states
    sub_sig = np.full((n_sub + len(walk.exit_tokens) + 1, len(states)), q, dtype=np.int32)
    for j, x in enumerate(states):
        sub_sig[:n_sub, j] = inside[x]
        cur = np.full(len(walk.exit_tokens), table[x, 0x22], dtype=np.int64)
        for p in range(walk.suffixes.shape[1]):
            live = walk.suffix_len > p
            cur[live] = table[cur[live], walk.suffixes[live, p]]
        sub_sig[n_sub : n_sub + len(cur), j] = cur
    key2 = np.where(walk.end_state >= 0, walk.end_state, len(sub_sig) - 1)
    key2[walk.exit_tokens] = n_sub + np.arange(len(walk.exit_tokens))
    for dup, same in vocab.duplicates:
        key2[dup] = key2[same]
    key1 = np.where(row_of < 0, len(sig), row_of)
    key = key1 * len(sub_sig) + key2
    uniq, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    out = np.full((len(uniq), q), q, dtype=np.int32)
    padded = np.concatenate([sig, np.full((1, q), q, dtype=np.int32)])
    out[:, rest] = padded[key1[first]][:, rest]
    out[:, states] = sub_sig[key2[first]]
    rows = inverse.ravel().astype(np.int64)
    rows[(out == q).all(axis=1)[rows]] = -1
    rows[~vocab.has_bytes] = -1
    return out, rows


# one JSON string character, as every JSON string value is written (the JSON Schema compiler's CHAR)
JSON_CHAR = (
    r"(?:[^\x22\x5c\x00-\x1f]|\x5c[\x22\x5c/bfnrt]|\x5cu(?:[0-9a-cA-CefEF][0-9a-fA-F]{3}|[dD][0-7][0-9a-fA-F]{2}))"
)


@dataclass(frozen=True)
class _StringWalk:
    """Every token read from inside a JSON string: ``end_state[t]`` is the string's state after it
    (-1: it closes the string or breaks it), ``exit_tokens`` those that close it, with the bytes
    after the closing quote in ``suffixes`` (``suffix_len`` of them); ``table`` is the string's
    byte DFA and ``inside`` its state just after the opening quote."""

    table: np.ndarray
    inside: int
    n_states: int
    end_state: np.ndarray
    exit_tokens: np.ndarray
    suffixes: np.ndarray
    suffix_len: np.ndarray


def _string_states(table: np.ndarray, q: int, vocab: _Vocab) -> dict[int, np.ndarray]:
    """The states of ``table`` inside a JSON string (every byte but the closing quote leads
    where the canonical JSON string's DFA leads), each with the map from the canonical string's
    states to its own."""
    walk = vocab.string_walk()
    t0, q0 = walk.table, walk.table.shape[0] - 1
    out: dict[int, np.ndarray] = {}
    candidates = np.nonzero((table[:q, 0x22] != q) & ((table[:q] != q).sum(axis=1) > 128))[0]
    for x in candidates.tolist():
        m = np.full(walk.n_states, -1, dtype=np.int64)
        m[walk.inside] = x
        todo, ok = [walk.inside], True
        while todo and ok:
            c = todo.pop()
            row0, row = t0[c].copy(), table[m[c]].copy()
            if c == walk.inside:
                row0[0x22], row[0x22] = q0, q  # the closing quote leaves the string: anything may follow
            if not np.array_equal(row0 == q0, row == q):
                ok = False
                break
            for c2, x2 in set(zip(row0[row0 != q0].tolist(), row[row != q].tolist())):
                if m[c2] < 0:
                    m[c2] = x2
                    todo.append(c2)
                elif m[c2] != x2:
                    ok = False
                    break
        if ok:  # every state the string reaches without closing is mapped
            out[x] = m.astype(np.int32)
    return out


def build_costs(table: np.ndarray, q: int, vocab: _Vocab, walked: np.ndarray | None = None) -> tuple[float, float]:
    """Rough seconds (this machine's numpy) of the sparse trie walk from the states ``walked``
    (default all; the others are read from the string walk) and of the dense walk for the byte
    DFA ``table``. A state that reads most first bytes keeps nearly every trie node alive in the
    sparse walk; the dense walk costs states x vocabulary bytes."""
    if q == 0:
        return 0.0, 0.0
    rows = table[:q] if walked is None else table[walked]
    live = float((rows[:, vocab.first_bytes] != q).mean(axis=1).sum()) if len(rows) else 0.0
    strings = 0.0 if walked is None else (q - len(walked)) * 0.004
    return live * vocab.n_nodes * 1.2e-7 + strings, 0.05 + q * vocab.n_bytes * 3e-9


def automaton_seconds(pattern: str, tokenizer: Tokenizer) -> float:
    """About how long :func:`regex_automaton` takes to build ``pattern`` (0 when cached)."""
    if ("regex:" + pattern, tokenizer.identity) in _AUTOMATA:
        return 0.0
    table, _start, _accept = byte_dfa(pattern)
    q, vocab = table.shape[0] - 1, _vocab_for(tokenizer)
    inside = _string_states(table, q, vocab)
    return min(build_costs(table, q, vocab, np.array([x for x in range(q) if x not in inside], dtype=np.int64)))


def _dense_signatures(table: np.ndarray, q: int, vocab: _Vocab, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Signatures ``[rows, len(starts)]`` from the states ``starts``: bytes with the same column in
    the byte DFA form byte classes; tokens of one length with the same byte-class sequence behave
    alike, so each such sequence is walked once, for all those states together (numpy)."""
    cols, byte_class = np.unique(table.T, axis=0, return_inverse=True)
    byte_class = byte_class.ravel()
    by_class = np.ascontiguousarray(cols.T)  # [Q+1, byte classes]
    # one int64 key per token from its byte-class sequence; equal keys are checked to be equal
    keys = np.zeros(vocab.size, dtype=np.int64)
    has = np.zeros(vocab.size, dtype=bool)
    classes_of: list[np.ndarray] = []
    for ids, mat in vocab.groups:
        cls = byte_class[mat].astype(np.int64)
        classes_of.append(cls)
        with np.errstate(over="ignore"):
            keys[ids] = (cls * _POS_WEIGHTS[: cls.shape[1]]).sum(axis=1) + cls.shape[1] * _LEN_WEIGHT
        has[ids] = True
    if not has.any():
        return np.zeros((0, len(starts)), dtype=np.int32), np.full(vocab.size, -1, dtype=np.int64)
    _uniq_keys, first, inverse = np.unique(keys[has], return_index=True, return_inverse=True)
    rep_token = np.nonzero(has)[0][first]  # one token per distinct sequence
    row_of = np.full(vocab.size, -1, dtype=np.int64)
    row_of[has] = inverse.ravel()
    sig = np.empty((len(rep_token), len(starts)), dtype=np.int32)
    states = starts.astype(np.int32)[None, :]
    for (ids, _mat), cls in zip(vocab.groups, classes_of):
        rows = row_of[ids]
        reps = rep_token[rows]
        pos_in_group = np.searchsorted(ids, reps)
        if not (
            (pos_in_group < len(ids)).all()
            and np.array_equal(ids[np.minimum(pos_in_group, len(ids) - 1)], reps)
            and np.array_equal(cls[pos_in_group], cls)
        ):  # pragma: no cover - a key collision: walk this group token by token
            mine = np.arange(len(ids))
            pos_in_group = mine
            row_of[ids] = len(sig) + mine
            sig = np.concatenate([sig, np.empty((len(ids), len(starts)), dtype=np.int32)])
            rows = row_of[ids]
        todo, where = np.unique(rows, return_index=True)
        cur = np.repeat(states, len(todo), axis=0)
        seqs = cls[pos_in_group[where]]
        for p in range(seqs.shape[1]):
            cur = by_class[cur, seqs[:, p][:, None]]
        sig[todo] = cur
    return sig, row_of


def _sparse_signatures(
    tok: np.ndarray, src: np.ndarray, dst: np.ndarray, q: int, n_tokens: int
) -> tuple[np.ndarray, np.ndarray]:
    """Dense signatures ``sig[r, s]`` (``q``: dead) of the distinct transition sets, and each
    token's row (-1: no live transition). Sets are hashed (two random projections and the size),
    then every token's pairs are checked against its row, so a collision cannot merge tokens."""
    a, b, c, d = np.random.default_rng(0x5EED).random((4, q)) + 1.0
    h1 = np.bincount(tok, weights=a[src] * b[dst], minlength=n_tokens)
    h2 = np.bincount(tok, weights=c[src] * d[dst], minlength=n_tokens)
    n = np.bincount(tok, minlength=n_tokens)
    ids = np.nonzero(n)[0]
    row_of = np.full(n_tokens, -1, dtype=np.int64)
    if len(ids) == 0:
        return np.zeros((0, q), dtype=np.int32), row_of
    key = np.stack([h1[ids], h2[ids], n[ids].astype(np.float64)], axis=1)
    _uniq, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    row_of[ids] = inverse.ravel()
    sig = np.full((len(first), q), q, dtype=np.int32)
    is_rep = np.zeros(n_tokens, dtype=bool)
    is_rep[ids[first]] = True
    mine = is_rep[tok]
    sig[row_of[tok[mine]], src[mine]] = dst[mine]
    if not np.array_equal(sig[row_of[tok], src], dst):  # pragma: no cover - a hash collision
        rows = [frozenset(zip(src[tok == t].tolist(), dst[tok == t].tolist())) for t in ids]
        index: dict[frozenset[tuple[int, int]], int] = {}
        sig_rows = []
        for t, r in zip(ids, rows):
            if r not in index:
                index[r] = len(sig_rows)
                row = np.full(q, q, dtype=np.int32)
                for a, b in r:
                    row[a] = b
                sig_rows.append(row)
            row_of[t] = index[r]
        sig = np.stack(sig_rows)
    return sig, row_of


def _unique_rows(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(a, axis=0, return_inverse=True)`` (rows in any order), fast: rows are hashed to
    int64 by a fixed random projection, and the grouping is checked exactly afterwards."""
    if a.shape[0] == 0 or a.shape[1] == 0:
        uniq, inverse = np.unique(a, axis=0, return_inverse=True)
        return uniq, inverse.ravel()
    rng = np.random.default_rng(0x5EED)
    weights = rng.integers(1, 2**62, size=a.shape[1], dtype=np.int64) | 1
    with np.errstate(over="ignore"):
        h = (a.astype(np.int64) * weights).sum(axis=1) + (a.astype(np.int64) ** 2 * weights[::-1]).sum(axis=1)
    _keys, first, inverse = np.unique(h, return_index=True, return_inverse=True)
    uniq = a[first]
    if not np.array_equal(uniq[inverse], a):  # pragma: no cover - a hash collision
        uniq, inverse = np.unique(a, axis=0, return_inverse=True)
    return uniq, inverse.ravel()


def _from_signatures(
    sig: np.ndarray, row_of: np.ndarray, start: int, accept: np.ndarray, dead: int, description: str
) -> TokenAutomaton:
    """Token classes from per-row transition signatures (``sig[r, s]``, ``dead`` = not allowed):
    keep states reachable from the start that can still reach acceptance, merge equal rows."""
    uniq, inverse = _unique_rows(sig)
    q = sig.shape[1]
    succ: list[set[int]] = [set() for _ in range(q)]
    pred: list[set[int]] = [set() for _ in range(q)]
    for s in range(q):
        targets = np.unique(uniq[:, s])
        for t in targets[targets != dead]:
            succ[s].add(int(t))
            pred[int(t)].add(s)
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
    if not auto.feasible_lengths(auto.n_states).any():
        table, start, accept = byte_dfa(pattern)
        seen, todo = {start}, [start]
        while todo:
            for nxt in set(table[todo.pop()].tolist()) - seen:
                seen.add(nxt)
                todo.append(nxt)
        if accept[sorted(seen)].any():
            raise on_error("unspellable")
    _AUTOMATA[key] = auto
    while len(_AUTOMATA) > _CACHE_SIZE:
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
