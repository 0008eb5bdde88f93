"""Guidance terms beyond classifier-free guidance, compiled and applied.

:func:`plan` turns a prompt's :class:`~dlmprompt.spec.Guidance` into a :class:`GuidancePlan`: a
sparse static bias over the vocabulary (phrase biases, avoided phrases, token biases, the copy
bias toward a source text's tokens), the penalties that depend on what the canvas holds, and each
canvas position's scale (its slot's ``guidance=``; 0 at anchors). :func:`reweight` applies it to
one row's logits before the sampler restricts them to the constraints, so no term can make a
constraint fail: it only changes which valid answer is likely.

Penalties count the tokens committed in the row's slots (not anchors, pads, EOS or masks):
``repetition_penalty`` divides a positive logit of a seen token by the penalty (multiplies a
negative one), ``frequency_penalty`` subtracts penalty × count, ``presence_penalty`` subtracts
the penalty once. A position's scale ``w`` turns the repetition penalty into ``penalty ** w`` and
multiplies every other term.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from dlmprompt.errors import CompileError


@dataclass(frozen=True, eq=False)
class GuidancePlan:
    ids: np.ndarray  # int64 [k]: tokens with a static bias
    values: np.ndarray  # float32 [k]
    repetition_penalty: float
    frequency_penalty: float
    presence_penalty: float
    scale: np.ndarray  # float32 [L]: each canvas position's scale (0 at anchors)
    uniform: bool  # every slot position has scale 1

    @property
    def penalizes(self) -> bool:
        return self.repetition_penalty != 1.0 or self.frequency_penalty != 0.0 or self.presence_penalty != 0.0

    @property
    def reweights(self) -> bool:
        """Whether :func:`reweight` changes anything (a plan may hold only slot scales for CFG)."""
        return len(self.ids) > 0 or self.penalizes


def _phrase_ids(tok: Any, phrase: str) -> set[int]:
    ids = set(tok.encode(phrase)) | set(tok.encode(" " + phrase))
    return ids - {t for t in (tok.mask_id, tok.pad_id, tok.eos_id, tok.bos_id) if t is not None}


def plan(prompt: Any, tok: Any, slot_of: np.ndarray, layout_slots: Any) -> GuidancePlan | None:
    """The compiled guidance of ``prompt`` on its canvas, or None when only CFG (or nothing) is on
    and every slot has scale 1."""
    g = prompt.guidance
    scales = {s.name: float(s.guidance) for s in prompt.slots}
    scale = np.zeros(len(slot_of), dtype=np.float32)
    for sl in layout_slots:
        scale[sl.start : sl.stop] = scales.get(sl.parent or sl.name, 1.0)
    uniform = bool(np.all(scale[slot_of >= 0] == 1.0))
    if not g.reweights and uniform:
        return None
    bias: dict[int, float] = {}

    def add(ids: Any, value: float) -> None:
        for t in ids:
            bias[int(t)] = bias.get(int(t), 0.0) + value

    for phrase, b in g.bias.items():
        add(_phrase_ids(tok, phrase), b)
    for phrase in g.avoid:
        if not phrase:
            raise CompileError("guidance avoid= holds an empty phrase")
        add(_phrase_ids(tok, phrase), g.avoid_bias)
    v = tok.vocab_size
    for t, b in g.token_bias.items():
        if not 0 <= t < v:
            raise CompileError(f"guidance token_bias names token {t}; the vocabulary has 0..{v - 1}")
        if t == tok.mask_id:
            raise CompileError(f"guidance token_bias names the mask token ({t}), which is never sampled")
        add([t], b)
    if g.copy_from:
        add(_phrase_ids(tok, g.copy_from), g.copy_bias)
    ids = np.asarray(sorted(bias), dtype=np.int64)
    values = np.asarray([min(100.0, max(-100.0, bias[int(t)])) for t in ids], dtype=np.float32)
    return GuidancePlan(ids, values, g.repetition_penalty, g.frequency_penalty, g.presence_penalty, scale, uniform)


def reweight(plan: GuidancePlan, logits: Any, row: Any) -> Any:
    """``logits`` [L, V] of one row with the plan's terms applied (a new tensor)."""
    import torch

    lg = logits.float()
    if lg is logits:  # already float32: copy once (a half-precision input was copied by .float())
        lg = lg.clone()
    n = lg.shape[0]
    w = torch.from_numpy(plan.scale[:n]).to(lg.device)[:, None]  # [L, 1]
    if len(plan.ids):
        ids = torch.from_numpy(plan.ids).to(lg.device)
        lg[:, ids] += w * torch.from_numpy(plan.values).to(lg.device)[None, :]
    if plan.penalizes:
        prog = row.program
        canvas = row.canvas
        held = canvas[(row.slot_of >= 0) & (canvas != prog.mask_id)]
        skip = [t for t in (prog.pad_id, prog.tokenizer.eos_id) if t is not None]
        if skip:
            held = held[~np.isin(held, skip)]
        if held.size:
            seen, counts = np.unique(held, return_counts=True)
            seen_t = torch.from_numpy(seen.astype(np.int64)).to(lg.device)
            cnt = torch.from_numpy(counts.astype(np.float32)).to(lg.device)[None, :]
            sel = lg[:, seen_t]
            if plan.repetition_penalty != 1.0:
                p = torch.pow(torch.tensor(plan.repetition_penalty, device=lg.device), w)
                sel = torch.where(sel > 0, sel / p, sel * p)
            sel = sel - w * (plan.frequency_penalty * cnt + plan.presence_penalty)
            lg[:, seen_t] = sel
    return lg
