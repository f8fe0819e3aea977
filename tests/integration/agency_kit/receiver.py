"""A callback endpoint on loopback that counts what arrives and can misbehave on purpose.

Written on asyncio streams rather than a web framework, so that it can do what a real engine
or network does on a bad day: answer any status with any headers, reset the connection without
answering (an RST, not a polite close), hang until the caller times out, or stop listening for
a while and come back on the same port. Every request is kept with its ``Idempotency-Key``,
its headers, its raw body and the answer it got, so a test can count deliveries (2xx answers)
per key.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

RESET: Literal["reset"] = "reset"
"""An action: close the connection with an RST instead of answering."""
HANG: Literal["hang"] = "hang"
"""An action: read the request, then say nothing until the caller gives up (a timeout)."""


@dataclass(frozen=True)
class Answer:
    """An action: answer ``status`` with these headers and this JSON body."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] = field(default_factory=lambda: {"ok": True})


Action = Answer | Literal["reset", "hang"]


@dataclass(frozen=True)
class Arrival:
    """One request as received, and what it was answered."""

    key: str
    headers: dict[str, str]
    body: bytes
    answer: int | Literal["reset", "hang"]
    at: float
    """``time.monotonic()`` when it arrived."""


class CountingReceiver:
    """Answers with the actions of :attr:`script` in order, then with :attr:`default`."""

    def __init__(self) -> None:
        self.script: list[Action] = []
        self.default: Action = Answer(200)
        self.arrivals: list[Arrival] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/callbacks/token"

    async def start(self) -> None:
        """Listen (again, on the same port after :meth:`stop`)."""
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and drop open connections: callers get connection refused."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await server.wait_closed()

    def delivered(self) -> Counter[str]:
        """Per idempotency key, how many requests were answered 2xx."""
        return Counter(
            a.key for a in self.arrivals if isinstance(a.answer, int) and 200 <= a.answer < 300
        )

    def requests(self, key: str) -> list[Arrival]:
        return [a for a in self.arrivals if a.key == key]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    name, value = line.split(":", 1)
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            action = self.script.pop(0) if self.script else self.default
            answer: int | Literal["reset", "hang"] = (
                action.status if isinstance(action, Answer) else action
            )
            self.arrivals.append(
                Arrival(headers.get("idempotency-key", ""), headers, body, answer,
                        time.monotonic())
            )
            if isinstance(action, Answer):
                payload = json.dumps(action.body).encode()
                extra = "".join(f"{k}: {v}\r\n" for k, v in action.headers.items())
                writer.write(
                    f"HTTP/1.1 {action.status} X\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(payload)}\r\nConnection: close\r\n{extra}\r\n"
                    .encode() + payload
                )
                await writer.drain()
                writer.close()
            elif action == HANG:
                await reader.read()  # until the caller closes its end
                writer.transport.abort()
            else:
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.transport.abort()
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                await writer.wait_closed()
