"""An interrupted test run or stack leaves no server behind (docs/reliability.md, "Clean stops").

A small pytest session — one generated test holding the suite's real session servers (the
embedded PostgreSQL of ``postgres_server``, the dev server of ``temporal_env``) — runs as a
subprocess and is stopped by Ctrl-C, by SIGTERM (a CI time-out's first signal) and by SIGKILL
(its second). Every process the session had started, at any depth and in any session, must be
gone within a bound and its ports free: after SIGINT and SIGTERM by the session's own teardown,
after SIGKILL by the watchdogs. The same for ``nwd up`` given an owner that is SIGKILLed, and
for the watchdog on its own with plain processes (its rules: newest first, the grace sequence,
a reused PID never signalled).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nwd.stack import Stack, StackError, Watchdog, port_open
from nwd.stack.watchdog import ProcessRef, child_pids
from runtime.settings import PROJECT_ROOT, InvalidSettings, Settings
from tests.conftest import quiet_settings
from tests.polling import eventually

NWD = str(Path(sys.executable).parent / "nwd")

STOP_BOUND_S = 15.0
"""How long an interrupted run may take to leave nothing behind."""

HOLDING_TEST = '''
import asyncio
import json
import os
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import _SESSION_WATCHDOG


async def test_holds_the_session_servers(
    postgres_server: str, temporal_address: str, request: pytest.FixtureRequest
) -> None:
    Path({out!r}).write_text(json.dumps({{
        "pid": os.getpid(),
        "ports": [urlsplit(postgres_server).port, int(temporal_address.rpartition(":")[2])],
        "session_watchdog": str(request.config.stash[_SESSION_WATCHDOG].folder),
    }}))
    await asyncio.sleep(600)
'''


def sleeper() -> subprocess.Popen[bytes]:
    """A process that only waits: an owner to kill, a bystander that must survive."""
    return subprocess.Popen(["sleep", "600"])


def descendants(pid: int) -> list[ProcessRef]:
    """Every process below ``pid``, whatever its session (PostgreSQL, the watchdogs)."""
    found: list[ProcessRef] = []
    todo = [pid]
    while todo:
        for child in child_pids(todo.pop()):
            found.append(ProcessRef.of(child))
            todo.append(child)
    return found


def clean_env() -> dict[str, str]:
    """This environment without any setting: the child configures itself."""
    return {k: v for k, v in os.environ.items() if k not in Settings.variables()}


class HeldSession:
    """A pytest session holding the suite's session servers, in a process group of its own."""

    def __init__(self, folder: Path) -> None:
        out = folder / "held.json"
        test_file = folder / "test_held.py"
        test_file.write_text(textwrap.dedent(HOLDING_TEST.format(out=str(out))))
        self.output = folder / "pytest.out"
        with self.output.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider",
                 "-c", str(PROJECT_ROOT / "pyproject.toml"), "--rootdir", str(PROJECT_ROOT),
                 "-q", str(test_file)],
                cwd=PROJECT_ROOT, env=clean_env(), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )
        self.out = out

    async def holding(self) -> tuple[list[ProcessRef], list[int]]:
        """Once the test holds its servers: every process below the session, and the ports.
        (The session watchdog's temporary folder is then :attr:`watchdog_folder`.)"""
        async def started() -> dict[str, object]:
            assert self.proc.poll() is None, self.output.read_text()
            assert self.out.exists(), "the session's servers are not up yet"
            return dict(json.loads(self.out.read_text()))

        held = await eventually(started, within_s=120, every_s=0.2)
        assert held["pid"] == self.proc.pid
        processes = descendants(self.proc.pid)
        ports = [int(p) for p in held["ports"]]  # type: ignore[attr-defined]
        self.watchdog_folder = Path(str(held["session_watchdog"]))
        assert self.watchdog_folder.is_dir()
        return processes, ports

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


@pytest.fixture
def held_session(tmp_path: Path) -> Iterator[HeldSession]:
    session = HeldSession(tmp_path)
    try:
        yield session
    finally:
        session.kill()


def assert_nothing_left(processes: list[ProcessRef], ports: list[int]) -> None:
    left = {p.pid: _command(p.pid) for p in processes if p.alive()}
    assert not left, f"still running: {left}"
    taken = [port for port in ports if port_open("127.0.0.1", port)]
    assert not taken, f"ports still taken: {taken}"


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
    except OSError:
        return "?"


async def nothing_left_within(processes: list[ProcessRef], ports: list[int],
                              within_s: float) -> None:
    async def probe() -> None:
        assert_nothing_left(processes, ports)

    await eventually(probe, within_s=within_s, every_s=0.1)


class TestInterruptedTestSession:
    """The suite's own session fixtures and watchdogs, in a real pytest session stopped
    mid-test."""

    @staticmethod
    def _held_processes_are_the_servers(processes: list[ProcessRef]) -> None:
        commands = " ".join(_command(p.pid) for p in processes)
        # the embedded PostgreSQL, the SDK's dev server and both kinds of watchdog
        assert "postgres -D" in commands and "server start-dev" in commands, commands
        assert commands.count("nwd/stack/watchdog.py") == 2, commands

    async def test_ctrl_c_runs_the_teardown(self, held_session: HeldSession) -> None:
        """Ctrl-C (SIGINT to the session's process group): pytest is interrupted, tears its
        fixtures down, and when it exits no process it started runs and no port is held."""
        processes, ports = await held_session.holding()
        self._held_processes_are_the_servers(processes)
        os.killpg(held_session.proc.pid, signal.SIGINT)
        code = await asyncio.to_thread(held_session.proc.wait, 60)
        assert code == pytest.ExitCode.INTERRUPTED, held_session.output.read_text()
        await nothing_left_within(processes, ports, within_s=2)
        assert not held_session.watchdog_folder.exists()

    async def test_sigterm_runs_the_teardown(self, held_session: HeldSession) -> None:
        """SIGTERM to pytest alone (what a CI time-out sends first): the root conftest turns
        it into KeyboardInterrupt, so the teardown runs as for Ctrl-C (without it pytest
        would die at once, exit -15)."""
        processes, ports = await held_session.holding()
        held_session.proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(held_session.proc.wait, 60)
        assert code == pytest.ExitCode.INTERRUPTED, held_session.output.read_text()
        assert "KeyboardInterrupt" in held_session.output.read_text()
        await nothing_left_within(processes, ports, within_s=2)

    async def test_sigkill_leaves_it_to_the_watchdogs(self, held_session: HeldSession) -> None:
        """SIGKILL to pytest alone (a time-out's second signal): no teardown runs; the
        stack's watchdog stops PostgreSQL, the session's sweeps the dev server, and both end,
        within the bound."""
        processes, ports = await held_session.holding()
        held_session.proc.send_signal(signal.SIGKILL)
        assert await asyncio.to_thread(held_session.proc.wait, 10) == -signal.SIGKILL
        started = time.monotonic()
        await nothing_left_within(processes, ports, within_s=STOP_BOUND_S)
        print(f"nothing left {time.monotonic() - started:.2f} s after SIGKILL")
        assert not held_session.watchdog_folder.exists()  # its temporary folder, too


class TestOwnedStack:
    async def test_nwd_up_with_an_owner_stops_when_the_owner_is_killed(
        self, tmp_path: Path
    ) -> None:
        """`nwd up` with NWD_STACK_OWNER_PID returns (its servers detached, as ever); when
        that owner is SIGKILLed, the watchdog stops exactly what `up` started — PostgreSQL,
        the dev server, the agencies — within the bound, and ends."""
        settings = quiet_settings(tmp_path / "state")
        owner = sleeper()
        stack = Stack(settings, env={}, echo=lambda _line: None)
        try:
            env = clean_env()
            env.update(settings.environment())
            env.pop("TEMPORAL_ADDRESS")  # the embedded server, on its moved port
            env["NWD_STACK_OWNER_PID"] = str(owner.pid)
            done = await asyncio.to_thread(
                subprocess.run, [NWD, "up", "temporal", "agencies"], env=env,
                capture_output=True, text=True, timeout=180, check=False)
            assert done.returncode == 0, done.stdout + done.stderr
            pids = {name: stack.running_pid(name) for name in ("postgres", "temporal",
                                                               "agencies")}
            assert all(pids.values()), pids
            watchdog = stack.watchdog()
            assert watchdog is not None and watchdog.owner.pid == owner.pid
            processes = [ProcessRef.of(pid) for pid in pids.values() if pid is not None]
            processes += [watchdog.process, *descendants(pids["postgres"] or 0)]
            ports = [settings.postgres_port, settings.temporal_port,
                     settings.temporal_ui_port, int(settings.agencies_url.rpartition(":")[2])]

            owner.kill()
            owner.wait()
            started = time.monotonic()
            await nothing_left_within(processes, ports, within_s=STOP_BOUND_S)
            print(f"nothing left {time.monotonic() - started:.2f} s after the owner's SIGKILL")
            assert not any(s.running for s in stack.status())
        finally:
            if owner.poll() is None:
                owner.kill()
                owner.wait()
            stack.down()

    def test_the_owner_is_the_stacks_not_its_processes(self, tmp_path: Path) -> None:
        """NWD_STACK_OWNER_PID ties the stack; the worker, intake and agencies do not get it
        (nothing of theirs acts on it)."""
        settings = quiet_settings(tmp_path / "state").replace(stack_owner_pid=os.getpid())
        stack = Stack(settings, env={}, echo=lambda _line: None)
        assert stack.owner_pid == os.getpid()
        assert settings.environment()["NWD_STACK_OWNER_PID"] == str(os.getpid())
        assert "NWD_STACK_OWNER_PID" not in stack.child_env("worker")

    def test_an_owner_that_does_not_run_is_refused_before_anything_starts(
        self, tmp_path: Path
    ) -> None:
        """An owner PID that names no process: a clear error, and nothing is created."""
        gone = subprocess.Popen(["true"])
        gone.wait()
        stack = Stack(quiet_settings(tmp_path / "state"), env={}, echo=lambda _line: None,
                      owner_pid=gone.pid)
        with pytest.raises(StackError, match=rf"NWD_STACK_OWNER_PID={gone.pid}\) is not a"):
            stack.up(["postgres"])
        assert not (tmp_path / "state").exists()

    def test_an_owner_pid_that_is_not_a_number_is_one_line(self) -> None:
        """NWD_STACK_OWNER_PID=abc stops at start-up with the rule, like every setting."""
        with pytest.raises(InvalidSettings) as caught:
            Settings.build(stack_owner_pid="abc")
        assert caught.value.problems == (
            "NWD_STACK_OWNER_PID='abc' is not a process id (a positive integer)",)

    def test_a_stack_tied_to_another_owner_is_refused(self, tmp_path: Path) -> None:
        """A second owner for a state folder already tied to a running one: refused, nothing
        started, the first tie kept."""
        first, second = sleeper(), sleeper()
        folder = tmp_path / "state" / "watchdog"
        watchdog = Watchdog.start(folder, owner=first.pid)
        try:
            stack = Stack(quiet_settings(tmp_path / "state"), env={},
                          echo=lambda _line: None, owner_pid=second.pid)
            with pytest.raises(StackError, match=f"already tied to process {first.pid}"):
                stack.up(["postgres"])
            assert stack.running_pid("postgres") is None
            running = Watchdog.running(folder)
            assert running is not None and running.owner.pid == first.pid
        finally:
            watchdog.stop()
            for proc in (first, second):
                proc.kill()
                proc.wait()


class TestWatchdog:
    """The watchdog on its own, with plain processes standing in for servers."""

    @staticmethod
    def _spawn(script: str) -> subprocess.Popen[bytes]:
        """A Python process of its own session running ``script`` after ``import signal,
        sys, time`` (its SIGTERM handler runs at once, unlike a shell's trap); returned once
        the script has printed ``up`` (its handler is installed)."""
        proc = subprocess.Popen([sys.executable, "-c", f"import signal, sys, time\n{script}"],
                                stdout=subprocess.PIPE, start_new_session=True)
        assert proc.stdout is not None and proc.stdout.readline() == b"up\n"
        return proc

    async def test_owner_killed_stops_entries_newest_first_with_the_grace_sequence(
        self, tmp_path: Path
    ) -> None:
        """The owner SIGKILLed: each entry gets its signals, then SIGKILL after its grace
        (one ignores SIGTERM), newest first; then the watchdog ends and its folder is empty."""
        log = tmp_path / "order.log"
        owner = sleeper()
        polite = self._spawn(
            f"def stop(*_):\n  open({str(log)!r}, 'a').write('polite\\n'); sys.exit(0)\n"
            "signal.signal(signal.SIGTERM, stop)\nprint('up', flush=True)\ntime.sleep(600)")
        stubborn = self._spawn(
            f"signal.signal(signal.SIGTERM, lambda *_: open({str(log)!r}, 'a')"
            ".write('stubborn\\n'))\nprint('up', flush=True)\ntime.sleep(600)")
        watchdog = Watchdog.start(tmp_path / "wd", owner=owner.pid)
        try:
            watchdog.watch("polite", polite.pid, signals=[signal.SIGTERM], grace=5)
            watchdog.watch("stubborn", stubborn.pid, signals=[signal.SIGTERM], grace=0.5)
            owner.kill()
            owner.wait()
            assert await asyncio.to_thread(polite.wait, STOP_BOUND_S) == 0
            assert stubborn.wait(timeout=1) == -signal.SIGKILL
            assert log.read_text().split() == ["stubborn", "polite"]

            async def ended() -> None:
                assert not watchdog.process.alive()

            await eventually(ended, within_s=10)
            assert list((tmp_path / "wd" / "watched").iterdir()) == []
        finally:
            for proc in (owner, polite, stubborn):
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()

    def test_a_reused_pid_is_never_signalled(self, tmp_path: Path) -> None:
        """An entry whose PID now belongs to another process (its start time differs) is left
        alone when the watchdog stops."""
        owner = sleeper()
        other = sleeper()
        watchdog = Watchdog.start(tmp_path / "wd", owner=owner.pid)
        try:
            watchdog.watch("reused", other.pid, signals=[signal.SIGTERM], grace=1)
            entry = tmp_path / "wd" / "watched" / "reused.json"
            recorded = json.loads(entry.read_text())
            entry.write_text(json.dumps({**recorded, "started": recorded["started"] - 1}))
            assert watchdog.stop()
            assert other.poll() is None
        finally:
            for proc in (owner, other):
                proc.kill()
                proc.wait()

    def test_asked_to_stop_it_stops_its_entries_but_sweeps_nothing(
        self, tmp_path: Path
    ) -> None:
        """SIGTERM to the watchdog while its owner runs: its entries are stopped (stopping
        it never orphans them), the owner's own children are left to the owner."""
        child = sleeper()  # ours, in our session: sweepable
        entry = self._spawn("print('up', flush=True)\ntime.sleep(600)")
        watchdog = Watchdog.start(tmp_path / "wd", owner=os.getpid(), sweep=True)
        try:
            watchdog.watch("entry", entry.pid, signals=[signal.SIGTERM], grace=1)
            assert watchdog.stop()
            assert entry.wait(timeout=5) == -signal.SIGTERM
            assert child.poll() is None
        finally:
            for proc in (child, entry):
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()

    def test_an_owner_that_does_not_run_cannot_be_watched(self, tmp_path: Path) -> None:
        gone = subprocess.Popen(["true"])
        gone.wait()
        with pytest.raises(ProcessLookupError, match=f"no process with PID {gone.pid}"):
            Watchdog.start(tmp_path / "wd", owner=gone.pid)
        assert not (tmp_path / "wd").exists()
