"""``python -m agency_kit``: run the reference agencies (see :mod:`agency_kit.reference.config`)."""

from __future__ import annotations

import logging
import sys

import structlog
import uvicorn

from agency_kit.reference.app import create_app
from agency_kit.reference.config import AgenciesConfig, ConfigError


def configure_logging(log_format: str) -> None:
    """JSON lines off a terminal (or when asked), pretty console on one."""
    as_json = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )


def main() -> int:
    try:
        config = AgenciesConfig.from_environment()
    except ConfigError as exc:
        print(f"agency_kit: error: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.log_format)
    app = create_app(config.registry, config.database_url, config.secrets, config.behaviour)
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
