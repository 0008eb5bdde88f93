"""Checks the fused Triton forward-backward kernel against the torch version, chain by chain.

Run as a script with TRITON_INTERPRET=1 to check it on the CPU (triton's interpreter; used by
tests/test_devicepath.py), or call ``check(device)`` on CUDA (tests/test_gpu.py).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np
import torch


def layout_weights(
    ch: Any, committed: list[np.ndarray], log_mass: list[np.ndarray], n: int | None = None
) -> np.ndarray:
    """``w`` [S, N, C1] on the host from each chain's committed classes (-1: masked) and the log
    class masses of its masked positions (the sampler builds it on the device)."""
    s, c1 = ch.n_chains, ch.n_classes
    n = n or max(len(c) for c in committed)
    w = np.full((s, n, c1), -np.inf)
    for i, (c, lm) in enumerate(zip(committed, log_mass)):
        masked = np.nonzero(c < 0)[0]
        w[i, masked, : lm.shape[1]] = lm
        fixed = np.nonzero(c >= 0)[0]
        w[i, fixed, c[fixed]] = 0.0
        w[i, len(c) :, c1 - 1] = 0.0
    return w


def _numpy24_interpreter() -> None:
    """triton 3.6's interpreter turns a loop bound into an int with ``int(array)``, which numpy
    2.4 refuses for a one-element 1-d array; read its first element instead."""
    import triton.runtime.interpreter as ti

    orig = getattr(ti, "_patch_lang_tensor", None)
    if orig is None:  # another triton: nothing to patch
        return

    def patched(tensor, scope):  # type: ignore[no-untyped-def]
        orig(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(np.asarray(self.handle.data).reshape(-1)[0]))

    ti._patch_lang_tensor = patched


def automata() -> list:  # type: ignore[type-arg]
    """Four regex automata (with pads) over a small byte tokenizer."""
    from dlmprompt import Tokenizer
    from dlmprompt.constraints.automaton import regex_automaton

    tok = Tokenizer.bytes_level(["ab", "12", "a1"])
    pats = [r"[a-z]+[0-9]{1,3}", r"(ab|a1)*x?", r"[0-9]+(\.[0-9]+)?", r"\"[A-Z][a-z]+( [A-Z][a-z]+)*\""]
    return [regex_automaton(p, tok).with_pad(tok.pad_id) for p in pats]


def random_chains(rng: np.random.Generator, autos: list, max_len: int = 8) -> tuple:  # type: ignore[type-arg]
    """1-5 chains of random automata and feasible lengths, each a valid partial canvas (a full
    valid assignment with about 60 % of it masked again), with random log class masses of the
    masked positions, a second (confidence) set and Gumbel noise."""
    from dlmprompt.sampling.chain import run_chain

    chain_autos, committed = [], []
    for _ in range(int(rng.integers(1, 6))):
        a = autos[int(rng.integers(len(autos)))]
        lengths = np.nonzero(a.feasible_lengths(max_len))[0]
        n = int(rng.choice(lengths[lengths > 0]))
        full = run_chain(
            a, np.full(n, -1), rng.normal(size=(n, a.n_classes)), noise=rng.gumbel(size=(n, a.n_classes)), want=None
        )
        c = full.classes.copy()
        c[rng.random(n) < 0.6] = -1
        chain_autos.append(a)
        committed.append(c)
    sizes = [int((c < 0).sum()) for c in committed]
    lp = [rng.normal(size=(m, a.n_classes)) * 2 for m, a in zip(sizes, chain_autos)]
    conf = [x + rng.normal(size=x.shape) for x in lp]
    noise = [rng.gumbel(size=(m, a.n_classes)) for m, a in zip(sizes, chain_autos)]
    return chain_autos, committed, sizes, lp, conf, noise


def check(device: torch.device, trials: int) -> int:
    """Random chains of four automata, partial canvases, greedy / sampling / mixed, with and
    without a separate confidence distribution: the kernel's classes and validity flags equal the
    torch version's, its class weights agree to 1e-9. Returns the number of cases checked."""
    from dlmprompt.sampling import devicechain as dc
    from dlmprompt.sampling import tritonchain as tc

    rng = np.random.default_rng(0)
    autos = automata()
    cases = 0
    for trial in range(trials):
        chain_autos, committed, _, lp, conf, noise = random_chains(rng, autos)
        if trial % 5 == 4:  # a position no completion can pass: both must flag it
            lp[0][:] = -np.inf if len(lp[0]) else 0
        ch = dc.pack(chain_autos, device)
        for mode in ("sample", "greedy", "mixed"):
            g = torch.tensor([mode == "greedy" or (mode == "mixed" and i % 2 == 0) for i in range(ch.n_chains)])
            sep = mode != "sample" or trial % 2 == 1
            ws = torch.from_numpy(layout_weights(ch, committed, lp)).to(device)
            wc = torch.from_numpy(layout_weights(ch, committed, conf if sep else lp)).to(device)
            gn = np.zeros(tuple(ws.shape))
            for i, c in enumerate(committed):
                if not g[i]:
                    gn[i, np.nonzero(c < 0)[0], : noise[i].shape[1]] = noise[i]
            nz = None if mode == "greedy" else torch.from_numpy(gn).to(device)
            g = g.to(device)
            beta = dc.backward(ch, ws, g)
            cls_t, ok_t = dc.sample(ch, ws, beta, nz)
            lw_t = dc.weights(ch, wc, dc.backward(ch, wc, None) if sep else beta)
            cls_k, ok_k, lw_k = tc.run(ch.nx, ch.end, ch.start, ws, wc, nz, g, sep)
            assert torch.equal(ok_t, ok_k), (trial, mode, ok_t, ok_k)
            rows = ok_t
            assert torch.equal(cls_t[rows], cls_k[rows]), (trial, mode, cls_t, cls_k)
            fin = torch.isfinite(lw_t[rows])
            assert torch.equal(fin, torch.isfinite(lw_k[rows])), (trial, mode)
            assert torch.allclose(lw_t[rows][fin], lw_k[rows][fin], atol=1e-9, rtol=0), (trial, mode)
            cases += 1
    return cases


if __name__ == "__main__":
    if os.environ.get("TRITON_INTERPRET") == "1":
        _numpy24_interpreter()
    n = check(torch.device(sys.argv[1] if len(sys.argv) > 1 else "cpu"), int(sys.argv[2]) if len(sys.argv) > 2 else 10)
    print(f"chain kernel: {n} cases agree")
