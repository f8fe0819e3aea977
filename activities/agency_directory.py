"""Resolve where an agency lives and the secret it signs with, from configuration.

The registry names settings (an environment variable for the base URL, one for the secret);
the worker's composition root hands the environment in, so nothing here reads `os.environ`.
"""

from __future__ import annotations

from collections.abc import Mapping

from runtime.messages import AgencyEndpoint


class AgencyMisconfigured(Exception):  # noqa: N818 (named after the state, as in the error type)
    """The agency cannot be reached with the configuration given (no URL, no secret)."""


class AgencyDirectory:
    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def base_url(self, endpoint: AgencyEndpoint) -> str:
        url = self._env.get(endpoint.base_url_env or "") or endpoint.default_base_url
        if not url:
            raise AgencyMisconfigured(
                f"agency {endpoint.agency_id!r} has no base URL: set {endpoint.base_url_env}"
            )
        return url.rstrip("/")

    def secret(self, endpoint: AgencyEndpoint) -> bytes | None:
        if not endpoint.auth_secret:
            return None
        secret = self._env.get(endpoint.auth_secret)
        if not secret:
            raise AgencyMisconfigured(
                f"agency {endpoint.agency_id!r} requires signed requests: "
                f"set {endpoint.auth_secret}"
            )
        return secret.encode()
