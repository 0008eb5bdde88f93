"""Tool calls, exact: every call names one of the request's tools and its arguments validate
under that tool's schema (jsonschema), whatever the weights; real JSONSchemaBench function
schemas drawn by hypothesis included."""

from __future__ import annotations

import json

import jsonschema
import pytest
import torch
from helpers import ADD, WEATHER, bench_function_schemas
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import dlmprompt
from dlmprompt import CompileError, SpecError, compile, render_chat
from dlmprompt.testing import RandomDenoiser
from dlmprompt.toolcalls import call_schema, normalize_tools, tool_prompts

TOOLS = [WEATHER, ADD]
MESSAGES = [{"role": "user", "content": "How warm is Lisbon, in celsius?"}]


@pytest.fixture(scope="module")
def embedded():  # type: ignore[no-untyped-def]
    return dlmprompt.load()


def check_calls(answer, tools) -> None:  # type: ignore[no-untyped-def]
    by_name = {t["name"]: t for t in normalize_tools(tools)}
    assert answer.calls and answer.text is None and answer.finish_reason == "tool_calls"
    for call in answer.calls:
        assert call.name in by_name and call.id.startswith("call_")
        jsonschema.validate(call.arguments, by_name[call.name]["parameters"])
        json.loads(call.as_openai()["function"]["arguments"])


def test_required_named_parallel_and_none(embedded) -> None:  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(0)
    check_calls(dlmprompt.tool_call(embedded, MESSAGES, TOOLS, tool_choice="required", generator=g), TOOLS)
    named = {"type": "function", "function": {"name": "add"}}
    answer = dlmprompt.tool_call(embedded, MESSAGES, TOOLS, tool_choice=named, generator=g)
    check_calls(answer, TOOLS)
    assert [c.name for c in answer.calls] == ["add"]
    answer = dlmprompt.tool_call(
        embedded, MESSAGES, TOOLS, tool_choice="required", parallel_tool_calls=True, max_calls=3, generator=g
    )
    check_calls(answer, TOOLS)
    assert 1 <= len(answer.calls) <= 3
    answer = dlmprompt.tool_call(embedded, MESSAGES, TOOLS, tool_choice="none", generator=g)
    assert answer.calls == () and isinstance(answer.text, str) and answer.finish_reason == "stop"


def test_auto_decides_with_a_choice_slot_first(embedded) -> None:  # type: ignore[no-untyped-def]
    plan = tool_prompts(MESSAGES, TOOLS, tool_choice="auto")
    # whether to call, then which tool, then that tool's schema alone
    assert plan.decide is not None and plan.decide.slots[-1].constraint.options == ("call", "reply")
    assert plan.pick is not None and plan.pick.slots[-1].constraint.options == ("get_weather", "add")
    assert set(plan.calls) == {"get_weather", "add"}
    required = tool_prompts(MESSAGES, TOOLS, tool_choice="required")
    assert required.decide is None and required.pick is not None
    named = tool_prompts(MESSAGES, TOOLS, tool_choice={"type": "function", "function": {"name": "add"}})
    assert named.decide is None and named.pick is None and set(named.calls) == {"add"}
    parallel = tool_prompts(MESSAGES, TOOLS, tool_choice="auto", parallel_tool_calls=True)
    assert parallel.pick is None and set(parallel.calls) == {"*"}
    for seed in range(3):
        answer = dlmprompt.tool_call(embedded, MESSAGES, TOOLS, generator=torch.Generator().manual_seed(seed))
        if answer.results[0]["action"] == "call":
            assert len(answer.results) == 3  # the decision, the tool's name, the call
            assert [c.name for c in answer.calls] == [answer.results[1]["tool"]]
            check_calls(answer, TOOLS)
        else:
            assert len(answer.results) == 2 and answer.calls == () and answer.text is not None


def test_history_with_calls_and_tool_results_renders() -> None:
    history = [
        *MESSAGES,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Lisbon"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "21 C, sunny"},
    ]
    call = tool_prompts(history, TOOLS, tool_choice="required").calls["add"]
    text = call.parts[0].text
    assert "get_weather: Current weather in a city." in text
    assert '<tool_call>{"name": "get_weather", "arguments": {"city": "Lisbon"}}</tool_call>' in text
    assert "Tool: 21 C, sunny" in text
    # a chat template that takes tools gets them, and the calls as they are
    own = "{% for t in tools %}[{{ t.function.name }}]{% endfor %}{% for m in messages %}{{ m.role }}:{{ m.content }}"
    own += "{% if m.tool_calls %}{{ m.tool_calls[0].function.name }}{% endif %};{% endfor %}"
    assert render_chat(history, template=own, tools=normalize_tools(TOOLS)).startswith("[get_weather][add]user:")


def test_bad_tool_requests_say_what_to_change() -> None:
    with pytest.raises(SpecError, match="non-empty list"):
        normalize_tools([])
    with pytest.raises(SpecError, match="tool names must be unique"):
        normalize_tools([ADD, ADD])
    with pytest.raises(SpecError, match="not among the tools"):
        tool_prompts(MESSAGES, TOOLS, tool_choice={"type": "function", "function": {"name": "nope"}})
    with pytest.raises(SpecError, match="tool_choice is"):
        tool_prompts(MESSAGES, TOOLS, tool_choice="sometimes")


BENCH = bench_function_schemas(400)


@pytest.mark.skipif(not BENCH, reason="../shared/data/jsonschemabench is not here")
@settings(max_examples=12, suppress_health_check=[HealthCheck.filter_too_much])
@given(
    picks=st.lists(st.integers(0, max(len(BENCH) - 1, 0)), min_size=1, max_size=3, unique=True), seed=st.integers(0, 99)
)
def test_calls_under_real_function_schemas_are_valid(picks, seed, embedded) -> None:  # type: ignore[no-untyped-def]
    tools = [{"type": "function", "function": {"name": f"tool_{i}", "parameters": BENCH[i]}} for i in picks]
    parallel = len(tools) > 1  # an array under anyOf of every tool; one tool: its call alone
    plan = tool_prompts(MESSAGES, tools, tool_choice="required", parallel_tool_calls=parallel)
    call = next(iter(plan.calls.values()))
    tok = embedded.tokenizer
    try:
        program = compile(call.with_sampling(steps=8, temperature=1.0), tok)
    except CompileError:
        assume(False)  # a schema the compiler refuses (with its reason): nothing to generate
    result = dlmprompt.generate(RandomDenoiser(tok, seed=seed), program, generator=torch.Generator().manual_seed(seed))
    value = json.loads(result["call"])
    jsonschema.validate(value, call_schema(normalize_tools(tools), parallel=parallel))
    for one in value if parallel else [value]:
        assert one["name"] in {t["function"]["name"] for t in tools}
