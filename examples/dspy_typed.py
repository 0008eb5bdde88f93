"""Typed DSPy signatures on a dlmprompt model: each output field is exact (pip install dspy).

    python examples/dspy_typed.py

The JSONAdapter sends the signature's output fields as a JSON Schema, which dlmprompt turns into
the constraint of the answer: `stars` is an integer, `label` one of its three values, `tags` a list
of strings, whatever the (tiny, embedded) model says.
"""

from __future__ import annotations

from typing import Literal

import dspy

from dlmprompt.integrations.dspy import DLMPromptLM


class Review(dspy.Signature):
    """Read a product review."""

    review: str = dspy.InputField()
    label: Literal["positive", "negative", "neutral"] = dspy.OutputField()
    stars: int = dspy.OutputField()
    tags: list[str] = dspy.OutputField()


dspy.configure(lm=DLMPromptLM(max_tokens=32, value_tokens=6, seed=0), adapter=dspy.JSONAdapter())
out = dspy.Predict(Review)(review="Great battery, the screen scratches easily.")
print(repr(out.label), repr(out.stars), repr(out.tags))
assert out.label in ("positive", "negative", "neutral") and isinstance(out.stars, int)
