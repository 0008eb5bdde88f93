"""Regex pieces for JSON values: literals, alternations, integer ranges as digit patterns, JSON
string characters, and JSON Schema ``pattern`` (ECMA-262 subset) translated to the common dialect of
Python ``re`` and outlines-core. No schema logic here."""

from __future__ import annotations

import re
from typing import Any

from dlmprompt.constraints.automaton import escape_literal
from dlmprompt.constraints.tokenwalk import JSON_CHAR, NATIVE_MARK

try:  # Python 3.11+
    import re._parser as _sre_parse  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - Python 3.10
    import sre_parse as _sre_parse  # type: ignore[no-redef]


QUOTE = escape_literal('"')


BACKSLASH = escape_literal("\\")


# one JSON string character: unescaped, a short escape, or a \u escape of a non-surrogate (the
# token automata read values of this shape from a walk precomputed per tokenizer)
CHAR = JSON_CHAR


STRING = f"{QUOTE}{CHAR}*{QUOTE}"


INT = r"-?(?:0|[1-9][0-9]*)"


NUMBER = r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+\-]?[0-9]+)?"


KEY_CHAR = r"[^\x22\x5c\x00-\x1f]"  # extra property names: no escapes (so no name is spelled twice)


MAX_COUNTED = 128  # largest {m,n} bound written out; longer bounds narrow the language to it


MAX_ITEMS = 32  # largest maxItems written out


MAX_REGION = 6000  # longest regex of a run of object members (larger members are left out)


MAX_SHARED = 3000  # longest member regex copied into two alternatives


ANY_DEPTH = 1  # nesting depth of values under an unconstrained schema ({} / true)


FORMATS = {
    "date": r"(?:000[1-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-9][0-9]{3})"
    r"-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
    r"|02-(?:0[1-9]|1[0-9]|2[0-8]))",
    "time": r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?(?:Z|[+\-](?:[01][0-9]|2[0-3]):[0-5][0-9])",
    "email": r"[A-Za-z0-9](?:[A-Za-z0-9._+\-]{0,30}[A-Za-z0-9])?@[A-Za-z0-9](?:[A-Za-z0-9\-]{0,30}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z]{2,10}){1,3}",
    "uuid": r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
    "ipv4": r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])",
    "hostname": r"[A-Za-z0-9](?:[A-Za-z0-9\-]{0,20}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]{0,20}[A-Za-z0-9])?){0,4}",
    "uri": r"[a-z][a-z0-9+.\-]{0,10}://[A-Za-z0-9](?:[A-Za-z0-9\-.]{0,40}[A-Za-z0-9])?(?::[0-9]{1,5})?"
    r"(?:/[A-Za-z0-9\-._~%!$&'()*+,;=:@]{0,40}){0,8}",
}


# the formats JSON Schema defines: one of these that cannot be checked is refused (validators
# check them); any other format name is an annotation and constrains nothing
STANDARD_FORMATS = frozenset(
    "date-time date time duration email idn-email hostname idn-hostname ipv4 ipv6 uri uri-reference iri "
    "iri-reference uuid uri-template json-pointer relative-json-pointer regex".split()
)


FORMATS["date-time"] = FORMATS["date"] + "T" + FORMATS["time"]


FORMATS["uri-reference"] = FORMATS["uri"]


FORMATS["url"] = FORMATS["uri"]


def lit(text: str) -> str:
    return escape_literal(text)


def alt(options: list[str]) -> str:
    options = list(dict.fromkeys(options))
    if len(options) == 1:
        return options[0]
    return "(?:" + "|".join(options) + ")"


def _opt(r: str) -> str:
    return f"(?:{r})?"


def _digits_between(lo: str, hi: str) -> str:
    """Digit strings of len(lo) == len(hi) between lo and hi inclusive (leading zeros allowed)."""
    if not lo:
        return ""
    if lo == hi:
        return lo
    if lo[0] == hi[0]:
        return lo[0] + _digits_between(lo[1:], hi[1:])
    n = len(lo) - 1
    rest = f"[0-9]{{{n}}}" if n else ""
    parts = [lo[0] + _digits_between(lo[1:], "9" * n)]
    a, b = int(lo[0]) + 1, int(hi[0]) - 1
    if a <= b:
        parts.append((f"[{a}-{b}]" if a < b else str(a)) + rest)
    parts.append(hi[0] + _digits_between("0" * n, hi[1:]))
    return alt(parts)


def _nonneg_range(lo: int, hi: int | None) -> str | None:
    """Canonical decimal naturals in [lo, hi] (hi None: unbounded)."""
    if hi is not None and hi < lo:
        return None
    parts = []
    if lo == 0:
        parts.append("0")
        lo = 1
        if hi is not None and hi < 1:
            return "0"
    ls = str(lo)
    top = len(str(hi)) if hi is not None else None
    for n in range(len(ls), (top or len(ls)) + 1):
        a = ls if n == len(ls) else "1" + "0" * (n - 1)
        b = str(hi) if (top is not None and n == top) else "9" * n
        parts.append(_digits_between(a, b))
    if top is None:
        parts.append(f"[1-9][0-9]{{{len(ls)},}}")
    return alt(parts)


def int_range(lo: int | None, hi: int | None) -> str | None:
    """Canonical decimal integers in [lo, hi]; ``None`` if the range is empty."""
    if lo is not None and hi is not None and lo > hi:
        return None
    parts = []
    if hi is None or hi >= 0:  # the non-negative side
        r = _nonneg_range(max(lo, 0) if lo is not None else 0, hi)
        if r:
            parts.append(r)
    if lo is None or lo < 0:  # the negative side: -m with m in [max(1, -hi), -lo]
        mlo = max(1, -hi) if hi is not None else 1
        r = _nonneg_range(mlo, -lo if lo is not None else None)
        if r:
            parts.append("-" + (r if len(r) < 2 or r.startswith("(?:") else f"(?:{r})"))
    return alt(parts) if parts else None


_CLASS_WORD = "A-Za-z0-9_"


_CLASS_SPACE = r"\x09-\x0d\x20"


def _class_items(items: list[tuple[Any, Any]]) -> tuple[list[tuple[int, int]], bool]:
    """Code point ranges of an ``IN`` item list, and whether it is negated."""
    out: list[tuple[int, int]] = []
    negate = False
    cats = {str(av) for op, av in items if str(op) == "CATEGORY"}
    pairs = ("CATEGORY_DIGIT", "CATEGORY_WORD", "CATEGORY_SPACE")
    if any(c in cats and c.replace("CATEGORY_", "CATEGORY_NOT_") in cats for c in pairs):
        # [\s\S], [\d\D], [\w\W]: every character, whatever the dialect's classes hold
        negate = any(str(op) == "NEGATE" for op, _ in items)
        return [(0, 0x10FFFF)], negate
    for op, av in items:
        name = str(op)
        if name == "NEGATE":
            negate = True
        elif name == "LITERAL":
            out.append((av, av))
        elif name == "RANGE":
            out.append((av[0], av[1]))
        elif name == "CATEGORY":
            cat = str(av)
            if cat == "CATEGORY_DIGIT":
                out.append((48, 57))
            elif cat == "CATEGORY_WORD":
                out += [(65, 90), (97, 122), (48, 57), (95, 95)]
            elif cat == "CATEGORY_SPACE":
                out += [(9, 13), (32, 32)]
            elif cat in _NEGATED:
                out += _ascii_except(_NEGATED[cat])
            else:
                raise ValueError(f"character class {cat} inside [...]")
        else:
            raise ValueError(f"{name} inside [...]")
    return out, negate


_NEGATED = {
    "CATEGORY_NOT_DIGIT": [(48, 57)],
    "CATEGORY_NOT_WORD": [(65, 90), (97, 122), (48, 57), (95, 95)],
    "CATEGORY_NOT_SPACE": [(9, 13), (28, 32)],
}


def complement(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for a, b in sorted(ranges):
        if merged and a <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    out, lo = [], 0
    for a, b in merged:
        if a > lo:
            out.append((lo, a - 1))
        lo = b + 1
    if lo <= 0x10FFFF:
        out.append((lo, 0x10FFFF))
    return out


def chars_regex(ranges: list[tuple[int, int]]) -> str | None:
    """The JSON text of one character from ``ranges``: plain characters as themselves, ``"`` and
    ``\\`` as their escapes, control characters left out (a subset, never a superset)."""
    plain: list[str] = []
    escapes: list[str] = []
    for a, b in ranges:
        for special in (0x22, 0x5C):
            if a <= special <= b:
                escapes.append(BACKSLASH + lit(chr(special)))
        a = max(a, 0x20)
        segs = [(a, b)]
        for special in (0x22, 0x5C):
            segs = [
                piece
                for lo, hi in segs
                for piece in (((lo, special - 1), (special + 1, hi)) if lo <= special <= hi else ((lo, hi),))
                if piece[0] <= piece[1]
            ]
        for lo, hi in segs:
            if lo > 0xD7FF and hi < 0xE000:
                continue
            plain.append(_cls_char(lo) if lo == hi else f"{_cls_char(lo)}-{_cls_char(hi)}")
    parts = ([f"[{''.join(plain)}]"] if plain else []) + escapes
    return alt(parts) if parts else None


def _cls_char(cp: int) -> str:
    if cp < 128:
        return f"\\x{cp:02x}"
    if 0xD800 <= cp <= 0xDFFF:
        cp = 0xE000 if cp > 0xDBFF else 0xD7FF
    return chr(cp)


_NATIVE: dict[str, None] = {}


def prefer_native(pattern: str) -> None:
    """Mark an ECMA ``pattern`` whose automaton outlines-core builds in exponential time (see
    :mod:`dlmprompt.constraints.regexdfa`): its regex carries :data:`NATIVE_MARK`."""
    _NATIVE[pattern] = None
    while len(_NATIVE) > 4096:
        del _NATIVE[next(iter(_NATIVE))]


def pattern_regex(pattern: str, notes: list[str]) -> str:
    """A JSON-string-content regex for an ECMA ``pattern`` (search semantics)."""
    if pattern in _NATIVE:
        return NATIVE_MARK + _pattern_regex(pattern, notes)
    return _pattern_regex(pattern, notes)


def _pattern_regex(pattern: str, notes: list[str]) -> str:
    try:
        parsed = _sre_parse.parse(pattern)
    except re.error as exc:
        raise ValueError(f"pattern does not parse: {exc}") from None
    items = list(parsed)
    if len(items) == 1 and str(items[0][0]) == "BRANCH":
        branches = [list(b) for b in items[0][1][1]]
    else:
        branches = [items]
    out = []
    for b in branches:
        start = bool(b) and str(b[0][0]) == "AT" and str(b[0][1]) in ("AT_BEGINNING", "AT_BEGINNING_STRING")
        if start:
            b = b[1:]
        end = bool(b) and str(b[-1][0]) == "AT" and str(b[-1][1]) in ("AT_END", "AT_END_STRING")
        if end:
            b = b[:-1]
        out.append(("" if start else f"{CHAR}*") + _emit(b, notes) + ("" if end else f"{CHAR}*"))
    return alt(out)


def _emit(parsed: Any, notes: list[str]) -> str:
    out = []
    for op, av in parsed:
        name = str(op)
        if name == "LITERAL":
            r = chars_regex([(av, av)])
            if r is None:
                raise ValueError("a control character in the pattern")
            out.append(r)
        elif name == "NOT_LITERAL":
            out.append(_need(chars_regex(complement([(av, av)]))))
        elif name == "ANY":
            out.append(_need(chars_regex(complement([(10, 10), (13, 13), (0x2028, 0x2029)]))))
        elif name == "IN":
            ranges, negate = _class_items(av)
            if negate and any(str(op) == "CATEGORY" and str(a) in _NEGATED for op, a in av):
                raise ValueError("a negated class of negated shorthands")
            out.append(_need(chars_regex(complement(ranges) if negate else ranges)))
        elif name == "CATEGORY":
            cat = str(av)
            table = {
                "CATEGORY_DIGIT": [(48, 57)],
                "CATEGORY_NOT_DIGIT": _ascii_except([(48, 57)]),
                "CATEGORY_WORD": [(65, 90), (97, 122), (48, 57), (95, 95)],
                "CATEGORY_NOT_WORD": _ascii_except([(65, 90), (97, 122), (48, 57), (95, 95)]),
                "CATEGORY_SPACE": [(9, 13), (32, 32)],
                "CATEGORY_NOT_SPACE": _ascii_except([(9, 13), (28, 32)]),
            }
            if cat not in table:
                raise ValueError(f"class {cat}")
            out.append(_need(chars_regex(table[cat])))
        elif name == "SUBPATTERN":
            if av[1] or av[2]:
                raise ValueError("inline flags")
            out.append(f"(?:{_emit(av[-1], notes)})")
        elif name == "BRANCH":
            out.append("(?:" + "|".join(_emit(b, notes) for b in av[1]) + ")")
        elif name in ("MAX_REPEAT", "MIN_REPEAT"):
            lo, hi, sub = av
            s = _emit(sub, notes)
            if lo > MAX_COUNTED:
                raise ValueError(f"a repeat of at least {lo}")
            if hi == _sre_parse.MAXREPEAT:
                rep = "*" if lo == 0 else ("+" if lo == 1 else f"{{{lo},}}")
            else:
                if hi > MAX_COUNTED:
                    notes.append(f"a pattern repeat of up to {hi} is written with at most {MAX_COUNTED}")
                    hi = MAX_COUNTED
                rep = f"{{{lo}}}" if lo == hi else f"{{{lo},{hi}}}"
            out.append(f"(?:{s}){rep}")
        else:
            raise ValueError({"AT": "anchors inside the pattern"}.get(name, name.lower().replace("_", " ")))
    return "".join(out)


def _ascii_except(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Printable ASCII minus ``ranges``: negated shorthand classes (\\D \\W \\S) are Unicode-aware
    in Python, so only ASCII is safe on both sides."""
    return [(a, b) for a, b in complement([*ranges, (0, 31), (127, 1114111)])]


def _need(r: str | None) -> str:
    if r is None:
        raise ValueError("a character class with no printable character")
    return r


def trie_of(strings: list[str]) -> dict[str, Any]:
    """``strings`` as a character trie of nested dicts; the key ``""`` marks where a string ends."""
    trie: dict[str, Any] = {}
    for text in strings:
        node = trie
        for ch in text:
            node = node.setdefault(ch, {})
        node[""] = {}
    return trie
