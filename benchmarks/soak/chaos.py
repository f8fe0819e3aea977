"""The soak's faults, on the soak's own stack: worker SIGKILLs, Temporal and PostgreSQL restarts.

- :meth:`Chaos.supervise_worker` is the process manager: when the worker is gone (SIGKILLed,
  or crashed), it starts a new one after ``restart_delay_s`` (systemd's ``RestartSec``), as
  ``nwd up worker`` would. While a server is deliberately down it waits for the server to be
  back first (a real process manager would restart the worker in a loop until it connects).
- :meth:`Chaos.kill_worker` SIGKILLs the running worker: no shutdown, no goodbye to Temporal.
- :meth:`Chaos.restart` stops a server the stack started (``temporal``: the dev server, on its
  SQLite file; ``postgres``: the read model's and the agencies' databases) the way ``nwd down``
  does, keeps it down ``outage_s`` seconds, and starts it again on the same data.

Every fault is written down as a :class:`Fault` with its times (``time.time()``, the same clock
as the workflows' close times) so that :mod:`benchmarks.soak.figures` can tell how long the
engine took to recover from each. :class:`MemorySampler` keeps every process's peak RSS
(``VmHWM``, as :func:`benchmarks.measure.peak_rss_mb` reads it) across its restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped,unused-ignore]

from benchmarks.measure import peak_rss_mb
from nwd.stack import Stack, StackError
from nwd.stack.watchdog import pid_alive


@dataclass
class Fault:
    """One fault: what, when it began, when the part was back (None: a kill has no "back")."""

    kind: str
    """``worker_kill``, ``temporal_restart`` or ``postgres_restart``."""
    at: float
    back_at: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


class Chaos:
    """The faults of one run on ``stack``; every stack operation runs one at a time."""

    def __init__(self, stack: Stack, echo: Callable[[str], None], *,
                 restart_delay_s: float = 0.5) -> None:
        self.stack = stack
        self.echo = echo
        self.restart_delay_s = restart_delay_s
        self.faults: list[Fault] = []
        self.worker_starts: list[float] = []
        """When each worker after the first was started by the supervisor."""
        self.worker_started_at = time.time()
        self._lock = asyncio.Lock()
        self._servers_up = asyncio.Event()
        self._servers_up.set()
        self._stopping = False

    async def _stack(self, operation: Callable[[list[str]], object], names: list[str]) -> None:
        async with self._lock:
            await asyncio.to_thread(operation, names)

    # ---- the worker and its process manager ------------------------------------------------

    async def supervise_worker(self) -> None:
        """Restart the worker whenever it is gone, until :meth:`stop`.

        A start that fails (the worker exits while starting: its server went away meanwhile)
        is tried again after the delay, as a process manager would; it never starts a server
        that is deliberately down (``up worker`` would start what the worker needs).
        """
        while not self._stopping:
            pid = self.stack.running_pid("worker")
            if pid is not None and pid_alive(pid):
                await asyncio.sleep(0.1)
                continue
            await self._servers_up.wait()
            await asyncio.sleep(self.restart_delay_s)
            if self._stopping:
                return
            log = self.stack.log_path("worker")
            offset = log.stat().st_size if log.exists() else 0
            try:
                started = await self._start_worker()
            except StackError as exc:
                self.echo(f"  supervisor: the worker did not start ({str(exc).splitlines()[0]});"
                          " trying again")
                continue
            if started:
                await self._taking_work(log, offset)
                self.worker_started_at = time.time()
                self.worker_starts.append(self.worker_started_at)

    async def _taking_work(self, log: Path, offset: int, within_s: float = 60.0) -> None:
        """Until the new worker logs ``worker_started`` (it polls from then on). ``up``'s own
        readiness (the task queue has pollers) may still see the killed worker's polls."""
        deadline = time.monotonic() + within_s
        pid = self.stack.running_pid("worker")
        while time.monotonic() < deadline and not self._stopping:
            if pid is None or not pid_alive(pid):
                return  # it exited while starting (its server went away): restart it
            with contextlib.suppress(OSError), log.open("rb") as stream:
                stream.seek(offset)
                if b'"worker_started"' in stream.read():
                    return
            await asyncio.sleep(0.1)

    async def _start_worker(self) -> bool:
        """``up worker`` unless a server is down (checked under the lock); whether it ran."""
        async with self._lock:
            if not self._servers_up.is_set():
                return False
            await asyncio.to_thread(self.stack.up, ["worker"])
            return True

    def stop(self) -> None:
        self._stopping = True

    async def servers_up(self) -> None:
        """Until no server is deliberately down."""
        await self._servers_up.wait()

    async def kill_worker(self) -> Fault | None:
        """SIGKILL the running worker; the fault (None: no worker was running)."""
        async with self._lock:
            pid = self.stack.running_pid("worker")
            if pid is None:
                return None
            peak = peak_rss_mb(pid)
            fault = Fault("worker_kill", time.time(), detail={"pid": pid, "peak_rss_mb": peak})
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            await asyncio.to_thread(_wait_gone, pid)
        self.faults.append(fault)
        self.echo(f"  fault: worker (pid {pid}) SIGKILLed")
        return fault

    async def wait_worker_back(self, after: float, within_s: float = 120.0) -> None:
        """Wait until the supervisor has started a worker after ``after``."""
        deadline = time.monotonic() + within_s
        while not any(t > after for t in self.worker_starts):
            if time.monotonic() > deadline:
                raise RuntimeError("the worker was not restarted")
            await asyncio.sleep(0.1)

    # ---- servers ---------------------------------------------------------------------------

    async def restart(self, name: str, outage_s: float) -> Fault:
        """Stop ``name`` (``temporal`` or ``postgres``), wait ``outage_s``, start it again."""
        self._servers_up.clear()  # before the lock: no worker start slips in between
        try:
            fault = Fault(f"{name}_restart", time.time())
            self.echo(f"  fault: {name} stopping")
            await self._stack(self.stack.down, [name])
            fault.detail["stopped_at"] = time.time()
            await asyncio.sleep(outage_s)
            fault.detail["starting_at"] = time.time()
            await self._stack(self.stack.up, [name])
            fault.back_at = time.time()
            self.faults.append(fault)
            self.echo(f"  fault: {name} back after {fault.back_at - fault.at:.1f} s")
            return fault
        finally:
            self._servers_up.set()


def _wait_gone(pid: int) -> None:
    """Until ``pid`` has exited; reaps it (the stack started it from this process)."""
    while pid_alive(pid):
        time.sleep(0.02)


class MemorySampler:
    """Every component's peak RSS (MiB) over the run, across restarts; PostgreSQL with its
    largest backend too."""

    def __init__(self, stack: Stack, names: tuple[str, ...]) -> None:
        self.stack = stack
        self.names = names
        self.peak_mb: dict[str, float] = {}
        self._stopping = False

    def _note(self, name: str, value: float | None) -> None:
        if value is not None:
            self.peak_mb[name] = max(self.peak_mb.get(name, 0.0), value)

    def sample(self) -> None:
        for name in self.names:
            pid = self.stack.running_pid(name)
            if pid is None:
                continue
            self._note(name, peak_rss_mb(pid))
            if name == "postgres":
                with contextlib.suppress(psutil.Error):
                    for child in psutil.Process(pid).children():
                        self._note("postgres_backend_max", peak_rss_mb(child.pid))
        self._note("soak_driver", peak_rss_mb(os.getpid()))

    async def run(self, every_s: float = 1.0) -> None:
        while not self._stopping:
            await asyncio.to_thread(self.sample)
            await asyncio.sleep(every_s)

    def stop(self) -> None:
        self._stopping = True
