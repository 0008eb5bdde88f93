"""Stock OpenAI-based clients against a real ``dlmprompt serve`` (a ``background()`` server on a
loopback port), unchanged: outlines' vLLM model (``structured_outputs``), instructor in
``JSON_SCHEMA`` mode, and pydantic-ai's own ``OpenAIChatModel`` with a custom ``base_url``. Each
answer must be valid under its constraint at the first try (no retries)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any, Literal

import jsonschema
import pytest
from pydantic import BaseModel, Field

pytest.importorskip("openai")

import openai

import dlmprompt
from dlmprompt.serving.server import background

MODEL = "dlmprompt-default"

try:
    from outlines.exceptions import BadRequestError as OutlinesBadRequest
except ImportError:  # outlines missing: its tests skip
    OutlinesBadRequest = Exception


class Person(BaseModel):
    """A person on record."""

    name: str = Field(max_length=20)
    age: int = Field(ge=0, le=130)
    kind: Literal["customer", "staff"]


SCHEMA = Person.model_json_schema()


@pytest.fixture(scope="module")
def server() -> Iterator[background]:
    with background(dlmprompt.load()) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: background) -> Any:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)


def _valid(data: Any) -> None:
    jsonschema.validate(data, SCHEMA)
    Person.model_validate(data)


# ---------------------------------------------------------------------------------------------- outlines
@pytest.fixture(scope="module")
def vllm(client: Any) -> Any:
    outlines = pytest.importorskip("outlines")
    return outlines.from_vllm(client, MODEL)


def test_outlines_pydantic_output(vllm: Any) -> None:
    out = vllm("Ann Lee (41) is on our staff. Record:", Person, max_tokens=12)
    _valid(json.loads(out))


def test_outlines_literal_choice(vllm: Any) -> None:
    out = vllm("Is Ann on our staff? Answer:", Literal["yes", "no"], max_tokens=2)
    assert out in ("yes", "no")


def test_outlines_regex(vllm: Any) -> None:
    from outlines.types import Regex

    out = vllm("Ann's room number:", Regex(r"[0-9]{3}"), max_tokens=4)
    assert re.fullmatch(r"[0-9]{3}", out)


def test_outlines_regex_stream(vllm: Any) -> None:
    from outlines.types import Regex

    pieces = list(vllm.stream("A date:", Regex(r"20[0-9]{2}-[01][0-9]"), max_tokens=8))
    assert re.fullmatch(r"20[0-9]{2}-[01][0-9]", "".join(pieces))


def test_outlines_json_schema_with_whitespace_pattern(vllm: Any) -> None:
    from outlines.types import JsonSchema

    # accepted; dlmprompt's compact layout (", " and ": ") is what "[ ]?" allows anyway
    out = vllm("Record:", JsonSchema(SCHEMA, whitespace_pattern=r"[ ]?"), max_tokens=12)
    _valid(json.loads(out))


# ---------------------------------------------------------------------------------------------- instructor
def test_instructor_json_schema_mode(client: Any) -> None:
    instructor = pytest.importorskip("instructor")
    patched = instructor.from_openai(client, mode=instructor.Mode.JSON_SCHEMA)
    person = patched.chat.completions.create(
        model=MODEL,
        response_model=Person,
        messages=[{"role": "user", "content": "Ann Lee (41) is on our staff."}],
        max_retries=0,
        max_tokens=12,
    )
    assert isinstance(person, Person)
    _valid(person.model_dump(mode="json"))


# ---------------------------------------------------------------------------------------------- pydantic-ai
@pytest.mark.parametrize("mode", ["default", "native"])
def test_pydantic_ai_stock_openai_model(server: background, mode: str) -> None:
    pytest.importorskip("pydantic_ai")
    from pydantic_ai import Agent, NativeOutput
    from pydantic_ai.messages import ModelResponse
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    model = OpenAIChatModel(MODEL, provider=OpenAIProvider(base_url=server.url + "/v1", api_key="x"))
    output_type: Any = Person if mode == "default" else NativeOutput(Person)
    result = Agent(model, output_type=output_type).run_sync("Ann Lee (41) is on our staff.")
    assert isinstance(result.output, Person)
    _valid(result.output.model_dump(mode="json"))
    # valid at the first try: one model response, no retry
    assert len([m for m in result.all_messages() if isinstance(m, ModelResponse)]) == 1
