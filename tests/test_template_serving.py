"""Prompt templates outside Python: `dlmprompt fill` / `dlmprompt templates`, and templates on the
server (`POST /v1/generate {"template": ...}`, `--templates DIR`, `--allow-template-source`),
over a real socket with our client."""

from __future__ import annotations

import json
import re

import httpx
import jsonschema
import pytest
import torch
from helpers import check_result

import dlmprompt
from dlmprompt.cli import main
from dlmprompt.serving.client import RemoteError
from dlmprompt.serving.server import background

CUSTOM = """{#---
description: A yes / no answer about a fruit.
variables:
  fruit: {type: string}
example: {fruit: apple}
---#}
Is {{ fruit }} a fruit? {{ slot("answer", choice=["yes", "no"], max_tokens=2) }}
"""


@pytest.fixture(scope="module")
def den():  # type: ignore[no-untyped-def]
    return dlmprompt.load()


@pytest.fixture(scope="module")
def server(den, tmp_path_factory):  # type: ignore[no-untyped-def]
    folder = tmp_path_factory.mktemp("templates")
    (folder / "fruit.jinja").write_text(CUSTOM)
    with background(den, templates_dir=str(folder)) as srv:
        yield srv


@pytest.fixture(scope="module")
def open_server(den):  # type: ignore[no-untyped-def]
    with background(den, allow_template_source=True) as srv:
        yield srv


def test_fill_prints_the_filled_template(capsys) -> None:
    assert main(["fill", "multiple_choice", "--example", "--no-live"]) == 0
    out = capsys.readouterr().out
    assert "step   1" in out
    answer = out.rstrip().rsplit("\n", 1)[-1]
    assert re.fullmatch(r"Answer: [ABCD]", answer), answer


def test_fill_with_variables_prints_json(capsys, tmp_path) -> None:
    text = tmp_path / "review.txt"
    text.write_text("Great screen, terrible battery.")
    args = ["fill", "classify", "--var", f"text=@{text}", "--var", 'labels=["good", "bad", "mixed"]']
    assert main([*args, "--var", "rationale=before", "--json", "--seed", "3"]) == 0
    values = json.loads(capsys.readouterr().out)
    assert set(values) == {"label", "rationale"} and values["label"] in ("good", "bad", "mixed")
    assert "\n" not in values["rationale"] and values["rationale"]
    vars_file = tmp_path / "vars.json"
    vars_file.write_text(json.dumps(dlmprompt.template("extract_record").example))
    assert main(["fill", "extract_record", "--vars", str(vars_file), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)["record"]
    jsonschema.validate(record, dlmprompt.template("extract_record").example["schema"])
    assert set(record) == {"name", "age", "city"}  # the example schema takes no other property


def test_fill_a_template_file(capsys, tmp_path) -> None:
    path = tmp_path / "fruit.jinja"
    path.write_text(CUSTOM)
    assert main(["fill", str(path), "--var", "fruit=pear", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["answer"] in ("yes", "no")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["fill", "classify", "--var", "text=x"], "needs the variable.*'labels'.*--var NAME=VALUE"),
        (["fill", "classify", "--example", "--var", "labels=[oops"], "not JSON; labels is of type array"),
        (["fill", "classify", "--example", "--var", "colour=red"], "takes no variable 'colour'"),
        (["fill", "nope"], "no shipped template 'nope'"),
        (["fill", "missing.jinja"], "no such template file"),
        (["fill", "classify", "--example", "--var", "rationale=sideways"], "line 15: rationale is none, before"),
    ],
)
def test_fill_errors_say_what_to_change(args, message, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert re.search(message, err, re.S), err
    assert "Traceback" not in err


def test_templates_lists_the_library(capsys) -> None:
    assert main(["templates"]) == 0
    out = capsys.readouterr().out
    assert "classify: Classify a text" in out and "    labels (array): The label set" in out
    assert main(["templates", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {d["name"] for d in listed} == set(dlmprompt.prompt_template.template_names())


def test_server_fills_shipped_and_folder_templates(server, den) -> None:  # type: ignore[no-untyped-def]
    with dlmprompt.Client(server.url) as client:
        names = {t["name"] for t in client.templates()}
        assert {"classify", "fruit"} <= names
        t = dlmprompt.template("sql_select")
        result = client.fill("sql_select", t.example, seed=1)
        # the server rendered what the template renders here: the same canvas, every slot exact
        check_result(dlmprompt.compile(t.render(**t.example), den.tokenizer), result)
        assert result["table"] in t.example["tables"]
        result = client.fill("fruit", {"fruit": "plum"})
        assert result["answer"] in ("yes", "no") and result.text.startswith("Is plum a fruit? ")
        # the same seed gives what the rendered prompt gives in-process
        prompt = dlmprompt.Template.from_string(CUSTOM).render(fruit="plum")
        local = dlmprompt.generate(den, prompt, generator=torch.Generator().manual_seed(5))
        assert client.fill("fruit", {"fruit": "plum"}, seed=5).text == local.text


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"template": "nope"}, 404, "no shipped template 'nope'"),
        ({"template": "../secrets"}, 400, "a template name is"),
        ({"template": "classify", "variables": {"text": "x"}}, 400, "needs the variable.*labels"),
        ({"template": "classify", "variables": {"text": 3, "labels": ["a"]}}, 400, "'text' must be a string"),
        ({"template_source": "{{ slot('a', max_tokens=2) }}"}, 403, "--allow-template-source"),
        ({"template": "fruit", "prompt": {"parts": []}}, 400, "give one of prompt, template or template_source"),
        ({}, 400, "give one of prompt, template or template_source"),
    ],
)
def test_server_refuses_bad_template_requests_with_json_errors(server, body, status, message) -> None:  # type: ignore[no-untyped-def]
    resp = httpx.post(f"{server.url}/v1/generate", json=body, timeout=30)
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert re.search(message, err["message"]), err
    assert set(err) == {"message", "type", "code"}


def test_template_source_when_the_server_allows_it(open_server) -> None:  # type: ignore[no-untyped-def]
    source = (
        "{% for c in colours %}{{ c }}: {{ slot('hex_' ~ loop.index, regex='#[0-9a-f]{6}', tokens=7) }}\n{% endfor %}"
    )
    resp = httpx.post(
        f"{open_server.url}/v1/generate",
        json={"template_source": source, "variables": {"colours": ["red", "blue"]}, "seed": 2},
        timeout=60,
    )
    assert resp.status_code == 200, resp.text
    caps = resp.json()["captures"]
    assert all(re.fullmatch("#[0-9a-f]{6}", caps[k]["text"]) for k in ("hex_1", "hex_2"))
    resp = httpx.post(
        f"{open_server.url}/v1/generate", json={"template_source": "{{ ''.__class__.__mro__ }}"}, timeout=30
    )
    assert resp.status_code == 400 and "sandbox forbids" in resp.json()["error"]["message"]
    resp = httpx.post(f"{open_server.url}/v1/generate", json={"template_source": "{% for %}"}, timeout=30)
    assert resp.status_code == 400 and "line 1" in resp.json()["error"]["message"]


def test_fill_on_a_server_url(server, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["fill", "multiple_choice", "--example", "--model", server.url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["answer"] in ("A", "B", "C", "D")
    with pytest.raises(RemoteError):
        dlmprompt.Client(server.url, retries=0).fill("nope")
