"""Block-causal block diffusion (LLaDA2.x, SDAR, Fast-dLLM v2 style) with finished blocks in a KV cache.

These masked DLMs attend **causally between blocks** of ``block_length`` canvas positions and
bidirectionally inside one: position p sees position q when ``q // B <= p // B``. Their code ships
with the checkpoint and loads with ``AutoModelForCausalLM`` (``trust_remote_code=True``); the
forward pass takes ``input_ids``, a 4D additive ``attention_mask`` ``[batch, 1, queries, keys]``,
``position_ids``, ``past_key_values`` (a transformers ``Cache``) and ``use_cache``, as LLaDA2's
own ``generate`` calls it.

Because a block never sees later blocks, a finished block's keys and values never change: they go
into a KV cache once, and each denoising step runs the model over the **current block only**
(``kv_cache=True``, the default). The result is the same as running the whole prefix every step
(``kv_cache=False``, what LLaDA2's reference ``generate`` does); a test checks both give the same
outputs.

On a dlmprompt layout the blocks are the model's own: canvas positions ``[kB, (k+1)B)``. The
sampler's schedule is realigned to them (:func:`dlmprompt.compiler.aligned_schedule`): blocks are
decoded one after another, each with the prompt's steps / threshold, and every slot keeps its
exact constraint (a slot that spans blocks is one chain: positions of later blocks still count
when its completions are counted, so it always stays completable). Anchors anywhere are fixed
text; an anchor in a later block is not seen by earlier blocks (the model's attention, not a
choice here). Slots keep their fixed lengths (adaptive length, the default, does not apply).
Remasking, classifier-free guidance and guidance terms are not available on this family yet
(they change committed positions or need a second pass over the cache): they are refused with a
clear error. ``edit_threshold`` turns on LLaDA2.1's token editing inside the current block.

``denoiser(ids, attention_mask)`` (the :class:`~dlmprompt.denoiser.Denoiser` seam) runs the whole
canvas under the block-causal mask: the batching server drives the family that way, without the
cache.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from dlmprompt.errors import BackendError
from dlmprompt.sampling.events import Step
from dlmprompt.sampling.rows import Row, clean_logits, drive
from dlmprompt.tokenizer import Tokenizer

DEFAULT_BLOCK = 32  # LLaDA2's generate default


def config_block_length(config: Any) -> int | None:
    """The block length a config names (``block_length``, SDAR's ``block_size``), if any."""
    for key in ("block_length", "block_size", "bd_size"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


class BlockCausalDenoiser:
    """A block-causal masked DLM decoded block by block, finished blocks in a KV cache."""

    family = "block_causal"
    shift = False
    host_attention_mask = True

    def __init__(
        self,
        model: Any,
        tokenizer: Tokenizer,
        *,
        block_length: int | None = None,
        kv_cache: bool = True,
        edit_threshold: float | None = None,
        name: str | None = None,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.mask_id = tokenizer.require_mask()
        self.name = name or getattr(model.config, "_name_or_path", "") or type(model).__name__
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        b = block_length if block_length is not None else config_block_length(model.config) or DEFAULT_BLOCK
        if not isinstance(b, int) or b <= 0:
            raise ValueError(f"block_length must be a positive number of positions, got {b!r}")
        self.block_length = b
        self.kv_cache = bool(kv_cache)
        if edit_threshold is not None and not 0.0 < edit_threshold <= 1.0:
            raise ValueError(f"edit_threshold is a probability in (0, 1], got {edit_threshold!r}")
        self.edit_threshold = edit_threshold

    def __repr__(self) -> str:
        return (
            f"BlockCausalDenoiser({self.name!r}, block_length={self.block_length}, "
            f"kv_cache={self.kv_cache}, {self.tokenizer!r})"
        )

    # ------------------------------------------------------------------ masks and passes
    def block_mask(self, q0: int, q1: int, keys: int, key_ok: torch.Tensor | None = None) -> torch.Tensor:
        """The additive mask of queries at canvas positions ``[q0, q1)`` over keys ``[0, keys)``:
        0 where the query's block is at or after the key's, the dtype's minimum elsewhere and at
        keys ``key_ok`` marks False (batch padding). Shape ``[batch or 1, 1, q1 - q0, keys]``."""
        b = self.block_length
        qb = torch.arange(q0, q1, device=self.device) // b
        kb = torch.arange(keys, device=self.device) // b
        ok = (kb[None, :] <= qb[:, None])[None, None]
        if key_ok is not None:
            ok = ok & key_ok.to(self.device).bool()[:, None, None, :]
        zero = torch.zeros((), dtype=self.dtype, device=self.device)
        low = torch.tensor(torch.finfo(self.dtype).min, dtype=self.dtype, device=self.device)
        return torch.where(ok, zero, low)

    def _forward(self, ids: torch.Tensor, q0: int, mask: torch.Tensor, cache: Any) -> tuple[torch.Tensor, Any]:
        pos = torch.arange(q0, q0 + ids.shape[1], device=self.device)[None].expand(ids.shape[0], -1)
        with torch.inference_mode():
            out = self.model(
                input_ids=ids.to(self.device),
                attention_mask=mask,
                position_ids=pos,
                past_key_values=cache,
                use_cache=cache is not None,
            )
        logits = out.logits if hasattr(out, "logits") else out[0]
        return logits, getattr(out, "past_key_values", None) if cache is not None else None

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The whole canvas under the block-causal mask (no cache)."""
        n = input_ids.shape[1]
        key_ok = None if bool(attention_mask.all()) else attention_mask
        logits, _ = self._forward(input_ids, 0, self.block_mask(0, n, n, key_ok), None)
        return logits

    # ------------------------------------------------------------------ the loop
    def block_sample(self, rows: list[Row]) -> Iterator[Step]:
        """Steps of every row, block by block; rows with the same canvas length share passes."""
        for r in rows:
            self.prepare_row(r)
        groups: dict[int, list[Row]] = {}
        for r in rows:
            groups.setdefault(len(r.canvas), []).append(r)
        for members in groups.values():
            yield from self._run_group(members)

    def check_program(self, program: Any) -> None:
        """Raise :class:`BackendError` for what this family cannot run (the server asks before
        queueing a request)."""
        _check_program(program, self)

    def prepare_row(self, r: Row) -> None:
        """Refuse what the family cannot do; put the row's blocks on the model's own."""
        from dlmprompt.compiler import aligned_schedule

        _check_program(r.program, self)
        r.fixed_length()
        r.sched = aligned_schedule(r.program, self.block_length)
        r.block = 0
        r.step_in_block = 0

    def _run_group(self, rows: list[Row]) -> Iterator[Step]:
        b = self.block_length
        n = len(rows[0].canvas)
        caches: dict[int, tuple[int, list[tuple[torch.Tensor, torch.Tensor]] | None]] = {id(r): (0, None) for r in rows}
        while True:
            active = [r for r in rows if not r.done]
            if not active:
                return
            by_window: dict[int, list[Row]] = {}
            for r in active:
                a = r.sched.blocks[r.block][0]
                by_window.setdefault(a - a % b, []).append(r)
            for start, members in sorted(by_window.items()):
                stop = min(start + b, n)
                if self.kv_cache:
                    self._extend(members, start, caches)
                    logits = self._window(members, start, stop, caches)
                else:
                    ids = torch.from_numpy(np.stack([r.canvas[:stop] for r in members]))
                    logits, _ = self._forward(ids, 0, self.block_mask(0, stop, stop), None)
                    logits = logits[:, start:stop]
                phases = []
                edits: dict[int, tuple[np.ndarray, np.ndarray]] = {}
                for i, r in enumerate(members):
                    r.logit_base = start
                    if self.edit_threshold is not None and (e := self._edit(r, logits[i], start)) is not None:
                        edits[i] = e
                    r.passes += 1
                    r.positions += stop - start if self.kv_cache else stop
                    phases.append(r.step_phases(logits[i]))
                for i, step in enumerate(drive(phases)):
                    yield _with_edits(step, edits[i]) if i in edits else step

    def _extend(self, rows: list[Row], start: int, caches: dict[int, Any]) -> None:
        """Bring every row's cache up to canvas position ``start``: one pass over the positions
        it lacks (its finished blocks, or the prompt before the first block), rows with the same
        cached length together."""
        by_len: dict[int, list[Row]] = {}
        for r in rows:
            have = caches[id(r)][0]
            if have < start:
                by_len.setdefault(have, []).append(r)
        for have, members in by_len.items():
            ids = torch.from_numpy(np.stack([r.canvas[have:start] for r in members]))
            cache = self._cache([caches[id(r)][1] for r in members])
            _, cache = self._forward(ids, have, self.block_mask(have, start, start), cache)
            layers = _layers(cache)
            for i, r in enumerate(members):
                caches[id(r)] = (start, [(k[i : i + 1], v[i : i + 1]) for k, v in layers])
                r.positions += start - have
                r.passes += 1  # a pass over the finished blocks (counted: it is model time)

    def _window(self, rows: list[Row], start: int, stop: int, caches: dict[int, Any]) -> torch.Tensor:
        ids = torch.from_numpy(np.stack([r.canvas[start:stop] for r in rows]))
        cache = self._cache([caches[id(r)][1] for r in rows])
        logits, _ = self._forward(ids, start, self.block_mask(start, stop, stop), cache)
        return logits  # the cache now holds this window too; it is dropped, the row's own stays

    @staticmethod
    def _cache(per_row: list[list[tuple[torch.Tensor, torch.Tensor]] | None]) -> Any:
        from transformers import DynamicCache

        if per_row[0] is None:
            return DynamicCache()
        layers = [
            (torch.cat([r[j][0] for r in per_row]), torch.cat([r[j][1] for r in per_row]))  # type: ignore[index]
            for j in range(len(per_row[0]))
        ]
        return DynamicCache(ddp_cache_data=layers)

    def _edit(self, r: Row, logits: torch.Tensor, start: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Token editing (LLaDA2.1's token-to-token step): a slot token committed earlier in the
        current block is replaced by the model's most likely token when that one differs and has
        probability at least ``edit_threshold``, if the slot stays completable with it (checked on
        its automaton, most probable edit first). Grammar slots (left to right) and grounded
        slots are left alone. Returns (positions, new tokens), or None when nothing changed."""
        a, z = r.sched.blocks[r.block]
        prog = r.program
        seg = r.canvas[a:z]
        pos = np.nonzero((r.slot_of[a:z] >= 0) & (seg != prog.mask_id))[0] + a
        slots = prog.layout.slots
        pos = np.array(
            [p for p in pos if r.slot_of[p] not in r.cursors and hasattr(slots[r.slot_of[p]].automaton, "next_state")],
            dtype=np.int64,
        )
        if len(pos) == 0:
            return None
        v = prog.tokenizer.vocab_size
        lg = clean_logits(logits[torch.from_numpy(pos - start).to(logits.device), :v]).float()
        prob, best = torch.softmax(lg, dim=-1).max(dim=-1)
        prob_np, best_np = prob.cpu().numpy(), best.cpu().numpy()
        want = np.nonzero((best_np != r.canvas[pos]) & (prob_np >= float(self.edit_threshold)))[0]  # type: ignore[arg-type]
        done_pos, done_tok = [], []
        for k in want[np.argsort(-prob_np[want], kind="stable")]:
            p, t = int(pos[k]), int(best_np[k])
            slot = slots[r.slot_of[p]]
            old = int(r.canvas[p])
            r.canvas[p] = t
            if completable(slot.automaton, r.canvas[slot.start : slot.stop], prog.mask_id):
                done_pos.append(p)
                done_tok.append(t)
            else:
                r.canvas[p] = old
        if not done_pos:
            return None
        return np.asarray(done_pos, dtype=np.int64), np.asarray(done_tok, dtype=np.int64)


def completable(auto: Any, seg: np.ndarray, mask_id: int) -> bool:
    """Whether a slot's canvas segment (committed tokens, ``mask_id`` where open) has a
    completion its automaton accepts: the set of reachable states, position by position (an
    open position takes any class)."""
    ns, acc = auto.next_state, auto.accept
    cur = np.zeros(ns.shape[1], dtype=bool)
    cur[auto.start] = True
    for tok in seg.tolist():
        if tok == mask_id:
            nxt = ns[:, cur]
        else:
            c = int(auto.token_class[tok])
            if c < 0:
                return False
            nxt = ns[c, cur]
        cur = np.zeros(ns.shape[1], dtype=bool)
        cur[nxt[nxt >= 0]] = True
        if not cur.any():
            return False
    return bool((cur & acc).any())


def _with_edits(step: Step, edits: tuple[np.ndarray, np.ndarray]) -> Step:
    """The step with its row's token edits of this pass among its commits (confidence NaN)."""
    pos, tok = edits
    keep = ~np.isin(pos, step.committed)
    return dataclasses.replace(
        step,
        committed=np.concatenate([pos[keep], step.committed]),
        tokens=np.concatenate([tok[keep], step.tokens]),
        confidences=np.concatenate([np.full(int(keep.sum()), np.nan), step.confidences]),
    )


def _layers(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    if cache is None:
        raise BackendError("the model returned no past_key_values with use_cache=True; load it with kv_cache=False")
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return [(k, v) for k, v in cache]  # a legacy tuple of (key, value) per layer


def _check_program(program: Any, den: BlockCausalDenoiser) -> None:
    what = None
    if program.schedule.cfg_scale > 0:
        what = "classifier-free guidance (cfg_scale)"
    elif program.schedule.remask is not None:
        what = "remasking"
    elif program.guidance is not None and program.guidance.reweights:
        what = "guidance terms"
    if what is not None:
        raise BackendError(
            f"{what} is not available on block-causal models ({den.name}) yet: drop it from the prompt's "
            "sampling settings, or use a bidirectional model"
        )
