"""Typed record families and the extraction prompt the SDK builds for them.

The embedded default model is trained on exactly these layouts (``dlmprompt.models.train``), the demo
uses them, and ``benchmarks/default_model_quality.py`` measures them. No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass

from dlmprompt.spec import Grounded, Prompt, slot


@dataclass(frozen=True)
class Field:
    name: str
    kind: str  # "string" | "integer" | "number" | "choice"
    regex: str | None
    max_tokens: int
    options: tuple[str, ...] = ()


# letters of Latin-1 too: names and places of many locales (José, Zoë, Saint-Étienne)
_UP = "A-ZÀ-ÖØ-Þ"
_LETTER = "A-Za-zÀ-ÖØ-öø-ÿ"
NAME = rf"[{_UP}][{_LETTER}.'-]*( [{_UP}][{_LETTER}.'-]*)*"
EMAIL = r"[a-z0-9][a-z0-9._%+-]*@[a-z0-9][a-z0-9.-]*\.[a-z]{2,}"
DATE = r"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
PLACE = rf"[{_UP}][{_LETTER}'.]*([ -][{_LETTER}][{_LETTER}'.]*)*"
PRICE = r"[0-9]+\.[0-9]{2}"

FAMILIES: dict[str, tuple[Field, ...]] = {
    "person": (
        Field("name", "string", NAME, 10),
        Field("age", "integer", r"[1-9][0-9]?", 3),
        Field("email", "string", EMAIL, 16),
        Field("city", "string", PLACE, 10),
    ),
    "company": (
        Field("name", "string", rf"[{_UP}0-9][{_LETTER}0-9,.&' -]*", 12),
        Field("founded", "integer", r"(1[89]|20)[0-9]{2}", 4),
        Field("employees", "integer", r"[1-9][0-9]*", 6),
        Field("city", "string", PLACE, 10),
    ),
    "product": (
        Field("name", "string", rf"[{_UP}0-9][{_LETTER}0-9 -]*", 10),
        Field("price", "number", PRICE, 6),
        Field(
            "category",
            "choice",
            None,
            4,
            ("books", "electronics", "garden", "kitchen", "sports", "toys", "clothing", "music"),
        ),
    ),
    "order": (
        Field("order_id", "string", r"ORD-[0-9]{6}", 8),
        Field("customer", "string", NAME, 10),
        Field("quantity", "integer", r"[1-9][0-9]?", 3),
        Field("status", "choice", None, 4, ("pending", "shipped", "delivered", "cancelled")),
    ),
    "event": (
        Field("title", "string", rf"[{_UP}0-9][{_LETTER}0-9 &'-]*", 12),
        Field("date", "string", DATE, 10),
        Field("city", "string", PLACE, 10),
    ),
}


def extraction_prompt(family: str, text: str, *, grounded: bool = False) -> Prompt:
    """``Text: ...`` then ``Record: {"field": <slot>, ...}``: keys, quotes and separators are anchors,
    each value a typed slot.

    ``grounded=True``: every text and number field whose pattern some span of whole words of
    ``text`` matches in full is constrained to be such a span, exactly (the same layout
    otherwise); choices stay as they are."""
    from dlmprompt.constraints.grounded import has_span

    fields = FAMILIES[family]
    p = Prompt(f"Kind: {family}\nText: {text}\nRecord: {{")
    for i, f in enumerate(fields):
        sep = ", " if i else ""
        quoted = f.kind in ("string", "choice")
        p = p + f'{sep}"{f.name}": ' + ('"' if quoted else "")
        if f.kind == "choice":
            p = p + slot(f.name, choice=list(f.options), max_tokens=f.max_tokens)
        else:
            spans = grounded and has_span((text,), f.regex or "", whole_words=True)
            ground = Grounded(sources=(text,), whole_words=True) if spans else None
            p = p + slot(f.name, regex=f.regex, max_tokens=f.max_tokens, grounded=ground)
        if quoted:
            p = p + '"'
    return p + "}"


def free_json_prompt(family: str, text: str, max_tokens: int = 64) -> Prompt:
    """The same task with the whole JSON as one free-text slot (no constraints)."""
    return Prompt(f"Kind: {family}\nText: {text}\nRecord: ") + slot("json", max_tokens=max_tokens)


def render_json(family: str, values: dict[str, object]) -> str:
    """The compact JSON the templates spell, in field order."""
    parts = []
    for f in FAMILIES[family]:
        v = values[f.name]
        parts.append(f'"{f.name}": ' + (f'"{v}"' if f.kind in ("string", "choice") else str(v)))
    return "{" + ", ".join(parts) + "}"
