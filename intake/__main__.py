"""``python -m intake``: composition root of the front door (reads configuration once)."""

from __future__ import annotations

import asyncio
import os
import sys
from urllib.parse import urlsplit

import httpx
import uvicorn

from definitions.loader import load_catalog
from intake import interactions
from intake.app import create_app
from intake.submissions import Submissions
from readmodel.migrations import apply_migrations
from readmodel.store import ReadModel, open_pool
from runtime.callback_tokens import callback_key
from runtime.codec import load_key
from runtime.logs import configure_logging
from runtime.settings import Settings
from runtime.telemetry import (
    TelemetrySettings,
    free_local_address,
    prometheus_runtime,
)
from runtime.temporal import connect, converter_for


async def serve(settings: Settings, telemetry: TelemetrySettings | None = None) -> None:
    catalog = load_catalog(settings.catalog_dir)
    # operations: the SDK's Prometheus exporter listens on a private loopback port; the
    # intake's own GET /metrics serves its text (one endpoint for this process)
    telemetry = telemetry or TelemetrySettings(metrics_address=None)
    metrics_address = telemetry.metrics_address or free_local_address()
    runtime = prometheus_runtime(metrics_address)
    client = await connect(settings, runtime, otel=telemetry.otel)

    async def metrics_text() -> str:
        async with httpx.AsyncClient(timeout=5) as http:
            response = await http.get(f"http://{metrics_address}/metrics")
        response.raise_for_status()
        return response.text

    pool = None
    if settings.database_url:
        pool = await open_pool(settings.database_url, max_size=5)
        await apply_migrations(pool)
    try:
        read_model = ReadModel(pool) if pool is not None else None
        app = create_app(
            client=client,
            submissions=Submissions(client, catalog, task_queue=settings.task_queue,
                                    callback_base_url=settings.intake_url,
                                    read_model=read_model),
            read_model=read_model,
            ui_url=settings.temporal_ui_url,
            namespace=settings.temporal_namespace,
            codec=converter_for(settings).payload_codec,
            codec_token=settings.codec_token,
            metrics=metrics_text,
            meter=runtime.metric_meter,
        )
        key = load_key(settings.state_dir, settings.encryption_key)
        app.include_router(interactions.router(
            client, interactions.CallbackVerifier(callback_key(key), catalog, settings.agency_env)
        ))
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
    # NWD_INTAKE_METRICS_ADDRESS pins the SDK exporter's private port (default: any free one)
    telemetry = TelemetrySettings.from_env(
        {**os.environ, "NWD_METRICS_ADDRESS": os.environ.get("NWD_INTAKE_METRICS_ADDRESS", "")},
        default_address=None,
    )
    asyncio.run(serve(settings, telemetry))
    # The SDK's native runtime can crash during interpreter shutdown (sdk-python#300).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
