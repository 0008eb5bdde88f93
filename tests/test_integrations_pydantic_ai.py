"""pydantic-ai over dlmprompt (:mod:`dlmprompt.integrations.pydantic_ai`), in process and against a
``background()`` server: every output mode gives a valid model, streams stream, and a tool loop
ends with a call that names a given tool with arguments valid under its schema.

The embedded model is tiny, so the content is nonsense; the structure is what is checked."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import jsonschema
import pytest
from pydantic import BaseModel, Field

pytest.importorskip("pydantic_ai")

from pydantic_ai import Agent, NativeOutput, PromptedOutput, RunContext, ToolOutput
from pydantic_ai.exceptions import ModelHTTPError
from pydantic_ai.messages import ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.tools import ToolDefinition

from dlmprompt.integrations.pydantic_ai import DLMPromptModel, dlmprompt_profile
from dlmprompt.serving.server import background

SETTINGS: dict[str, Any] = {"max_tokens": 12}


class Person(BaseModel):
    """A person on record."""

    name: str = Field(max_length=20)
    age: int = Field(ge=0, le=130)


PERSON_SCHEMA = Person.model_json_schema()


@pytest.fixture(scope="module", params=["in_process", "server"])
def model(request: pytest.FixtureRequest, denoiser: Any) -> DLMPromptModel:
    if request.param == "in_process":
        return DLMPromptModel(denoiser)
    srv = request.getfixturevalue("server")
    return DLMPromptModel(srv.url)


def _valid_person(output: Any) -> None:
    assert isinstance(output, Person)
    jsonschema.validate(output.model_dump(mode="json"), PERSON_SCHEMA)


def _responses(messages: list[Any]) -> list[ModelResponse]:
    return [m for m in messages if isinstance(m, ModelResponse)]


# ---------------------------------------------------------------------------------------------- set-up
def test_profile_is_native_structured_output() -> None:
    profile = dlmprompt_profile()
    assert profile["supports_json_schema_output"] is True
    assert profile["supports_tools"] is True
    assert profile["default_structured_output_mode"] == "native"


def test_model_kinds(denoiser: Any, server: background) -> None:
    local = DLMPromptModel(denoiser)
    assert local.backend is not None and local.system == "dlmprompt"
    embedded = DLMPromptModel()  # no argument: the embedded model, in process
    assert embedded.backend is not None and embedded.model_name == "dlmprompt-default"
    assert type(embedded.backend.denoiser) is type(denoiser)
    assert local.profile.get("default_structured_output_mode") == "native"
    remote = DLMPromptModel(server.url + "/")
    assert remote.backend is None and remote.base_url.rstrip("/") == server.url + "/v1"
    assert remote.profile.get("supports_json_schema_output") is True


def test_integrations_package_does_not_import_pydantic_ai() -> None:
    code = "import sys, dlmprompt.integrations, dlmprompt.integrations.core; print('pydantic_ai' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------------------------------- output modes
def test_default_output_type_is_native_and_valid(model: DLMPromptModel) -> None:
    result = Agent(model, output_type=Person).run_sync("Ann Lee is 41.", model_settings=SETTINGS)
    _valid_person(result.output)
    (response,) = _responses(result.all_messages())
    (part,) = response.parts
    assert isinstance(part, TextPart)  # native: the answer is the text, not an output tool call
    jsonschema.validate(json.loads(part.content), PERSON_SCHEMA)


@pytest.mark.parametrize("marker", [NativeOutput, ToolOutput, PromptedOutput])
def test_output_markers_give_valid_models(model: DLMPromptModel, marker: Any) -> None:
    result = Agent(model, output_type=marker(Person)).run_sync("Ann Lee is 41.", model_settings=SETTINGS)
    _valid_person(result.output)
    (response,) = _responses(result.all_messages())  # valid at the first try: no retry request
    if marker is ToolOutput:
        (call,) = response.parts
        assert isinstance(call, ToolCallPart) and call.tool_name == "final_result"
        jsonschema.validate(call.args_as_dict(), PERSON_SCHEMA)
    else:
        (text,) = response.parts
        assert isinstance(text, TextPart)
        jsonschema.validate(json.loads(text.content), PERSON_SCHEMA)


def test_parallel_tool_calls_are_each_valid(model: DLMPromptModel) -> None:
    agent = Agent(model, output_type=ToolOutput(Person))
    result = agent.run_sync("Ann Lee is 41.", model_settings={**SETTINGS, "parallel_tool_calls": True})
    _valid_person(result.output)
    (response,) = _responses(result.all_messages())
    assert response.parts and all(isinstance(p, ToolCallPart) for p in response.parts)
    for call in response.parts:
        assert isinstance(call, ToolCallPart) and call.tool_name == "final_result"
        jsonschema.validate(call.args_as_dict(), PERSON_SCHEMA)


def test_bad_request_is_an_http_400(model: DLMPromptModel) -> None:
    with pytest.raises(ModelHTTPError) as info:
        Agent(model).run_sync("hi", model_settings={**SETTINGS, "extra_body": {"not_a_field": 1}})
    assert info.value.status_code == 400
    assert "not_a_field" in str(info.value)


# ---------------------------------------------------------------------------------------------- streaming
def test_stream_text(model: DLMPromptModel) -> None:
    async def run() -> tuple[list[str], str, Any]:
        async with Agent(model).run_stream("Say hello.", model_settings=SETTINGS) as stream:
            deltas = [d async for d in stream.stream_text(delta=True)]
            return deltas, await stream.get_output(), stream.usage

    deltas, output, usage = asyncio.run(run())
    assert deltas and "".join(deltas) == output
    assert usage.output_tokens > 0  # stream_options.include_usage was honoured


def test_stream_structured_output(model: DLMPromptModel) -> None:
    async def run() -> tuple[list[Any], Any]:
        async with Agent(model, output_type=Person).run_stream("Ann Lee is 41.", model_settings=SETTINGS) as stream:
            partial = [p async for p in stream.stream_output(debounce_by=None)]
            return partial, await stream.get_output()

    partial, output = asyncio.run(run())
    assert partial and all(isinstance(p, Person) for p in partial)
    _valid_person(output)


# ---------------------------------------------------------------------------------------------- tools
def _tool_agent(model: DLMPromptModel, seen: dict[str, Any], output: Any) -> Agent[None, Person]:
    """An agent with one tool, offered at the first step only (where it is forced by name), then
    the final answer (an output tool call, or native text): so the loop is two steps, and ends."""
    agent = Agent(model, output_type=output)

    async def first_step_only(ctx: RunContext[None], tool: ToolDefinition) -> ToolDefinition | None:
        seen[tool.name] = tool.parameters_json_schema
        return tool if ctx.run_step <= 1 else None

    @agent.tool_plain(prepare=first_step_only)
    def lookup(city: str, limit: int = 1) -> str:
        """Find a person who lives in a city."""
        seen.setdefault("calls", []).append((city, limit))
        return "Ann Lee, 41"

    return agent


def _settings(ctx: RunContext[None]) -> dict[str, Any]:
    return {**SETTINGS, "tool_choice": ["lookup"] if ctx.run_step <= 1 else "auto"}


def _check_tool_loop(messages: list[Any], seen: dict[str, Any], output: Any, marker: Any) -> None:
    _valid_person(output)
    first, last = _responses(messages)
    (call,) = first.parts
    assert isinstance(call, ToolCallPart) and call.tool_name == "lookup"
    jsonschema.validate(call.args_as_dict(), seen["lookup"])
    assert seen["calls"] == [(call.args_as_dict()["city"], call.args_as_dict().get("limit", 1))]  # the tool ran
    (answer,) = last.parts
    if marker is ToolOutput:
        assert isinstance(answer, ToolCallPart) and answer.tool_name == "final_result"
        jsonschema.validate(answer.args_as_dict(), PERSON_SCHEMA)
    else:
        assert isinstance(answer, TextPart)
        jsonschema.validate(json.loads(answer.content), PERSON_SCHEMA)
    returns = [p for m in messages for p in getattr(m, "parts", []) if isinstance(p, ToolReturnPart)]
    lookup_return = [r for r in returns if r.tool_name == "lookup"]
    assert len(lookup_return) == 1 and lookup_return[0].tool_call_id == call.tool_call_id
    assert lookup_return[0].content == "Ann Lee, 41"


@pytest.mark.parametrize("marker", [ToolOutput, NativeOutput])
def test_tool_loop(model: DLMPromptModel, marker: Any) -> None:
    seen: dict[str, Any] = {}
    agent = _tool_agent(model, seen, marker(Person))
    result = agent.run_sync("Who lives in Paris?", model_settings=_settings)
    _check_tool_loop(result.all_messages(), seen, result.output, marker)


def test_tool_loop_streamed(model: DLMPromptModel) -> None:
    seen: dict[str, Any] = {}
    agent = _tool_agent(model, seen, ToolOutput(Person))

    async def run() -> tuple[list[Any], Any]:
        async with agent.run_stream("Who lives in Paris?", model_settings=_settings) as stream:
            output = await stream.get_output()
            return stream.all_messages(), output

    messages, output = asyncio.run(run())
    _check_tool_loop(messages, seen, output, ToolOutput)
