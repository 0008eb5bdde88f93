"""compile(spec, tokenizer) -> Program: the canvas layout, per-slot automata and the schedule.

No torch here (a test checks ``sys.modules``). Programs are cached by (spec, tokenizer, options).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from dlmprompt.constraints.automaton import (
    TokenAutomaton,
    check_regex_size,
    choice_automaton,
    escape_literal,
    free_text_automaton,
    regex_automaton,
    unconstrained_automaton,
)
from dlmprompt.errors import CompileError, SchemaError, SpecError
from dlmprompt.guidance import GuidancePlan
from dlmprompt.guidance import plan as plan_guidance
from dlmprompt.spec import AnchorRef, Choice, FreeText, Grammar, Grounded, Json, Prompt, Regex, Sampling, Slot, Text
from dlmprompt.tokenizer import Tokenizer, as_tokenizer


@dataclass(frozen=True, eq=False)
class SlotLayout:
    """Where a slot sits on the canvas and what it must satisfy."""

    name: str
    index: int
    start: int
    length: int
    mode: str  # "exact" | "at_most"
    automaton: TokenAutomaton
    constraint: Any  # the spec constraint it came from
    parent: str | None = None  # the JSON slot this span is a value of (None: a slot of its own)
    grammar: Any = None  # a grammar.CompiledGrammar for Lark grammar slots (decoded left to right)

    @property
    def stop(self) -> int:
        return self.start + self.length


@dataclass(frozen=True, eq=False)
class JsonSpan:
    """A JSON slot on the canvas: its template's anchors and value spans from ``start`` to ``stop``."""

    name: str
    start: int
    stop: int
    constraint: Any  # spec.Json
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class Layout:
    """The canvas: token ids (mask at slot positions), per-position slot index (-1: anchor), and
    which anchor positions the unconditional pass of classifier-free guidance masks."""

    canvas: np.ndarray  # int64 [L]
    slot_of: np.ndarray  # int32 [L]
    prompt: np.ndarray  # bool [L]
    slots: tuple[SlotLayout, ...]

    def __len__(self) -> int:
        return int(self.canvas.shape[0])

    @property
    def anchor_positions(self) -> np.ndarray:
        return np.nonzero(self.slot_of < 0)[0]


@dataclass(frozen=True, eq=False)
class Schedule:
    """Which positions may be committed when.

    ``blocks``: canvas ranges decoded one after another (semi-autoregressive), each with the
    number of positions to commit at each of its steps (empty in threshold mode).
    """

    blocks: tuple[tuple[int, int], ...]
    counts: tuple[tuple[int, ...], ...]
    threshold: float | None
    strategy: str
    temperature: float
    cfg_scale: float
    length: str = "fixed"  # "fixed" | "adaptive" (spec.Sampling.length)
    remask: Any = None  # a spec.Remask policy, or None
    sampling: Any = None  # the spec.Sampling it was made from (options applied)

    @property
    def steps(self) -> int | None:
        return None if self.threshold is not None else sum(len(c) for c in self.counts)


@dataclass(frozen=True, eq=False)
class Program:
    """A compiled prompt, ready for any denoiser that shares its tokenizer."""

    spec: Prompt
    layout: Layout
    schedule: Schedule
    tokenizer: Tokenizer
    mask_id: int
    pad_id: int | None
    json_slots: tuple[JsonSpan, ...] = ()
    guidance: GuidancePlan | None = None  # terms beyond CFG (dlmprompt.guidance); None: none

    @property
    def slots(self) -> tuple[SlotLayout, ...]:
        return self.layout.slots

    @property
    def notes(self) -> list[str]:
        """What the JSON Schema compiler narrowed or approximated, per JSON slot."""
        return [f"slot {j.name!r} {n}" for j in self.json_slots for n in j.notes]

    def slot(self, name: str) -> SlotLayout:
        for s in self.layout.slots:
            if s.name == name:
                return s
        raise KeyError(f"no slot {name!r}; slots are {[s.name for s in self.layout.slots]}")


_OPTIONS = {"add_bos", "constraints"} | set(Sampling.model_fields) | {"cfg_scale"}
_PROGRAMS: OrderedDict[tuple[str, str, str], Program] = OrderedDict()
_CACHE_SIZE = 128


def compile(spec: Prompt | dict[str, Any] | str, tokenizer: Any, **options: Any) -> Program:
    """Compile a prompt spec for a tokenizer.

    Options: ``add_bos`` (default: when the tokenizer has a BOS), ``constraints`` (default True;
    False replaces every slot constraint by "any tokens", for baselines), and any
    :class:`~dlmprompt.spec.Sampling` field or ``cfg_scale`` to override the spec's settings.
    """
    unknown = sorted(set(options) - _OPTIONS)
    if unknown:
        raise CompileError(f"unknown compile option(s) {unknown}; options are {sorted(_OPTIONS)}")
    prompt = _as_prompt(spec)
    tok = as_tokenizer(tokenizer)
    hit = cached_program(prompt, tok, options)
    if hit is not None:
        return hit
    program = _compile(prompt, tok, options)
    remember_program(prompt, tok, options, program)
    return program


def _cache_key(prompt: Prompt, tok: Tokenizer, options: dict[str, Any]) -> tuple[str, str, str]:
    return (prompt.model_dump_json(), tok.identity, json.dumps(options, sort_keys=True, default=str))


def cached_program(prompt: Prompt, tokenizer: Any, options: dict[str, Any]) -> Program | None:
    """The program :func:`compile` made for these arguments recently, if it still holds it."""
    key = _cache_key(prompt, as_tokenizer(tokenizer), options)
    hit = _PROGRAMS.get(key)
    if hit is not None:
        _PROGRAMS.move_to_end(key)
    return hit


def remember_program(prompt: Prompt, tokenizer: Any, options: dict[str, Any], program: Program) -> None:
    """Keep a program compiled elsewhere (a compile worker) for :func:`compile` to return."""
    _PROGRAMS[_cache_key(prompt, as_tokenizer(tokenizer), options)] = program
    while len(_PROGRAMS) > _CACHE_SIZE:
        _PROGRAMS.popitem(last=False)


def _as_prompt(spec: Prompt | dict[str, Any] | str) -> Prompt:
    if isinstance(spec, Prompt):
        return spec
    if isinstance(spec, str):
        return Prompt.from_json(spec)
    if isinstance(spec, dict):
        return Prompt(**spec)
    raise SpecError(f"expected a Prompt, a dict or a JSON string; got {type(spec).__name__}")


def _compile(prompt: Prompt, tok: Tokenizer, options: dict[str, Any]) -> Program:
    if not prompt.slots:
        raise CompileError("the prompt has no slot; add one with slot('name', ...)")
    mask_id = tok.require_mask()
    sampling_over = {k: v for k, v in options.items() if k in Sampling.model_fields}
    try:
        sampling = prompt.sampling.model_validate({**prompt.sampling.model_dump(), **sampling_over})
    except ValueError as exc:
        raise CompileError(f"bad sampling option: {exc}") from None
    try:
        cfg_scale = float(options.get("cfg_scale", prompt.guidance.cfg_scale))
    except (TypeError, ValueError):
        raise CompileError(f"cfg_scale must be a number >= 0; got {options.get('cfg_scale')!r}") from None
    if cfg_scale < 0:
        raise CompileError(f"cfg_scale must be >= 0; got {cfg_scale}")
    constrained = bool(options.get("constraints", True))
    add_bos = options.get("add_bos")
    if add_bos is None:
        add_bos = tok.bos_id is not None
    if add_bos and tok.bos_id is None:
        raise CompileError(f"add_bos=True but {tok.name} has no BOS token")

    ids: list[int] = []
    slot_of: list[int] = []
    prompt_flags: list[bool] = []
    slots: list[SlotLayout] = []
    if add_bos:
        ids.append(int(tok.bos_id))  # type: ignore[arg-type]
        slot_of.append(-1)
        prompt_flags.append(False)

    anchors: dict[str, str] = {}  # named anchors, the sources grounded slots may refer to
    for part in prompt.parts:
        if isinstance(part, Text) and part.name is not None:
            if part.name in anchors:
                raise CompileError(f"two anchors are named {part.name!r}; anchor names must be unique")
            anchors[part.name] = part.text
    # merge adjacent anchors with the same guidance role so they tokenize as one text
    parts: list[Text | Slot] = []
    seen_slot = False
    for part in prompt.parts:
        if isinstance(part, Text):
            role = part.prompt if part.prompt is not None else not seen_slot
            if not part.text:
                continue
            if parts and isinstance(parts[-1], Text) and parts[-1].prompt == role:
                parts[-1] = Text(text=parts[-1].text + part.text, prompt=role)
            else:
                parts.append(Text(text=part.text, prompt=role))
        else:
            seen_slot = True
            parts.append(part)

    json_spans: list[JsonSpan] = []
    for part in parts:
        if isinstance(part, Text):
            toks = tok.encode(part.text)
            ids.extend(toks)
            slot_of.extend([-1] * len(toks))
            prompt_flags.extend([bool(part.prompt)] * len(toks))
            continue
        if isinstance(part.constraint, Json):
            start = len(ids)
            notes = _lay_out_json(part, tok, constrained, mask_id, ids, slot_of, prompt_flags, slots, anchors)
            json_spans.append(JsonSpan(part.name, start, len(ids), part.constraint, tuple(notes)))
            continue
        n = part.length.tokens
        grammar = None
        if isinstance(part.constraint, Grammar) and constrained:
            from dlmprompt.constraints.grammar import compile_grammar

            if tok.pad_id is None:
                raise CompileError(
                    f"a grammar slot needs a pad token and {tok.name} has neither pad nor EOS", slot=part.name
                )
            grammar = compile_grammar(part.constraint.lark, tok, n, slot=part.name)
            auto = unconstrained_automaton(tok, with_pad=True)  # unused: the grammar cursor decides
        else:
            auto = _automaton(part, tok, constrained, anchors)
        if part.length.mode == "at_most" and constrained and grammar is None:
            if tok.pad_id is None:
                raise CompileError(
                    f"max_tokens= needs a pad token and {tok.name} has neither pad nor EOS; "
                    "use tokens= (exact length) or pass pad_id= when wrapping the tokenizer",
                    slot=part.name,
                )
            auto = auto.with_pad(tok.pad_id)
        if constrained and grammar is None:
            _check_length(part, auto, n)
        _add_span(
            ids,
            slot_of,
            prompt_flags,
            slots,
            mask_id,
            name=part.name,
            length=n,
            mode=part.length.mode,
            automaton=auto,
            constraint=part.constraint,
            grammar=grammar,
        )

    layout = Layout(
        canvas=np.asarray(ids, dtype=np.int64),
        slot_of=np.asarray(slot_of, dtype=np.int32),
        prompt=np.asarray(prompt_flags, dtype=bool),
        slots=tuple(slots),
    )
    schedule = _schedule(layout, sampling, cfg_scale)
    guide = plan_guidance(prompt, tok, layout.slot_of, layout.slots)
    return Program(prompt, layout, schedule, tok, mask_id, tok.pad_id, tuple(json_spans), guide)


_LEAF_KINDS = {"string", "integer", "number", "boolean", "null", "enum"}


def _lay_out_json(
    part: Slot,
    tok: Tokenizer,
    constrained: bool,
    mask_id: int,
    ids: list[int],
    slot_of: list[int],
    prompt_flags: list[bool],
    slots: list[SlotLayout],
    anchors: dict[str, str],
) -> list[str]:
    """Append a JSON slot's template: anchors as fixed tokens, each hole as an "at most" span."""
    from dlmprompt.constraints.jsonschema import Narrowed, compile_schema, non_finite

    c = part.constraint
    if tok.pad_id is None:
        raise CompileError(f"a schema slot needs a pad token and {tok.name} has neither pad nor EOS", slot=part.name)
    bad = non_finite(c.json_schema)
    if bad is not None:  # no template nor grammar may see it: NaN and Infinity are not JSON
        raise SchemaError(f"{bad[1]} is not a JSON number (NaN and Infinity are not JSON)", path=bad[0], slot=part.name)
    cap = part.length.tokens
    # grounded strings need the template (the context-free span cannot hold a span constraint)
    grounded = c.grounded is not None or _marks_grounding(c.json_schema)

    def template_of(stop_on_note: bool) -> Any:
        return compile_schema(
            c.json_schema,
            indent=c.indent,
            lenient=c.lenient,
            additional_properties=c.additional_properties,
            stop_on_note=stop_on_note,
        )

    # where the span can serve, the template compiler stops at its first narrowing (the span is used)
    narrowed = None
    try:
        template = template_of(constrained and not grounded and c.indent is None)
        refusal = None
    except Narrowed as exc:
        template, refusal, narrowed = None, None, exc.note
    except SchemaError as exc:
        template, refusal = None, exc
    if constrained and grounded and refusal is not None:
        raise SchemaError(
            f"{refusal.reason}; a grounded JSON slot needs a schema the template takes (the context-free span "
            "cannot hold a span constraint)",
            path=refusal.path,
            slot=part.name,
        )
    slow = None
    if template is not None and constrained and not grounded and not template.notes and c.layout == "auto":
        slow = _slow_template(template, tok)
    if constrained and (refusal is not None or narrowed or slow or (template.notes and not grounded)):  # type: ignore[union-attr]
        # not exact as a template: one context-free span (llguidance), when it takes the schema
        if refusal is not None:
            why = str(refusal.reason)
        elif narrowed:
            why = narrowed
        elif slow:
            why = slow
        else:
            notes = list(template.notes)  # type: ignore[union-attr]
            why = "; ".join(notes[:3]) + (f" (and {len(notes) - 3} more)" if len(notes) > 3 else "")
        compiled = _json_grammar(c, tok)
        if not isinstance(compiled, str):
            n = min(max(len(compiled.witness) + 2 * cap, 4 * cap), 4096)
            _add_span(
                ids,
                slot_of,
                prompt_flags,
                slots,
                mask_id,
                name=f"{part.name}#0",
                length=n,
                mode="at_most",
                automaton=unconstrained_automaton(tok, with_pad=True),
                constraint=c,
                parent=part.name,
                grammar=compiled,
            )
            return [
                f"the whole value is one context-free span (llguidance, left to right) instead of a template: {why}"
            ]
    if narrowed:  # no span after all: the whole (narrowed) template
        try:
            template = template_of(False)
        except SchemaError as exc:
            refusal = exc
    if refusal is not None:
        raise SchemaError(refusal.reason, path=refusal.path, slot=part.name) from None
    assert template is not None
    if constrained and slow is None and ((template.notes and not grounded) or c.layout == "template"):
        slow = _slow_template(template, tok)  # the span could not take it, or the user asked for the template
    seconds = _build_seconds(template, tok, stop_at=2 * TEMPLATE_REFUSE_S) if slow else 0.0
    if seconds > TEMPLATE_REFUSE_S:
        took = "far too long" if seconds == float("inf") else f"about {seconds:.1f} s or more"
        raise SchemaError(
            f"the template's automata would take {took} to build at this vocabulary (the limit is "
            f"{TEMPLATE_REFUSE_S:.0f} s), and the context-free span cannot take this schema either: simplify the "
            "schema (fewer branches in its unions, shorter length bounds) or use a smaller vocabulary",
            path="/",
            slot=part.name,
        )
    for k, piece in enumerate(template.parts):
        if isinstance(piece, str):
            toks = tok.encode(piece)
            ids.extend(toks)
            slot_of.extend([-1] * len(toks))
            prompt_flags.extend([False] * len(toks))
            continue
        budget = cap if piece.kind in _LEAF_KINDS else 3 * cap
        if constrained:
            ground = _leaf_grounding(piece, c, part.name)
            if ground is None:
                auto = regex_automaton(piece.regex, tok, slot=part.name)
            else:
                auto = _grounded(ground, piece.regex, tok, anchors, part.name, json_string=True)
            auto = auto.with_pad(tok.pad_id)
            n = max(budget, _shortest(auto, part.name, piece.path))
        else:
            auto = unconstrained_automaton(tok, with_pad=True)
            n = budget
        _add_span(
            ids,
            slot_of,
            prompt_flags,
            slots,
            mask_id,
            name=f"{part.name}#{k}",
            length=n,
            mode="at_most",
            automaton=auto,
            constraint=Regex(pattern=piece.regex),
            parent=part.name,
        )
    notes = list(template.notes)
    if constrained and c.grounded is not None:
        for piece in template.parts:
            if not isinstance(piece, str) and piece.kind in ("value", "property", "properties"):
                notes.append(
                    f"{piece.path or '/'}: not grounded (strings inside an optional property, a union, an "
                    "array or extra properties are not reached by grounded=; make them required)"
                )
    return notes


TEMPLATE_BUILD_BUDGET_S = 0.1  # a template whose token automata take longer to build becomes a span
TEMPLATE_REFUSE_S = 2.0  # ... and one that would take longer than this, with no span to take it, is refused
TEMPLATE_REGEX_BUDGET = 24_000  # characters of hole regexes: past this, building is slow whatever the vocabulary


def _slow_template(template: Any, tok: Tokenizer) -> str | None:
    """Why the template's token automata are too slow to build (their estimated seconds past
    :data:`TEMPLATE_BUILD_BUDGET_S`: huge regions at a large vocabulary), or None."""
    if sum(len(h.regex) for h in template.holes) > TEMPLATE_REGEX_BUDGET:
        return "the template's regular expressions are too large to build quickly"
    seconds = _build_seconds(template, tok, stop_at=TEMPLATE_BUILD_BUDGET_S)
    if seconds > TEMPLATE_BUILD_BUDGET_S:
        return f"the template's automata would take about {seconds:.1f} s or more to build at this vocabulary"
    return None


def _build_seconds(template: Any, tok: Tokenizer, stop_at: float = float("inf")) -> float:
    """The estimated seconds to build the template's token automata, summed until past
    ``stop_at`` (infinite past the regex size budget several times over; 0 when a regex is bad,
    which :func:`regex_automaton` then reports)."""
    from dlmprompt.constraints.automaton import automaton_seconds
    from dlmprompt.constraints.tokenwalk import NATIVE_MARK

    if sum(len(h.regex) for h in template.holes) > 4 * TEMPLATE_REGEX_BUDGET:
        return float("inf")
    # one regex past the budget: outlines-core's byte DFA alone takes seconds (4 s at 35k
    # characters, 31 s at 41k on JSONSchemaBench), so estimating it would cost what it measures
    if any(len(h.regex) > TEMPLATE_REGEX_BUDGET and NATIVE_MARK not in h.regex for h in template.holes):
        return float("inf")
    total = 0.0
    for hole in template.holes:
        try:
            total += automaton_seconds(hole.regex, tok)
        except (ValueError, RuntimeError, CompileError):
            return 0.0
        if total > stop_at:
            break
    return total


def _marks_grounding(schema: Any) -> bool:
    """Whether any sub-schema carries ``x-grounded``."""
    return _marks(schema, "x-grounded")


def _marks(schema: Any, key: str) -> bool:
    """Whether any sub-schema carries the keyword ``key``."""
    if isinstance(schema, dict):
        return key in schema or any(_marks(v, key) for v in schema.values())
    if isinstance(schema, list):
        return any(_marks(v, key) for v in schema)
    return False


def _add_span(
    ids: list[int], slot_of: list[int], prompt_flags: list[bool], slots: list[SlotLayout], mask_id: int, **fields: Any
) -> None:
    """Append a slot span of ``fields["length"]`` masked positions to the canvas being built."""
    n = fields["length"]
    slots.append(SlotLayout(index=len(slots), start=len(ids), **fields))
    ids.extend([mask_id] * n)
    slot_of.extend([len(slots) - 1] * n)
    prompt_flags.extend([False] * n)


def span_schema(c: Json) -> Any:
    """The schema the context-free span compiles for ``c`` (or why there is none, a string):
    siblings of ``$ref`` dropped where the draft says so, objects closed under
    ``additional_properties=False``, and the logic keywords llguidance refuses rewritten (an
    overlapping ``oneOf`` with no positive form is left for llguidance to judge)."""
    from dlmprompt.constraints.jsonschema.logic import positive
    from dlmprompt.constraints.jsonschema.normalize import NOT_INTEGER
    from dlmprompt.constraints.jsonschema.span import closed_objects, ref_overrides_siblings

    schema: Any = ref_overrides_siblings(c.json_schema)
    if c.additional_properties is False:
        schema = closed_objects(schema)
        if schema is None:
            return "additional_properties=False with allOf"
    try:
        out = positive(schema, lenient=True)
    except SchemaError:
        return schema  # llguidance refuses what is left, with its own reason
    if _marks(out, NOT_INTEGER):
        return "the negation of an integer type (numbers that are not integers) needs the template"
    return out


def _json_grammar(c: Json, tok: Tokenizer) -> Any:
    """llguidance's compact-JSON grammar for a JSON constraint, or the reason it cannot serve."""
    from dlmprompt.constraints.jsonschema.span import compile_json_grammar

    if c.indent is not None:
        return "indented layouts are templates only"
    schema = span_schema(c)
    return schema if isinstance(schema, str) else compile_json_grammar(schema, tok)


def json_accepts(program: Program, name: str, instance: Any) -> tuple[bool, bool]:
    """Whether JSON slot ``name`` can hold ``instance``, as written in the slot's layout (its key
    order and whitespace): (the template regex matches some text of it, Python ``re``; the slot's
    token automata accept that text). The second is the constraint the sampler enforces."""
    import re

    from dlmprompt.constraints.jsonschema import compile_schema, texts_for

    span = next((j for j in program.json_slots if j.name == name), None)
    if span is None:
        raise KeyError(f"no JSON slot {name!r}; JSON slots are {[j.name for j in program.json_slots]}")
    c = span.constraint
    holes = [s for s in program.layout.slots if s.parent == name]
    if len(holes) == 1 and holes[0].grammar is not None:  # one context-free span
        from dlmprompt.constraints.jsonschema.span import accepts, accepts_value, orderings, span_text

        # the span writes keys in the schema's properties order: try the instance that way too,
        # then any key order, searched member by member with the matcher
        order_schema = span_schema(c)
        ordered = orderings(instance, c.json_schema if isinstance(order_schema, str) else order_schema)
        for inst in [instance, *ordered]:
            for plain in (False, True):
                if accepts(holes[0].grammar, span_text(inst, plain_numbers=plain)):
                    return True, True
        # the search tries each object's members in the order given first: the schema's
        found = accepts_value(holes[0].grammar, ordered[0] if ordered else instance) is True
        return found, found
    template = compile_schema(
        c.json_schema, indent=c.indent, lenient=c.lenient, additional_properties=c.additional_properties
    )
    matched = False
    for text in texts_for(instance, c.json_schema, indent=c.indent):
        m = re.fullmatch(template.regex, text, flags=re.S)
        if m is None:
            continue
        matched = True
        if all(s.automaton.accepts(program.tokenizer.encode(g)) for s, g in zip(holes, m.groups())):
            return True, True
    return matched, False


def _shortest(auto: TokenAutomaton, slot: str, path: str) -> int:
    """The fewest tokens a value of ``auto`` needs (pad tail included, so any longer span works)."""
    limit = 64
    while limit <= 4096:
        ok = np.nonzero(auto.feasible_lengths(limit, first=True))[0]
        if len(ok):
            return int(ok[0])
        limit *= 4
    raise CompileError(
        f"the value at {path or '/'} has no spelling of at most 4096 tokens with this tokenizer", slot=slot
    )


def _automaton(part: Slot, tok: Tokenizer, constrained: bool, anchors: dict[str, str]) -> TokenAutomaton:
    c = part.constraint
    if not constrained or isinstance(c, Grammar):
        return unconstrained_automaton(tok, with_pad=part.length.mode == "at_most")
    if isinstance(c, Regex):
        check_regex_size(c.pattern, part.name)
    if part.grounded is not None:
        if isinstance(c, Regex):
            pattern = c.pattern
        elif isinstance(c, Choice):
            pattern = "(?:" + "|".join(escape_literal(o) for o in c.options) + ")"
        else:
            pattern = r"[\s\S]*"
        return _grounded(part.grounded, pattern, tok, anchors, part.name)  # type: ignore[return-value]
    if isinstance(c, Regex):
        return regex_automaton(c.pattern, tok, slot=part.name)
    if isinstance(c, Choice):
        return choice_automaton(c.options, tok, slot=part.name)
    if isinstance(c, FreeText):
        return free_text_automaton(tok)
    raise CompileError(f"unsupported constraint {type(c).__name__}", slot=part.name)  # pragma: no cover


def _grounded(
    ground: Grounded, pattern: str, tok: Tokenizer, anchors: dict[str, str], slot: str, json_string: bool = False
) -> Any:
    """The token automaton of a grounded value: a span of the sources that matches ``pattern``."""
    from dlmprompt.constraints.grounded import grounded_automaton

    sources = []
    for src in ground.sources:
        if isinstance(src, AnchorRef):
            if src.anchor not in anchors:
                raise CompileError(
                    f"grounded on the anchor {src.anchor!r}, but no anchor has that name; name one with "
                    f"Text(..., name={src.anchor!r}) (named anchors: {sorted(anchors) or 'none'})",
                    slot=slot,
                )
            sources.append(anchors[src.anchor])
        else:
            sources.append(src)
    return grounded_automaton(
        tuple(sources),
        pattern,
        tok,
        whole_words=ground.whole_words,
        ignore_case=ground.ignore_case,
        allow_empty=ground.optional,
        json_string=json_string,
        slot=slot,
    )


def _leaf_grounding(piece: Any, c: Json, slot: str) -> Grounded | None:
    """The grounding of one hole of a JSON template: its ``x-grounded`` keyword, else the slot's
    for free string leaves."""
    mark = piece.grounded
    if mark is None or mark is False:
        return None
    if piece.kind != "string" and mark != "default":
        raise CompileError(f"at {piece.path or '/'}: x-grounded applies to string values only", slot=slot)
    if mark == "default":
        return c.grounded if piece.kind == "string" else None
    if mark is True:
        if c.grounded is None:
            raise CompileError(
                f"at {piece.path or '/'}: x-grounded: true needs the slot's sources (grounded=...) or an object "
                '{"sources": [...]} in the schema',
                slot=slot,
            )
        return c.grounded
    try:
        return Grounded.model_validate(mark)
    except ValueError as exc:
        raise CompileError(f"at {piece.path or '/'}: bad x-grounded value: {exc}", slot=slot) from None


def _check_length(part: Slot, auto: TokenAutomaton, n: int) -> None:
    ok = auto.feasible_lengths(n)
    if ok[n]:
        return
    what = _describe(part)
    if not ok.any():
        longer = auto.feasible_lengths(min(max(4 * n, 64), 4096))
        found = np.nonzero(longer)[0]
        if len(found) == 0:
            raise CompileError(
                f"{what} has no value of at most {len(longer) - 1} tokens with this tokenizer; "
                "check that the pattern matches some string",
                slot=part.name,
            )
        need = int(found[0])
        fix = f"tokens={need}" if part.length.mode == "exact" else f"max_tokens={need}"
        raise CompileError(
            f"needs at least {need} tokens for {what}, the layout gives {n}; use {fix} or more",
            slot=part.name,
        )
    fits = [int(k) for k in np.nonzero(ok)[0]]
    raise CompileError(
        f"{what} has no value of exactly {n} tokens; lengths that work up to {n}: "
        f"{fits[:12]}{' ...' if len(fits) > 12 else ''}; use tokens= one of them or max_tokens={n}",
        slot=part.name,
    )


def _describe(part: Slot) -> str:
    c = part.constraint
    if isinstance(c, Regex):
        pattern = c.pattern if len(c.pattern) <= 120 else c.pattern[:117] + "..."
        return f"its pattern {pattern!r}"
    if isinstance(c, Choice):
        shown = list(c.options[:6])
        more = f" and {len(c.options) - 6} more" if len(c.options) > 6 else ""
        return f"its choice {shown!r}{more}"
    return "its text"


# the default schedule, when a prompt gives none of steps, tokens_per_step and threshold: commit every
# candidate at least this sure (at least one per step). Measured by benchmarks/decoding.py on the
# embedded model: field_exact equal to one position per step on the out-of-distribution set
# (0.704) and on held-out documents (0.868 against 0.862), with 4.6 and 8.0 positions committed per
# forward pass instead of 1. tokens_per_step=1 gives one position per step.
DEFAULT_THRESHOLD = 0.9


def aligned_schedule(program: Program, block: int) -> Schedule:
    """The program's schedule with blocks at the multiples of ``block`` canvas positions (a
    block-causal model's own blocks: position p is in block p // block), slots at their fixed
    lengths; steps and thresholds as the program asks."""
    sched = program.schedule
    sampling = sched.sampling if sched.sampling is not None else program.spec.sampling
    sampling = sampling.model_copy(update={"block_length": block, "length": "fixed"})
    return _schedule(program.layout, sampling, sched.cfg_scale, align=True)


def _schedule(layout: Layout, sampling: Sampling, cfg_scale: float, *, align: bool = False) -> Schedule:
    if sampling.threshold is None and sampling.steps is None and sampling.tokens_per_step is None:
        sampling = sampling.model_copy(update={"threshold": DEFAULT_THRESHOLD})
    positions = np.nonzero(layout.slot_of >= 0)[0]
    if len(positions) == 0:  # everything is fixed (e.g. a schema slot whose value is a const)
        return Schedule(
            (),
            (),
            sampling.threshold,
            sampling.strategy,
            sampling.temperature,
            cfg_scale,
            sampling.length,
            sampling.remask,
            sampling,
        )
    first, last = int(positions[0]), int(positions[-1]) + 1
    if sampling.block_length is None:
        blocks = [(first, last)]
    else:
        b = sampling.block_length
        origin = first - first % b if align else first
        blocks = [(max(s, first), min(s + b, last)) for s in range(origin, last, b)]
    sizes = [int(((layout.slot_of[a:z]) >= 0).sum()) for a, z in blocks]
    blocks = [blk for blk, m in zip(blocks, sizes) if m > 0]
    sizes = [m for m in sizes if m > 0]
    counts: list[tuple[int, ...]] = []
    if sampling.threshold is None:
        nb = len(blocks)
        for j, m in enumerate(sizes):
            if sampling.tokens_per_step is not None:
                k = sampling.tokens_per_step
                counts.append(tuple([k] * (m // k) + ([m % k] if m % k else [])))
                continue
            if sampling.steps is not None:
                s = sampling.steps // nb + (1 if j < sampling.steps % nb else 0)
                s = max(1, min(s, m))
            else:
                s = m
            base, extra = divmod(m, s)
            counts.append(tuple(base + (1 if i < extra else 0) for i in range(s)))
    else:
        counts = [() for _ in blocks]
    return Schedule(
        blocks=tuple(blocks),
        counts=tuple(counts),
        threshold=sampling.threshold,
        strategy=sampling.strategy,
        temperature=sampling.temperature,
        cfg_scale=cfg_scale,
        length=sampling.length,
        remask=sampling.remask,
        sampling=sampling,
    )
