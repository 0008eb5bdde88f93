"""Prompt templates: slots declared inside Jinja2, a shipped task template, and a file of your own.

Runs as written: python examples/templates.py
On the embedded default model (offline); every value satisfies its slot's constraint whatever
the weights, and the record validates under its schema.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from pydantic import BaseModel, Field

import dlmprompt


class Person(BaseModel):
    name: str = Field(max_length=24)
    age: int = Field(ge=0, le=130)
    city: str


denoiser = dlmprompt.load()
g = torch.Generator().manual_seed(0)

# 1. A shipped template: its description, variables and example come from its header.
extract = dlmprompt.template("extract_record")
print(extract.description)
print("variables:", [(v.name, v.type, v.required) for v in extract.variables])
prompt = extract.render(document="Meet Ada Lovelace, 36, from London.", schema=Person, kind="person")
result = dlmprompt.generate(denoiser, prompt.with_sampling(steps=12), generator=g)
person = result.value("record")  # a Person: the JSON always validates
print("record:", person)

# 2. A template of your own, as a file: slots inside a loop and a macro, sampling settings, a prompt block.
prices = dlmprompt.Template.from_file(Path(__file__).with_name("prices.jinja"))
prompt = prices.render(shop="the corner market", items=["bread", "milk", "apples"])
print([p.name for p in prompt.slots])  # ['price_1', 'price_2', 'price_3', 'cheapest']
result = dlmprompt.generate(denoiser, prompt, generator=g)
print(result.text)
print(json.dumps(result.values))

# 3. A template that does not render says where and why.
try:
    dlmprompt.Template.from_string('Name: {{ slot("name", max_tokens=4) | upper }}').render()
except dlmprompt.TemplateError as exc:
    print("refused:", exc)
