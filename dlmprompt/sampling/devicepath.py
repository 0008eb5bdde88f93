"""The sampler's device path: whole denoising steps as tensor work on the model's device.

The host path (``rows.Row.step_phases``) reads the model's class masses back to the host,
runs the forward-backward pass in numpy and picks the positions to commit there: two
transfers and a wait per step, while the GPU idles. This path keeps the canvas on the device and
does every part of a step there: class masses, the forward-backward pass of every constrained
slot (``devicechain.py``), token draws, confidences, the choice of positions and the canvas
update. The host only counts: how many positions each row commits per step follows from its
schedule. Nothing is read back per step unless the caller asked for the step's event
(``sample()`` yields one per step; ``generate()`` without ``on_step`` reads the canvases once, at
the end; the batching engine reads one step of all its rows per iteration), so the host queues
step after step while the device works.

Same algorithm and the same guarantees as the host path (every committed token belongs to one
complete valid assignment of its slot); different random streams (each row seeds a device
generator from its own generator once, so a batch still gives what its rows give alone), and
class masses are float32 sums taken relative to each position's best allowed token (of the
tempered distribution when sampling at a temperature): a class whose tokens all lie more than
about e^-160 below that token counts as a zero-probability class (the floor weight: still
possible, chosen only when nothing likelier is) instead of keeping its exact tiny weight, which
the host path keeps.

Used on CUDA devices for rows without grammar slots, remasking, structure_first, guidance terms
beyond CFG or an adaptive slot shorter than its ``max_tokens`` (adaptive rows whose slots fit
their first window run here at fixed length: the pad-tail cut is the host path's); everything
else runs the host path. With a confidence threshold
the device picks how many positions each row commits (every candidate at least that sure, at
least one), and the host reads that count back with the step (one small transfer per step,
which a fixed step count does not need). ``DLMPROMPT_SAMPLER=device`` forces it on
any device (the CPU tests run it so), ``host`` turns it off.
"""

from __future__ import annotations

import itertools
import os
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dlmprompt.constraints.automaton import TokenAutomaton
from dlmprompt.errors import DLMPromptError
from dlmprompt.sampling import devicechain as dc
from dlmprompt.sampling.chain import FLOOR
from dlmprompt.sampling.rows import Row, check_logits, clean_logits, token_classes

_CHUNK = 1024  # positions of [chunk, V] temporaries at a time
# class masses are float32 sums of exp(logit - best allowed logit + 60): no overflow (V e^60 is
# far below float32's limit), and classes down to about e^-160 of the best allowed token keep
# their exact weight
_SHIFT = 60.0


def eligible(denoiser: Any, rows: Sequence[Any]) -> bool:
    """Whether ``rows`` run on the device path (see the module docstring)."""
    mode = os.environ.get("DLMPROMPT_SAMPLER", "auto").lower()
    if mode not in ("auto", "device", "host"):
        raise ValueError(f"DLMPROMPT_SAMPLER={mode!r}: use auto, device or host")
    if mode == "host" or hasattr(denoiser, "block_sample"):
        return False
    for r in rows:
        if r.device_state is not None:  # a row that started on the device path stays there
            continue
        if r.cursors or r.steps or r.block:
            return False
        if any(getattr(s.automaton, "sparse", False) for s in r.program.layout.slots):
            return False  # edge-list automata (grounded slots over long texts) run on the host
        if r.program.guidance is not None:
            return False  # guidance terms beyond CFG (dlmprompt.guidance) run on the host
        if r.remask is not None or r.sched.strategy == "structure_first":
            return False  # remasking and structure first run on the host
        if any(w < s.length for s in r.program.layout.slots if (w := r.window.get(s.index)) is not None):
            return False  # an adaptive slot shorter than its max_tokens (it may grow) runs on the host
    if mode == "device":
        return True
    dev = getattr(denoiser, "device", None)
    return dev is not None and torch.device(dev).type == "cuda"


# ----------------------------------------------------------------------------- static plans


@dataclass
class _RowBlock:
    """What one program needs in one block, as arrays (merged into batch plans on demand).

    Mass positions (every position of a constrained slot meeting the block, and the in-block
    positions of unconstrained slots) come grouped by automaton; candidates are the in-block slot
    positions in canvas order."""

    autos: list[TokenAutomaton]  # distinct automata here
    chain_auto: np.ndarray  # [S] index into autos, per constrained slot
    chain_pos: np.ndarray  # [S, N] canvas positions (padded with 0)
    chain_len: np.ndarray  # [S]
    m_pos: np.ndarray  # [P] canvas position
    m_auto: np.ndarray  # [P] index into autos
    m_chain: np.ndarray  # [P] chain, or -1 for an unconstrained slot's position
    m_j: np.ndarray  # [P] position within the chain, or the trivial index
    c_pos: np.ndarray  # [K] canvas position
    c_mass: np.ndarray  # [K] index into the mass arrays
    n_trivial: int


_ROW_BLOCKS: weakref.WeakKeyDictionary[Any, dict[int, _RowBlock]] = weakref.WeakKeyDictionary()


def _row_block(program: Any, block: int) -> _RowBlock:
    per = _ROW_BLOCKS.setdefault(program, {})
    hit = per.get(block)
    if hit is not None:
        return hit
    a, z = program.schedule.blocks[block]
    autos: dict[int, TokenAutomaton] = {}
    chains: list[tuple[int, np.ndarray]] = []  # (auto index, positions)
    mass: list[tuple[int, int, int, int]] = []  # (auto, canvas pos, chain or -1, j or trivial index)
    cands: list[tuple[int, int, int]] = []  # (canvas pos, chain or -1, j or trivial index)
    n_triv = 0
    for slot in program.layout.slots:
        if slot.stop <= a or slot.start >= z or slot.grammar is not None:
            continue
        ai = list(autos).index(id(slot.automaton)) if id(slot.automaton) in autos else len(autos)
        autos.setdefault(id(slot.automaton), slot.automaton)
        lo, hi = max(slot.start, a), min(slot.stop, z)
        if slot.automaton.trivial:
            for p in range(lo, hi):
                mass.append((ai, p, -1, n_triv))
                cands.append((p, -1, n_triv))
                n_triv += 1
            continue
        s = len(chains)
        chains.append((ai, np.arange(slot.start, slot.stop)))
        mass.extend((ai, p, s, p - slot.start) for p in range(slot.start, slot.stop))
        cands.extend((p, s, p - slot.start) for p in range(lo, hi))
    order = sorted(range(len(mass)), key=lambda i: mass[i][0])  # stable: grouped by automaton
    m = np.array([mass[i] for i in order], dtype=np.int64).reshape(-1, 4)
    where = {(int(x[2]), int(x[3])): k for k, x in enumerate(m)}
    n = max((len(p) for _, p in chains), default=0)
    pos = np.zeros((len(chains), n), dtype=np.int64)
    for i, (_, p) in enumerate(chains):
        pos[i, : len(p)] = p
    hit = per[block] = _RowBlock(
        list(autos.values()),
        np.array([ai for ai, _ in chains], dtype=np.int64),
        pos,
        np.array([len(p) for _, p in chains], dtype=np.int64),
        m[:, 1],
        m[:, 0],
        m[:, 2],
        m[:, 3],
        np.array([c[0] for c in cands], dtype=np.int64),
        np.array([where[(c[1], c[2])] for c in cands], dtype=np.int64),
        n_triv,
    )
    return hit


@dataclass
class _Segment:
    """Consecutive positions of a pass whose class masses come from one automaton."""

    auto: TokenAutomaton
    lo: int
    hi: int
    dest: torch.Tensor  # chain cells (s * N + j), or trivial indices
    chain: bool


@dataclass
class _Group:
    """Up to _CHUNK positions of one row, ordered by automaton: one gather and normalisation of
    their logits, then one class-mass product per automaton segment."""

    row: int
    rows: torch.Tensor  # logits rows (flat) of the positions
    urows: torch.Tensor | None  # unconditional logits rows (classifier-free guidance)
    segments: list[_Segment]
    mass_index: slice  # where their log-normalisers go in the plan's lse table


@dataclass
class _Cands:
    """One row's in-block slot positions, a chunk of them."""

    row: int
    rows: torch.Tensor  # flat index into the logits, and into the [B, width] canvas alike
    urows: torch.Tensor | None
    tc_row: torch.Tensor  # index into the plan's token-class table
    cls_idx: torch.Tensor  # into [chain cells..., trivial...]
    lse_idx: torch.Tensor
    n: int


class _Plan:
    """A batch's merged static tensors for one combination of (program, block) per row."""

    def __init__(self, rows: Sequence[Any], width: int, device: torch.device) -> None:
        dev = self.device = device
        b_n = len(rows)
        blocks = [_row_block(r.program, r.block) for r in rows]
        v = self.v = rows[0].program.tokenizer.vocab_size
        self.cfg_rows = [i for i, r in enumerate(rows) if r.sched.cfg_scale > 0]
        urow_of = {b: b_n + k for k, b in enumerate(self.cfg_rows)}
        # every distinct automaton once: its row in the token-class table
        table: dict[int, int] = {}
        autos: list[TokenAutomaton] = []
        local_to_global = []
        for rb in blocks:
            ids = []
            for a in rb.autos:
                if id(a) not in table:
                    table[id(a)] = len(autos)
                    autos.append(a)
                ids.append(table[id(a)])
            local_to_global.append(np.array(ids, dtype=np.int64))
        tc = np.stack([a.token_class[:v] for a in autos]).astype(np.int32) if autos else np.zeros((1, v), np.int32)
        self.tc = _t(tc, dev)
        # chains
        s_counts = [len(rb.chain_len) for rb in blocks]
        offsets = np.cumsum([0, *s_counts])
        self.n_chains = int(offsets[-1])
        self.n = n = max((rb.chain_pos.shape[1] for rb in blocks if len(rb.chain_len)), default=0)
        self.separate = self.any_greedy = self.all_greedy = False
        if self.n_chains:
            chain_g = np.concatenate([g[rb.chain_auto] for g, rb in zip(local_to_global, blocks) if len(rb.chain_len)])
            self.chains = dc.pack([autos[i] for i in chain_g], dev)
            pos = np.zeros((self.n_chains, n), dtype=np.int64)
            valid = np.zeros((self.n_chains, n), dtype=bool)
            for b, rb in enumerate(blocks):
                s0, s1 = offsets[b], offsets[b + 1]
                pos[s0:s1, : rb.chain_pos.shape[1]] = b * width + rb.chain_pos
                valid[s0:s1] = np.arange(n)[None, :] < rb.chain_len[:, None]
            self.chain_canvas = _t(pos, dev)
            self.chain_valid = _t(valid, dev)
            self.chain_tc = _t(chain_g * v, dev)
            temps = np.repeat([r.sched.temperature for r in rows], s_counts)
            self.greedy_chain = _t(temps == 0, dev)
            self.any_greedy = bool((temps == 0).any())
            self.all_greedy = bool((temps == 0).all())
            self.separate = bool((temps != 1.0).any())
        self.c1 = self.chains.n_classes if self.n_chains else 1
        self.n_cells = n_cells = self.n_chains * n
        triv_off = np.cumsum([0, *[rb.n_trivial for rb in blocks]])
        self.n_trivial = int(triv_off[-1])
        # per-row mass passes and candidate chunks
        self.groups: list[_Group] = []
        self.cands: list[_Cands] = []
        self.noise_shapes: list[tuple[int, int, int, int, int]] = []  # row, first chain, chains, N, C
        lse_at = 0
        for b, (r, rb) in enumerate(zip(rows, blocks)):
            is_chain = rb.m_chain >= 0
            dest = np.where(is_chain, (offsets[b] + rb.m_chain) * n + rb.m_j, triv_off[b] + rb.m_j)
            for i in range(0, len(rb.m_pos), _CHUNK):
                sl = slice(i, i + _CHUNK)
                ma = rb.m_auto[sl]
                cuts = [0, *(np.flatnonzero(np.diff(ma)) + 1).tolist(), len(ma)]
                segs = []
                for lo, hi in itertools.pairwise(cuts):
                    auto = rb.autos[int(ma[lo])]
                    segs.append(_Segment(auto, lo, hi, _t(dest[sl][lo:hi], dev), not auto.trivial))
                p = rb.m_pos[sl]
                self.groups.append(
                    _Group(
                        b,
                        _t(b * width + p, dev),
                        _t(urow_of[b] * width + p, dev) if b in urow_of else None,
                        segs,
                        slice(lse_at + i, lse_at + i + len(p)),
                    )
                )
            if len(rb.chain_len) and r.sched.temperature > 0:
                cmax = max(rb.autos[int(i)].n_classes for i in rb.chain_auto)
                self.noise_shapes.append((b, int(offsets[b]), len(rb.chain_len), rb.chain_pos.shape[1], cmax))
            cm = rb.c_mass
            cls_idx = np.where(
                rb.m_chain[cm] >= 0, (offsets[b] + rb.m_chain[cm]) * n + rb.m_j[cm], n_cells + triv_off[b] + rb.m_j[cm]
            )
            tc_row = local_to_global[b][rb.m_auto[cm]]
            chunk = _CHUNK // 4 if r.strategy.needs_marginals else _CHUNK  # [n, V] float64 marginals
            for i in range(0, len(cm), chunk):
                sl = slice(i, i + chunk)
                p = rb.c_pos[sl]
                self.cands.append(
                    _Cands(
                        b,
                        _t(b * width + p, dev),
                        _t(urow_of[b] * width + p, dev) if b in urow_of else None,
                        _t(tc_row[sl], dev),
                        _t(cls_idx[sl], dev),
                        _t(lse_at + cm[sl], dev),
                        len(p),
                    )
                )
            lse_at += len(rb.m_pos)
        self.n_mass = lse_at


def _t(a: np.ndarray, dev: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).to(dev, non_blocking=True)


_PLANS: dict[tuple[Any, ...], tuple[list[weakref.ref[Any]], _Plan]] = {}


def _plan(rows: Sequence[Any], width: int, device: torch.device) -> _Plan:
    key = (tuple((id(r.program), r.block) for r in rows), width, str(device))
    hit = _PLANS.get(key)
    if hit is not None and all(ref() is r.program for ref, r in zip(hit[0], rows)):
        return hit[1]
    plan = _Plan(rows, width, device)
    if len(_PLANS) > 64:
        _PLANS.clear()
    _PLANS[key] = ([weakref.ref(r.program) for r in rows], plan)
    return plan


# ----------------------------------------------------------------------------- one step


def _gather(flat: torch.Tensor, rows: torch.Tensor, urows: torch.Tensor | None, scale: float, v: int) -> torch.Tensor:
    """Clean float32 logits of the given flat rows (classifier-free guidance applied)."""
    lg = clean_logits(flat[rows, :v])
    if urows is not None:
        un = clean_logits(flat[urows, :v])
        lg = (un + (scale + 1.0) * (lg - un)).clamp_(-1e30, 1e30)
    return lg


def _log_mass(lg: torch.Tensor, lse: torch.Tensor, cls: Any, trivial: bool) -> torch.Tensor:
    """log class masses [n, C] float64 of logits ``lg`` normalised by ``lse``, floored.

    Summed relative to each position's best *allowed* token, so the classes the constraint leaves
    keep their weights however far a forbidden token stands above them (see the module docstring)."""
    x = torch.where(cls.allowed, lg, -torch.inf)
    m = x.amax(dim=1, keepdim=True).clamp_(min=-1e30)
    p = x.sub_(m).add_(_SHIFT).exp_()  # forbidden tokens: 0
    if trivial:
        acc = p.sum(dim=1, keepdim=True)
    elif cls.dense:
        acc = p @ cls.onehot(p.dtype)
    else:  # a large V x C indicator: add into the class columns instead
        acc = torch.zeros(p.shape[0], cls.n_classes + 1, dtype=p.dtype, device=p.device)
        acc = acc.index_add_(1, cls.index, p)[:, : cls.n_classes]
    shift = (m.squeeze(1) - lse).double()[:, None] - _SHIFT
    return acc.double().log_().add_(shift).clamp_(min=FLOOR)


@dataclass(eq=False)
class _RowState:
    """A row's device-side state: its canvas on the device, its device generator, and the
    host's count of its masked positions per block."""

    canvas: torch.Tensor  # int64 [L]
    prompt: torch.Tensor  # bool [L]: anchors the unconditional pass of guidance masks
    gen: torch.Generator
    block_masked: list[int]  # masked positions of each block at its start
    left: int  # masked positions left in the current block

    @classmethod
    def of(cls, r: Any, device: torch.device) -> _RowState:
        st = r.device_state
        if st is None:
            g = torch.Generator(device=device)
            g.manual_seed(int(torch.randint(0, 2**62, (1,), generator=r.gen)))  # seeded once, from the row's own
            mask_id = r.program.mask_id
            blocks = [int(((r.slot_of[a:z] >= 0) & (r.canvas[a:z] == mask_id)).sum()) for a, z in r.sched.blocks]
            st = r.device_state = cls(
                _t(r.canvas.copy(), device),
                _t(r.program.layout.prompt.copy(), device),
                g,
                blocks,
                blocks[r.block] if not r.done else 0,
            )
        return st


def _internal_error() -> DLMPromptError:
    return DLMPromptError(
        "internal error: a slot could not be completed from its committed tokens on the device "
        "path; please report this with the prompt (DLMPROMPT_SAMPLER=host avoids it)"
    )


class DeviceRun:
    """Rows on the device path: :meth:`run` to the end (``sample`` / ``generate``), or
    :meth:`step` once for whatever rows are in flight (the batching engine)."""

    def __init__(self, denoiser: Any, rows: Sequence[Any]) -> None:
        self.denoiser = denoiser
        self.rows = list(rows)
        dev = getattr(denoiser, "device", None)
        self.device = torch.device(dev) if dev is not None else torch.device("cpu")
        first = rows[0].program
        self.mask_id = int(first.mask_id)
        self.pad = int(first.pad_id) if first.pad_id is not None else 0
        self.bad = torch.zeros((), dtype=torch.bool, device=self.device)  # a chain without completion
        for r in self.rows:
            if r.device_state is None:
                r.fixed_length()  # adaptive rows here fit their windows: fixed length, no pad-tail cut
            _RowState.of(r, self.device)

    # ------------------------------------------------------------------ loop
    def run(self, events: bool) -> Iterator[Any]:
        """Every step to the end; with ``events`` each step is read back and yielded as a
        :class:`~dlmprompt.sampling.events.Step`, else nothing is read back until the rows' canvases, once."""
        yield from self.steps(events)
        if not events:
            self.finish()

    def steps(self, events: bool) -> Iterator[Any]:
        """The steps; without ``events`` they queue on the device and nothing waits for them."""
        while True:
            live = [r for r in self.rows if not r.done]
            if not live:
                return
            yield from self.step(live, events) or ()

    def step(self, rows: Sequence[Any], events: bool = True) -> list[Any] | None:
        """One shared forward pass and one denoising step of ``rows``; their :class:`Step` events
        (one read-back for all of them) when ``events``, else None (nothing waits)."""
        from dlmprompt.sampling.events import Step

        states = [_RowState.of(r, self.device) for r in rows]
        ks = []
        for r, st in zip(rows, states):
            if r.sched.threshold is not None:  # up to every position left; the device decides
                ks.append(st.left)
                continue
            counts = r.sched.counts[r.block]
            k = counts[r.step_in_block] if r.step_in_block < len(counts) else st.left
            ks.append(min(k, st.left))
        lengths = [len(r.canvas) for r in rows]
        saved = [st.gen.get_state() for st in states]  # host-side seed and offset: no wait
        out = None
        thresholds = any(r.sched.threshold is not None for r in rows)
        try:
            new, picked, k_dev = self._step(rows, states, ks, lengths)
            if events or thresholds:
                # threshold rows: how many they committed is read back with the step's events
                # (or alone: the host keeps count of each block's masked positions)
                parts = [picked.reshape(-1).double()] if events else []
                host = torch.cat([*parts, k_dev.double(), self.bad.double().reshape(1)]).cpu().numpy()
                if host[-1]:
                    raise _internal_error()
                ks = [int(k) for k in host[-1 - len(rows) : -1]]
                host = host[: -1 - len(rows)].reshape(picked.shape) if events else None
        except Exception:
            for st, g in zip(states, saved):  # a failed step draws nothing either
                st.gen.set_state(g)
            raise
        # the step takes effect only now: a step that raised above leaves its rows as they were
        for b, (st, n) in enumerate(zip(states, lengths)):
            st.canvas = new[b, :n]
        for r in rows:
            r.passes += 2 if r.sched.cfg_scale > 0 else 1
            r.positions += (2 if r.sched.cfg_scale > 0 else 1) * len(r.canvas)
        if events:
            out = []
            for b, (r, k) in enumerate(zip(rows, ks)):
                pos, tok, conf = host[0][b, :k].astype(np.int64), host[1][b, :k].astype(np.int64), host[2][b, :k]
                r.canvas[pos] = tok
                out.append(
                    Step(
                        row=r.row,
                        index=r.steps,
                        canvas=r.canvas.copy(),
                        committed=pos,
                        tokens=tok,
                        confidences=conf,
                        forward_passes=r.passes,
                    )
                )
        for r, st, k in zip(rows, states, ks):
            st.left -= k
            r.steps += 1
            r.step_in_block += 1
            if st.left == 0:
                r.block += 1
                r.step_in_block = 0
                if not r.done:
                    st.left = st.block_masked[r.block]
        return out

    def finish(self) -> None:
        """Read every row's canvas back (the one wait of a run without events)."""
        parts = [_RowState.of(r, self.device).canvas for r in self.rows]
        host = torch.cat([*parts, self.bad.long().reshape(1)]).cpu().numpy()
        if host[-1]:
            raise _internal_error()
        k = 0
        for r in self.rows:
            r.canvas[:] = host[k : k + len(r.canvas)]
            k += len(r.canvas)

    # ------------------------------------------------------------------ step
    def _step(
        self, rows: Sequence[Any], states: Sequence[_RowState], ks: list[int], lengths: list[int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The step's new canvases [B, width], what it picked and how many positions each row
        commits (nothing changes yet)."""
        dev = self.device
        width = max(lengths)
        plan = _plan(rows, width, dev)
        pad = [torch.nn.functional.pad(st.canvas, (0, width - n), value=self.pad) for st, n in zip(states, lengths)]
        canvas = torch.stack(pad)
        ids = canvas
        att = np.arange(width)[None, :] < np.array(lengths)[:, None]
        if plan.cfg_rows:
            prompt = torch.stack(
                [torch.nn.functional.pad(states[b].prompt, (0, width - lengths[b])) for b in plan.cfg_rows]
            )
            cr = _t(np.array(plan.cfg_rows, dtype=np.int64), dev)
            ids = torch.cat([canvas, torch.where(prompt, self.mask_id, canvas[cr])])
            att = np.concatenate([att, att[plan.cfg_rows]])
        att_t = torch.from_numpy(att)
        if not getattr(self.denoiser, "host_attention_mask", False):
            att_t = att_t.to(dev, non_blocking=True)
        with torch.no_grad():
            logits = self.denoiser(ids, att_t)
        check_logits(self.denoiser, logits, ids.shape[0], width, plan.v)
        if logits.device != dev:  # a denoiser that hands its logits back elsewhere
            logits = logits.to(dev)
        with torch.no_grad():
            return self._sample(plan, rows, states, ks, canvas, logits[:, :width].reshape(-1, logits.shape[2]))

    def _sample(
        self,
        plan: _Plan,
        rows: Sequence[Any],
        states: Sequence[_RowState],
        ks: list[int],
        canvas: torch.Tensor,
        flat: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        dev = self.device
        v = plan.v
        b_n = len(rows)
        canvas_flat = canvas.reshape(-1)
        lse_all = torch.empty(plan.n_mass, dtype=torch.float32, device=dev)
        c1 = plan.c1
        if plan.n_chains:
            wm_c = torch.full((plan.n_cells, c1), dc.NEG, dtype=torch.float64, device=dev)
            wm_s = torch.full_like(wm_c, dc.NEG) if plan.separate else wm_c
        triv = torch.zeros(plan.n_trivial, dtype=torch.float64, device=dev)
        for g in plan.groups:
            r = rows[g.row]
            temp = r.sched.temperature
            lg = _gather(flat, g.rows, g.urows, r.sched.cfg_scale, v)
            lse = torch.logsumexp(lg, dim=1)
            lse_all[g.mass_index] = lse
            tempered = plan.separate and temp not in (0.0, 1.0)
            if tempered:
                lgs = (lg / temp).clamp_(-3e38, 3e38)
                lse_s = torch.logsumexp(lgs, dim=1)
            for seg in g.segments:
                cls = token_classes(seg.auto, dev)
                part = slice(seg.lo, seg.hi)
                lm = _log_mass(lg[part], lse[part], cls, seg.auto.trivial)
                if not seg.chain:
                    triv[seg.dest] = lm[:, 0]
                    continue
                c = seg.auto.n_classes
                wm_c[seg.dest, :c] = lm
                if not plan.separate:
                    continue
                if temp == 0:
                    lm_s = Row.log_class_max(lg[part], lse[part], cls, seg.auto).clamp_(min=FLOOR)
                elif tempered:
                    lm_s = _log_mass(lgs[part], lse_s[part], cls, False)
                else:
                    lm_s = lm
                wm_s[seg.dest, :c] = lm_s
        # the forward-backward pass of every constrained slot of every row at once
        if plan.n_chains:
            ch = plan.chains
            s_n, n = plan.n_chains, plan.n
            tok = canvas_flat[plan.chain_canvas]
            masked = (tok == self.mask_id) & plan.chain_valid
            cc = plan.tc.reshape(-1)[plan.chain_tc[:, None] + tok.clamp(0, v - 1)]
            cc = torch.where(plan.chain_valid, cc, c1 - 1)
            oh = torch.where(torch.arange(c1, device=dev) == cc[..., None], 0.0, dc.NEG).to(torch.float64)
            w_c = torch.where(masked[..., None], wm_c.view(s_n, n, c1), oh)
            w_s = torch.where(masked[..., None], wm_s.view(s_n, n, c1), oh) if plan.separate else w_c
            noise = None
            if not plan.all_greedy:
                u = torch.full((s_n, n, c1), float(np.exp(-1.0)), dtype=torch.float64, device=dev)
                for b, s0, sn, nb, cb in plan.noise_shapes:
                    draw = torch.rand((sn, nb, cb), generator=states[b].gen, dtype=torch.float64, device=dev)
                    u[s0 : s0 + sn, :nb, :cb] = draw
                noise = -torch.log(-torch.log(u.clamp_(min=1e-300)))
            greedy = plan.greedy_chain if plan.any_greedy else None
            classes, ok, logw = dc.run(ch, w_s, w_c, noise, greedy, plan.separate)
            self.bad = self.bad | ~ok.all()
            cls_all = torch.cat([classes.reshape(-1), torch.zeros(plan.n_trivial, dtype=torch.int64, device=dev)])
            lw_all = torch.cat([logw.reshape(-1, c1), self._trivial_w(triv, c1)])
        else:
            cls_all = torch.zeros(plan.n_trivial, dtype=torch.int64, device=dev)
            lw_all = self._trivial_w(triv, c1)
        # tokens, confidences and scores of every in-block slot position
        width = canvas.shape[1]
        dense = torch.full((b_n * width,), -torch.inf, dtype=torch.float64, device=dev)
        tok_d = torch.zeros(b_n * width, dtype=torch.int64, device=dev)
        conf_d = torch.zeros(b_n * width, dtype=torch.float64, device=dev)
        for cd in plan.cands:
            r = rows[cd.row]
            temp = r.sched.temperature
            gen = states[cd.row].gen
            lg = _gather(flat, cd.rows, cd.urows, r.sched.cfg_scale, v)
            lse = lse_all[cd.lse_idx]
            cls = cls_all[cd.cls_idx]
            lw = lw_all[cd.cls_idx]
            tc = plan.tc[cd.tc_row]  # [n, V]
            if temp > 0:
                u = torch.rand(lg.shape, generator=gen, dtype=torch.float32, device=dev)
                pert = (lg / temp).clamp_(-3e38, 3e38) - torch.log(-torch.log(u.clamp_(min=1e-38)))
            else:
                pert = lg
            t = torch.where(tc == cls[:, None], pert, -torch.inf).argmax(dim=1)
            logp = lg.gather(1, t[:, None]).squeeze(1) - lse
            conf = (logp.double() + lw.gather(1, cls[:, None]).squeeze(1)).exp().clamp(max=1.0)
            logq = None
            if r.strategy.needs_marginals:
                lw_ext = torch.cat([lw, torch.full((cd.n, 1), -torch.inf, dtype=lw.dtype, device=dev)], dim=1)
                logq = (lg - lse[:, None]).double() + lw_ext.gather(1, torch.where(tc >= 0, tc, c1).long())
            if r.strategy.name == "random":
                score = torch.rand(cd.n, generator=gen, dtype=torch.float64, device=dev)
            else:
                score = r.strategy.score(conf, logq, cd.n, gen).double()
            live = canvas_flat[cd.rows] == self.mask_id
            score = torch.nan_to_num(score, nan=-1e300, posinf=1e300, neginf=-1e300)
            dense[cd.rows] = torch.where(live, score, -torch.inf)
            tok_d[cd.rows] = t
            conf_d[cd.rows] = conf
        # commit the k best of each row (stable: ties go to the leftmost position)
        kmax = max(ks)
        dense = dense.view(b_n, width)
        k_t = torch.tensor(ks, dtype=torch.int64).to(dev, non_blocking=True)
        thr = [r.sched.threshold for r in rows]
        if all(t is None for t in thr):
            order = torch.sort(dense, dim=1, descending=True, stable=True).indices[:, :kmax]
        else:
            # confidence thresholds: every candidate at least this sure, best score first, and the
            # best one when none is; the count is chosen here, on the device
            thr_t = torch.tensor([2.0 if t is None else t for t in thr], dtype=torch.float64).to(dev, non_blocking=True)
            order = torch.sort(dense, dim=1, descending=True, stable=True).indices
            sure = (conf_d.view(b_n, width).gather(1, order) >= thr_t[:, None]) & (dense.gather(1, order) > -torch.inf)
            order = order.gather(1, torch.sort(sure.to(torch.int8), dim=1, descending=True, stable=True).indices)
            order = order[:, :kmax]
            is_thr = torch.tensor([t is not None for t in thr]).to(dev, non_blocking=True)
            k_t = torch.where(is_thr, torch.minimum(sure.sum(1).clamp(min=1), k_t), k_t)
        take = torch.arange(kmax, device=dev)[None, :] < k_t[:, None]
        cur = canvas.gather(1, order)
        new = torch.where(take, tok_d.view(b_n, width).gather(1, order), cur)
        picked = torch.stack([order.double(), new.double(), conf_d.view(b_n, width).gather(1, order)])
        return canvas.scatter(1, order, new), picked, k_t

    @staticmethod
    def _trivial_w(triv: torch.Tensor, c1: int) -> torch.Tensor:
        lw = torch.full((len(triv), c1), -torch.inf, dtype=torch.float64, device=triv.device)
        lw[:, 0] = -triv
        return lw
