"""The declarative prompt spec: anchors (fixed text) and named slots, in any order.

Everything here is a pydantic model with ``extra="forbid"`` and round-trips through JSON, so the
same spec runs in-process and (later) on a remote server. Build one with the helpers::

    from dlmprompt import Prompt, slot

    prompt = (
        Prompt("Name: ") + slot("name", max_tokens=8)
        + "\\nAge: " + slot("age", regex=r"[0-9]+", max_tokens=3) + "\\n"
    )

or with :meth:`Prompt.format`::

    prompt = Prompt.format("Name: {name}\\nAge: {age}\\n",
                           name=slot(max_tokens=8), age=slot(regex=r"[0-9]+", max_tokens=3))
"""

from __future__ import annotations

import keyword
import math
import re
import string
from collections.abc import Iterable
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dlmprompt.errors import SpecError

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- constraints


class FreeText(_Model):
    """Any text the model writes (special tokens excluded)."""

    type: Literal["text"] = "text"


class Regex(_Model):
    """The slot's text must match ``pattern`` in full (no lookaround, no back-references)."""

    type: Literal["regex"] = "regex"
    pattern: str


class Choice(_Model):
    """The slot's text must be exactly one of ``options``."""

    type: Literal["choice"] = "choice"
    options: tuple[str, ...]


class AnchorRef(_Model):
    """A named anchor of the prompt (``Text(..., name=...)``), as a grounding source."""

    anchor: str


class Grounded(_Model):
    """The value is a span (substring) of one of ``sources``, exactly: a source is a text or an
    :class:`AnchorRef` naming an anchor of the prompt.

    ``whole_words``: a span never cuts through a word (it starts and ends at word boundaries).
    ``ignore_case``: ASCII letters may differ in case from the source. ``optional``: the empty
    value is allowed too (otherwise a grounded value holds at least one character)."""

    sources: tuple[Union[str, AnchorRef], ...] = Field(min_length=1)
    whole_words: bool = False
    ignore_case: bool = False
    optional: bool = False


class Json(_Model):
    """The slot holds one JSON value valid under ``schema`` (a JSON Schema; pydantic models are
    turned into theirs by :func:`slot`).

    The compiler lays the schema out as a template: fixed structure becomes anchors, each leaf
    value its own constrained span (see :mod:`dlmprompt.constraints.jsonschema`). ``indent``: ``None`` for
    compact JSON, else spaces per level. ``additional_properties``: ``None`` follows the schema,
    ``False`` never writes properties the schema does not name. ``lenient`` approximates a few
    unsupported keywords instead of refusing them (listed in the compiled program's notes).
    ``model``: the pydantic model's import path, when the schema came from one. ``grounded``: every
    free string leaf (no ``enum``, ``const`` or ``format``) is a span of the sources; a property
    schema's ``"x-grounded"`` keyword overrides that per property (``false``, ``true``, or a
    :class:`Grounded` object of its own). ``layout``: ``"auto"`` lays an exact template out unless
    its token automata would take over 0.1 s to build at the tokenizer's vocabulary, then the value
    becomes one context-free span (decoded left to right); ``"template"`` keeps the exact template
    whatever its build time (up to the 2 s refusal limit): slower to compile once, its values then
    fill in parallel.
    """

    type: Literal["json"] = "json"
    json_schema: Union[dict[str, Any], bool] = Field(alias="schema")
    indent: int | None = Field(default=None, ge=0, le=8)
    lenient: bool = False
    additional_properties: bool | None = None
    model: str | None = None
    grounded: Grounded | None = None
    layout: Literal["auto", "template"] = "auto"

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, serialize_by_alias=True)


class Grammar(_Model):
    """The slot's text is a sentence of a Lark grammar (rule ``start``), in the Lark EBNF syntax of
    lark and llguidance. The slot is decoded left to right inside itself (other slots proceed in
    parallel) and always closes within its length; see :mod:`dlmprompt.constraints.grammar`."""

    type: Literal["grammar"] = "grammar"
    lark: str


Constraint = Annotated[Union[FreeText, Regex, Choice, Json, Grammar], Field(discriminator="type")]


class Length(_Model):
    """How many canvas positions a slot takes.

    ``exact``: the value is exactly ``tokens`` tokens long. ``at_most``: the value is at most
    ``tokens`` tokens long and the rest of the slot is filled with the pad token.
    """

    mode: Literal["exact", "at_most"] = "at_most"
    tokens: int = Field(gt=0, le=65536)


# --------------------------------------------------------------------------- parts


class Text(_Model):
    """An anchor: fixed text the model sees and never changes.

    ``prompt`` marks the anchor as part of the prompt for classifier-free guidance (the
    unconditional pass masks prompt anchors). ``None`` means: anchors before the first slot are
    prompt, anchors after it are template text and stay visible in both passes.
    """

    kind: Literal["text"] = "text"
    text: str
    prompt: bool | None = None
    name: str | None = None  # lets a grounded slot refer to this anchor (AnchorRef)


class Slot(_Model):
    """A named span the model fills, with a constraint and a length policy."""

    kind: Literal["slot"] = "slot"
    name: str
    constraint: Constraint = Field(default_factory=FreeText)
    length: Length
    grounded: Grounded | None = None  # the value is a span of these sources (JSON slots: on Json)
    guidance: float = Field(default=1.0, ge=0.0, le=10.0)  # scale of the prompt's guidance terms here

    @field_validator("name")
    @classmethod
    def _check_name(cls, name: str) -> str:
        if not _NAME.match(name) or keyword.iskeyword(name):
            raise ValueError(
                f"slot name {name!r} is not a Python identifier; use letters, digits and '_' "
                "and do not start with a digit"
            )
        return name


Part = Annotated[Union[Text, Slot], Field(discriminator="kind")]

Strategy = Literal["low_confidence", "margin", "entropy", "random", "structure_first"]


class Guidance(_Model):
    """Guidance terms: they reweight the model's logits at slot positions before the constraints
    are applied, so every output still satisfies its constraint (a term can make an answer
    unlikely, never impossible).

    * ``cfg_scale`` > 0 turns on classifier-free guidance:
      ``logits = uncond + (cfg_scale + 1) * (cond - uncond)``, the unconditional pass seeing the
      prompt anchors masked.
    * ``bias``: phrase → logit bias, added to the tokens of the phrase as written and after a
      space (``{"Paris": 2.0}``); ``avoid``: phrases whose tokens get ``avoid_bias`` (-8).
    * ``token_bias``: token id → bias (OpenAI's ``logit_bias``), each in [-100, 100].
    * ``copy_from`` / ``copy_bias``: tokens of a source text get ``copy_bias`` (default 1.0): a
      pull toward copying it.
    * ``repetition_penalty`` (CTRL-style, >= 1: a token already committed in a slot has its logit
      divided by it where positive, multiplied where negative), ``frequency_penalty`` (minus this
      times the token's count in the slots) and ``presence_penalty`` (minus this once the token
      occurs): against repetition and garbling such as "Londonon".

    A slot's ``guidance=`` scale multiplies every term in that slot (0 turns them off there).
    """

    cfg_scale: float = Field(default=0.0, ge=0.0)
    bias: dict[str, float] = Field(default_factory=dict)
    avoid: tuple[str, ...] = ()
    avoid_bias: float = Field(default=-8.0, ge=-100.0, le=0.0)
    token_bias: dict[int, float] = Field(default_factory=dict)
    copy_from: str | None = None
    copy_bias: float = Field(default=1.0, ge=-100.0, le=100.0)
    repetition_penalty: float = Field(default=1.0, ge=1.0, le=10.0)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)

    @field_validator("bias", "token_bias")
    @classmethod
    def _finite_biases(cls, value: dict[Any, float]) -> dict[Any, float]:
        for key, b in value.items():
            if not math.isfinite(b) or not -100.0 <= b <= 100.0:
                raise ValueError(f"bias of {key!r} is {b}; biases are finite, in [-100, 100]")
        for key in value:
            if isinstance(key, str) and not key:
                raise ValueError("a bias phrase is empty")
        return value

    @property
    def reweights(self) -> bool:
        """Whether any term besides classifier-free guidance is on."""
        return bool(
            self.bias
            or self.avoid
            or self.token_bias
            or self.copy_from
            or self.repetition_penalty != 1.0
            or self.frequency_penalty
            or self.presence_penalty
        )


class Remask(_Model):
    """Low-confidence remasking (self-correction, ReMDM's confidence rule): a committed slot token
    whose constrained confidence when it was committed was below ``below`` goes back to the mask
    once the model has seen ``settle`` more steps of context, the least confident first, at most
    ``per_step`` per step, ``budget`` times the slot positions in all, each position once. The
    model then predicts it again with what has filled in since. Anchors are never remasked;
    grammar slots (decoded left to right) are left alone. Removing commits keeps every slot
    completable, so constraints stay exact."""

    below: float = Field(default=0.3, gt=0.0, le=1.0)
    per_step: int = Field(default=4, gt=0)
    budget: float = Field(default=0.25, gt=0.0, le=1.0)
    settle: int = Field(default=1, ge=1)


class Sampling(_Model):
    """How the canvas is denoised.

    * ``steps``: denoising steps in all (split evenly over blocks).
    * ``tokens_per_step``: alternatively, a fixed number of positions per step (1: one position
      per step, the schedule of earlier versions).
    * ``threshold``: commit every candidate whose confidence is at least this (at least one per
      step); overrides ``steps`` / ``tokens_per_step``. With none of the three given the
      schedule is ``threshold=0.9`` (``dlmprompt.compiler.DEFAULT_THRESHOLD``), which fills
      several positions per forward pass at the quality of one per step (``benchmarks/decoding.py``).
    * ``block_length``: semi-autoregressive blocks of this many canvas positions; ``None`` = the
      whole canvas at once.
    * ``strategy``: which candidates to commit first; ``structure_first`` commits structural
      tokens (JSON / grammar punctuation, the end of a value) before the words they frame.
    * ``temperature``: 0 is greedy; confidences always come from the model's own distribution
      restricted to the constraint.
    * ``length``: ``"adaptive"`` (the default: an "at most n" slot starts short and grows while
      the model is not ready to end it, and a finished value's pad tail leaves the forward pass,
      so passes are shorter) or ``"fixed"`` (every such slot costs its ``n`` positions on every
      pass, as in earlier versions).
    * ``remask``: self-correction (a :class:`Remask` policy, or ``True`` for the default one):
      committed slot tokens the model no longer believes go back to the mask; anchors never.
    """

    steps: int | None = Field(default=None, gt=0)
    tokens_per_step: int | None = Field(default=None, gt=0)
    threshold: float | None = Field(default=None, gt=0.0, le=1.0)
    block_length: int | None = Field(default=None, gt=0)
    strategy: Strategy = "low_confidence"
    temperature: float = Field(default=0.0, ge=0.0)
    length: Literal["fixed", "adaptive"] = "adaptive"
    remask: Remask | None = None

    @field_validator("remask", mode="before")
    @classmethod
    def _remask_shorthand(cls, value: Any) -> Any:
        if value is True or value == "low_confidence":
            return Remask()
        if value is False or value == "off":
            return None
        return value

    @model_validator(mode="after")
    def _one_budget(self) -> Sampling:
        if self.steps is not None and self.tokens_per_step is not None:
            raise ValueError("give either steps or tokens_per_step, not both")
        return self


class Prompt(_Model):
    """A declarative prompt: anchors and slots in order, plus guidance and sampling settings."""

    parts: tuple[Part, ...] = ()
    guidance: Guidance = Field(default_factory=Guidance)
    sampling: Sampling = Field(default_factory=Sampling)

    def __init__(self, *parts: Any, **data: Any) -> None:
        if parts:
            if "parts" in data:
                raise SpecError("give parts either positionally or as parts=, not both")
            data["parts"] = _coerce_parts(parts)
        elif "parts" in data and not isinstance(data["parts"], (tuple, list)):
            data["parts"] = _coerce_parts([data["parts"]])
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise SpecError(_explain(exc)) from None

    @model_validator(mode="after")
    def _check_parts(self) -> Prompt:
        seen: set[str] = set()
        for part in self.parts:
            if isinstance(part, Slot):
                if part.name in seen:
                    raise ValueError(f"slot name {part.name!r} is used twice; slot names must be unique")
                seen.add(part.name)
        return self

    # ---- building
    def __add__(self, other: Any) -> Prompt:
        return self.model_copy_with(parts=self.parts + tuple(_coerce_parts([other])))

    def __radd__(self, other: Any) -> Prompt:
        return self.model_copy_with(parts=tuple(_coerce_parts([other])) + self.parts)

    def model_copy_with(self, **changes: Any) -> Prompt:
        """A validated copy with some fields replaced (``model_copy`` skips validation)."""
        data = {"parts": self.parts, "guidance": self.guidance, "sampling": self.sampling}
        data.update(changes)
        return Prompt(**data)

    def with_sampling(self, **options: Any) -> Prompt:
        """A copy whose sampling settings are updated, e.g. ``with_sampling(steps=16)``."""
        return self.model_copy_with(sampling=_update(self.sampling, options, "sampling"))

    def with_guidance(self, **options: Any) -> Prompt:
        """A copy whose guidance terms are updated, e.g. ``with_guidance(cfg_scale=1.5)``."""
        return self.model_copy_with(guidance=_update(self.guidance, options, "guidance"))

    @classmethod
    def format(cls, template: str, /, **slots: Slot | SlotArgs) -> Prompt:
        """Build a prompt from a ``str.format``-style template whose fields name slots.

        ``{{`` and ``}}`` give literal braces. Every field must be given and every given slot used.
        """
        parts: list[Any] = []
        used: set[str] = set()
        try:
            parsed = list(string.Formatter().parse(template))
        except ValueError as exc:
            raise SpecError(f"template does not parse: {exc}") from None
        for literal, field, spec, conversion in parsed:
            if literal:
                if parts and isinstance(parts[-1], Text):
                    parts[-1] = Text(text=parts[-1].text + literal)
                else:
                    parts.append(Text(text=literal))
            if field is None:
                continue
            if spec or conversion:
                raise SpecError(f"template field {{{field}}} may not carry a format spec or conversion")
            if field not in slots:
                raise SpecError(
                    f"template field {{{field}}} has no slot; pass {field}=slot(...) (given: {sorted(slots) or 'none'})"
                )
            value = slots[field]
            parts.append(value.named(field) if isinstance(value, SlotArgs) else value)
            used.add(field)
        unused = sorted(set(slots) - used)
        if unused:
            raise SpecError(f"slots {unused} are not used by the template")
        return cls(*parts)

    @classmethod
    def from_json(cls, data: str | bytes) -> Prompt:
        """Parse a spec from JSON, raising :class:`SpecError` with a readable message."""
        try:
            return cls.model_validate_json(data)
        except ValidationError as exc:
            raise SpecError(_explain(exc)) from None

    @property
    def slots(self) -> tuple[Slot, ...]:
        return tuple(p for p in self.parts if isinstance(p, Slot))


class SlotArgs:
    """An unnamed slot waiting for its name (from :meth:`Prompt.format`)."""

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs

    def named(self, name: str) -> Slot:
        return slot(name, **self.kwargs)

    def __repr__(self) -> str:
        return f"SlotArgs({self.kwargs!r})"


def slot(
    name: str | None = None,
    *,
    regex: str | None = None,
    choice: Iterable[str] | None = None,
    schema: Any = None,
    grammar: str | None = None,
    max_tokens: int | None = None,
    tokens: int | None = None,
    indent: int | None = None,
    lenient: bool = False,
    additional_properties: bool | None = None,
    grounded: Any = None,
    guidance: float = 1.0,
    layout: str = "auto",
) -> Any:
    """Make a slot.

    Give one constraint (``regex=``, ``choice=``, ``schema=`` or ``grammar=`` (Lark); none means
    free text) and one
    length (``max_tokens=n``: value then pad; ``tokens=n``: exactly n tokens). Without a name it
    returns a :class:`SlotArgs` for :meth:`Prompt.format`.

    ``schema=`` takes a JSON Schema dict or a pydantic model class; ``max_tokens`` is then the
    budget of each value in the template (default 16; parts of unknown structure get 3 times
    that), and ``indent`` / ``lenient`` / ``additional_properties`` / ``layout`` are passed to
    :class:`Json` (``layout="template"``: keep the exact template however long its automata take to
    build at a large vocabulary, so that values fill in parallel).

    ``grounded=`` makes the value a span of a source text, exactly, together with the constraint:
    a text, an anchor (a :class:`Text`; a named one is referred to by name), an
    :class:`AnchorRef`, a list of those, or a :class:`Grounded` with options.

    ``guidance=`` scales the prompt's guidance terms (:class:`Guidance`) in this slot: 0 turns
    them off here, 2 doubles them.
    """
    if not (isinstance(guidance, (int, float)) and math.isfinite(guidance) and 0 <= guidance <= 10):
        raise SpecError(f"slot {name!r}: guidance= is a scale in [0, 10]; got {guidance!r}")
    kwargs = {
        "regex": regex,
        "choice": choice,
        "schema": schema,
        "grammar": grammar,
        "max_tokens": max_tokens,
        "tokens": tokens,
        "indent": indent,
        "lenient": lenient,
        "additional_properties": additional_properties,
        "grounded": grounded,
        "guidance": guidance,
        "layout": layout,
    }
    if name is None:
        return SlotArgs(**kwargs)
    if sum(x is not None for x in (regex, choice, schema, grammar)) > 1:
        raise SpecError(f"slot {name!r}: give one of regex=, choice=, schema= or grammar=, not several")
    ground = _grounding(name, grounded)
    if layout not in ("auto", "template"):
        raise SpecError(f"slot {name!r}: layout= is 'auto' or 'template'; got {layout!r}")
    if layout != "auto" and schema is None:
        raise SpecError(f"slot {name!r}: layout= is an option of schema= slots")
    if schema is not None:
        made = _json_slot(name, schema, max_tokens, tokens, indent, lenient, additional_properties, ground)
        if layout != "auto":
            made = made.model_copy(update={"constraint": made.constraint.model_copy(update={"layout": layout})})
        return made if guidance == 1.0 else made.model_copy(update={"guidance": float(guidance)})
    if ground is not None and grammar is not None:
        raise SpecError(f"slot {name!r}: grounded= works with regex=, choice=, schema= and free text, not grammar=")
    if (max_tokens is None) == (tokens is None):
        raise SpecError(f"slot {name!r}: give exactly one length, max_tokens=N (value then pad) or tokens=N (exact)")
    constraint: FreeText | Regex | Choice | Grammar
    if grammar is not None and tokens is not None:
        raise SpecError(f"slot {name!r}: a grammar slot takes max_tokens=N (its sentence, then pad), not tokens=")
    if isinstance(choice, str):
        raise SpecError(f"slot {name!r}: choice= takes a list of strings, not one string")
    try:
        if regex is not None:
            constraint = Regex(pattern=regex)
        elif choice is not None:
            constraint = Choice(options=tuple(choice))
        elif grammar is not None:
            constraint = Grammar(lark=grammar)
        else:
            constraint = FreeText()
    except (ValidationError, TypeError) as exc:
        detail = _explain(exc) if isinstance(exc, ValidationError) else str(exc)
        raise SpecError(f"slot {name!r}: {detail}") from None
    try:
        if max_tokens is not None:
            length = Length(mode="at_most", tokens=max_tokens)
        else:
            length = Length(mode="exact", tokens=tokens)  # type: ignore[arg-type]
        return Slot(name=name, constraint=constraint, length=length, grounded=ground, guidance=guidance)
    except ValidationError as exc:
        raise SpecError(_explain(exc)) from None


def _grounding(name: str, grounded: Any) -> Grounded | None:
    """``grounded=`` as a :class:`Grounded` (texts, anchors, references, or one already made)."""
    if grounded is None or isinstance(grounded, Grounded):
        return grounded
    try:
        if isinstance(grounded, dict) and "sources" in grounded:
            return Grounded(**grounded)
        items = list(grounded) if isinstance(grounded, (list, tuple)) else [grounded]
        sources: list[str | AnchorRef] = []
        for item in items:
            if isinstance(item, Text):
                sources.append(AnchorRef(anchor=item.name) if item.name else item.text)
            elif isinstance(item, (str, AnchorRef)):
                sources.append(item)
            elif isinstance(item, dict):
                sources.append(AnchorRef(**item))
            else:
                raise SpecError(
                    f"slot {name!r}: grounded= takes a text, an anchor (Text), AnchorRef, a list of those or "
                    f"Grounded(...); got {type(item).__name__}"
                )
        return Grounded(sources=tuple(sources))
    except ValidationError as exc:
        raise SpecError(f"slot {name!r}: grounded= {_explain(exc)}") from None
    except TypeError as exc:
        raise SpecError(f"slot {name!r}: grounded= {exc}") from None


_MODELS: dict[str, type] = {}  # pydantic classes by import path, for typed results in this process


def model_of(constraint: Json) -> type | None:
    """The pydantic class a JSON slot was made from (in this process), if any."""
    return _MODELS.get(constraint.model) if constraint.model else None


def _json_slot(
    name: str,
    schema: Any,
    max_tokens: int | None,
    tokens: int | None,
    indent: int | None,
    lenient: bool,
    additional_properties: bool | None,
    grounded: Grounded | None = None,
) -> Slot:
    if tokens is not None:
        raise SpecError(f"slot {name!r}: a schema slot takes max_tokens= (the budget of each value), not tokens=")
    model = None
    if isinstance(schema, type):
        if not issubclass(schema, BaseModel):
            raise SpecError(f"slot {name!r}: schema= takes a JSON Schema dict or a pydantic model class")
        model = f"{schema.__module__}:{schema.__qualname__}"
        _MODELS[model] = schema
        try:
            schema_dict: Any = schema.model_json_schema()
        except Exception as exc:  # pydantic cannot describe the model
            raise SpecError(f"slot {name!r}: pydantic cannot make a JSON Schema of {schema.__name__}: {exc}") from None
        if additional_properties is None:
            additional_properties = False  # pydantic ignores extra keys anyway
    elif isinstance(schema, (dict, bool)):
        schema_dict = schema
    else:
        raise SpecError(
            f"slot {name!r}: schema= takes a JSON Schema dict or a pydantic model class; got {type(schema).__name__}"
        )
    try:
        constraint = Json(
            schema=schema_dict,
            indent=indent,
            lenient=lenient,
            additional_properties=additional_properties,
            model=model,
            grounded=grounded,
        )
        return Slot(name=name, constraint=constraint, length=Length(mode="at_most", tokens=max_tokens or 16))
    except ValidationError as exc:
        raise SpecError(f"slot {name!r}: {_explain(exc)}") from None


def _coerce_parts(items: Iterable[Any]) -> list[Any]:
    out: list[Any] = []
    for item in items:
        if isinstance(item, str):
            out.append(Text(text=item))
        elif isinstance(item, (Text, Slot)):
            out.append(item)
        elif isinstance(item, Prompt):
            out.extend(item.parts)
        elif isinstance(item, dict):
            out.append(item)
        elif isinstance(item, SlotArgs):
            raise SpecError("a slot needs a name here: slot('name', ...)")
        else:
            raise SpecError(f"cannot add {type(item).__name__} to a prompt; use a str (anchor), slot(...) or a Prompt")
    return out


def _update(model: _Model, options: dict[str, Any], what: str) -> Any:
    unknown = sorted(set(options) - set(type(model).model_fields))
    if unknown:
        raise SpecError(f"unknown {what} option(s) {unknown}; options are {sorted(type(model).model_fields)}")
    try:
        return type(model)(**{**model.model_dump(), **options})
    except ValidationError as exc:
        raise SpecError(_explain(exc)) from None


def _explain(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "prompt"
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{loc}: {msg}")
    return "invalid prompt spec: " + "; ".join(lines)
