"""The embedded stack (``nwd up``/``down``): real Temporal dev server and PostgreSQL processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from nwd.stack import COMPONENTS, Stack, StackError, port_open, read_secrets
from runtime.settings import Settings
from tests.conftest import quiet_settings, quiet_stack
from workflows.search_attributes import ALL as SEARCH_ATTRIBUTES

pytestmark = pytest.mark.integration

NWD = str(Path(sys.executable).parent / "nwd")


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    try:  # an exited child of init that init has not reaped yet is gone too
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = quiet_stack(tmp_path_factory.mktemp("stack") / "state", start_timeout=30)
    try:
        yield stack
    finally:
        stack.down()


class TestEmbeddedStack:
    def test_up_starts_temporal_and_postgres(self, stack: Stack) -> None:
        """`up` starts both servers on the requested ports and both answer."""
        statuses = {s.name: s for s in stack.up(["temporal", "postgres"])}
        assert set(statuses) == {"temporal", "postgres"}
        assert all(s.running and s.pid for s in statuses.values())
        assert port_open("127.0.0.1", stack.settings.temporal_port)
        assert port_open("127.0.0.1", stack.settings.temporal_ui_port)
        assert port_open("127.0.0.1", stack.settings.postgres_port)
        health = stack.temporal_cli("operator", "cluster", "health")
        assert "SERVING" in health.stdout

    def test_databases_exist(self, stack: Stack) -> None:
        """The engine's and the reference agencies' databases are created."""
        stack.up(["postgres"])
        listed = stack.psql("SELECT datname FROM pg_database")
        assert {"nwd", "agencies"} <= set(listed.stdout.split())
        assert stack.database_url.endswith(f":{stack.settings.postgres_port}/nwd")

    def test_search_attributes_registered(self, stack: Stack) -> None:
        """Every search attribute of the engine is registered on the dev server."""
        stack.up(["temporal"])
        listed = stack.temporal_cli("operator", "search-attribute", "list", "-o", "json")
        custom = json.loads(listed.stdout)["customAttributes"]
        assert {key.name for key in SEARCH_ATTRIBUTES} <= set(custom)

    def test_secrets_created_private(self, stack: Stack) -> None:
        """Secrets are generated once, kept 0600, and include one per agency in the registry."""
        stack.up(["temporal", "postgres"])
        path = stack.state_dir / "secrets.json"
        assert path.stat().st_mode & 0o777 == 0o600
        secrets = read_secrets(stack.state_dir)
        assert secrets is not None
        assert stack.child_env("worker")["NWD_ENCRYPTION_KEY"] == secrets.encryption_key
        assert stack.child_env("agencies")["DATABASE_URL"].endswith("/agencies")

    def test_up_twice_reuses(self, stack: Stack) -> None:
        """A second `up` keeps the running processes (same PIDs) and is quick."""
        first = {s.name: s.pid for s in stack.up(["temporal", "postgres"])}
        started = time.monotonic()
        second = {s.name: s.pid for s in stack.up(["temporal", "postgres"])}
        assert second == first
        assert time.monotonic() - started < 5

    def test_stale_pid_file_is_cleaned(self, stack: Stack) -> None:
        """A pid file naming a dead process does not count as running and is removed."""
        stack.pids_dir.mkdir(parents=True, exist_ok=True)
        stack.pid_path("intake").write_text("999999999\n")
        assert stack.running_pid("intake") is None
        assert not stack.pid_path("intake").exists()

    def test_reused_pid_is_never_ours(self, stack: Stack) -> None:
        """A pid file naming a live process of another program (the PID was reused) does not
        count as running, and `down` does not signal that process."""
        other = subprocess.Popen(["sleep", "30"])
        try:
            stack.pids_dir.mkdir(parents=True, exist_ok=True)
            stack.pid_path("intake").write_text(f"{other.pid}\n")
            assert stack.running_pid("intake") is None
            stack.pid_path("intake").write_text(f"{other.pid}\n")
            assert "intake" not in stack.down(["intake"])
            assert other.poll() is None
        finally:
            other.kill()
            other.wait()

    def test_second_stack_on_the_same_ports_is_refused(
        self, stack: Stack, tmp_path: Path
    ) -> None:
        """A second stack on the first one's ports fails before starting anything, one line
        per taken port naming the variable that moves it."""
        stack.up(["temporal", "postgres"])
        second = Stack(stack.settings.replace(state_dir=tmp_path / "second"),
                       env={"PATH": os.environ.get("PATH", "")}, echo=lambda _line: None)
        with pytest.raises(StackError) as caught:
            second.up(["temporal", "postgres"])
        lines = str(caught.value).splitlines()
        assert len(lines) == 4
        for setting in ("NWD_POSTGRES_PORT", "NWD_TEMPORAL_PORT", "NWD_TEMPORAL_UI_PORT",
                        "NWD_TEMPORAL_METRICS_PORT"):
            assert sum(f"set {setting} to another port" in line for line in lines) == 1
        assert not (tmp_path / "second" / "pids").exists()

    def test_down_leaves_no_process(self, stack: Stack) -> None:
        """`down` stops every process it started (and PostgreSQL's backends) by PID."""
        pids = [s.pid for s in stack.up(["temporal", "postgres"]) if s.pid]
        backends = [
            int(c) for pid in pids for f in Path(f"/proc/{pid}/task").glob("*/children")
            for c in f.read_text().split()
        ]
        stopped = stack.down()
        assert set(stopped) == {"temporal", "postgres"}
        deadline = time.monotonic() + 5
        while not all(_gone(p) for p in pids + backends) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert all(_gone(p) for p in pids + backends)
        assert not any(stack.pid_path(name).exists() for name in COMPONENTS)
        assert not port_open("127.0.0.1", stack.settings.temporal_port)
        assert not port_open("127.0.0.1", stack.settings.postgres_port)
        assert not any(s.running for s in stack.status())


class TestPorts:
    def test_taken_worker_metrics_port_stops_up_before_anything_starts(
        self, tmp_path: Path
    ) -> None:
        """The worker's metrics port, taken: `up` names it and its variable, starts nothing."""
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            address = f"127.0.0.1:{taken.getsockname()[1]}"
            stack = Stack(quiet_settings(tmp_path).replace(worker_metrics_address=address),
                          env={"PATH": os.environ.get("PATH", "")}, echo=lambda _line: None)
            with pytest.raises(StackError) as caught:
                stack.up(["worker"])
        assert str(caught.value) == (
            f"worker: port {address} (worker metrics) is in use by a process nwd did not "
            "start; stop it, or set NWD_WORKER_METRICS_ADDRESS to another port"
        )
        assert not any(s.running for s in stack.status())

    def test_nwd_up_names_the_port_and_its_variable(self, tmp_path: Path) -> None:
        """`nwd up` on a taken port: exit 2, one `nwd: error:` line per port, no traceback."""
        settings = quiet_settings(tmp_path)
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            env = {k: v for k, v in os.environ.items() if k not in Settings.variables()}
            env.update(settings.replace(agencies_url=f"http://127.0.0.1:{port}").environment())
            env.pop("TEMPORAL_ADDRESS")  # the embedded server, on its moved port
            done = subprocess.run([NWD, "up", "agencies"], env=env, capture_output=True,
                                  text=True, timeout=60, check=False)
        assert done.returncode == 2, done.stderr
        assert done.stderr.splitlines() == [
            f"nwd: error: agencies: port 127.0.0.1:{port} (reference agencies) is in use by a "
            "process nwd did not start; stop it, or set NWD_AGENCIES_URL to another port"
        ]
        assert not (tmp_path / "pids").exists()


def _environ(stack: Stack, name: str) -> dict[str, str]:
    """The environment a running component of ``stack`` was started with, from /proc."""
    pid = stack.running_pid(name)
    assert pid is not None, f"{name} is not running"
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


class TestWholeStack:
    def test_every_component_on_moved_ports(self, tmp_path: Path) -> None:
        """All six components on ports off the defaults: each serves, every port it opened
        is in the summary, the processes run with the stack's settings, `down` stops all."""
        stack = quiet_stack(tmp_path / "state", start_timeout=60)
        try:
            statuses = stack.up()
            assert all(s.running for s in statuses), statuses
            links = dict(stack.links())
            shown = " ".join(links.values())
            for component in stack.components.values():
                for claim in component.ports():
                    assert f":{claim.port}" in shown, (claim, links)
            metrics = httpx.get(links["Worker metrics"], timeout=5)
            assert metrics.status_code == 200 and "temporal_" in metrics.text
            assert httpx.get(f"{links['Intake']}/metrics", timeout=5).status_code == 200
            env = stack.child_env("worker")
            assert env["NWD_WORKER_METRICS_ADDRESS"] == stack.settings.worker_metrics_address
            assert env["TEMPORAL_ADDRESS"] == f"127.0.0.1:{stack.settings.temporal_port}"
            unset = {"NWD_AGENCIES_DATABASE_URL", "NWD_INTAKE_METRICS_ADDRESS",
                     "NWD_STACK_OWNER_PID", "NWD_METRICS_TOKEN",  # optional
                     "NWD_ENGINE_PUBLIC_KEYS", "NWD_SIGNING_KEY_ID",  # the intake's; in the JWK
                     "NWD_SMTP_USERNAME", "NWD_SMTP_PASSWORD"}  # the stack's sink needs none
            front_door_only = {"NWD_REFERENCE_KEY", "NWD_OIDC_CLIENT_SECRET"}
            assert set(Settings.variables()) - unset - front_door_only <= set(env)
            assert not front_door_only & set(env)  # the worker holds neither
            assert front_door_only <= set(stack.child_env("intake"))
            issuer = httpx.get(f"{links['Sign in (OIDC issuer)']}/.well-known/"
                               "openid-configuration", timeout=5).json()["issuer"]
            assert issuer == stack.settings.oidc_issuer
        finally:
            stopped = stack.down()
        assert set(stopped) == set(COMPONENTS)
        assert not any(s.running for s in stack.status())

    def test_each_process_gets_only_the_keys_it_needs(self, tmp_path: Path) -> None:
        """Read from the running processes themselves (/proc/<pid>/environ): the engine's
        private key only in the worker, its public keys only in the intake, the agencies'
        private keys only in the agencies' own 0600 file; the JWKS endpoints publish public
        halves only; and with those keys alone a request with a callback completes through
        the real processes (engine-signed calls, agency-signed answers and callback)."""
        stack = quiet_stack(tmp_path / "state", start_timeout=60)
        try:
            assert all(s.running for s in stack.up())
            secrets = read_secrets(stack.state_dir)
            assert secrets is not None
            engine_d = secrets.engine_key["d"]
            agency_ds = {jwk["d"] for jwk in secrets.agency_keys.values()}
            environ = {name: _environ(stack, name) for name in ("worker", "intake", "agencies")}
            everything = {name: "\n".join(env.values()) for name, env in environ.items()}

            assert json.loads(environ["worker"]["NWD_SIGNING_KEY"])["d"] == engine_d
            for name in ("intake", "agencies"):
                assert "NWD_SIGNING_KEY" not in environ[name]
                assert engine_d not in everything[name], f"{name} holds the engine's key"
            for name in ("worker", "intake", "agencies"):
                assert not any(d in everything[name] for d in agency_ds), name
            assert "NWD_ENGINE_PUBLIC_KEYS" not in environ["worker"]
            keys_file = Path(environ["agencies"]["NWD_AGENCY_KEYS_FILE"])
            assert keys_file.stat().st_mode & 0o777 == 0o600
            assert {jwk["d"] for [jwk] in json.loads(keys_file.read_text())["agencies"].values()
                    } == agency_ds
            assert "NWD_AGENCY_KEYS_FILE" not in environ["worker"]
            assert "NWD_AGENCY_KEYS_FILE" not in environ["intake"]
            for name in ("worker", "agencies"):  # the reference key is the front door's alone
                assert "NWD_REFERENCE_KEY" not in environ[name]
                assert "NWD_OIDC_CLIENT_SECRET" not in environ[name]
                assert secrets.reference_key not in everything[name]
            assert environ["intake"]["NWD_REFERENCE_KEY"] == secrets.reference_key
            # the agencies are other parties: no payload key (it opens every payload and mints
            # callback URLs), no codec or metrics token, not even the state folder
            for variable in ("NWD_ENCRYPTION_KEY", "NWD_CODEC_TOKEN", "NWD_METRICS_TOKEN",
                             "NWD_STATE_DIR"):
                assert variable not in environ["agencies"], variable
            assert secrets.encryption_key not in everything["agencies"]
            assert secrets.codec_token not in everything["agencies"]

            intake, agencies = stack.settings.intake_url, stack.settings.agencies_url
            published = httpx.get(f"{intake}/.well-known/jwks.json", timeout=5).json()
            assert [k["x"] for k in published["keys"]] == [secrets.engine_key["x"]]
            assert all("d" not in k for k in published["keys"])
            agency = httpx.get(f"{agencies}/agencies/electoral-registration/.well-known/jwks.json",
                               timeout=5).json()
            assert [k["x"] for k in agency["keys"]] == [
                secrets.agency_keys["electoral-registration"]["x"]]

            example = json.loads((Path(__file__).resolve().parents[2] / "examples"
                                  / "change-of-address.json").read_text())
            submitted = httpx.post(f"{intake}/requests", timeout=30, headers={
                "Idempotency-Key": "keys-test"}, json={
                "service": "change-of-address", "submission": example})
            assert submitted.status_code in (200, 201, 202), submitted.text
            reference = submitted.json()["reference"]
            owner = {"X-Access-Code": submitted.json()["access_code"]}
            deadline = time.monotonic() + 60
            status = None
            while time.monotonic() < deadline:
                view = httpx.get(f"{intake}/requests/{reference}", timeout=10,
                                 headers=owner).json()
                status = view["record"]["status"] if view.get("record") else None
                if status not in (None, "running"):
                    break
                time.sleep(0.5)
            assert status == "completed", view
        finally:
            stack.down()
