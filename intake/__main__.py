"""``python -m intake``: composition root of the front door (reads configuration once)."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx
import uvicorn

from definitions.loader import load_catalog
from intake.app import build_app
from readmodel.migrations import apply_migrations
from readmodel.store import ReadModel, open_pool
from runtime.process import free_address, serve_main
from runtime.settings import InvalidSettings, Settings
from runtime.telemetry import prometheus_runtime
from runtime.temporal import connect


async def serve(settings: Settings) -> None:
    """Serve the front door until stopped; every part is built from ``settings`` here."""
    catalog = load_catalog(settings.catalog_dir)
    # The SDK's Prometheus exporter listens on a private loopback port; the intake's own
    # GET /metrics serves its text (one endpoint for this process).
    metrics_address = settings.intake_metrics_address or free_address()
    try:
        runtime = prometheus_runtime(metrics_address)
    except ValueError as exc:  # the SDK's "Failed starting Prometheus exporter: ..."
        raise InvalidSettings((
            f"NWD_INTAKE_METRICS_ADDRESS={metrics_address!r} cannot be served ({exc}); "
            "set it to a free HOST:PORT, or leave it unset",
        )) from None
    client = await connect(settings, runtime)

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
        app = build_app(settings, client=client, catalog=catalog, read_model=read_model,
                        metrics=metrics_text, meter=runtime.metric_meter)
        address = urlsplit(settings.intake_url)
        config = uvicorn.Config(app, host=address.hostname or "127.0.0.1",
                                port=address.port or 8000, log_level="warning")
        await uvicorn.Server(config).serve()
    finally:
        if pool is not None:
            await pool.close()


def main() -> None:
    serve_main("intake", serve)


if __name__ == "__main__":
    main()
