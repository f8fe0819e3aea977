"""Group commit for the agency calls' progress rows.

Every agency call records its outcome in the read model before its activity returns. When
many calls finish together (a fan-out, a busy worker), the calls waiting at that moment share
one statement — one round trip, one transaction — instead of one each. A call alone is
written at once: nothing waits for a batch to fill, and each call still returns only after
its row is committed.
"""

from __future__ import annotations

import asyncio

from readmodel.store import ItemProgress, ReadModel

MAX_BATCH = 500
"""Rows per statement at most (the arrays of one statement stay small)."""


class ProgressWriter:
    """Writes queued progress rows, one batch at a time, through one writer task."""

    def __init__(self, read_model: ReadModel, *, max_batch: int = MAX_BATCH) -> None:
        self._read_model = read_model
        self._max_batch = max_batch
        self._waiting: list[tuple[ItemProgress, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self.batches = 0
        """Statements written so far (for tests and the curious)."""

    async def record(self, item: ItemProgress) -> None:
        """Return once ``item`` is committed; raise what the batch's statement raised."""
        committed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, committed))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_waiting())
        await committed

    async def _write_waiting(self) -> None:
        batch: list[tuple[ItemProgress, asyncio.Future[None]]] = []
        try:
            while self._waiting:
                batch = self._waiting[: self._max_batch]
                del self._waiting[: self._max_batch]
                await self._write(batch)
                batch = []
        except BaseException as exc:  # cancelled (shutdown): nobody may wait forever
            _settle(batch + self._waiting, exc)
            self._waiting.clear()
            raise
        finally:
            self._writer = None

    async def _write(self, batch: list[tuple[ItemProgress, asyncio.Future[None]]]) -> None:
        try:
            self.batches += 1
            await self._read_model.record_items([item for item, _ in batch])
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch, exc)
                return
            # One bad row must not cost the others their progress: write each on its own.
            for one in batch:
                await self._write([one])
        else:
            _settle(batch, None)


def _settle(batch: list[tuple[ItemProgress, asyncio.Future[None]]],
            error: BaseException | None) -> None:
    for _, committed in batch:
        if committed.done():  # its call was cancelled meanwhile
            continue
        if error is None:
            committed.set_result(None)
        else:
            committed.set_exception(error)
