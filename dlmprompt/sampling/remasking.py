"""Position-choice strategies: which candidates to commit first. Named once, at the edge."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class Remasking:
    """``score(conf, logq, n, generator)`` ranks candidates (higher commits first).

    ``conf``: constrained marginal of each candidate's sampled token; ``logq``: the full
    constrained log-marginals ``[n, V]`` when ``needs_marginals`` is set, else None.
    """

    name: str
    needs_marginals: bool
    score: Callable[[torch.Tensor, torch.Tensor | None, int, torch.Generator], torch.Tensor]


def _low_confidence(conf: torch.Tensor, logq: torch.Tensor | None, n: int, g: torch.Generator) -> torch.Tensor:
    return conf


def _margin(conf: torch.Tensor, logq: torch.Tensor | None, n: int, g: torch.Generator) -> torch.Tensor:
    assert logq is not None
    top = torch.topk(logq, k=min(2, logq.shape[1]), dim=1).values.exp()
    if top.shape[1] < 2:
        return top[:, 0]
    return top[:, 0] - top[:, 1]


def _entropy(conf: torch.Tensor, logq: torch.Tensor | None, n: int, g: torch.Generator) -> torch.Tensor:
    assert logq is not None
    q = logq.exp()
    ent = -(q * torch.where(q > 0, logq, torch.zeros_like(logq))).sum(dim=1)
    return -ent


def _random(conf: torch.Tensor, logq: torch.Tensor | None, n: int, g: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=g, dtype=torch.float64).to(conf.device)


_STRATEGIES = {
    "low_confidence": Remasking("low_confidence", False, _low_confidence),
    "margin": Remasking("margin", True, _margin),
    "entropy": Remasking("entropy", True, _entropy),
    "random": Remasking("random", False, _random),
    # ranks as low_confidence; the row puts structural tokens first (Row.step_phases)
    "structure_first": Remasking("structure_first", False, _low_confidence),
}

# JSON / grammar punctuation: a token whose text, without spaces, is made of these only
_STRUCTURE_CHARS = set('{}[],:"()<>;=')
_STRUCTURAL: dict[str, np.ndarray] = {}


def structural_tokens(tokenizer: Any) -> np.ndarray:
    """Bool ``[V]``: the tokens that decide structure rather than words, for ``structure_first``:
    punctuation of JSON and most grammars, and the pad token (the end of a value)."""
    key = tokenizer.identity
    hit = _STRUCTURAL.get(key)
    if hit is None:
        v = tokenizer.vocab_size
        hit = np.zeros(v, dtype=bool)
        for t, raw in enumerate(tokenizer.token_bytes):
            text = (raw or b"").strip()
            hit[t] = bool(text) and set(text.decode("latin-1")) <= _STRUCTURE_CHARS
        if tokenizer.pad_id is not None:
            hit[tokenizer.pad_id] = True
        for special in (tokenizer.mask_id, getattr(tokenizer, "eos_id", None), getattr(tokenizer, "bos_id", None)):
            if special is not None and special != tokenizer.pad_id and 0 <= special < v:
                hit[special] = False
        _STRUCTURAL[key] = hit
    return hit


def make_remasking(name: str) -> Remasking:
    """The strategy called ``name``: low_confidence, margin, entropy, random or structure_first."""
    try:
        return _STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; strategies are {sorted(_STRATEGIES)}") from None
