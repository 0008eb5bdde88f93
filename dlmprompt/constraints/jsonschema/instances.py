"""The instance writer: every text the compiled template could spell a given JSON instance as
(key orders, number spellings), so tests and benchmarks can check that a valid instance is
accepted by the compiled constraint."""

from __future__ import annotations

import json
import math
from typing import Any

from dlmprompt.constraints.jsonschema.normalize import (
    ANNOTATIONS,
    Context,
    as_schema,
    dump,
    merge_all,
    plain_decimal,
    resolve,
)
from dlmprompt.errors import SchemaError


def texts_for(instance: Any, schema: Any, *, indent: int | None = None, limit: int = 32) -> list[str]:
    """The JSON texts of ``instance`` in the template's key orders (one per branch choice that
    orders keys differently), for acceptance checks; at most ``limit``."""
    schema = as_schema(schema)
    ctx = Context(schema, indent, True, None)
    out = list(dict.fromkeys(_texts(ctx, instance, schema, 0, limit)))
    return out[:limit]


def _texts(ctx: Context, value: Any, schema: Any, depth: int, limit: int) -> list[str]:
    try:
        schema, _ = resolve(ctx, schema, "")
    except SchemaError:
        schema = True
    if isinstance(schema, dict) and "allOf" in schema:
        try:
            schema = merge_all(ctx, schema, "")
        except SchemaError:
            pass
    if isinstance(schema, dict):
        for key in ("anyOf", "oneOf"):
            if key in schema and isinstance(schema[key], list):
                out: list[str] = []
                base = {k: v for k, v in schema.items() if k != key}
                for b in schema[key]:
                    sub = {"allOf": [base, b]} if set(base) - ANNOTATIONS else b
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
    text = dump(value, ctx.indent, depth)
    if isinstance(value, float) and "e" in text and math.isfinite(value):
        # bounded numbers are written without an exponent: the plain decimal first (2e+16 as
        # 20000000000000000.0, 1e-07 as 0.0000001), so the all-plain text is among the first tried
        return [plain_decimal(value), text]
    return [text]
