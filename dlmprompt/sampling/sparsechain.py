"""The forward-backward pass of :mod:`.chain` over a sparse automaton (edge lists).

Grounded slots over long source texts have automata of thousands of states and classes whose
dense ``classes x states`` table would not fit; their edges (one per state and class that can
follow it) are few. This pass does exactly what :func:`~dlmprompt.sampling.chain.run_chains` does
(the same draws from the same noise, the same constrained class weights), in O(n * edges) per
slot, on the host; :func:`~dlmprompt.sampling.chain.run_chains` hands sparse automata here. The
device path leaves rows with sparse automata to the host path.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dlmprompt.errors import DLMPromptError

NEG = -np.inf


def segment_lse(values: np.ndarray, seg: np.ndarray, n: int) -> np.ndarray:
    """log-sum-exp of ``values`` grouped by ``seg`` (any order) into ``n`` bins; -inf where empty.

    One shift by the overall maximum serves every bin that stays within about 575 nats of it
    (vectorised); bins far below it are summed again on their own scale, so they never underflow.
    """
    out = np.full(n, NEG)
    finite = np.isfinite(values)
    if not finite.any():
        return out
    m = values[finite].max()
    with np.errstate(invalid="ignore"):
        sums = np.bincount(seg, np.exp(values - m), minlength=n)
    with np.errstate(divide="ignore"):
        out = np.log(sums) + m
    low = np.zeros(n, dtype=bool)
    low[seg[finite]] = True
    low &= sums < 1e-250  # bins with mass that the shared shift pushes into (or past) underflow
    if low.any():
        sel = finite & low[seg]
        mx = np.full(n, NEG)
        np.maximum.at(mx, seg[sel], values[sel])
        redo = np.bincount(seg[sel], np.exp(values[sel] - mx[seg[sel]]), minlength=n)
        out[low] = np.log(redo[low]) + mx[low]
    return out


def _segment_max(values: np.ndarray, seg: np.ndarray, n: int) -> np.ndarray:
    out = np.full(n, NEG)
    np.maximum.at(out, seg, values)
    return out


def run_chains_sparse(
    auto: Any,
    committed: list[np.ndarray],
    logP: np.ndarray,
    *,
    noise: np.ndarray | None,
    logP_conf: np.ndarray | None = None,
    need_weights: bool = True,
) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`~dlmprompt.sampling.chain.run_chains` for a
    :class:`~dlmprompt.constraints.grounded.SparseTokenAutomaton`: (classes, constrained weights)."""
    q, c_n = auto.n_states, auto.n_classes
    src, cls, dst = auto.src.astype(np.int64), auto.cls.astype(np.int64), auto.dst.astype(np.int64)
    final = np.where(auto.accept, 0.0, NEG)
    by_class: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def of_class(c: int) -> tuple[np.ndarray, np.ndarray]:
        hit = by_class.get(c)
        if hit is None:
            sel = cls == c
            hit = by_class[c] = (src[sel], dst[sel])
        return hit

    def backward(com: np.ndarray, lp: np.ndarray, maximize: bool) -> np.ndarray:
        n = len(com)
        beta = np.full((n + 1, q), NEG)
        beta[n] = final
        k = int((com < 0).sum())
        for j in range(n - 1, -1, -1):
            c = int(com[j])
            if c >= 0:
                s_c, d_c = of_class(c)
                beta[j, s_c] = beta[j + 1, d_c]
                continue
            k -= 1
            vals = lp[k, cls] + beta[j + 1, dst]
            beta[j] = _segment_max(vals, src, q) if maximize else segment_lse(vals, src, q)
        return beta

    classes_out: list[np.ndarray] = []
    logw_out: list[np.ndarray] = []
    at = 0
    lo = np.searchsorted(src, np.arange(q + 1))  # the edges of state s: lo[s]:lo[s+1]
    for com in committed:
        m = int((com < 0).sum())
        lp = logP[at : at + m]
        g = None if noise is None else noise[at : at + m]
        beta = backward(com, lp, maximize=noise is None)
        if not np.isfinite(beta[0, auto.start]):
            raise DLMPromptError(
                f"internal error: slot with {auto.description} cannot be completed from its committed "
                "tokens; please report this with the prompt"
            )
        picked = np.empty(m, dtype=np.int64)
        s, k = auto.start, 0
        for j in range(len(com)):
            c = int(com[j])
            if c < 0:
                e = slice(lo[s], lo[s + 1])
                scores = lp[k, cls[e]] + beta[j + 1, dst[e]]
                if g is not None:
                    scores = scores + g[k, cls[e]]
                best = int(np.argmax(scores))
                if not np.isfinite(scores[best]):
                    raise DLMPromptError(
                        f"internal error: no valid token for a slot with {auto.description}; please report this"
                    )
                c = int(cls[e][best])
                s = int(dst[e][best])
                picked[k] = c
                k += 1
            else:
                e = slice(lo[s], lo[s + 1])
                s = int(dst[e][cls[e] == c][0])
        classes_out.append(picked)
        if need_weights:
            conf = lp if logP_conf is None else logP_conf[at : at + m]
            beta_c = beta if (logP_conf is None and noise is not None) else backward(com, conf, maximize=False)
            z = beta_c[0, auto.start]
            alpha = np.full(q, NEG)
            alpha[auto.start] = 0.0
            logw = np.full((m, c_n), np.nan)
            k = 0
            for j in range(len(com)):
                c = int(com[j])
                if c >= 0:
                    s_c, d_c = of_class(c)
                    alpha = segment_lse(alpha[s_c], d_c, q)
                    continue
                logw[k] = segment_lse(alpha[src] + beta_c[j + 1, dst], cls, c_n) - z
                alpha = segment_lse(alpha[src] + conf[k, cls], dst, q)
                k += 1
            logw_out.append(logw)
        at += m
    classes = np.concatenate(classes_out) if classes_out else np.zeros(0, dtype=np.int64)
    logw_all = (np.concatenate(logw_out) if logw_out else np.zeros((0, c_n))) if need_weights else None
    return classes, logw_all
