"""JSON Schema (and pydantic models) -> a template of anchors and regular holes.

The fixed structure of a schema (braces, required keys, separators) becomes **anchors**; each
leaf value becomes a **hole** with its own regular constraint (a regex, from :mod:`.values`);
what is not fixed (optional properties, arrays of unknown length, anyOf / oneOf, bounded
recursion) becomes one hole whose regex covers that whole sub-value. Every regex accepts only
texts whose JSON value is valid under the schema (soundness); where an exact regex would be huge,
the language is narrowed to a documented subset (never widened), and each such choice is listed
in :attr:`Template.notes`.

Key order is the schema's ``properties`` order (then required keys not listed there, then extra
properties); whitespace is fixed: compact (``indent=None``) or ``indent`` spaces per level.

Validation keywords that are not implemented are **refused** with a :class:`SchemaError` naming
the keyword and the JSON path; ``lenient=True`` approximates a few of them instead (``oneOf`` as
``anyOf``, ``uniqueItems`` and unknown ``format`` ignored) and says so in the notes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from dlmprompt.constraints.jsonschema.logic import positive
from dlmprompt.constraints.jsonschema.normalize import ANNOTATIONS, Context, as_schema, dump, schema_walker, types_of
from dlmprompt.constraints.jsonschema.regexes import lit
from dlmprompt.constraints.jsonschema.values import items_regex, object_items, prop_schema, value_regex
from dlmprompt.errors import SchemaError


@dataclass(frozen=True)
class Hole:
    """A value the model writes: ``regex`` (full match) over the JSON text at ``path``."""

    regex: str
    path: str
    kind: str  # "string" | "integer" | "number" | "boolean" | "enum" | "property" | "properties" | "value"
    # x-grounded of its schema (False / True / an object of sources), or "default": a free string
    # leaf that a slot-level grounded= applies to
    grounded: Any = None


@dataclass
class Template:
    """Anchors (``str``) and :class:`Hole` s in order; ``notes`` lists every narrowing."""

    parts: list[str | Hole]
    notes: list[str] = field(default_factory=list)

    @property
    def regex(self) -> str:
        """One regex for the whole value (anchors escaped, holes as groups)."""
        return "".join(lit(p) if isinstance(p, str) else f"({p.regex})" for p in self.parts)

    @property
    def holes(self) -> list[Hole]:
        return [p for p in self.parts if isinstance(p, Hole)]


def compile_schema(
    schema: Any,
    *,
    indent: int | None = None,
    lenient: bool = False,
    additional_properties: bool | None = None,
    stop_on_note: bool = False,
) -> Template:
    """Compile a JSON Schema (dict or bool) or a pydantic model class to a :class:`Template`.

    ``stop_on_note``: raise :class:`~.normalize.Narrowed` at the first narrowing instead of
    finishing a template that the caller would not use.

    ``additional_properties``: ``None`` follows the schema (extra properties allowed unless
    ``additionalProperties: false``), ``False`` never writes properties the schema does not name.
    """
    schema = positive(as_schema(schema), lenient=lenient, as_written=True)
    ctx = Context(schema, indent, lenient, additional_properties)
    ctx.stop_on_note = stop_on_note
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


@schema_walker
def _template(ctx: Context, schema: Any, path: str, depth: int) -> list[str | Hole] | None:
    if schema is True or schema == {}:
        r = value_regex(ctx, schema, path, depth)
        return None if r is None else [Hole(r, path, "value")]
    if "const" in schema and not (set(schema) - ANNOTATIONS - {"const", "type"}):
        if value_regex(ctx, schema, path, depth) is None:
            return None
        return [dump(schema["const"], ctx.indent, depth)]
    types = types_of(schema)
    if (
        types == {"object"}
        and not any(k in schema for k in ("anyOf", "oneOf", "enum", "const"))
        and schema.get("required")
        and not _object_needs_region(schema)
    ):
        return _object_template(ctx, schema, path, depth)
    r = value_regex(ctx, schema, path, depth)
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
    plain = kind == "string" and not any(k in schema for k in ("format", "enum", "const"))
    return [Hole(r, path, kind, schema.get("x-grounded", "default" if plain else None))]


def _object_needs_region(schema: dict[str, Any]) -> bool:
    return any(k in schema for k in ("minProperties", "maxProperties"))


def _object_template(ctx: Context, schema: dict[str, Any], path: str, depth: int) -> list[str | Hole] | None:
    """An object with required members: their keys are anchors; each optional member is a hole of
    its own (``,"key":value`` or nothing; the comma sits on the side of a required member, so the
    holes do not depend on each other), and extra properties one more hole at the end."""
    found = object_items(ctx, schema, path, depth)
    if found is None:
        return None
    items, extra = found
    out: list[str | Hole] = ["{" + ctx.open_sep(depth)]
    first = True
    for key, req, _ in items:
        sub_path = f"{path}/{key}"
        if not req:
            r = value_regex(ctx, prop_schema(schema, key), sub_path, depth + 1)
            if r is not None:
                region = items_regex(ctx, [(key, False, r)], None, depth, leading=not first, trailing=first)
                out.append(Hole(region, sub_path, "property"))
            continue
        sub = _template(ctx, prop_schema(schema, key), sub_path, depth + 1)
        if sub is None:
            return None
        out.append(("" if first else ctx.item_sep(depth)) + json.dumps(key, ensure_ascii=False) + ctx.colon)
        out.extend(sub)
        first = False
    if extra is not None:
        out.append(Hole(items_regex(ctx, [], extra, depth, leading=True, trailing=False), path, "properties"))
    out.append(ctx.close_sep(depth) + "}")
    return out
