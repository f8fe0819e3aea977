"""The reference agencies' callbacks through a PostgreSQL outage: nothing crashes, nothing is lost.

The test stops and starts a PostgreSQL of its own (``nwd.stack.Stack``, as ``postgres_server``
in ``tests/conftest.py`` does for the session), never the session's shared server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from agency_kit.outbox import RetryPolicy
from agency_kit.reference import ReferenceAgencies, create_app
from nwd.stack import Stack
from runtime.process import free_port
from runtime.settings import Settings
from tests.conftest import new_database
from tests.integration.agency_kit.conftest import (
    Agencies,
    Server,
    credentials,
    registry,
    request_body,
)
from tests.integration.agency_kit.receiver import Answer, CountingReceiver
from tests.polling import eventually


@pytest.fixture(scope="module")
def own_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """An embedded PostgreSQL for this module alone: its tests stop and start it."""
    stack = Stack(
        Settings(state_dir=tmp_path_factory.mktemp("pg-outage"), postgres_port=free_port()),
        env={},
        echo=lambda _line: None,
    )
    try:
        stack.up(["postgres"])
        yield stack
    finally:
        stack.down()


def callback_key(body: dict[str, object]) -> str:
    return f"{body['reference']}:dmv:-:callback"


class TestPostgresOutage:
    @pytest.mark.timeout(120)
    async def test_callbacks_due_during_a_restart_are_all_delivered_once_after_it(
        self, own_postgres: Stack, counting_receiver: CountingReceiver
    ) -> None:
        """Three callbacks owed in the outbox and three outcomes falling due while PostgreSQL
        is down: the loops survive, a call during the outage is a 503 that did nothing, and
        after the restart every effect happens once and every callback is delivered once."""
        database_url = await new_database(own_postgres.postgres_dsn)
        behaviour = {"dmv": {"mode": "callback", "operations": {
            "update-address": {"callback_delay_s": 0},
            "renew-licence": {"callback_delay_s": 1.0},
        }}}
        keys = credentials()
        app = create_app(
            registry(), database_url, keys, behaviour,
            callback_retry=RetryPolicy(initial_interval_s=0.05, maximum_interval_s=0.5),
            callback_timeout_s=2.0, poll_interval_s=1.0,
        )
        reference_agencies: ReferenceAgencies = app.state.agencies
        server = Server(app)
        await server.start()
        try:
            async with httpx.AsyncClient(timeout=10.0) as http:
                agencies = Agencies(url=server.url, database_url=database_url, http=http,
                                    credentials=keys)
                counting_receiver.default = Answer(503)
                owed = [request_body(callback_url=counting_receiver.url) for _ in range(3)]
                for body in owed:
                    assert (await agencies.call("dmv", "update-address", body)).status_code == 202

                async def refused_once_each() -> None:
                    for body in owed:
                        assert counting_receiver.requests(callback_key(body)), body["reference"]

                await eventually(refused_once_each, within_s=10, every_s=0.05)
                due_later = [
                    request_body(callback_url=counting_receiver.url,
                                 input={"licence_number": "X1"})
                    for _ in range(3)
                ]
                for body in due_later:
                    assert (await agencies.call("dmv", "renew-licence", body)).status_code == 202

                await asyncio.to_thread(own_postgres.down, ["postgres"])
                during = await agencies.call("dmv", "update-address", request_body())
                assert during.status_code == 503, during.text
                assert during.headers["Retry-After"] == "1"
                await asyncio.sleep(1.5)  # the renewals fall due while the database is down
                assert reference_agencies.healthy, "a loop died with the database"
                counting_receiver.default = Answer(200)
                await asyncio.to_thread(own_postgres.up, ["postgres"])

                keys = {callback_key(body) for body in owed + due_later}

                async def all_delivered() -> None:
                    assert set(counting_receiver.delivered()) == keys

                await eventually(all_delivered, within_s=30, every_s=0.1)
                assert counting_receiver.delivered() == dict.fromkeys(keys, 1)
                records = await agencies.records("dmv")
                assert len(records) == 6  # not 7: the call during the outage did nothing
                assert {r["status"] for r in records} == {"completed"}
                assert {r["due_at"] for r in records} == {None}

                async def outbox_settled() -> None:
                    rows = await agencies.outbox("dmv")
                    assert sorted(r["key"] for r in rows) == sorted(keys)
                    assert {r["state"] for r in rows} == {"delivered"}, rows

                await eventually(outbox_settled, within_s=5, every_s=0.1)
                assert (await http.get(f"{server.url}/health")).status_code == 200
                assert reference_agencies.healthy
        finally:
            await server.stop()
