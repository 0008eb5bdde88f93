"""Forward-backward over many slots' chains at once, as tensor work on any torch device.

The device path of the sampler (``devicepath.py``) runs this instead of the numpy pass of
``chain.py``: the same algorithm, written so that nothing waits for the host. Chains of
different automata and lengths share one loop over positions: every automaton is padded to the
same number of classes (the last one, the *identity* class, keeps the state and pads short
chains) and states (the last one is the absorbing dead state).

Shapes: S chains, N positions, C1 classes (identity last), Q1 states (dead last).
``nx[s, c, q]`` is chain s's transition table (dead for classes and states its automaton lacks).
``w[s, j, c]`` is the log weight of class c at position j: the model's log class mass at a
masked position, 0 for the committed class of a committed position, 0 for the identity class
past the chain's end, -inf elsewhere. Work is O(N * S * C1 * Q1) in small tensors; every
operation keeps its shape, so nothing is synchronised.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dlmprompt.constraints.automaton import TokenAutomaton

NEG = float("-inf")


@dataclass
class Chains:
    """The static part of a merged chain batch (built once per batch layout)."""

    nx: torch.Tensor  # int64 [S, C1, Q1]: next state (dead state Q1-1 where not allowed)
    accept: torch.Tensor  # bool [S, Q1]
    start: torch.Tensor  # int64 [S]

    def __post_init__(self) -> None:
        s, c1, q1 = self.nx.shape
        self.n_chains, self.n_classes, self.n_states = s, c1, q1
        dev = self.nx.device
        # flat indices into a [S, Q1] table for gathers (chain offset folded in)
        self.flat = self.nx + torch.arange(s, device=dev).view(s, 1, 1) * q1
        self.flat_live = self.flat[:, :, : q1 - 1].contiguous()  # from live states only
        self.rows = torch.arange(s, device=dev)
        self.end = torch.where(self.accept, 0.0, NEG).to(torch.float64)
        self.end[:, q1 - 1] = NEG
        self.dest = self.nx[:, :, : q1 - 1].reshape(s, -1).contiguous()  # alpha's scatter targets


def _lse(x: torch.Tensor, dim: int) -> torch.Tensor:
    """logsumexp with -inf where every entry is -inf, in fewer kernels than torch.logsumexp."""
    m = x.amax(dim=dim, keepdim=True).clamp_(min=-1e300)
    return (x - m).exp_().sum(dim=dim).log_().add_(m.squeeze(dim))


def backward(ch: Chains, w: torch.Tensor, greedy: torch.Tensor | None) -> torch.Tensor:
    """``beta[s, j, q]`` (shape [S, N+1, Q1]): log weight of the valid completions of positions
    j.. from state q; max-product for chains where ``greedy`` is set (None: none are)."""
    s, n, _ = w.shape
    q1 = ch.n_states
    beta = torch.full((s, n + 1, q1), NEG, dtype=torch.float64, device=w.device)
    beta[:, n] = ch.end
    for j in range(n - 1, -1, -1):
        x = w[:, j, :, None] + beta[:, j + 1].reshape(-1)[ch.flat_live]  # [S, C1, Q]
        if greedy is None:
            beta[:, j, : q1 - 1] = _lse(x, 1)
        else:
            beta[:, j, : q1 - 1] = torch.where(greedy[:, None], x.amax(dim=1), _lse(x, 1))
    return beta


def sample(
    ch: Chains, w: torch.Tensor, beta: torch.Tensor, noise: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One complete assignment per chain, drawn left to right from ``w + beta (+ noise)``.

    Returns the classes [S, N] and a bool [S]: False where some step found no finite score
    (an internal error the caller reports; it cannot happen when ``beta`` is finite at the start).
    """
    s, n, c1 = w.shape
    state = ch.start.clone()
    classes = torch.empty((s, n), dtype=torch.int64, device=w.device)
    ok = beta[ch.rows, 0, ch.start] > NEG
    for j in range(n):
        idx = ch.flat.gather(2, state.view(s, 1, 1).expand(s, c1, 1)).squeeze(2)  # [S, C1]
        scores = w[:, j] + beta[:, j + 1].reshape(-1)[idx]
        if noise is not None:
            scores = scores + noise[:, j]
        best, c = scores.max(dim=1)
        ok = ok & (best > NEG)
        classes[:, j] = c
        state = ch.nx[ch.rows, c, state]
    return classes, ok


def weights(ch: Chains, w: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Constrained class weights ``logw[s, j, c]`` = log(constrained marginal of class c at j /
    its unconstrained mass), from forward messages and the sum-product ``beta`` of ``w``."""
    s, n, c1 = w.shape
    q = ch.n_states - 1
    z = beta[ch.rows, 0, ch.start]
    # (built with where: an indexed assignment of a Python scalar waits for the device)
    alpha = torch.where(torch.arange(q, device=w.device) == ch.start[:, None], 0.0, NEG).to(torch.float64)
    out = torch.empty((s, n, c1), dtype=torch.float64, device=w.device)
    for j in range(n):
        nb = beta[:, j + 1].reshape(-1)[ch.flat_live]  # [S, C1, Q]
        out[:, j] = _lse(alpha[:, None, :] + nb, 2) - z[:, None]
        y = (alpha[:, None, :] + w[:, j, :, None]).reshape(s, -1)  # [S, C1*Q]
        m = y.amax(dim=1, keepdim=True).clamp_(min=-1e300)
        sums = torch.zeros((s, q + 1), dtype=torch.float64, device=w.device)
        sums.scatter_add_(1, ch.dest, torch.exp(y - m))
        alpha = (torch.log(sums) + m)[:, :q]
    return out


def table(auto: TokenAutomaton, c1: int, q1: int) -> np.ndarray:
    """``auto``'s transitions padded to [c1, q1]: missing classes and states lead to the dead
    state q1-1, and the identity class c1-1 keeps every state."""
    dead = q1 - 1
    nx = np.full((c1, q1), dead, dtype=np.int64)
    ns = auto.next_state
    nx[: ns.shape[0], : ns.shape[1]] = np.where(ns >= 0, ns, dead)
    nx[c1 - 1] = np.arange(q1)
    return nx


def pack(autos: list[TokenAutomaton], device: torch.device) -> Chains:
    """The static tables of chains whose automata are ``autos`` (one per chain, in order)."""
    c1 = max(a.n_classes for a in autos) + 1
    q1 = max(a.n_states for a in autos) + 1
    first: dict[int, int] = {}
    uniq: list[TokenAutomaton] = []
    for a in autos:  # one padded table per distinct automaton
        if id(a) not in first:
            first[id(a)] = len(uniq)
            uniq.append(a)
    which = np.array([first[id(a)] for a in autos], dtype=np.int64)
    nx = np.stack([table(a, c1, q1) for a in uniq])[which]
    acc_u = np.zeros((len(uniq), q1), dtype=bool)
    for i, a in enumerate(uniq):
        acc_u[i, : a.n_states] = a.accept
    acc = acc_u[which]
    start = np.array([a.start for a in uniq], dtype=np.int64)[which]
    return Chains(
        torch.from_numpy(nx).to(device, non_blocking=True),
        torch.from_numpy(acc).to(device, non_blocking=True),
        torch.from_numpy(start).to(device, non_blocking=True),
    )


_KERNEL: Any = None  # the Triton module once imported; False where it is unavailable or failed


def _kernel(ch: Chains, device: torch.device) -> Any:
    global _KERNEL
    if device.type != "cuda" or _KERNEL is False or os.environ.get("DLMPROMPT_TRITON", "1") == "0":
        return None
    if _KERNEL is None:
        try:
            from dlmprompt.sampling import tritonchain

            _KERNEL = tritonchain
        except Exception:  # no triton (or none that imports): the torch version serves
            _KERNEL = False
            return None
    return _KERNEL if _KERNEL.fits(ch.n_classes, ch.n_states) else None


def run(
    ch: Chains,
    w_s: torch.Tensor,
    w_c: torch.Tensor,
    noise: torch.Tensor | None,
    greedy: torch.Tensor | None,
    separate: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The whole pass: classes [S, N] drawn from ``w_s`` (+ ``noise``; max-product for chains
    where ``greedy`` is set), a bool [S] that is False where a chain had no valid completion, and
    the class weights [S, N, C1] of ``w_c`` (the same as ``w_s`` unless ``separate``).

    On CUDA with triton installed, one fused kernel (``tritonchain``) does it; else, or if that
    kernel fails to build, the loops above."""
    global _KERNEL
    k = _kernel(ch, w_s.device)
    if k is not None:
        try:
            g = greedy if greedy is not None else torch.zeros(ch.n_chains, dtype=torch.bool, device=w_s.device)
            return k.run(ch.nx, ch.end, ch.start, w_s, w_c, noise, g, separate)  # type: ignore[no-any-return]
        except Exception as exc:  # a triton / driver mismatch: say so once, go on without it
            _KERNEL = False
            warnings.warn(
                f"dlmprompt: the Triton forward-backward kernel failed ({exc!r}); using the torch version "
                "(set DLMPROMPT_TRITON=0 to skip it)",
                RuntimeWarning,
                stacklevel=2,
            )
    beta = backward(ch, w_s, greedy)
    classes, ok = sample(ch, w_s, beta, noise)
    logw = weights(ch, w_c, backward(ch, w_c, None) if separate else beta)
    return classes, ok, logw
