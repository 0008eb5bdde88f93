from __future__ import annotations

import pytest

from dlmprompt import Choice, Length, Prompt, Regex, Slot, SpecError, Text, slot


def test_builder_reads_naturally_and_round_trips_json() -> None:
    p = Prompt("Name: ") + slot("name", max_tokens=8) + "\nAge: " + slot("age", regex=r"[0-9]+", max_tokens=3) + "\n"
    assert [type(x).__name__ for x in p.parts] == ["Text", "Slot", "Text", "Slot", "Text"]
    assert p.slots[1].constraint == Regex(pattern="[0-9]+")
    assert p.slots[1].length == Length(mode="at_most", tokens=3)
    again = Prompt.from_json(p.model_dump_json())
    assert again == p
    assert Prompt.model_validate(p.model_dump()) == p


def test_format_template() -> None:
    p = Prompt.format(
        "{{x}} Name: {name}, color {c}.", name=slot(tokens=4), c=slot(choice=["red", "blue"], max_tokens=2)
    )
    assert p.parts[0] == Text(text="{x} Name: ")
    assert p.slots[0].name == "name" and p.slots[0].length.mode == "exact"
    assert p.slots[1].constraint == Choice(options=("red", "blue"))


def test_slots_anywhere_any_number() -> None:
    p = Prompt(slot("a", tokens=1), slot("b", tokens=2), "mid", slot("c", max_tokens=1))
    assert [s.name for s in p.slots] == ["a", "b", "c"]


def test_sampling_and_guidance_updates() -> None:
    p = Prompt("x", slot("a", tokens=2)).with_sampling(steps=2, strategy="margin").with_guidance(cfg_scale=1.5)
    assert p.sampling.steps == 2 and p.sampling.strategy == "margin" and p.guidance.cfg_scale == 1.5
    with pytest.raises(SpecError, match="unknown sampling option"):
        p.with_sampling(stepz=3)
    with pytest.raises(SpecError, match="strategy"):
        p.with_sampling(strategy="best")
    with pytest.raises(SpecError, match="either steps or tokens_per_step"):
        p.with_sampling(tokens_per_step=2)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: Prompt(slot("a", tokens=1), slot("a", tokens=1)), "used twice"),
        (lambda: slot("1abc", tokens=1), "not a Python identifier"),
        (lambda: slot("class", tokens=1), "not a Python identifier"),
        (lambda: slot("a"), "exactly one length"),
        (lambda: slot("a", tokens=2, max_tokens=3), "exactly one length"),
        (lambda: slot("a", tokens=0), "greater than 0"),
        (lambda: slot("a", regex="x", choice=["x"], tokens=1), "not several"),
        (lambda: slot("a", choice="abc", tokens=1), "list of strings"),
        (lambda: Prompt("x", 3), "cannot add int"),
        (lambda: Prompt("x") + slot(tokens=2), "needs a name"),
        (lambda: Prompt.format("{a}", b=slot(tokens=1)), "has no slot"),
        (lambda: Prompt.format("{a}", a=slot(tokens=1), b=slot(tokens=1)), "not used"),
        (lambda: Prompt.format("{a!r}", a=slot(tokens=1)), "format spec"),
        (lambda: Prompt.from_json('{"parts": [{"kind": "slot", "name": "a"}]}'), "length"),
        (lambda: Prompt.from_json('{"parts": [], "colour": 1}'), "colour"),
    ],
)
def test_spec_errors_are_spec_errors(build, match) -> None:
    with pytest.raises(SpecError, match=match):
        build()


def test_spec_error_is_value_error() -> None:
    assert issubclass(SpecError, ValueError)
    s = Slot(name="a", length=Length(tokens=2))
    assert s.constraint.type == "text"
