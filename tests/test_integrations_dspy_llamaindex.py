"""DSPy and LlamaIndex over dlmprompt (:mod:`dlmprompt.integrations.dspy`,
:mod:`dlmprompt.integrations.llamaindex`), in process and against a ``background()`` server.

DSPy: typed signatures under the ``JSONAdapter`` give values of their types (an ``int``, a
``bool``, one of a ``Literal``'s values, a pydantic object, a ``list[str]``), the ``ChatAdapter``
falls back to that exact path, and the engine interface raises no deprecation warning. LlamaIndex:
complete / chat / streams / async chat answer, and ``structured_predict`` / ``as_structured_llm``
give objects valid under the class's schema. Inputs a text model cannot read raise clear errors.

The embedded model is tiny, so the content is nonsense; the structure is what is checked. Budgets
are small (a few tokens a value) to keep the file quick on a CPU."""

from __future__ import annotations

import asyncio
import base64
import enum
import json
import subprocess
import sys
import warnings
from typing import Any, Literal

import jsonschema
import pytest
from pydantic import BaseModel, Field

from dlmprompt.errors import DLMPromptError
from dlmprompt.serving.server import background

SENTIMENTS = ("positive", "negative", "neutral")
TEXT_TOKENS = 8  # a text answer's budget
VALUE_TOKENS = 4  # each free JSON value's budget


class Color(str, enum.Enum):
    red = "red"
    green = "green"


class Address(BaseModel):
    city: str = Field(max_length=12)
    zip: int = Field(ge=0, le=99999)


class Person(BaseModel):
    """A person on record."""

    name: str = Field(max_length=16)
    age: int = Field(ge=0, le=130)
    kind: Literal["customer", "staff"]
    color: Color
    address: Address


PERSON_SCHEMA = Person.model_json_schema()
ADDRESS_SCHEMA = Address.model_json_schema()
TINY_PNG = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
        "0000000d49444154789c6300010000050001ffff03000000000049454e44ae426082"
    )
).decode()


def _valid_person(obj: Any) -> None:
    assert isinstance(obj, Person)
    jsonschema.validate(obj.model_dump(mode="json"), PERSON_SCHEMA)


@pytest.fixture(scope="module", params=["in_process", "server"])
def where(request: pytest.FixtureRequest, denoiser: Any) -> Any:
    """What the adapters are built on: the loaded model, or the server's URL."""
    return denoiser if request.param == "in_process" else request.getfixturevalue("server").url


def test_integrations_package_imports_no_framework() -> None:
    code = "import sys, dlmprompt.integrations; print(sorted({'dspy', 'llama_index'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ============================================================================================== DSPy
class Typed(BaseModel):
    """Every output type the DSPy tests check, in one answer (one generation per backend)."""

    count: int
    flag: bool
    label: Literal["positive", "negative", "neutral"]
    tags: list[str]


def _dspy() -> Any:
    return pytest.importorskip("dspy")


def _typed_signature(dspy: Any) -> Any:
    class Review(dspy.Signature):
        """Read a review."""

        review: str = dspy.InputField()
        count: int = dspy.OutputField()
        flag: bool = dspy.OutputField()
        label: Literal["positive", "negative", "neutral"] = dspy.OutputField()
        address: Address = dspy.OutputField()
        tags: list[str] = dspy.OutputField()

    return Review


def _sentiment_signature(dspy: Any) -> Any:
    class Sentiment(dspy.Signature):
        """Classify."""

        text: str = dspy.InputField()
        label: Literal["positive", "negative", "neutral"] = dspy.OutputField()

    return Sentiment


def _make_lm(model: Any) -> Any:
    _dspy()
    from dlmprompt.integrations.dspy import DLMPromptLM

    return DLMPromptLM(model, max_tokens=TEXT_TOKENS, value_tokens=VALUE_TOKENS, seed=0)


@pytest.fixture(scope="module")
def lm(where: Any) -> Any:
    """A DSPy LM in process, then one on the server (the tests that run on both)."""
    return _make_lm(where)


@pytest.fixture(scope="module")
def local_lm(denoiser: Any) -> Any:
    return _make_lm(denoiser)


@pytest.fixture(scope="module")
def remote_lm(server: background) -> Any:
    return _make_lm(server.url)


def test_dspy_lm_is_an_engine_lm(lm: Any) -> None:
    dspy = _dspy()
    from dlmprompt.integrations.dspy import DLMPromptEngine

    assert isinstance(lm, dspy.LM)
    assert isinstance(lm.engine, DLMPromptEngine)
    assert lm.supports_response_schema and "response_format" in lm.supported_params
    assert lm.kwargs["max_tokens"] == TEXT_TOKENS and lm.kwargs["seed"] == 0


def test_dspy_json_adapter_gives_typed_values(lm: Any) -> None:
    dspy = _dspy()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with dspy.context(lm=lm, adapter=dspy.JSONAdapter()):
            out = dspy.Predict(_typed_signature(dspy))(review="Great phone, two stars.")
    assert isinstance(out.count, int) and not isinstance(out.count, bool)
    assert isinstance(out.flag, bool)
    assert out.label in SENTIMENTS
    assert isinstance(out.address, Address)
    jsonschema.validate(out.address.model_dump(mode="json"), ADDRESS_SCHEMA)
    assert isinstance(out.tags, list) and all(isinstance(t, str) for t in out.tags)
    # the answer DSPy parsed is JSON valid under the signature's own schema
    (text,) = lm.history[-1]["outputs"]
    answer = json.loads(text)
    assert set(answer) == {"count", "flag", "label", "address", "tags"}
    jsonschema.validate(answer["address"], ADDRESS_SCHEMA)
    jsonschema.validate({k: answer[k] for k in Typed.model_fields}, Typed.model_json_schema())
    legacy = [w for w in caught if issubclass(w.category, DeprecationWarning) and "dspy" in str(w.message).lower()]
    assert not legacy, [str(w.message) for w in legacy]


def test_dspy_chat_adapter_falls_back_to_the_exact_path(local_lm: Any) -> None:
    dspy = _dspy()
    lm = local_lm
    before = len(lm.history)
    with dspy.context(lm=lm, adapter=dspy.ChatAdapter()):
        out = dspy.Predict(_sentiment_signature(dspy))(text="I love it")
    assert out.label in SENTIMENTS
    calls = lm.history[before:]
    # the free-text answer of the tiny model does not parse, so DSPy retried with a JSON schema
    assert len(calls) == 2
    assert "response_format" not in calls[0]["kwargs"] and "response_format" in calls[1]["kwargs"]
    assert json.loads(calls[1]["outputs"][0])["label"] in SENTIMENTS


def test_dspy_async_predict_over_http(remote_lm: Any) -> None:
    dspy = _dspy()
    lm = remote_lm

    async def run() -> Any:
        with dspy.context(lm=lm, adapter=dspy.JSONAdapter()):
            return await dspy.Predict(_sentiment_signature(dspy)).acall(text="Meh.")

    assert asyncio.run(run()).label in SENTIMENTS


def test_dspy_plain_call_and_stream(local_lm: Any) -> None:
    _dspy()
    from dspy import lm15

    lm = local_lm
    (text,) = lm("Say hi")
    assert isinstance(text, str)
    config = lm15.Config(max_tokens=6, seed=1)
    request = lm15.Request(model=lm.model, messages=(lm15.Message.user("Hi"),), config=config)
    events = list(lm.engine.stream(request))
    assert events[0].type == "start" and events[-1].type == "end"
    assert events[-1].finish_reason in {"stop", "length"}
    assert events[-1].usage.output_tokens <= 6
    streamed = "".join(e.delta.text for e in events if e.type == "delta")
    assert streamed == lm.engine.complete(request).text


def test_dspy_native_tool_call_names_a_tool_with_valid_arguments(local_lm: Any) -> None:
    dspy = _dspy()
    lm = local_lm

    def get_weather(city: str, days: int) -> str:
        """Get the weather forecast for a city."""
        return "sunny"

    fields = {
        "question": (str, dspy.InputField()),
        "tools": (list[dspy.Tool], dspy.InputField()),
        "calls": (dspy.ToolCalls, dspy.OutputField()),
    }
    Ask = dspy.make_signature(fields, "Answer with tools.")
    tool = dspy.Tool(get_weather)
    with dspy.context(lm=lm, adapter=dspy.JSONAdapter()):
        out = dspy.Predict(Ask)(question="Weather in Paris?", tools=[tool])
    assert "tools" in lm.history[-1]["kwargs"]  # native function calling, not JSON text
    assert out.calls.tool_calls
    for call in out.calls.tool_calls:
        assert call.name == "get_weather"
        jsonschema.validate(call.args, {"type": "object", "properties": tool.args, "required": ["city", "days"]})


def test_dspy_refuses_images_and_oversized_requests(lm: Any) -> None:
    dspy = _dspy()
    from dlmprompt.integrations.dspy import RequestRefused, UnsupportedInput

    class Describe(dspy.Signature):
        image: dspy.Image = dspy.InputField()
        caption: str = dspy.OutputField()

    with dspy.context(lm=lm, adapter=dspy.JSONAdapter()):
        with pytest.raises(UnsupportedInput, match="text only") as exc:
            dspy.Predict(Describe)(image=dspy.Image(url="data:image/png;base64," + TINY_PNG))
    assert isinstance(exc.value, DLMPromptError) and isinstance(exc.value, dspy.utils.exceptions.LMError)
    with pytest.raises(RequestRefused, match="max_tokens"):
        lm("hi", max_tokens=100_000)


def test_dspy_rejects_a_model_string() -> None:
    _dspy()
    from dlmprompt.integrations.dspy import DLMPromptLM

    with pytest.raises(DLMPromptError, match="not a DSPy model string"):
        DLMPromptLM("dlmprompt/default")


# ============================================================================================== LlamaIndex
def _li() -> Any:
    return pytest.importorskip("llama_index.core")


def _make_llm(model: Any) -> Any:
    _li()
    from dlmprompt.integrations.llamaindex import DLMPromptLLM

    return DLMPromptLLM(model, max_tokens=TEXT_TOKENS, value_tokens=VALUE_TOKENS, seed=0)


@pytest.fixture(scope="module")
def llm(where: Any) -> Any:
    """A LlamaIndex LLM in process, then one on the server (the tests that run on both)."""
    return _make_llm(where)


def _user(text: str) -> list[Any]:
    from llama_index.core.llms import ChatMessage

    return [ChatMessage(role="user", content=text)]


def test_llamaindex_metadata(llm: Any) -> None:
    _li()
    from llama_index.core.llms import LLM

    assert isinstance(llm, LLM)
    meta = llm.metadata
    assert meta.is_chat_model and meta.num_output == TEXT_TOKENS and meta.model_name == "dlmprompt-default"


def test_llamaindex_complete_and_chat(llm: Any) -> None:
    done = llm.complete("The weather today")
    assert isinstance(done.text, str) and done.raw["usage"]["completion_tokens"] <= TEXT_TOKENS
    reply = llm.chat(_user("Hello"))
    assert reply.message.role.value == "assistant" and isinstance(reply.message.content, str)
    assert reply.raw["choices"][0]["finish_reason"] in {"stop", "length"}


def test_llamaindex_streams(llm: Any) -> None:
    parts = list(llm.stream_complete("Once upon a time"))
    assert parts and "".join(p.delta for p in parts) == parts[-1].text
    chats = list(llm.stream_chat(_user("Tell me a story")))
    assert chats and "".join(c.delta for c in chats) == chats[-1].message.content
    assert all(c.message.role.value == "assistant" for c in chats)


def test_llamaindex_achat(llm: Any) -> None:
    reply = asyncio.run(llm.achat(_user("Hi there"), max_tokens=4))
    assert isinstance(reply.message.content, str) and reply.raw["usage"]["completion_tokens"] <= 4
    # dlmprompt's constraint extras pass per call, exact as ever
    picked = asyncio.run(llm.acomplete("Is the sky blue?", choice=["yes", "no"]))
    assert picked.text in {"yes", "no"}


def test_llamaindex_structured_predict(llm: Any) -> None:
    _li()
    from llama_index.core.prompts import PromptTemplate

    person = llm.structured_predict(Person, PromptTemplate("{who} is on our staff."), who="Ann Lee (41)")
    _valid_person(person)


def test_llamaindex_as_structured_llm(llm: Any) -> None:
    reply = llm.as_structured_llm(Person).chat(_user("Ann Lee (41), staff, Paris 75001."))
    _valid_person(reply.raw)
    assert Person.model_validate_json(reply.message.content) == reply.raw


def test_llamaindex_stream_structured_predict(denoiser: Any) -> None:
    _li()
    from llama_index.core.prompts import PromptTemplate

    items = list(_make_llm(denoiser).stream_structured_predict(Person, PromptTemplate("Record of {who}:"), who="Bo"))
    _valid_person(items[-1])
    assert len(items) > 1  # partial objects came before the whole one


def test_llamaindex_astructured_predict_over_http(server: background) -> None:
    _li()
    from llama_index.core.prompts import PromptTemplate

    llm = _make_llm(server.url)
    _valid_person(asyncio.run(llm.astructured_predict(Person, PromptTemplate("Record of {who}:"), who="Bo")))


def test_llamaindex_refuses_images_and_unknown_options(llm: Any) -> None:
    _li()
    from llama_index.core.llms import ChatMessage, ImageBlock, TextBlock

    from dlmprompt.integrations.llamaindex import UnsupportedInput

    blocks = [TextBlock(text="What is this?"), ImageBlock(image=base64.b64decode(TINY_PNG))]
    image = ChatMessage(role="user", blocks=blocks)
    with pytest.raises(UnsupportedInput, match="image block"):
        llm.chat([image])
    with pytest.raises(UnsupportedInput, match="does not take"):
        llm.complete("hi", logprobs=True)
    assert issubclass(UnsupportedInput, DLMPromptError)


def test_llamaindex_stream_chat_carries_tool_calls(llm: Any) -> None:
    import json

    import jsonschema

    tool = {
        "type": "function",
        "function": {
            "name": "lookup",
            "parameters": {
                "type": "object",
                "properties": {"city": {"enum": ["Lisbon", "Oslo"]}},
                "required": ["city"],
            },
        },
    }
    chats = list(llm.stream_chat(_user("Weather in Oslo?"), tools=[tool], tool_choice="required"))
    (call,) = chats[-1].message.additional_kwargs["tool_calls"]
    assert call["function"]["name"] == "lookup" and call["id"].startswith("call_")
    jsonschema.validate(json.loads(call["function"]["arguments"]), tool["function"]["parameters"])
