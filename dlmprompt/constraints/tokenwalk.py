"""Regex -> byte DFA -> each token's transitions: the walks that build token automata.

The byte DFA is outlines-core's ``Index`` (Rust) over the 256 single bytes. A token's
transitions from every state (its *signature*) come from one of three walks over the
tokenizer's vocabulary, whichever is cheaper for the DFA at hand: the sparse walk of the
vocabulary's trie (live (state, node) pairs only), the dense walk over byte classes, and, for
states inside a JSON string, a walk precomputed once per tokenizer. :mod:`.automaton` turns
signatures into token classes. No torch here.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from dlmprompt.tokenizer import Tokenizer


class Vocabulary:
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


_VOCABS: OrderedDict[str, Vocabulary] = OrderedDict()
_BYTE_DFAS: OrderedDict[str, tuple[np.ndarray, int, np.ndarray]] = OrderedDict()
CACHE_SIZE = 512


def token_bytes_of(tokenizer: Tokenizer) -> list[bytes]:
    """Each token's bytes (``b""`` for special tokens, which never spell text)."""
    return [b or b"" for b in tokenizer.token_bytes]


def vocabulary_for(tokenizer: Tokenizer) -> Vocabulary:
    key = tokenizer.identity
    v = _VOCABS.get(key)
    if v is None:
        v = Vocabulary(tokenizer)
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
    if NATIVE_MARK in pattern:  # a shape outlines-core builds in exponential time
        from dlmprompt.constraints.regexdfa import Unsupported, build_byte_dfa

        try:
            out = build_byte_dfa(pattern, max_states=NATIVE_MAX_STATES)
        except Unsupported:
            pass
        else:
            _BYTE_DFAS[pattern] = out
            while len(_BYTE_DFAS) > CACHE_SIZE:
                _BYTE_DFAS.popitem(last=False)
            return out
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
    while len(_BYTE_DFAS) > CACHE_SIZE:
        _BYTE_DFAS.popitem(last=False)
    return out


_BYTE_VOCAB = None
NATIVE_MARK = "(?:){0}"  # matches the empty string only: a neutral mark on regexes built natively
NATIVE_MAX_STATES = 20_000  # past this the native construction gives way to outlines-core
_POS_WEIGHTS = np.random.default_rng(0x5EED).integers(1, 2**62, size=4096, dtype=np.int64) | 1
_LEN_WEIGHT = np.int64(0x2545F4914F6CDD1D)
_END_MARK = "\U0010ffff"  # a noncharacter: texts holding it are the only ones this can narrow


def signatures(table: np.ndarray, q: int, vocab: Vocabulary) -> tuple[np.ndarray, np.ndarray]:
    """``sig[r, s]`` (``q``: dead) for the distinct token behaviours and each token's row, by the
    cheaper of the two walks (:func:`build_costs`). States inside a JSON string are read from
    the tokenizer's precomputed string walk instead (:func:`string_states`)."""
    inside = string_states(table, q, vocab)
    rest = np.array([x for x in range(q) if x not in inside], dtype=np.int64)
    sparse, dense = build_costs(table, q, vocab, rest)
    if dense < sparse:
        return dense_signatures(table, q, vocab, np.arange(q))
    tok, src, dst = vocab.walk(table, q, rest)
    sig, row_of = sparse_signatures(tok, src, dst, q, vocab.size)
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


def string_states(table: np.ndarray, q: int, vocab: Vocabulary) -> dict[int, np.ndarray]:
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


def build_costs(table: np.ndarray, q: int, vocab: Vocabulary, walked: np.ndarray | None = None) -> tuple[float, float]:
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


def sparse_signatures(
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


def dense_signatures(table: np.ndarray, q: int, vocab: Vocabulary, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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
    walks: list[tuple[np.ndarray, np.ndarray]] = []  # (rows of sig, byte-class sequences) per length
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
        walks.append((todo, cls[pos_in_group[where]]))
    _walk_shared(walks, by_class, starts.astype(np.int32), sig)
    return sig, row_of


def _walk_shared(
    walks: list[tuple[np.ndarray, np.ndarray]], by_class: np.ndarray, starts: np.ndarray, sig: np.ndarray
) -> None:
    """Fill ``sig[rows]`` with the states each byte-class sequence reaches from ``starts``,
    walking shared prefixes once: level by level, the distinct (prefix, next class) pairs of all
    sequences still going are the next level's nodes, each a vector of states."""
    n_cls = by_class.shape[1]
    node_of = [np.zeros(len(rows), dtype=np.int64) for rows, _ in walks]
    level = starts[None, :]  # the root: [1, len(starts)]
    depth = max((seqs.shape[1] for _, seqs in walks), default=0)
    for p in range(depth):
        going = [g for g, (_, seqs) in enumerate(walks) if seqs.shape[1] > p]
        keys = np.concatenate([node_of[g] * n_cls + walks[g][1][:, p] for g in going])
        uniq, inverse = np.unique(keys, return_inverse=True)
        level = by_class[level[uniq // n_cls], (uniq % n_cls)[:, None]]
        inverse = inverse.ravel()
        at = 0
        for g in going:
            rows, seqs = walks[g]
            node_of[g] = inverse[at : at + len(rows)]
            at += len(rows)
            if seqs.shape[1] == p + 1:  # these sequences end here
                sig[rows] = level[node_of[g]]
