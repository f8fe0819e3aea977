"""The callbacks' nonce replay cache and the JWKS key source, on real PostgreSQL and HTTP."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio

from agency_kit.keys import Keyring, KeySource, KeysUnavailable, verify_request
from agency_kit.signing import CALLBACK_TAG, SignatureError
from readmodel.migrations import apply_migrations
from readmodel.nonces import NonceCache
from readmodel.store import open_pool
from runtime.process import free_port
from tests.keys import agency_signed, keyring, serving_jwks

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await open_pool(database_url, max_size=8)
    await apply_migrations(pool)
    try:
        yield pool
    finally:
        await pool.close()


async def entries(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM signature_nonces"))


class TestNonceCache:
    async def test_a_nonce_is_taken_once_per_key(self, pool: asyncpg.Pool) -> None:
        """The first take wins; the same nonce again is refused; another key's is its own."""
        cache = NonceCache(pool)
        until = int(time.time()) + 60
        assert await cache.take("agency/k1", "n-1", until) is True
        assert await cache.take("agency/k1", "n-1", until) is False
        assert await cache.take("agency/k2", "n-1", until) is True
        assert await entries(pool) == 2

    async def test_racing_takes_of_one_nonce_let_exactly_one_through(
        self, pool: asyncpg.Pool
    ) -> None:
        """Twenty concurrent takes (two intakes racing on one captured message): one wins."""
        cache = NonceCache(pool)
        nonce = uuid.uuid4().hex
        won = await asyncio.gather(*(cache.take("agency/k", nonce, int(time.time()) + 60)
                                     for _ in range(20)))
        assert won.count(True) == 1

    async def test_expired_entries_are_purged_and_live_ones_kept(
        self, pool: asyncpg.Pool
    ) -> None:
        """An entry lives until its signature's expiry plus the skew, then purge drops it."""
        cache = NonceCache(pool, skew_s=0)
        await cache.take("agency/k", "old", int(time.time()) - 10)
        await cache.take("agency/k", "live", int(time.time()) + 60)
        assert await cache.purge() == 1
        assert await entries(pool) == 1
        assert await cache.take("agency/k", "live", int(time.time()) + 60) is False


class TestKeySource:
    async def test_a_withdrawn_key_is_refused_once_the_set_is_fetched_again(self) -> None:
        """Rotation over real HTTP: old and new verify while both are published; after the
        old is withdrawn and the cache expires, the old one's signatures are refused."""
        old, new = keyring("agency"), keyring("agency")
        published = Keyring((*old.keys, *new.keys))
        url = "http://127.0.0.1:1/callbacks/t"
        body = b'{"status":"completed"}'
        holder = {"keys": published}

        class Live(Keyring):  # the JWKS route reads whatever is published now
            def public(self) -> dict:  # type: ignore[override,type-arg]
                return holder["keys"].public()

        async with serving_jwks(Live(published.keys)) as jwks_url:
            source = KeySource(jwks_url, ttl_s=0.5, min_refresh_s=0.1)
            for signer in (old, new):
                verified = await verify_request(source, "POST", url, body,
                                                agency_signed(signer, url, body),
                                                tag=CALLBACK_TAG)
                assert verified.key_id == signer.signing[0]
            holder["keys"] = new
            await asyncio.sleep(0.6)
            with pytest.raises(SignatureError, match="no key"):
                await verify_request(source, "POST", url, body, agency_signed(old, url, body),
                                     tag=CALLBACK_TAG)
            await verify_request(source, "POST", url, body, agency_signed(new, url, body),
                                 tag=CALLBACK_TAG)

    async def test_keys_whose_url_stops_answering_are_trusted_only_for_a_while(self) -> None:
        """The JWKS URL goes away (blocked, or down): the keys last fetched still verify for
        ``max_stale_s``, then the sender's keys are unavailable (503) — not trusted for ever."""
        agency = keyring("agency")
        url = "http://127.0.0.1:1/callbacks/t"
        async with serving_jwks(agency) as jwks_url:
            source = KeySource(jwks_url, ttl_s=0.2, min_refresh_s=0.05, max_stale_s=1.0)
            await verify_request(source, "POST", url, b"{}", agency_signed(agency, url, b"{}"),
                                 tag=CALLBACK_TAG)
        await asyncio.sleep(0.3)  # past the TTL: the refetch fails, the keys are kept
        verified = await verify_request(source, "POST", url, b"{}",
                                        agency_signed(agency, url, b"{}"), tag=CALLBACK_TAG)
        assert verified.key_id == agency.signing[0] and source.failing
        await asyncio.sleep(0.8)  # past max_stale_s
        with pytest.raises(KeysUnavailable, match="last fetched"):
            await verify_request(source, "POST", url, b"{}", agency_signed(agency, url, b"{}"),
                                 tag=CALLBACK_TAG)

    async def test_a_stream_of_unknown_kids_fetches_at_a_bounded_rate(self) -> None:
        """Made-up key ids do not turn the receiver into a flood of JWKS fetches."""
        fetches = {"n": 0}
        known = keyring("agency")

        class Counting(Keyring):
            def public(self) -> dict:  # type: ignore[override,type-arg]
                fetches["n"] += 1
                return known.public()

        async with serving_jwks(Counting(known.keys)) as jwks_url:
            source = KeySource(jwks_url, min_refresh_s=60)
            url = "http://127.0.0.1:1/callbacks/t"
            for _ in range(10):
                stranger = keyring("stranger")
                with pytest.raises(SignatureError, match="no key"):
                    await verify_request(source, "POST", url, b"{}",
                                         agency_signed(stranger, url, b"{}"), tag=CALLBACK_TAG)
        assert fetches["n"] == 1

    async def test_an_unreachable_key_set_is_unavailable_not_a_bad_signature(self) -> None:
        """The sender's JWKS does not answer: KeysUnavailable (a 503, try again), never a
        SignatureError (a final 401 that would drop a genuine callback)."""
        source = KeySource(f"http://127.0.0.1:{free_port()}/.well-known/jwks.json")
        url = "http://127.0.0.1:1/callbacks/t"
        agency = keyring("agency")
        with pytest.raises(KeysUnavailable):
            await verify_request(source, "POST", url, b"{}", agency_signed(agency, url, b"{}"),
                                 tag=CALLBACK_TAG)
