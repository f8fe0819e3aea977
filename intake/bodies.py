"""Reading request bodies with a size limit, before anything parses them."""

from __future__ import annotations

from fastapi import Request

MAX_BODY_BYTES = 256 * 1024
"""A submission, an answer or a callback is a form, not a file upload."""


async def read_limited(request: Request, limit: int = MAX_BODY_BYTES) -> bytes | None:
    """The body, or None when it is larger than ``limit`` (declared or actually sent)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return body
