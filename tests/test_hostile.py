"""Hostile input that used to get through: each refused quickly with a 4xx in the documented
``{"error": {"message", "type", "code"}}`` shape, the server healthy afterwards."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from dlmprompt import CompileError, Prompt, SchemaError, Tokenizer, compile, slot
from dlmprompt.serving.server import create_app
from dlmprompt.testing import RandomDenoiser

TOK = Tokenizer.bytes_level()


@pytest.fixture(scope="module")
def client():  # type: ignore[no-untyped-def]
    with TestClient(create_app(RandomDenoiser(TOK)), raise_server_exceptions=False) as c:
        yield c


def _refused(resp, status: int, words: str) -> None:  # type: ignore[no-untyped-def]
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "code"} and words in err["message"], err


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_in_a_schema(client, value) -> None:  # type: ignore[no-untyped-def]
    schema = f'{{"type": "integer", "maximum": {value}}}'
    body = (
        '{"model": "x", "messages": [{"role": "user", "content": "hi"}], "response_format": '
        f'{{"type": "json_schema", "json_schema": {{"name": "a", "schema": {schema}}}}}}}'
    )
    resp = client.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    _refused(resp, 400, "is not a JSON number")
    assert "/maximum" in resp.json()["error"]["message"]
    with pytest.raises(SchemaError, match="NaN and Infinity are not JSON"):
        compile(Prompt("x") + slot("a", schema={"enum": [1, float("nan")]}), TOK)


def test_a_huge_counted_repetition_is_refused_before_any_work(client) -> None:  # type: ignore[no-untyped-def]
    resp = client.post("/v1/completions", json={"model": "x", "prompt": "a", "regex": "x{0,100000}", "max_tokens": 8})
    _refused(resp, 400, "unrolls to more than 10,000 elements")
    resp = client.post("/v1/completions", json={"model": "x", "prompt": "a", "regex": "((ab){100}){200}"})
    _refused(resp, 400, "unrolls to more than")
    with pytest.raises(CompileError, match="use \\* or \\+ instead of a large"):
        compile(Prompt("x") + slot("a", regex="[0-9]{5000,20000}", max_tokens=4), TOK)
    compile(Prompt("x") + slot("a", regex="[a-z]{1,64}(-[a-z]{1,64}){0,8}", max_tokens=4), TOK)  # fine


def test_a_body_that_is_not_utf8_or_not_json(client) -> None:  # type: ignore[no-untyped-def]
    resp = client.post(
        "/v1/completions", content=b'{"model": "x", "prompt": "\xff\xfe"}', headers={"content-type": "application/json"}
    )
    _refused(resp, 400, "")
    resp = client.post("/v1/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert resp.status_code == 400 and "error" in resp.json()
    resp = client.get("/no/such/route")
    _refused(resp, 404, "Not Found")
    assert client.get("/health").json()["status"] == "ok"


LOOP = {"$ref": "#/$defs/a", "$defs": {"a": {"$ref": "#/$defs/a"}}}


@pytest.mark.parametrize(
    "extra",
    [
        {"grammar": 'start: start "a" | "b"'},  # left recursion: Earley takes it
        {"grammar": 'start: x | y\nx: "a"\ny: "a"'},  # ambiguous
        {"regex": "(a|a)*b"},  # an exponential backtracker's blow-up; one DFA here
        {"regex": "(x+x+)+y"},
        {"choice": [f"option{i}" for i in range(100_000)]},
        {"response_format": {"type": "json_schema", "json_schema": {"name": "loop", "schema": LOOP}}},
        {"prompt": "mask <|mask|> and pad <|pad|> in an anchor", "regex": "[a-z]{3}"},
    ],
    ids=["left-recursion", "ambiguous", "(a|a)*", "(x+x+)+", "choice-100k", "ref-loop", "special-tokens"],
)
def test_pathological_constraints_answer_or_refuse_cleanly(client, extra) -> None:  # type: ignore[no-untyped-def]
    body = {"model": "x", "prompt": "a", "max_tokens": 8, **extra}
    resp = client.post("/v1/completions", json=body)
    assert resp.status_code in (200, 400, 413), resp.text[:300]
    if resp.status_code in (400, 413):
        err = resp.json()["error"]
        assert set(err) == {"message", "type", "code"} and isinstance(err["code"], str) and err["message"], err
    else:
        assert isinstance(resp.json()["choices"][0]["text"], str)
    assert client.get("/health").json()["status"] == "ok"
