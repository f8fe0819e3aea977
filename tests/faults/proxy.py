"""A fault-injecting TCP proxy on loopback, for the network faults between worker and agency.

The worker's agency base URLs point at the proxy (``FaultProxy.rewrite``); the proxy forwards
every byte to the reference agencies and back, except where a *rule* says otherwise. A rule
picks HTTP requests by a substring of their request line (``"POST /agencies/tax-authority"``)
and says what happens to that request and its answer, for its next ``times`` requests:

- ``pass`` — nothing (the default for what no rule picks);
- ``delay`` — the answer is held ``delay_s`` before its first byte goes back (added latency);
- ``reset`` — ``after_bytes`` of the answer go back, then the connection is aborted with a TCP
  RST (``SO_LINGER`` 0); with ``forward=False`` the request never reaches the agency;
- ``truncate`` — ``after_bytes`` of the answer go back, then the connection is closed
  cleanly (FIN) mid-answer;
- ``drop`` — the request reaches the agency (unless ``forward=False``), its answer is thrown
  away and the connection stays silent until the client gives up.

The proxy sees bytes, not HTTP: a request starts where a chunk from the client starts with a
method token, which holds for the engine's client (aiohttp, one request at a time per
connection, no pipelining) and keeps the proxy small. Rules are consumed per request, so a
keep-alive connection that the client reuses is covered as well as a fresh one. ``seen``
lists every request line that went through, with the action applied, for the test to assert
that the fault happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

Action = Literal["pass", "delay", "reset", "truncate", "drop"]
_METHODS = (b"GET ", b"POST ", b"PUT ", b"DELETE ", b"PATCH ", b"HEAD ", b"OPTIONS ")


@dataclass
class Rule:
    """What happens to the next ``times`` requests whose request line contains ``match``."""

    match: str
    action: Action
    times: int = 1
    delay_s: float = 0.0
    after_bytes: int = 0
    forward: bool = True


@dataclass
class _Exchange:
    """One request on a connection and the action chosen for it."""

    action: Action = "pass"
    rule: Rule | None = None
    sent_back: int = 0
    delayed: bool = False


@dataclass
class FaultProxy:
    """Listens on 127.0.0.1 (a free port) and forwards to ``upstream_host:upstream_port``."""

    upstream_host: str
    upstream_port: int
    rules: list[Rule] = field(default_factory=list)
    seen: list[tuple[str, Action]] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    @classmethod
    async def start(cls, upstream_url: str) -> FaultProxy:
        parts = urlsplit(upstream_url)
        assert parts.hostname is not None and parts.port is not None, upstream_url
        proxy = cls(parts.hostname, parts.port)
        proxy._server = await asyncio.start_server(proxy._serve, "127.0.0.1", 0)
        proxy.port = proxy._server.sockets[0].getsockname()[1]
        return proxy

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rewrite(self, env: Mapping[str, str]) -> dict[str, str]:
        """``env`` with every URL pointing at the upstream pointed at the proxy instead."""
        out: dict[str, str] = {}
        for name, value in env.items():
            parts = urlsplit(value) if value.startswith("http") else None
            if parts is not None and (parts.hostname, parts.port) == (
                    self.upstream_host, self.upstream_port):
                value = urlunsplit(parts._replace(netloc=f"127.0.0.1:{self.port}"))
            out[name] = value
        return out

    def add(self, rule: Rule) -> None:
        self.rules.append(rule)

    def applied(self, action: Action, match: str = "") -> int:
        """How many requests containing ``match`` got ``action``."""
        return sum(1 for line, done in self.seen if done == action and match in line)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def _choose(self, request_line: str) -> _Exchange:
        for rule in self.rules:
            if rule.times > 0 and rule.match in request_line:
                rule.times -= 1
                self.seen.append((request_line, rule.action))
                return _Exchange(rule.action, rule)
        self.seen.append((request_line, "pass"))
        return _Exchange()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(client_w)
        try:
            upstream_r, upstream_w = await asyncio.open_connection(
                self.upstream_host, self.upstream_port)
        except OSError:
            _reset(client_w)
            self._tasks.discard(task)
            return
        self._writers.add(upstream_w)
        current = _Exchange()

        async def requests() -> None:
            nonlocal current
            while chunk := await client_r.read(65536):
                if chunk.startswith(_METHODS):
                    current = self._choose(chunk.split(b"\r\n", 1)[0].decode("latin-1"))
                    if current.rule is not None and not current.rule.forward:
                        if current.action == "drop":
                            continue  # never forwarded, never answered
                        _reset(client_w)
                        return
                elif current.rule is not None and not current.rule.forward:
                    continue  # the body of a request that is not forwarded
                upstream_w.write(chunk)
                await upstream_w.drain()
            with contextlib.suppress(OSError):
                upstream_w.write_eof()

        async def answers() -> None:
            while chunk := await upstream_r.read(65536):
                exchange = current
                if exchange.action == "drop":
                    continue
                if exchange.action == "delay" and not exchange.delayed:
                    exchange.delayed = True
                    assert exchange.rule is not None
                    await asyncio.sleep(exchange.rule.delay_s)
                if exchange.action in ("reset", "truncate"):
                    assert exchange.rule is not None
                    room = exchange.rule.after_bytes - exchange.sent_back
                    if room >= len(chunk):  # the cut comes in a later chunk
                        exchange.sent_back += len(chunk)
                        client_w.write(chunk)
                        await client_w.drain()
                        continue
                    if room > 0:
                        client_w.write(chunk[:room])
                        await client_w.drain()
                    if exchange.action == "reset":
                        _reset(client_w)
                    else:
                        client_w.close()
                    return
                exchange.sent_back += len(chunk)
                client_w.write(chunk)
                await client_w.drain()

        pumps = [asyncio.create_task(requests()), asyncio.create_task(answers())]
        try:
            done, _ = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            if current.action == "drop" and pumps[1] in done:
                await pumps[0]  # the agency hung up; stay silent until the client does
            # one side ended: let the other finish what it has, then close both
            await asyncio.wait(pumps, timeout=0.5)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            for writer in (client_w, upstream_w):
                writer.close()
                self._writers.discard(writer)
            self._tasks.discard(task)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Abort the connection with a TCP RST: linger on, timeout 0, then close."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
