"""How a row's canvas changes besides commits: adaptive slot length (windows that grow, pad
tails that leave the forward pass) and low-confidence remasking, plus which positions are
settled. :class:`~dlmprompt.sampling.rows.Row` takes these methods from :class:`CanvasRevision`;
the row's state they use (``window``, ``frozen``, ``held``, ``committed_at``, ``commit_conf``,
``was_remasked``) is set up in ``Row.__init__``."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dlmprompt.compiler import SlotLayout
from dlmprompt.constraints.automaton import TokenAutomaton

# adaptive length (``Sampling.length="adaptive"``): an "at most n" slot starts with this many
# positions (or the fewest its constraint needs) and doubles while the tail the model would pad
# (masked positions with pad at least GROW_BELOW likely) is under SLACK of its window. Measured on
# training-distribution records (seed 777, not a benchmark set): starting at 16, or growing at a
# slack of 0.4 or 0.5, gave worse values and (0.4, 0.5) windows the model is unsure in
ADAPTIVE_START = 32
GROW_BELOW = 0.5
SLACK = 0.25  # grow while fewer than this share of the window is the tail the model would pad


def fewest(auto: TokenAutomaton, up_to: int) -> int:
    """The fewest positions a padded slot of ``auto`` needs (cached per automaton and bound)."""
    cache = auto.__dict__.setdefault("_fewest", {})
    hit = cache.get(up_to)
    if hit is None:
        ok = np.nonzero(auto.feasible_lengths(up_to, first=True))[0]
        hit = cache[up_to] = int(ok[0]) if len(ok) else up_to
    return hit


def clean_logits(lg: torch.Tensor) -> torch.Tensor:
    """Finite float32 logits: a model's -inf / nan must not break argmax within a class."""
    return torch.nan_to_num(lg.float(), nan=-1e30, posinf=1e30, neginf=-1e30).clamp_(-1e30, 1e30)


class CanvasRevision:
    """Adaptive length and remasking, as methods of a row."""

    program: Any
    canvas: np.ndarray
    slot_of: np.ndarray
    sched: Any
    block: int
    steps: int
    window: dict[int, int]
    frozen: set[int]
    remask: Any
    remasked: int
    held: np.ndarray
    committed_at: np.ndarray
    commit_conf: np.ndarray
    was_remasked: np.ndarray

    @property
    def done(self) -> bool:
        return self.block >= len(self.sched.blocks)

    # ------------------------------------------------------------------ adaptive length
    def view(self) -> np.ndarray | None:
        """The canvas positions the model sees this pass (None: all of them). Adaptive slots show
        their window: positions up to their first committed pad, or up to their current length."""
        if not self.window:
            return None
        keep = np.ones(len(self.canvas), dtype=bool)
        for s in self.program.layout.slots:
            w = self.window.get(s.index)
            if w is not None and w < s.length:
                keep[s.start + w : s.stop] = False
        return None if keep.all() else np.nonzero(keep)[0]

    def grow(self, logits: torch.Tensor) -> None:
        """Lengthen every adaptive slot the model is not ready to end. Its *slack* is the run of
        positions at the end of its window that the model would rather pad (masked, pad at least
        ``GROW_BELOW`` likely); a model trained on padded slots always ends a slot with a pad or
        two, so a slack under a quarter of the window (at least 2) says the value wants more room.
        The slot then doubles, up to its ``max_tokens``; the new positions are masked (their pad
        was a placeholder: no pad had been committed in the slot) and the slot commits nothing
        until the next pass has seen them. Growing only adds positions a pad may fill, so the slot
        stays completable."""
        self.frozen = set()
        if not self.window or self.done:
            return
        prog = self.program
        pad, mask_id = int(prog.pad_id), prog.mask_id  # type: ignore[arg-type]
        a = self.sched.blocks[self.block][0]
        ask: list[tuple[SlotLayout, int]] = []
        for s in prog.layout.slots:
            w = self.window.get(s.index)
            if w is None or w >= s.length or s.start + w < a:
                continue
            if (self.canvas[s.start : s.start + w] == pad).any():
                continue  # the value has ended
            ask.append((s, w))
        if not ask:
            return
        at = np.concatenate([np.arange(s.start, s.start + w) for s, w in ask])
        lg = clean_logits(logits[torch.from_numpy(at).to(logits.device)])
        p_pad = (lg[:, pad] - torch.logsumexp(lg, dim=-1)).exp().cpu().numpy()
        k = 0
        for s, w in ask:
            seg = self.canvas[s.start : s.start + w]
            padlike = (seg == mask_id) & (p_pad[k : k + w] >= GROW_BELOW)
            k += w
            slack = w - (int(np.nonzero(~padlike)[0][-1]) + 1) if not padlike.all() else w
            if slack >= max(2, int(w * SLACK)):
                continue
            nw = min(s.length, 2 * w)
            self.canvas[s.start + w : s.start + nw] = mask_id
            self.window[s.index] = nw
            self.frozen.add(s.index)

    def fixed_length(self) -> None:
        """Give up adaptive length before the first step (a denoiser with its own loop)."""
        for s in self.program.layout.slots:
            if s.index in self.window:
                self.canvas[s.start + self.window[s.index] : s.stop] = self.program.mask_id
        self.window = {}

    def _cut_pad_tails(self) -> None:
        """After commits: an adaptive slot with a committed pad ends there (the automaton allows
        only pad after pad), so its later positions are set to pad. Once nothing before that pad
        is masked, the value is final and its pad tail but one leaves the forward pass (not
        before: the model reads a value's length from the pads after it, and cutting them early
        shortened values on training-distribution records)."""
        pad, mask_id = self.program.pad_id, self.program.mask_id
        for s in self.program.layout.slots:
            w = self.window.get(s.index)
            if w is None:
                continue
            seg = self.canvas[s.start : s.start + w]
            hit = np.nonzero(seg == pad)[0]
            if not len(hit):
                continue
            self.canvas[s.start + hit[0] + 1 : s.stop] = pad
            if hit[0] + 1 < w and not (seg[: hit[0]] == mask_id).any():
                self.window[s.index] = int(hit[0]) + 1

    # ------------------------------------------------------------------ self-correction
    def do_remask(self, logits: torch.Tensor) -> np.ndarray:
        """Low-confidence remasking (``Sampling.remask``, ReMDM's confidence rule): committed slot
        tokens of the current block whose constrained confidence when committed was below the
        policy's bound go back to the mask, the least confident first, each at most once, so the
        model predicts them again with the context that has filled in since. Only commits:
        never anchors, never grammar slots, never pads set by a pad tail cut.

        (A masked model's prediction at a position it can see is untrained, so a committed
        token's current probability is no signal: on training-distribution records it remasked
        tokens that came back unchanged, pass after pass.)"""
        self.held[:] = False
        pol = self.remask
        if pol is None or self.done:
            return np.zeros(0, dtype=np.int64)
        prog = self.program
        slot_pos = self.slot_of >= 0
        budget = int(pol.budget * int(slot_pos.sum())) - self.remasked
        if budget <= 0:
            return np.zeros(0, dtype=np.int64)
        a, z = self.sched.blocks[self.block]
        ok = slot_pos & (self.canvas != prog.mask_id) & (self.committed_at >= 0) & ~self.was_remasked
        ok &= self.committed_at <= self.steps - pol.settle
        ok &= self.commit_conf < pol.below
        ok[:a] = False
        ok[z:] = False
        for s in prog.layout.slots:
            if s.grammar is not None:
                ok[s.start : s.stop] = False
        pos = np.nonzero(ok)[0]
        if len(pos) == 0:
            return pos
        pos = pos[np.argsort(self.commit_conf[pos], kind="stable")][: min(pol.per_step, budget)]
        out = np.sort(pos)
        self.canvas[out] = prog.mask_id
        self.committed_at[out] = -1
        self.held[out] = True
        self.was_remasked[out] = True
        self.remasked += len(out)
        return out

    def settled(self) -> np.ndarray | None:
        """Which positions hold their final token (see ``Step.settled``); None when that is every
        committed position (fixed length, no remasking, or the row is done)."""
        if self.done:
            return None
        prog = self.program
        pad = prog.pad_id
        growing = [
            (s, w)
            for s in prog.layout.slots
            if (w := self.window.get(s.index)) is not None
            and w < s.length
            and not (self.canvas[s.start : s.start + w] == pad).any()
        ]
        if not growing and self.remask is None:
            return None  # the common case: no placeholder pads, nothing to remask
        out = self.canvas != prog.mask_id
        for s, w in growing:
            out[s.start + w : s.stop] = False  # placeholder pads: the slot may still grow
        if self.remask is not None:
            out &= ~((self.commit_conf < self.remask.below) & ~self.was_remasked & (self.slot_of >= 0))
        return out
