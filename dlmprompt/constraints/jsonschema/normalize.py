"""JSON Schema normalisation: the compile context (whitespace, notes, refusals), ``$ref``
resolution, keyword checks, ``allOf`` folding into one schema, and the disjointness test that lets
``oneOf`` compile as ``anyOf``. :func:`schema_walker` is what every schema visitor does first."""

from __future__ import annotations

import decimal
import json
import math
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from dlmprompt.errors import SchemaError

ANNOTATIONS = {
    "title", "description", "default", "examples", "example", "$schema", "$id", "id", "$comment",
    "deprecated", "readOnly", "writeOnly", "definitions", "$defs", "contentMediaType",
    "contentEncoding", "contentSchema", "$anchor", "$vocabulary", "discriminator", "nullable",
}  # fmt: skip


# "not an integer", which no standard keyword says: the negation of an integer type writes numbers
# with this mark; the template compiler reads it, the context-free span refuses it
NOT_INTEGER = "x-dlmprompt-not-integer"


_UNSUPPORTED = {
    "not", "if", "then", "else", "dependencies", "dependentRequired", "dependentSchemas",
    "propertyNames", "contains", "minContains", "maxContains", "unevaluatedProperties",
    "unevaluatedItems", "patternProperties", "$dynamicRef", "$recursiveRef",
}  # fmt: skip


class Narrowed(Exception):
    """Raised at the first narrowing when the caller asked to stop there (it has an exact
    alternative, the context-free span, and needs no narrowed template)."""

    def __init__(self, note: str) -> None:
        super().__init__(note)
        self.note = note


class Context:
    def __init__(self, root: Any, indent: int | None, lenient: bool, additional: bool | None) -> None:
        self.root = root
        self.stop_on_note = False
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
        if self.stop_on_note:
            raise Narrowed(msg)
        if msg not in self.notes:
            self.notes.append(msg)

    def refuse(self, path: str, text: str) -> SchemaError:
        return SchemaError(text, path=path)


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


def resolve(ctx: Context, schema: Any, path: str) -> tuple[Any, str | None]:
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
    siblings = {k: v for k, v in schema.items() if k != "$ref" and k not in ANNOTATIONS}
    if siblings and not ctx.ref_overrides:
        if not isinstance(target, dict):
            target = {} if target is True else {"not": {}}
        target = {"allOf": [target, siblings]}
    return target, ref


def _check_keywords(ctx: Context, schema: dict[str, Any], path: str) -> None:
    for key in schema:
        if key in _UNSUPPORTED:
            if key == "patternProperties" and not schema[key]:
                continue
            if key == "propertyNames" and schema[key] in ({}, True):
                continue
            raise ctx.refuse(
                path, f"the keyword {key!r} is not supported; remove it (or rewrite the schema without it)"
            )


def types_of(schema: dict[str, Any]) -> set[str]:
    t = schema.get("type")
    if isinstance(t, str):
        types = {t}
    elif isinstance(t, list):
        types = set(t)
    else:
        types = {"object", "array", "string", "number", "integer", "boolean", "null"}
        if "enum" in schema or "const" in schema:
            values = schema["enum"] if "enum" in schema else [schema["const"]]
            types = {json_type(v) for v in values if isinstance(values, list)}
    if "number" in types:
        types.add("integer")
    return types


def json_type(v: Any) -> str:
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


def json_equal(a: Any, b: Any) -> bool:
    """JSON equality (1 == 1.0, true != 1)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
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


def plain_decimal(value: float) -> str:
    """A finite float as a JSON number without an exponent (``2e+16`` as ``20000000000000000.0``,
    ``1e-07`` as ``0.0000001``): the only spelling bounded numbers take, in the template and in
    llguidance's grammar alike."""
    plain = format(decimal.Decimal(repr(value)), "f")
    return plain if "." in plain else plain + ".0"


def schema_walker(fn: Callable[[Context, Any, str, int], Any]) -> Callable[[Context, Any, str, int], Any]:
    """What :func:`_template` and :func:`value_regex` do first: follow ``$ref`` (recursion cut after 2
    levels), ``false`` has no value, check the keywords, fold ``allOf``; then ``fn``."""

    def walk(ctx: Context, schema: Any, path: str, depth: int) -> Any:
        schema, ref = resolve(ctx, schema, path)
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
                spread = distribute(ctx, schema, path)
                return walk(ctx, spread if spread is not None else merge_all(ctx, schema, path), path, depth)
        return fn(ctx, schema, path, depth)

    return walk


HINTS = {
    "string": ("minLength", "maxLength", "pattern", "format"),
    "number": ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"),
    "object": ("properties", "required", "additionalProperties", "minProperties", "maxProperties"),
    "array": ("items", "prefixItems", "minItems", "maxItems", "additionalItems", "uniqueItems"),
}


def hinted_type(schema: dict[str, Any]) -> str | None:
    """The one type a schema with no ``type`` names keywords of (``{"properties": ...}``:
    object), which the template writes it as (noted); None if none or several."""
    if "type" in schema or "enum" in schema or "const" in schema:
        return None
    hinted = [ty for ty, keys in HINTS.items() if any(k in schema for k in keys)]
    return hinted[0] if len(hinted) == 1 else None


def disjoint(ctx: Context, branches: list[Any], path: str, *, as_written: bool = False) -> bool:
    """Whether no value can be valid in two branches: different types, or a required property
    with different const / enum values in each. ``as_written``: of the values the template
    writes, where a branch with no ``type`` takes only its :func:`hinted_type` (without it,
    two such branches both take every number, and are never disjoint)."""
    resolved = []
    for b in branches:
        b, _ = resolve(ctx, b, path)
        if not isinstance(b, dict):
            return False
        hint = hinted_type(b) if as_written else None
        resolved.append({**b, "type": hint} if hint else b)
    for i in range(len(resolved)):
        for j in range(i + 1, len(resolved)):
            a, b = resolved[i], resolved[j]
            if not (types_of(a) & types_of(b)):
                continue
            if "enum" in a or "const" in a:
                va = a["enum"] if "enum" in a else [a["const"]]
                vb = b.get("enum", [b["const"]] if "const" in b else None)
                if vb is not None and not any(json_equal(x, y) for x in va for y in vb):
                    continue
            if not _discriminated(ctx, a, b, path):
                return False
    return True


def _forbids(schema: dict[str, Any], key: str) -> bool:
    """Whether an object valid under ``schema`` cannot have the property ``key``."""
    props = schema.get("properties") or {}
    if key in props:
        return props[key] is False
    return schema.get("additionalProperties", True) is False and not schema.get("patternProperties")


def _discriminated(ctx: Context, a: dict[str, Any], b: dict[str, Any], path: str) -> bool:
    """Whether no object is valid in both (what tells objects apart says nothing of other values:
    two branches with no ``type`` both take every number, so they are never disjoint)."""
    if not types_of(a) & types_of(b) <= {"object"}:
        return False
    ra, rb = a.get("required") or [], b.get("required") or []  # a key one requires and the other forbids
    if any(isinstance(k, str) and _forbids(b, k) for k in ra) or any(isinstance(k, str) and _forbids(a, k) for k in rb):
        return True
    pa, pb = a.get("properties") or {}, b.get("properties") or {}
    for key in set(pa) & set(pb) & set(a.get("required") or []) & set(b.get("required") or []):
        sa, _ = resolve(ctx, pa[key], path)
        sb, _ = resolve(ctx, pb[key], path)
        if not (isinstance(sa, dict) and isinstance(sb, dict)):
            continue
        va = sa["enum"] if "enum" in sa else ([sa["const"]] if "const" in sa else None)
        vb = sb["enum"] if "enum" in sb else ([sb["const"]] if "const" in sb else None)
        if va is not None and vb is not None and not any(json_equal(x, y) for x in va for y in vb):
            return True
    return False


def merge_all(ctx: Context, schema: dict[str, Any], path: str) -> dict[str, Any]:
    """``allOf`` folded into one schema; conflicting keywords are refused."""
    subs = schema["allOf"]
    if not isinstance(subs, list):
        raise ctx.refuse(path, "'allOf' must be a list of schemas")
    out: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
    for i, s in enumerate(subs):
        s, _ = resolve(ctx, s, f"{path}/allOf/{i}")
        if s is True:
            continue
        if s is False:
            return {"enum": []}
        if not isinstance(s, dict):
            raise ctx.refuse(path, "allOf items must be schemas")
        if "allOf" in s:
            s = merge_all(ctx, s, f"{path}/allOf/{i}")
        out = _merge(ctx, out, s, path)
    return out


MAX_SPREAD = 64  # branches of an allOf of unions spread into one union


def distribute(ctx: Context, schema: dict[str, Any], path: str) -> dict[str, Any] | None:
    """``allOf`` of several unions as one union of ``allOf`` s (``allOf [A, anyOf [B, C]]`` is
    ``anyOf [allOf [A, B], allOf [A, C]]``), or None when at most one member is a union (which
    :func:`merge_all` folds). Refused past :data:`MAX_SPREAD` branches."""
    subs = schema["allOf"]
    if not isinstance(subs, list):
        raise ctx.refuse(path, "'allOf' must be a list of schemas")
    members: list[Any] = [{k: v for k, v in schema.items() if k != "allOf"}]
    for i, sub in enumerate(subs):
        sub, _ = resolve(ctx, sub, f"{path}/allOf/{i}")
        if isinstance(sub, dict) and "allOf" in sub and not (set(sub) - ANNOTATIONS - {"allOf"}):
            members.extend(sub["allOf"])  # a nested allOf alone is its members
        else:
            members.append(sub)
    unions = [m for m in members if isinstance(m, dict) and ("anyOf" in m or "oneOf" in m)]
    if len(unions) < 2:
        return None
    size = 1
    for u in unions:
        branches = u.get("anyOf", u.get("oneOf"))
        size *= len(branches) if isinstance(branches, list) else 1
    if size > MAX_SPREAD:
        raise ctx.refuse(path, f"allOf of unions with {size} combinations (at most {MAX_SPREAD}) is not supported")
    first = next(i for i, m in enumerate(members) if m is unions[0])
    key = "anyOf" if "anyOf" in unions[0] else "oneOf"
    if key == "oneOf" and not disjoint(ctx, unions[0]["oneOf"], path):
        raise ctx.refuse(path, "allOf with an overlapping oneOf and another union is not supported")
    rest = {k: v for k, v in unions[0].items() if k != key}
    out = []
    for b in unions[0][key]:
        out.append({"allOf": [*members[:first], rest, b, *members[first + 1 :]]})
    return {"anyOf": out}


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


def _merge(ctx: Context, a: dict[str, Any], b: dict[str, Any], path: str) -> dict[str, Any]:
    out = dict(a)
    if any(k in x for x in (a, b) for k in ("properties", "additionalProperties")):
        _merge_objects(a, b, out)
    for key, vb in b.items():
        if key in ANNOTATIONS or key in ("properties", "additionalProperties"):
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
            out[key] = [x for x in va if any(json_equal(x, y) for y in vb)]
        elif key in ("anyOf", "oneOf"):
            out["allOf"] = [{key: va}, {key: vb}]
            raise ctx.refuse(path, f"allOf with {key} in several branches is not supported")
        elif key == "items" and isinstance(va, dict) and isinstance(vb, dict):
            out[key] = {"allOf": [va, vb]}
        elif json_equal(va, vb):
            continue
        else:
            raise ctx.refuse(path, f"allOf combines two different {key!r} values; merge them by hand")
    return out


def non_finite(schema: Any, path: str = "") -> tuple[str, float] | None:
    """(JSON path, value) of the first NaN or infinity anywhere in ``schema``, else None."""
    if isinstance(schema, float) and not math.isfinite(schema):
        return path or "/", schema
    if isinstance(schema, dict):
        for k, v in schema.items():
            hit = non_finite(v, f"{path}/{k}")
            if hit is not None:
                return hit
    elif isinstance(schema, list):
        for i, v in enumerate(schema):
            hit = non_finite(v, f"{path}/{i}")
            if hit is not None:
                return hit
    return None
