"""The embedded SMTP sink: every email the engine sends, kept as a file to read.

``python -m nwd.stack.mailsink --dir DIR --port PORT`` runs an aiosmtpd server on
``127.0.0.1:PORT`` that accepts every message and writes it, as received, to
``DIR/<time>-<id>.eml`` (one file each, written to a temporary name and renamed, so a reader
never sees half a message). Nothing is relayed anywhere. ``nwd mail`` lists them newest first
and ``nwd mail show N`` prints one. The stack starts it as the ``mail`` component and points
its worker at it, unless ``NWD_SMTP_HOST`` names a real server.

The files hold what citizens were sent — personal data: the folder is inside the stack's
state folder (mode 0700) and the files are 0600.
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import os
import signal
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from nwd.stack.component import PortClaim
from nwd.stack.supervisor import Launch, port_open

MAIL_DIR = "mail"
"""The sink's folder inside the stack's state folder."""


class SinkHandler:
    """aiosmtpd's handler: each message DATA is written to one file in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.store(envelope.original_content or envelope.content)
        return "250 Message accepted for delivery"

    def store(self, content: bytes | str) -> Path:
        data = content.encode() if isinstance(content, str) else content
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.eml"
        tmp = self.directory / f".{name}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        final = self.directory / name
        tmp.replace(final)
        return final


@dataclass(frozen=True)
class StoredMail:
    """One message in the sink."""

    path: Path
    message: EmailMessage

    @property
    def received_at(self) -> datetime:
        return datetime.fromtimestamp(int(self.path.name.split("-", 1)[0]) / 1e9, tz=UTC)

    @property
    def to(self) -> str:
        return str(self.message.get("To", ""))

    @property
    def subject(self) -> str:
        return str(self.message.get("Subject", ""))

    def body(self) -> str:
        part = self.message.get_body(preferencelist=("plain",))
        text = part.get_content() if part is not None else ""
        return str(text).replace("\r\n", "\n")

    def summary(self) -> dict[str, Any]:
        return {"received_at": self.received_at.isoformat(), "to": self.to,
                "subject": self.subject, "message_id": str(self.message.get("Message-ID", "")),
                "file": str(self.path)}

    def as_json(self) -> dict[str, Any]:
        return {**self.summary(), "headers": {k: str(v) for k, v in self.message.items()},
                "body": self.body()}


def read_mail(directory: Path) -> list[StoredMail]:
    """Every message in ``directory``, newest first (none when it does not exist)."""
    if not directory.is_dir():
        return []
    found = sorted((p for p in directory.glob("*.eml")), key=lambda p: p.name, reverse=True)
    mails: list[StoredMail] = []
    for path in found:
        parsed = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        mails.append(StoredMail(path, parsed))
    return mails


class RunningSink:
    """The sink served in this process (tests): an aiosmtpd controller on its own thread."""

    def __init__(self, directory: Path, *, host: str = "127.0.0.1", port: int = 0) -> None:
        from aiosmtpd.controller import Controller

        self.directory = directory
        self.handler = SinkHandler(directory)
        self._controller = Controller(self.handler, hostname=host, port=port or _free_port())
        self.host = host
        self.port = self._controller.port

    def __enter__(self) -> RunningSink:
        self._controller.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._controller.stop()

    def messages(self) -> list[StoredMail]:
        return read_mail(self.directory)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class MailSink:
    """The stack's ``mail`` component (see :class:`nwd.stack.component.Component`).

    Args:
        directory: where the messages go (``<state>/mail``).
        port: where it listens (``NWD_SMTP_PORT``).
        external: ``NWD_SMTP_HOST`` names a real server: nothing is started.
        host: that server (for ``nwd ps``), or 127.0.0.1.
    """

    directory: Path
    port: int = 8025
    python: str = sys.executable
    external: bool = False
    host: str = "127.0.0.1"
    base_env: Mapping[str, str] = field(default_factory=dict)
    name: str = "mail"
    needs: tuple[str, ...] = ()
    marker: str = "nwd.stack.mailsink"
    stop_signals: tuple[signal.Signals, ...] = (signal.SIGTERM,)
    readiness: str = "accepting SMTP connections"

    def ports(self) -> tuple[PortClaim, ...]:
        return (PortClaim(self.host, self.port, "NWD_SMTP_PORT", "SMTP sink",
                          "or NWD_SMTP_HOST to send through a real server"),)

    def launch(self) -> Launch:
        env = {k: v for k, v in self.base_env.items() if not k.startswith("NWD_")}
        env["PYTHONUNBUFFERED"] = "1"
        return Launch([self.python, "-m", "nwd.stack.mailsink", "--dir", str(self.directory),
                       "--port", str(self.port)], env)

    def ready(self) -> bool:
        return port_open(self.host, self.port)

    def started(self) -> None:
        return None

    def address(self) -> str:
        if self.external:
            return f"smtp://{self.host}:{self.port}"
        return f"smtp://{self.host}:{self.port} → {self.directory}"

    def endpoint(self) -> tuple[str, int]:
        return self.host, self.port


def serve(directory: Path, port: int, host: str = "127.0.0.1") -> None:
    """Serve until SIGTERM/SIGINT."""
    from aiosmtpd.smtp import SMTP

    async def main() -> None:
        loop = asyncio.get_running_loop()
        handler = SinkHandler(directory)
        server = await loop.create_server(lambda: SMTP(handler), host=host, port=port)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print(f"mail sink: smtp://{host}:{port} → {directory}", flush=True)
        await stop.wait()
        server.close()
        await server.wait_closed()

    asyncio.run(main())


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m nwd.stack.mailsink",
                                     description="the embedded SMTP sink")
    parser.add_argument("--dir", type=Path, required=True, help="where messages are written")
    parser.add_argument("--port", type=int, default=8025)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    serve(args.dir, args.port, args.host)


if __name__ == "__main__":
    main()
