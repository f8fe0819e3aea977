"""``python -m agency_kit``: run the reference agencies (see :mod:`agency_kit.reference.config`)."""

from __future__ import annotations

import sys

import uvicorn

from agency_kit.logs import configure_logging
from agency_kit.reference.app import create_app
from agency_kit.reference.config import AgenciesConfig, ConfigError


def main() -> int:
    try:
        config = AgenciesConfig.from_environment()
    except ConfigError as exc:
        print(f"agency_kit: error: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.log_format)
    app = create_app(config.registry, config.database_url, config.credentials, config.behaviour,
                     admin=config.admin)
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
