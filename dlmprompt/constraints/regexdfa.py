"""Regex -> byte DFA, here: Python's regex parser, a Thompson NFA over UTF-8 byte ranges, the
subset construction over byte intervals, and Moore minimisation.

outlines-core (Rust) builds most patterns in milliseconds, but its construction is exponential on
nested alternations under stars: ``(?:|[^a]X*|a(?:|[^b]X*|b(...)))``, the shape of "any string
but these", took 0.03 s at 4 nested levels and 250 s at 8, for a 58-state DFA. Here the work is
the DFA's states times the NFA states in each (small on that shape), in Python: slower than
outlines-core on large regexes, so only patterns marked with ``tokenwalk.NATIVE_MARK`` come here
(:func:`~dlmprompt.constraints.tokenwalk.byte_dfa`). Semantics are Python's ``re`` (the acceptance checks compare
against it): ``.`` is any character but ``\\n``, classes such as ``\\w`` and ``\\s`` are Python's
Unicode ones. Anchors, look-arounds, back-references and flags are not handled
(:class:`Unsupported`); callers fall back to outlines-core for those. No dlmprompt imports.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import numpy as np

try:  # Python 3.11+
    import re._parser as _sre_parse  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - Python 3.10
    import sre_parse as _sre_parse  # type: ignore[no-redef]

MAX_UNICODE = 0x10FFFF
MAX_DFA_STATES = 200_000  # past this the construction stops (Unsupported): the caller decides


class Unsupported(ValueError):
    """A construct this builder does not take (anchors, look-arounds, flags, ...)."""


Ranges = list[tuple[int, int]]


def _normalise(ranges: Ranges) -> Ranges:
    """Sorted, merged code point ranges without the surrogates (UTF-8 cannot encode them)."""
    out: Ranges = []
    for a, b in sorted(ranges):
        for lo, hi in ((a, min(b, 0xD7FF)), (max(a, 0xE000), b)):
            if lo > hi:
                continue
            if out and lo <= out[-1][1] + 1:
                out[-1] = (out[-1][0], max(out[-1][1], hi))
            else:
                out.append((lo, hi))
    return out


def _complement(ranges: Ranges) -> Ranges:
    out: Ranges = []
    lo = 0
    for a, b in _normalise(ranges):
        if a > lo:
            out.append((lo, a - 1))
        lo = b + 1
    if lo <= MAX_UNICODE:
        out.append((lo, MAX_UNICODE))
    return _normalise(out)


@lru_cache(maxsize=16)
def _category(name: str) -> tuple[tuple[int, int], ...]:
    """The code points Python's ``re`` puts in a class such as ``\\w`` (read from ``re`` itself)."""
    rx = re.compile({"DIGIT": r"\d+", "WORD": r"\w+", "SPACE": r"\s+"}[name])
    out: Ranges = []
    for lo, hi in ((0, 0xD7FF), (0xE000, MAX_UNICODE)):
        text = "".join(map(chr, range(lo, hi + 1)))
        out.extend((lo + m.start(), lo + m.end() - 1) for m in rx.finditer(text))
    return tuple(out)


def _category_ranges(cat: str) -> Ranges:
    neg = "_NOT_" in cat
    base = cat.replace("CATEGORY_NOT_", "").replace("CATEGORY_", "")
    if base not in ("DIGIT", "WORD", "SPACE"):
        raise Unsupported(f"class {cat}")
    ranges = list(_category(base))
    return _complement(ranges) if neg else ranges


def _class(items: list[tuple[Any, Any]]) -> Ranges:
    out: Ranges = []
    negate = False
    for op, av in items:
        name = str(op)
        if name == "NEGATE":
            negate = True
        elif name == "LITERAL":
            out.append((av, av))
        elif name == "RANGE":
            out.append((av[0], av[1]))
        elif name == "CATEGORY":
            out.extend(_category_ranges(str(av)))
        else:
            raise Unsupported(f"{name} inside [...]")
    return _complement(out) if negate else _normalise(out)


def utf8_sequences(lo: int, hi: int) -> list[list[tuple[int, int]]]:
    """The code points ``lo..hi`` (no surrogates) as sequences of byte ranges, one per encoded
    length and alignment (each sequence matches exactly the encodings of a sub-range)."""
    out: list[list[tuple[int, int]]] = []

    def split(a: int, b: int) -> None:
        if a > b:
            return
        for edge in (0x7F, 0x7FF, 0xFFFF):  # one encoded length per piece
            if a <= edge < b:
                split(a, edge)
                split(edge + 1, b)
                return
        n = len(chr(a).encode())
        for i in range(1, n):
            m = (1 << (6 * i)) - 1
            if (a & ~m) != (b & ~m):
                if a & m:
                    split(a, a | m)
                    split((a | m) + 1, b)
                    return
                if (b & m) != m:
                    split(a, (b & ~m) - 1)
                    split(b & ~m, b)
                    return
        out.append(list(zip(chr(a).encode(), chr(b).encode(), strict=True)))

    split(lo, hi)
    return out


class _NFA:
    def __init__(self) -> None:
        self.eps: list[list[int]] = []
        self.edges: list[list[tuple[int, int, int]]] = []

    def state(self) -> int:
        self.eps.append([])
        self.edges.append([])
        return len(self.eps) - 1

    def chars(self, ranges: Ranges, start: int) -> int:
        end = self.state()
        for a, b in ranges:
            for seq in utf8_sequences(a, b):
                cur = start
                for k, (x, y) in enumerate(seq):
                    nxt = end if k == len(seq) - 1 else self.state()
                    self.edges[cur].append((x, y, nxt))
                    cur = nxt
        return end

    def build(self, items: Any, start: int) -> int:
        cur = start
        for op, av in items:
            cur = self.node(str(op), av, cur)
        return cur

    def node(self, name: str, av: Any, start: int) -> int:
        if name == "LITERAL":
            return self.chars(_normalise([(av, av)]), start)
        if name == "NOT_LITERAL":
            return self.chars(_complement([(av, av)]), start)
        if name == "ANY":
            return self.chars(_complement([(10, 10)]), start)
        if name == "IN":
            return self.chars(_class(av), start)
        if name == "SUBPATTERN":
            if av[1] or av[2]:
                raise Unsupported("inline flags")
            return self.build(av[-1], start)
        if name == "BRANCH":
            end = self.state()
            for branch in av[1]:
                s = self.state()
                self.eps[start].append(s)
                self.eps[self.build(branch, s)].append(end)
            return end
        if name in ("MAX_REPEAT", "MIN_REPEAT"):
            lo, hi, sub = av
            cur = start
            for _ in range(lo):
                cur = self.build(sub, cur)
            if hi == _sre_parse.MAXREPEAT:
                loop = self.state()
                self.eps[cur].append(loop)
                self.eps[self.build(sub, loop)].append(loop)
                return loop
            end = self.state()
            for _ in range(hi - lo):
                self.eps[cur].append(end)
                cur = self.build(sub, cur)
            self.eps[cur].append(end)
            return end
        raise Unsupported(name.lower().replace("_", " "))


def build_byte_dfa(pattern: str, max_states: int = MAX_DFA_STATES) -> tuple[np.ndarray, int, np.ndarray]:
    """``(table, start, accept)`` of the minimal DFA of ``pattern`` (full match) over bytes:
    ``table[q, byte]``, with one dead state last; raises :class:`Unsupported` (also past
    ``max_states`` states of the subset construction)."""
    try:
        parsed = _sre_parse.parse(pattern)
    except re.error as exc:
        raise Unsupported(f"does not parse: {exc}") from None
    if parsed.state.flags & (re.IGNORECASE | re.MULTILINE | re.DOTALL | re.VERBOSE | re.ASCII | re.LOCALE):
        raise Unsupported("flags")
    nfa = _NFA()
    start = nfa.state()
    final = nfa.build(parsed, start)
    return _determinise(nfa, start, final, max_states)


def _determinise(nfa: _NFA, start: int, final: int, max_states: int) -> tuple[np.ndarray, int, np.ndarray]:
    eps, edges = nfa.eps, nfa.edges
    closures: dict[int, frozenset[int]] = {}

    def closure(s: int) -> frozenset[int]:
        hit = closures.get(s)
        if hit is not None:
            return hit
        seen, todo = {s}, [s]
        while todo:
            for t in eps[todo.pop()]:
                if t not in seen:
                    seen.add(t)
                    todo.append(t)
        # keep the states that read a byte, and the final one (the rest only pass on)
        out = frozenset(x for x in seen if edges[x] or x == final)
        closures[s] = out
        return out

    first = closure(start)
    ids: dict[frozenset[int], int] = {first: 0}
    sets = [first]
    rows: list[list[tuple[int, int, int]]] = []
    k = 0
    while k < len(sets):
        members = sets[k]
        k += 1
        events: list[tuple[int, int, int]] = []  # (byte, +1 / -1, target)
        for s in members:
            for a, b, t in edges[s]:
                events.append((a, 1, t))
                events.append((b + 1, -1, t))
        events.sort()
        active: dict[int, int] = {}
        row: list[tuple[int, int, int]] = []
        i = 0
        while i < len(events):
            pos = events[i][0]
            while i < len(events) and events[i][0] == pos:
                _, d, t = events[i]
                n = active.get(t, 0) + d
                if n:
                    active[t] = n
                else:
                    del active[t]
                i += 1
            if active and pos < 256:
                stop = events[i][0] - 1 if i < len(events) else 255
                target: frozenset[int] = frozenset().union(*(closure(t) for t in active))
                j = ids.get(target)
                if j is None:
                    j = ids[target] = len(sets)
                    sets.append(target)
                    if len(sets) > max_states:
                        raise Unsupported(f"more than {max_states} DFA states")
                row.append((pos, min(stop, 255), j))
        rows.append(row)
    q = len(sets)
    table = np.full((q + 1, 256), q, dtype=np.int32)
    for x, row in enumerate(rows):
        for a, b, j in row:
            table[x, a : b + 1] = j
    accept = np.zeros(q + 1, dtype=bool)
    accept[[x for x, m in enumerate(sets) if final in m]] = True
    return minimise(table, 0, accept)


def minimise(table: np.ndarray, start: int, accept: np.ndarray) -> tuple[np.ndarray, int, np.ndarray]:
    """Moore's partition refinement; the class of the dead state (last in ``table``: every state
    that cannot reach acceptance) is last in the result too."""
    q = table.shape[0] - 1
    cls = accept.astype(np.int64)
    n = len(np.unique(cls))
    weights = np.random.default_rng(0x5EED).integers(1, 2**62, size=table.shape[1] + 1, dtype=np.int64) | 1
    while True:
        sig = np.concatenate([cls[:, None], cls[table]], axis=1)
        with np.errstate(over="ignore"):
            h = (sig * weights).sum(axis=1) + ((sig + 1) ** 2 * weights[::-1]).sum(axis=1)
        _, first, new = np.unique(h, return_index=True, return_inverse=True)
        new = new.ravel()
        if not np.array_equal(sig[first][new], sig):  # pragma: no cover - a hash collision
            _, new = np.unique(sig, axis=0, return_inverse=True)
            new = new.ravel()
        m = int(new.max()) + 1
        cls = new
        if m == n:
            break
        n = m
    dead = int(cls[q])
    order = [c for c in dict.fromkeys(cls.tolist()) if c != dead] + [dead]
    renum = np.empty(n, dtype=np.int64)
    renum[order] = np.arange(n)
    rep = np.zeros(n, dtype=np.int64)
    rep[renum[cls]] = np.arange(q + 1)
    small = renum[cls[table[rep]]].astype(np.int32)
    return small, int(renum[cls[start]]), accept[rep].copy()


__all__ = ["MAX_DFA_STATES", "Unsupported", "build_byte_dfa", "minimise", "utf8_sequences"]
