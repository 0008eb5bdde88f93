"""The logic keywords of JSON Schema rewritten into positive ones, exactly.

:func:`positive` returns a schema with the same valid instances and none of ``not``, ``if`` /
``then`` / ``else``, ``dependencies``, ``dependentRequired``, ``dependentSchemas``, and no
overlapping ``oneOf``; both the template compiler and the context-free span take what is left.

* ``if: I, then: T, else: E`` is ``anyOf [allOf [I, T], allOf [not I, E]]`` (``anyOf [not I, T]``
  without ``else``, ``anyOf [I, E]`` without ``then``).
* ``dependentRequired {a: [b, c]}`` is ``anyOf [{properties: {a: false}}, {required: [a, b, c]}]``,
  ``dependentSchemas {a: S}`` is ``anyOf [{properties: {a: false}}, allOf [{required: [a]}, S]]``,
  and draft-7 ``dependencies`` is whichever of the two each value is.
* ``oneOf`` whose branches cannot overlap is ``anyOf``; otherwise "exactly one" is ``anyOf`` over
  ``i`` of ``allOf [B_i, not B_j for every j != i]``.
* ``not S`` is pushed down to the keywords of ``S`` (:func:`negate`): every keyword constrains
  one type, so "not S" is "another type, or one keyword of S fails". A keyword whose failure no
  positive schema expresses (``pattern``, ``format``, ``multipleOf``, ``uniqueItems``,
  ``additionalProperties``, ...) is refused with its path.

Instance keywords (``enum``, ``const``, ``default``, ``examples``) are data and never rewritten.
Imports only :mod:`dlmprompt.errors`, :mod:`.normalize` and :mod:`.regexes`."""

from __future__ import annotations

import itertools
import json
import math
import re
from typing import Any

from dlmprompt.constraints.jsonschema.normalize import (
    ANNOTATIONS,
    NOT_INTEGER,
    Context,
    disjoint,
    hinted_type,
    json_equal,
    json_type,
    resolve,
)
from dlmprompt.constraints.jsonschema.regexes import prefer_native, trie_of
from dlmprompt.errors import SchemaError

_ONE_SCHEMA = ("items", "additionalItems", "additionalProperties", "contains", "propertyNames", "not", "if")
_ONE_SCHEMA += ("then", "else", "unevaluatedItems", "unevaluatedProperties")
_SCHEMA_LIST = ("allOf", "anyOf", "oneOf", "prefixItems", "items")
_SCHEMA_MAP = ("properties", "patternProperties", "definitions", "$defs", "dependentSchemas")
_LOGIC = ("not", "if", "then", "else", "dependencies", "dependentRequired", "dependentSchemas", "oneOf")
_TYPES = ("null", "boolean", "object", "array", "string", "number")
_MAX_ONE_OF = 8  # branches of an overlapping oneOf rewritten as "exactly one"
_MAX_DEPTH = 24  # $ref levels followed inside one negation
_MAX_EXCLUDED = 128  # longest string value a negation excludes
_MAX_PATTERN = 20_000  # characters of the pattern of the strings a negation keeps
_MAX_WORK = 4000  # negations one rewrite may compute (nested exactly-one oneOf grows fast)


def positive(schema: Any, *, lenient: bool = False, as_written: bool = False) -> Any:
    """``schema`` without the logic keywords (same valid instances); refuses, with the keyword and
    its path, a negation no positive schema expresses. ``lenient``: an overlapping ``oneOf``
    whose "exactly one" has no positive form is left as it is (the compiler then reads it as
    ``anyOf`` and says so). ``as_written``: ``oneOf`` branches are judged disjoint on the values
    the template writes (a branch with no ``type`` only as its hinted type, noted there)."""
    return _Rewriter(schema, lenient, as_written).rewrite(schema, "")


def negate_of(schema: Any, root: Any = None) -> Any:
    """A positive schema of the values ``schema`` rejects (``$ref`` resolved against ``root``)."""
    r = _Rewriter(schema if root is None else root)
    return r.negate(r.rewrite(schema, ""), "")


class _Rewriter:
    def __init__(self, root: Any, lenient: bool = False, as_written: bool = False) -> None:
        self.lenient = lenient
        self.as_written = as_written
        self.ctx = Context(root, None, False, None)
        schema_uri = str(root.get("$schema", "")) if isinstance(root, dict) else ""
        self.draft4 = bool(re.search(r"draft-0[34]", schema_uri))
        self.before7 = bool(re.search(r"draft-0[3-6]", schema_uri))  # no if / then / else yet: annotations
        self.depth = 0
        self.work = 0

    # ------------------------------------------------------------------ the whole tree

    def rewrite(self, node: Any, path: str) -> Any:
        if not isinstance(node, dict):
            return node
        node = fold_finite(node)
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in ANNOTATIONS - {"definitions", "$defs"} or key in ("enum", "const"):
                out[key] = value
            elif key in _SCHEMA_MAP and isinstance(value, dict):
                out[key] = {k: self.rewrite(v, f"{path}/{key}/{k}") for k, v in value.items()}
            elif key in _SCHEMA_LIST and isinstance(value, list):
                out[key] = [self.rewrite(v, f"{path}/{key}/{i}") for i, v in enumerate(value)]
            elif key in _ONE_SCHEMA:
                out[key] = self.rewrite(value, f"{path}/{key}")
            elif key == "dependencies" and isinstance(value, dict):
                out[key] = {
                    k: v if isinstance(v, list) else self.rewrite(v, f"{path}/{key}/{k}") for k, v in value.items()
                }
            else:
                out[key] = value
        return self._local(out, path)

    def _local(self, node: dict[str, Any], path: str) -> dict[str, Any]:
        """One node's logic keywords as conjuncts under ``allOf`` (its children are rewritten)."""
        if not any(k in node for k in _LOGIC):
            return node
        out = dict(node)
        extra: list[Any] = []
        if "not" in out:
            extra.append(self.negate(out.pop("not"), f"{path}/not"))
        cond, then, other = out.pop("if", None), out.pop("then", None), out.pop("else", None)
        if cond is not None and (then is not None or other is not None) and not self.before7:
            then = True if then is None else then
            other = True if other is None else other
            if other is True:
                extra.append({"anyOf": [self.negate(cond, f"{path}/if"), then]})
            elif then is True:
                extra.append({"anyOf": [cond, other]})
            else:
                extra.append({"anyOf": [{"allOf": [cond, then]}, {"allOf": [self.negate(cond, f"{path}/if"), other]}]})
        deps = dict(out.pop("dependentRequired", None) or {})
        schemas = dict(out.pop("dependentSchemas", None) or {})
        for name, dep in (out.pop("dependencies", None) or {}).items():
            (deps if isinstance(dep, list) else schemas)[name] = dep
        for name, needs in deps.items():
            if not isinstance(needs, list):
                raise SchemaError("dependentRequired values must be lists of names", path=f"{path}/dependentRequired")
            if needs:
                extra.append(
                    {"anyOf": [{"properties": {name: False}}, {"required": list(dict.fromkeys([name, *needs]))}]}
                )
        for name, sub in schemas.items():
            extra.append({"anyOf": [{"properties": {name: False}}, {"allOf": [{"required": [name]}, sub]}]})
        if "oneOf" in out:
            one = out.pop("oneOf")
            if not isinstance(one, list) or not one:
                raise SchemaError("'oneOf' needs a non-empty list of schemas", path=path)
            try:
                extra.append({"anyOf": self._exactly_one(one, f"{path}/oneOf")})
            except SchemaError:
                if not self.lenient:
                    raise
                out["oneOf"] = one
        if extra:
            out["allOf"] = [*(out.get("allOf") or []), *extra]
        return out

    def _exactly_one(self, branches: list[Any], path: str) -> list[Any]:
        if len(branches) == 1 or disjoint(self.ctx, branches, path, as_written=self.as_written):
            return list(branches)
        typed = self._typed(branches, path)
        if typed is not None and disjoint(self.ctx, typed, path):
            return typed
        if len(branches) > _MAX_ONE_OF:
            raise SchemaError(
                f"oneOf with {len(branches)} branches that may overlap is not supported (at most {_MAX_ONE_OF}); "
                "use anyOf or make the branches disjoint (different types or a const discriminator)",
                path=path,
            )
        negs = [self.negate(b, f"{path}/{i}") for i, b in enumerate(branches)]
        return [{"allOf": [b, *[n for j, n in enumerate(negs) if j != i]]} for i, b in enumerate(branches)]

    def _typed(self, branches: list[Any], path: str) -> list[Any] | None:
        """Two or more branches with no ``type`` that all name keywords of one type only (say
        ``properties``): a value of another type is valid in every branch, so "exactly one"
        refuses it, and the oneOf is the same with that type written into each branch."""
        resolved = []
        for b in branches:
            try:
                rb, _ = resolve(self.ctx, b, path)
            except SchemaError:
                return None
            if not isinstance(rb, dict):
                return None
            resolved.append(rb)
        hints = {hinted_type(rb) for rb in resolved}
        if len(hints) != 1 or None in hints:
            return None
        hint = hints.pop()
        return [{**rb, "type": hint} for rb in resolved]

    # ------------------------------------------------------------------ negation

    def negate(self, schema: Any, path: str) -> Any:
        """A positive schema of the values ``schema`` rejects."""
        self.work += 1
        if self.work > _MAX_WORK:
            raise SchemaError(
                f"the logic keywords of this schema grow past {_MAX_WORK} negations when rewritten "
                "(nested overlapping oneOf or not); simplify them",
                path=path,
            )
        if schema is True:
            return False
        if schema is False:
            return True
        if not isinstance(schema, dict):
            raise SchemaError(f"a schema is an object or a boolean; got {json.dumps(schema)[:40]}", path=path)
        if "$ref" in schema:
            self.depth += 1
            try:
                if self.depth > _MAX_DEPTH:
                    raise SchemaError("'not' of a recursive schema is not supported", path=path)
                target, _ = resolve(self.ctx, schema, path)
                return self.negate(self.rewrite(target, path), path)
            finally:
                self.depth -= 1
        branches: list[Any] = []
        schema = dict(schema)
        if "not" in schema:  # not (S and not X) = (not S) or X
            branches.append(schema.pop("not"))
        schema = self._local(schema, path)
        keys = set(schema) - ANNOTATIONS
        if not keys:
            return {"anyOf": branches} if len(branches) > 1 else (branches[0] if branches else False)
        if "type" in schema:
            branches.extend(self._not_type(schema["type"], path))
        if "enum" in schema or "const" in schema:
            values = [schema["const"]] if "const" in schema else schema["enum"]
            if not isinstance(values, list):
                raise SchemaError("'enum' must be a list", path=path)
            branches.extend(self._not_values(values, path))
            if "const" in schema and "enum" in schema:
                branches.extend(self._not_values(schema["enum"], path))
        branches.extend(self._not_numeric(schema, path))
        if schema.get(NOT_INTEGER):  # a number that fails "not an integer" is an integer
            branches.append({"type": "integer"})
        for key, ty, flip in (
            ("minLength", "string", "maxLength"),
            ("maxLength", "string", "minLength"),
            ("minItems", "array", "maxItems"),
            ("maxItems", "array", "minItems"),
            ("minProperties", "object", "maxProperties"),
            ("maxProperties", "object", "minProperties"),
        ):
            if key in schema:
                n = schema[key]
                if not isinstance(n, int) or isinstance(n, bool):
                    raise SchemaError(f"{key} must be an integer", path=path)
                if key.startswith("min") and n > 0:
                    branches.append({"type": ty, flip: n - 1})
                elif key.startswith("max"):
                    branches.append({"type": ty, flip: n + 1})
        for name, sub in (schema.get("properties") or {}).items():
            if sub is not True and sub != {}:
                branches.append(
                    {
                        "type": "object",
                        "required": [name],
                        "properties": {name: self.negate(sub, f"{path}/properties/{name}")},
                    }
                )
        for name in schema.get("required") or []:
            branches.append({"type": "object", "properties": {name: False}})
        if "contains" in schema and not any(k in schema for k in ("minContains", "maxContains")):
            branches.append({"type": "array", "items": self.negate(schema["contains"], f"{path}/contains")})
        if "anyOf" in schema:
            branches.append({"allOf": [self.negate(b, f"{path}/anyOf/{i}") for i, b in enumerate(schema["anyOf"])]})
        if "allOf" in schema:
            branches.extend(self.negate(b, f"{path}/allOf/{i}") for i, b in enumerate(schema["allOf"]))
        if schema.get("uniqueItems") is False:
            keys.discard("uniqueItems")
        if schema.get("additionalProperties") in (True, {}):
            keys.discard("additionalProperties")
        if schema.get("items") in (True, {}):
            keys.discard("items")
        handled = {"type", "enum", "const", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}
        handled |= {"minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties"}
        handled |= {"properties", "required", "anyOf", "allOf", "contains", NOT_INTEGER}
        rest = sorted(k for k in keys - handled if k in _VALIDATION)
        if rest:
            raise SchemaError(
                f"'not' of a schema with {rest[0]!r} is not supported (no positive schema holds the values it "
                "rejects); rewrite the schema without 'not'",
                path=path,
            )
        if not branches:
            return False
        return {"anyOf": branches} if len(branches) > 1 else branches[0]

    def _not_type(self, t: Any, path: str) -> list[Any]:
        types = {t} if isinstance(t, str) else set(t) if isinstance(t, list) else None
        if types is None:
            raise SchemaError(f"'type' must be a type name or a list of them; got {t!r}", path=path)
        rest = [ty for ty in _TYPES if ty not in types]
        out: list[Any] = []
        if "integer" in types and "number" not in types:  # the numbers that are not integers
            rest.remove("number")
            out.append({"type": "number", NOT_INTEGER: True})
        return [{"type": rest if len(rest) > 1 else rest[0]}, *out] if rest else out

    def _not_values(self, values: list[Any], path: str) -> list[Any]:
        """The values that are none of ``values``: other types, and per type the complement."""
        out: list[Any] = []
        by_type: dict[str, list[Any]] = {ty: [] for ty in _TYPES}
        for v in values:
            by_type[_type_of(v)].append(v)
        for ty in _TYPES:
            vs = by_type[ty]
            if not vs:
                out.append({"type": ty})
            elif ty == "boolean":
                left = [b for b in (True, False) if not any(x is b for x in vs)]
                if left:
                    out.append({"enum": left})
            elif ty == "number":
                out.extend(self._not_numbers(sorted({float(v) for v in vs})))
            elif ty == "string":
                pattern = not_strings_pattern(vs) if max(len(v) for v in vs) <= _MAX_EXCLUDED else ""
                if not pattern or len(pattern) > _MAX_PATTERN:
                    raise SchemaError(
                        f"'not' of these string values is not supported (at most {_MAX_EXCLUDED} characters each, "
                        f"and a pattern of the other strings under {_MAX_PATTERN} characters)",
                        path=path,
                    )
                prefer_native(pattern)  # outlines-core takes exponential time on its shape
                out.append({"type": "string", "pattern": pattern})
            elif ty == "object":
                if len(vs) > 1:
                    raise SchemaError("'not' of several object values is not supported", path=path)
                out.extend(self._not_object(vs[0], path))
            elif ty == "array":
                if len(vs) > 1 or vs[0]:
                    raise SchemaError("'not' of a non-empty array value is not supported", path=path)
                out.append({"type": "array", "minItems": 1})
        return out

    def _not_object(self, obj: dict[str, Any], path: str) -> list[Any]:
        if not obj:
            return [{"type": "object", "minProperties": 1}]
        out: list[Any] = [{"type": "object", "properties": {k: False}} for k in obj]
        for k, v in obj.items():
            out.append({"type": "object", "required": [k], "properties": {k: self.negate({"const": v}, f"{path}/{k}")}})
        out.append({"type": "object", "required": list(obj), "minProperties": len(obj) + 1})
        return out

    def _bound(self, key: str, v: float) -> dict[str, Any]:
        """``{exclusiveMinimum: v}`` (or maximum) in the schema's draft."""
        v = int(v) if float(v).is_integer() else v  # type: ignore[assignment]
        if self.draft4:
            plain = "minimum" if key == "exclusiveMinimum" else "maximum"
            return {plain: v, key: True}
        return {key: v}

    def _not_numbers(self, vs: list[float]) -> list[Any]:
        out = [{"type": "number", **self._bound("exclusiveMaximum", vs[0])}]
        for a, b in itertools.pairwise(vs):
            if self.draft4:
                out.append(
                    {
                        "type": "number",
                        "minimum": _num(a),
                        "exclusiveMinimum": True,
                        "maximum": _num(b),
                        "exclusiveMaximum": True,
                    }
                )
            else:
                out.append({"type": "number", "exclusiveMinimum": _num(a), "exclusiveMaximum": _num(b)})
        out.append({"type": "number", **self._bound("exclusiveMinimum", vs[-1])})
        return out

    def _not_numeric(self, schema: dict[str, Any], path: str) -> list[Any]:
        out = []
        lo, hi = schema.get("minimum"), schema.get("maximum")
        xlo, xhi = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
        for name, v in (("minimum", lo), ("maximum", hi), ("exclusiveMinimum", xlo), ("exclusiveMaximum", xhi)):
            if v is not None and not isinstance(v, (int, float)):
                raise SchemaError(f"{name} must be a number", path=path)
            if isinstance(v, float) and not math.isfinite(v):
                raise SchemaError(f"{name} must be finite", path=path)
        if isinstance(xlo, bool):  # draft 4: a flag on minimum
            lo, xlo = (None, lo) if xlo else (lo, None)
        if isinstance(xhi, bool):
            hi, xhi = (None, hi) if xhi else (hi, None)
        if lo is not None:  # x < lo
            out.append({"type": "number", **self._bound("exclusiveMaximum", lo)})
        if xlo is not None:  # x <= xlo
            out.append({"type": "number", "maximum": _num(xlo)})
        if hi is not None:
            out.append({"type": "number", **self._bound("exclusiveMinimum", hi)})
        if xhi is not None:
            out.append({"type": "number", "minimum": _num(xhi)})
        return out


def _values(part: Any) -> list[Any] | None:
    """The values a schema that only names values allows (``enum`` / ``const``, annotations
    aside), or None for any other schema."""
    if not isinstance(part, dict) or not ({"enum", "const"} & set(part)):
        return None
    if set(part) - {"enum", "const"} - ANNOTATIONS:
        return None
    values = part["enum"] if "enum" in part else [part["const"]]
    if not isinstance(values, list):
        return None
    if "const" in part:
        values = [v for v in values if json_equal(v, part["const"])]
    return list(values)


def fold_finite(node: dict[str, Any]) -> dict[str, Any]:
    """A conjunction with a finite set of values, folded into one ``enum``: the node's own
    ``enum`` / ``const`` and ``allOf`` branches that only name values intersect, and ``not`` of
    named values (the node's own, or an ``allOf`` branch that is only such a ``not``) removes
    values; other conjuncts stay. The same instances: ``{allOf: [{const: 2^53 - 1}, {not: {const:
    2^53}}]}`` is ``{enum: [2^53 - 1]}``, where pushing the ``not`` down would write "every number
    but 2^53" as a pattern. Nodes without a finite conjunct are returned as they are."""
    if "allOf" in node and not isinstance(node["allOf"], list):
        return node  # malformed: reported where it is read
    branches = list(node.get("allOf") or [])
    own = {k: v for k, v in node.items() if k in ("enum", "const")}
    sets = [own] if own else []
    nots: list[Any] = []
    own_not = node.get("not")
    if _values(own_not) is not None:
        nots.append(own_not)
    kept = []
    for b in branches:
        if _values(b) is not None:
            sets.append(b)
        elif isinstance(b, dict) and set(b) == {"not"} and _values(b["not"]) is not None:
            nots.append(b["not"])
        else:
            kept.append(b)
    if not sets:
        return node
    allowed = [_values(x) for x in sets]
    if any(a is None for a in allowed):
        return node
    values = allowed[0]
    for other in allowed[1:]:
        values = [v for v in values if any(json_equal(v, w) for w in other)]  # type: ignore[union-attr]
    for n in nots:
        values = [v for v in values if not any(json_equal(v, w) for w in _values(n))]  # type: ignore[union-attr]
    drop = {"enum", "const", "allOf"} | ({"not"} if _values(own_not) is not None else set())
    out = {k: v for k, v in node.items() if k not in drop}
    out["enum"] = values
    if kept:
        out["allOf"] = kept
    return out


def _num(v: float) -> float | int:
    return int(v) if isinstance(v, float) and v.is_integer() else v


def _type_of(v: Any) -> str:
    t = json_type(v)
    return "number" if t == "integer" else t


_VALIDATION = {
    "multipleOf", "pattern", "format", "items", "additionalItems", "prefixItems", "uniqueItems",
    "minContains", "maxContains", "patternProperties", "additionalProperties", "propertyNames",
    "unevaluatedItems", "unevaluatedProperties", "$dynamicRef", "$recursiveRef", "contentSchema",
}  # fmt: skip


_SPECIAL = set("\\^$.|?*+()[]{}/-")


def _escape(ch: str) -> str:
    if ch in _SPECIAL:
        return "\\" + ch
    if ch == "\n":
        return "\\n"
    if ch == "\r":
        return "\\r"
    if ch == "\t":
        return "\\t"
    if ord(ch) < 0x20:
        return f"\\x{ord(ch):02x}"
    return ch


def _class_not(chars: list[str]) -> str:
    return "[^" + "".join(_escape(c) for c in sorted(chars)) + "]"


_ANY = r"[\s\S]"  # any character, in ECMA and in Python alike


def not_strings_pattern(strings: list[str]) -> str:
    """An anchored ECMA pattern of the strings that are none of ``strings``: one alternative per
    trie node (its path alone when that is not a string of the set, or its path, a character that
    leads nowhere in the trie, then anything). outlines-core builds its automaton in time
    exponential in the longest string (0.09 s at 4 characters, 6.9 s at 6), so the caller marks
    it for :mod:`dlmprompt.constraints.regexdfa` (:func:`.regexes.prefer_native`)."""
    trie = trie_of(strings)
    alts: list[str] = []
    todo: list[tuple[str, dict[str, Any]]] = [("", trie)]
    while todo:
        path, node = todo.pop()
        kids = sorted(c for c in node if c)
        if "" not in node:
            alts.append(path)
        alts.append(path + (_class_not(kids) if kids else _ANY) + _ANY + "*")
        todo.extend((path + _escape(c), node[c]) for c in reversed(kids))
    return "^(?:" + "|".join(alts) + ")$"


__all__ = ["negate_of", "not_strings_pattern", "positive"]
