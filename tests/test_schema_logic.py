"""The logic keywords (not, if / then / else, dependencies, dependentRequired, dependentSchemas,
overlapping oneOf) rewritten exactly: checked against the ``jsonschema`` package on generated
schemas and values, then through the compiled template."""

from __future__ import annotations

import re

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlmprompt import Prompt, compile, slot
from dlmprompt.compiler import json_accepts
from dlmprompt.constraints.jsonschema import SchemaError, compile_schema, texts_for
from dlmprompt.constraints.jsonschema.logic import negate_of, not_strings_pattern, positive
from dlmprompt.constraints.jsonschema.normalize import NOT_INTEGER
from dlmprompt.constraints.jsonschema.regexes import STRING

KEYS = "abc"

values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-6, 6)
    | st.sampled_from([0.5, -2.5, 3.0, 1e3])
    | st.sampled_from(["", "a", "ab", "abc", "b", "é"]),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.sampled_from(KEYS), kids, max_size=3),
    max_leaves=6,
)

leaves = st.one_of(
    st.sampled_from(
        [
            {"type": "string"},
            {"type": "number"},
            {"type": ["string", "null"]},
            {"type": "boolean"},
            {"type": "integer"},
            {"type": "object"},
            {"type": "array"},
            {"minimum": 0},
            {"maximum": 2.5},
            {"exclusiveMinimum": -1, "exclusiveMaximum": 3},
            {"type": "integer", "minimum": -2, "maximum": 4},
            {"minLength": 2},
            {"maxLength": 1},
            {"minItems": 1},
            {"maxItems": 1},
            {"minProperties": 1},
            {"maxProperties": 1},
            {"required": ["a"]},
            {"required": ["a", "b"]},
            {"const": "ab"},
            {"const": {"a": 1}},
            {"const": []},
            {"const": {}},
            {"enum": ["a", 1, None, True, 2.5]},
            {"enum": ["", "ab", "abc"]},
            {"enum": ["abcdefgh"]},
            {"contains": {"type": "string"}},
            {"uniqueItems": False},
            True,
            False,
            {},
        ]
    ),
)


def _combine(kids):
    props = st.builds(
        lambda p, r: {"properties": p, **({"required": r} if r else {})},
        st.dictionaries(st.sampled_from(KEYS), kids, max_size=2),
        st.lists(st.sampled_from(KEYS), max_size=2, unique=True),
    )
    return (
        props
        | st.builds(lambda a, b: {"anyOf": [a, b]}, kids, kids)
        | st.builds(lambda a, b: {"allOf": [a, b]}, kids, kids)
        | st.builds(lambda a: {"not": a}, kids)
        | st.builds(lambda a, b: {"type": "object", "properties": {"a": a}, "not": b}, kids, kids)
    )


positive_schemas = st.recursive(leaves, _combine, max_leaves=4)


def _logic(kids):
    return (
        _combine(kids)
        | st.builds(lambda a, b, c: {"if": a, "then": b, "else": c}, kids, kids, kids)
        | st.builds(lambda a, b: {"if": a, "then": b}, kids, kids)
        | st.builds(lambda a, c: {"if": a, "else": c}, kids, kids)
        | st.builds(lambda a, b: {"oneOf": [a, b]}, kids, kids)
        | st.builds(lambda a, b, c: {"oneOf": [a, b, c]}, kids, kids, kids)
        | st.builds(
            lambda d: {"dependentRequired": d},
            st.dictionaries(st.sampled_from(KEYS), st.lists(st.sampled_from(KEYS), max_size=2), max_size=2),
        )
        | st.builds(lambda d: {"dependentSchemas": d}, st.dictionaries(st.sampled_from(KEYS), kids, max_size=2))
    )


logic_schemas = st.recursive(leaves, _logic, max_leaves=5)


def _not_integer(validator, flag, instance, schema):  # the mark the negation of an integer type leaves
    number = isinstance(instance, (int, float)) and not isinstance(instance, bool)
    if flag and number and float(instance).is_integer():
        yield jsonschema.ValidationError(f"{instance!r} is an integer")


def _valid(schema, value) -> bool:
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    cls = jsonschema.validators.extend(cls, {NOT_INTEGER: _not_integer})
    return cls(schema).is_valid(value)


def _or_refused(fn, *args):
    try:
        return fn(*args)
    except SchemaError as exc:
        assert exc.path is not None and str(exc)  # a refusal names where
        return None


@settings(max_examples=300, deadline=None)
@given(schema=positive_schemas, vals=st.lists(values, min_size=1, max_size=8))
def test_negation_holds_exactly_the_rejected_values(schema, vals):
    neg = _or_refused(negate_of, schema)
    if neg is None:
        return
    assert "'not':" not in repr(neg), neg  # no "not" keyword left (the generated names are a, b, c)
    for v in vals:
        assert _valid(neg, v) == (not _valid(schema, v)), (schema, neg, v)


@settings(max_examples=300, deadline=None)
@given(schema=logic_schemas, vals=st.lists(values, min_size=1, max_size=8))
def test_positive_schemas_have_the_same_valid_values(schema, vals):
    pos = _or_refused(positive, schema)
    if pos is None:
        return
    text = repr(pos)
    for key in ("'not'", "'if'", "'then'", "'else'", "'oneOf'", "'dependentRequired'", "'dependentSchemas'"):
        assert key + ":" not in text, (schema, pos)
    for v in vals:
        assert _valid(pos, v) == _valid(schema, v), (schema, pos, v)


@settings(max_examples=60, deadline=None)
@given(
    deps=st.dictionaries(
        st.sampled_from(KEYS),
        st.lists(st.sampled_from(KEYS), max_size=2) | st.sampled_from([{"required": ["c"]}, {"maxProperties": 2}]),
        min_size=1,
        max_size=2,
    ),
    vals=st.lists(values, min_size=1, max_size=8),
)
def test_draft7_dependencies(deps, vals):
    schema = {"$schema": "http://json-schema.org/draft-07/schema#", "dependencies": deps}
    pos = positive(schema)
    for v in vals:
        assert _valid(pos, v) == _valid(schema, v), (schema, pos, v)


@settings(max_examples=150, deadline=None)
@given(schema=logic_schemas, vals=st.lists(values, min_size=1, max_size=6))
def test_compiled_templates_accept_exactly_the_valid_values(schema, vals):
    """Through the whole template compiler: never an invalid value; every valid one unless the
    compiler noted a narrowing."""
    template = _or_refused(compile_schema, schema)
    if template is None:
        return
    rx = re.compile(template.regex, re.S)
    narrowed = bool(template.notes)
    for v in vals:
        ok = _valid(schema, v)
        texts = texts_for(v, positive(schema))
        if any(re.search(r"[0-9][eE]|\.0\b", t) for t in texts):
            continue  # number spellings the template writes one way only
        hit = any(rx.fullmatch(t) for t in texts)
        if hit:
            assert ok, (schema, v)
        elif ok and not narrowed:
            raise AssertionError(f"valid value rejected: {v!r} under {schema!r}")


def test_not_strings_pattern():
    p = re.compile(not_strings_pattern(["foo", "fo", "bar"]))
    assert not p.search("foo") and p.search("foox")
    for s in ["foo", "fo", "bar"]:
        assert not p.search(s)
    for s in ["", "f", "fooo", "ba", "barx", "x\n", "é", "b\u2028"]:
        assert p.search(s), s


@pytest.mark.parametrize(
    ("schema", "needle"),
    [
        ({"not": {"type": "string", "pattern": "^a"}}, "'pattern'"),
        ({"not": {"multipleOf": 3}}, "'multipleOf'"),
        ({"properties": {"x": {"not": {"type": "string", "format": "date"}}}}, "/properties/x/not"),
        ({"oneOf": [{"type": "string"}, {"pattern": "a"}]}, "'pattern'"),
        ({"not": {"additionalProperties": False}}, "additionalProperties"),
    ],
)
def test_negations_without_a_positive_form_are_refused_with_the_keyword(schema, needle):
    with pytest.raises(SchemaError) as info:
        positive(schema)
    assert needle in str(info.value) + str(info.value.path)


def test_allof_of_unions_is_spread_and_bounded():
    ab = {"anyOf": [{"required": ["a"]}, {"required": ["b"]}]}
    cd = {"anyOf": [{"required": ["c"]}, {"maxProperties": 1}]}
    schema = {"type": "object", "properties": {k: {"type": "integer"} for k in "abc"}, "allOf": [ab, cd]}
    template = compile_schema(schema)
    rx = re.compile(template.regex)
    assert rx.fullmatch('{"a":1,"c":2}') and rx.fullmatch('{"b":1}')
    assert not rx.fullmatch('{"c":1}') and not rx.fullmatch('{"a":1,"b":2}')
    many = {"allOf": [{"anyOf": [{"const": i}, {"const": i + 1}, {"type": "string"}]} for i in range(5)]}
    with pytest.raises(SchemaError, match="combinations"):
        compile_schema(many)


def test_if_then_else_through_the_compiled_slot(byte_tok):
    schema = {
        "type": "object",
        "properties": {"kind": {"enum": ["card", "bank"]}, "number": {"type": "string"}, "iban": {"type": "string"}},
        "required": ["kind"],
        "additionalProperties": False,
        "if": {"properties": {"kind": {"const": "card"}}},
        "then": {"required": ["number"]},
        "else": {"required": ["iban"]},
    }
    prog = compile(Prompt(slot("value", schema=schema)), byte_tok)
    assert json_accepts(prog, "value", {"kind": "card", "number": "4"})[1]
    assert json_accepts(prog, "value", {"kind": "bank", "iban": "DE"})[1]
    assert not json_accepts(prog, "value", {"kind": "card", "iban": "DE"})[1]
    assert not json_accepts(prog, "value", {"kind": "bank"})[1]


def test_slow_templates_become_the_context_free_span(byte_tok, monkeypatch):
    import dlmprompt.compiler as compiler_module

    schema = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "boolean"}}, "required": ["a"]}
    schema["additionalProperties"] = False
    monkeypatch.setattr(compiler_module, "TEMPLATE_BUILD_BUDGET_S", -1.0)
    monkeypatch.setattr(compiler_module, "_PROGRAMS", type(compiler_module._PROGRAMS)())
    prog = compile(Prompt(slot("value", schema=schema)), byte_tok, steps=7)
    assert any("context-free span" in n and "to build" in n for n in prog.notes), prog.notes
    assert json_accepts(prog, "value", {"a": 3, "b": True})[1]
    assert not json_accepts(prog, "value", {"b": True})[1]


@pytest.mark.parametrize(
    "pattern",
    [
        r'"(?:[^"\\]|\\.)*"',
        r"[a-z]{0,40}",
        r'\{"a":(?:true|false)(?:,"b":-?[0-9]+)?\}',
        r"(?:[\s\S])*",
        r"(?:ab|cd|é+)",
        r'\["x"(?:,"x"){0,5}\]',
        r'\{"a":' + STRING + r'(?:,"b":' + STRING + r')?(?:,"c":\[(?:' + STRING + r"(?:," + STRING + r")*)?\])?\}",
    ],
)
def test_sparse_and_dense_token_walks_agree(pattern):
    """The two walks that build token automata give the same automaton (at the Qwen2.5 and the
    embedded vocabularies)."""
    import numpy as np

    from dlmprompt import load
    from dlmprompt.constraints import automaton as A
    from dlmprompt.constraints import tokenwalk as W
    from dlmprompt.tokenizer import qwen25_tokenizer

    for tok in (qwen25_tokenizer(), load().tokenizer):
        table, start, accept = W.byte_dfa(A.checked_pattern(pattern, None))
        q = table.shape[0] - 1
        vocab = W.vocabulary_for(tok)
        every = np.arange(q)
        dense = A._from_signatures(*W.dense_signatures(table, q, vocab, every), start, accept[:q], q, "")
        walked = A._from_signatures(*W.signatures(table, q, vocab), start, accept[:q], q, "")
        t, s, d = vocab.walk(table, q, every)
        sig, row = W.sparse_signatures(t, s, d, q, vocab.size)
        for dup, same in vocab.duplicates:
            row[dup] = row[same]
        sparse = A._from_signatures(sig, row, start, accept[:q], q, "")
        for other in (sparse, walked):
            assert np.array_equal(dense.token_class >= 0, other.token_class >= 0)
            assert (dense.n_classes, dense.n_states, dense.start) == (other.n_classes, other.n_states, other.start)
            ids = np.nonzero(dense.token_class >= 0)[0]
            assert np.array_equal(dense.next_state[dense.token_class[ids]], other.next_state[other.token_class[ids]])


def test_nested_overlapping_oneofs_are_refused_before_they_blow_up():
    schema: dict = {"type": "string"}
    for _ in range(6):
        schema = {"oneOf": [schema, {"minLength": 1}, {"maxLength": 3}, {"type": ["string", "null"]}]}
    with pytest.raises(SchemaError, match="grow past"):
        positive(schema)


def test_finite_conjunctions_fold_into_one_enum_exactly() -> None:
    """``fold_finite``: enum / const conjuncts intersect and ``not`` of named values removes
    values, with every other conjunct kept; the same instances as the original under the
    ``jsonschema`` package. And the case it exists for compiles at once: ``not`` of 2^53 next to
    ``const`` 2^53 - 1 (pushed down, "every number but 2^53" took 46 s as a pattern)."""
    from dlmprompt import Tokenizer, generate
    from dlmprompt.constraints.jsonschema.logic import fold_finite
    from dlmprompt.testing import RandomDenoiser

    pool = [None, True, False, 0, 1, 1.0, 2, -3, 2.5, "a", "b", "", [], [1], {}, {"a": 1}, 9007199254740991]
    schemas = [
        {"allOf": [{"enum": [1, 2, "a"]}, {"not": {"const": 2}}]},
        {"enum": [1, "a", None], "not": {"enum": ["a"]}, "allOf": [{"type": "integer"}]},
        {"const": 1, "allOf": [{"enum": [1.0, 2]}, {"not": {"enum": [2]}}]},
        {"allOf": [{"enum": [[], [1], {}]}, {"not": {"enum": [[1]]}}, {"minItems": 1}]},
        {"allOf": [{"const": "a", "title": "x"}, {"not": {"const": "a"}}]},
        {"enum": [True, 1, 0, False], "not": {"enum": [1]}},
        {"allOf": [{"type": "string"}, {"not": {"const": "a"}}]},  # no finite conjunct: unchanged
    ]
    for schema in schemas:
        folded = fold_finite(schema)
        for v in pool:
            assert jsonschema.Draft202012Validator(schema).is_valid(v) == jsonschema.Draft202012Validator(
                folded
            ).is_valid(v), (schema, folded, v)
    assert fold_finite(schemas[0]) == {"enum": [1, "a"]}
    assert fold_finite(schemas[1]) == {"enum": [1, None], "allOf": [{"type": "integer"}]}
    assert fold_finite(schemas[4]) == {"enum": []}  # nothing is valid
    assert fold_finite(schemas[-1]) == schemas[-1]
    big = {"allOf": [{"enum": [9007199254740991]}, {"not": {"enum": [9007199254740992]}}]}
    tok = Tokenizer.bytes_level([])
    prog = compile(Prompt("n = ") + slot("n", schema=big, max_tokens=24), tok)
    assert generate(RandomDenoiser(tok, seed=0), prog).value("n") == 9007199254740991


_UNTYPED_ONE_OF = {
    "type": "array",
    "items": {
        "oneOf": [
            {"properties": {"kind": {"enum": ["stage"]}, "title": {"type": "string"}}, "required": ["kind"]},
            {
                "properties": {"kind": {"enum": ["teaser"]}, "n": {"type": "integer"}},
                "required": ["kind"],
                "additionalProperties": False,
            },
        ]
    },
}


@pytest.mark.parametrize("tok_name", ["byte_tok", "qwen_tok"])
def test_a_oneof_of_branches_with_no_type_rejects_what_every_branch_takes(tok_name, request):
    """Two object-like branches with no ``type``, told apart by a const: a number is valid in
    both, so "exactly one" refuses it (found by ``benchmarks/jsonschema_fuzz.py``: the span took
    the oneOf as disjoint and accepted ``[-1]``). The objects of one branch are still taken, on
    the template (small vocabulary) and on the span (Qwen2.5, where the template is too slow)."""
    tok = request.getfixturevalue(tok_name)
    prog = compile(Prompt(slot("value", schema=_UNTYPED_ONE_OF, max_tokens=256)), tok)
    valid = [[{"kind": "stage", "title": "a", "x": 1}], [{"kind": "teaser", "n": 2}], []]
    invalid = [[-1], ["x"], [None], [[]], [{}], [{"kind": "teaser", "x": 1}], [{"kind": "other"}]]
    for inst in valid:
        assert _valid(_UNTYPED_ONE_OF, inst), inst
        assert json_accepts(prog, "value", inst)[1], inst
    for inst in invalid:
        assert not _valid(_UNTYPED_ONE_OF, inst), inst
        assert not json_accepts(prog, "value", inst)[1], inst


def test_disjoint_oneof_branches_with_no_type_are_not_disjoint_for_other_types() -> None:
    """``normalize.disjoint`` told objects apart and said nothing of the other values."""
    from dlmprompt.constraints.jsonschema.normalize import Context, disjoint

    branches = _UNTYPED_ONE_OF["items"]["oneOf"]
    ctx = Context(_UNTYPED_ONE_OF, None, False, None)
    assert not disjoint(ctx, branches, "")
    assert disjoint(ctx, branches, "", as_written=True)
    assert disjoint(ctx, [{**b, "type": "object"} for b in branches], "")
