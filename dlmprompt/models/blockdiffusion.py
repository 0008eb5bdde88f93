"""Uniform-noise block diffusion (DiffusionGemma) with anchors and exact slot constraints.

DiffusionGemma is not a masked DLM: it encodes the prompt into a KV cache, then decodes the
answer block by block (``config.canvas_length`` positions). Each block starts as uniformly random
tokens; every step, the decoder reads the canvas and its previous (tempered) logits
(self-conditioning), the lowest-entropy positions within an entropy budget keep a token sampled
from the model, and every other position is renoised with a uniformly random token. The block's
output is the final step's argmax; it is then encoded into the cache and the next block starts.
A block ends early once its argmax is stable and its mean entropy under a threshold.

On a dlmprompt layout the text before the first slot is the prompt and blocks start at the
first slot. Anchors inside a block sit on the canvas at every step and are never renoised. A
constrained slot never takes a token its automaton forbids: its sampled tokens are one complete
valid assignment drawn by the forward-backward pass of :mod:`dlmprompt.sampling.chain` (positions of later
blocks count as free, so the slot always stays completable), and its block output is the most
probable valid assignment (max-product) rather than the raw argmax. Positions without a
constraint (``constraints=False``) follow the model exactly as transformers' ``generate`` does:
with one program and ``generator=[torch.Generator().manual_seed(s)]`` the output equals
``model.generate`` after ``torch.manual_seed(s)`` (tested), as long as ``generate`` does not stop
at an EOS: the canvas length here is the layout's, and this loop does not stop or pad at EOS.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from dlmprompt.constraints.automaton import UNCONSTRAINED
from dlmprompt.errors import BackendError
from dlmprompt.sampling.chain import FLOOR, run_chains
from dlmprompt.sampling.events import Step
from dlmprompt.sampling.rows import Row, clean_logits, committed_classes, gumbel, token_classes
from dlmprompt.tokenizer import Tokenizer


class DiffusionGemmaDenoiser:
    """A ``DiffusionGemmaForBlockDiffusion`` model driven by dlmprompt's block loop.

    Settings default to the model's generation config (``max_denoising_steps``, ``t_min``,
    ``t_max``, ``entropy_bound``, ``stability_threshold``, ``confidence_threshold``); a prompt's
    ``with_sampling(steps=k)`` sets the steps *per block* (not in all, as on masked models). The
    temperature follows the model's own linear schedule from ``t_max`` to ``t_min``; the other
    ``Sampling`` fields (temperature, threshold, tokens_per_step, block_length, strategy) are not
    used: blocks are the model's ``canvas_length`` and acceptance is its entropy bound.
    """

    family = "diffusion_gemma"

    def __init__(self, model: Any, tokenizer: Tokenizer, *, name: str | None = None, **settings: float) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.mask_id = tokenizer.require_mask()
        self.name = name or getattr(model.config, "_name_or_path", "") or type(model).__name__
        self.device = next(model.parameters()).device
        self.canvas_length = int(model.config.canvas_length)
        self.vocab_size = int(model.config.get_text_config().vocab_size)
        gc = getattr(model, "generation_config", None)
        sampler_cfg = getattr(gc, "sampler_config", None)
        found = {
            "max_denoising_steps": getattr(gc, "max_denoising_steps", None),
            "t_min": getattr(gc, "t_min", None),
            "t_max": getattr(gc, "t_max", None),
            "entropy_bound": getattr(sampler_cfg, "entropy_bound", None),
            "stability_threshold": getattr(gc, "stability_threshold", None),
            "confidence_threshold": getattr(gc, "confidence_threshold", None),
        }
        fallback = {  # transformers' own defaults
            "max_denoising_steps": 48,
            "t_min": 0.4,
            "t_max": 0.8,
            "entropy_bound": 0.1,
            "stability_threshold": 1,
            "confidence_threshold": 0.005,
        }
        defaults = {k: fallback[k] if v is None else v for k, v in found.items()}
        unknown = set(settings) - set(defaults)
        if unknown:
            raise ValueError(f"unknown DiffusionGemma settings {sorted(unknown)}; known: {sorted(defaults)}")
        self.settings = {**defaults, **settings}
        # transformers 5.24 names the cache argument `cache`; earlier releases `past_key_values`
        params = inspect.signature(model.model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        if not self.settings["t_max"] > self.settings["t_min"]:
            raise ValueError("t_max must be greater than t_min")

    def check_program(self, program: Any) -> None:
        """Raise :class:`BackendError` for what this model's loop cannot run (the server asks
        before queueing a request)."""
        _check_program(program)

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        raise BackendError(
            "DiffusionGemma decodes block by block with its own loop: use dlmprompt.generate / sample "
            "(the batching server does not drive it yet)"
        )

    def __repr__(self) -> str:
        return f"DiffusionGemmaDenoiser({self.name!r}, canvas_length={self.canvas_length}, {self.tokenizer!r})"

    # ------------------------------------------------------------------ the loop
    def block_sample(self, rows: list[Row]) -> Iterator[Step]:
        """Steps of every row; rows whose prompt length, canvas length and steps per block match
        share forward passes (groups run one after another)."""
        for r in rows:
            _check_program(r.program)
        groups: dict[tuple[int, int, int], list[Row]] = {}
        for r in rows:
            steps = r.program.spec.sampling.steps or int(self.settings["max_denoising_steps"])
            groups.setdefault((_first_slot(r), len(r.canvas), steps), []).append(r)
        for (start, _, steps), members in groups.items():
            yield from self._run_group(members, start, steps)

    @torch.no_grad()
    def _run_group(self, rows: list[Row], start: int, steps: int) -> Iterator[Step]:
        from transformers import DynamicCache

        model, dev = self.model, self.device
        c_len = self.canvas_length
        n = len(rows[0].canvas)
        b = len(rows)
        gens = [_device_generator(r.gen, dev) for r in rows]
        chain_gens = [torch.Generator().manual_seed(r.gen.initial_seed() ^ _CHAIN_SALT) for r in rows]
        cache = DynamicCache(config=model.config.get_text_config(decoder=True))
        enc_in = torch.from_numpy(np.stack([r.canvas[:start] for r in rows])).to(dev)
        enc_pos = torch.arange(0, start, dtype=torch.int32, device=dev).unsqueeze(0)
        cur = start
        while cur < n and any((r.slot_of[cur:] >= 0).any() for r in rows):
            model.model.encoder(input_ids=enc_in.contiguous(), position_ids=enc_pos, **{self._cache_arg: cache})
            dec_pos = torch.arange(cur, cur + c_len, dtype=torch.int32, device=dev).unsqueeze(0)
            span = np.arange(cur, cur + c_len)
            inside = span < n
            fixed = np.zeros((b, c_len), dtype=bool)
            anchor = np.zeros((b, c_len), dtype=np.int64)
            for i, r in enumerate(rows):
                fixed[i, inside] = r.slot_of[span[inside]] < 0
                anchor[i, inside] = r.canvas[span[inside]]
            # a row with no slot position in this block is not denoised here (and draws nothing)
            need = (inside[None, :] & ~fixed).any(axis=1)
            out = anchor
            if need.any():
                out = yield from self._denoise_block(
                    rows, cur, steps, need, inside, fixed, anchor, gens, chain_gens, cache, dec_pos
                )
            for i, r in enumerate(rows):
                keep_pos = inside & ~fixed[i]
                r.canvas[span[keep_pos]] = out[i, keep_pos]
            enc_in = torch.from_numpy(out).to(dev)
            enc_pos = dec_pos
            cur += c_len
        for r in rows:
            r.block = len(r.sched.blocks)  # done

    def _denoise_block(
        self,
        rows: list[Row],
        cur: int,
        steps: int,
        need: np.ndarray,
        inside: np.ndarray,
        fixed: np.ndarray,
        anchor: np.ndarray,
        gens: list[torch.Generator],
        chain_gens: list[torch.Generator],
        cache: Any,
        dec_pos: torch.Tensor,
    ) -> Iterator[Step]:
        """One block's denoising loop; returns the block's output tokens ``[B, C]`` (numpy).
        Only rows still denoising draw random numbers, so a row's tokens do not depend on when
        its batch mates finish."""
        model, dev, cfg = self.model, self.device, self.settings
        b, c_len = len(rows), self.canvas_length
        vocab = self.vocab_size
        emb_dtype = model.get_input_embeddings().weight.dtype
        fixed_t = torch.from_numpy(fixed).to(dev)
        anchor_t = torch.from_numpy(anchor).to(dev)
        alive = need.copy()
        finished = torch.from_numpy(~need).to(dev)

        def draw(fill: torch.Tensor, make: Any) -> torch.Tensor:
            out = fill.clone()
            for i in np.nonzero(alive)[0]:
                out[i] = make(int(i))
            return out

        walks: dict[tuple[int, int], Any] = {}  # (row, grammar slot) -> cursor after its latest greedy walk
        canvas = draw(anchor_t, lambda i: torch.randint(0, vocab, (1, c_len), device=dev, generator=gens[i])[0])
        canvas = torch.where(fixed_t, anchor_t, canvas)
        argmax = canvas
        sc: torch.Tensor | None = None
        history: torch.Tensor | None = None
        for t in range(steps, 0, -1):
            logits = model(
                decoder_input_ids=canvas,
                self_conditioning_logits=sc,
                decoder_position_ids=dec_pos,
                **{self._cache_arg: cache},
            ).logits
            temp = cfg["t_min"] + (cfg["t_max"] - cfg["t_min"]) * (
                torch.tensor(t, device=dev, dtype=torch.int32) / steps
            )
            pl = logits / temp
            probs = torch.softmax(pl, dim=-1, dtype=torch.float32)
            sampled = draw(argmax, lambda i, p=probs: torch.multinomial(p[i], 1, generator=gens[i]).squeeze(-1))
            new_argmax = torch.argmax(pl, dim=-1)
            live = np.nonzero(alive)[0]
            sampled, new_argmax = self._constrain(rows, live, cur, pl, sampled, new_argmax, chain_gens, walks)
            ent = torch.distributions.Categorical(logits=pl).entropy()
            ent = torch.where(fixed_t, torch.zeros_like(ent), ent)  # anchors cost no budget
            s_ent, s_idx = torch.sort(ent, dim=-1)
            keep = (torch.cumsum(s_ent, dim=-1) - s_ent) <= cfg["entropy_bound"]
            accept = torch.scatter(torch.zeros_like(keep), -1, s_idx, keep)
            noise = draw(canvas, lambda i: torch.randint(0, vocab, (1, c_len), device=dev, generator=gens[i])[0])
            new_canvas = torch.where(accept, sampled, noise)
            new_canvas = torch.where(fixed_t, anchor_t, new_canvas)
            new_argmax = torch.where(fixed_t, anchor_t, new_argmax)
            if not alive.all():  # finished rows are frozen
                new_argmax = torch.where(finished[:, None], argmax, new_argmax)
                new_canvas = torch.where(finished[:, None], canvas, new_canvas)
                if sc is not None:
                    pl = torch.where(finished[:, None, None], sc, pl)
            if cfg["stability_threshold"] == 0:
                stable = torch.ones(b, dtype=torch.bool, device=dev)
            else:
                if history is None:
                    k = int(cfg["stability_threshold"])
                    history = torch.full((k, b, c_len), -1, dtype=new_argmax.dtype, device=dev)
                stable = (history == new_argmax[None]).all(-1).all(0)
                history = torch.roll(history, shifts=-1, dims=0)
                history[-1] = new_argmax
            confident = torch.distributions.Categorical(logits=pl).entropy().mean(-1) < cfg["confidence_threshold"]
            finished = finished | (stable & confident)
            canvas, argmax = new_canvas, new_argmax
            sc = pl.to(emb_dtype)
            yield from self._steps(rows, cur, inside, fixed, accept, canvas, alive)
            alive = ~finished.cpu().numpy()
            if not alive.any():
                break
        for (i, index), walker in walks.items():  # the block's output is each row's last greedy walk
            rows[i].cursors[index] = walker
        return argmax.cpu().numpy()

    def _steps(
        self,
        rows: list[Row],
        cur: int,
        inside: np.ndarray,
        fixed: np.ndarray,
        accept: torch.Tensor,
        canvas: torch.Tensor,
        alive: np.ndarray,
    ) -> Iterator[Step]:
        acc = accept.cpu().numpy()
        can = canvas.cpu().numpy()
        for i, r in enumerate(rows):
            if not alive[i]:
                continue
            r.steps += 1
            r.passes += 1
            r.positions += len(r.canvas)
            view = r.canvas.copy()
            sel = inside & ~fixed[i]
            pos = np.arange(cur, cur + len(inside))[sel]
            view[pos] = np.where(acc[i, sel], can[i, sel], r.program.mask_id)
            took = acc[i, sel]
            yield Step(
                row=r.row,
                index=r.steps - 1,
                canvas=view,
                committed=pos[took],
                tokens=can[i, sel][took],
                confidences=np.full(int(took.sum()), np.nan),
                forward_passes=r.passes,
            )

    def _constrain(
        self,
        rows: list[Row],
        alive: np.ndarray,
        cur: int,
        pl: torch.Tensor,
        sampled: torch.Tensor,
        argmax: torch.Tensor,
        chain_gens: list[torch.Generator],
        walks: dict[tuple[int, int], Any],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Replace the sampled and argmax tokens of constrained slot positions in this block by a
        valid sampled assignment and the most probable valid assignment. Grammar slots leave in
        ``walks`` the cursor after their most probable walk (the block's output, if this step is
        its last)."""
        c_len = pl.shape[1]
        v = self.tokenizer.vocab_size
        dev = pl.device
        sampled, argmax = sampled.clone(), argmax.clone()
        for i in alive:
            r = rows[i]
            for slot in r.program.layout.slots:
                auto = slot.automaton
                lo, hi = max(slot.start, cur), min(slot.stop, cur + c_len)
                if lo < hi and slot.index in r.cursors:
                    self._grammar(r, slot, i, lo, hi, cur, pl, sampled, argmax, chain_gens[i], walks)
                    continue
                if lo >= hi or auto.description == UNCONSTRAINED:  # compiled with constraints=False
                    continue
                cls = token_classes(auto, dev)
                seg = r.canvas[slot.start : slot.stop]
                committed = committed_classes(auto, seg, r.program.mask_id)
                committed[lo - slot.start :] = -1  # this block and later ones are open
                m = int((committed < 0).sum())
                here = torch.arange(lo - cur, hi - cur, device=dev)
                lg = clean_logits(pl[i, here, :v])
                lse = torch.logsumexp(lg, dim=1)
                both = torch.stack(
                    [Row.log_class_mass_exact(lg, lse, cls, auto), Row.log_class_max(lg, lse, cls, auto)]
                )
                mass, cmax = both.cpu().numpy()  # one transfer
                open_later = m - (hi - lo)  # positions of later blocks: every class equally possible
                pad = np.zeros((open_later, auto.n_classes))
                lp = np.maximum(np.concatenate([mass, pad]), FLOOR)
                lp_max = np.maximum(np.concatenate([cmax, pad]), FLOOR)
                noise = gumbel((m, auto.n_classes), chain_gens[i]).numpy()
                draw = run_chains(auto, [committed], lp, noise=noise, need_weights=False).classes[: hi - lo]
                best = run_chains(auto, [committed], lp_max, noise=None, need_weights=False).classes[: hi - lo]
                allowed = cls.token_class.unsqueeze(0)
                g = torch.Generator(device=dev)
                g.manual_seed(int(torch.randint(0, 2**62, (1,), generator=chain_gens[i])))
                u = torch.rand(lg.shape, generator=g, device=dev).clamp_(min=1e-38)
                pert = lg - torch.log(-torch.log(u))
                ninf = torch.tensor(-torch.inf, device=dev)
                d = torch.from_numpy(draw).to(dev).unsqueeze(1)
                bst = torch.from_numpy(best).to(dev).unsqueeze(1)
                sampled[i, here] = torch.where(allowed == d, pert, ninf).argmax(1)
                argmax[i, here] = torch.where(allowed == bst, lg, ninf).argmax(1)
        return sampled, argmax

    def _grammar(
        self,
        r: Row,
        slot: Any,
        i: int,
        lo: int,
        hi: int,
        cur: int,
        pl: torch.Tensor,
        sampled: torch.Tensor,
        argmax: torch.Tensor,
        gen: torch.Generator,
        walks: dict[tuple[int, int], Any],
    ) -> None:
        """A grammar slot's positions in this block: two walks left to right from the cursor
        (where earlier blocks left it), one sampled and one greedy, each a prefix of a sentence
        that still closes within the slot (its later blocks' positions count as free)."""
        cursor = r.cursors[slot.index]
        pad = int(r.program.pad_id)  # type: ignore[arg-type]
        here = slice(lo - cur, hi - cur)
        if cursor.done:  # the text ended in an earlier block: pad
            sampled[i, here] = pad
            argmax[i, here] = pad
            walks[i, slot.index] = cursor
            return
        v = self.tokenizer.vocab_size
        lg = torch.log_softmax(clean_logits(pl[i, here, :v]).double(), dim=-1).cpu().numpy()
        later = np.full((slot.stop - hi, v), -np.log(v))  # positions of later blocks: uniform
        logp = np.concatenate([lg, later])  # rows for [lo, slot.stop): the cursor is at lo
        out = []
        for noise in (lambda: gumbel((v,), gen).numpy(), None):
            walker = cursor.clone()
            toks = np.full(hi - lo, pad, dtype=np.int64)
            for p, t, _ in walker.walk(logp, hi, noise):
                if p < hi:
                    toks[p - lo] = t
            out.append(torch.from_numpy(toks).to(pl.device))
            if noise is None:
                walks[i, slot.index] = walker
        sampled[i, here] = out[0]
        argmax[i, here] = out[1]


_CHAIN_SALT = 0x5DEECE66D  # the constraint draws' own stream, apart from the model's


def _device_generator(gen: torch.Generator, device: torch.device) -> torch.Generator:
    """The row's stream on the model's device (the row generator itself on the CPU)."""
    if device.type == "cpu":
        return gen
    g = torch.Generator(device=device)
    g.manual_seed(gen.initial_seed())
    return g


def _first_slot(row: Row) -> int:
    slots = np.nonzero(row.slot_of >= 0)[0]
    return int(slots[0]) if len(slots) else len(row.canvas)


def _check_program(prog: Any) -> None:
    if prog.schedule.cfg_scale > 0:
        raise BackendError("classifier-free guidance is not supported on DiffusionGemma yet")
    if prog.guidance is not None:
        raise BackendError(
            "guidance terms (bias, avoid, penalties, slot guidance= scales) are not supported on DiffusionGemma "
            "yet; remove them from the prompt's guidance"
        )
    if prog.schedule.remask is not None or prog.schedule.strategy == "structure_first":
        raise BackendError(
            "remask= and strategy='structure_first' are not supported on DiffusionGemma (its blocks are "
            "decoded by its own uniform-noise loop); remove them from the prompt's sampling"
        )
    slots = np.nonzero(prog.layout.slot_of >= 0)[0]
    if len(slots) and int(slots[0]) == 0:
        raise BackendError("DiffusionGemma needs a prompt before the first slot (at least the BOS token)")


def diffusion_gemma_tokenizer(hf_tokenizer: Any, model: Any, ids: dict[str, int]) -> Tokenizer:
    """The model's tokenizer, with a placeholder id for slot positions when it has no mask token:
    DiffusionGemma never reads it (slot positions hold noise), the compiler needs one."""
    if "mask_id" not in ids and getattr(hf_tokenizer, "mask_token_id", None) is None:
        reserved = {getattr(hf_tokenizer, k, None) for k in ("pad_token_id", "eos_token_id", "bos_token_id")}
        special = [i for i in sorted(set(getattr(hf_tokenizer, "all_special_ids", []))) if i not in reserved]
        if not special:
            raise BackendError(
                "the DiffusionGemma tokenizer has no spare special token to mark slot positions; "
                "pass mask_id= (any special token id the text never uses)"
            )
        ids = {**ids, "mask_id": special[0]}
    return Tokenizer.from_hf(hf_tokenizer, config=model.config.get_text_config(), **ids)
