"""JSON values as one context-free span: the schema compiled by llguidance, decoded left to right.

Used for a JSON slot when the template compiler (:mod:`dlmprompt.constraints.jsonschema`) would refuse the schema
or narrow it (drop values it cannot express exactly as regular languages): llguidance's JSON
Schema grammar is exact on what it supports, so the slot accepts every valid instance in compact
JSON and nothing else. The witness that keeps the span closable (see :mod:`dlmprompt.constraints.grammar`)
is a small instance built from the schema and checked by the matcher.
"""

from __future__ import annotations

import copy
import json
import math
import re
from typing import Any

from dlmprompt.constraints.grammar import CompiledGrammar, ll_limits, ll_tokenizer, load_llguidance, min_string
from dlmprompt.constraints.jsonschema import STANDARD_FORMATS
from dlmprompt.constraints.jsonschema.normalize import plain_decimal
from dlmprompt.tokenizer import Tokenizer

_FORMATS = {
    "date": "2000-01-01",
    "time": "00:00:00Z",
    "date-time": "2000-01-01T00:00:00Z",
    "email": "a@a.aa",
    "idn-email": "a@a.aa",
    "uuid": "00000000-0000-0000-0000-000000000000",
    "ipv4": "0.0.0.0",
    "ipv6": "::",
    "hostname": "a",
    "uri": "a:a",
    "uri-reference": "a",
    "duration": "P1D",
}


def span_text(value: Any, compact: bool = True, plain_numbers: bool = False) -> str:
    """``value`` as the span writes it: JSON, non-ASCII characters as they are, but DEL (U+007F)
    escaped: llguidance's JSON strings leave raw DEL out, so the span spells it ``\\u007f``
    (the same value; the raw byte appears only inside strings, so replacing it is safe).
    ``plain_numbers``: floats without an exponent (``1e-07`` as ``0.0000001``), the only
    spelling llguidance takes for a number with bounds."""
    if plain_numbers and compact:
        return _plain(value)
    text = json.dumps(value, separators=(",", ":") if compact else None, ensure_ascii=False)
    return text.replace("\x7f", "\\u007f")


def _plain(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ",".join(span_text(k) + ":" + _plain(v) for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_plain(v) for v in value) + "]"
    return _spellings(value)[-1] if isinstance(value, float) and math.isfinite(value) else span_text(value)


_UNKNOWN_FORMAT = re.compile(r"Unknown format: (.*)")


def _drop_format(schema: Any, fmt: str) -> Any:
    if isinstance(schema, dict):
        return {k: _drop_format(v, fmt) for k, v in schema.items() if not (k == "format" and v == fmt)}
    if isinstance(schema, list):
        return [_drop_format(v, fmt) for v in schema]
    return schema


_ROOT_KEPT = ("$ref", "definitions", "$defs", "$schema", "$id", "id", "title", "description")


def ref_overrides_siblings(schema: Any) -> Any:
    """Drafts 3 to 7: ``$ref`` overrides its sibling keywords, so they are dropped (llguidance
    applies them, as 2019-09 on does)."""
    if not (isinstance(schema, dict) and re.search(r"draft-0[3-7]", str(schema.get("$schema", "")))):
        return schema

    def walk(node: Any, top: bool) -> Any:
        if isinstance(node, dict):
            if "$ref" in node and not top:
                return {"$ref": node["$ref"]}
            if "$ref" in node:  # the root keeps what references and readers need
                return {k: walk(v, False) for k, v in node.items() if k in _ROOT_KEPT}
            return {k: walk(v, False) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, False) for v in node]
        return node

    return walk(schema, True)


def closed_objects(schema: Any) -> Any | None:
    """The schema with ``additionalProperties: false`` on every object that names its properties
    (``additional_properties=False``); None where that would change more than intended (allOf)."""
    if "allOf" in json.dumps(schema):
        return None
    out = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "properties" in node and "additionalProperties" not in node and "patternProperties" not in node:
                node["additionalProperties"] = False
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(out)
    return out


def _merge(a: dict[str, Any], b: Any) -> Any:
    """A schema of the values of both ``a`` and ``b`` (best effort, for witnesses): properties
    merged name by name, required lists joined, unions that meet kept side by side under allOf."""
    if b is True:
        return a
    if not isinstance(b, dict):
        return False
    out = dict(a)
    for k, v in b.items():
        if k == "properties" and isinstance(v, dict):
            props = dict(out.get("properties") or {})
            for name, sub in v.items():
                props[name] = {"allOf": [props[name], sub]} if name in props else sub
            out["properties"] = props
        elif k == "required" and isinstance(v, list):
            out["required"] = list(dict.fromkeys([*(out.get("required") or []), *v]))
        elif k == "allOf" and isinstance(v, list):
            out["allOf"] = [*(out.get("allOf") or []), *v]
        elif k in ("anyOf", "oneOf") and k in out:
            out["allOf"] = [*(out.get("allOf") or []), {k: v}]
        else:
            out.setdefault(k, v)
    return out


def _candidates(schema: Any, root: Any, depth: int = 0) -> list[Any]:
    """A few small instances of ``schema`` (best effort; the matcher checks them)."""
    if depth > 12:
        return []
    if schema is True or schema == {}:
        return [None, 0, ""]
    if not isinstance(schema, dict):
        return []
    if "$ref" in schema:
        resolved = _resolve(schema, root)
        if resolved is not schema:
            return _candidates(resolved, root, depth + 1)
    if "const" in schema:
        return [schema["const"]]
    if schema.get("enum"):
        return list(schema["enum"][:3])
    for key in ("anyOf", "oneOf"):
        if key in schema:
            out: list[Any] = []
            base = {k: v for k, v in schema.items() if k != key}
            for sub in schema[key][:6]:
                out.extend(_candidates(_merge(base, _resolve(sub, root)), root, depth + 1)[:2])
            return out
    if "allOf" in schema:
        merged: Any = {k: v for k, v in schema.items() if k != "allOf"}
        for sub in schema["allOf"]:
            merged = _merge(merged, _resolve(sub, root))
            if merged is False:
                return []
        return _candidates(merged, root, depth + 1)
    types = schema.get("type")
    if types is None:
        if "properties" in schema or "required" in schema:
            types = "object"
        elif "items" in schema or "prefixItems" in schema:
            types = "array"
        elif "pattern" in schema or "format" in schema or "minLength" in schema:
            types = "string"
        elif "minimum" in schema or "maximum" in schema:
            types = "number"
        else:
            types = ["null", "object", "string"]
    if isinstance(types, str):
        types = [types]
    out = []
    for t in types:
        out.extend(_typed(t, schema, root, depth))
    return out


def _within(v: float, schema: dict[str, Any]) -> bool:
    """Whether ``v`` meets the schema's numeric bounds (draft 4 boolean exclusives too)."""
    lo, hi = schema.get("minimum"), schema.get("maximum")
    xlo, xhi = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    num = (int, float)
    if isinstance(lo, num) and not isinstance(lo, bool) and (v < lo or (xlo is True and v == lo)):
        return False
    if isinstance(hi, num) and not isinstance(hi, bool) and (v > hi or (xhi is True and v == hi)):
        return False
    if isinstance(xlo, num) and not isinstance(xlo, bool) and v <= xlo:
        return False
    return not (isinstance(xhi, num) and not isinstance(xhi, bool) and v >= xhi)


def _typed(t: str, schema: dict[str, Any], root: Any, depth: int) -> list[Any]:
    if t == "null":
        return [None]
    if t == "boolean":
        return [False]
    if t in ("integer", "number"):
        lo = schema.get("minimum", schema.get("exclusiveMinimum"))
        hi = schema.get("maximum", schema.get("exclusiveMaximum"))
        vals = [0, 1, -1]
        if isinstance(lo, (int, float)) and not isinstance(lo, bool):
            vals = [int(lo) + 1, int(lo), int(lo) + 2, *vals]
        if isinstance(hi, (int, float)) and not isinstance(hi, bool):
            vals = [*vals, int(hi) - 1, int(hi)]
        step = schema.get("multipleOf")
        if isinstance(step, (int, float)) and step > 0:
            vals = [v - v % step if isinstance(step, int) else 0 for v in vals]
        inside = [v for v in vals if _within(v, schema)]
        return inside + [v for v in vals if v not in inside]
    if t == "string":
        n = int(schema.get("minLength", 0) or 0)
        if "format" in schema and schema["format"] in _FORMATS:
            return [_FORMATS[schema["format"]]]
        if "pattern" in schema:
            try:
                s = min_string(schema["pattern"])
            except Exception:
                return ["a" * max(n, 1)]
            return [s + "a" * max(0, n - len(s)), s]
        return ["a" * n, "a" * max(n, 1)]
    if t == "array":
        items = schema.get("items", {})
        prefix = schema.get("prefixItems") or (items if isinstance(items, list) else [])
        n = int(schema.get("minItems", 0) or 0)
        arr: list[Any] = []
        for sub in prefix[:n] if prefix else []:
            c = _candidates(sub, root, depth + 1)
            arr.append(c[0] if c else None)
        if len(arr) < n and isinstance(items, dict):
            c = _candidates(items, root, depth + 1)
            arr += [c[0] if c else None] * (n - len(arr))
        return [arr]
    if t == "object":
        props = schema.get("properties", {}) or {}
        required = list(schema.get("required", []) or [])
        chosen = set(required)
        n = int(schema.get("minProperties", 0) or 0)
        for key in props:
            if len(chosen) >= n:
                break
            chosen.add(key)
        obj: dict[str, Any] = {}
        extra_ok = schema.get("additionalProperties", True) is not False and not schema.get("patternProperties")
        if extra_ok:  # minProperties past the named properties: filler names
            fill = iter(f"p{i}" for i in range(n))
            while len(chosen) < n:
                chosen.add(next(fill))
        # llguidance writes named properties in the schema's order, then the others
        fillers = sorted(k for k in chosen if k not in props and k not in required)
        for key in [*[k for k in props if k in chosen], *[k for k in required if k not in props], *fillers]:
            sub = props.get(key, schema.get("additionalProperties", {}))
            c = _candidates(sub if sub is not False else {}, root, depth + 1)
            obj[key] = c[0] if c else None
        return [obj]
    return []


def compile_json_grammar(schema: Any, tok: Tokenizer, *, max_witness: int = 4096) -> CompiledGrammar | str:
    """llguidance's grammar for ``schema`` (compact JSON) with a checked witness; or the reason
    it cannot be used (a string)."""
    ll = load_llguidance()
    lltok = ll_tokenizer(tok)
    for _ in range(16):
        try:
            spec = ll.LLMatcher.grammar_from_json_schema(json.dumps(schema), defaults={"whitespace_flexible": False})
            matcher = ll.LLMatcher(lltok, spec, log_level=0, limits=ll_limits())
            error = matcher.get_error() if matcher.is_error() else ""
        except Exception as exc:  # llguidance raises on some schemas instead of reporting
            error = str(exc) or type(exc).__name__
        unknown = _UNKNOWN_FORMAT.search(error)
        if unknown is None or unknown.group(1).strip() in STANDARD_FORMATS:
            break
        # a format JSON Schema does not define is an annotation: it constrains nothing
        schema = _drop_format(schema, unknown.group(1).strip())
    if error:
        return f"llguidance: {error.splitlines()[0]}"
    seen: set[str] = set()
    for inst in _candidates(schema, schema):
        text = span_text(inst)
        if text in seen:
            continue
        seen.add(text)
        ids = tok.encode(text)
        if len(ids) > max_witness:
            continue
        m = matcher.deep_copy()  # building a matcher takes seconds on large schemas; a copy does not
        if m.try_consume_tokens(ids) == len(ids) and m.is_accepting():
            return CompiledGrammar(lark="", ll_grammar=spec, witness=tuple(ids), tokenizer=tok).adopt(matcher)
    return "no small instance of the schema found to keep the span closable"


def accepts(compiled: CompiledGrammar, text: str) -> bool:
    """Whether the span's matcher accepts ``text`` as a whole value."""
    ids = compiled.tokenizer.encode(text)
    m = compiled.matcher()
    return m.try_consume_tokens(ids) == len(ids) and m.is_accepting()


SEARCH_BUDGET = 5_000  # matcher calls one key-order search may make


def _spellings(value: Any) -> list[str]:
    """The JSON texts of a scalar: a whole number also as ``2`` and ``2.0`` (the same value)."""
    text = span_text(value, compact=False)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return [text]
    out = [text]
    if isinstance(value, float) and "e" in text:  # llguidance's bounded numbers take no exponent
        out.append(plain_decimal(value))
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        out.append(str(int(value)))
    if isinstance(value, int):
        return [text, f"{value}.0"]
    return out


def accepts_value(compiled: CompiledGrammar, instance: Any, budget: int = SEARCH_BUDGET) -> bool | None:
    """Whether the span can write ``instance`` in *some* key order (compact JSON): a depth-first
    search that writes each object's members one at a time, trying every member not yet written
    where the matcher takes its key, and backtracks (matcher rollback) when a value or the rest of
    the object fails. ``None``: the budget of matcher calls ran out before an answer."""
    tok = compiled.tokenizer
    m = compiled.matcher()
    calls = [0]

    class _Spent(Exception):
        pass

    def feed(text: str) -> int | None:
        """Consume ``text``; its token count, or None (nothing left consumed) when refused."""
        calls[0] += 1
        if calls[0] > budget:
            raise _Spent
        ids = tok.encode(text)
        n = m.try_consume_tokens(ids)
        if n == len(ids):
            return n
        if n:
            m.rollback(n)
        return None

    def ways(value: Any) -> Any:
        """Yield once per way the matcher takes ``value`` (consumed while suspended, rolled back
        when resumed)."""
        if isinstance(value, dict):
            n = feed("{")
            if n is None:
                return
            yield from members(value, list(value), True)
            m.rollback(n)
        elif isinstance(value, list):
            n = feed("[")
            if n is None:
                return
            yield from items(value, 0)
            m.rollback(n)
        else:
            for text in _spellings(value):  # the first spelling the matcher takes
                n = feed(text)
                if n is None:
                    continue
                yield
                m.rollback(n)
                break

    def members(obj: dict[str, Any], left: list[str], first: bool) -> Any:
        if not left:
            n = feed("}")
            if n is not None:
                yield
                m.rollback(n)
            return
        for key in left:
            n = feed(("" if first else ",") + span_text(key) + ":")
            if n is None:
                continue
            rest = [k for k in left if k != key]
            for _ in ways(obj[key]):
                yield from members(obj, rest, False)
            m.rollback(n)

    def items(arr: list[Any], i: int) -> Any:
        if i == len(arr):
            n = feed("]")
            if n is not None:
                yield
                m.rollback(n)
            return
        n = feed(",") if i else 0
        if n is None:
            return
        for _ in ways(arr[i]):
            yield from items(arr, i + 1)
        if n:
            m.rollback(n)

    try:
        for _ in ways(instance):
            if m.is_accepting():
                return True
    except _Spent:
        return None
    return False


def orderings(instance: Any, schema: Any, limit: int = 8) -> list[Any]:
    """``instance`` with its object keys in the orders the span writes them (the schema's
    ``properties`` order, then the others), one per anyOf / oneOf branch that orders differently."""
    out: list[Any] = []
    for inst in _orders(instance, schema, schema, 0):
        if inst not in out:
            out.append(inst)
        if len(out) >= limit:
            break
    return out


def _resolve(schema: Any, root: Any) -> Any:
    for _ in range(16):
        if not (isinstance(schema, dict) and isinstance(schema.get("$ref"), str) and schema["$ref"].startswith("#")):
            return schema
        node: Any = root
        for part in schema["$ref"][1:].split("/"):
            if part:
                node = node.get(part.replace("~1", "/").replace("~0", "~")) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            return schema
        schema = _merge(node, {k: v for k, v in schema.items() if k != "$ref"})
    return schema


def _fit(instance: dict[str, Any], branch: dict[str, Any]) -> int:
    """How well a branch's properties name ``instance``: keys it names, less required keys missing."""
    props = branch.get("properties", {}) or {}
    required = branch.get("required", []) or []
    return sum(k in props for k in instance) - sum(isinstance(k, str) and k not in instance for k in required)


def _branches(schema: Any, root: Any, instance: Any, depth: int) -> list[dict[str, Any]]:
    """``schema`` as a few plain branches (no anyOf / oneOf / allOf left: each merges the
    properties of the members it takes), those that best name ``instance``'s keys first."""
    schema = _resolve(schema, root)
    if not isinstance(schema, dict):
        return [{}]
    out = [{k: v for k, v in schema.items() if k not in ("anyOf", "oneOf", "allOf")}]
    if depth < 8:
        for sub in schema.get("allOf") or [] if isinstance(schema.get("allOf"), list) else []:
            subs = _branches(sub, root, instance, depth + 1)
            out = [_merge(a, b) for a in out for b in subs[:2]][:8]
        for key in ("anyOf", "oneOf"):
            if isinstance(schema.get(key), list) and schema[key]:
                alts = [b for sub in schema[key] for b in _branches(sub, root, instance, depth + 1)]
                out = [_merge(a, b) for a in out for b in alts][:8]
    out = [b for b in out if isinstance(b, dict)] or [{}]
    if isinstance(instance, dict) and len(out) > 1:
        out.sort(key=lambda b: -_fit(instance, b))
    return out


def _orders(instance: Any, schema: Any, root: Any, depth: int) -> list[Any]:
    if depth > 24:
        return [instance]
    branches = _branches(schema, root, instance, 0)
    out: list[Any] = []
    for b in branches[:4]:
        if isinstance(instance, dict):
            props = b.get("properties", {}) or {}
            keys = [k for k in props if k in instance] + [k for k in instance if k not in props]
            extra = b.get("additionalProperties", {})
            obj = {}
            for k in keys:
                sub = props.get(k, extra if isinstance(extra, dict) else {})
                obj[k] = _orders(instance[k], sub, root, depth + 1)[0]
            out.append(obj)
        elif isinstance(instance, list):
            items = b.get("items", {})
            prefix = b.get("prefixItems") or (items if isinstance(items, list) else [])
            rest = items if isinstance(items, dict) else {}
            out.append(
                [_orders(x, prefix[i] if i < len(prefix) else rest, root, depth + 1)[0] for i, x in enumerate(instance)]
            )
        else:
            out.append(instance)
    return out or [instance]
