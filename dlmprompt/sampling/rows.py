"""The state both sampler paths share: a :class:`Row` (one program being denoised, its canvas,
generator, schedule and chains), the per-automaton token-class tensors, logits cleaning, Gumbel
noise, per-row generators and the check of a denoiser's logits. The host loop (:mod:`.sampler`),
the device path (:mod:`.devicepath`), the batching engine and block diffusion all build on it."""

from __future__ import annotations

import weakref
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dlmprompt.compiler import Program, SlotLayout
from dlmprompt.constraints.automaton import TokenAutomaton
from dlmprompt.denoiser import describe
from dlmprompt.errors import BackendError
from dlmprompt.sampling import adaptive
from dlmprompt.sampling.adaptive import CanvasRevision, clean_logits, fewest
from dlmprompt.sampling.chain import FLOOR, ChainResult, run_chains
from dlmprompt.sampling.events import Capture, Result, Step
from dlmprompt.sampling.remasking import make_remasking, structural_tokens

_CHUNK = 128  # rows of [chunk, V] temporaries at a time


_DENSE_LIMIT = 1 << 24  # largest V * C class-indicator matrix kept per automaton and device


class TokenClasses:
    """Per-automaton tensors on one device, built once."""

    def __init__(self, auto: TokenAutomaton, device: torch.device) -> None:
        c = auto.n_classes
        tc = torch.from_numpy(auto.token_class.astype(np.int64))
        self.index = torch.where(tc >= 0, tc, torch.full_like(tc, c)).to(device, non_blocking=True)  # dump column c
        self.token_class = tc.to(device, non_blocking=True)
        self.allowed = (tc >= 0).to(device, non_blocking=True)
        self.disallowed = torch.from_numpy(np.nonzero(auto.token_class < 0)[0]).to(device, non_blocking=True)
        self.device = device
        self.n_classes = c
        # class sums as one matrix product (no atomics into a few columns) while [V, C] stays small
        self.dense = not auto.trivial and len(tc) * c <= _DENSE_LIMIT
        self._onehot: dict[torch.dtype, torch.Tensor] = {}

    def onehot(self, dtype: torch.dtype) -> torch.Tensor:
        """[V, C] indicator of each token's class (rows of disallowed tokens are zero)."""
        hit = self._onehot.get(dtype)
        if hit is None:
            c = self.n_classes
            # (a comparison, not an indexed assignment of 1: that would wait for the device)
            hit = self.index[:, None] == torch.arange(c, device=self.device)
            hit = self._onehot[dtype] = hit.to(dtype)
            _ONEHOTS[:] = [e for e in _ONEHOTS if e[0]() is not None]
            _ONEHOTS.append((weakref.ref(self), dtype, hit.numel() * hit.element_size()))
            while sum(n for _, _, n in _ONEHOTS) > _ONEHOT_BUDGET and len(_ONEHOTS) > 1:
                ref, dt, _ = _ONEHOTS.pop(0)  # the oldest goes; it is rebuilt if used again
                owner = ref()
                if owner is not None:
                    owner._onehot.pop(dt, None)
        return hit


# the class-indicator matrices kept alive, oldest first, within a byte budget (a server may see
# many schemas; each matrix is V x C)
_ONEHOTS: list[tuple[weakref.ref[TokenClasses], torch.dtype, int]] = []


_ONEHOT_BUDGET = 1 << 30


_CLASS_CACHE: weakref.WeakKeyDictionary[TokenAutomaton, dict[str, TokenClasses]] = weakref.WeakKeyDictionary()


def token_classes(auto: TokenAutomaton, device: torch.device) -> TokenClasses:
    per_device = _CLASS_CACHE.setdefault(auto, {})
    hit = per_device.get(str(device))
    if hit is None:
        hit = per_device[str(device)] = TokenClasses(auto, device)
    return hit


def committed_classes(auto: TokenAutomaton, seg: np.ndarray, mask_id: int) -> np.ndarray:
    """The class of each committed token of a slot's canvas segment; -1 where still masked."""
    return np.where(seg == mask_id, -1, auto.token_class[seg]).astype(np.int64)


def gumbel(shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    u = torch.rand(shape, generator=g, dtype=torch.float64)
    return -torch.log(-torch.log(u.clamp_(min=1e-300)))


class Row(CanvasRevision):
    def __init__(self, row: int, program: Program, generator: torch.Generator) -> None:
        self.row = row
        self.program = program
        self.gen = generator
        self.canvas = program.layout.canvas.copy()
        self.block = 0
        self.step_in_block = 0
        self.steps = 0
        self.passes = 0
        self.sched = program.schedule
        self.strategy = make_remasking(self.sched.strategy)
        self.slot_of = program.layout.slot_of
        self.cursors: dict[int, Any] = {}
        # the canvas position of the first row of the logits a step gets (block-causal models
        # with a KV cache compute the current block only)
        self.logit_base = 0
        self.device_state: Any = None  # devicepath._RowState once the row runs on the device path
        self.positions = 0  # canvas positions the model processed, summed over passes
        # adaptive length: slot index -> how many of its positions the model sees (the rest of the
        # slot holds pad on the canvas and stays out of the forward pass)
        self.window: dict[int, int] = {}
        self.frozen: set[int] = set()  # slots that grew this step: no commits until the next pass
        self.remask = self.sched.remask
        self.remasked = 0  # positions returned to the mask so far
        self.held = np.zeros(len(self.canvas), dtype=bool)  # remasked this step: not candidates yet
        self.committed_at = np.full(len(self.canvas), -1, dtype=np.int64)  # step of each commit
        self.commit_conf = np.ones(len(self.canvas), dtype=np.float64)  # its confidence then
        self.was_remasked = np.zeros(len(self.canvas), dtype=bool)
        if self.sched.length == "adaptive":
            pad = program.pad_id
            for s in program.layout.slots:
                if s.mode != "at_most" or s.grammar is not None or s.automaton.pad_class is None or pad is None:
                    continue
                w = min(s.length, max(adaptive.ADAPTIVE_START, fewest(s.automaton, s.length)))
                self.window[s.index] = w
                self.canvas[s.start + w : s.stop] = pad
        for s in program.layout.slots:
            if s.grammar is not None:
                from dlmprompt.constraints.grammar import GrammarCursor

                self.cursors[s.index] = GrammarCursor(s.grammar, s.start, s.stop, int(program.pad_id))  # type: ignore[arg-type]

    def masked(self) -> np.ndarray:
        return (self.slot_of >= 0) & (self.canvas == self.program.mask_id)

    def uncond_canvas(self) -> np.ndarray:
        c = self.canvas.copy()
        c[self.program.layout.prompt] = self.program.mask_id
        return c

    # ------------------------------------------------------------------ one step
    def step(self, logits: torch.Tensor) -> Step:
        """One denoising step of this row alone (``forward_step`` steps rows together)."""
        return drive([self.step_phases(logits)])[0]

    def step_phases(self, logits: torch.Tensor) -> Generator[list[torch.Tensor], list[np.ndarray], Step]:
        """One denoising step as a generator. It yields what it needs, three times: the device
        tensors of its class masses (sent back as numpy arrays), its forward-backward passes
        (sent back as results), then its candidates' scores; so one transfer and one merged
        chain call per automaton serve every row of a batch."""
        prog = self.program
        v = prog.tokenizer.vocab_size
        temp = self.sched.temperature
        a, z = self.sched.blocks[self.block]
        masked = self.masked()
        in_block = np.zeros_like(masked)
        in_block[a:z] = True
        cand_pos: list[np.ndarray] = []
        cand_tok: list[torch.Tensor] = []
        cand_conf: list[torch.Tensor] = []
        cand_logq: list[torch.Tensor] = []
        need_q = self.strategy.needs_marginals
        fixed_pos: list[int] = []  # committed by grammar cursors, left to right in their slots
        fixed_tok: list[int] = []
        fixed_conf: list[float] = []
        groups: dict[int, list[tuple[SlotLayout, np.ndarray, np.ndarray]]] = {}
        for slot in prog.layout.slots:
            cursor = self.cursors.get(slot.index)
            if cursor is not None:
                if not cursor.done and a <= cursor.pos < z:
                    for p, t, cf in self._grammar_step(cursor, logits, v, temp, z):
                        fixed_pos.append(p)
                        fixed_tok.append(t)
                        fixed_conf.append(cf)
                continue
            pos = np.nonzero(masked[slot.start : slot.stop])[0] + slot.start
            if len(pos) == 0:
                continue
            want = in_block[pos] & ~self.held[pos]
            if slot.index in self.frozen:
                want[:] = False
            if not want.any():
                continue
            groups.setdefault(id(slot.automaton), []).append((slot, pos, want))
        # slots that share an automaton (one per constraint) share their tensor work
        runs = [self._group_step(members, logits, v, temp, need_q) for members in groups.values()]
        asks = [next(g) for g in runs]  # every group's pass 1 is queued before the one transfer
        got = yield [t for ask in asks for t in ask]
        outs: list[Any] = [None] * len(runs)
        chain_asks: dict[int, Any] = {}
        k = 0
        for i, (g, ask) in enumerate(zip(runs, asks)):
            try:
                chain_asks[i] = g.send(got[k : k + len(ask)])[0]  # a forward-backward pass to run
            except StopIteration as stop:  # a group without a constraint needs none
                outs[i] = stop.value
            k += len(ask)
        chains = yield list(chain_asks.values())  # the driver merges them across rows
        for (i, _), res in zip(chain_asks.items(), chains):
            outs[i] = _finish(runs[i], [res])
        for members, out in zip(groups.values(), outs):
            cand_pos.append(np.concatenate([pos[want] for _, pos, want in members]))
            cand_tok.append(out[0])
            cand_conf.append(out[1])
            if need_q:
                cand_logq.append(out[2])
        chosen = np.asarray(fixed_pos, dtype=np.int64)
        chosen_tok = np.asarray(fixed_tok, dtype=np.int64)
        chosen_conf = np.asarray(fixed_conf, dtype=np.float64)
        if cand_pos:
            positions = np.concatenate(cand_pos)
            tokens = torch.cat(cand_tok)
            conf = torch.cat(cand_conf)
            logq_all = torch.cat(cand_logq) if need_q else None
            if len(cand_pos) > 1:  # groups come by automaton: back to canvas order, for ties and draws
                order = np.argsort(positions, kind="stable")
                positions = positions[order]
                perm = torch.from_numpy(order).to(tokens.device)
                tokens, conf = tokens[perm], conf[perm]
                logq_all = logq_all[perm] if logq_all is not None else None
            score = self.strategy.score(conf, logq_all, len(positions), self.gen)
            # one transfer to the host for the whole row: scores, tokens, confidences
            (host,) = yield [torch.stack([score.double(), tokens.double(), conf.double()])]
            score_np, tok_np, conf_np = host[0], host[1].astype(np.int64), host[2]
            structural = None
            if self.sched.strategy == "structure_first":  # structural decisions before words
                structural = structural_tokens(prog.tokenizer)[tok_np]
                score_np = score_np + 2.0 * structural
            if self.sched.threshold is not None:
                pick_np = np.nonzero(conf_np >= self.sched.threshold)[0]
                if structural is not None:
                    # while structural candidates are confident enough (half the threshold),
                    # only they are committed; the words wait for the structure around them
                    first = np.nonzero(structural & (conf_np >= self.sched.threshold / 2))[0]
                    if len(first):
                        pick_np = first
                if len(pick_np) == 0 and len(chosen) == 0:
                    pick_np = np.array([int(np.argmax(score_np))])
            else:
                counts = self.sched.counts[self.block]
                k = counts[self.step_in_block] if self.step_in_block < len(counts) else len(positions)
                k = min(k, len(positions))
                # stable order: ties go to the leftmost position
                pick_np = np.argsort(-score_np, kind="stable")[:k]
            chosen = np.concatenate([chosen, positions[pick_np]])
            chosen_tok = np.concatenate([chosen_tok, tok_np[pick_np]])
            chosen_conf = np.concatenate([chosen_conf, conf_np[pick_np]])
        self.canvas[chosen] = chosen_tok
        self.committed_at[chosen] = self.steps
        self.commit_conf[chosen] = chosen_conf
        if self.window:
            self._cut_pad_tails()
        self.steps += 1
        self.step_in_block += 1
        masked = self.masked()
        while not self.done and not masked[slice(*self.sched.blocks[self.block])].any():
            self.block += 1
            self.step_in_block = 0
        return Step(
            row=self.row,
            index=self.steps - 1,
            canvas=self.canvas.copy(),
            committed=chosen,
            tokens=chosen_tok,
            confidences=chosen_conf,
            forward_passes=self.passes,
            settled=self.settled(),
        )

    def _grammar_step(
        self, cursor: Any, logits: torch.Tensor, v: int, temp: float, block_stop: int
    ) -> list[tuple[int, int, float]]:
        off = self.logit_base
        lg = clean_logits(logits[cursor.pos - off : cursor.stop - off, :v])
        if lg.shape[0] < cursor.stop - cursor.pos:  # positions past the computed window: no information
            fill = torch.zeros(cursor.stop - cursor.pos - lg.shape[0], lg.shape[1], dtype=lg.dtype, device=lg.device)
            lg = torch.cat([lg, fill])
        if temp > 0:
            lg = lg / temp
        logp = torch.log_softmax(lg.double(), dim=1).cpu().numpy()
        noise = gumbel((v,), self.gen).numpy() if temp > 0 else None
        return cursor.advance(logp, noise, block_stop)

    def _noise(self, shape: tuple[int, ...], dev: torch.device) -> torch.Tensor:
        """Gumbel noise drawn on the logits' device, float32, from a seed the row's generator gives:
        a row's stream does not depend on its batch, and nothing of size V crosses to the host."""
        seed = int(torch.randint(0, 2**62, (1,), generator=self.gen))
        g = torch.Generator(device=dev)
        g.manual_seed(seed)
        u = torch.rand(shape, generator=g, device=dev, dtype=torch.float32)
        return -torch.log(-torch.log(u.clamp_(min=1e-38)))

    def _group_step(
        self,
        members: list[tuple[SlotLayout, np.ndarray, np.ndarray]],
        logits: torch.Tensor,
        v: int,
        temp: float,
        need_q: bool,
    ) -> Generator[list[torch.Tensor], list[np.ndarray], tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
        """Candidates of every slot that shares one automaton: the class masses of all their
        masked positions in one pass, handed to the host (yielded: the caller batches the
        transfers of every group and row into one), the forward-backward pass over the slots,
        then the tokens of all wanted positions in one pass."""
        auto = members[0][0].automaton
        dev = logits.device
        cls = token_classes(auto, dev)
        c = auto.n_classes
        greedy = temp == 0
        two = temp > 0 and temp != 1.0  # tempered sampling distribution
        # a sampling distribution of its own (tempered masses, or per-class maxima when greedy)
        separate = two or (greedy and not auto.trivial)
        pos = np.concatenate([p for _, p, _ in members])
        want = np.concatenate([w for _, _, w in members])
        # rows of the logits; positions outside them (later blocks of a block-causal model) get
        # zero logits: every token equally likely, so they only count completions
        rel = pos - self.logit_base
        outside = (rel < 0) | (rel >= logits.shape[0])
        pos_t = torch.from_numpy(np.clip(rel, 0, logits.shape[0] - 1)).to(dev)
        out_t = torch.from_numpy(outside).to(dev)[:, None] if outside.any() else None
        # pass 1: log-normalisers and log class masses of every masked position of the slots
        lse = torch.empty(len(pos), dtype=torch.float32, device=dev)
        log_mass = torch.empty(len(pos), c, dtype=torch.float64, device=dev)
        log_mass_s = torch.empty(len(pos), c, dtype=torch.float64, device=dev) if separate else log_mass
        for i in range(0, len(pos), _CHUNK):
            lg = clean_logits(logits[pos_t[i : i + _CHUNK], :v])
            if out_t is not None:
                lg = lg.masked_fill(out_t[i : i + _CHUNK], 0.0)
            lse[i : i + _CHUNK] = torch.logsumexp(lg, dim=1)
            log_mass[i : i + _CHUNK] = self._log_class_mass(lg, lse[i : i + _CHUNK], cls, auto)
            if two:
                lgs = lg.double() / temp
                log_mass_s[i : i + _CHUNK] = self._log_class_mass(lgs, torch.logsumexp(lgs, dim=1), cls, auto)
            elif separate:
                log_mass_s[i : i + _CHUNK] = self.log_class_max(lg, lse[i : i + _CHUNK], cls, auto)
        (host,) = yield [torch.stack([log_mass, log_mass_s]) if separate else log_mass[None]]
        if not auto.trivial:
            # a class whose every token underflowed: redo those rows in log space (rare; one more sync)
            for k in range(host.shape[0]):
                redo = np.nonzero(np.isneginf(host[k]).any(axis=1))[0]
                if len(redo) == 0 or (k == 1 and not two):  # greedy class maxima never underflow
                    continue
                redo_t = torch.from_numpy(redo).to(dev)
                lg = clean_logits(logits[pos_t[redo_t], :v])
                if out_t is not None:
                    lg = lg.masked_fill(out_t[redo_t], 0.0)
                if k == 1:
                    lg = lg.double() / temp
                host[k][redo] = self.log_class_mass_exact(lg, torch.logsumexp(lg, dim=1), cls, auto).cpu().numpy()
        log_mass_np = np.maximum(host[0], FLOOR)
        log_mass_s_np = np.maximum(host[-1], FLOOR)
        if auto.trivial:
            classes = np.zeros(len(pos), dtype=np.int64)
            logw = -log_mass_np
        else:
            mask_id = self.program.mask_id
            committed = [committed_classes(auto, self.canvas[s.start : s.stop], mask_id) for s, _, _ in members]
            (res,) = yield [
                _ChainAsk(
                    auto,
                    committed,
                    log_mass_s_np,
                    gumbel((len(pos), c), self.gen).numpy() if temp > 0 else None,
                    log_mass_np if separate else None,
                )
            ]
            classes = res.classes
            logw = res.logw  # type: ignore[assignment]
        # pass 2: tokens, confidences (and full marginals if the strategy needs them) of candidates
        wi = np.nonzero(want)[0]
        cls_w = torch.from_numpy(classes[wi]).to(dev)
        logw_w = torch.from_numpy(logw[wi]).to(dev)  # [k, C]
        wi_t = torch.from_numpy(wi).to(dev)
        toks, confs, logqs = [], [], []
        for i in range(0, len(wi), _CHUNK):
            rows_t = wi_t[i : i + _CHUNK]
            ccls = cls_w[i : i + _CHUNK]
            lw = logw_w[i : i + _CHUNK]
            lg = clean_logits(logits[pos_t[rows_t], :v])
            # clamped: at a tiny temperature a -1e30 logit must not become -inf (then argmax could
            # land on a forbidden token when every allowed one is that unlikely)
            pert = (lg / temp).clamp_(-3e38, 3e38) + self._noise(tuple(lg.shape), dev) if temp > 0 else lg
            allowed = cls.token_class.unsqueeze(0) == ccls.unsqueeze(1)
            tok = torch.where(allowed, pert, torch.tensor(-torch.inf, dtype=pert.dtype, device=dev)).argmax(1)
            logp_tok = lg.gather(1, tok.unsqueeze(1)).squeeze(1) - lse[rows_t]
            conf = (logp_tok.double() + lw.gather(1, ccls.unsqueeze(1)).squeeze(1)).exp().clamp(max=1.0)
            toks.append(tok)
            confs.append(conf)
            if need_q:
                lw_full = torch.cat([lw, torch.full((len(rows_t), 1), -torch.inf, dtype=lw.dtype, device=dev)], 1)
                logq = (lg - lse[rows_t].unsqueeze(1)).double() + lw_full.gather(
                    1, cls.index.unsqueeze(0).expand(len(rows_t), -1)
                )
                logqs.append(logq)
        return (
            torch.cat(toks),
            torch.cat(confs),
            torch.cat(logqs) if need_q else None,
        )

    @staticmethod
    def _log_class_mass(lg: torch.Tensor, lse: torch.Tensor, cls: TokenClasses, auto: TokenAutomaton) -> torch.Tensor:
        """log of the probability summed over each class's tokens, [k, C] float64.

        In linear space: a class whose every token underflows comes out as -inf, and the caller
        redoes such rows with :meth:`log_class_mass_exact`, so a class the model dislikes by
        hundreds of nats keeps its true (tiny) relative weight."""
        p = torch.exp(lg - lse.unsqueeze(1))
        if auto.trivial:
            allowed = 1.0 - p[:, cls.disallowed].double().sum(dim=1, keepdim=True)
            return torch.log(allowed.clamp(min=0.0))
        if cls.dense:
            acc = p @ cls.onehot(p.dtype)
        else:
            acc = torch.zeros(lg.shape[0], auto.n_classes + 1, dtype=p.dtype, device=lg.device)
            acc.index_add_(1, cls.index, p)
            acc = acc[:, : auto.n_classes]
        return torch.log(acc.double())

    @staticmethod
    def log_class_mass_exact(
        lg: torch.Tensor, lse: torch.Tensor, cls: TokenClasses, auto: TokenAutomaton
    ) -> torch.Tensor:
        """:meth:`_log_class_mass` in log space (per-class maxima first): no class underflows."""
        idx = cls.index.unsqueeze(0).expand(lg.shape[0], -1)
        cmax = torch.full((lg.shape[0], auto.n_classes + 1), -torch.inf, dtype=lg.dtype, device=lg.device)
        cmax.scatter_reduce_(1, idx, lg, reduce="amax", include_self=True)
        e = torch.exp(lg - cmax.gather(1, idx))
        s = torch.zeros_like(cmax).index_add_(1, cls.index, e)
        return (torch.log(s) + cmax)[:, : auto.n_classes].double() - lse.double().unsqueeze(1)

    @staticmethod
    def log_class_max(lg: torch.Tensor, lse: torch.Tensor, cls: TokenClasses, auto: TokenAutomaton) -> torch.Tensor:
        """log-probability of each class's most likely token, [k, C] float64 (temperature 0)."""
        idx = cls.index.unsqueeze(0).expand(lg.shape[0], -1)
        cmax = torch.full((lg.shape[0], auto.n_classes + 1), -torch.inf, dtype=lg.dtype, device=lg.device)
        cmax.scatter_reduce_(1, idx, lg, reduce="amax", include_self=True)
        return cmax[:, : auto.n_classes].double() - lse.double().unsqueeze(1)

    def result(self) -> Result:
        prog = self.program
        tok = prog.tokenizer
        captures: dict[str, Capture] = {}
        pieces: list[bytes] = []
        cursor = 0
        for slot in prog.layout.slots:
            pieces.append(tok.decode_bytes(self.canvas[cursor : slot.start].tolist()))
            seg = self.canvas[slot.start : slot.stop].tolist()
            if slot.mode == "at_most" and prog.pad_id in seg:
                seg = seg[: seg.index(prog.pad_id)]
            data = tok.decode_bytes(seg)
            pieces.append(data)
            if slot.parent is None:
                captures[slot.name] = Capture(
                    name=slot.name,
                    text=data.decode("utf-8", errors="replace"),
                    tokens=tuple(seg),
                    span=(slot.start, slot.stop),
                    constraint=slot.constraint,
                )
            cursor = slot.stop
        pieces.append(tok.decode_bytes(self.canvas[cursor:].tolist()))
        for js in prog.json_slots:
            seg = [t for t in self.canvas[js.start : js.stop].tolist() if t != prog.pad_id]
            captures[js.name] = Capture(
                name=js.name,
                text=tok.decode_bytes(seg).decode("utf-8", errors="replace"),
                tokens=tuple(seg),
                span=(js.start, js.stop),
                constraint=js.constraint,
            )
        order = [s.name for s in prog.spec.slots]
        captures = {k: captures[k] for k in order if k in captures}
        return Result(
            text=b"".join(pieces).decode("utf-8", errors="replace"),
            captures=captures,
            canvas=self.canvas.copy(),
            steps=self.steps,
            forward_passes=self.passes,
            program=prog,
            canvas_positions=self.positions,
        )


@dataclass(frozen=True, eq=False)
class _ChainAsk:
    """A forward-backward pass one constraint group of one row needs (see ``run_chains``)."""

    auto: TokenAutomaton
    committed: list[np.ndarray]
    logP: np.ndarray
    noise: np.ndarray | None
    logP_conf: np.ndarray | None


def _run_chain_asks(asks: list[_ChainAsk]) -> list[Any]:
    """Run the asks, merged into one vectorised call per automaton and mode: the same draws as
    one call per ask (each slot's pass is independent of the others), fewer numpy calls."""
    results: list[Any] = [None] * len(asks)
    merged: dict[tuple[int, bool, bool], list[int]] = {}
    for i, a in enumerate(asks):
        merged.setdefault((id(a.auto), a.noise is None, a.logP_conf is None), []).append(i)
    chunks: list[list[int]] = []
    for idx in merged.values():  # at most about 2^22 chain cells (slots x classes x states) per call
        a = asks[idx[0]].auto
        cell = (a.n_classes + 1) * (a.n_states + 1)
        cur: list[int] = []
        size = 0
        for i in idx:
            n = len(asks[i].committed) * cell
            if cur and size + n > 1 << 22:
                chunks.append(cur)
                cur, size = [], 0
            cur.append(i)
            size += n
        chunks.append(cur)
    for idx in chunks:
        group = [asks[i] for i in idx]
        first = group[0]
        res = run_chains(
            first.auto,
            [c for a in group for c in a.committed],
            np.concatenate([a.logP for a in group]),
            noise=None if first.noise is None else np.concatenate([a.noise for a in group]),  # type: ignore[misc]
            logP_conf=None if first.logP_conf is None else np.concatenate([a.logP_conf for a in group]),  # type: ignore[misc]
        )
        k = 0
        for i, a in zip(idx, group):
            m = len(a.logP)
            results[i] = ChainResult(res.classes[k : k + m], None if res.logw is None else res.logw[k : k + m])
            k += m
    return results


def _finish(gen: Generator[Any, Any, Any], value: Any) -> Any:
    """Send the last value into a generator that then returns; its return value."""
    try:
        gen.send(value)
    except StopIteration as stop:
        return stop.value
    raise RuntimeError("internal error: a sampler phase asked for a third transfer")


def _fetch(tensors: list[torch.Tensor]) -> list[np.ndarray]:
    """Several device tensors on the host with one transfer (and one synchronisation)."""
    if not tensors:
        return []
    flat = torch.cat([t.reshape(-1).to(torch.float64) for t in tensors]).cpu().numpy()
    out, k = [], 0
    for t in tensors:
        out.append(flat[k : k + t.numel()].reshape(tuple(t.shape)))
        k += t.numel()
    return out


def drive(
    phases: list[Generator[list[torch.Tensor], list[np.ndarray], Step]], results: list[Step | None] | None = None
) -> list[Step]:
    """Run rows' step generators in lockstep: each round, one transfer for all of them.
    ``results`` (one entry per phase) receives each step as it finishes, so a caller knows
    which rows did step when a later round fails."""
    if results is None:
        results = [None] * len(phases)
    pending: dict[int, list[torch.Tensor]] = {}
    for i, g in enumerate(phases):
        try:
            pending[i] = next(g)
        except StopIteration as stop:
            results[i] = stop.value
    while pending:
        items = [t for ts in pending.values() for t in ts]
        if items and isinstance(items[0], _ChainAsk):
            got: list[Any] = _run_chain_asks(items)  # type: ignore[arg-type]
        else:
            got = _fetch(items)
        nxt: dict[int, list[torch.Tensor]] = {}
        k = 0
        for i, ts in pending.items():
            try:
                nxt[i] = phases[i].send(got[k : k + len(ts)])
            except StopIteration as stop:
                results[i] = stop.value
            k += len(ts)
        pending = nxt
    return results  # type: ignore[return-value]


def row_generators(generator: Any, n: int) -> list[torch.Generator]:
    if generator is None:
        base = torch.Generator()
        base.seed()
        generator = base
    if isinstance(generator, torch.Generator):
        seeds = torch.randint(0, 2**62, (n,), generator=generator).tolist()
        return [torch.Generator().manual_seed(int(s)) for s in seeds]
    if not isinstance(generator, (list, tuple)):
        raise ValueError(f"generator= takes a torch.Generator or a list of {n} of them; got {type(generator).__name__}")
    gens = list(generator)
    if len(gens) != n or not all(isinstance(g, torch.Generator) for g in gens):
        raise ValueError(f"generator= takes one torch.Generator or a list of {n} (one per program)")
    return gens


class NonFiniteLogits(BackendError):
    """The model returned no finite logit (all NaN / inf) at a position the row still has masked."""


def check_finite(
    denoiser: Any,
    logits: torch.Tensor,
    owners: Sequence[tuple[Row, bool]],
    views: dict[int, np.ndarray | None] | None = None,
) -> None:
    """Raise :class:`NonFiniteLogits` when a row's logits at one of its masked positions hold no
    finite value (sampling from them would commit arbitrary, if valid, tokens). A few NaN or
    -inf tokens among finite ones are scored as impossible, as before."""
    # one reduction over the logits (a finite maximum means a finite logit; NaN makes the maximum
    # NaN), then the exact test only at the few positions it flags
    suspect = ~torch.isfinite(logits.amax(-1))  # [rows, width]
    if not bool(suspect.any()):
        return
    hit = []
    for i, (r, uncond) in enumerate(owners):
        view = None if views is None else views.get(id(r))
        flagged = torch.nonzero(suspect[i, : len(r.canvas) if view is None else len(view)]).flatten()
        if len(flagged) == 0:
            continue
        bad = ~torch.isfinite(logits[i, flagged]).any(-1)
        at = flagged[bad].cpu().numpy()
        if view is not None:  # view index -> canvas position
            at = view[at]
        at = at[r.masked()[at]]
        if len(at):
            hit.append(f"row {r.row}{' (unconditional pass)' if uncond else ''} at positions {at[:5].tolist()}")
    if hit:
        raise NonFiniteLogits(
            f"{describe(denoiser)} returned NaN or infinite logits only ({'; '.join(hit[:3])}); nothing was committed. "
            "A half-precision model can overflow: try dtype=torch.float32 or bfloat16"
        )


def check_logits(denoiser: Any, logits: Any, rows: int, width: int, v: int) -> None:
    """A clear error for a denoiser that returns something other than logits ``[rows, width, >= v]``."""
    if not isinstance(logits, torch.Tensor):
        hint = " (a transformers model output: return its .logits)" if hasattr(logits, "logits") else ""
        raise BackendError(
            f"{describe(denoiser)} returned {type(logits).__name__}; expected a torch.Tensor of logits{hint}"
        )
    if logits.ndim != 3 or logits.shape[0] != rows or logits.shape[1] < width:
        raise BackendError(
            f"{describe(denoiser)} returned logits of shape {tuple(logits.shape)}; expected ({rows}, {width}, >= {v})"
        )
    if logits.shape[2] < v:
        raise BackendError(
            f"{describe(denoiser)} scores {logits.shape[2]} tokens but the tokenizer has {v}; "
            "use the model's own tokenizer"
        )
