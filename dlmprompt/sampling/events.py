"""What the sampler hands back: a :class:`Step` per denoising step and row, and the final
:class:`Result` with typed :class:`Capture` s (a slot filled from a pydantic model comes back as
that model's instance)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dlmprompt.compiler import Program


@dataclass(frozen=True, eq=False)
class Step:
    """One denoising step of one row: the canvas after it, what it committed and how sure it was."""

    row: int
    index: int
    canvas: np.ndarray
    committed: np.ndarray  # canvas positions committed in this step
    tokens: np.ndarray  # their token ids
    confidences: np.ndarray  # constrained marginal probability of each committed token
    forward_passes: int  # forward passes so far for this row
    # positions whose token is final (None: every committed position): under adaptive length a
    # pad past a slot's window may still become room to grow, and under remask= a committed token
    # below the policy's bound may still go back to the mask
    settled: np.ndarray | None = None


@dataclass(frozen=True)
class Capture:
    """What a slot holds: its text, its value tokens (pad tail removed) and its canvas span."""

    name: str
    text: str
    tokens: tuple[int, ...]
    span: tuple[int, int]
    constraint: Any = field(default=None, repr=False, compare=False)

    @property
    def value(self) -> Any:
        """The typed value: for a JSON slot the parsed JSON, or the pydantic model instance when
        the slot was made from a model in this process; otherwise the text."""
        from dlmprompt.spec import Json, model_of

        if not isinstance(self.constraint, Json):
            return self.text
        import json

        data = json.loads(self.text)
        model = model_of(self.constraint)
        return data if model is None else model.model_validate(data)


@dataclass(frozen=True, eq=False)
class Result:
    """The filled canvas of one program with per-slot captures and statistics."""

    text: str
    captures: dict[str, Capture]
    canvas: np.ndarray
    steps: int
    forward_passes: int
    program: Program = field(repr=False)
    canvas_positions: int = 0  # canvas positions the model processed, summed over forward passes

    def __getitem__(self, name: str) -> str:
        try:
            return self.captures[name].text
        except KeyError:
            raise KeyError(f"no slot {name!r}; slots are {list(self.captures)}") from None

    @property
    def values(self) -> dict[str, str]:
        return {k: c.text for k, c in self.captures.items()}

    def value(self, name: str) -> Any:
        """The typed value of a slot (parsed JSON / pydantic instance for a schema slot)."""
        try:
            return self.captures[name].value
        except KeyError:
            raise KeyError(f"no slot {name!r}; slots are {list(self.captures)}") from None
