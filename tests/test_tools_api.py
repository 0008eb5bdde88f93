"""Tool calls over the OpenAI endpoint with the real ``openai`` client, in-process through the
adapters' backend, and through LangChain's adapter against a real server: every call names a
tool of the request and its arguments validate (jsonschema) under that tool's schema; OpenAI's
shapes (ids, ``finish_reason: "tool_calls"``, streamed deltas, usage) hold; the structured-output
dialects other clients send are accepted."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest
from helpers import ADD, WEATHER, bench_function_schemas

import dlmprompt
from dlmprompt.integrations.core import LocalChat, RemoteChat, chat_backend

TOOLS = [WEATHER, ADD]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
MESSAGES = [{"role": "user", "content": "How warm is Lisbon, in celsius?"}]
HISTORY = [
    *MESSAGES,
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Lisbon"}'}}
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "21 C, sunny"},
]


@pytest.fixture(scope="module")
def model(denoiser):  # type: ignore[no-untyped-def]
    return denoiser


@pytest.fixture(scope="module")
def client(server):  # type: ignore[no-untyped-def]
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def check_calls(calls, allowed=SCHEMAS) -> None:  # type: ignore[no-untyped-def]
    assert calls
    ids = set()
    for call in calls:
        fn = call["function"] if isinstance(call, dict) else call.function.model_dump()
        ident = call["id"] if isinstance(call, dict) else call.id
        assert fn["name"] in allowed and ident.startswith("call_") and ident not in ids
        ids.add(ident)
        jsonschema.validate(json.loads(fn["arguments"]), allowed[fn["name"]])


@pytest.mark.parametrize(
    "choice", ["required", {"type": "function", "function": {"name": "add"}}, "auto", "none"], ids=str
)
def test_tool_choice_over_the_openai_client(client, choice) -> None:  # type: ignore[no-untyped-def]
    for seed in range(2):
        r = client.chat.completions.create(
            model="dlmprompt-default", messages=MESSAGES, tools=TOOLS, tool_choice=choice, seed=seed
        )
        ch = r.choices[0]
        if ch.finish_reason == "tool_calls":
            assert choice != "none" and ch.message.content is None
            check_calls(ch.message.tool_calls, {"add": SCHEMAS["add"]} if isinstance(choice, dict) else SCHEMAS)
            assert len(ch.message.tool_calls) == 1  # no parallel_tool_calls: one call per turn
        else:
            assert choice in ("auto", "none") and isinstance(ch.message.content, str)
            assert not ch.message.tool_calls
        assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens > 0


def test_parallel_calls_and_history_with_tool_results(client) -> None:  # type: ignore[no-untyped-def]
    r = client.chat.completions.create(
        model="m", messages=HISTORY, tools=TOOLS, tool_choice="required", parallel_tool_calls=True, seed=3
    )
    calls = r.choices[0].message.tool_calls
    check_calls(calls)
    assert 1 <= len(calls) <= 4 and r.choices[0].finish_reason == "tool_calls"


def test_streamed_tool_calls_assemble_to_valid_calls(client) -> None:  # type: ignore[no-untyped-def]
    stream = client.chat.completions.create(
        model="m",
        messages=MESSAGES,
        tools=TOOLS,
        tool_choice="required",
        stream=True,
        stream_options={"include_usage": True},
        seed=1,
    )
    calls: dict[int, dict] = {}
    finish, usage, roles = None, None, []
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for ch in chunk.choices:
            if ch.delta.role:
                roles.append(ch.delta.role)
            for d in ch.delta.tool_calls or []:
                c = calls.setdefault(d.index, {"id": None, "function": {"name": "", "arguments": ""}})
                c["id"] = d.id or c["id"]
                c["function"]["name"] += d.function.name or ""
                c["function"]["arguments"] += d.function.arguments or ""
            finish = ch.finish_reason or finish
    assert roles == ["assistant"] and finish == "tool_calls" and usage is not None and usage.total_tokens > 0
    check_calls(list(calls.values()))


def test_streamed_text_reply_with_tool_choice_none(client) -> None:  # type: ignore[no-untyped-def]
    stream = client.chat.completions.create(
        model="m", messages=HISTORY, tools=TOOLS, tool_choice="none", stream=True, max_tokens=12, seed=0
    )
    text, finish = "", None
    for chunk in stream:
        for ch in chunk.choices:
            assert not ch.delta.tool_calls
            text += ch.delta.content or ""
            finish = ch.finish_reason or finish
    assert finish in ("stop", "length") and isinstance(text, str)


def test_reply_keeps_the_response_format(client) -> None:  # type: ignore[no-untyped-def]
    schema = {"type": "object", "properties": {"answer": {"enum": ["yes", "no"]}}, "required": ["answer"]}
    rf = {"type": "json_schema", "json_schema": {"name": "a", "schema": schema, "strict": True}}
    r = client.chat.completions.create(
        model="m", messages=MESSAGES, tools=TOOLS, tool_choice="none", response_format=rf
    )
    jsonschema.validate(json.loads(r.choices[0].message.content), schema)


@pytest.mark.parametrize(
    "extra",
    [
        {
            "structured_outputs": {
                "json": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
            }
        },
        {"structured_outputs": {"regex": r"[0-9]{3}-[0-9]{2}"}},
        {"structured_outputs": {"choice": ["red", "green"]}},
        {"structured_outputs": {"grammar": 'start: "a" "b"+'}},
        {"guided_json": {"type": "array", "items": {"type": "boolean"}, "minItems": 1, "maxItems": 3}},
        {"guided_regex": r"[a-c]{2}"},
        {"guided_choice": ["x", "y"]},
        {"guided_grammar": 'start: "q" | "r"'},
        {"response_format": {"type": "json_object", "schema": {"type": "object", "required": ["k"]}}},
    ],
    ids=lambda e: next(iter(e)) + ":" + (next(iter(e[next(iter(e))])) if isinstance(e[next(iter(e))], dict) else ""),
)
def test_structured_output_dialects(client, extra) -> None:  # type: ignore[no-untyped-def]
    import re

    r = client.chat.completions.create(model="m", messages=MESSAGES, max_completion_tokens=8, extra_body=extra, seed=0)
    text = r.choices[0].message.content
    key, value = next(iter(extra.items()))
    if key == "structured_outputs":
        key, value = next(iter(value.items()))
        key = {"json": "guided_json"}.get(key, "guided_" + key)
    if key in ("guided_json", "response_format"):
        jsonschema.validate(json.loads(text), value if key == "guided_json" else value["schema"])
    elif key == "guided_regex":
        assert re.fullmatch(value, text)
    elif key == "guided_choice":
        assert text in value
    else:
        import lark

        lark.Lark(value).parse(text)


def test_bad_tool_requests_are_400s(client) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(openai.BadRequestError, match="not among the tools"):
        client.chat.completions.create(
            model="m", messages=MESSAGES, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "nope"}}
        )
    with pytest.raises(openai.BadRequestError, match="tool_choice needs tools"):
        client.chat.completions.create(model="m", messages=MESSAGES, tool_choice="required")
    with pytest.raises(openai.BadRequestError, match="unique"):
        client.chat.completions.create(model="m", messages=MESSAGES, tools=[ADD, ADD])


@pytest.mark.parametrize("where", ["local", "remote"])
def test_chat_backend_in_process_and_remote_give_the_same_shapes(model, server, where) -> None:  # type: ignore[no-untyped-def]
    backend = chat_backend(model) if where == "local" else chat_backend(server.url)
    assert isinstance(backend, LocalChat if where == "local" else RemoteChat)
    body = {"messages": MESSAGES, "tools": TOOLS, "tool_choice": "required", "seed": 0}
    answer = backend.complete(body)
    assert answer["object"] == "chat.completion" and answer["choices"][0]["finish_reason"] == "tool_calls"
    check_calls(answer["choices"][0]["message"]["tool_calls"])
    chunks = list(backend.stream({**body, "stream_options": {"include_usage": True}}))
    deltas = [d for c in chunks for ch in c["choices"] for d in ch["delta"].get("tool_calls", [])]
    assembled = {"id": deltas[0]["id"], "function": {"name": deltas[0]["function"]["name"], "arguments": ""}}
    for d in deltas:
        assembled["function"]["arguments"] += d["function"].get("arguments", "")
    check_calls([assembled])
    assert chunks[-1]["usage"]["total_tokens"] > 0 and chunks[-1]["choices"] == []
    with pytest.raises(dlmprompt.DLMPromptError, match="tool_choice"):
        backend.complete({**body, "tool_choice": "sometimes"})


def test_langchain_adapter_against_a_real_server(server) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("langchain_core")
    from langchain_core.tools import tool
    from pydantic import BaseModel

    from dlmprompt.integrations.langchain import ChatDLMPrompt

    @tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    class City(BaseModel):
        name: str
        population: int

    llm = ChatDLMPrompt(model=server.url, seed=0)
    msg = llm.bind_tools([add], tool_choice="any").invoke("What is 2 + 40?")
    (call,) = msg.tool_calls
    assert call["name"] == "add" and call["id"].startswith("call_")
    jsonschema.validate(call["args"], add.tool_call_schema.model_json_schema())
    for method in ("json_schema", "function_calling", "json_mode"):
        out = llm.with_structured_output(City, method=method).invoke("Lisbon has 545,000 people.")
        assert isinstance(out, City)
    raw = llm.with_structured_output(City, include_raw=True).invoke("Lisbon")
    assert isinstance(raw["parsed"], City) and raw["parsing_error"] is None and raw["raw"].usage_metadata
    assert llm.bind(regex=r"[0-9]{4}").invoke("The year:").content.isdigit()
    assert llm.bind(choice=["yes", "no"]).invoke("Is Lisbon in Portugal?").content in ("yes", "no")
    streamed = list(llm.bind_tools([add], tool_choice="add").stream("Add 1 and 2"))
    full = streamed[0]
    for c in streamed[1:]:
        full = full + c
    (call,) = full.tool_calls
    assert call["name"] == "add"
    jsonschema.validate(call["args"], add.tool_call_schema.model_json_schema())


def test_stop_cuts_text_answers_and_no_op_fields_are_checked(client) -> None:  # type: ignore[no-untyped-def]
    ask = {"model": "m", "messages": MESSAGES, "max_tokens": 24, "seed": 5}
    full = client.chat.completions.create(**ask).choices[0].message.content
    assert len(full) > 2
    stop = full[2:4]
    r = client.chat.completions.create(**ask, stop=[stop])
    assert r.choices[0].message.content == full[: full.find(stop)] and r.choices[0].finish_reason == "stop"
    streamed = client.chat.completions.create(**ask, stop=stop, stream=True)
    text = "".join(ch.delta.content or "" for c in streamed for ch in c.choices)
    assert text == full[: full.find(stop)]
    # hints that do not change the answer are accepted; penalties and logit_bias are guidance terms
    client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=4, store=False, frequency_penalty=0)
    biased = client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=4, logit_bias={"5": 10})
    assert isinstance(biased.choices[0].message.content, str)
    with pytest.raises(openai.BadRequestError, match="logit_bias"):
        client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=4, logit_bias={"x": 10})


BENCH = bench_function_schemas()


@pytest.mark.skipif(not BENCH, reason="../shared/data/jsonschemabench is not here")
def test_server_calls_under_real_function_schemas_drawn_by_hypothesis(client) -> None:  # type: ignore[no-untyped-def]
    from hypothesis import HealthCheck, assume, given, settings
    from hypothesis import strategies as st

    @settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        picks=st.lists(st.integers(0, len(BENCH) - 1), min_size=1, max_size=3, unique=True),
        parallel=st.booleans(),
        seed=st.integers(0, 99),
    )
    def run(picks, parallel, seed) -> None:  # type: ignore[no-untyped-def]
        tools = [{"type": "function", "function": {"name": f"tool_{i}", "parameters": BENCH[i]}} for i in picks]
        try:
            r = client.chat.completions.create(
                model="m",
                messages=MESSAGES,
                tools=tools,
                tool_choice="required",
                parallel_tool_calls=parallel,
                max_tokens=6,
                seed=seed,
            )
        except openai.BadRequestError as exc:  # a schema the compiler refuses, with its reason
            assert exc.code in ("bad_tools", "compile_error", "canvas_too_large", "grammar_too_large", "too_many_slots")
            assume(False)
        calls = r.choices[0].message.tool_calls
        check_calls(calls, {t["function"]["name"]: t["function"]["parameters"] for t in tools})
        assert len(calls) == 1 or parallel

    run()


def test_grounded_tool_arguments_are_spans_of_the_conversation(client) -> None:  # type: ignore[no-untyped-def]
    question = "Create a customer named Hello Group, a technology company."
    customer = {
        "type": "function",
        "function": {
            "name": "create_customer",
            "parameters": {
                "type": "object",
                "properties": {"customer_name": {"type": "string"}},
                "required": ["customer_name"],
            },
        },
    }
    for seed in range(3):
        r = client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": question}],
            tools=[customer, WEATHER],
            tool_choice="required",
            extra_body={"grounded": {"sources": [question], "whole_words": True}},
            seed=seed,
        )
        (call,) = r.choices[0].message.tool_calls
        args = json.loads(call.function.arguments)
        schema = SCHEMAS.get(call.function.name) or customer["function"]["parameters"]
        jsonschema.validate(args, schema)
        assert set(args) <= set(schema["properties"])  # no argument the tool does not name
        for key, value in args.items():
            if key != "unit":  # an enum: not a free string
                assert value and value in question, (key, value)


def test_review_edges_stop_on_constraints_split_stops_and_bad_shapes(client, model) -> None:  # type: ignore[no-untyped-def]
    from dlmprompt.serving.chat import Chunks

    # a stop sequence never cuts a constrained answer (it would no longer satisfy its constraint)
    schema = {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"],
    }
    rf = {"type": "json_schema", "json_schema": {"name": "ab", "schema": schema}}
    r = client.chat.completions.create(model="m", messages=MESSAGES, response_format=rf, stop=[","], seed=0)
    jsonschema.validate(json.loads(r.choices[0].message.content), schema)
    # a stop sequence split across two deltas is held back, not leaked
    chunks = Chunks("x", 0, "m", stop=["END"])
    sent = [chunks.text(t) for t in ("abcE", "NDxyz")]
    assert [c["choices"][0]["delta"]["content"] for c in sent if c] == ["abc"] and chunks.stopped
    chunks = Chunks("x", 0, "m", stop=["END"])
    sent = [chunks.text("abcE"), chunks.text("Fgh", final=True)]
    assert "".join(c["choices"][0]["delta"]["content"] for c in sent if c) == "abcEFgh"
    # stop="" is no stop
    full = client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=8, seed=1).choices[0].message
    again = client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=8, seed=1, stop="")
    assert again.choices[0].message.content == full.content
    # bad shapes are 400s that name the field
    bad_history = [
        *MESSAGES,
        {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "add", "arguments": "{x"}}]},
    ]
    with pytest.raises(openai.BadRequestError, match="not JSON"):
        client.chat.completions.create(model="m", messages=bad_history, tools=TOOLS)
    with pytest.raises(openai.BadRequestError, match="tool_choice as an object"):
        client.chat.completions.create(
            model="m", messages=MESSAGES, tools=TOOLS, tool_choice={"type": "function", "function": "add"}
        )
    scalar = {"type": "function", "function": {"name": "s", "parameters": {"type": "string"}}}
    with pytest.raises(openai.BadRequestError, match="must describe an object"):
        client.chat.completions.create(model="m", messages=MESSAGES, tools=[scalar])
    # a tool without parameters takes an object of no arguments
    bare = {"type": "function", "function": {"name": "ping"}}
    r = client.chat.completions.create(model="m", messages=MESSAGES, tools=[bare], tool_choice="required")
    assert json.loads(r.choices[0].message.tool_calls[0].function.arguments) == {}


def test_a_stream_left_early_stops_its_generation(model) -> None:  # type: ignore[no-untyped-def]
    import threading

    backend = LocalChat(model)
    for _ in backend.stream({"messages": MESSAGES, "max_tokens": 48, "seed": 0}):
        break  # the generator closes: the worker sees it at its next step
    workers = [t for t in threading.enumerate() if t.name == "dlmprompt-chat-stream"]
    for t in workers:
        t.join(120)
    assert not any(t.is_alive() for t in workers)
    assert backend.lock.acquire(timeout=120)  # the model is free again
    backend.lock.release()
