"""The reference agencies as processes (``python -m agency_kit``): killed, restarted, doubled.

Each test runs the agencies as real subprocesses on one fresh database, with the registry of
this folder, and a :class:`CountingReceiver` standing in for the engine.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio

from agency_kit.reference.credentials import AgencyCredentials
from runtime.process import free_port
from tests.integration.agency_kit.conftest import (
    Agencies,
    credentials,
    request_body,
    write_agency_keys,
)
from tests.integration.agency_kit.receiver import Answer, CountingReceiver
from tests.polling import eventually

ROOT = Path(__file__).resolve().parents[3]
BEHAVIOUR = {"dmv": {"mode": "callback", "operations": {
    "update-address": {"callback_delay_s": 0},
    "renew-licence": {"callback_delay_s": 1.5},
}}}


class AgencyProcess:
    """One ``python -m agency_kit`` on a free port, its log in a file."""

    def __init__(self, database_url: str, log_path: Path, keys_file: Path,
                 engine_jwks_url: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "NWD_AGENCIES_URL": self.url,
            "NWD_CATALOG_DIR": str(Path(__file__).parent),
            "NWD_AGENCY_KEYS_FILE": str(keys_file),
            "NWD_ENGINE_JWKS_URL": engine_jwks_url,
            "NWD_AGENCY_BEHAVIOUR": json.dumps(BEHAVIOUR),
            "NWD_LOG_FORMAT": "json",
        }
        self.process: asyncio.subprocess.Process | None = None

    async def start(self, http: httpx.AsyncClient) -> None:
        with self.log_path.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "agency_kit",
                cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL, stderr=log,
            )

        async def healthy() -> None:
            assert self.process is not None
            if self.process.returncode is not None:
                pytest.fail(f"agencies exited: {self.log_path.read_text()[-2000:]}")
            try:
                response = await http.get(f"{self.url}/health")
            except httpx.TransportError as down:
                raise AssertionError(f"not listening yet: {down!r}") from down
            assert response.status_code == 200, response.text

        await eventually(healthy, within_s=20, every_s=0.05)

    async def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        process, self.process = self.process, None
        if process is None or process.returncode is not None:
            return
        process.send_signal(sig)
        await asyncio.wait_for(process.wait(), 15)

    def events(self, name: str) -> list[dict[str, Any]]:
        """The JSON log lines of event ``name``."""
        lines = []
        for line in self.log_path.read_text().splitlines():
            if line.startswith("{"):
                entry = json.loads(line)
                if entry.get("event") == name:
                    lines.append(entry)
        return lines


Launch = Callable[[str], Awaitable[AgencyProcess]]


@pytest_asyncio.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10.0) as client:
        yield client


@pytest_asyncio.fixture
async def agency_keys() -> AgencyCredentials:
    return credentials()


@pytest_asyncio.fixture
async def launch(
    database_url: str, tmp_path: Path, http: httpx.AsyncClient, engine_jwks_url: str,
    agency_keys: AgencyCredentials,
) -> AsyncIterator[Launch]:
    """Start an agencies process on the test's database (stopped at the end, by PID), with
    its keys file and the engine's JWKS URL, as the stack starts it."""
    started: list[AgencyProcess] = []
    keys_file = write_agency_keys(tmp_path / "agency-keys.json", agency_keys)

    async def start(name: str) -> AgencyProcess:
        agency = AgencyProcess(database_url, tmp_path / f"{name}.log", keys_file,
                               engine_jwks_url)
        started.append(agency)
        await agency.start(http)
        return agency

    yield start
    for agency in started:
        await agency.stop()


def callback_key(body: dict[str, Any]) -> str:
    return f"{body['reference']}:dmv:-:callback"


async def table(database_url: str, sql: str) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(database_url)
    try:
        return [dict(row) for row in await conn.fetch(sql)]
    finally:
        await conn.close()


class TestProcesses:
    @pytest.mark.timeout(120)
    async def test_sigkill_with_callbacks_pending_then_restart_delivers_each_once(
        self, launch: Launch, http: httpx.AsyncClient, database_url: str,
        counting_receiver: CountingReceiver, agency_keys: AgencyCredentials,
    ) -> None:
        """Killed with three callbacks in the outbox (the engine answered 503) and three
        outcomes not yet due: the next process finishes and delivers all six, once each."""
        first = await launch("first")
        agencies = Agencies(url=first.url, database_url=database_url, http=http,
                            credentials=agency_keys)
        counting_receiver.default = Answer(503)
        owed = [request_body(callback_url=counting_receiver.url) for _ in range(3)]
        for body in owed:
            assert (await agencies.call("dmv", "update-address", body)).status_code == 202
        not_due = [request_body(callback_url=counting_receiver.url,
                                input={"licence_number": "X1"}) for _ in range(3)]
        for body in not_due:
            assert (await agencies.call("dmv", "renew-licence", body)).status_code == 202

        async def refused_once_each() -> None:
            for body in owed:
                assert counting_receiver.requests(callback_key(body)), body["reference"]

        await eventually(refused_once_each, within_s=10, every_s=0.05)
        await first.stop(signal.SIGKILL)
        pending = await table(database_url, "SELECT state FROM agency_dmv.outbox")
        assert [row["state"] for row in pending] == ["pending"] * 3
        due = await table(
            database_url,
            "SELECT count(*) AS n FROM agency_dmv.records"
            " WHERE status = 'accepted' AND due_at IS NOT NULL",
        )
        assert due == [{"n": 3}]

        counting_receiver.default = Answer(200)
        second = await launch("second")
        keys = {callback_key(body) for body in owed + not_due}

        async def all_delivered() -> None:
            assert set(counting_receiver.delivered()) == keys

        await eventually(all_delivered, within_s=40, every_s=0.1)
        assert counting_receiver.delivered() == dict.fromkeys(keys, 1)
        records = await Agencies(url=second.url, database_url=database_url, http=http,
                                 credentials=agency_keys).records("dmv")
        assert len(records) == 6
        assert {r["status"] for r in records} == {"completed"}

    @pytest.mark.timeout(120)
    async def test_two_processes_on_one_database_deliver_each_callback_once(
        self, launch: Launch, http: httpx.AsyncClient, database_url: str,
        counting_receiver: CountingReceiver, agency_keys: AgencyCredentials,
    ) -> None:
        """Both processes finish due work and send from the same outbox: every outcome is
        carried out once and every callback is claimed (attempts) and delivered once."""
        processes = list(await asyncio.gather(launch("one"), launch("two")))
        bodies = [request_body(callback_url=counting_receiver.url) for _ in range(20)]
        answers = await asyncio.gather(*(
            Agencies(url=processes[index % 2].url, database_url=database_url, http=http,
                     credentials=agency_keys).call("dmv", "update-address", body)
            for index, body in enumerate(bodies)
        ))
        assert [a.status_code for a in answers] == [202] * 20
        keys = {callback_key(body) for body in bodies}

        async def all_delivered() -> None:
            assert set(counting_receiver.delivered()) == keys

        await eventually(all_delivered, within_s=30, every_s=0.1)
        assert counting_receiver.delivered() == dict.fromkeys(keys, 1)
        assert len(counting_receiver.arrivals) == 20

        async def recorded() -> None:
            # the receiver counts on arrival; the sender writes the answer down just after
            rows = await table(database_url, "SELECT state, attempts FROM agency_dmv.outbox")
            assert sorted((r["state"], r["attempts"]) for r in rows) == [("delivered", 1)] * 20

        await eventually(recorded, within_s=5, every_s=0.1)
        outcomes = await table(
            database_url, "SELECT status, count(*) AS n FROM agency_dmv.records GROUP BY status"
        )
        assert outcomes == [{"status": "completed", "n": 20}]

        async def logged() -> None:
            sent = [len(p.events("outbox.delivered")) for p in processes]
            assert sum(sent) == 20, sent

        await eventually(logged, within_s=5, every_s=0.1)
