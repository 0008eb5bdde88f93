"""Continuous batching: requests with different layouts share forward passes.

An :class:`Engine` owns a denoiser and one worker thread. :meth:`Engine.submit` queues a compiled
program and returns a :class:`Job` at once; the worker admits queued jobs between denoising steps
(up to ``max_batch`` rows), runs one forward pass over every row in flight with
:func:`dlmprompt.sampling.sampler.forward_step` (a denoiser with a loop of its own, DiffusionGemma,
steps each job's loop in turn instead: no pass is shared between jobs), hands each job its
:class:`~dlmprompt.sampling.events.Step` and finishes the jobs whose canvases are full. A job's
result is the same as ``generate(denoiser, program, generator=torch.Generator().manual_seed(seed))``
run alone (up to float rounding of padded batches).

The queue is bounded: :meth:`submit` raises :class:`QueueFull` when ``max_queue`` jobs wait or run.
:meth:`Job.cancel` drops a job before its next step (a client that went away).
"""

from __future__ import annotations

import collections
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import torch

from dlmprompt.compiler import Program
from dlmprompt.errors import DLMPromptError
from dlmprompt.sampling.events import Result, Step
from dlmprompt.sampling.rows import Row, row_generators
from dlmprompt.sampling.sampler import forward_step


def _free_device_cache(denoiser: Any) -> None:
    dev = getattr(denoiser, "device", None)
    if dev is not None and torch.device(dev).type == "cuda":
        torch.cuda.empty_cache()


def _out_of_memory(exc: BaseException) -> bool:
    oom = getattr(torch, "OutOfMemoryError", None)
    return isinstance(exc, MemoryError) or (oom is not None and isinstance(exc, oom))


class QueueFull(DLMPromptError):
    """The engine holds ``max_queue`` jobs already; retry later."""


class Cancelled(DLMPromptError):
    """The job was cancelled before it finished."""


@dataclass(eq=False)
class Job:
    program: Program
    seed: int | None
    on_step: Callable[[Step], None] | None = None
    future: Future[Result] = field(default_factory=Future)
    cancelled: bool = False
    row: Row | None = None
    loop: Any = None  # the job's own step iterator (a denoiser with a loop of its own)

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class EngineStats:
    submitted: int = 0
    finished: int = 0
    failed: int = 0
    cancelled: int = 0
    rejected: int = 0
    forward_passes: int = 0  # shared forward passes (one per engine iteration)
    rows_sum: int = 0  # rows over all shared forward passes: mean batch = rows_sum / forward_passes
    steps: int = 0  # denoising steps over all rows
    busy_s: float = 0.0  # time spent in forward_step
    out_of_memory: int = 0  # shared passes that ran out of memory (then split, the batch cap halved)
    recent: collections.deque[tuple[float, int]] = field(default_factory=lambda: collections.deque(maxlen=256))

    def steps_per_s(self) -> float:
        """Row steps per second over the last few seconds of forward passes."""
        now = time.monotonic()
        window = [(t, n) for t, n in self.recent if now - t <= 10.0]
        if len(window) < 2:
            return 0.0
        span = now - window[0][0]
        return sum(n for _, n in window) / span if span > 0 else 0.0


class Engine:
    def __init__(self, denoiser: Any, *, max_batch: int = 32, max_queue: int = 128) -> None:
        if max_batch < 1 or max_queue < 1:
            raise ValueError("max_batch and max_queue must be at least 1")
        # a denoiser with a loop of its own (DiffusionGemma: an encoder cache per request) runs each
        # job's loop one step per iteration, passes not shared between jobs; block-causal models
        # (prepare_row) are stepped together like any other
        self.own_loop = hasattr(denoiser, "block_sample") and not hasattr(denoiser, "prepare_row")
        self.denoiser = denoiser
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.stats = EngineStats()
        self._cap = max_batch  # rows per pass; halved after running out of memory, regrown later
        self._good = 0
        self._pending: collections.deque[Job] = collections.deque()
        self._active: list[Job] = []
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="dlmprompt-engine", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ public
    def submit(
        self, program: Program, *, seed: int | None = None, on_step: Callable[[Step], None] | None = None
    ) -> Job:
        job = Job(program, seed, on_step)
        with self._cond:
            if self._stop:
                raise DLMPromptError("the engine is closed")
            if len(self._pending) + len(self._active) >= self.max_queue:
                self.stats.rejected += 1
                raise QueueFull(f"{self.max_queue} requests are queued or running; retry later")
            self._pending.append(job)
            self.stats.submitted += 1
            self._cond.notify()
        return job

    @property
    def queue_depth(self) -> int:
        return len(self._pending)

    @property
    def batch_cap(self) -> int:
        """Rows per shared pass now: ``max_batch``, or less for a while after running out of memory."""
        return self._cap

    @property
    def in_flight(self) -> int:
        return len(self._active)

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout=30)
        for job in [*self._pending, *self._active]:
            if not job.future.done():
                job.future.set_exception(Cancelled("the engine was closed"))

    # ------------------------------------------------------------------ worker
    def _admit(self) -> None:
        while self._pending and len(self._active) < min(self.max_batch, self._cap):
            job = self._pending.popleft()
            if job.cancelled:
                self._finish_cancelled(job)
                continue
            gen = row_generators(None if job.seed is None else torch.Generator().manual_seed(job.seed), 1)[0]
            job.row = Row(0, job.program, gen)
            prepare = getattr(self.denoiser, "prepare_row", None)
            if prepare is not None:  # block-causal models: their own blocks, stepped without a cache
                try:
                    prepare(job.row)
                except DLMPromptError as exc:
                    job.future.set_exception(exc)
                    self.stats.finished += 1
                    continue
            if job.row.done:  # nothing to fill
                job.future.set_result(job.row.result())
                self.stats.finished += 1
                continue
            self._active.append(job)

    def _finish_cancelled(self, job: Job) -> None:
        self.stats.cancelled += 1
        if not job.future.done():
            job.future.set_exception(Cancelled("cancelled"))

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stop and not self._pending and not self._active:
                    self._cond.wait()
                if self._stop:
                    return
                self._admit()
                for job in [j for j in self._active if j.cancelled]:
                    self._active.remove(job)
                    self._finish_cancelled(job)
                batch = self._active[: self._cap]
                if len(self._active) > self._cap:  # fewer rows per pass since memory ran out: take turns
                    self._active = self._active[self._cap :] + batch
            if not batch:
                continue
            steps = self._forward(batch)
            finished: list[Job] = []
            for job, step in steps:
                if job.on_step is not None and step is not None:
                    try:
                        job.on_step(step)
                    except Exception:  # a listener that fails (a closed stream) cancels only its job
                        job.cancelled = True
                if job.future.done() or job.row is None or job.row.done:
                    finished.append(job)
            with self._cond:
                for job in finished:
                    if job in self._active:
                        self._active.remove(job)
                    if job.future.done():
                        continue
                    try:
                        job.future.set_result(job.row.result())  # type: ignore[union-attr]
                        self.stats.finished += 1
                    except Exception as exc:  # pragma: no cover - result() does not fail on a full canvas
                        self._fail(job, exc)

    def _own_loops(self, batch: list[Job]) -> list[tuple[Job, Step | None]]:
        """One step of each job's own loop (one forward pass each)."""
        out: list[tuple[Job, Step | None]] = []
        for job in batch:
            t = time.perf_counter()
            try:
                if job.loop is None:
                    job.row.fixed_length()  # type: ignore[union-attr]
                    job.loop = iter(self.denoiser.block_sample([job.row]))
                step = next(job.loop, None)
            except Exception as exc:
                if _out_of_memory(exc):
                    self.stats.out_of_memory += 1
                    _free_device_cache(self.denoiser)
                self._fail(job, exc)
                out.append((job, None))
                continue
            if step is None:  # the loop ended: the row is full
                job.row.block = len(job.row.sched.blocks)  # type: ignore[union-attr]
            else:
                self._count(1, t)
            out.append((job, step))
        return out

    def _forward(self, batch: list[Job]) -> list[tuple[Job, Step | None]]:
        if self.own_loop:
            return self._own_loops(batch)
        t = time.perf_counter()
        failure: Exception | None = None
        try:
            steps = forward_step(self.denoiser, [j.row for j in batch])  # type: ignore[misc]
        except Exception as exc:
            failure = exc
            done = exc.__dict__.pop("dlmprompt_steps", {})
            # the retry runs outside this block: the traceback holds the failed pass's frames (and
            # with them its activations), which must be freed before the halves run
            traceback.clear_frames(exc.__traceback__)
        if failure is None:
            self._count(len(batch), t)
            if self._cap < self.max_batch:
                self._good += 1
                if self._good >= 64:  # memory was short once: try twice the rows again
                    self._cap, self._good = min(self.max_batch, self._cap * 2), 0
            return list(zip(batch, steps))
        if len(batch) == 1:
            self._fail(batch[0], failure)
            return [(batch[0], None)]
        if _out_of_memory(failure):  # admit fewer rows per pass for a while
            self._cap = max(1, len(batch) // 2)
            self._good = 0
            self.stats.out_of_memory += 1
            _free_device_cache(self.denoiser)
        # a row (or the batch's size) broke the shared pass: run each half alone, so that only the
        # guilty job fails and a batch too big for memory is split; rows that stepped before the
        # failure keep that step and are not stepped again
        out: list[tuple[Job, Step | None]] = []
        again: list[Job] = []
        for job in batch:
            if id(job.row) in done:
                out.append((job, done[id(job.row)]))
            elif job.row.done:  # type: ignore[union-attr]
                out.append((job, None))
            else:
                again.append(job)
        failure = None
        half = (len(again) + 1) // 2
        for part in (again[:half], again[half:]) if len(again) > 1 else (again,):
            if part:
                out.extend(self._forward(part))
        return out

    def _count(self, rows: int, t0: float) -> None:
        st = self.stats
        st.forward_passes += 1
        st.rows_sum += rows
        st.steps += rows
        st.busy_s += time.perf_counter() - t0
        st.recent.append((time.monotonic(), rows))

    def _fail(self, job: Job, exc: Exception) -> None:
        self.stats.failed += 1
        if not job.future.done():
            job.future.set_exception(exc)
