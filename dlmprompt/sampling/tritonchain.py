"""The merged forward-backward pass of ``devicechain`` as one Triton kernel (CUDA only).

One program per chain walks its positions three or four times (backward messages, the left to
right draw, the confidence distribution's backward messages when it differs, the forward
messages and class weights) with its transition table in registers and its messages in a
scratch tensor: one launch instead of some thirty small kernels per position. Imported only
where triton is; ``devicechain.run`` falls back to the torch version where it is not, where an
automaton is too large for one program's tile, or where the kernel fails to build.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

MAX_TILE = 4096  # classes x states (both padded to powers of two) of one program


@triton.jit
def _chain_kernel(
    ws_ptr,
    wc_ptr,
    nx_ptr,
    end_ptr,
    start_ptr,
    noise_ptr,
    greedy_ptr,
    beta_ptr,
    betac_ptr,
    cls_ptr,
    logw_ptr,
    ok_ptr,
    N,
    C1,
    Q1,
    HAS_NOISE: tl.constexpr,
    SEPARATE: tl.constexpr,
    BC: tl.constexpr,
    BQ: tl.constexpr,
):
    neg = float("-inf")
    s = tl.program_id(0)
    c = tl.arange(0, BC)
    q = tl.arange(0, BQ)
    cm = c < C1
    qm = q < Q1 - 1  # live states (Q1 - 1 is the dead state)
    tbase = nx_ptr + s * C1 * Q1
    nx = tl.load(tbase + c[:, None] * Q1 + q[None, :], mask=cm[:, None] & qm[None, :], other=Q1 - 1)
    end = tl.load(end_ptr + s * Q1 + q, mask=q < Q1, other=neg)
    greedy = tl.load(greedy_ptr + s) != 0
    bbase = beta_ptr + s * (N + 1) * Q1
    tl.store(bbase + N * Q1 + q, end, mask=q < Q1)
    tl.debug_barrier()
    # backward messages of the sampling distribution (max-product for greedy chains)
    for jj in range(0, N):
        j = N - 1 - jj
        wj = tl.load(ws_ptr + (s * N + j) * C1 + c, mask=cm, other=neg)
        g = tl.load(bbase + (j + 1) * Q1 + nx, mask=cm[:, None] & qm[None, :], other=neg)
        x = wj[:, None] + g
        m = tl.max(x, axis=0)
        ms = tl.maximum(m, -1e300)
        lse = tl.log(tl.sum(tl.exp(x - ms[None, :]), axis=0)) + ms
        b = tl.where(greedy, m, lse)
        b = tl.where(qm, b, neg)
        tl.store(bbase + j * Q1 + q, b, mask=q < Q1)
        tl.debug_barrier()
    # the draw, left to right
    state = tl.load(start_ptr + s)
    ok = tl.load(bbase + state) > neg
    for j in range(0, N):
        wj = tl.load(ws_ptr + (s * N + j) * C1 + c, mask=cm, other=neg)
        nxs = tl.load(tbase + c * Q1 + state, mask=cm, other=Q1 - 1)
        sc = wj + tl.load(bbase + (j + 1) * Q1 + nxs, mask=cm, other=neg)
        if HAS_NOISE:
            sc = sc + tl.load(noise_ptr + (s * N + j) * C1 + c, mask=cm, other=0.0)
        sc = tl.where(cm, sc, neg)
        best = tl.max(sc, axis=0)
        cb = tl.min(tl.where(sc == best, c, BC), axis=0)  # the first best class, as torch's argmax
        cb = tl.minimum(cb, C1 - 1)
        ok = ok & (best > neg)
        tl.store(cls_ptr + s * N + j, cb.to(tl.int64))
        state = tl.load(tbase + cb * Q1 + state)
    tl.store(ok_ptr + s, ok.to(tl.int32))
    # the confidence distribution's messages, then forward messages and class weights
    cbase = bbase
    if SEPARATE:
        cbase = betac_ptr + s * (N + 1) * Q1
        tl.store(cbase + N * Q1 + q, end, mask=q < Q1)
        tl.debug_barrier()
        for jj in range(0, N):
            j = N - 1 - jj
            wj = tl.load(wc_ptr + (s * N + j) * C1 + c, mask=cm, other=neg)
            g = tl.load(cbase + (j + 1) * Q1 + nx, mask=cm[:, None] & qm[None, :], other=neg)
            x = wj[:, None] + g
            m = tl.max(x, axis=0)
            ms = tl.maximum(m, -1e300)
            lse = tl.log(tl.sum(tl.exp(x - ms[None, :]), axis=0)) + ms
            b = lse
            b = tl.where(qm, b, neg)
            tl.store(cbase + j * Q1 + q, b, mask=q < Q1)
            tl.debug_barrier()
    start = tl.load(start_ptr + s)
    z = tl.load(cbase + start)
    alpha = tl.where(q == start, 0.0, neg).to(tl.float64)
    for j in range(0, N):
        g = tl.load(cbase + (j + 1) * Q1 + nx, mask=cm[:, None] & qm[None, :], other=neg)
        x = alpha[None, :] + g
        x = tl.where(qm[None, :], x, neg)
        m = tl.maximum(tl.max(x, axis=1), -1e300)
        lw = tl.log(tl.sum(tl.exp(x - m[:, None]), axis=1)) + m - z
        tl.store(logw_ptr + (s * N + j) * C1 + c, lw, mask=cm)
        wj = tl.load(wc_ptr + (s * N + j) * C1 + c, mask=cm, other=neg)
        y = tl.where(cm[:, None] & qm[None, :], alpha[None, :] + wj[:, None], neg)  # [BC, BQ]
        my = tl.maximum(tl.max(tl.max(y, axis=1), axis=0), -1e300)
        e = tl.exp(y - my)
        nxt = tl.zeros([BQ], dtype=tl.float64)
        for qp in range(0, Q1 - 1):
            tot = tl.sum(tl.sum(tl.where(nx == qp, e, 0.0), axis=1), axis=0)
            nxt = tl.where(q == qp, tot, nxt)
        alpha = tl.where(qm, tl.log(nxt) + my, neg)


def run(
    nx: torch.Tensor,
    end: torch.Tensor,
    start: torch.Tensor,
    w_s: torch.Tensor,
    w_c: torch.Tensor,
    noise: torch.Tensor | None,
    greedy: torch.Tensor,
    separate: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Classes [S, N], ok [S] and class weights [S, N, C1] (see ``devicechain.run``)."""
    s, n, c1 = w_s.shape
    q1 = nx.shape[2]
    dev = w_s.device
    bc = triton.next_power_of_2(c1)
    bq = triton.next_power_of_2(q1)
    beta = torch.empty((s, n + 1, q1), dtype=torch.float64, device=dev)
    beta_c = torch.empty_like(beta) if separate else beta
    classes = torch.empty((s, n), dtype=torch.int64, device=dev)
    logw = torch.empty((s, n, c1), dtype=torch.float64, device=dev)
    ok = torch.empty(s, dtype=torch.int32, device=dev)
    _chain_kernel[(s,)](
        w_s.contiguous(),
        w_c.contiguous(),
        nx.contiguous(),
        end.contiguous(),
        start.contiguous(),
        noise.contiguous() if noise is not None else w_s,
        greedy.to(torch.int32),
        beta,
        beta_c,
        classes,
        logw,
        ok,
        n,
        c1,
        q1,
        HAS_NOISE=noise is not None,
        SEPARATE=separate,
        BC=bc,
        BQ=bq,
        num_warps=4,
    )
    return classes, ok != 0, logw


def fits(c1: int, q1: int) -> bool:
    return triton.next_power_of_2(c1) * triton.next_power_of_2(q1) <= MAX_TILE
