"""``python -m intake``: composition root of the front door (reads configuration once)."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import asyncpg
import uvicorn

from activities.migrations import apply_migrations
from activities.read_model import ReadModel
from definitions.loader import load_catalog
from intake.app import create_app
from intake.submissions import Submissions
from nwd.client import connect
from nwd.logging import configure_logging
from nwd.settings import Settings


async def serve(settings: Settings) -> None:
    catalog = load_catalog(settings.catalog_dir)
    client = await connect(settings)
    pool = None
    if settings.database_url:
        pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=5)
        await apply_migrations(pool)
    try:
        app = create_app(
            client=client,
            submissions=Submissions(client, catalog, task_queue=settings.task_queue,
                                    callback_base_url=settings.intake_url),
            read_model=ReadModel(pool) if pool is not None else None,
            ui_url=settings.temporal_ui_url,
            namespace=settings.temporal_namespace,
        )
        address = urlsplit(settings.intake_url)
        config = uvicorn.Config(app, host=address.hostname or "127.0.0.1",
                                port=address.port or 8000, log_level="warning")
        await uvicorn.Server(config).serve()
    finally:
        if pool is not None:
            await pool.close()


def main() -> None:
    settings = Settings.from_env()
    configure_logging(settings.log_format)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
