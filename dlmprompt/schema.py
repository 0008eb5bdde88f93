"""JSON Schema (and pydantic models) -> a template of anchors and regular holes.

The fixed structure of a schema (braces, required keys, separators) becomes **anchors**; each
leaf value becomes a **hole** with its own regular constraint (a regex); what is not fixed
(optional properties, arrays of unknown length, anyOf / oneOf, bounded recursion) becomes one hole
whose regex covers that whole sub-value. Every regex here accepts only texts whose JSON value is
valid under the schema (soundness); where an exact regex would be huge, the language is narrowed
to a documented subset (never widened), and each such choice is listed in :attr:`Template.notes`.

Key order is the schema's ``properties`` order (then required keys not listed there, then extra
properties); whitespace is fixed: compact (``indent=None``) or ``indent`` spaces per level.

Validation keywords that are not implemented are **refused** with a :class:`SchemaError` naming
the keyword and the JSON path; ``lenient=True`` approximates a few of them instead (``oneOf`` as
``anyOf``, ``uniqueItems`` and unknown ``format`` ignored) and says so in the notes.
No torch here; the regex dialect is the common subset of Python ``re`` and outlines-core.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from .automaton import escape_literal
from .errors import CompileError

try:  # Python 3.11+
    import re._parser as _sre_parse  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - Python 3.10
    import sre_parse as _sre_parse  # type: ignore[no-redef]


class SchemaError(CompileError):
    """A schema uses something the compiler does not support (or is not a valid schema)."""

    def __init__(self, message: str, *, path: str = "", slot: str | None = None) -> None:
        self.path = path or "/"
        self.reason = message
        super().__init__(f"at {self.path}: {message}", slot=slot)


# ---------------------------------------------------------------------------- regex pieces

_Q = escape_literal('"')
_BS = escape_literal("\\")
# one JSON string character: unescaped, a short escape, or a \u escape of a non-surrogate
_CHAR = r"(?:[^\x22\x5c\x00-\x1f]|\x5c[\x22\x5c/bfnrt]|\x5cu(?:[0-9a-cA-CefEF][0-9a-fA-F]{3}|[dD][0-7][0-9a-fA-F]{2}))"
_STRING = f"{_Q}{_CHAR}*{_Q}"
_INT = r"-?(?:0|[1-9][0-9]*)"
_NUMBER = r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+\-]?[0-9]+)?"
_KEY_CHAR = r"[^\x22\x5c\x00-\x1f]"  # extra property names: no escapes (so no name is spelled twice)

MAX_COUNTED = 128  # largest {m,n} bound written out; longer bounds narrow the language to it
MAX_ITEMS = 32  # largest maxItems written out
MAX_REGION = 6000  # longest regex of a run of object members (larger members are left out)
MAX_SHARED = 3000  # longest member regex copied into two alternatives
ANY_DEPTH = 1  # nesting depth of values under an unconstrained schema ({} / true)

_ANNOTATIONS = {
    "title", "description", "default", "examples", "example", "$schema", "$id", "id", "$comment",
    "deprecated", "readOnly", "writeOnly", "definitions", "$defs", "contentMediaType",
    "contentEncoding", "contentSchema", "$anchor", "$vocabulary", "discriminator", "nullable",
}  # fmt: skip
_UNSUPPORTED = {
    "not", "if", "then", "else", "dependencies", "dependentRequired", "dependentSchemas",
    "propertyNames", "contains", "minContains", "maxContains", "unevaluatedProperties",
    "unevaluatedItems", "patternProperties", "$dynamicRef", "$recursiveRef",
}  # fmt: skip

_FORMATS = {
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
_FORMATS["date-time"] = _FORMATS["date"] + "T" + _FORMATS["time"]
_FORMATS["uri-reference"] = _FORMATS["uri"]
_FORMATS["url"] = _FORMATS["uri"]


def _lit(text: str) -> str:
    return escape_literal(text)


def _alt(options: list[str]) -> str:
    options = list(dict.fromkeys(options))
    if len(options) == 1:
        return options[0]
    return "(?:" + "|".join(options) + ")"


def _opt(r: str) -> str:
    return f"(?:{r})?"


# ---------------------------------------------------------------------------- integer ranges


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
    return _alt(parts)


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
    return _alt(parts)


def _int_range(lo: int | None, hi: int | None) -> str | None:
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
    return _alt(parts) if parts else None


# ---------------------------------------------------------------------------- patterns

_CLASS_WORD = "A-Za-z0-9_"
_CLASS_SPACE = r"\x09-\x0d\x20"


def _class_items(items: list[tuple[Any, Any]]) -> tuple[list[tuple[int, int]], bool]:
    """Code point ranges of an ``IN`` item list, and whether it is negated."""
    out: list[tuple[int, int]] = []
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


def _complement(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
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


def _chars_regex(ranges: list[tuple[int, int]]) -> str | None:
    """The JSON text of one character from ``ranges``: plain characters as themselves, ``"`` and
    ``\\`` as their escapes, control characters left out (a subset, never a superset)."""
    plain: list[str] = []
    escapes: list[str] = []
    for a, b in ranges:
        for special in (0x22, 0x5C):
            if a <= special <= b:
                escapes.append(_BS + _lit(chr(special)))
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
    return _alt(parts) if parts else None


def _cls_char(cp: int) -> str:
    if cp < 128:
        return f"\\x{cp:02x}"
    if 0xD800 <= cp <= 0xDFFF:
        cp = 0xE000 if cp > 0xDBFF else 0xD7FF
    return chr(cp)


def _pattern_regex(pattern: str, notes: list[str]) -> str:
    """A JSON-string-content regex for an ECMA ``pattern`` (search semantics)."""
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
        out.append(("" if start else f"{_CHAR}*") + _emit(b, notes) + ("" if end else f"{_CHAR}*"))
    return _alt(out)


def _emit(parsed: Any, notes: list[str]) -> str:
    out = []
    for op, av in parsed:
        name = str(op)
        if name == "LITERAL":
            r = _chars_regex([(av, av)])
            if r is None:
                raise ValueError("a control character in the pattern")
            out.append(r)
        elif name == "NOT_LITERAL":
            out.append(_need(_chars_regex(_complement([(av, av)]))))
        elif name == "ANY":
            out.append(_need(_chars_regex(_complement([(10, 10), (13, 13), (0x2028, 0x2029)]))))
        elif name == "IN":
            ranges, negate = _class_items(av)
            if negate and any(str(op) == "CATEGORY" and str(a) in _NEGATED for op, a in av):
                raise ValueError("a negated class of negated shorthands")
            out.append(_need(_chars_regex(_complement(ranges) if negate else ranges)))
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
            out.append(_need(_chars_regex(table[cat])))
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
    return [(a, b) for a, b in _complement([*ranges, (0, 31), (127, 1114111)])]


def _need(r: str | None) -> str:
    if r is None:
        raise ValueError("a character class with no printable character")
    return r


# ---------------------------------------------------------------------------- the compiler


@dataclass(frozen=True)
class Hole:
    """A value the model writes: ``regex`` (full match) over the JSON text at ``path``."""

    regex: str
    path: str
    kind: str  # "string" | "integer" | "number" | "boolean" | "enum" | "property" | "properties" | "value"


@dataclass
class Template:
    """Anchors (``str``) and :class:`Hole` s in order; ``notes`` lists every narrowing."""

    parts: list[str | Hole]
    notes: list[str] = field(default_factory=list)

    @property
    def regex(self) -> str:
        """One regex for the whole value (anchors escaped, holes as groups)."""
        return "".join(_lit(p) if isinstance(p, str) else f"({p.regex})" for p in self.parts)

    @property
    def holes(self) -> list[Hole]:
        return [p for p in self.parts if isinstance(p, Hole)]


class _Ctx:
    def __init__(self, root: Any, indent: int | None, lenient: bool, additional: bool | None) -> None:
        self.root = root
        self.indent = indent
        self.lenient = lenient
        self.additional = additional
        self.notes: list[str] = []
        self.refs: list[str] = []
        # drafts 3 to 7: "$ref" overrides its sibling keywords (2019-09 on: they apply too)
        self.ref_overrides = isinstance(root, dict) and bool(re.search(r"draft-0[3-7]", str(root.get("$schema", ""))))

    # whitespace
    def open_sep(self, depth: int) -> str:
        return "" if self.indent is None else "\n" + " " * (self.indent * (depth + 1))

    def close_sep(self, depth: int) -> str:
        return "" if self.indent is None else "\n" + " " * (self.indent * depth)

    def item_sep(self, depth: int) -> str:
        return "," + self.open_sep(depth)

    @property
    def colon(self) -> str:
        return ":" if self.indent is None else ": "

    def note(self, path: str, text: str) -> None:
        msg = f"{path or '/'}: {text}"
        if msg not in self.notes:
            self.notes.append(msg)

    def refuse(self, path: str, text: str) -> SchemaError:
        return SchemaError(text, path=path)


def compile_schema(
    schema: Any, *, indent: int | None = None, lenient: bool = False, additional_properties: bool | None = None
) -> Template:
    """Compile a JSON Schema (dict or bool) or a pydantic model class to a :class:`Template`.

    ``additional_properties``: ``None`` follows the schema (extra properties allowed unless
    ``additionalProperties: false``), ``False`` never writes properties the schema does not name.
    """
    schema = as_schema(schema)
    ctx = _Ctx(schema, indent, lenient, additional_properties)
    parts = _template(ctx, schema, "", 0)
    if parts is None:
        raise SchemaError("no JSON value satisfies this schema (within the recursion depth)", path="/")
    merged: list[str | Hole] = []
    for p in parts:
        if isinstance(p, str) and merged and isinstance(merged[-1], str):
            merged[-1] += p
        elif p != "":
            merged.append(p)
    return Template(merged, ctx.notes)


def as_schema(schema: Any) -> Any:
    """A JSON Schema from a dict / bool / JSON string / pydantic model class."""
    if isinstance(schema, type):
        try:
            from pydantic import BaseModel
        except ImportError:  # pragma: no cover
            BaseModel = None  # type: ignore[assignment,misc]
        if BaseModel is not None and issubclass(schema, BaseModel):
            return schema.model_json_schema()
        raise SchemaError(f"expected a JSON Schema dict or a pydantic model class; got the class {schema.__name__}")
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as exc:
            raise SchemaError(f"the schema is not valid JSON: {exc}") from None
    if not isinstance(schema, (dict, bool)):
        raise SchemaError(f"a schema is a JSON object or a boolean; got {type(schema).__name__}")
    return schema


# ---- helpers over schema dicts


def _resolve(ctx: _Ctx, schema: Any, path: str) -> tuple[Any, str | None]:
    """Follow ``$ref`` (local JSON pointers); returns the target and the ref (for recursion)."""
    if not isinstance(schema, dict) or "$ref" not in schema:
        return schema, None
    ref = schema["$ref"]
    if not isinstance(ref, str) or not ref.startswith("#"):
        raise ctx.refuse(path, f"$ref {ref!r} is not a local reference ('#/...'); inline the schema it names")
    target: Any = ctx.root
    pointer = ref[1:]
    if pointer:
        if not pointer.startswith("/"):
            raise ctx.refuse(path, f"$ref {ref!r}: only JSON-pointer references are supported")
        for raw in pointer[1:].split("/"):
            key = raw.replace("~1", "/").replace("~0", "~")
            key = unquote(key)
            if isinstance(target, dict) and key in target:
                target = target[key]
            elif isinstance(target, list) and key.isdigit() and int(key) < len(target):
                target = target[int(key)]
            else:
                raise ctx.refuse(path, f"$ref {ref!r} points to nothing in this schema")
    siblings = {k: v for k, v in schema.items() if k != "$ref" and k not in _ANNOTATIONS}
    if siblings and not ctx.ref_overrides:
        if not isinstance(target, dict):
            target = {} if target is True else {"not": {}}
        target = {"allOf": [target, siblings]}
    return target, ref


def _check_keywords(ctx: _Ctx, schema: dict[str, Any], path: str) -> None:
    for key in schema:
        if key in _UNSUPPORTED:
            if key == "patternProperties" and not schema[key]:
                continue
            if key == "propertyNames" and schema[key] in ({}, True):
                continue
            raise ctx.refuse(
                path, f"the keyword {key!r} is not supported; remove it (or rewrite the schema without it)"
            )


def _types(schema: dict[str, Any]) -> set[str]:
    t = schema.get("type")
    if isinstance(t, str):
        types = {t}
    elif isinstance(t, list):
        types = set(t)
    else:
        types = {"object", "array", "string", "number", "integer", "boolean", "null"}
        if "enum" in schema or "const" in schema:
            values = schema["enum"] if "enum" in schema else [schema["const"]]
            types = {_json_type(v) for v in values if isinstance(values, list)}
    if "number" in types:
        types.add("integer")
    return types


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "integer" if v.is_integer() else "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def _equal(a: Any, b: Any) -> bool:
    """JSON equality (1 == 1.0, true != 1)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def dump(value: Any, indent: int | None = None, depth: int = 0) -> str:
    """JSON text of ``value`` in the template's whitespace (compact or indented)."""
    if isinstance(value, dict):
        if not value:
            return "{}"
        inner = ("," if indent is None else ",\n" + " " * (indent * (depth + 1))).join(
            json.dumps(k, ensure_ascii=False) + (":" if indent is None else ": ") + dump(v, indent, depth + 1)
            for k, v in value.items()
        )
        if indent is None:
            return "{" + inner + "}"
        return "{\n" + " " * (indent * (depth + 1)) + inner + "\n" + " " * (indent * depth) + "}"
    if isinstance(value, list):
        if not value:
            return "[]"
        sep = "," if indent is None else ",\n" + " " * (indent * (depth + 1))
        inner = sep.join(dump(v, indent, depth + 1) for v in value)
        if indent is None:
            return "[" + inner + "]"
        return "[\n" + " " * (indent * (depth + 1)) + inner + "\n" + " " * (indent * depth) + "]"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return json.dumps(value)
    return json.dumps(value, ensure_ascii=False)


# ---- template: fixed structure as anchors, the rest as holes


def _schema_walker(fn: Callable[[_Ctx, Any, str, int], Any]) -> Callable[[_Ctx, Any, str, int], Any]:
    """What :func:`_template` and :func:`_regex` do first: follow ``$ref`` (recursion cut after 2
    levels), ``false`` has no value, check the keywords, fold ``allOf``; then ``fn``."""

    def walk(ctx: _Ctx, schema: Any, path: str, depth: int) -> Any:
        schema, ref = _resolve(ctx, schema, path)
        if ref is not None:
            if ctx.refs.count(ref) >= 2:
                ctx.note(path, f"recursion through {ref} is cut after 2 levels")
                return None
            ctx.refs.append(ref)
            try:
                return walk(ctx, schema, path, depth)
            finally:
                ctx.refs.pop()
        if schema is False:
            return None
        if schema is not True and not isinstance(schema, dict):
            raise ctx.refuse(path, f"a schema is an object or a boolean; got {json.dumps(schema)[:40]}")
        if isinstance(schema, dict):
            _check_keywords(ctx, schema, path)
            if "allOf" in schema:
                return walk(ctx, _merge_all(ctx, schema, path), path, depth)
        return fn(ctx, schema, path, depth)

    return walk


@_schema_walker
def _template(ctx: _Ctx, schema: Any, path: str, depth: int) -> list[str | Hole] | None:
    if schema is True or schema == {}:
        r = _regex(ctx, schema, path, depth)
        return None if r is None else [Hole(r, path, "value")]
    if "const" in schema and not (set(schema) - _ANNOTATIONS - {"const", "type"}):
        if _regex(ctx, schema, path, depth) is None:
            return None
        return [dump(schema["const"], ctx.indent, depth)]
    types = _types(schema)
    if (
        types == {"object"}
        and not any(k in schema for k in ("anyOf", "oneOf", "enum", "const"))
        and schema.get("required")
        and not _object_needs_region(schema)
    ):
        return _object_template(ctx, schema, path, depth)
    r = _regex(ctx, schema, path, depth)
    if r is None:
        return None
    if "enum" in schema:
        kind = "enum"
    elif types == {"integer"}:
        kind = "integer"
    elif len(types - {"integer"}) == 1:
        kind = next(iter(types - {"integer"}))
    else:
        kind = "value"
    return [Hole(r, path, kind)]


def _object_needs_region(schema: dict[str, Any]) -> bool:
    return any(k in schema for k in ("minProperties", "maxProperties"))


def _object_template(ctx: _Ctx, schema: dict[str, Any], path: str, depth: int) -> list[str | Hole] | None:
    """An object with required members: their keys are anchors; each optional member is a hole of
    its own (``,"key":value`` or nothing; the comma sits on the side of a required member, so the
    holes do not depend on each other), and extra properties one more hole at the end."""
    found = _object_items(ctx, schema, path, depth)
    if found is None:
        return None
    items, extra = found
    out: list[str | Hole] = ["{" + ctx.open_sep(depth)]
    first = True
    for key, req, _ in items:
        sub_path = f"{path}/{key}"
        if not req:
            r = _regex(ctx, _prop_schema(schema, key), sub_path, depth + 1)
            if r is not None:
                region = _items_regex(ctx, [(key, False, r)], None, depth, leading=not first, trailing=first)
                out.append(Hole(region, sub_path, "property"))
            continue
        sub = _template(ctx, _prop_schema(schema, key), sub_path, depth + 1)
        if sub is None:
            return None
        out.append(("" if first else ctx.item_sep(depth)) + json.dumps(key, ensure_ascii=False) + ctx.colon)
        out.extend(sub)
        first = False
    if extra is not None:
        out.append(Hole(_items_regex(ctx, [], extra, depth, leading=True, trailing=False), path, "properties"))
    out.append(ctx.close_sep(depth) + "}")
    return out


def _prop_schema(schema: dict[str, Any], key: str) -> Any:
    props = schema.get("properties") or {}
    if key in props:
        return props[key]
    ap = schema.get("additionalProperties", True)
    return True if ap is False else ap


def _object_items(
    ctx: _Ctx, schema: dict[str, Any], path: str, depth: int
) -> tuple[list[tuple[str, bool, str | None]], str | None] | None:
    """(key, required, value regex or None) in template order, and the extra-property regex."""
    props = schema.get("properties") or {}
    if not isinstance(props, dict):
        raise ctx.refuse(path, "'properties' must be an object")
    required = schema.get("required") or []
    if not isinstance(required, list):
        raise ctx.refuse(path, "'required' must be a list of names")
    ap = schema.get("additionalProperties", True)
    if ctx.additional is False:
        allow_extra = False
    else:
        allow_extra = ap is not False
    items: list[tuple[str, bool, str | None]] = []
    for key in list(props) + [k for k in required if k not in props]:
        if key not in props and ap is False:
            return None  # required but forbidden: no value
        req = key in required
        items.append((key, req, None))
    extra = None
    if allow_extra:
        if ap is True or ap == {}:  # any value; nested containers only at the top level (regex size)
            value: str | None = _any(ctx, depth + 1, ANY_DEPTH if depth == 0 else 0)
        else:
            value = _regex(ctx, ap, f"{path}/*", depth + 1)
        if value is not None:
            key_re = _not_names([k for k, _, _ in items])
            extra = key_re + _lit(ctx.colon) + value
            ctx.note(
                path, "extra properties may be written (the schema allows them): names without escapes, shallow values"
            )
    return items, extra


def _not_names(names: list[str]) -> str:
    """A JSON string (no escapes) whose content is none of ``names``."""
    trie: dict[str, Any] = {}
    for n in names:
        node = trie
        for ch in n:
            node = node.setdefault(ch, {})
        node[""] = {}

    def build(node: dict[str, Any]) -> str:
        kids = [c for c in node if c]
        alts = []
        if "" not in node:
            alts.append("")
        excluded = [(ord(c), ord(c)) for c in kids] + [(0x22, 0x22), (0x5C, 0x5C), (0, 0x1F)]
        other = _chars_regex(_complement(excluded))
        if other:
            alts.append(other + _KEY_CHAR + "*")
        for c in kids:
            alts.append(_lit(c) + build(node[c]))
        return _alt(alts) if len(alts) > 1 else alts[0]

    return _Q + build(trie) + _Q


def _items_regex(
    ctx: _Ctx,
    items: list[tuple[str, bool, str | None]],
    extra: str | None,
    depth: int,
    *,
    leading: bool,
    trailing: bool,
) -> str:
    """Regex of a run of object members in order (optional ones may be absent), then any number of
    extra members. ``leading``: a member is already written before (so each starts with a comma);
    ``trailing``: a member follows (so each ends with a comma)."""
    sep = _lit(ctx.item_sep(depth))
    regs: list[tuple[str, bool]] = []
    for key, req, value in items:
        if value is None:
            raise AssertionError("items need values")  # pragma: no cover
        regs.append((_lit(json.dumps(key, ensure_ascii=False) + ctx.colon) + value, req))
    # a regular constraint this large is slow to index and to sample: leave out the largest
    # optional members (never written; a narrower, still valid language) until it fits
    total = sum(len(r) for r, _ in regs) + len(extra or "")
    keys = [k for k, _, _ in items]
    while total > MAX_REGION:
        optional = [(len(r), i) for i, (r, req) in enumerate(regs) if not req and r]
        if not optional:
            break
        size, i = max(optional)
        ctx.note("", f"the optional property {keys[i]!r} is never written (its value is too large for one region)")
        regs[i] = ("", False)
        total -= size
    regs = [(r, req) for r, req in regs if r]
    x = extra
    if trailing:  # members then a comma each (the next member follows)
        return "".join(f"(?:{r}{sep})" + ("" if req else "?") for r, req in regs)
    if leading:
        body = "".join(f"(?:{sep}{r})" + ("" if req else "?") for r, req in regs)
        return body + (f"(?:{sep}{x})*" if x else "")
    # nothing before: the first present member has no comma. some[i] = the non-empty runs of
    # members 0..i in order: (some[i-1] then maybe member i) or member i alone (linear size)
    some, had_req = "", False
    for r, req in regs:
        if not some:
            some = r
        elif req and had_req:
            some = f"(?:{some}{sep}{r})"
        elif req:  # the first required member: the optional ones before it may all be absent
            some = f"(?:(?:{some}{sep})?{r})"
        elif had_req or len(r) > MAX_SHARED:
            # a large member is written only after another one (copying it would grow the regex
            # exponentially with nesting): a narrower, still valid, language
            some = f"(?:{some}(?:{sep}{r})?)"
            if not had_req:
                ctx.note("", "a large optional property is written only after an earlier one")
        else:
            some = f"(?:{some}(?:{sep}{r})?|{r})"
        had_req = had_req or req
    all_req = any(req for _, req in regs)
    if x:
        runs = f"(?:{sep}{x})*"
        if not some:
            return f"(?:{x}{runs})?"
        body = f"{some}{runs}" if all_req else f"(?:{some}{runs}|{x}{runs})"
        return body if all_req else f"(?:{body})?"
    if not some:
        return ""
    return some if all_req else f"(?:{some})?"


# ---- regex for a whole value


@_schema_walker
def _regex(ctx: _Ctx, schema: Any, path: str, depth: int) -> str | None:
    """Regex of the JSON texts of values valid under ``schema``; ``None``: no value."""
    if schema is True or not (set(schema) - _ANNOTATIONS):
        ctx.note(path, f"any value: written at most {ANY_DEPTH + 1} levels deep")
        return _any(ctx, depth, ANY_DEPTH)
    if "anyOf" in schema or "oneOf" in schema:
        key = "anyOf" if "anyOf" in schema else "oneOf"
        branches = schema[key]
        if not isinstance(branches, list) or not branches:
            raise ctx.refuse(path, f"{key!r} needs a non-empty list of schemas")
        if "anyOf" in schema and "oneOf" in schema:
            raise ctx.refuse(path, "anyOf and oneOf together are not supported")
        base = {k: v for k, v in schema.items() if k != key}
        if key == "oneOf" and not _disjoint(ctx, branches, path):
            if not ctx.lenient:
                raise ctx.refuse(
                    path,
                    "oneOf branches may overlap (a value valid in two branches is invalid); use anyOf, "
                    "make the branches disjoint (different types or a const discriminator), or lenient=True",
                )
            ctx.note(path, "oneOf treated as anyOf (lenient)")
        regs = []
        for i, b in enumerate(branches):
            sub = {"allOf": [base, b]} if set(base) - _ANNOTATIONS else b
            r = _regex(ctx, sub, f"{path}/{key}/{i}", depth)
            if r is not None:
                regs.append(r)
        return _alt(regs) if regs else None
    if "const" in schema or "enum" in schema:
        values = [schema["const"]] if "const" in schema else schema["enum"]
        if not isinstance(values, list):
            raise ctx.refuse(path, "'enum' must be a list")
        rest = {k: v for k, v in schema.items() if k not in ("const", "enum") and k not in _ANNOTATIONS}
        ok = [v for v in values if _value_ok(ctx, rest, v, path)]
        if "const" in schema and "enum" in schema:
            ok = [v for v in ok if any(_equal(v, w) for w in schema["enum"])]
        return _alt([_lit(dump(v, ctx.indent, depth)) for v in ok]) if ok else None
    t = schema.get("type")
    if t is None:
        types = ["object", "array", "string", "number", "boolean", "null"]
        relevant = {
            "string": ("minLength", "maxLength", "pattern", "format"),
            "number": ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"),
            "object": ("properties", "required", "additionalProperties", "minProperties", "maxProperties"),
            "array": ("items", "prefixItems", "minItems", "maxItems", "additionalItems", "uniqueItems"),
        }
        hinted = [ty for ty, keys in relevant.items() if any(k in schema for k in keys)]
        if hinted and len(hinted) == 1:
            types = hinted  # e.g. {"properties": ...} without "type": other types would be valid too
            ctx.note(path, f"no 'type': only {hinted[0]} values are written")
    elif isinstance(t, str):
        types = [t]
    elif isinstance(t, list) and t:
        types = list(dict.fromkeys(t))
    else:
        raise ctx.refuse(path, f"'type' must be a type name or a list of them; got {t!r}")
    if "integer" in types and "number" in types:
        types.remove("integer")
    regs = []
    for ty in types:
        r = _typed(ctx, schema, ty, path, depth)
        if r is not None:
            regs.append(r)
    return _alt(regs) if regs else None


def _value_ok(ctx: _Ctx, rest: dict[str, Any], v: Any, path: str) -> bool:
    """Whether an enum value passes the sibling keywords (checked with the same compiler)."""
    if not rest:
        return True
    r = _regex(ctx, rest, path, 0)
    return r is not None and re.fullmatch(r, dump(v, ctx.indent, 0)) is not None


def _typed(ctx: _Ctx, schema: dict[str, Any], ty: str, path: str, depth: int) -> str | None:
    if ty == "null":
        return "null"
    if ty == "boolean":
        return "(?:true|false)"
    if ty == "string":
        return _string(ctx, schema, path)
    if ty in ("integer", "number"):
        return _numeric(ctx, schema, ty, path)
    if ty == "array":
        return _array(ctx, schema, path, depth)
    if ty == "object":
        return _object(ctx, schema, path, depth)
    raise ctx.refuse(path, f"unknown type {ty!r}")


def _string(ctx: _Ctx, schema: dict[str, Any], path: str) -> str | None:
    lo = schema.get("minLength", 0)
    hi = schema.get("maxLength")
    if not isinstance(lo, int) or (hi is not None and not isinstance(hi, int)):
        raise ctx.refuse(path, "minLength / maxLength must be integers")
    if hi is not None and hi < lo:
        return None
    fmt = schema.get("format")
    pattern = schema.get("pattern")
    if fmt is not None and fmt in _FORMATS:
        if pattern is not None:
            raise ctx.refuse(path, "'format' together with 'pattern' is not supported; keep one")
        r = _FORMATS[fmt]
        if lo or hi is not None:
            if not _widths_within(r, lo, hi):
                raise ctx.refuse(path, f"format {fmt!r} with minLength/maxLength is not supported")
        return _Q + r + _Q
    if fmt is not None:
        if fmt in STANDARD_FORMATS:
            raise ctx.refuse(path, f"format {fmt!r} is not supported (a standard format this compiler cannot check)")
        ctx.note(path, f"format {fmt!r} is not checked (an annotation here)")
    if pattern is not None:
        if not isinstance(pattern, str):
            raise ctx.refuse(path, "'pattern' must be a string")
        try:
            narrowed: list[str] = []
            body = _pattern_regex(pattern, narrowed)
            for n in narrowed:
                ctx.note(path, n)
        except ValueError as exc:
            raise ctx.refuse(path, f"pattern {pattern!r} cannot be compiled: {exc}") from None
        if lo or hi is not None:
            if not _widths_within(pattern, lo, hi):
                raise ctx.refuse(
                    path, "'pattern' together with minLength/maxLength that the pattern does not imply is not supported"
                )
        return _Q + body + _Q
    if hi is not None and hi > MAX_COUNTED:
        ctx.note(path, f"strings are written with at most {MAX_COUNTED} characters (maxLength {hi})")
        hi = MAX_COUNTED
    if lo > MAX_COUNTED:
        raise ctx.refuse(path, f"minLength {lo} is above {MAX_COUNTED}, the longest string written")
    if hi is None:
        rep = "*" if lo == 0 else ("+" if lo == 1 else f"{{{lo},}}")
        return f"{_Q}{_CHAR}{rep}{_Q}"
    rep = f"{{{lo}}}" if lo == hi else f"{{{lo},{hi}}}"
    # counted repeats of the escape alternation make the DFA construction blow up: length-bounded
    # strings are written without escapes (a narrower language)
    ctx.note(path, "a length-bounded string is written without escapes")
    return f"{_Q}{_KEY_CHAR}{rep}{_Q}"


def _widths_within(pattern: str, lo: int, hi: int | None) -> bool:
    """Whether every full match of an anchored ``pattern`` has a length in [lo, hi]."""
    if not (pattern.startswith("^") and pattern.endswith("$")) and pattern not in _FORMATS.values():
        return False
    try:
        body = pattern[1:-1] if pattern.startswith("^") else pattern
        a, b = _sre_parse.parse(body).getwidth()
    except (re.error, ValueError):
        return False
    return a >= lo and (hi is None or b <= hi)


def _numeric(ctx: _Ctx, schema: dict[str, Any], ty: str, path: str) -> str | None:
    lo, hi = schema.get("minimum"), schema.get("maximum")
    xlo, xhi = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if isinstance(xlo, bool):  # draft 4
        xlo, lo = (lo if xlo else None), (None if xlo else lo)
    if isinstance(xhi, bool):
        xhi, hi = (hi if xhi else None), (None if xhi else hi)
    for name, v in (("minimum", lo), ("maximum", hi), ("exclusiveMinimum", xlo), ("exclusiveMaximum", xhi)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise ctx.refuse(path, f"{name} must be a number")
    if lo is not None and xlo is not None:
        lo, xlo = (None, xlo) if xlo >= lo else (lo, None)
    if hi is not None and xhi is not None:
        hi, xhi = (None, xhi) if xhi <= hi else (hi, None)
    big = 10**18 - 1
    if any(b is not None and b > big for b in (lo, xlo)) or any(b is not None and b < -big for b in (hi, xhi)):
        raise ctx.refuse(path, "bounds beyond 1e18 are not supported")
    if hi is not None and hi > big:
        hi = big
    if xhi is not None and xhi > big:
        xhi = big
    if lo is not None and lo < -big:
        lo = -big
    if xlo is not None and xlo < -big:
        xlo = -big
    mult = schema.get("multipleOf")
    integer = ty == "integer"
    if mult is not None:
        if isinstance(mult, (int, float)) and not isinstance(mult, bool) and float(mult) == 1.0:
            integer = True
        else:
            raise ctx.refuse(path, f"multipleOf {mult!r} is not supported (only 1)")
    bounds = [lo, hi, xlo, xhi]
    if not integer and all(b is None for b in bounds):
        return _NUMBER
    # integer bounds: ceil / floor; a number with non-integer bounds is refused
    ilo = None
    if lo is not None:
        ilo = math.ceil(lo)
    if xlo is not None:
        ilo = max(ilo if ilo is not None else -math.inf, math.floor(xlo) + 1)  # type: ignore[assignment]
    ihi = None
    if hi is not None:
        ihi = math.floor(hi)
    if xhi is not None:
        ihi = min(ihi if ihi is not None else math.inf, math.ceil(xhi) - 1)  # type: ignore[assignment]
    if integer:
        return _int_range(ilo, ihi)
    if any(b is not None and not float(b).is_integer() for b in bounds):
        raise ctx.refuse(path, "a number bound that is not a whole number is not supported (use integer bounds)")
    # numbers with whole bounds: whole values in range, and values with a fraction strictly inside
    parts = []
    lo_n = None if lo is None else int(lo)
    hi_n = None if hi is None else int(hi)
    # x >= lo (or > xlo) and x <= hi (or < xhi), written as sign, integer part, fraction
    low = lo_n if lo_n is not None else (int(xlo) if xlo is not None else None)
    high = hi_n if hi_n is not None else (int(xhi) if xhi is not None else None)
    low_strict, high_strict = lo is None and xlo is not None, hi is None and xhi is not None
    # whole values
    wl = None if low is None else (low + 1 if low_strict else low)
    wh = None if high is None else (high - 1 if high_strict else high)
    whole = _int_range(wl, wh)
    if whole is not None:
        parts.append(whole + r"(?:\.0+)?")
    # values with a non-zero fraction: integer part i, fraction f>0; non-negative: i.f in (i, i+1)
    pos_lo = 0 if low is None or low < 0 else low
    pos_hi = None if high is None else high - 1
    if high is None or high > 0:
        r = _int_range(pos_lo, pos_hi)
        if r is not None:
            parts.append(r + r"\.[0-9]*[1-9][0-9]*")
    if low is None or low < 0:  # negative: -(i.f) with i.f in (i, i+1), i in [max(0,-high), -low-1]
        nlo = 0 if high is None or high > 0 else -high
        nhi = None if low is None else -low - 1
        r = _int_range(nlo, nhi)
        if r is not None:
            parts.append("-" + f"(?:{r})" + r"\.[0-9]*[1-9][0-9]*")
    return _alt(parts) if parts else None


def _array(ctx: _Ctx, schema: dict[str, Any], path: str, depth: int) -> str | None:
    lo = schema.get("minItems", 0)
    hi = schema.get("maxItems")
    if schema.get("uniqueItems") and (hi is None or hi > 1):
        if not ctx.lenient:
            raise ctx.refuse(path, "uniqueItems is not supported; remove it or use lenient=True")
        ctx.note(path, "uniqueItems ignored (lenient)")
    prefix = schema.get("prefixItems")
    items = schema.get("items", True)
    if isinstance(items, list):  # draft 4-7 tuple form
        prefix, items = items, schema.get("additionalItems", True)
    prefix = prefix or []
    sep = _lit(ctx.item_sep(depth))
    open_, close = _lit("[" + ctx.open_sep(depth)), _lit(ctx.close_sep(depth) + "]")
    heads = []
    for i, s in enumerate(prefix):
        r = _regex(ctx, s, f"{path}/{i}", depth + 1)
        heads.append(r)
    rest = _regex(ctx, items, f"{path}/*", depth + 1) if items is not False else None
    if hi is not None and hi > MAX_ITEMS:
        ctx.note(path, f"arrays are written with at most {MAX_ITEMS} items (maxItems {hi})")
        hi = MAX_ITEMS
    if hi is None and lo > MAX_ITEMS:
        raise ctx.refuse(path, f"minItems {lo} is above {MAX_ITEMS}, the longest array written")
    if hi is not None and hi < lo:
        return None
    # lengths n in [lo, hi]: the first len(prefix) items from heads, the rest from `rest`
    alts = [_lit("[]")] if lo == 0 else []
    seq, k, complete = "", len(prefix), True
    for n in range(1, (k if hi is None else min(k, hi)) + 1):
        h = heads[n - 1]
        if h is None:
            complete = False
            break
        seq = h if n == 1 else seq + sep + h
        if n >= lo:
            alts.append(open_ + seq + close)
    if complete and rest is not None and (hi is None or hi > k):
        m_lo, m_hi = max(lo - k, 1), (None if hi is None else hi - k)
        if k == 0:
            body = rest + _rep(f"(?:{sep}{rest})", m_lo - 1, None if m_hi is None else m_hi - 1)
        else:
            body = seq + _rep(f"(?:{sep}{rest})", m_lo, m_hi)
        alts.append(open_ + body + close)
    return _alt(alts) if alts else None


def _rep(r: str, lo: int, hi: int | None) -> str:
    if hi is None:
        return r + ("*" if lo == 0 else ("+" if lo == 1 else f"{{{lo},}}"))
    if hi == 0:
        return ""
    return r + (f"{{{lo}}}" if lo == hi else f"{{{lo},{hi}}}")


def _object(ctx: _Ctx, schema: dict[str, Any], path: str, depth: int) -> str | None:
    found = _object_items(ctx, schema, path, depth)
    if found is None:
        return None
    items, extra = found
    regs: list[tuple[str, bool, str | None]] = []
    for key, req, _ in items:
        r = _regex(ctx, _prop_schema(schema, key), f"{path}/{key}", depth + 1)
        if r is None:
            if req:
                return None
            continue
        regs.append((key, req, r))
    lo, hi = schema.get("minProperties", 0), schema.get("maxProperties")
    n_req = sum(1 for _, req, _ in regs if req)
    if lo > n_req:
        raise ctx.refuse(path, f"minProperties {lo} is more than the {n_req} required properties; not supported")
    if hi is not None and (extra is not None or len(regs) > hi):
        raise ctx.refuse(path, f"maxProperties {hi} below the properties that may be written is not supported")
    body = _items_regex(ctx, regs, extra, depth, leading=False, trailing=False)
    open_, close = _lit("{" + ctx.open_sep(depth)), _lit(ctx.close_sep(depth) + "}")
    if n_req == 0 and ctx.indent is not None:
        return f"(?:{_lit('{}')}|{open_}{body}{close})"
    return open_ + body + close


def _any(ctx: _Ctx, depth: int, levels: int) -> str:
    prim = f"(?:{_STRING}|{_NUMBER}|true|false|null)"
    if levels <= 0:
        return prim
    inner = _any(ctx, depth + 1, levels - 1)
    sep = _lit(ctx.item_sep(depth))
    o, c = ctx.open_sep(depth), ctx.close_sep(depth)
    arr = f"{_lit('[]')}|{_lit('[' + o)}{inner}(?:{sep}{inner})*{_lit(c + ']')}"
    member = f"{_STRING}{_lit(ctx.colon)}{inner}"
    obj = f"{_lit('{}')}|{_lit('{' + o)}{member}(?:{sep}{member})*{_lit(c + '}')}"
    return f"(?:{_STRING}|{_NUMBER}|true|false|null|{arr}|{obj})"


def _disjoint(ctx: _Ctx, branches: list[Any], path: str) -> bool:
    """Whether no value can be valid in two branches: different types, or a required property
    with different const / enum values in each."""
    resolved = []
    for b in branches:
        b, _ = _resolve(ctx, b, path)
        if not isinstance(b, dict):
            return False
        resolved.append(b)
    for i in range(len(resolved)):
        for j in range(i + 1, len(resolved)):
            a, b = resolved[i], resolved[j]
            if not (_types(a) & _types(b)):
                continue
            if "enum" in a or "const" in a:
                va = a["enum"] if "enum" in a else [a["const"]]
                vb = b.get("enum", [b["const"]] if "const" in b else None)
                if vb is not None and not any(_equal(x, y) for x in va for y in vb):
                    continue
            if not _discriminated(ctx, a, b, path):
                return False
    return True


def _discriminated(ctx: _Ctx, a: dict[str, Any], b: dict[str, Any], path: str) -> bool:
    pa, pb = a.get("properties") or {}, b.get("properties") or {}
    for key in set(pa) & set(pb) & set(a.get("required") or []) & set(b.get("required") or []):
        sa, _ = _resolve(ctx, pa[key], path)
        sb, _ = _resolve(ctx, pb[key], path)
        if not (isinstance(sa, dict) and isinstance(sb, dict)):
            continue
        va = sa["enum"] if "enum" in sa else ([sa["const"]] if "const" in sa else None)
        vb = sb["enum"] if "enum" in sb else ([sb["const"]] if "const" in sb else None)
        if va is not None and vb is not None and not any(_equal(x, y) for x in va for y in vb):
            return True
    return False


def _merge_all(ctx: _Ctx, schema: dict[str, Any], path: str) -> dict[str, Any]:
    """``allOf`` folded into one schema; conflicting keywords are refused."""
    subs = schema["allOf"]
    if not isinstance(subs, list):
        raise ctx.refuse(path, "'allOf' must be a list of schemas")
    out: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
    for i, s in enumerate(subs):
        s, _ = _resolve(ctx, s, f"{path}/allOf/{i}")
        if s is True:
            continue
        if s is False:
            return {"enum": []}
        if not isinstance(s, dict):
            raise ctx.refuse(path, "allOf items must be schemas")
        if "allOf" in s:
            s = _merge_all(ctx, s, f"{path}/allOf/{i}")
        out = _merge(ctx, out, s, path)
    return out


def _conj(sa: Any, sb: Any) -> Any:
    """The schema of "both sa and sb"."""
    if sa is False or sb is False:
        return False
    if sa is True or sa == {}:
        return sb
    if sb is True or sb == {}:
        return sa
    return {"allOf": [sa, sb]}


def _merge_objects(a: dict[str, Any], b: dict[str, Any], out: dict[str, Any]) -> None:
    """properties / additionalProperties of ``allOf [a, b]``: a property named on one side only is
    still governed, on the other side, by that side's additionalProperties (``false`` forbids it)."""
    pa, pb = a.get("properties", {}) or {}, b.get("properties", {}) or {}
    apa, apb = a.get("additionalProperties", True), b.get("additionalProperties", True)
    merged = {k: _conj(pa.get(k, apa), pb.get(k, apb)) for k in dict.fromkeys([*pa, *pb])}
    out.pop("properties", None)
    out.pop("additionalProperties", None)
    if merged:
        out["properties"] = merged
    ap = _conj(apa, apb)
    if ap is not True:
        out["additionalProperties"] = ap


def _merge(ctx: _Ctx, a: dict[str, Any], b: dict[str, Any], path: str) -> dict[str, Any]:
    out = dict(a)
    if any(k in x for x in (a, b) for k in ("properties", "additionalProperties")):
        _merge_objects(a, b, out)
    for key, vb in b.items():
        if key in _ANNOTATIONS or key in ("properties", "additionalProperties"):
            continue
        if key not in out:
            out[key] = vb
            continue
        va = out[key]
        if key == "required":
            out[key] = list(dict.fromkeys(list(va) + list(vb)))
        elif key == "type":
            ta = {va} if isinstance(va, str) else set(va)
            tb = {vb} if isinstance(vb, str) else set(vb)
            if "number" in ta:
                ta.add("integer")
            if "number" in tb:
                tb.add("integer")
            both = ta & tb
            if not both:
                return {"enum": []}
            out[key] = sorted(both)
        elif key in ("minimum", "minLength", "minItems", "minProperties", "exclusiveMinimum"):
            out[key] = max(va, vb) if not isinstance(va, bool) else vb
        elif key in ("maximum", "maxLength", "maxItems", "maxProperties", "exclusiveMaximum"):
            out[key] = min(va, vb) if not isinstance(va, bool) else vb
        elif key == "enum":
            out[key] = [x for x in va if any(_equal(x, y) for y in vb)]
        elif key in ("anyOf", "oneOf"):
            out["allOf"] = [{key: va}, {key: vb}]
            raise ctx.refuse(path, f"allOf with {key} in several branches is not supported")
        elif key == "items" and isinstance(va, dict) and isinstance(vb, dict):
            out[key] = {"allOf": [va, vb]}
        elif _equal(va, vb):
            continue
        else:
            raise ctx.refuse(path, f"allOf combines two different {key!r} values; merge them by hand")
    return out


# ---------------------------------------------------------------------------- acceptance


def texts_for(instance: Any, schema: Any, *, indent: int | None = None, limit: int = 32) -> list[str]:
    """The JSON texts of ``instance`` in the template's key orders (one per branch choice that
    orders keys differently), for acceptance checks; at most ``limit``."""
    schema = as_schema(schema)
    ctx = _Ctx(schema, indent, True, None)
    out = list(dict.fromkeys(_texts(ctx, instance, schema, 0, limit)))
    return out[:limit]


def _texts(ctx: _Ctx, value: Any, schema: Any, depth: int, limit: int) -> list[str]:
    try:
        schema, _ = _resolve(ctx, schema, "")
    except SchemaError:
        schema = True
    if isinstance(schema, dict) and "allOf" in schema:
        try:
            schema = _merge_all(ctx, schema, "")
        except SchemaError:
            pass
    if isinstance(schema, dict):
        for key in ("anyOf", "oneOf"):
            if key in schema and isinstance(schema[key], list):
                out: list[str] = []
                base = {k: v for k, v in schema.items() if k != key}
                for b in schema[key]:
                    sub = {"allOf": [base, b]} if set(base) - _ANNOTATIONS else b
                    out += _texts(ctx, value, sub, depth, limit)
                return list(dict.fromkeys(out))[:limit] or [dump(value, ctx.indent, depth)]
    if isinstance(value, dict) and isinstance(schema, dict):
        props = schema.get("properties") or {}
        required = schema.get("required") or []
        order = [k for k in props if k in value] + [k for k in required if k in value and k not in props]
        order += [k for k in value if k not in order]
        variants = [""]
        for i, k in enumerate(order):
            sub = props.get(k, schema.get("additionalProperties", True))
            vs = _texts(ctx, value[k], sub if sub is not False else True, depth + 1, limit)
            head = ("" if i == 0 else ctx.item_sep(depth)) + json.dumps(k, ensure_ascii=False) + ctx.colon
            variants = [p + head + v for p in variants for v in vs][:limit]
        if not value:
            return ["{}"]
        return ["{" + ctx.open_sep(depth) + v + ctx.close_sep(depth) + "}" for v in variants]
    if isinstance(value, list):
        if not value:
            return ["[]"]
        items = schema.get("items", True) if isinstance(schema, dict) else True
        prefix = schema.get("prefixItems") if isinstance(schema, dict) else None
        if isinstance(items, list):
            prefix, items = items, schema.get("additionalItems", True)
        prefix = prefix or []
        variants = [""]
        for i, v in enumerate(value):
            sub = prefix[i] if i < len(prefix) else items
            vs = _texts(ctx, v, sub if sub is not False else True, depth + 1, limit)
            head = "" if i == 0 else ctx.item_sep(depth)
            variants = [p + head + t for p in variants for t in vs][:limit]
        return ["[" + ctx.open_sep(depth) + v + ctx.close_sep(depth) + "]" for v in variants]
    return [dump(value, ctx.indent, depth)]
