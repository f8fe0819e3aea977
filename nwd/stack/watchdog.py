"""Stopping processes by PID — the one stop sequence — and the watchdog that applies it once
their owner has ended, however it ended.

``nwd down`` and a test session's teardown stop what they started while they still run. A
process that is SIGKILLed (a CI time-out's second signal, the kernel's OOM killer) runs no
handler and no teardown, and whatever it started outlives it: the embedded PostgreSQL, in a
session of its own by design (``nwd up``'s servers outlive the command), keeps its port and its
data folder. A signal handler cannot close that gap, and ``PR_SET_PDEATHSIG`` only partly: it
follows the *thread* that started the child (a stack started from ``asyncio.to_thread`` would
lose its server when that thread ends), it cannot tie ``nwd up``'s servers to a process other
than the command that exits at once, and it needs ``preexec_fn``, which is unsafe in a process
with threads (the Temporal SDK's). So a small process of its own watches the owner::

    owner (pytest, the benchmark, a CI job)          watchdog (own session, stdlib only)
      Watchdog.start(folder, owner=pid)  ──────────▶  pidfd_open(owner); poll
      watch(name, pid, signals, grace)   ── folder/watched/<name>.json
      … stopped normally: release(name) removes the entry
      ✗ ends: exit, SIGTERM, SIGKILL     ──────────▶  POLLIN: the owner has ended
                                                        swept processes: SIGTERM, grace, SIGKILL
                                                        entries, newest first: stop_process()
                                                        then exit

- **Exactly the PIDs it was given.** A process is known by its PID *and* its start time
  (``/proc/<pid>/stat``), so a PID the system has given to another program since is never
  signalled. Entries are stopped with the sequence ``nwd down`` uses (:func:`stop_process`):
  the component's polite signals, grace, SIGKILL, then its direct children.
- **Sweep** (``sweep=True``, for a test session): the watchdog also notes, five times a second,
  the owner's descendants that stay in the owner's session — the dev server of
  ``WorkflowEnvironment.start_local``, a worker a test runs as a subprocess — and stops those
  too once the owner has ended. A process started within the last fifth of a second before a
  SIGKILL can escape it; what a stack detaches into a session of its own is the stack's own
  watchdog's business.
- **Asking it to stop** (SIGTERM, SIGINT or SIGHUP) stops its entries, never a swept process —
  the owner still runs and owns its children — and ends it; so stopping a watchdog never
  orphans what it watches.
- It runs as ``python -I -S <this file>``: standard library only (nothing of the engine is
  imported), ready in milliseconds, a few megabytes. Its log is ``folder/watchdog.log``.
  SIGKILL of the watchdog itself is the one end it cannot act on; it lives in a session of its
  own, so a signal to the owner's process group does not reach it.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

KILL_GRACE = 5.0
"""Seconds to wait for a process after SIGKILL before giving up on it."""
LATER_SIGNAL_GRACE = 3.0
"""Seconds each signal after the first gets (e.g. PostgreSQL's SIGQUIT)."""
SWEEP_GRACE = 5.0
"""Seconds swept processes get between SIGTERM and SIGKILL."""
SWEEP_EVERY = 0.2
"""Seconds between two looks at the owner's descendants (sweep mode)."""
START_TIMEOUT = 10.0
"""Seconds a new watchdog may take to say it is ready."""

_RECORD = "watchdog.json"
_WATCHED = "watched"
_MARKER = "nwd/stack/watchdog.py"


# ---------------------------------------------------------------------------- processes


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie does not); reaps it if it is our own exited child."""
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by another user (PostgreSQL's system user)
    with contextlib.suppress(OSError, IndexError):
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    return True


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot; None when gone (or not Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[19])  # field 22 of proc(5); fields[0] is field 3
    except (OSError, IndexError, ValueError):
        return None


@dataclass(frozen=True)
class ProcessRef:
    """One process: its PID and when it started, so that a reused PID no longer matches."""

    pid: int
    started: int | None
    """Clock ticks since boot (:func:`start_ticks`); None: unknown, trust the PID."""

    @classmethod
    def of(cls, pid: int) -> ProcessRef:
        return cls(pid, start_ticks(pid))

    def alive(self) -> bool:
        """True while this very process runs (not another one that got its PID)."""
        if not pid_alive(self.pid):
            return False
        return self.started is None or start_ticks(self.pid) in (None, self.started)


def cmdline(pid: int) -> str | None:
    """``pid``'s command line, arguments joined by spaces; None when gone (or not Linux)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return None


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux /proc; empty elsewhere)."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError, ValueError):
            children += [int(c) for c in task.read_text().split()]
    return children


def wait_gone(processes: Sequence[ProcessRef], timeout: float) -> bool:
    """Wait up to ``timeout`` seconds until none of ``processes`` runs; True if so."""
    deadline = time.monotonic() + timeout
    while any(p.alive() for p in processes):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def stop_process(
    pid: int, signals: Sequence[signal.Signals], *, grace: float, started: int | None = None
) -> bool:
    """Stop one process: each of ``signals`` in turn (the first waits ``grace`` seconds, the
    later ones :data:`LATER_SIGNAL_GRACE`), then SIGKILL; its direct children (PostgreSQL's
    backends) must not outlive it. Before each signal the process is checked to still be the
    one meant (``started``), so a reused PID is left alone.

    Returns:
        False when it still runs after SIGKILL (the caller says so); True otherwise.
    """
    process = ProcessRef(pid, started)
    if not process.alive():
        return True
    children = [ProcessRef.of(c) for c in child_pids(pid)]
    steps = [(sig, grace if i == 0 else LATER_SIGNAL_GRACE) for i, sig in enumerate(signals)]
    steps.append((signal.SIGKILL, KILL_GRACE))
    for sig, wait in steps:
        if not process.alive():
            break
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if wait_gone([process], wait):
            break
    else:
        return False
    # backends end on their own once their postmaster has gone; SIGKILL for the slow
    _stop_together([c for c in children if c.alive()], None, LATER_SIGNAL_GRACE)
    return True


def _stop_together(
    processes: Sequence[ProcessRef], first: signal.Signals | None, grace: float
) -> None:
    """Send ``first`` to each of ``processes`` at once (None: send nothing, they are ending by
    themselves), wait up to ``grace`` seconds, then SIGKILL those left."""
    if not processes:
        return
    if first is not None:
        _signal_all(processes, first)
    if wait_gone(processes, grace):
        return
    _signal_all(processes, signal.SIGKILL)
    wait_gone(processes, 2.0)


def _signal_all(processes: Sequence[ProcessRef], sig: signal.Signals) -> None:
    for process in processes:
        if process.alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(process.pid, sig)


# ---------------------------------------------------------------------------- the owner's handle


class Watchdog:
    """A running watchdog, as its owner (or a later ``nwd down``) sees it.

    Its folder holds ``watchdog.json`` (the watchdog and its owner), ``watched/<name>.json``
    (one entry per process in its care) and ``watchdog.log``.

    Args:
        folder: the folder above.
        process: the watchdog process.
        owner: the process whose end it waits for.
        popen: set when this process started it (to reap it once it exits).
    """

    def __init__(
        self, folder: Path, process: ProcessRef, owner: ProcessRef,
        popen: subprocess.Popen[bytes] | None = None,
    ) -> None:
        self.folder = folder
        self.process = process
        self.owner = owner
        self._popen = popen

    @classmethod
    def start(
        cls, folder: Path, *, owner: int, sweep: bool = False, temporary: bool = False,
        python: str = sys.executable,
    ) -> Watchdog:
        """Start a watchdog for ``owner`` (detached, in a session of its own).

        Args:
            folder: its folder (created); entries already in it are in its care too.
            owner: the PID whose end it waits for.
            sweep: also stop the owner's descendants in the owner's session (see the module).
            temporary: the folder is the watchdog's alone: it removes it, log included, when
                it ends (a killed owner cannot).
            python: the interpreter to run it with (only its standard library is used).

        Raises:
            ProcessLookupError: no process ``owner`` runs.
            OSError: the watchdog did not start (its log says why).
        """
        owner_ref = ProcessRef.of(owner)
        if not owner_ref.alive():
            raise ProcessLookupError(f"no process with PID {owner} runs")
        (folder / _WATCHED).mkdir(parents=True, exist_ok=True)
        ready, ready_w = os.pipe()
        argv = [python, "-I", "-S", str(Path(__file__).resolve()), str(folder), str(owner),
                str(owner_ref.started or 0), str(ready_w), *(["--sweep"] if sweep else []),
                *(["--temporary"] if temporary else [])]
        log: IO[bytes]
        try:
            try:
                with (folder / "watchdog.log").open("ab") as log:
                    popen = subprocess.Popen(
                        argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                        pass_fds=(ready_w,),
                        start_new_session=True,  # a signal to the owner's group misses it
                    )
            finally:
                os.close(ready_w)
            # its handlers are installed once it says so: a SIGTERM before would kill it
            # without stopping anything
            answered = select.select([ready], [], [], START_TIMEOUT)[0]
            said = os.read(ready, 16) if answered else b""
        finally:
            os.close(ready)
        if said != b"ready\n":
            popen.kill()
            popen.wait()
            raise OSError(f"the watchdog did not start; see {folder / 'watchdog.log'}")
        process = ProcessRef.of(popen.pid)
        _write_json(folder / _RECORD, {
            "pid": process.pid, "started": process.started,
            "owner": owner_ref.pid, "owner_started": owner_ref.started, "sweep": sweep,
        })
        return cls(folder, process, owner_ref, popen)

    @classmethod
    def running(cls, folder: Path) -> Watchdog | None:
        """The watchdog of ``folder`` if one still runs (a stale record is removed)."""
        try:
            record = json.loads((folder / _RECORD).read_text())
            process = ProcessRef(int(record["pid"]), record["started"])
            owner = ProcessRef(int(record["owner"]), record["owner_started"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        found = cmdline(process.pid)
        if process.alive() and (found is None or _MARKER in found):
            return cls(folder, process, owner)
        (folder / _RECORD).unlink(missing_ok=True)
        return None

    def watch(
        self, name: str, pid: int, *, signals: Sequence[signal.Signals], grace: float
    ) -> None:
        """Put ``pid`` in the watchdog's care as ``name`` (replacing an older ``name``)."""
        watch(self.folder, name, pid, signals=signals, grace=grace)

    def release(self, name: str) -> None:
        """``name`` was stopped normally: take it out of the watchdog's care."""
        release(self.folder, name)

    def stop(self, timeout: float = 60.0) -> bool:
        """End the watchdog (it stops whatever is still in its care first); True once gone."""
        if self.process.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGTERM)
        if self._popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._popen.wait(timeout)
        return wait_gone([self.process], 0 if self._popen is not None else timeout)


def watch(
    folder: Path, name: str, pid: int, *, signals: Sequence[signal.Signals], grace: float
) -> None:
    """Write the entry of ``pid`` (as ``name``) into a watchdog's folder."""
    _write_json(folder / _WATCHED / f"{name}.json", {
        "pid": pid, "started": start_ticks(pid), "signals": [s.name for s in signals],
        "grace": grace, "order": time.time_ns(),
    })


def release(folder: Path, name: str) -> None:
    """Remove the entry ``name`` from a watchdog's folder (none: nothing happens)."""
    (folder / _WATCHED / f"{name}.json").unlink(missing_ok=True)


def _write_json(path: Path, value: dict[str, Any]) -> None:
    """Write ``path`` whole or not at all (the watchdog may read it at any moment)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(json.dumps(value))
    partial.replace(path)


# ---------------------------------------------------------------------------- the watchdog


class _Asked(Exception):  # noqa: N818 (a request, not an error)
    """SIGTERM, SIGINT or SIGHUP reached the watchdog while it waited."""


class _Signals:
    """What the stop signals said: ``asked`` once one arrived; while ``interrupt`` is set (the
    wait, only) the handler raises :class:`_Asked` to end it. Outside the wait a signal is
    only noted, so the stopping that follows always finishes."""

    asked = False
    interrupt = False


def _asked(_signum: int, _frame: object) -> None:
    _Signals.asked = True
    if _Signals.interrupt:
        _Signals.interrupt = False
        raise _Asked


def _log(line: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} watchdog {os.getpid()}: {line}", flush=True)


def _wait_for_end(owner: ProcessRef, tick: Callable[[], None] | None) -> None:
    """Return once ``owner`` has ended; call ``tick`` every :data:`SWEEP_EVERY` seconds."""
    try:
        handle: int | None = os.pidfd_open(owner.pid)
    except ProcessLookupError:
        return
    except (AttributeError, OSError):
        handle = None  # not Linux 5.3+: look at /proc instead
    try:
        if not owner.alive():  # checked after opening: the handle is the owner's, not a reuse
            return
        if handle is None:
            while owner.alive():
                if tick is not None:
                    tick()
                time.sleep(SWEEP_EVERY)
            return
        poller = select.poll()
        poller.register(handle, select.POLLIN)
        timeout = None if tick is None else SWEEP_EVERY * 1000
        while True:
            if tick is not None:
                tick()
            if poller.poll(timeout):
                return
    finally:
        if handle is not None:
            os.close(handle)


def _note_descendants(owner: ProcessRef, seen: dict[int, ProcessRef]) -> None:
    """Add the owner's descendants in its session to ``seen``; forget those that ended."""
    for pid in [p for p, ref in seen.items() if not ref.alive()]:
        del seen[pid]
    try:
        session = os.getsid(owner.pid)
    except OSError:
        return
    todo = [owner.pid]
    while todo:
        for child in child_pids(todo.pop()):
            with contextlib.suppress(OSError):
                if child == os.getpid() or os.getsid(child) != session:
                    continue
                if child not in seen:
                    found = ProcessRef.of(child)
                    if found.started is None:
                        continue  # ended meanwhile: its PID must not be trusted later
                    seen[child] = found
                todo.append(child)


def _entries(folder: Path) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    for path in (folder / _WATCHED).glob("*.json"):
        with contextlib.suppress(OSError, ValueError):
            entry = json.loads(path.read_text())
            entries.append({**entry, "name": path.stem, "path": path})
    return sorted(entries, key=lambda e: int(e.get("order", 0)), reverse=True)


def main(argv: Sequence[str]) -> int:
    """``watchdog.py FOLDER OWNER_PID OWNER_STARTED READY_FD [--sweep] [--temporary]``: wait,
    then stop."""
    folder = Path(argv[0])
    owner = ProcessRef(int(argv[1]), int(argv[2]) or None)
    ready = int(argv[3])
    sweep = "--sweep" in argv[4:]
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _asked)
    os.write(ready, b"ready\n")
    os.close(ready)
    seen: dict[int, ProcessRef] = {}
    _log(f"watching owner {owner.pid}{' (sweeping its session)' if sweep else ''}")
    with contextlib.suppress(_Asked):
        _Signals.interrupt = True
        if not _Signals.asked:
            _wait_for_end(owner, (lambda: _note_descendants(owner, seen)) if sweep else None)
        _Signals.interrupt = False
    _Signals.interrupt = False
    ended = not owner.alive()  # asked to stop, the owner still runs: its children are its own
    _log(f"owner {owner.pid} ended" if ended else "asked to stop")
    swept = [ref for ref in seen.values() if ref.alive()] if ended else []
    if swept:
        _log(f"sweeping {' '.join(str(r.pid) for r in swept)}")
        _stop_together(swept, signal.SIGTERM, SWEEP_GRACE)
    for entry in _entries(folder):
        signals = [signal.Signals[name] for name in entry["signals"]]
        process = ProcessRef(int(entry["pid"]), entry["started"])
        if process.alive():
            gone = stop_process(process.pid, signals, grace=float(entry["grace"]),
                                started=process.started)
            _log(f"{entry['name']} (pid {process.pid}) "
                 f"{'stopped' if gone else 'did not exit even after SIGKILL'}")
        entry["path"].unlink(missing_ok=True)
    mine = Watchdog.running(folder)
    if mine is not None and mine.process.pid == os.getpid():
        (folder / _RECORD).unlink(missing_ok=True)
    if "--temporary" in argv[4:]:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
