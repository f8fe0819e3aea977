"""A small process supervisor: detached children with pid files and logs, stopped by PID.

Knows nothing of PostgreSQL or Temporal. Each child is started in its own session (so it
outlives the ``nwd up`` that started it, and a Ctrl-C in the terminal is ours to forward), with

- its log in ``<state>/logs/<name>.log`` (stdout and stderr, appended),
- its PID in ``<state>/pids/<name>.pid``,

so a later process (``nwd down``) stops exactly what was started: by PID, never by name, and
only while the PID's command line still contains the child's marker — a PID the system gave to
another program since is never signalled (the reused-PID guard). The stop sequence itself is
:func:`nwd.stack.watchdog.stop_process`, shared with the watchdog that stops a stack whose
owner has ended.

Exceptions::

    StackError        a process cannot start, did not become ready, or would not stop
"""

from __future__ import annotations

import contextlib
import fcntl
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from nwd.stack.watchdog import cmdline, pid_alive, stop_process


class StackError(Exception):
    """The embedded stack cannot do what was asked; the message says why and what to do."""


@dataclass(frozen=True)
class Launch:
    """How to start one child process."""

    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    """The child's whole environment (nothing is inherited beyond it)."""
    user: str | None = None
    """Run as this system user (PostgreSQL refuses root)."""


class Supervisor:
    """Starts, finds and stops the named children of one state folder.

    Args:
        state_dir: holds ``logs/``, ``pids/`` and the lock file.
        cwd: the children's working directory.
    """

    def __init__(self, state_dir: Path, *, cwd: Path) -> None:
        self.state_dir = state_dir
        self.logs_dir = state_dir / "logs"
        self.pids_dir = state_dir / "pids"
        self.cwd = cwd

    def log_path(self, name: str) -> Path:
        return self.logs_dir / f"{name}.log"

    def pid_path(self, name: str) -> Path:
        return self.pids_dir / f"{name}.pid"

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """One ``up``/``down`` at a time per state folder."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with (self.state_dir / "stack.lock").open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def running_pid(self, name: str, marker: str) -> int | None:
        """PID of ``name`` if it was started here and still runs; cleans stale pid files.

        ``marker`` is a string the child's command line contains: a live PID whose command
        line lacks it belongs to another program now, and counts as not running.
        """
        path = self.pid_path(name)
        try:
            pid = int(path.read_text().strip())
        except (OSError, ValueError):
            path.unlink(missing_ok=True)
            return None
        found = cmdline(pid)
        if pid_alive(pid) and (found is None or marker in found):
            return pid
        path.unlink(missing_ok=True)
        return None

    def spawn(self, name: str, launch: Launch) -> int:
        """Start ``name`` detached, its output appended to its log; returns its PID."""
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.pids_dir.mkdir(parents=True, exist_ok=True)
        log: IO[bytes]
        with self.log_path(name).open("ab") as log:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log.write(f"--- {stamp} nwd starts {name}: {' '.join(launch.argv)}\n".encode())
            log.flush()
            extra: dict[str, Any] = {}
            if launch.user is not None:
                import pwd

                entry = pwd.getpwnam(launch.user)
                extra = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
            try:
                proc = subprocess.Popen(
                    list(launch.argv),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=dict(launch.env),
                    cwd=self.cwd,
                    start_new_session=True,  # survives `nwd up`; Ctrl-C is ours to forward
                    **extra,
                )
            except OSError as exc:
                raise StackError(f"{name}: cannot run {launch.argv[0]}: {exc}") from exc
        self.pid_path(name).write_text(f"{proc.pid}\n")
        return proc.pid

    def wait_ready(
        self, name: str, pid: int, ready: Callable[[], bool], what: str, *, timeout: float
    ) -> None:
        """Poll ``ready`` until true; fail with the end of the log if the process exits or
        ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        while True:
            if ready():
                return
            if not pid_alive(pid):
                self.pid_path(name).unlink(missing_ok=True)
                raise StackError(
                    f"{name} exited during start; the end of {self.log_path(name)}:\n"
                    f"{tail(self.log_path(name))}"
                )
            if time.monotonic() > deadline:
                raise StackError(
                    f"{name} (pid {pid}) did not become ready ({what}) within "
                    f"{timeout:.0f} s; see {self.log_path(name)}:\n"
                    f"{tail(self.log_path(name), 15)}"
                )
            time.sleep(0.1)

    def stop(
        self, name: str, pid: int, signals: Sequence[signal.Signals], *, grace: float
    ) -> None:
        """Stop ``name``: each of ``signals`` in turn (the first waits ``grace`` seconds),
        then SIGKILL; its direct children (PostgreSQL's backends) must not outlive it
        (:func:`nwd.stack.watchdog.stop_process`)."""
        if not stop_process(pid, signals, grace=grace):
            raise StackError(f"{name} (pid {pid}) did not exit even after SIGKILL")
        self.pid_path(name).unlink(missing_ok=True)


def port_open(host: str, port: int, timeout: float = 0.3) -> bool:
    """True when something accepts TCP connections on ``host:port`` (``0.0.0.0``: loopback)."""
    target = "127.0.0.1" if host in ("0.0.0.0", "") else host
    try:
        with socket.create_connection((target, port), timeout=timeout):
            return True
    except OSError:
        return False


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file ('' when it does not exist)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
