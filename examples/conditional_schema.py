"""JSON Schema logic that other engines refuse, kept exact: ``if`` / ``then`` / ``else``,
``dependentRequired`` and ``not``, filled by the embedded default model and checked with the
``jsonschema`` package. What is guaranteed is validity: the embedded 5M model often picks the
wrong branch or amount for these texts (a real model reads them better), yet every record it
writes satisfies the conditional rules.

    python examples/conditional_schema.py
"""

from __future__ import annotations

import json

import jsonschema

import dlmprompt
from dlmprompt import Prompt, compile, generate, slot

PAYMENT = {
    "type": "object",
    "properties": {
        "method": {"enum": ["card", "bank"]},
        "card_number": {"type": "string", "pattern": "^[0-9]{4}$"},
        "iban": {"type": "string", "pattern": "^[A-Z]{2}[0-9]{2}$"},
        "amount": {"type": "integer", "minimum": 1, "maximum": 9999},
        "currency": {"type": "string", "not": {"enum": ["XXX", "XTS"]}},  # ISO 4217 test codes are refused
        "note": {"type": "string"},
    },
    "required": ["method", "amount"],
    "additionalProperties": False,
    "if": {"properties": {"method": {"const": "card"}}},
    "then": {"required": ["card_number"], "not": {"required": ["iban"]}},
    "else": {"required": ["iban"]},
    "dependentRequired": {"note": ["currency"]},
}


def main() -> None:
    model = dlmprompt.load()
    check = jsonschema.Draft202012Validator(PAYMENT)
    for text in ("Paid 120 EUR by card ending 4242.", "Bank transfer of 75 from DE44."):
        prompt = Prompt(f"Text: {text}\nPayment: ") + slot("payment", schema=PAYMENT, max_tokens=8)
        program = compile(prompt, model.tokenizer)
        result = generate(model, program)
        value = json.loads(result["payment"])
        errors = [e.message for e in check.iter_errors(value)]
        print(result["payment"])
        print("valid under the schema:", not errors, errors[:1])
        assert not errors
    print("notes:", program.notes or "none")


if __name__ == "__main__":
    main()
