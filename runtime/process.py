"""Two things every process of the engine needs from its operating system, written once.

- :func:`free_port`: a loopback TCP port nothing listens on (the embedded stack, the tests and
  the benchmark put every server on one, so they never meet a stack already on the machine).
- :func:`exit_now`: leave a process that used a Temporal client without running the
  interpreter's shutdown, where the SDK's native runtime can crash a clean exit
  (temporalio/sdk-python#300).
- :func:`serve_main`: the body of every long-running process's ``main()`` (the worker, the
  intake): settings read once, logging configured, run, then :func:`exit_now`.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import Callable, Coroutine
from typing import Any, NoReturn

from agency_kit.logs import configure_logging
from runtime.codec import MissingKeyError
from runtime.settings import InvalidSettings, Settings, print_problems


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now (the OS picks it).

    Another process may take it before the caller binds it: callers bind soon after, and the
    stack checks every port again before it starts anything.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct free ports (held together while chosen, so they differ)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_address(host: str = "127.0.0.1") -> str:
    """``host:port`` of a free port (see :func:`free_port`)."""
    return f"{host}:{free_port(host)}"


def exit_now(code: int) -> NoReturn:
    """Flush stdout and stderr, then end the process with ``code`` at once.

    Call it only when everything the process owns is closed: the Temporal SDK's native runtime
    can crash during normal interpreter shutdown of a process that used a client
    (temporalio/sdk-python#300), which would turn a clean exit into a fatal error.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def serve_main(prog: str, serve: Callable[[Settings], Coroutine[Any, Any, None]]) -> NoReturn:
    """Read the settings once, configure logging, run ``serve`` until it returns, and exit.

    A bad setting, or no payload key, is one line per problem on stderr (``prog: error: ...``)
    and exit code 2, never a traceback.
    """
    code = 0
    try:
        settings = Settings.from_environment()
        configure_logging(settings.log_format)
        asyncio.run(serve(settings))
    except InvalidSettings as exc:
        print_problems(prog, exc)
        code = 2
    except MissingKeyError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        code = 2
    exit_now(code)  # everything serve() owned is closed by now
