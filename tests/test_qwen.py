"""The same guarantees at real vocabulary size: the Qwen2.5 vocabulary (151,643 tokens)."""

from __future__ import annotations

import torch
from helpers import check_result
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import regexes

from dlmprompt import Prompt, compile, generate, slot
from dlmprompt.testing import RandomDenoiser

JSON_STRING = r'"([^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*"'
INTEGER = r"-?(0|[1-9][0-9]*)"
EMAIL = r"[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}"
DATE = r"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"


def test_json_record_at_qwen_size(qwen_tok) -> None:
    p = (
        Prompt('{"name": ')
        + slot("name", regex=JSON_STRING, max_tokens=8)
        + ', "age": '
        + slot("age", regex=INTEGER, max_tokens=3)
        + ', "email": "'
        + slot("email", regex=EMAIL, max_tokens=10)
        + '", "born": "'
        + slot("born", regex=DATE, max_tokens=10)
        + '", "tier": "'
        + slot("tier", choice=["gold", "silver", "bronze"], max_tokens=3)
        + '"}'
    )
    prog = compile(p.with_sampling(steps=12, temperature=1.0), qwen_tok)
    for seed in range(3):
        res = generate(RandomDenoiser(qwen_tok, seed=seed), prog, generator=torch.Generator().manual_seed(seed))
        check_result(prog, res)
        import json

        rec = json.loads(res.text)
        assert set(rec) == {"name", "age", "email", "born", "tier"}


@settings(max_examples=60)
@given(data=st.data())
def test_random_regexes_at_qwen_size(qwen_tok, data) -> None:
    pattern = data.draw(regexes)
    mode = data.draw(st.sampled_from(["max_tokens", "tokens"]))
    n = data.draw(st.integers(1, 6))
    from hypothesis import assume

    from dlmprompt import CompileError

    try:
        prog = compile(
            Prompt(
                "v: ", slot("v", regex=pattern, **{mode: n}), " ok", slot("w", choice=["yes", "no"], max_tokens=2)
            ).with_sampling(
                temperature=data.draw(st.sampled_from([0.0, 1.0])),
                strategy=data.draw(st.sampled_from(["low_confidence", "margin"])),
                steps=data.draw(st.integers(1, 4)),
            ),
            qwen_tok,
        )
    except CompileError:
        assume(False)
    seed = data.draw(st.integers(0, 1000))
    res = generate(
        RandomDenoiser(qwen_tok, seed=seed, scale=data.draw(st.sampled_from([1.0, 8.0]))),
        prog,
        generator=torch.Generator().manual_seed(seed),
    )
    check_result(prog, res)


def test_layout_template_keeps_an_exact_template_that_auto_sends_to_the_span(qwen_tok) -> None:
    """At 151k tokens a 6-field record's automata take over the 0.1 s build budget: ``auto``
    decodes it as one left-to-right span, ``layout="template"`` keeps the template (values as
    parallel holes), and its output is valid under the schema."""
    import json

    import jsonschema

    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "pattern": "^[A-Z][a-z]{1,12}( [A-Z][a-z]{1,12})?$"},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "city": {"type": "string", "pattern": "^[A-Z][a-z]{1,15}$"},
            "email": {"type": "string", "pattern": "^[a-z0-9._-]{1,20}@[a-z0-9-]{1,15}\\.[a-z]{2,6}$"},
            "employer": {"type": "string", "pattern": "^[A-Z][A-Za-z]{1,12}( [A-Z][A-Za-z]{1,12})?$"},
            "role": {"enum": ["analyst", "manager", "engineer"]},
        },
        "required": ["name", "age", "city", "email", "employer", "role"],
        "additionalProperties": False,
    }
    auto = compile(Prompt("Record: ") + slot("r", schema=schema, max_tokens=8), qwen_tok)
    kept = compile(Prompt("Record: ") + slot("r", schema=schema, max_tokens=8, layout="template"), qwen_tok)
    assert [s.grammar is not None for s in auto.slots] == [True] and "context-free span" in auto.notes[0]
    assert len(kept.slots) == 6 and all(s.grammar is None for s in kept.slots) and kept.notes == []
    res = generate(RandomDenoiser(qwen_tok, seed=1), kept, generator=torch.Generator().manual_seed(1))
    check_result(kept, res)
    jsonschema.validate(json.loads(res["r"]), schema)
    import pytest

    from dlmprompt import SpecError

    with pytest.raises(SpecError, match="layout= is 'auto' or 'template'"):
        slot("r", schema=schema, max_tokens=8, layout="fast")
    with pytest.raises(SpecError, match="option of schema= slots"):
        slot("r", regex="[a-z]+", max_tokens=8, layout="template")
