"""Position-choice strategies: which candidates to commit first. Named once, at the edge."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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
}


def make_remasking(name: str) -> Remasking:
    """The strategy called ``name``: low_confidence, margin, entropy or random."""
    try:
        return _STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; strategies are {sorted(_STRATEGIES)}") from None
