"""Grounded constraints: the value is a span of given source texts, exactly, in any order.

"Substrings of T" is a regular language: the **suffix automaton** of T (over bytes, at most
2|T| states, built in linear time) accepts exactly the substrings of T. Several sources are
joined by a separator byte that no transition may read; *whole words* inserts a marker at every
cut between words and determinizes "skip a marker anywhere, start and end after one"; *ignore
case* folds ASCII letters. The result is **intersected** with the slot's own byte DFA (its regex,
or a JSON string's pattern and length) by a product construction, walked straight to tokens
through a trie of the vocabulary (built once per tokenizer; a path dies at the first byte no
source continues with), so an exact token automaton of both constraints at once comes out
without ever building the product's full byte table.

A small result is an ordinary dense :class:`~dlmprompt.constraints.automaton.TokenAutomaton`
(every sampler path takes it); a large one (long sources at a large vocabulary) stays a
:class:`SparseTokenAutomaton` (edge lists), which the host sampler runs with a sparse
forward-backward pass. No torch here.
"""

from __future__ import annotations

import unicodedata
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from dlmprompt.constraints.automaton import TokenAutomaton, Walks, checked_pattern
from dlmprompt.constraints.tokenwalk import byte_dfa, token_bytes_of
from dlmprompt.errors import CompileError

if TYPE_CHECKING:
    from dlmprompt.tokenizer import Tokenizer

SEPARATOR = 0xFF  # joins several sources; never read (it is no UTF-8 byte)
MARKER = 0xFE  # a cut between words (whole_words); never part of a value
# a token automaton stays a dense classes x states table (every sampler path, the GPU's too) when
# it is small or dense enough; otherwise edge lists, whose host pass is far faster on sparse tables
DENSE_CELLS = 1 << 14
DENSE_FILL = 8  # ... or when at least one cell in DENSE_FILL holds an edge
MAX_SOURCE_BYTES = 1 << 16  # the byte table takes ~1.7 KB per source byte; benchmarked to 8,000
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


@dataclass(frozen=True, eq=False)
class SparseTokenAutomaton(Walks):
    """A token automaton kept as edge lists: ``src[e] --cls[e]--> dst[e]``, sorted by ``src``.

    The same questions as :class:`TokenAutomaton` answer here; ``next_state`` is not kept (its
    dense table would be classes x states)."""

    token_class: np.ndarray  # int32 [V], -1: never allowed
    src: np.ndarray  # int32 [E]
    cls: np.ndarray  # int32 [E]
    dst: np.ndarray  # int32 [E]
    n_states: int
    n_classes: int
    start: int
    accept: np.ndarray  # bool [Q]
    description: str = ""
    pad_class: int | None = None
    trivial: bool = field(default=False)
    sparse = True

    @cached_property
    def _lookup(self) -> dict[tuple[int, int], int]:
        return {(int(s), int(c)): int(d) for s, c, d in zip(self.src, self.cls, self.dst)}

    def step(self, state: int, token: int) -> int:
        if state < 0 or not 0 <= token < len(self.token_class) or self.token_class[token] < 0:
            return -1
        return self._lookup.get((state, int(self.token_class[token])), -1)

    def feasible_lengths(self, up_to: int, *, first: bool = False) -> np.ndarray:
        ok = np.zeros(up_to + 1, dtype=bool)
        cur = np.zeros(self.n_states, dtype=bool)
        cur[self.start] = True
        for k in range(up_to + 1):
            ok[k] = bool((cur & self.accept).any())
            if ok[k] and first:
                break
            nxt = np.zeros_like(cur)
            nxt[self.dst[cur[self.src]]] = True
            if not nxt.any():
                break
            cur = nxt
        return ok

    def with_pad(self, pad_id: int) -> SparseTokenAutomaton:
        if self.pad_class is not None:
            return self
        cached = self.__dict__.get("_padded")
        if cached is not None and cached[0] == pad_id:
            return cached[1]
        q, c = self.n_states, self.n_classes
        tc = self.token_class.copy()
        if tc[pad_id] >= 0:
            raise CompileError(f"the pad token {pad_id} spells text; it cannot end a value")
        tc[pad_id] = c
        acc_states = np.nonzero(self.accept)[0].astype(np.int32)
        src = np.concatenate([self.src, acc_states, [q]]).astype(np.int32)
        cls = np.concatenate([self.cls, np.full(len(acc_states) + 1, c)]).astype(np.int32)
        dst = np.concatenate([self.dst, np.full(len(acc_states) + 1, q)]).astype(np.int32)
        order = np.argsort(src, kind="stable")
        padded = SparseTokenAutomaton(
            tc, src[order], cls[order], dst[order], q + 1, c + 1, self.start, np.append(self.accept, True),
            self.description, pad_class=c,
        )  # fmt: skip
        self.__dict__["_padded"] = (pad_id, padded)
        return padded


# ------------------------------------------------------------------------------- byte automata
def _suffix_automaton(data: bytes) -> tuple[list[dict[int, int]], list[int]]:
    """Transitions and the last byte read into each state (-1 for the root) of the suffix
    automaton of ``data``: every substring is a path from state 0, and nothing else is."""
    nxt: list[dict[int, int]] = [{}]
    link, length, last_byte = [-1], [0], [-1]
    last = 0
    for b in data:
        cur = len(nxt)
        nxt.append({})
        length.append(length[last] + 1)
        link.append(0)
        last_byte.append(b)
        p = last
        while p != -1 and b not in nxt[p]:
            nxt[p][b] = cur
            p = link[p]
        if p != -1:
            q = nxt[p][b]
            if length[p] + 1 == length[q]:
                link[cur] = q
            else:
                clone = len(nxt)
                nxt.append(dict(nxt[q]))
                length.append(length[p] + 1)
                link.append(link[q])
                last_byte.append(b)
                while p != -1 and nxt[p].get(b) == q:
                    nxt[p][b] = clone
                    p = link[p]
                link[q] = link[cur] = clone
        last = cur
    return nxt, last_byte


def word_bytes(data: bytes) -> np.ndarray:
    """Which bytes of ``data`` (UTF-8) belong to words: every byte of a letter, mark, digit or
    connector (Unicode categories L*, M*, N*, Pc), and the joiners ``. @ - ' + %`` between two
    word characters (``ada.lovelace@example.org``, ``Saint-Étienne`` and ``O'Brien`` are one word
    each; a period that ends a sentence, quotes, dashes and no-break spaces are not)."""
    text = data.decode("utf-8", errors="replace")
    base = [unicodedata.category(ch)[0] in "LMN" or unicodedata.category(ch) == "Pc" for ch in text]
    word = [
        base[i] or (ch in ".@-'+%" and 0 < i < len(text) - 1 and base[i - 1] and base[i + 1])
        for i, ch in enumerate(text)
    ]
    return np.repeat(np.asarray(word, dtype=bool), [len(ch.encode("utf-8")) for ch in text])


def _cuts(data: bytes) -> bytes:
    """``data`` with MARKER at every place a span may begin or end without cutting a word."""
    word = word_bytes(data) if data else np.zeros(0, dtype=bool)
    out = bytearray([MARKER])
    for i, b in enumerate(data):
        if i and not (word[i - 1] and word[i]):
            out.append(MARKER)
        out.append(b)
    out.append(MARKER)
    return bytes(out)


@dataclass(frozen=True)
class ByteDFA:
    table: np.ndarray  # int32 [Q+1, 256]; state Q is dead
    start: int
    accept: np.ndarray  # bool [Q+1]


def ground_dfa(
    sources: tuple[str, ...], *, whole_words: bool = False, ignore_case: bool = False, allow_empty: bool = False
) -> ByteDFA:
    """The byte DFA of "a substring of one of ``sources``" (with the options; the empty string
    only with ``allow_empty``)."""
    key = (sources, whole_words, ignore_case, allow_empty)
    hit = _GROUND.get(key)
    if hit is not None:
        _GROUND.move_to_end(key)
        return hit
    parts = [s.translate(_ASCII_LOWER) if ignore_case else s for s in sources]
    encoded = [p.encode("utf-8") for p in parts]
    if sum(len(e) for e in encoded) > MAX_SOURCE_BYTES:
        raise CompileError(f"grounding sources hold more than {MAX_SOURCE_BYTES:,} bytes; ground on shorter texts")
    if whole_words:
        encoded = [_cuts(e) for e in encoded]
    nxt, last_byte = _suffix_automaton(bytes([SEPARATOR]).join(encoded))
    if whole_words:
        nxt, accept_list, start = _skip_markers(nxt, last_byte)
    else:
        accept_list, start = [True] * len(nxt), 0
    q = len(nxt)
    table = np.full((q + 1, 256), q, dtype=np.int32)
    for s, d in enumerate(nxt):
        for b, t in d.items():
            if b not in (SEPARATOR, MARKER):
                table[s, b] = t
    if ignore_case:
        upper = np.arange(65, 91)
        table[:, upper] = table[:, upper + 32]
    accept = np.array([*accept_list, False], dtype=bool)
    accept[start] = allow_empty  # nothing leads back to the start: this only decides the empty value
    out = ByteDFA(table, start, accept)
    _GROUND[key] = out
    while len(_GROUND) > 8:
        _GROUND.popitem(last=False)
    return out


def _skip_markers(nxt: list[dict[int, int]], last_byte: list[int]) -> tuple[list[dict[int, int]], list[bool], int]:
    """Determinize "read value bytes, skipping a MARKER anywhere": states are sets of suffix
    automaton states; a value starts right after a marker and may end where one follows."""

    def close(states: frozenset[int]) -> frozenset[int]:
        return states | {nxt[s][MARKER] for s in states if MARKER in nxt[s]}

    start = close(frozenset({nxt[0][MARKER]})) if MARKER in nxt[0] else frozenset()
    ids = {start: 0}
    out: list[dict[int, int]] = [{}]
    todo = [start]
    while todo:
        cur = todo.pop()
        moves: dict[int, set[int]] = {}
        for s in cur:
            for b, t in nxt[s].items():
                if b != MARKER and b != SEPARATOR:
                    moves.setdefault(b, set()).add(t)
        row = out[ids[cur]]
        for b, targets in moves.items():
            tgt = close(frozenset(targets))
            if tgt not in ids:
                ids[tgt] = len(out)
                out.append({})
                todo.append(tgt)
            row[b] = ids[tgt]
    accept = [False] * len(out)
    for states, i in ids.items():
        accept[i] = any(last_byte[s] == MARKER for s in states)
    return out, accept, 0


def quoted(dfa: ByteDFA) -> ByteDFA:
    """The JSON-string form of a ground DFA: ``"`` + a span that holds no quote, backslash or
    control byte (it is then its own JSON spelling) + ``"``."""
    q = dfa.table.shape[0] - 1
    table = np.full((q + 3, 256), q + 2, dtype=np.int32)  # q: before the quote, q+1: after, q+2: dead
    inner = dfa.table.copy()
    inner[inner == q] = q + 2
    inner[:, [0x22, 0x5C, *range(0x20)]] = q + 2
    table[:q] = inner[:q]
    table[:q, 0x22] = np.where(dfa.accept[:q], q + 1, q + 2)
    table[q, 0x22] = dfa.start
    accept = np.zeros(q + 3, dtype=bool)
    accept[q + 1] = True
    return ByteDFA(table, q, accept)


def has_span(sources: tuple[str, ...], pattern: str, *, whole_words: bool = False, ignore_case: bool = False) -> bool:
    """Whether some non-empty span of ``sources`` matches ``pattern`` in full (with the options):
    the product of the two byte DFAs is searched for an accepting pair, no tokenizer needed."""
    ground = ground_dfa(sources, whole_words=whole_words, ignore_case=ignore_case)
    rt, r0, racc = byte_dfa(checked_pattern(pattern, None))
    gt, gdead, rdead = ground.table, ground.table.shape[0] - 1, rt.shape[0] - 1
    width = np.int64(rt.shape[0])
    seen = {int(ground.start) * int(width) + int(r0)}
    g, r = np.array([ground.start], dtype=np.int64), np.array([r0], dtype=np.int64)
    while len(g):
        if (ground.accept[g] & racc[r]).any():
            return True
        g2, r2 = gt[g].ravel(), rt[r].ravel()  # every byte from every pair
        ok = (g2 != gdead) & (r2 != rdead)
        keys = np.unique(g2[ok].astype(np.int64) * width + r2[ok])
        keys = np.asarray([k for k in keys.tolist() if k not in seen], dtype=np.int64)
        seen.update(keys.tolist())
        g, r = keys // width, keys % width
    return False


# ------------------------------------------------------------------------------- to tokens
class _Trie:
    """The byte trie of a tokenizer's vocabulary (CSR children), built once per tokenizer."""

    def __init__(self, tokens: list[bytes]) -> None:
        children: list[dict[int, int]] = [{}]
        token_at = [-1]
        self.twins: list[tuple[int, int]] = []
        for tid, data in enumerate(tokens):
            node = 0
            for b in data:
                nxt = children[node].get(b)
                if nxt is None:
                    nxt = len(children)
                    children[node][b] = nxt
                    children.append({})
                    token_at.append(-1)
                node = nxt
            if data:
                if token_at[node] >= 0:
                    self.twins.append((tid, token_at[node]))  # same bytes: the same class
                else:
                    token_at[node] = tid
        self.token_at = np.asarray(token_at, dtype=np.int64)
        counts = np.fromiter((len(c) for c in children), dtype=np.int64, count=len(children))
        self.first = np.concatenate([[0], np.cumsum(counts)[:-1]])
        self.count = counts
        self.byte = np.fromiter((b for c in children for b in c), dtype=np.int64, count=int(counts.sum()))
        self.child = np.fromiter((n for c in children for n in c.values()), dtype=np.int64, count=int(counts.sum()))


def _trie_for(tokenizer: Tokenizer) -> _Trie:
    hit = _TRIES.get(tokenizer.identity)
    if hit is None:
        hit = _TRIES[tokenizer.identity] = _Trie(token_bytes_of(tokenizer))
        while len(_TRIES) > 4:
            _TRIES.popitem(last=False)
    return hit


def grounded_automaton(
    sources: tuple[str, ...],
    pattern: str,
    tokenizer: Tokenizer,
    *,
    whole_words: bool = False,
    ignore_case: bool = False,
    allow_empty: bool = False,
    json_string: bool = False,
    slot: str | None = None,
) -> TokenAutomaton | SparseTokenAutomaton:
    """The token automaton of "a span of ``sources`` that matches ``pattern``" (``json_string``:
    ``pattern`` describes a JSON string, quotes included, and the span sits inside the quotes)."""
    key = (sources, pattern, whole_words, ignore_case, allow_empty, json_string, tokenizer.identity)
    hit = _AUTOMATA.get(key)
    if hit is not None:
        _AUTOMATA.move_to_end(key)
        return hit
    ground = ground_dfa(sources, whole_words=whole_words, ignore_case=ignore_case, allow_empty=allow_empty)
    if json_string:
        ground = quoted(ground)
    rt, r0, racc = byte_dfa(checked_pattern(pattern, slot))
    auto = _lift(ground, (rt, r0, racc), tokenizer, f"a span of the source text matching {pattern!r}")
    if not auto.accept.any():
        raise CompileError(
            f"no span of the source text matches {pattern!r}"
            + (" (whole words only)" if whole_words else "")
            + "; check the text, the pattern, or ground another slot",
            slot=slot,
        )
    _AUTOMATA[key] = auto
    while len(_AUTOMATA) > 64:
        _AUTOMATA.popitem(last=False)
    return auto


def _lift(
    ground: ByteDFA, regex: tuple[np.ndarray, int, np.ndarray], tokenizer: Tokenizer, description: str
) -> TokenAutomaton | SparseTokenAutomaton:
    gt, g0, gacc = ground.table, ground.start, ground.accept
    rt, r0, racc = regex
    gdead, rdead = gt.shape[0] - 1, rt.shape[0] - 1
    width = np.int64(rt.shape[0])
    trie = _trie_for(tokenizer)
    # breadth-first over product states (g, r), each expanded through the trie at once
    keys = {int(g0) * int(width) + int(r0): 0}
    states_g, states_r = [g0], [r0]
    frontier = np.array([0], dtype=np.int64)
    front_g, front_r = np.array([g0], dtype=np.int64), np.array([r0], dtype=np.int64)
    e_src, e_tok, e_dst = [], [], []
    while len(frontier):
        st, g, r = frontier, front_g, front_r
        node = np.zeros(len(st), dtype=np.int64)
        found_src, found_tok, found_key = [], [], []
        while len(st):
            cnt = trie.count[node]
            rep = np.repeat(np.arange(len(st)), cnt)
            if not len(rep):
                break
            idx = np.repeat(trie.first[node], cnt) + (np.arange(len(rep)) - np.repeat(np.cumsum(cnt) - cnt, cnt))
            b = trie.byte[idx]
            g2 = gt[g[rep], b]
            r2 = rt[r[rep], b]
            ok = (g2 != gdead) & (r2 != rdead)
            st, g, r, node = st[rep][ok], g2[ok], r2[ok], trie.child[idx][ok]
            done = trie.token_at[node] >= 0
            found_src.append(st[done])
            found_tok.append(trie.token_at[node][done])
            found_key.append(g[done].astype(np.int64) * width + r[done])
        if not found_src:
            break
        fs, ft, fk = np.concatenate(found_src), np.concatenate(found_tok), np.concatenate(found_key)
        new, new_keys = [], []
        dst = np.empty(len(fk), dtype=np.int64)
        for i, k in enumerate(fk.tolist()):
            d = keys.get(k)
            if d is None:
                d = keys[k] = len(states_g)
                states_g.append(k // int(width))
                states_r.append(k % int(width))
                new.append(d)
                new_keys.append(k)
            dst[i] = d
        e_src.append(fs)
        e_tok.append(ft)
        e_dst.append(dst)
        frontier = np.asarray(new, dtype=np.int64)
        nk = np.asarray(new_keys, dtype=np.int64)
        front_g, front_r = nk // width, nk % width
    q = len(states_g)
    accept = gacc[np.asarray(states_g)] & racc[np.asarray(states_r)]
    src = np.concatenate(e_src) if e_src else np.zeros(0, dtype=np.int64)
    tok = np.concatenate(e_tok) if e_tok else np.zeros(0, dtype=np.int64)
    dst = np.concatenate(e_dst) if e_dst else np.zeros(0, dtype=np.int64)
    if trie.twins:  # a token spelled like another walks the same edges
        twin, first = np.asarray(trie.twins, dtype=np.int64).T
        order = np.argsort(tok, kind="stable")
        lo = np.searchsorted(tok[order], first)
        hi = np.searchsorted(tok[order], first, side="right")
        extra = [(order[a:b], t) for a, b, t in zip(lo, hi, twin) if b > a]
        if extra:
            sel = np.concatenate([e for e, _ in extra])
            src = np.concatenate([src, src[sel]])
            dst = np.concatenate([dst, dst[sel]])
            tok = np.concatenate([tok, np.concatenate([np.full(len(e), t) for e, t in extra])])
    return _classes(src, tok, dst, q, 0, accept, tokenizer, description)


def _classes(
    src: np.ndarray,
    tok: np.ndarray,
    dst: np.ndarray,
    q: int,
    start: int,
    accept: np.ndarray,
    tokenizer: Tokenizer,
    description: str,
) -> TokenAutomaton | SparseTokenAutomaton:
    """Token classes (tokens with equal edge sets), dead states trimmed; dense when small."""
    # live states: those that reach acceptance
    live = accept.copy()
    by_dst = np.argsort(dst, kind="stable")
    lo = np.searchsorted(dst[by_dst], np.arange(q + 1))
    todo = np.nonzero(live)[0]
    while len(todo):  # each state enters the frontier once: O(edges)
        cnt = lo[todo + 1] - lo[todo]
        idx = np.repeat(lo[todo], cnt) + (np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt))
        prev = np.unique(src[by_dst[idx]])
        todo = prev[~live[prev]]
        live[todo] = True
    if not live[start]:
        live[:] = False
        live[start] = True
    keep = live[src] & live[dst]
    src, tok, dst = src[keep], tok[keep], dst[keep]
    remap = np.cumsum(live) - 1
    src, dst = remap[src], remap[dst]
    q = int(live.sum())
    accept = accept[live]
    start = int(remap[start])
    v = len(tokenizer.token_bytes)
    # one class per distinct edge set: hash each token's sorted (src, dst) pairs
    order = np.lexsort((dst, src, tok))
    src, tok, dst = src[order], tok[order], dst[order]
    rng = np.random.default_rng(0x5EED)
    w1, w2 = (int(x) | 1 for x in rng.integers(1, 2**62, size=2))
    with np.errstate(over="ignore"):
        pair = src.astype(np.int64) * np.int64(w1) + dst.astype(np.int64) * np.int64(w2)
        pair = pair ^ (pair >> np.int64(29))
        h = np.zeros(v, dtype=np.int64)
        np.add.at(h, tok, pair)
    used = np.unique(tok)
    n_edges = np.bincount(tok, minlength=v)
    sig = np.stack([h[used], n_edges[used]], axis=1)
    _, first, cls_of_used = np.unique(sig, axis=0, return_index=True, return_inverse=True)
    cls_of_used = cls_of_used.ravel()
    token_class = np.full(v, -1, dtype=np.int32)
    token_class[used] = cls_of_used
    rep = used[first]  # one token per class: its edges are the class's
    c = len(rep)
    is_rep = np.zeros(v, dtype=bool)
    is_rep[rep] = True
    sel = is_rep[tok]
    e_src, e_cls, e_dst = src[sel], token_class[tok[sel]], dst[sel]
    _check_classes(token_class, src, tok, dst, e_cls, e_src, e_dst, q)
    if c * q <= DENSE_CELLS or len(e_src) * DENSE_FILL >= c * q:
        ns = np.full((c, q), -1, dtype=np.int32)
        ns[e_cls, e_src] = e_dst
        return TokenAutomaton(token_class, ns, start, accept.astype(bool), description)
    o = np.lexsort((e_cls, e_src))  # by state, then class (ties break as in the dense pass)
    return SparseTokenAutomaton(
        token_class, e_src[o].astype(np.int32), e_cls[o].astype(np.int32), e_dst[o].astype(np.int32), q, c, start,
        accept.astype(bool), description,
    )  # fmt: skip


def _check_classes(
    token_class: np.ndarray,
    src: np.ndarray,
    tok: np.ndarray,
    dst: np.ndarray,
    e_cls: np.ndarray,
    e_src: np.ndarray,
    e_dst: np.ndarray,
    q: int,
) -> None:
    """Every token's edges are exactly its class's (the hashing into classes made no collision)."""
    qq = np.int64(q) * np.int64(q)
    mine = token_class[tok].astype(np.int64) * qq + src.astype(np.int64) * q + dst
    theirs = e_cls.astype(np.int64) * qq + e_src.astype(np.int64) * q + e_dst
    per_token = np.bincount(tok, minlength=len(token_class))
    per_class = np.bincount(e_cls, minlength=int(token_class.max()) + 1 if len(e_cls) else 0)
    has = token_class >= 0
    if not (np.isin(mine, theirs).all() and np.array_equal(per_token[has], per_class[token_class[has]])):
        raise CompileError("internal error: grounded token classes collided; please report this")  # pragma: no cover


_GROUND: OrderedDict[tuple[tuple[str, ...], bool, bool, bool], ByteDFA] = OrderedDict()
_TRIES: OrderedDict[str, _Trie] = OrderedDict()
_AUTOMATA: OrderedDict[tuple[object, ...], TokenAutomaton | SparseTokenAutomaton] = OrderedDict()
