"""HTTP clients for tests that hold a connection to a server for long.

uvicorn closes a keep-alive connection idle for 5 s, and httpx keeps one for 5 s by default:
a request sent on the connection at the moment the server closes it fails with
``RemoteProtocolError: Server disconnected`` (seen once in a shared fixture's setup). A client
that drops idle connections well before the server does never meets that race.
"""

from __future__ import annotations

from typing import Any

import httpx

#: Shorter than uvicorn's ``timeout_keep_alive`` (5 s).
KEEPALIVE_EXPIRY_S = 1.0


def client(**options: Any) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` with ``options`` that never reuses a connection idle over 1 s."""
    return httpx.AsyncClient(limits=httpx.Limits(keepalive_expiry=KEEPALIVE_EXPIRY_S), **options)
