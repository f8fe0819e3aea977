"""The engine's own processes as components: the reference agencies, the worker, the intake.

Each is a Python child of this interpreter, configured only through its environment — the
stack's settings written out for it (:meth:`runtime.settings.Settings.environment`), so the
child reads back exactly what ``nwd up`` resolved.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from nwd.stack.component import PortClaim
from nwd.stack.supervisor import Launch


@dataclass(frozen=True)
class EngineProcess:
    """One of the engine's processes (see :class:`nwd.stack.component.Component`)."""

    name: str
    needs: tuple[str, ...]
    marker: str
    argv: Sequence[str]
    env: Callable[[], Mapping[str, str]]
    """Its environment, computed when it starts (the secrets exist by then)."""
    check: Callable[[], bool]
    """The readiness check."""
    readiness: str
    shown: str
    """Its address as ``nwd ps`` shows it."""
    claims: tuple[PortClaim, ...] = ()
    stop_signals: tuple[signal.Signals, ...] = (signal.SIGTERM,)
    external: bool = field(default=False, init=False)

    def ports(self) -> tuple[PortClaim, ...]:
        return self.claims

    def launch(self) -> Launch:
        return Launch(self.argv, self.env())

    def ready(self) -> bool:
        return self.check()

    def started(self) -> None:
        return None

    def address(self) -> str:
        return self.shown

    def endpoint(self) -> tuple[str, int]:
        if self.claims:
            return self.claims[0].host, self.claims[0].port
        return "127.0.0.1", 0


def url_claim(url: str, setting: str, label: str) -> PortClaim:
    """The port an ``http://HOST:PORT`` setting listens on."""
    parts = urlsplit(url)
    default = 443 if parts.scheme == "https" else 80
    return PortClaim(parts.hostname or "127.0.0.1", parts.port or default, setting, label)


def address_claim(address: str, setting: str, label: str) -> PortClaim:
    """The port a ``HOST:PORT`` setting listens on."""
    host, _, port = address.rpartition(":")
    return PortClaim(host or "127.0.0.1", int(port), setting, label)
