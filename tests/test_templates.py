"""Jinja2 prompt templates with slots: the shipped library, the sandbox and its bounds, errors
that name the line, and the layout a rendered template compiles to."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
import torch
from helpers import check_result
from hypothesis import given, settings
from hypothesis import strategies as st

import dlmprompt
from dlmprompt import Slot, Template, TemplateError, Text, compile, generate
from dlmprompt.prompt_template import template_names
from dlmprompt.testing import RandomDenoiser

SHIPPED = template_names()


@pytest.fixture(scope="module")
def embedded():  # type: ignore[no-untyped-def]
    return dlmprompt.load()


def test_the_library_has_the_tasks_users_ask_for() -> None:
    for name in (
        "extract_record",
        "classify",
        "python_body",
        "docstring",
        "sql_select",
        "form",
        "table_rows",
        "tool_arguments",
        "multiple_choice",
        "reply",
        "config_yaml",
    ):
        assert name in SHIPPED
    assert not [n for n in SHIPPED if n.startswith("chat_")], "chat templates are not task templates"


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_template_renders_compiles_and_fills_exactly(name: str, embedded, qwen_tok) -> None:  # type: ignore[no-untyped-def]
    t = dlmprompt.template(name)
    assert t.description and t.example, f"{name}: a shipped template has a description and an example"
    described = t.describe()
    assert {v["name"] for v in described["variables"]} >= set(t.example)
    assert all(v["type"] in dlmprompt.prompt_template.TYPES for v in described["variables"])
    prompt = t.render(**t.example)
    assert prompt.slots, f"{name} has no slot"
    # the embedded model and its tokenizer
    program = compile(prompt.with_sampling(steps=16), embedded.tokenizer)
    result = generate(embedded, program, generator=torch.Generator().manual_seed(0))
    check_result(program, result)
    # the Qwen2.5 vocabulary (151,643 tokens), random logits at temperature 1
    program = compile(prompt.with_sampling(steps=8, temperature=1.0), qwen_tok)
    for seed in range(2):
        result = generate(RandomDenoiser(qwen_tok, seed=seed), program, generator=torch.Generator().manual_seed(seed))
        check_result(program, result)


def test_template_specific_outputs_parse(embedded) -> None:  # type: ignore[no-untyped-def]
    """What the constraints promise beyond each slot: the whole outputs parse as what they are."""
    import yaml

    g = torch.Generator().manual_seed(1)
    t = dlmprompt.template("config_yaml")
    res = generate(embedded, t.render(**t.example).with_sampling(steps=16), generator=g)
    config = yaml.safe_load(res.text)
    assert list(config) == list(t.example["schema"]["properties"])
    values = {k: json.loads(res[k]) for k in config}
    jsonschema.validate(values, t.example["schema"])

    t = dlmprompt.template("sql_select")
    res = generate(embedded, t.render(**t.example).with_sampling(steps=16), generator=g)
    sql = res.text.split("SQL: ", 1)[1].strip()
    assert re.fullmatch(r"SELECT \w+\.\w+, \w+\.\w+ FROM (users|orders) WHERE \w+\.\w+ (=|<>|<|>|<=|>=) .+;", sql), sql

    t = dlmprompt.template("table_rows")
    res = generate(embedded, t.render(**t.example).with_sampling(steps=16), generator=g)
    lines = res.text.strip().split("\n")
    assert len(lines) == 2 + len(t.example["rows"])
    assert all(line.count("|") == 4 for line in lines)
    assert res["row3_col3"] in t.example["patterns"]["continent"].split("|")

    t = dlmprompt.template("multiple_choice")
    res = generate(embedded, t.render(**t.example), generator=g)
    assert res["answer"] in ("A", "B", "C", "D")


# ----------------------------------------------------------------------------------- the language
def test_slots_anywhere_in_loops_macros_and_tags() -> None:
    t = Template.from_string(
        """{#---
description: two facts
variables:
  city: {type: string}
  n: {type: integer, default: 2}
---#}
{% macro fact(i) %}Fact {{ i }}: {{ slot("fact_" ~ i, max_tokens=6) }}{% endmacro %}
{% sampling steps=8, temperature=0.5 %}
{% guidance cfg_scale=1.5 %}
{% prompt %}City: {{ city }}{% endprompt %}

Country: {{ slot("country", regex="[A-Z][a-z]+", max_tokens=4) }}
{% for i in range(n) %}
{{ fact(i) }}
{% endfor %}
{% prompt false %}(end){% endprompt %}
""",
        name="facts",
    )
    assert [(v.name, v.type, v.required) for v in t.variables] == [("city", "string", True), ("n", "integer", False)]
    p = t.render(city="Paris")
    assert p.sampling.steps == 8 and p.sampling.temperature == 0.5 and p.guidance.cfg_scale == 1.5
    kinds = [(type(x).__name__, x.text if isinstance(x, Text) else x.name) for x in p.parts]
    assert kinds == [
        ("Text", "City: Paris"),
        ("Text", "\nCountry: "),
        ("Slot", "country"),
        ("Text", "\nFact 0: "),
        ("Slot", "fact_0"),
        ("Text", "\nFact 1: "),
        ("Slot", "fact_1"),
        ("Text", "\n"),
        ("Text", "(end)"),  # trim_blocks: the newline after a block tag goes
    ]
    assert [x.prompt for x in p.parts if isinstance(x, Text)] == [True, None, None, None, None, False]
    assert p.slots[0].constraint.pattern == "[A-Z][a-z]+"


def test_a_pydantic_model_variable_gives_a_typed_slot(embedded) -> None:  # type: ignore[no-untyped-def]
    from pydantic import BaseModel

    class City(BaseModel):
        name: str
        population: int

    t = dlmprompt.template("extract_record")
    p = t.render(document="Lyon has 522,000 people.", schema=City, kind="city")
    res = generate(embedded, p.with_sampling(steps=8), generator=torch.Generator().manual_seed(0))
    assert isinstance(res.value("record"), City)


def test_from_file_includes_files_beside_it(tmp_path) -> None:
    (tmp_path / "fields.jinja").write_text("{% macro field(n) %}{{ n }}: {{ slot(n, max_tokens=3) }}{% endmacro %}")
    (tmp_path / "main.jinja").write_text(
        '{% import "fields.jinja" as f %}Header\n{{ f.field("a") }}\n{% include "tail.jinja" %}'
    )
    (tmp_path / "tail.jinja").write_text('Tail {{ slot("b", choice=["x", "y"], max_tokens=2) }}\n')
    p = Template.from_file(tmp_path / "main.jinja").render()
    assert [s.name for s in p.slots] == ["a", "b"]
    assert p.parts[0].text == "Header\na: "
    with pytest.raises(TemplateError, match="cannot read"):
        Template.from_file(tmp_path / "missing.jinja")


# ----------------------------------------------------------------------------------- errors, named
@pytest.mark.parametrize(
    ("source", "variables", "message", "line"),
    [
        ('a\n{{ slot("x", max_tokens=3) | upper }}', {}, "through the filter |upper", 2),
        ('a\nb\n{% set v %}{{ slot("x", max_tokens=3) }}{% endset %}{{ v | trim }}', {}, "filter |trim", 3),
        ("Name: {{ name }}\n{{ missing }}", {"name": "x"}, r"needs the variable.*'missing'.*pass missing=", 2),
        ("{{ user.name }}\n{{ user.mail }}", {"user": {"name": "x"}}, "has no attribute 'mail'", 2),
        ('x\n{{ slot("x", colour="red", max_tokens=3) }}', {}, "no argument colour", 2),
        ('{{ slot("x", max_tokens=2) }}\n{{ slot("x", max_tokens=2) }}', {}, "used twice .first on line 1", 2),
        ('{% for i in [1, 2] %}\n{{ slot("v", max_tokens=2) }}\n{% endfor %}', {}, "used twice", 2),
        ('{{ slot("x") }}', {}, "give exactly one length", 1),
        ("a\n{% for x in %}", {}, "does not parse", 2),
        ('{% set s = slot("q", max_tokens=2) %}\nok', {}, "never placed", 1),
        ('{% set s = slot("q", max_tokens=2) %}{{ s }} and {{ s }}', {}, "placed twice", 1),
        ("{% sampling colour=1 %}", {}, "no option colour", 1),
        ("{% sampling steps=0 %}", {}, "sampling", None),
        ('{{ fail("pick a size") }}', {}, "pick a size", 1),
        ("{{ 1 / 0 }}", {}, "ZeroDivisionError", 1),
    ],
)
def test_errors_name_the_template_the_line_and_the_fix(source, variables, message, line) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TemplateError) as info:
        Template.from_string(source, name="mine").render(**variables)
    err = info.value
    assert err.template == "mine" and "template 'mine'" in str(err)
    if message is not None:
        assert re.search(message, str(err)), str(err)
    if line is not None:
        assert err.line == line, str(err)
    assert isinstance(err, dlmprompt.SpecError)


def test_variables_are_checked_against_the_header() -> None:
    t = Template.from_string("{#---\nvariables:\n  n: integer\n  tags: {type: array, required: false}\n---#}{{ n }}")
    with pytest.raises(TemplateError, match=r"needs the variable.*'n'.*pass n=\.\.\."):
        t.render()
    with pytest.raises(TemplateError, match="'n' must be an integer; got str"):
        t.render(n="3")
    with pytest.raises(TemplateError, match="takes no variable 'm'"):
        t.render(n=3, m=1)
    assert t.render(n=3).parts[0].text == "3"
    with pytest.raises(TemplateError, match="header is not valid YAML"):
        Template.from_string("{#---\nvariables: [\n---#}x")
    with pytest.raises(TemplateError, match="header takes the keys"):
        Template.from_string("{#---\ncolour: red\n---#}x")
    with pytest.raises(TemplateError, match="unknown type 'text'"):
        Template.from_string("{#---\nvariables:\n  n: text\n---#}x")
    with pytest.raises(TemplateError, match="no shipped template 'nope'"):
        dlmprompt.template("nope")


# ----------------------------------------------------------------------------------- the sandbox
@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ x.__class__ }}", "sandbox forbids"),
        ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "sandbox forbids"),
        ("{{ slot.__globals__ }}", "sandbox forbids"),
        ("{{ cycler.__init__.__globals__ }}", "sandbox forbids|undefined"),
        ("{% for i in range(10**9) %}{% endfor %}", "range.. of 1,000,000,000 items"),
        ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(1) }}", "recursed too deep"),
        ("{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}", "longer than"),
        ("{% for a in range(100000) %}{{ 'x' * 100 }}{% endfor %}", "passes 1,000,000 characters"),
        ("{{ 'a' * 10**9 }}", "output budget"),
        ("{{ 2 ** 100000000 }}", "too large"),
        ("{{ '%0999999999d' % 1 }}", "format width"),
        ("{{ '{:>999999999}'.format(1) }}", "format width"),
        ("{{ 'a'.center(10**9) }}", "wider than"),
        ("{{ 'a' | center(10**9) }}", "wider than"),
        ("{{ '%099999999d' | format(3) }}", "format width"),
        (
            "{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
            "namespace|concatenation",
        ),
        ('{{ "{0:>{1}}".format("a", 3000000) | length }}', "format width"),
        ('{{ ("{0:>999999}" * 3).format(1) | length }}', "add up past"),
        ('{{ ("%(a)3000000s" % {"a": "x"}) | length }}', "format width"),
        ('{% set s = "x" * 2000 %}{{ s.replace("x", s) | length }}', "would build more"),
        ('{{ (range(2000) | list) | join("x" * 1000) | length }}', "would build more"),
        ('{% set s = "x" * 1000 %}{{ ([s] * 3000) | string | length }}', "output budget"),
        ('{% macro d(s, n) %}{{ d(s ~ s, n - 1) if n else s | length }}{% endmacro %}{{ d("x" * 1000, 12) }}', "~"),
        ("{{ (2 ** 3000000) * (2 ** 3000000) }}", "too large"),
        ("{{ " + "(" * 3000 + "1" + ")" * 3000 + " }}", "nests too deep"),
        ('{% set m = slot("a", max_tokens=3) %}{{ m }}{{ m[:14] ~ "q:0\ue001" }}x', "forged a slot marker"),
        ('{% set m = slot("a", max_tokens=3) %}{{ m }}{{ m[:14] ~ "s:7\ue001" }}x', "forged a slot marker"),
        ("{% set d = {} %}{{ d.update(a=1) }}", "sandbox forbids|unsafe"),
    ],
)
def test_templates_cannot_reach_python_internals_and_stay_bounded(source: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        Template.from_string(source).render(x=1)  # refused, never a crash or a hang


def test_variable_values_cannot_forge_slots() -> None:
    t = Template.from_string("{{ text }} {{ slot('a', max_tokens=2) }}")
    fake = "\ue000" + "0" * 12 + ":s:0\ue001"
    p = t.render(text=fake)
    assert [s.name for s in p.slots] == ["a"] and p.parts[0].text == fake + " "


# ----------------------------------------------------------------------------------- the layout
LOOP_TEMPLATE = Template.from_string(
    """{#---
variables:
  title: string
  items: array
---#}
{{ title }}
{% for item in items %}
- {{ item.label }}: {{ slot("v" ~ loop.index, regex=item.pattern, max_tokens=4) }}
{% endfor %}
Done.
""",
    name="loop",
)
PATTERNS = ["[0-9]+", "[a-z]{1,3}", "(yes|no)", "[A-Z][a-z]*"]
labels = st.text(st.characters(codec="utf-8", exclude_characters="\ue000\ue001\x00"), max_size=12)


@settings(max_examples=60)
@given(
    title=labels,
    items=st.lists(
        st.fixed_dictionaries({"label": labels, "pattern": st.sampled_from(PATTERNS)}), min_size=1, max_size=5
    ),
)
def test_a_rendered_template_compiles_to_exactly_its_anchors_and_slots(title, items, byte_tok) -> None:  # type: ignore[no-untyped-def]
    prompt = LOOP_TEMPLATE.render(title=title, items=items)
    # what the template says, written out by hand
    expected: list[Text | Slot] = []
    text = f"{title}\n"
    for i, item in enumerate(items, 1):
        text += f"- {item['label']}: "
        expected += [Text(text=text), dlmprompt.slot(f"v{i}", regex=item["pattern"], max_tokens=4)]
        text = "\n"
    expected.append(Text(text=text + "Done.\n"))
    assert list(prompt.parts) == expected
    # the compiled canvas holds exactly those anchors, and the slots in order between them
    program = compile(prompt, byte_tok)
    layout = program.layout
    assert [s.name for s in layout.slots] == [f"v{i}" for i in range(1, len(items) + 1)]
    bounds = [0] + [x for s in layout.slots for x in (s.start, s.stop)] + [len(layout)]
    anchors = [byte_tok.decode_bytes(layout.canvas[a:b].tolist()) for a, b in zip(bounds[::2], bounds[1::2])]
    if byte_tok.bos_id is not None and program.layout.canvas[0] == byte_tok.bos_id:
        anchors[0] = byte_tok.decode_bytes(layout.canvas[1 : bounds[1]].tolist())
    assert [a.decode("utf-8") for a in anchors] == [p.text for p in expected if isinstance(p, Text)]
    for s in layout.slots:
        assert (layout.slot_of[s.start : s.stop] >= 0).all()
