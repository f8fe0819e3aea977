"""Request references are keyed with the server's secret: stable, and not computable without it."""

from __future__ import annotations

import pytest

from runtime.messages import request_reference

KEY = b"a reference key for this test only"


def test_the_same_key_gives_the_same_reference_and_another_server_key_another() -> None:
    """The same idempotency key gives the same reference; under another server key the
    reference differs, so knowing the service and the idempotency key is not enough."""
    one = request_reference("change-of-address", "key-1", KEY)
    assert one == request_reference("change-of-address", "key-1", KEY)
    assert one != request_reference("change-of-address", "key-2", KEY)
    assert one != request_reference("change-of-address", "key-1", b"another server's key")
    prefix, *groups = one.rsplit("-", 3)
    assert prefix == "CHANGE-OF-ADDRESS" and [len(g) for g in groups] == [4, 4, 4]


def test_no_key_is_refused() -> None:
    with pytest.raises(ValueError, match="NWD_REFERENCE_KEY"):
        request_reference("change-of-address", "key-1", b"")
