"""The outbox's pure rules: what an answer means, how long to wait, Retry-After, the table."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from agency_kit.outbox import Outbox, RetryPolicy, retry_after_s, verdict
from agency_kit.wakeup import jittered_backoff
from tests.keys import keyring


class TestVerdict:
    @pytest.mark.parametrize(
        ("status", "expected"),
        [
            (200, "delivered"), (202, "delivered"), (204, "delivered"),
            (410, "finished"),
            (400, "refused"), (401, "refused"), (404, "refused"), (409, "refused"),
            (413, "refused"), (422, "refused"),
            (408, "retry"), (429, "retry"), (500, "retry"), (502, "retry"), (503, "retry"),
            (None, "retry"),  # connection error or timeout: no answer at all
            (302, "retry"),  # not an answer of the contract: try again later
        ],
    )
    def test_the_contract_rule(self, status: int | None, expected: str) -> None:
        """2xx delivered, 410 finished, other 4xx but 408/429 refused, the rest retried."""
        assert verdict(status) == expected


class TestRetryAfter:
    NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)

    @pytest.mark.parametrize(
        ("value", "seconds"),
        [
            ("2", 2.0), (" 120 ", 120.0), ("0", 0.0),
            ("Thu, 01 Jan 2026 12:00:30 GMT", 30.0),
            ("Thu, 01 Jan 2026 11:00:00 GMT", 0.0),  # in the past: at once
            (None, None), ("", None), ("soon", None), ("-5", None), ("1.5", None),
        ],
    )
    def test_seconds_or_an_http_date(self, value: str | None, seconds: float | None) -> None:
        """Delta-seconds or an HTTP date; anything else is ignored (the backoff applies)."""
        assert retry_after_s(value, now=self.NOW) == seconds


class TestRetryPolicy:
    def test_waits_double_up_to_the_cap_without_jitter(self) -> None:
        policy = RetryPolicy(initial_interval_s=0.5, maximum_interval_s=4, jitter=0)
        assert [policy.delay_s(n) for n in range(1, 7)] == [0.5, 1, 2, 4, 4, 4]

    def test_jitter_only_shortens_and_stays_in_its_share(self) -> None:
        """With jitter 0.5 every wait lies in [half, all] of the backoff, and they differ."""
        policy = RetryPolicy(initial_interval_s=1, maximum_interval_s=60, jitter=0.5)
        rng = random.Random(3)
        waits = [policy.delay_s(3, rng=rng) for _ in range(200)]
        assert all(2.0 <= w <= 4.0 for w in waits)
        assert len(set(waits)) > 100

    def test_a_late_attempt_does_not_overflow(self) -> None:
        assert RetryPolicy(jitter=0).delay_s(10_000) == 60.0

    def test_retry_after_lengthens_the_wait_up_to_its_own_cap(self) -> None:
        policy = RetryPolicy(initial_interval_s=0.5, jitter=0, maximum_retry_after_s=600)
        assert policy.delay_s(1, retry_after=30) == 30
        assert policy.delay_s(1, retry_after=0.1) == 0.5  # never shorter than the backoff
        assert policy.delay_s(1, retry_after=86_400) == 600

    @pytest.mark.parametrize(
        ("options", "message"),
        [
            ({"initial_interval_s": 0}, "initial_interval_s must be above 0"),
            ({"backoff_coefficient": 0.5}, "backoff_coefficient must be 1 or more"),
            ({"initial_interval_s": 5, "maximum_interval_s": 1},
             "maximum_interval_s (1) must be at least initial_interval_s (5)"),
            ({"jitter": 1.5}, "jitter must be between 0 and 1"),
            ({"maximum_retry_after_s": -1}, "maximum_retry_after_s must be 0 or more"),
            ({"max_age_s": 0}, "max_age_s must be above 0"),
        ],
    )
    def test_bad_options_name_the_field_and_the_rule(
        self, options: dict[str, float], message: str
    ) -> None:
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            RetryPolicy(**options)

    def test_no_attempt_limit_by_default(self) -> None:
        """The default keeps trying until the engine answers for good."""
        assert RetryPolicy().max_age_s is None

    def test_backoff_counts_from_the_first_failure(self) -> None:
        with pytest.raises(ValueError, match="attempt must be 1 or more"):
            jittered_backoff(0, initial_s=1, maximum_s=2)


class TestOutboxTable:
    def test_names_are_quoted_and_the_channel_is_per_table(self) -> None:
        box = Outbox(schema="agency_dmv")
        assert box.qualified == '"agency_dmv"."outbox"'
        assert box.channel == "nwd_outbox.agency_dmv.outbox"
        assert Outbox().channel == "nwd_outbox.public.outbox"

    def test_a_name_that_is_not_a_plain_identifier_is_refused(self) -> None:
        with pytest.raises(ValueError, match="not a plain SQL identifier"):
            Outbox(schema='x"; DROP TABLE y; --')
        with pytest.raises(ValueError, match="not a plain SQL identifier"):
            Outbox(table="Outbox")

    def test_the_signer_stays_out_of_reprs(self) -> None:
        """The outbox's repr (in logs, tracebacks) says nothing of its signing key."""
        box = Outbox(schema="a", signer=keyring("agency").signer())
        assert "signer" not in repr(box) and "agency-" not in repr(box)
