"""The embedded stack: its components in dependency order, started, listed and stopped as one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from agency_kit.reference.credentials import write_keys_file
from definitions.errors import DefinitionErrors
from definitions.loader import load_registry_file
from definitions.models import AgencyRegistry
from nwd.stack.component import Component, PortClaim, PortsInUseError
from nwd.stack.mailsink import MAIL_DIR, MailSink
from nwd.stack.oidc import CONFIG_FILE, OidcProvider, ProviderConfig, dev_users
from nwd.stack.postgres import Postgres, redact
from nwd.stack.processes import EngineProcess, address_claim, url_claim
from nwd.stack.secrets import AGENCY_KEYS_FILE, Secrets, ensure_secrets
from nwd.stack.supervisor import StackError, Supervisor, port_open
from nwd.stack.temporal import TemporalDevServer
from nwd.stack.watchdog import ProcessRef, Watchdog, release
from runtime.settings import ENGINE_SECRETS, PROJECT_ROOT, Settings, reveal

COMPONENTS: tuple[str, ...] = ("postgres", "temporal", "oidc", "mail", "agencies", "worker",
                               "intake")
"""Every component, in start order (``down`` stops them in reverse)."""

REGISTRY_FILE = "agencies.yaml"


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


class Stack:
    """The embedded stack under ``settings.state_dir``.

    Args:
        settings: the engine's settings; the stack's ports, ``state_dir``, ``database_url``,
            ``intake_url``, ``agencies_url``, ``catalog_dir``, the namespace and the metrics
            addresses are used, and its processes get them (resolved) as their environment.
        external_temporal: use the server at ``settings.temporal_address`` instead of starting
            the dev server (default: ``TEMPORAL_ADDRESS`` was given, ``temporal_external``).
        env: the base environment of child processes (default: ``os.environ``); the stack's
            own variables in it are replaced by ``settings``.
        python: interpreter for the engine's processes (default: this one).
        start_timeout: seconds each component may take to become ready.
        stop_grace: seconds between the polite signal and SIGKILL on ``down``.
        echo: where progress lines go (default: print); pass ``lambda _: None`` to silence.
        owner_pid: a process whose end stops what this stack starts (default
            ``settings.stack_owner_pid``; None: the processes run until ``down``). ``up``
            starts a watchdog (:mod:`nwd.stack.watchdog`) that waits for that process to end
            — however it ends, SIGKILL included — and then stops exactly the PIDs ``up``
            started, as ``down`` would. Test and benchmark stacks pass their own PID.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        external_temporal: bool | None = None,
        env: Mapping[str, str] | None = None,
        python: str = sys.executable,
        start_timeout: float = 60.0,
        stop_grace: float = 10.0,
        echo: Callable[[str], None] | None = None,
        owner_pid: int | None = None,
    ) -> None:
        self.settings = settings
        self.owner_pid = settings.stack_owner_pid if owner_pid is None else owner_pid
        self.external_temporal = (
            settings.temporal_external if external_temporal is None else external_temporal
        )
        self.base_env: dict[str, str] = dict(os.environ if env is None else env)
        self.python = python
        self.start_timeout = start_timeout
        self.stop_grace = stop_grace
        self.echo: Callable[[str], None] = echo or (lambda line: print(line, flush=True))
        self.state_dir = settings.state_dir.resolve()
        self.supervisor = Supervisor(self.state_dir, cwd=PROJECT_ROOT)
        self.logs_dir = self.supervisor.logs_dir
        self.pids_dir = self.supervisor.pids_dir
        self.watchdog_dir = self.state_dir / "watchdog"
        self.registry_path = settings.catalog_dir / REGISTRY_FILE
        self._registry: AgencyRegistry | None = None
        self._watchdog: Watchdog | None = None
        """The watchdog this stack started (kept to reap it when it ends)."""
        self.postgres = Postgres(
            port=settings.postgres_port, external_url=settings.database_url,
            state_dir=self.state_dir, base_env=self.base_env,
            log_path=self.log_path("postgres"), echo=self.echo,
        )
        self.temporal = TemporalDevServer(
            settings,
            address=(settings.temporal_address if self.external_temporal
                     else f"127.0.0.1:{settings.temporal_port}"),
            external=self.external_temporal, state_dir=self.state_dir,
            base_env=self.base_env,
            codec_endpoint=lambda: f"{settings.intake_url}/codec/{self.codec_token()}",
        )
        self.oidc = OidcProvider(
            config=self._oidc_config(), config_path=self.state_dir / CONFIG_FILE,
            python=python, external=settings.oidc_external, issuer=settings.oidc_issuer,
            base_env=self.base_env,
        )
        self.mail = MailSink(
            directory=self.state_dir / MAIL_DIR, port=settings.smtp_port, python=python,
            external=bool(settings.smtp_host), host=settings.smtp_host or "127.0.0.1",
            base_env=self.base_env,
        )
        parts: tuple[Component, ...] = (self.postgres, self.temporal, self.oidc, self.mail,
                                        *self._engine_processes())
        self.components: dict[str, Component] = {c.name: c for c in parts}
        assert tuple(self.components) == COMPONENTS

    @classmethod
    def from_env(cls, **options: Any) -> Stack:
        """The stack as the CLI sees it: settings from this process's environment.

        Raises:
            InvalidSettings: a variable holds a bad value (one line each).
        """
        return cls(Settings.from_environment(), **options)

    def _oidc_config(self) -> Callable[[], ProviderConfig]:
        """The embedded provider's configuration, computed when it starts (the secrets and
        the catalog's roles are read then)."""
        settings = self.settings

        def config() -> ProviderConfig:
            roles = self.caseworker_roles()
            return ProviderConfig(
                host="127.0.0.1", port=settings.oidc_port, audience=settings.oidc_audience,
                roles_claim=settings.oidc_roles_claim, client_id=settings.oidc_client_id,
                client_secret=self.oidc_client_secret(), client_roles=roles,
                users=dev_users(roles),
            )

        return config

    def caseworker_roles(self) -> tuple[str, ...]:
        """The roles of the catalog's decision steps (the dev caseworker holds them all)."""
        from definitions.loader import load_catalog
        from definitions.models import DecisionStep

        try:
            catalog = load_catalog(self.settings.catalog_dir)
        except DefinitionErrors as exc:
            raise StackError(f"the catalog has problems; run `nwd definitions check`:\n{exc}"
                             ) from exc
        return tuple(sorted({step.role for service in catalog.services.values()
                             for step in service.steps if isinstance(step, DecisionStep)}))

    def oidc_client_secret(self) -> str:
        """The engine client's secret: ``NWD_OIDC_CLIENT_SECRET`` if given, else generated."""
        return reveal(self.settings.oidc_client_secret) or self.secrets().oidc_client_secret

    def reference_key(self) -> str:
        """The reference key: ``NWD_REFERENCE_KEY`` if given, else generated."""
        return reveal(self.settings.reference_key) or self.secrets().reference_key

    def _engine_processes(self) -> tuple[EngineProcess, ...]:
        settings = self.settings
        worker_claims: tuple[PortClaim, ...] = ()
        if settings.worker_metrics_address is not None:
            worker_claims = (address_claim(settings.worker_metrics_address,
                                           "NWD_WORKER_METRICS_ADDRESS", "worker metrics"),)
        intake = url_claim(settings.intake_url, "NWD_INTAKE_URL", "intake")
        intake_claims: tuple[PortClaim, ...] = (intake,)
        if settings.intake_metrics_address is not None:
            intake_claims += (address_claim(settings.intake_metrics_address,
                                            "NWD_INTAKE_METRICS_ADDRESS",
                                            "intake's SDK metrics exporter"),)
        agencies = url_claim(settings.agencies_url, "NWD_AGENCIES_URL", "reference agencies")
        return (
            EngineProcess(
                "agencies", ("postgres",), "agency_kit", [self.python, "-m", "agency_kit"],
                env=lambda: self.child_env("agencies"),
                check=lambda: port_open(agencies.host, agencies.port),
                readiness=f"listening on {settings.agencies_url}",
                shown=settings.agencies_url, claims=(agencies,),
            ),
            EngineProcess(
                "worker", ("temporal", "postgres", "mail"), "worker.py",
                [self.python, str(PROJECT_ROOT / "worker.py")],
                env=lambda: self.child_env("worker"),
                check=lambda: self.temporal.has_pollers(settings.task_queue),
                readiness="polling its task queue",
                shown=f"task queue {settings.task_queue}"
                + (f", metrics {self.worker_metrics_url}" if self.worker_metrics_url else ""),
                claims=worker_claims,
            ),
            EngineProcess(
                "intake", ("temporal", "postgres", "oidc"), "intake",
                [self.python, "-m", "intake"],
                env=lambda: self.child_env("intake"),
                check=lambda: port_open(intake.host, intake.port),
                readiness=f"listening on {settings.intake_url}",
                shown=settings.intake_url, claims=intake_claims,
            ),
        )

    # ---- addresses -------------------------------------------------------------------------

    @property
    def external_postgres(self) -> bool:
        return self.postgres.external

    @property
    def temporal_address(self) -> str:
        return self.temporal.target

    @property
    def temporal_ui_url(self) -> str:
        return self.temporal.ui_url

    @property
    def temporal_metrics_url(self) -> str | None:
        return self.temporal.metrics_url

    @property
    def worker_metrics_url(self) -> str | None:
        address = self.settings.worker_metrics_address
        return f"http://{address}/metrics" if address else None

    @property
    def postgres_dsn(self) -> str:
        """DSN of the server's maintenance database ``postgres``."""
        return self.postgres.dsn

    @property
    def database_url(self) -> str:
        """The engine's read-model database (``nwd``)."""
        return self.postgres.database_url("nwd")

    @property
    def agencies_database_url(self) -> str:
        """The reference agencies' database: ``NWD_AGENCIES_DATABASE_URL``, else ``agencies``
        on the embedded server, else (external PostgreSQL) the engine's database."""
        if self.settings.agencies_database_url:
            return self.settings.agencies_database_url
        return self.postgres.database_url("agencies")

    def links(self) -> list[tuple[str, str]]:
        """``(what, URL)`` of every endpoint of the running components, for the summary."""
        running = {s.name for s in self.status() if s.running}
        links: list[tuple[str, str]] = []
        if "temporal" in running:
            links += [("Temporal UI", self.temporal_ui_url),
                      ("Temporal address", self.temporal_address)]
            if self.temporal_metrics_url:
                links.append(("Temporal metrics", self.temporal_metrics_url))
        if "intake" in running:
            links += [("Front door", f"{str(self.settings.intake_url).rstrip('/')}/"),
                      ("Intake", self.settings.intake_url),
                      ("Intake metrics", f"{self.settings.intake_url}/metrics")]
        if "worker" in running and self.worker_metrics_url:
            links.append(("Worker metrics", self.worker_metrics_url))
        if "agencies" in running:
            links.append(("Agencies", self.settings.agencies_url))
        if "oidc" in running:
            links.append(("Sign in (OIDC issuer)", self.settings.oidc_issuer))
        if "mail" in running:
            links.append(("Mail (SMTP)" if self.mail.external else "Mail sink (`nwd mail`)",
                          self.mail.address()))
        if "postgres" in running:
            links.append(("PostgreSQL", redact(self.database_url)))
        return links

    def log_path(self, name: str) -> Path:
        return self.supervisor.log_path(name)

    def pid_path(self, name: str) -> Path:
        return self.supervisor.pid_path(name)

    # ---- registry, secrets and the processes' settings -------------------------------------

    def registry(self) -> AgencyRegistry | None:
        """The agency registry (``catalog_dir/agencies.yaml``), loaded once by the definition
        loader; None while there is none."""
        if self._registry is None and self.registry_path.exists():
            try:
                self._registry = load_registry_file(self.registry_path)
            except DefinitionErrors as exc:
                raise StackError(
                    f"the agency registry {self.registry_path} has problems; "
                    f"run `nwd definitions check`:\n{exc}"
                ) from exc
        return self._registry

    def secrets(self) -> Secrets:
        """The stack's secrets, created on first use."""
        registry = self.registry()
        ids = [a.id for a in registry.agencies if a.keys is not None] if registry else []
        return ensure_secrets(self.state_dir, ids)

    def codec_token(self) -> str:
        """The codec server's token: `NWD_CODEC_TOKEN` if given, else the generated one."""
        return reveal(self.settings.codec_token) or self.secrets().codec_token

    def agency_env(self) -> dict[str, str]:
        """The variables the registry names, for this stack's processes.

        Each agency's ``http.base_url_env`` and ``keys.jwks_url_env``: the value in
        ``settings.agency_env`` if there is one (an operator may pin it), else
        ``{agencies_url}/agencies/<id>`` and its ``/.well-known/jwks.json`` (the reference
        agencies serve them all). No secret: each agency's private key is in its keys file.
        """
        registry = self.registry()
        if registry is None:
            return {}
        given = self.settings.agency_env
        env: dict[str, str] = {}
        for agency in registry.agencies:
            base = f"{self.settings.agencies_url}/agencies/{agency.id}"
            if agency.http is not None:
                env[agency.http.base_url_env] = given.get(agency.http.base_url_env) or base
            if agency.keys is not None and agency.keys.jwks_url_env:
                env[agency.keys.jwks_url_env] = (
                    given.get(agency.keys.jwks_url_env) or f"{base}/.well-known/jwks.json")
        return env

    def agency_keys_file(self) -> Path:
        """The reference agencies' private keys (mode 0600), written from the secrets."""
        path = self.state_dir / AGENCY_KEYS_FILE
        keys = {agency_id: [jwk] for agency_id, jwk in self.secrets().agency_keys.items()}
        write_keys_file(path, keys)
        return path

    def engine_public_keys(self) -> str:
        """The engine's public keys as a JWKS (JSON), for the intake to publish."""
        engine = self.settings.replace(
            signing_key=self.settings.signing_key
            or SecretStr(json.dumps(self.secrets().engine_key)))
        return json.dumps(engine.engine_jwks())

    def child_settings(self, component: str) -> Settings:
        """The settings one of the engine's processes runs with: addresses at this stack, its
        database, the secrets it needs and no other (given ones win over the generated): the
        engine's private key only to the worker; the intake only the public keys."""
        secrets = self.secrets()
        database = self.agencies_database_url if component == "agencies" else self.database_url
        keys: dict[str, Any] = {"signing_key": None, "signing_key_id": None,
                                "engine_public_keys": None}
        if component == "worker":
            keys = {"signing_key": self.settings.signing_key
                    or SecretStr(json.dumps(secrets.engine_key))}
        elif component == "intake":
            keys["engine_public_keys"] = self.engine_public_keys()
        # Only the front door (and the CLI, a client of it) holds the reference key and the
        # engine's client secret; the worker and the agencies need neither.
        front_door = component == "intake"
        return self.settings.replace(
            reference_key=self.reference_key() if front_door else None,
            oidc_client_secret=self.oidc_client_secret() if front_door else None,
            temporal_address=self.temporal_address,
            temporal_ui_url=self.temporal_ui_url,
            database_url=database,
            state_dir=self.state_dir,
            encryption_key=self.settings.encryption_key or secrets.encryption_key,
            codec_token=self.settings.codec_token or secrets.codec_token,
            agency_env={**self.settings.agency_env, **self.agency_env()},
            stack_owner_pid=None,  # the stack's to act on, not its processes'
            # the worker sends through the stack's sink unless a real server is named
            smtp_host=self.settings.smtp_host or "127.0.0.1",
            **keys,
        )

    def child_env(self, component: str) -> dict[str, str]:
        """The environment of one of the engine's processes: the base environment without
        the stack's variables, the registry's variables, then :meth:`child_settings`."""
        variables = Settings.variables()
        env = {k: v for k, v in self.base_env.items() if k not in variables}
        env.update(self.agency_env())
        env.update(self.child_settings(component).environment())
        if component != "worker":  # the engine's private key and mail password: the worker's
            env.pop("NWD_SIGNING_KEY", None)
            env.pop("NWD_SIGNING_KEY_ID", None)
            env.pop("NWD_SMTP_PASSWORD", None)
        if component == "agencies":
            # the agencies are other parties: none of the engine's secrets (the payload key
            # would open every payload and mint callback URLs) nor the state folder holding them
            for name in (*ENGINE_SECRETS, "NWD_STATE_DIR"):
                env.pop(name, None)
            env["NWD_AGENCY_KEYS_FILE"] = str(self.agency_keys_file())
            env["NWD_ENGINE_JWKS_URL"] = f"{self.settings.intake_url}/.well-known/jwks.json"
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def client_settings(self) -> Settings:
        """Settings for a client of this stack (the demo, the requests commands)."""
        return self.child_settings("intake")

    # ---- tools -------------------------------------------------------------------------------

    def psql(self, sql: str) -> subprocess.CompletedProcess[str]:
        """Run one SQL statement in the ``postgres`` database (:meth:`Postgres.psql`)."""
        return self.postgres.psql(sql)

    def temporal_cli(
        self, *args: str, timeout: float = 10.0
    ) -> subprocess.CompletedProcess[str]:
        """Run ``temporal <args>`` against this stack's server (:meth:`TemporalDevServer.cli`)."""
        return self.temporal.cli(*args, timeout=timeout)

    def running_pid(self, name: str) -> int | None:
        """PID of a component this stack started and that still runs."""
        return self.supervisor.running_pid(name, self.components[name].marker)

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
            wanted.update(self.components[name].needs)
        return [name for name in COMPONENTS if name in wanted]

    def up(self, components: Iterable[str] | None = None) -> list[ComponentStatus]:
        """Start the components (default: all) that are not running yet; wait until ready.

        Components already running (pid alive, command line still ours) are reused, so
        ``up`` twice is harmless. Before anything starts, every port of the components to be
        started is checked free: one taken by another program (a second stack, say) fails
        with the port and the variable that moves it. Components start in waves — each wave
        the components whose needs are ready, in parallel — and each is waited for.

        With an owner (``owner_pid``), every process started is put in the care of the
        stack's watchdog (started first); a watchdog already running for another owner, or an
        owner that does not run, fails before anything starts.
        """
        names = self.resolve(components)
        self._check_owner()
        with self.supervisor.lock():
            if self.owner_pid is not None:
                self._watchdog = self._owner_watchdog(self.owner_pid)
            self.secrets()
            self._check_ports(names)
            waiting = list(names)
            ready: set[str] = set()
            while waiting:
                wave = [n for n in waiting if set(self.components[n].needs) <= ready]
                assert wave, f"the needs of {waiting} form a cycle"
                started = {name: self._start(name) for name in wave}
                for name, pid in started.items():
                    if pid is not None:
                        component = self.components[name]
                        self.supervisor.wait_ready(name, pid, component.ready,
                                                   component.readiness,
                                                   timeout=self.start_timeout)
                        component.started()
                        self.echo(f"{name}: ready (pid {pid})")
                ready.update(wave)
                waiting = [n for n in waiting if n not in ready]
        wanted = set(names)
        return [s for s in self.status() if s.name in wanted]

    def _check_ports(self, names: list[str]) -> None:
        conflicts = [
            claim.conflict(name)
            for name in names
            if not self.components[name].external and self.running_pid(name) is None
            for claim in self.components[name].ports()
            if port_open(claim.host, claim.port)
        ]
        if conflicts:
            raise PortsInUseError(tuple(conflicts))

    def _start(self, name: str) -> int | None:
        """Launch ``name`` unless running or external; returns the new PID to wait for."""
        component = self.components[name]
        if component.external:
            self.echo(f"{name}: external ({component.address()})")
            return None
        pid = self.running_pid(name)
        if pid is not None:
            # normally instant; waits if it is still starting
            self.supervisor.wait_ready(name, pid, component.ready, component.readiness,
                                       timeout=self.start_timeout)
            self.echo(f"{name}: already running (pid {pid})")
            return None
        pid = self.supervisor.spawn(name, component.launch())
        if self._watchdog is not None:
            self._watchdog.watch(name, pid, signals=component.stop_signals,
                                 grace=self.stop_grace)
        return pid

    # ---- the owner's watchdog --------------------------------------------------------------

    def _check_owner(self) -> None:
        if self.owner_pid is None:
            return
        if not ProcessRef.of(self.owner_pid).alive():
            raise StackError(
                f"the stack's owner (NWD_STACK_OWNER_PID={self.owner_pid}) is not a running "
                "process; give the PID of the process whose end should stop the stack"
            )
        running = Watchdog.running(self.watchdog_dir)
        if running is not None and running.owner.pid != self.owner_pid:
            raise StackError(
                f"the stack under {self.state_dir} is already tied to process "
                f"{running.owner.pid} (watchdog pid {running.process.pid}); stop it with "
                "`nwd down` first, or use another NWD_STATE_DIR"
            )

    def _owner_watchdog(self, owner: int) -> Watchdog:
        """The watchdog for ``owner``: the running one, else a new one."""
        running = Watchdog.running(self.watchdog_dir)
        if running is not None and running.owner.pid == owner:
            if self._watchdog is not None and self._watchdog.process == running.process:
                return self._watchdog
            return running
        return Watchdog.start(self.watchdog_dir, owner=owner)

    def watchdog(self) -> Watchdog | None:
        """The stack's running watchdog, if it has an owner and runs."""
        return Watchdog.running(self.watchdog_dir)

    # ---- down and status -------------------------------------------------------------------

    def down(self, components: Iterable[str] | None = None) -> list[str]:
        """Stop the components (default: all) this stack started; returns the names stopped.

        Each gets its polite signal (PostgreSQL: SIGINT, its fast shutdown), then SIGKILL
        after ``stop_grace`` seconds. Only PIDs from our pid files are signalled. Each one
        stopped leaves the watchdog's care; once nothing of the stack runs, the watchdog ends.
        """
        names = set(COMPONENTS if components is None else components)
        stopped: list[str] = []
        with self.supervisor.lock():
            for name in reversed(COMPONENTS):
                if name not in names:
                    continue
                pid = self.running_pid(name)
                if pid is None:
                    continue
                self.supervisor.stop(name, pid, self.components[name].stop_signals,
                                     grace=self.stop_grace)
                release(self.watchdog_dir, name)
                stopped.append(name)
                self.echo(f"{name}: stopped (pid {pid})")
            if all(self.running_pid(name) is None for name in COMPONENTS):
                self._stop_watchdog()
        return stopped

    def _stop_watchdog(self) -> None:
        running = Watchdog.running(self.watchdog_dir)
        if running is None:
            return
        mine = self._watchdog
        (mine if mine is not None and mine.process == running.process else running).stop()
        self._watchdog = None

    def status(self) -> list[ComponentStatus]:
        """Every component: running or not, its PID, URL and log."""
        result: list[ComponentStatus] = []
        for name, component in self.components.items():
            if component.external:
                host, port = component.endpoint()
                result.append(ComponentStatus(name, port_open(host, port),
                                              url=component.address(), external=True))
                continue
            pid = self.running_pid(name)
            result.append(ComponentStatus(name, pid is not None, pid=pid,
                                          url=component.address(), log=self.log_path(name)))
        return result

