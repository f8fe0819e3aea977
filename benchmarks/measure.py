"""Measuring processes: CPU seconds (with PostgreSQL's backends), peak RSS, core pinning.

Every mode is measured the same way, from outside its processes: CPU seconds (user + system)
from ``psutil`` before and after a run (:class:`CpuProbe`), and the worker's peak RSS from
``VmHWM``. A figure that cannot be read (a process on another machine, one that ended) is
None, never a guess.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import psutil  # type: ignore[import-untyped,unused-ignore]


def cpu_s(pid: int | None) -> float | None:
    """CPU seconds of one process so far; None without a process (or if it is gone)."""
    if pid is None:
        return None
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return float(times.user + times.system)


def tree_cpu_s(pid: int | None) -> float | None:
    """CPU seconds of a process and its children: PostgreSQL's postmaster and its backends.

    Live children are read one by one; children already reaped (backends of closed
    connections) are in the parent's ``children_user``/``children_system``. A child ending
    between the listing and its reading loses its last figure: small against a run's total.
    """
    if pid is None:
        return None
    try:
        parent = psutil.Process(pid)
        times = parent.cpu_times()
        children = parent.children(recursive=True)
    except psutil.Error:
        return None
    total = float(times.user + times.system + times.children_user + times.children_system)
    for child in children:
        try:
            child_times = child.cpu_times()
        except psutil.Error:
            continue
        total += float(child_times.user + child_times.system)
    return total


def peak_rss_mb(pid: int) -> float | None:
    """Peak resident memory of a live process (``VmHWM``; else its current RSS), in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        return float(psutil.Process(pid).memory_info().rss) / 2**20
    except psutil.Error:
        return None


@dataclass(frozen=True)
class CpuReading:
    """CPU seconds of each measured process at one moment (None: not measured)."""

    server: float | None
    worker: float | None
    agencies: float | None
    postgres: float | None
    client: float | None

    def __sub__(self, before: CpuReading) -> CpuReading:
        def delta(after: float | None, earlier: float | None) -> float | None:
            return None if after is None or earlier is None else after - earlier

        return CpuReading(
            server=delta(self.server, before.server),
            worker=delta(self.worker, before.worker),
            agencies=delta(self.agencies, before.agencies),
            postgres=delta(self.postgres, before.postgres),
            client=delta(self.client, before.client),
        )


@dataclass(frozen=True)
class CpuProbe:
    """The processes of one run; :meth:`read` twice and subtract to get the run's CPU.

    ``postgres`` is the postmaster: it is read with its whole tree (every backend, live or
    exited); ``client`` is this process, which submits the requests and awaits them.
    """

    server: int | None
    worker: int
    agencies: int | None
    postgres: int | None
    client: int

    def read(self) -> CpuReading:
        return CpuReading(
            server=cpu_s(self.server), worker=cpu_s(self.worker),
            agencies=cpu_s(self.agencies), postgres=tree_cpu_s(self.postgres),
            client=cpu_s(self.client),
        )


async def postmaster_pid(postgres_dsn: str) -> int | None:
    """The PostgreSQL postmaster's PID, if the server runs on this machine; else None.

    Reads ``postmaster.pid`` in the server's data directory (asked of the server itself) and
    checks that the PID is a running ``postgres``, so a remote server gives None.
    """
    try:
        conn = await asyncpg.connect(postgres_dsn)
    except (OSError, asyncpg.PostgresError):
        return None
    try:
        data_dir = await conn.fetchval("SELECT current_setting('data_directory')")
    except asyncpg.PostgresError:
        return None
    finally:
        await conn.close()
    try:
        pid = int((Path(data_dir) / "postmaster.pid").read_text().split()[0])
        name = psutil.Process(pid).name()
    except (OSError, ValueError, IndexError, psutil.Error):
        return None
    return pid if "postgres" in name else None


def isolate_server(server_pid: int, others: Sequence[int]) -> tuple[list[int], list[int]]:
    """Give the Temporal server the first core to itself and everything else the rest (Linux).

    In production the Temporal server runs on machines of its own; on one small machine the
    worker, the agencies and PostgreSQL otherwise take CPU from it. With the server on its own
    core, a run shows which side is the bound. Every thread of each process is moved (the
    affinity of a Linux thread is its own); processes started later by this one (the
    workers) inherit the rest. Returns (server cores, other cores).
    """
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        raise RuntimeError("isolating the server needs at least 2 cores")
    server_cores, rest = cores[:1], cores[1:]
    _pin(server_pid, server_cores)
    for pid in (*others, os.getpid()):
        _pin(pid, rest)
    return server_cores, rest


def _pin(pid: int, cores: Sequence[int]) -> None:
    """Pin every thread of ``pid`` and of its descendants to ``cores``."""
    try:
        processes = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return
    for process in processes:
        for task in Path(f"/proc/{process.pid}/task").glob("*"):
            with contextlib.suppress(OSError, ValueError):  # a thread that ended meanwhile
                os.sched_setaffinity(int(task.name), cores)
