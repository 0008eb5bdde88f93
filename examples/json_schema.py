"""Fill a pydantic model (nested model, list, enum, Optional, Literal, bounds) with the embedded
default model: every output validates, whatever the model writes.

    python examples/json_schema.py
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

import dlmprompt
from dlmprompt import Prompt, compile, generate, slot


class Address(BaseModel):
    city: str = Field(max_length=30)
    zip: str = Field(pattern=r"^[0-9]{5}$")


class Person(BaseModel):
    name: str
    age: int = Field(ge=0, le=130)
    kind: Literal["customer", "staff"]
    email: str | None = None
    tags: list[str] = Field(default_factory=list, max_length=3)
    address: Address


def main() -> None:
    model = dlmprompt.load()
    text = "Maria Lopez, 34, joined our staff last May. She lives at 12 Elm Street, 30301 Atlanta."
    prompt = Prompt(f"Text: {text}\nRecord: ") + slot("person", schema=Person, max_tokens=8)
    program = compile(prompt, model.tokenizer, threshold=0.9)
    result = generate(model, program)
    person = result.value("person")
    print(result["person"])
    print(repr(person))
    assert isinstance(person, Person)
    print(f"{result.steps} steps, {result.forward_passes} forward passes; notes: {program.notes or 'none'}")


if __name__ == "__main__":
    main()
