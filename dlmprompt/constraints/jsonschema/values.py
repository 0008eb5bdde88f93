"""One regex for a whole JSON value under a schema: strings (``pattern``, ``format``, lengths),
numbers and integers (bounds, ``multipleOf``), arrays, objects (required, optional and extra
properties), ``anyOf`` / ``oneOf`` / ``enum`` / ``const``, and unconstrained values. Every regex
accepts only valid texts; where an exact regex would be huge the language is narrowed (never
widened) and the narrowing is noted."""

from __future__ import annotations

import json
import math
import re
from typing import Any

try:  # Python 3.11+
    import re._parser as _sre_parse  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - Python 3.10
    import sre_parse as _sre_parse  # type: ignore[no-redef]
from dlmprompt.constraints.jsonschema.normalize import (
    ANNOTATIONS,
    NOT_INTEGER,
    Context,
    Narrowed,
    disjoint,
    dump,
    hinted_type,
    json_equal,
    json_type,
    schema_walker,
    types_of,
)
from dlmprompt.constraints.jsonschema.regexes import (
    ANY_DEPTH,
    CHAR,
    FORMATS,
    KEY_CHAR,
    MAX_COUNTED,
    MAX_ITEMS,
    MAX_REGION,
    MAX_SHARED,
    NUMBER,
    QUOTE,
    STANDARD_FORMATS,
    STRING,
    alt,
    chars_regex,
    complement,
    int_range,
    lit,
    pattern_regex,
    trie_of,
)


def prop_schema(schema: dict[str, Any], key: str) -> Any:
    props = schema.get("properties") or {}
    if key in props:
        return props[key]
    ap = schema.get("additionalProperties", True)
    return True if ap is False else ap


def object_items(
    ctx: Context, schema: dict[str, Any], path: str, depth: int
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
            value: str | None = any_regex(ctx, depth + 1, ANY_DEPTH if depth == 0 else 0)
        else:
            value = value_regex(ctx, ap, f"{path}/*", depth + 1)
        if value is not None:
            key_re = _not_names([k for k, _, _ in items])
            extra = key_re + lit(ctx.colon) + value
            ctx.note(
                path, "extra properties may be written (the schema allows them): names without escapes, shallow values"
            )
    return items, extra


def _not_names(names: list[str]) -> str:
    """A JSON string (no escapes) whose content is none of ``names``."""
    trie = trie_of(names)

    def build(node: dict[str, Any]) -> str:
        kids = [c for c in node if c]
        alts = []
        if "" not in node:
            alts.append("")
        excluded = [(ord(c), ord(c)) for c in kids] + [(0x22, 0x22), (0x5C, 0x5C), (0, 0x1F)]
        other = chars_regex(complement(excluded))
        if other:
            alts.append(other + KEY_CHAR + "*")
        for c in kids:
            alts.append(lit(c) + build(node[c]))
        return alt(alts) if len(alts) > 1 else alts[0]

    return QUOTE + build(trie) + QUOTE


def items_regex(
    ctx: Context,
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
    sep = lit(ctx.item_sep(depth))
    regs: list[tuple[str, bool]] = []
    for key, req, value in items:
        if value is None:
            raise AssertionError("items need values")  # pragma: no cover
        regs.append((lit(json.dumps(key, ensure_ascii=False) + ctx.colon) + value, req))
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


@schema_walker
def value_regex(ctx: Context, schema: Any, path: str, depth: int) -> str | None:
    """Regex of the JSON texts of values valid under ``schema``; ``None``: no value."""
    if schema is True or not (set(schema) - ANNOTATIONS):
        ctx.note(path, f"any value: written at most {ANY_DEPTH + 1} levels deep")
        return any_regex(ctx, depth, ANY_DEPTH)
    if "anyOf" in schema or "oneOf" in schema:
        key = "anyOf" if "anyOf" in schema else "oneOf"
        branches = schema[key]
        if not isinstance(branches, list) or not branches:
            raise ctx.refuse(path, f"{key!r} needs a non-empty list of schemas")
        if "anyOf" in schema and "oneOf" in schema:
            raise ctx.refuse(path, "anyOf and oneOf together are not supported")
        base = {k: v for k, v in schema.items() if k != key}
        if key == "oneOf" and not disjoint(ctx, branches, path, as_written=True):
            if not ctx.lenient:
                raise ctx.refuse(
                    path,
                    "oneOf branches may overlap (a value valid in two branches is invalid); use anyOf, "
                    "make the branches disjoint (different types or a const discriminator), or lenient=True",
                )
            ctx.note(path, "oneOf treated as anyOf (lenient)")
        regs = []
        for i, b in enumerate(branches):
            sub = {"allOf": [base, b]} if set(base) - ANNOTATIONS else b
            r = value_regex(ctx, sub, f"{path}/{key}/{i}", depth)
            if r is not None:
                regs.append(r)
        return alt(regs) if regs else None
    if "const" in schema or "enum" in schema:
        values = [schema["const"]] if "const" in schema else schema["enum"]
        if not isinstance(values, list):
            raise ctx.refuse(path, "'enum' must be a list")
        rest = {k: v for k, v in schema.items() if k not in ("const", "enum") and k not in ANNOTATIONS}
        ok = [v for v in values if _value_ok(ctx, rest, v, path)]
        if "const" in schema and "enum" in schema:
            ok = [v for v in ok if any(json_equal(v, w) for w in schema["enum"])]
        return alt([lit(dump(v, ctx.indent, depth)) for v in ok]) if ok else None
    t = schema.get("type")
    if t is None:
        types = ["object", "array", "string", "number", "boolean", "null"]
        hint = hinted_type(schema)
        if hint is not None:
            types = [hint]  # e.g. {"properties": ...} without "type": other types would be valid too
            ctx.note(path, f"no 'type': only {hint} values are written")
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
    return alt(regs) if regs else None


def _finite_check(rest: dict[str, Any], v: Any) -> bool | None:
    """Whether ``v`` passes sibling keywords that only name values (``const``, ``enum``), decided
    by comparing values as JSON; None for any other keyword (``not`` never reaches here: the
    logic rewrite removed it, folding a ``not`` of named values with :func:`.logic.fold_finite`)."""
    if not rest or set(rest) - {"const", "enum"}:
        return None
    if "enum" in rest and not isinstance(rest["enum"], list):
        return None
    if "const" in rest and not json_equal(v, rest["const"]):
        return False
    return "enum" not in rest or any(json_equal(v, w) for w in rest["enum"])


def _value_ok(ctx: Context, rest: dict[str, Any], v: Any, path: str) -> bool:
    """Whether an enum value passes the sibling keywords (checked with the same compiler)."""
    if not rest:
        return True
    direct = _finite_check(rest, v)
    if direct is not None:
        return direct
    if "type" in rest and json_type(v) not in types_of(rest):
        return False
    notes, stop = list(ctx.notes), ctx.stop_on_note
    ctx.stop_on_note = False  # a narrowing met by a check is only a narrowing if it drops the value
    try:
        r = value_regex(ctx, rest, path, 0)
    finally:
        ctx.stop_on_note = stop
    ok = r is not None and re.fullmatch(r, dump(v, ctx.indent, 0)) is not None
    if ok:  # a check, not a value written: a narrowing it met did not drop this value
        ctx.notes[:] = notes
    elif stop and len(ctx.notes) > len(notes):
        raise Narrowed(ctx.notes[len(notes)])
    return ok


def _typed(ctx: Context, schema: dict[str, Any], ty: str, path: str, depth: int) -> str | None:
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


def _string(ctx: Context, schema: dict[str, Any], path: str) -> str | None:
    lo = schema.get("minLength", 0)
    hi = schema.get("maxLength")
    if not isinstance(lo, int) or (hi is not None and not isinstance(hi, int)):
        raise ctx.refuse(path, "minLength / maxLength must be integers")
    if hi is not None and hi < lo:
        return None
    fmt = schema.get("format")
    pattern = schema.get("pattern")
    if fmt is not None and fmt in FORMATS:
        if pattern is not None:
            raise ctx.refuse(path, "'format' together with 'pattern' is not supported; keep one")
        r = FORMATS[fmt]
        if lo or hi is not None:
            if not _widths_within(r, lo, hi):
                raise ctx.refuse(path, f"format {fmt!r} with minLength/maxLength is not supported")
        return QUOTE + r + QUOTE
    if fmt is not None:
        if fmt in STANDARD_FORMATS:
            raise ctx.refuse(path, f"format {fmt!r} is not supported (a standard format this compiler cannot check)")
        ctx.note(path, f"format {fmt!r} is not checked (an annotation here)")
    if pattern is not None:
        if not isinstance(pattern, str):
            raise ctx.refuse(path, "'pattern' must be a string")
        try:
            narrowed: list[str] = []
            body = pattern_regex(pattern, narrowed)
            for n in narrowed:
                ctx.note(path, n)
        except ValueError as exc:
            raise ctx.refuse(path, f"pattern {pattern!r} cannot be compiled: {exc}") from None
        if lo or hi is not None:
            if not _widths_within(pattern, lo, hi):
                raise ctx.refuse(
                    path, "'pattern' together with minLength/maxLength that the pattern does not imply is not supported"
                )
        return QUOTE + body + QUOTE
    if hi is not None and hi > MAX_COUNTED:
        ctx.note(path, f"strings are written with at most {MAX_COUNTED} characters (maxLength {hi})")
        hi = MAX_COUNTED
    if lo > MAX_COUNTED:
        raise ctx.refuse(path, f"minLength {lo} is above {MAX_COUNTED}, the longest string written")
    if hi is None:
        rep = "*" if lo == 0 else ("+" if lo == 1 else f"{{{lo},}}")
        return f"{QUOTE}{CHAR}{rep}{QUOTE}"
    rep = f"{{{lo}}}" if lo == hi else f"{{{lo},{hi}}}"
    # counted repeats of the escape alternation make the DFA construction blow up: length-bounded
    # strings are written without escapes (a narrower language)
    ctx.note(path, "a length-bounded string is written without escapes")
    return f"{QUOTE}{KEY_CHAR}{rep}{QUOTE}"


def _widths_within(pattern: str, lo: int, hi: int | None) -> bool:
    """Whether every full match of an anchored ``pattern`` has a length in [lo, hi]."""
    if not (pattern.startswith("^") and pattern.endswith("$")) and pattern not in FORMATS.values():
        return False
    try:
        body = pattern[1:-1] if pattern.startswith("^") else pattern
        a, b = _sre_parse.parse(body).getwidth()
    except (re.error, ValueError):
        return False
    return a >= lo and (hi is None or b <= hi)


FRACTION = r"\.[0-9]*[1-9][0-9]*"  # a fractional part that is not zero


def _numeric(ctx: Context, schema: dict[str, Any], ty: str, path: str) -> str | None:
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
    # the negation of an integer type: only the numbers with a non-zero fraction (written below)
    fractional = bool(schema.get(NOT_INTEGER))
    if fractional and integer:
        return None
    if fractional and mult is not None:
        raise ctx.refuse(path, "multipleOf together with 'not an integer' is not supported")
    if mult is not None:
        if isinstance(mult, (int, float)) and not isinstance(mult, bool) and float(mult) == 1.0:
            integer = True
        else:
            raise ctx.refuse(path, f"multipleOf {mult!r} is not supported (only 1)")
    bounds = [lo, hi, xlo, xhi]
    if not integer and not fractional and all(b is None for b in bounds):
        return NUMBER
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
        return int_range(ilo, ihi)
    if any(b is not None and not float(b).is_integer() for b in bounds):
        raise ctx.refuse(path, "a number bound that is not a whole number is not supported (use integer bounds)")
    # numbers with whole bounds: whole values in range, and values with a fraction strictly inside
    parts = []
    if fractional:  # whether 1.5e1 is an integer is not a regular property of its text
        ctx.note(path, "numbers that are not integers are written without an exponent")
    lo_n = None if lo is None else int(lo)
    hi_n = None if hi is None else int(hi)
    # x >= lo (or > xlo) and x <= hi (or < xhi), written as sign, integer part, fraction
    low = lo_n if lo_n is not None else (int(xlo) if xlo is not None else None)
    high = hi_n if hi_n is not None else (int(xhi) if xhi is not None else None)
    low_strict, high_strict = lo is None and xlo is not None, hi is None and xhi is not None
    # whole values
    wl = None if low is None else (low + 1 if low_strict else low)
    wh = None if high is None else (high - 1 if high_strict else high)
    whole = None if fractional else int_range(wl, wh)
    if whole is not None:
        parts.append(whole + r"(?:\.0+)?")
    # values with a non-zero fraction: integer part i, fraction f>0; non-negative: i.f in (i, i+1)
    pos_lo = 0 if low is None or low < 0 else low
    pos_hi = None if high is None else high - 1
    if high is None or high > 0:
        r = int_range(pos_lo, pos_hi)
        if r is not None:
            parts.append(r + FRACTION)
    if low is None or low < 0:  # negative: -(i.f) with i.f in (i, i+1), i in [max(0,-high), -low-1]
        nlo = 0 if high is None or high > 0 else -high
        nhi = None if low is None else -low - 1
        r = int_range(nlo, nhi)
        if r is not None:
            parts.append("-" + f"(?:{r})" + FRACTION)
    return alt(parts) if parts else None


def _array(ctx: Context, schema: dict[str, Any], path: str, depth: int) -> str | None:
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
    sep = lit(ctx.item_sep(depth))
    open_, close = lit("[" + ctx.open_sep(depth)), lit(ctx.close_sep(depth) + "]")
    heads = []
    for i, s in enumerate(prefix):
        r = value_regex(ctx, s, f"{path}/{i}", depth + 1)
        heads.append(r)
    rest = value_regex(ctx, items, f"{path}/*", depth + 1) if items is not False else None
    if hi is not None and hi > MAX_ITEMS:
        ctx.note(path, f"arrays are written with at most {MAX_ITEMS} items (maxItems {hi})")
        hi = MAX_ITEMS
    if hi is None and lo > MAX_ITEMS:
        raise ctx.refuse(path, f"minItems {lo} is above {MAX_ITEMS}, the longest array written")
    if hi is not None and hi < lo:
        return None
    # lengths n in [lo, hi]: the first len(prefix) items from heads, the rest from `rest`
    alts = [lit("[]")] if lo == 0 else []
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
    return alt(alts) if alts else None


def _rep(r: str, lo: int, hi: int | None) -> str:
    if hi is None:
        return r + ("*" if lo == 0 else ("+" if lo == 1 else f"{{{lo},}}"))
    if hi == 0:
        return ""
    return r + (f"{{{lo}}}" if lo == hi else f"{{{lo},{hi}}}")


def _object(ctx: Context, schema: dict[str, Any], path: str, depth: int) -> str | None:
    found = object_items(ctx, schema, path, depth)
    if found is None:
        return None
    items, extra = found
    regs: list[tuple[str, bool, str | None]] = []
    for key, req, _ in items:
        r = value_regex(ctx, prop_schema(schema, key), f"{path}/{key}", depth + 1)
        if r is None:
            if req:
                return None
            continue
        regs.append((key, req, r))
    lo, hi = schema.get("minProperties", 0), schema.get("maxProperties")
    for name, n in (("minProperties", lo), ("maxProperties", hi)):
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 0):
            raise ctx.refuse(path, f"{name} must be a non-negative integer")
    n_req = sum(1 for _, req, _ in regs if req)
    open_, close = lit("{" + ctx.open_sep(depth)), lit(ctx.close_sep(depth) + "}")
    if lo > n_req or (hi is not None and (extra is not None or len(regs) > hi)):
        body = _counted_members(ctx, regs, extra, depth, lo, hi, path)
        if body is None:
            return None
        if lo == 0 and ctx.indent is not None:
            return f"(?:{lit('{}')}|{open_}{body}{close})"
        return open_ + body + close
    body = items_regex(ctx, regs, extra, depth, leading=False, trailing=False)
    if n_req == 0 and ctx.indent is not None:
        return f"(?:{lit('{}')}|{open_}{body}{close})"
    return open_ + body + close


def _counted_members(
    ctx: Context,
    regs: list[tuple[str, bool, str | None]],
    extra: str | None,
    depth: int,
    lo: int,
    hi: int | None,
    path: str,
) -> str | None:
    """Members in order, then extra members, with ``lo <= count <= hi`` (minProperties /
    maxProperties): ``runs[j]`` is the regex of the runs of the members so far with ``j`` present
    (``j`` capped at ``lo`` when there is no upper bound). Refused past the region size."""
    sep = lit(ctx.item_sep(depth))
    top = hi if hi is not None else lo
    runs: dict[int, str | None] = {0: ""}
    for key, req, value in regs:
        member = lit(json.dumps(key, ensure_ascii=False) + ctx.colon) + str(value)
        nxt: dict[int, list[str]] = {}
        for j, r in runs.items():
            if r is None:
                continue
            if not req:
                nxt.setdefault(j, []).append(r)
            k = j + 1 if hi is not None else min(j + 1, top)
            if k <= top:
                nxt.setdefault(k, []).append(r + (sep if j else "") + member)
        runs = {j: (alt(rs) if len(rs) > 1 else rs[0]) for j, rs in nxt.items()}
        if sum(len(r or "") for r in runs.values()) > 4 * MAX_REGION:
            raise ctx.refuse(path, "minProperties / maxProperties over this many optional properties is not supported")
    alts = []
    for j, r in sorted(runs.items()):
        if r is None:
            continue
        need = max(0, lo - j)
        room = None if hi is None else hi - j
        if room is not None and room < need:
            continue
        if extra is None or room == 0:
            if need == 0:
                alts.append(r)
            continue
        if j == 0:
            tail = extra + _rep(f"(?:{sep}{extra})", max(0, need - 1), None if room is None else room - 1)
            alts.append(f"(?:{tail})" + ("?" if need == 0 else ""))
        else:
            alts.append(r + _rep(f"(?:{sep}{extra})", need, room))
    if not alts:
        return None
    return alt(alts) if len(alts) > 1 else alts[0]


def any_regex(ctx: Context, depth: int, levels: int) -> str:
    prim = f"(?:{STRING}|{NUMBER}|true|false|null)"
    if levels <= 0:
        return prim
    inner = any_regex(ctx, depth + 1, levels - 1)
    sep = lit(ctx.item_sep(depth))
    o, c = ctx.open_sep(depth), ctx.close_sep(depth)
    arr = f"{lit('[]')}|{lit('[' + o)}{inner}(?:{sep}{inner})*{lit(c + ']')}"
    member = f"{STRING}{lit(ctx.colon)}{inner}"
    obj = f"{lit('{}')}|{lit('{' + o)}{member}(?:{sep}{member})*{lit(c + '}')}"
    return f"(?:{STRING}|{NUMBER}|true|false|null|{arr}|{obj})"
