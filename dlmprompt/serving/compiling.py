"""Compiling requests' prompts under a time and memory budget, in worker processes.

A request's constraint can be expensive to compile in ways no static check sees in advance
(``[ab]*a[ab]{14}`` has a 2^14-state DFA: 35 s and climbing ×10 per extra repetition), and part of
the work runs in native code that no signal interrupts. So :class:`CompilePool` compiles in
worker processes forked from the server:

* each compile gets ``time_s`` of wall clock, after which its worker is killed (and replaced)
  and the request refused with :class:`CompileBudgetError` naming the limit;
* each worker has an address-space limit of ``memory_mb`` above its size at start; a compile that
  needs more fails inside the worker (``MemoryError``) or kills it, and is refused the same way;
* a client that goes away while its prompt compiles has its worker killed at once
  (:meth:`CompilePool.compile` takes an ``abandoned`` coroutine function to poll);
* compiles never run on the event loop or the engine thread, so generation and other requests
  go on while one compiles. With every worker busy a request waits for one (its wait is not
  counted against its compile budget, and it too is dropped when its client leaves).

Workers are forked (the tokenizer, often closures over a native tokenizer, cannot be pickled to a
spawned process), hold their own warm caches, and send the compiled program back pickled, with the
tokenizer passed by reference. The parent keeps :func:`dlmprompt.compiler.compile`'s cache, so a
repeated prompt does not go to a worker at all. Where ``fork`` is not available (``workers=0`` or
not Linux) compiles run in a thread of this process, without the budget.
"""

from __future__ import annotations

import asyncio
import io
import logging
import multiprocessing
import os
import pickle
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from dlmprompt.compiler import Program, cached_program, compile, remember_program
from dlmprompt.errors import DLMPromptError
from dlmprompt.spec import Prompt

log = logging.getLogger("dlmprompt.compile")


class CompileBudgetError(DLMPromptError):
    """A compile went past its time or memory budget (or its client left) and was stopped."""

    def __init__(self, message: str, *, limit: str) -> None:
        super().__init__(message)
        self.limit = limit  # "time" | "memory" | "abandoned" | "killed"


class RemoteCompileError(DLMPromptError):
    """A compile refused in a worker: the worker's exception, by class name and message."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


_TOKENIZER = "dlmprompt.tokenizer"


class _Pickler(pickle.Pickler):
    def __init__(self, f: Any, tokenizer: Any) -> None:
        super().__init__(f, protocol=pickle.HIGHEST_PROTOCOL)
        self._tok = tokenizer

    def persistent_id(self, obj: Any) -> Any:
        return _TOKENIZER if obj is self._tok else None


class _Unpickler(pickle.Unpickler):
    def __init__(self, f: Any, tokenizer: Any) -> None:
        super().__init__(f)
        self._tok = tokenizer

    def persistent_load(self, pid: Any) -> Any:
        if pid != _TOKENIZER:
            raise pickle.UnpicklingError(f"unknown reference {pid!r}")
        return self._tok


def _vm_bytes() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _close_inherited(keep: int) -> None:
    """Close every descriptor the worker inherited but its pipe and stdio: the server's listening
    and client sockets, and pipes of other subprocesses (a browser driver, a shell) that would
    otherwise stay open as long as the worker lives."""
    try:
        fds = [int(x) for x in os.listdir("/proc/self/fd")]
    except OSError:
        return
    for fd in fds:
        if fd == keep or fd < 3:
            continue
        try:
            os.close(fd)
        except OSError:
            pass


def _worker(conn: Any, tokenizer: Any, memory_bytes: int) -> None:
    # the server's handlers (uvicorn's SIGTERM / SIGINT only set a flag) must not keep a worker alive
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    _close_inherited(conn.fileno())
    if memory_bytes > 0:
        import resource

        limit = _vm_bytes() + memory_bytes
        try:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        except (ValueError, OSError):
            pass
    while True:
        try:
            prompt, options = conn.recv()
        except (EOFError, OSError, KeyboardInterrupt):
            return
        try:
            program = compile(prompt, tokenizer, **options)
            f = io.BytesIO()
            _Pickler(f, tokenizer).dump(program)
            reply: tuple[Any, ...] = ("ok", f.getvalue())
        except MemoryError:
            conn.send(("memory", _where()))
            return  # the heap may be in any state: let the pool start a fresh worker
        except DLMPromptError as exc:
            reply = ("refused", type(exc).__name__, str(exc))
        except Exception as exc:  # a bug: report it, keep serving
            reply = ("error", type(exc).__name__, str(exc))
        try:
            conn.send(reply)
        except MemoryError:
            conn.send(("memory", _where()))
            return


def _where() -> str:
    """Where the worker ran out of memory, for the server's log: its address space and the last
    frames of the traceback."""
    import traceback

    try:
        frames = "".join(traceback.format_exc(limit=-4))
    except MemoryError:
        frames = "(no memory for the traceback)"
    return f"VmSize {_vm_bytes() >> 20} MB; {frames}"


class _Worker:
    def __init__(self, ctx: Any, tokenizer: Any, memory_bytes: int) -> None:
        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(
            target=_worker, args=(child, tokenizer, memory_bytes), name="dlmprompt-compile", daemon=True
        )
        self.proc.start()
        child.close()
        self.dead = False

    def exitcode(self, wait_s: float = 0.0) -> int | None:
        """The worker's exit code once it has exited (polled: ``join`` would wait on the sentinel
        pipe, which the worker closed with its other inherited descriptors)."""
        deadline = time.monotonic() + wait_s
        while True:
            code = self.proc.exitcode  # a non-blocking waitpid
            if code is not None or time.monotonic() >= deadline:
                return code
            time.sleep(0.01)

    def kill(self) -> None:
        self.dead = True
        try:
            self.proc.kill()
            self.exitcode(5.0)
        except Exception:
            pass
        self.conn.close()


class CompilePool:
    """Worker processes that compile prompts for one tokenizer, each compile bounded."""

    def __init__(self, tokenizer: Any, *, workers: int = 2, time_s: float = 10.0, memory_mb: int = 2048) -> None:
        if workers < 0 or time_s <= 0 or memory_mb < 0:
            raise ValueError("workers >= 0, time_s > 0 and memory_mb >= 0 please")
        self.tokenizer = tokenizer
        self.time_s = float(time_s)
        self.memory_mb = int(memory_mb)
        self.isolated = workers > 0 and sys.platform.startswith("linux")
        self.size = workers if self.isolated else 0
        self._ctx = multiprocessing.get_context("fork") if self.isolated else None
        self._idle: list[_Worker] = []
        self._workers: list[_Worker] = []  # every worker started and not yet killed
        self._started = 0
        self._free: asyncio.Semaphore | None = None
        self.stats = {"compiled": 0, "cached": 0, "refused": 0, "timeouts": 0, "memory": 0, "abandoned": 0, "killed": 0}

    # ------------------------------------------------------------------ public
    async def compile(
        self, prompt: Prompt, *, abandoned: Callable[[], Awaitable[bool]] | None = None, **options: Any
    ) -> Program:
        """The compiled program; raises the compiler's own error (or :class:`RemoteCompileError`
        with its name and message from a worker) or :class:`CompileBudgetError`."""
        hit = cached_program(prompt, self.tokenizer, options)
        if hit is not None:
            self.stats["cached"] += 1
            return hit
        if not self.isolated:
            program = await asyncio.to_thread(compile, prompt, self.tokenizer, **options)
            self.stats["compiled"] += 1
            return program
        if self._free is None:
            self._free = asyncio.Semaphore(self.size)
        acquire = asyncio.ensure_future(self._free.acquire())  # one place in the queue, first come first served
        try:
            while not acquire.done():  # wait for a worker, dropping out when the client leaves
                await asyncio.wait({acquire}, timeout=0.25)
                if not acquire.done() and abandoned is not None and await abandoned():
                    self.stats["abandoned"] += 1
                    raise CompileBudgetError("the client went away", limit="abandoned")
        except BaseException:
            if acquire.done() and not acquire.cancelled() and acquire.exception() is None:
                self._free.release()
            else:
                acquire.cancel()
            raise
        worker = self._idle.pop() if self._idle else None
        try:
            if worker is None or not worker.proc.is_alive():
                if worker is not None:
                    worker.kill()
                worker = _Worker(self._ctx, self.tokenizer, self.memory_mb << 20)
                self._workers = [w for w in self._workers if not w.dead] + [worker]
                self._started += 1
            program = await self._run(worker, prompt, options, abandoned)
            remember_program(prompt, self.tokenizer, options, program)
            self.stats["compiled"] += 1
            return program
        finally:
            if worker is not None and not worker.dead:
                self._idle.append(worker)
            self._free.release()

    def close(self) -> None:
        """Kill every worker, busy ones included (their requests see the worker stop)."""
        for w in self._workers:
            if not w.dead:
                w.kill()
        self._workers.clear()
        self._idle.clear()

    @property
    def workers_started(self) -> int:
        return self._started

    # ------------------------------------------------------------------ one compile
    async def _run(self, worker: _Worker, prompt: Prompt, options: dict[str, Any], abandoned: Any) -> Program:
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        fd = worker.conn.fileno()
        os.set_blocking(fd, True)  # uvloop's add_reader leaves the socket non-blocking
        try:
            worker.conn.send((prompt, options))  # pickled: JSON text would turn NaN into null
        except OSError:  # the worker died since it was handed out
            worker.kill()
            self.stats["killed"] += 1
            raise CompileBudgetError("the compile worker had stopped; retry", limit="killed") from None
        loop.add_reader(fd, ready.set)
        deadline = time.monotonic() + self.time_s
        try:
            while not ready.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    worker.kill()
                    self.stats["timeouts"] += 1
                    raise CompileBudgetError(
                        f"compiling took longer than this server's compile budget of {self.time_s:g} s "
                        "(compile_seconds) and was stopped; simplify the constraint (fewer optional "
                        "properties or branches, shorter counted repetitions after an open-ended part)",
                        limit="time",
                    )
                try:
                    await asyncio.wait_for(ready.wait(), min(left, 0.25))
                except asyncio.TimeoutError:
                    if abandoned is not None and await abandoned():
                        worker.kill()
                        self.stats["abandoned"] += 1
                        raise CompileBudgetError("the client went away", limit="abandoned") from None
        except BaseException:  # our refusals (the worker is killed already) or this task cancelled
            loop.remove_reader(fd)
            worker.kill()  # it may still be compiling: never hand it to the next request
            raise
        loop.remove_reader(fd)
        os.set_blocking(fd, True)
        try:
            reply = await asyncio.to_thread(worker.conn.recv)
        except (EOFError, OSError):
            reply = ("died", "")
        except BaseException:
            worker.kill()
            raise
        kind = reply[0]
        if kind == "ok":
            return _Unpickler(io.BytesIO(reply[1]), self.tokenizer).load()
        if kind == "died":
            code = await asyncio.to_thread(worker.exitcode, 2.0)
            worker.kill()
            log.warning("compile worker %s stopped with exit code %s", worker.proc.pid, code)
            if code not in (-signal.SIGABRT, -signal.SIGSEGV, -signal.SIGBUS, 1):  # killed from outside
                self.stats["killed"] += 1
                raise CompileBudgetError(
                    f"the compile worker was stopped from outside (exit code {code}); retry", limit="killed"
                )
            kind = "memory"  # native code that cannot allocate aborts
        if kind == "memory":
            if reply[1]:
                log.warning("compile worker %s ran out of memory: %s", worker.proc.pid, reply[1])
            worker.kill()
            self.stats["memory"] += 1
            raise CompileBudgetError(
                f"compiling needed more than this server's compile memory budget of {self.memory_mb} MB "
                "(compile_memory_mb) and was stopped; simplify the constraint",
                limit="memory",
            )
        if kind == "refused":
            self.stats["refused"] += 1
            raise RemoteCompileError(reply[1], reply[2])
        raise RuntimeError(f"the compile worker failed: {reply[1]}: {reply[2]}")
