"""Forward-backward over one slot's chain of automaton steps (numpy, log space).

A slot of n positions, some committed and some masked, is a chain of n automaton steps. Given the
log class masses ``logP[k, c]`` of its masked positions (the model's per-position probability
summed over the tokens of each class), this module

* computes backward messages ``beta[j, s]`` = log of the total weight of valid completions of
  positions j.. from state s;
* samples (or, at temperature 0, maximises step by step) one complete valid class assignment
  forward, each class drawn from ``P_j(c) * beta_{j+1}(next(s_j, c))``: exact sampling of the
  per-step distribution restricted to the constraint;
* computes, where asked, the constrained class weights ``w_j(c)`` with the forward messages, so
  that the constrained marginal of token v at position j is ``p_j(v) * w_j(class(v))``.

Everything committed together is part of one valid full assignment, so the slot always stays
completable. Work is O(n * C * Q) on small tables; no loop over the vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dlmprompt.constraints.automaton import TokenAutomaton
from dlmprompt.errors import DLMPromptError
from dlmprompt.sampling.sparsechain import run_chains_sparse, segment_lse

NEG = -np.inf
# log mass of a class whose probability is exactly zero (a model's -inf logits): the constraint
# may still need it, so it stays possible, just less likely than anything the model allows
FLOOR = -1.0e200


@dataclass
class ChainResult:
    classes: np.ndarray  # int64 [m]: sampled class of each masked position
    logw: np.ndarray | None  # float64 [m, C]: constrained class weights (rows not asked: nan)


def _lse0(a: np.ndarray) -> np.ndarray:
    """logsumexp over axis 0, -inf where every entry is -inf."""
    mx = a.max(axis=0)
    safe = np.where(np.isfinite(mx), mx, 0.0)
    with np.errstate(divide="ignore"):
        return np.log(np.exp(a - safe).sum(axis=0)) + safe


def _lse1(a: np.ndarray) -> np.ndarray:
    mx = a.max(axis=1)
    safe = np.where(np.isfinite(mx), mx, 0.0)
    with np.errstate(divide="ignore"):
        return np.log(np.exp(a - safe[:, None]).sum(axis=1)) + safe


def backward(auto: TokenAutomaton, committed: np.ndarray, logP: np.ndarray, maximize: bool = False) -> np.ndarray:
    """``beta[j, s]`` for j in 0..n (shape [n+1, Q+1]; column Q is the dead state, -inf).

    Sum-product by default; ``maximize`` gives max-product (the best completion's log weight)."""
    n = len(committed)
    q = auto.n_states
    ns = auto.next_state
    safe = np.where(ns >= 0, ns, q)
    beta = np.full((n + 1, q + 1), NEG)
    beta[n, :q] = np.where(auto.accept, 0.0, NEG)
    k = int((committed < 0).sum())
    for j in range(n - 1, -1, -1):
        nb = beta[j + 1]
        c = committed[j]
        if c >= 0:
            beta[j, :q] = nb[safe[c]]
        else:
            k -= 1
            x = logP[k][:, None] + nb[safe]
            beta[j, :q] = x.max(axis=0) if maximize else _lse0(x)
    return beta


def forward(auto: TokenAutomaton, committed: np.ndarray, logP: np.ndarray) -> np.ndarray:
    """``alpha[j, s]`` for j in 0..n: log weight of reaching s after positions < j."""
    n = len(committed)
    q = auto.n_states
    ns = auto.next_state
    valid = ns >= 0
    alpha = np.full((n + 1, q), NEG)
    alpha[0, auto.start] = 0.0
    k = 0
    for j in range(n):
        a = alpha[j]
        c = committed[j]
        if c >= 0:
            row = ns[c]
            ok = (row >= 0) & np.isfinite(a)
            if ok.any():
                alpha[j + 1] = segment_lse(a[ok], row[ok], q)
            continue
        x = logP[k][:, None] + a[None, :]
        k += 1
        alpha[j + 1] = segment_lse(x[valid], ns[valid], q)  # each target state on its own scale
    return alpha


def run_chain(
    auto: TokenAutomaton,
    committed: np.ndarray,
    logP: np.ndarray,
    *,
    noise: np.ndarray | None,
    want: np.ndarray | None,
    logP_conf: np.ndarray | None = None,
) -> ChainResult:
    """One slot's constrained step (the reference: the sampler runs :func:`run_chains`, which the
    tests check against this slot by slot).

    ``committed[j]``: class of the committed token at slot position j, or -1 if masked.
    ``logP``: [m, C] log class masses of the masked positions (sampling distribution), in order.
    ``noise``: [m, C] Gumbel noise. None means temperature 0: ``logP`` then holds each class's
    best token log-probability and the assignment is the most probable valid one (max-product),
    which does not depend on how tokens are grouped into classes.
    ``want``: bool [m], masked positions whose constrained class weights are needed.
    ``logP_conf``: class masses of the distribution confidences come from (default ``logP``).
    """
    m = logP.shape[0]
    q = auto.n_states
    ns = auto.next_state
    safe = np.where(ns >= 0, ns, q)
    beta = backward(auto, committed, logP, maximize=noise is None)
    if not np.isfinite(beta[0, auto.start]):
        raise DLMPromptError(
            f"internal error: slot with {auto.description} cannot be completed from its committed "
            "tokens; please report this with the prompt"
        )
    classes = np.empty(m, dtype=np.int64)
    s = auto.start
    k = 0
    for j in range(len(committed)):
        c = committed[j]
        if c < 0:
            scores = logP[k] + beta[j + 1][safe[:, s]]
            if noise is not None:
                scores = scores + noise[k]
            c = int(np.argmax(scores))
            if not np.isfinite(scores[c]):
                raise DLMPromptError(
                    f"internal error: no valid token for a slot with {auto.description}; please report this"
                )
            classes[k] = c
            k += 1
        s = int(ns[c, s])
    logw = None
    if want is not None and want.any():
        conf = logP if logP_conf is None else logP_conf
        beta_c = beta if logP_conf is None else backward(auto, committed, conf)
        alpha = forward(auto, committed, conf)
        z = beta_c[0, auto.start]
        logw = np.full((m, auto.n_classes), np.nan)
        k = 0
        for j in range(len(committed)):
            if committed[j] >= 0:
                continue
            if want[k]:
                x = alpha[j][None, :] + beta_c[j + 1][safe]  # [C, Q]
                logw[k] = _lse1(x) - z
            k += 1
    return ChainResult(classes, logw)


def run_chains(
    auto: TokenAutomaton,
    committed: list[np.ndarray],
    logP: np.ndarray,
    *,
    noise: np.ndarray | None,
    logP_conf: np.ndarray | None = None,
    need_weights: bool = True,
) -> ChainResult:
    """:func:`run_chain` for several slots that share one automaton, vectorised over the slots.

    ``committed[b]`` is slot b's committed classes (-1: masked); ``logP`` / ``noise`` /
    ``logP_conf`` hold the masked positions of slot 0, then slot 1, ... (the order the sampler
    gathers them in). Slots of different lengths are aligned by padding the shorter ones with an
    identity step (a virtual class that keeps the state), so one loop over positions serves all.
    Returns the classes of every masked position and, with ``need_weights``, their constrained
    class weights. Given the same noise it draws what :func:`run_chain` draws slot by slot.
    """
    if getattr(auto, "sparse", False):  # edge lists (a grounded slot over a long text)
        return ChainResult(
            *run_chains_sparse(auto, committed, logP, noise=noise, logP_conf=logP_conf, need_weights=need_weights)
        )
    b = len(committed)
    n = max(len(c) for c in committed)
    q = auto.n_states
    c_n = auto.n_classes
    # transitions with a dead state q (absorbing) and the identity class c_n
    nx = np.full((c_n + 1, q + 1), q, dtype=np.int64)
    nx[:c_n, :q] = np.where(auto.next_state >= 0, auto.next_state, q)
    nx[c_n, :] = np.arange(q + 1)
    masked = np.zeros((b, n), dtype=bool)
    for i, c in enumerate(committed):
        masked[i, : len(c)] = c < 0
    bi, ji = np.nonzero(masked)  # row-major: slot 0's masked positions first, in order

    def weights(lp: np.ndarray) -> np.ndarray:
        w = np.full((b, n, c_n + 1), NEG)
        w[bi, ji, :c_n] = lp
        for i, c in enumerate(committed):
            fixed = np.nonzero(c >= 0)[0]
            w[i, fixed, c[fixed]] = 0.0
            w[i, len(c) :, c_n] = 0.0
        return w

    def backward_all(w: np.ndarray, maximize: bool) -> np.ndarray:
        beta = np.full((b, n + 1, q + 1), NEG)
        beta[:, n, :q] = np.where(auto.accept, 0.0, NEG)
        for j in range(n - 1, -1, -1):
            x = w[:, j, :, None] + beta[:, j + 1][:, nx[:, :q]]  # [B, C+1, Q]
            beta[:, j, :q] = x.max(axis=1) if maximize else _lse_axis(x, 1)
        return beta

    w_s = weights(logP)
    beta = backward_all(w_s, maximize=noise is None)
    if not np.isfinite(beta[:, 0, auto.start]).all():
        raise DLMPromptError(
            f"internal error: slot with {auto.description} cannot be completed from its committed "
            "tokens; please report this with the prompt"
        )
    g = np.zeros((b, n, c_n + 1))
    if noise is not None:
        g[bi, ji, :c_n] = noise
    classes = np.full((b, n), -1, dtype=np.int64)
    s = np.full(b, auto.start, dtype=np.int64)
    rows = np.arange(b)
    for j in range(n):
        scores = w_s[:, j] + beta[:, j + 1][rows[:, None], nx[:, s].T] + g[:, j]  # [B, C+1]
        c = scores.argmax(axis=1)
        if not np.isfinite(scores[rows, c]).all():
            raise DLMPromptError(
                f"internal error: no valid token for a slot with {auto.description}; please report this"
            )
        classes[:, j] = c
        s = nx[c, s]
    logw = None
    if need_weights:
        w_c = w_s if logP_conf is None else weights(logP_conf)
        beta_c = beta if (logP_conf is None and noise is not None) else backward_all(w_c, maximize=False)
        z = beta_c[:, 0, auto.start]
        alpha = np.full((b, q + 1), NEG)
        alpha[:, auto.start] = 0.0
        logw_all = np.full((b, n, c_n), np.nan)
        flat_to = (rows[:, None, None] * (q + 1) + nx[None, :, :q]).reshape(-1)
        for j in range(n):
            x = alpha[:, None, :q] + beta_c[:, j + 1][:, nx[:c_n, :q]]  # [B, C, Q]
            logw_all[:, j] = _lse_axis(x, 2) - z[:, None]
            y = (alpha[:, None, :q] + w_c[:, j, :, None]).reshape(-1)  # [B*(C+1)*Q]
            # each target state on its own scale: one far below the others must not underflow
            alpha = segment_lse(y, flat_to, b * (q + 1)).reshape(b, q + 1)
            alpha[:, q] = NEG
        logw = logw_all[bi, ji]
    return ChainResult(classes[bi, ji], logw)


def _lse_axis(a: np.ndarray, axis: int) -> np.ndarray:
    mx = a.max(axis=axis, keepdims=True)
    safe = np.where(np.isfinite(mx), mx, 0.0)
    with np.errstate(divide="ignore"):
        return np.squeeze(np.log(np.exp(a - safe).sum(axis=axis, keepdims=True)) + safe, axis=axis)
