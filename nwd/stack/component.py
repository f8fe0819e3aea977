"""What the stack needs to know of one component: the small protocol every part implements.

The stack starts, waits for, lists and stops components only through this protocol, so adding
one (an OIDC provider, an SMTP sink) is one class and one line in the stack's table — no
``if name == ...`` anywhere.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Protocol

from nwd.stack.supervisor import Launch, StackError


@dataclass(frozen=True)
class PortClaim:
    """A port a component listens on, and the setting that moves it."""

    host: str
    port: int
    setting: str
    """The variable to set for another port, e.g. ``NWD_TEMPORAL_UI_PORT``."""
    label: str
    """What listens there, e.g. ``Temporal UI``."""
    alternative: str = ""
    """Another way out, e.g. ``or TEMPORAL_ADDRESS to use that server``."""

    def conflict(self, component: str) -> str:
        """The one-line message when something else already listens on the port."""
        also = f" ({self.alternative})" if self.alternative else ""
        return (
            f"{component}: port {self.host}:{self.port} ({self.label}) is in use by a process "
            f"nwd did not start; stop it, or set {self.setting} to another port{also}"
        )


class PortsInUseError(StackError):
    """Ports a component would listen on are held by processes nwd did not start.

    ``problems`` holds one line per port, naming it and the variable that moves it.
    """

    def __init__(self, problems: tuple[str, ...]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class Component(Protocol):
    """One part of the embedded stack."""

    # Read-only properties, so plain attributes, class attributes and frozen dataclass
    # fields all implement them.
    @property
    def name(self) -> str:
        """Its name in ``nwd up NAME``, the log and pid file names."""
        ...

    @property
    def needs(self) -> tuple[str, ...]:
        """Components that must be ready before it starts."""
        ...

    @property
    def marker(self) -> str:
        """A string its command line contains (guards against a reused PID)."""
        ...

    @property
    def stop_signals(self) -> tuple[signal.Signals, ...]:
        """The polite signal first, then harder ones; SIGKILL follows them all."""
        ...

    @property
    def readiness(self) -> str:
        """What ready means, for the message when it does not become ready."""
        ...

    @property
    def external(self) -> bool:
        """Not this stack's to start or stop (a server given by ``DATABASE_URL``, say)."""
        ...

    def ports(self) -> tuple[PortClaim, ...]:
        """The ports it will listen on, each checked free before anything starts."""
        ...

    def launch(self) -> Launch:
        """Prepare (first start: data folders) and say how to start it."""
        ...

    def ready(self) -> bool:
        """True once it serves."""
        ...

    def started(self) -> None:
        """After it became ready on a fresh start (PostgreSQL: create the databases)."""
        ...

    def address(self) -> str:
        """Where it serves, as ``nwd ps`` shows it (no passwords)."""
        ...

    def endpoint(self) -> tuple[str, int]:
        """``(host, port)`` that answers while it runs (an external server's reachability)."""
        ...
