"""The denoising loop: one loop for every masked-diffusion denoiser, constrained exactly.

``sample()`` yields one :class:`Step` per denoising step and row; ``generate()`` drains it into
:class:`Result` objects. Several programs of different layouts share each forward pass (rows on
the device path, ``devicepath.py``, share one pass and the other rows another); each row draws
its randomness from its own generator, so a batch gives the same results as the same programs
run one by one with the same generator.

Per step and row: the model's distribution at every masked slot position is summed into token
classes of the slot's automaton; a forward-backward pass over the slot (``chain.py``) samples one
complete valid assignment and gives constrained marginals; the schedule commits the most
confident candidates of the current block. Anchors are never candidates, never counted in a
budget, and never masked except prompt anchors in the unconditional pass of classifier-free
guidance.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from dlmprompt.compiler import Program, compile
from dlmprompt.denoiser import describe
from dlmprompt.errors import BackendError
from dlmprompt.guidance import reweight
from dlmprompt.sampling.events import Step
from dlmprompt.sampling.rows import Row, check_finite, check_logits, drive, row_generators
from dlmprompt.spec import Prompt


def _as_programs(denoiser: Any, programs: Any) -> tuple[list[Program], bool]:
    single = isinstance(programs, (Program, Prompt, dict, str))
    items = [programs] if single else list(programs)
    if not items:
        raise ValueError("no program to run")
    out: list[Program] = []
    for p in items:
        if isinstance(p, Program):
            out.append(p)
        else:
            tok = getattr(denoiser, "tokenizer", None)
            if tok is None:
                raise BackendError(
                    f"{describe(denoiser)} has no tokenizer to compile a prompt with; "
                    "compile(prompt, tokenizer) first and pass the Program"
                )
            out.append(compile(p, tok))
    if len({p.tokenizer.identity for p in out}) > 1:
        raise BackendError("programs in one batch must be compiled with the same tokenizer (the model's)")
    for p in out:
        mid = getattr(denoiser, "mask_id", None)
        if mid is not None and mid != p.mask_id:
            raise BackendError(
                f"the program was compiled with mask id {p.mask_id} but {describe(denoiser)} uses "
                f"{mid}; compile with the model's own tokenizer"
            )
    return out, single


def sample(
    denoiser: Any,
    programs: Program | Prompt | Sequence[Program | Prompt],
    *,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
) -> Iterator[Step]:
    """Denoise one program or several in shared forward passes (one for the rows on the device
    path, one for the others), yielding a :class:`Step` per row and denoising step.

    With one ``torch.Generator`` for several programs, each row gets its own generator seeded from
    it in order, exactly as if the programs ran one after another with that generator.
    """
    if hasattr(denoiser, "remote_sample"):  # a dlmprompt server (dlmprompt.remote)
        yield from denoiser.remote_sample(programs, generator)
        return
    progs, _ = _as_programs(denoiser, programs)
    gens = row_generators(generator, len(progs))
    rows = [Row(i, p, g) for i, (p, g) in enumerate(zip(progs, gens))]
    yield from _run(denoiser, rows)


def _run(denoiser: Any, rows: list[Row], events: bool = True) -> Iterator[Step]:
    """Every step of ``rows``; with ``events=False`` the device path may yield none (nothing is
    read back per step), the rows still end filled."""
    from dlmprompt.sampling import devicepath

    if hasattr(denoiser, "block_sample"):  # uniform-noise block diffusion (DiffusionGemma)
        for r in rows:
            r.fixed_length()  # its blocks have a fixed length of their own
        yield from denoiser.block_sample(rows)
        return
    # each row's path depends on its own program alone, so a batch gives what its rows give alone
    on_device = [r for r in rows if devicepath.eligible(denoiser, [r])]
    if on_device and not events:  # nothing read back until the end
        yield from devicepath.DeviceRun(denoiser, on_device).run(events)
        dev_ids = {id(r) for r in on_device}
        rows = [r for r in rows if id(r) not in dev_ids]
    if rows:  # step by step; forward_step sends device-path rows one way and the rest the other
        yield from _loop(denoiser, rows)


def _loop(denoiser: Any, rows: list[Row]) -> Iterator[Step]:
    while True:
        active = [r for r in rows if not r.done]
        if not active:
            return
        yield from forward_step(denoiser, active)


def forward_step(denoiser: Any, active: Sequence[Row]) -> list[Step]:
    """One shared forward pass over rows that may hold different programs (and CFG twins), then
    one denoising step per row. The batching engine of the server calls this with whatever rows
    are in flight. Rows on the device path share one pass and one read-back of their steps;
    the other rows share another (see ``devicepath``)."""
    from dlmprompt.sampling import devicepath

    on_device = [r for r in active if devicepath.eligible(denoiser, [r])]
    dev_ids = {id(r) for r in on_device}
    rest = [r for r in active if id(r) not in dev_ids]
    finished: list[Step | None] = [None] * len(rest)  # host rows' steps as they complete
    try:
        host_steps = _host_forward_step(denoiser, rest, finished) if rest else []
        dev_steps: list[Step] = []
        if on_device:
            dev_steps = devicepath.DeviceRun(denoiser, on_device).step(on_device) or []
    except Exception as exc:
        # which rows did step before the failure (set afresh on every failure), so that a caller
        # retrying row by row (the engine) hands those steps out instead of stepping them again;
        # a failed device step changes no row
        exc.dlmprompt_steps = {id(r): st for r, st in zip(rest, finished) if st is not None}  # type: ignore[attr-defined]
        raise
    by_row = dict(zip(map(id, [*rest, *on_device]), [*host_steps, *dev_steps]))
    return [by_row[id(r)] for r in active]


def _host_forward_step(denoiser: Any, active: Sequence[Row], finished: list[Step | None] | None = None) -> list[Step]:
    seqs: list[np.ndarray] = []
    owners: list[tuple[Row, bool]] = []
    views: dict[int, np.ndarray | None] = {}
    for r in active:
        view = views[id(r)] = r.view()  # adaptive length: the slots' windows only
        seq = r.canvas if view is None else r.canvas[view]
        seqs.append(seq)
        owners.append((r, False))
        r.passes += 1
        r.positions += len(seq)
        if r.sched.cfg_scale > 0:
            un = r.uncond_canvas()
            seqs.append(un if view is None else un[view])
            owners.append((r, True))
            r.passes += 1
            r.positions += len(seq)
    width = max(len(s) for s in seqs)
    first = active[0].program
    pad = first.pad_id if first.pad_id is not None else 0
    ids = np.full((len(seqs), width), pad, dtype=np.int64)
    att = np.zeros((len(seqs), width), dtype=bool)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
        att[i, : len(s)] = True
    device = getattr(denoiser, "device", None)
    ids_t = torch.from_numpy(ids)
    att_t = torch.from_numpy(att)
    if device is not None:
        ids_t = ids_t.to(device)
        att_t = att_t.to(device)
    with torch.no_grad():
        logits = denoiser(ids_t, att_t)
    check_logits(denoiser, logits, len(seqs), width, first.tokenizer.vocab_size)
    check_finite(denoiser, logits, owners, views)
    by_row: dict[int, list[torch.Tensor]] = {}
    for i, (r, _uncond) in enumerate(owners):
        view = views[id(r)]
        if view is None:
            by_row.setdefault(id(r), []).append(logits[i, : len(r.canvas)])
        else:  # back to canvas coordinates; positions out of the view are never read
            back = np.zeros(len(r.canvas), dtype=np.int64)
            back[view] = np.arange(len(view))
            by_row.setdefault(id(r), []).append(logits[i].index_select(0, torch.from_numpy(back).to(logits.device)))
    phases = []
    for r in active:
        parts = by_row[id(r)]
        lg = parts[0]
        guide = r.program.guidance
        if len(parts) == 2:
            s: Any = r.sched.cfg_scale
            if guide is not None and not guide.uniform:  # each slot's guidance= scales its CFG
                s = s * torch.from_numpy(guide.scale[: lg.shape[0]]).to(lg.device)[:, None]
            un = parts[1].float()
            lg = un + (s + 1.0) * (lg.float() - un)
        if guide is not None and guide.reweights:
            lg = reweight(guide, lg, r)
        r.grow(lg)
        r.do_remask(lg)
        phases.append(r.step_phases(lg))
    return drive(phases, finished)


def generate(
    denoiser: Any,
    programs: Program | Prompt | Sequence[Program | Prompt],
    *,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    on_step: Callable[[Step], None] | None = None,
) -> Any:
    """Run :func:`sample` to the end. Returns a :class:`Result`, or a list for several programs.

    ``on_step`` is called with every :class:`Step` (a progress bar, a live view).
    """
    if hasattr(denoiser, "remote_generate"):  # a dlmprompt server (dlmprompt.remote)
        return denoiser.remote_generate(programs, generator, on_step)
    progs, single = _as_programs(denoiser, programs)
    gens = row_generators(generator, len(progs))
    rows = [Row(i, p, g) for i, (p, g) in enumerate(zip(progs, gens))]
    for step in _run(denoiser, rows, events=on_step is not None):
        if on_step is not None:
            on_step(step)
    results = [r.result() for r in rows]
    return results[0] if single else results
