"""Resolve where an agency lives, the keys its answers are verified with, and the engine's signer.

The registry names settings (an environment variable for the base URL, one for the JWKS URL);
the worker's composition root hands the environment and the engine's signer in, so nothing
here reads `os.environ`.
"""

from __future__ import annotations

from collections.abc import Mapping

from agency_kit.keys import InvalidKeyError, PublicKeys, RegistryKeys
from agency_kit.signing import Signer
from runtime.messages import AgencyEndpoint


class AgencyMisconfigured(Exception):  # noqa: N818 (named after the state, as in the error type)
    """The agency cannot be reached with the configuration given (no URL, no keys)."""


class AgencyDirectory:
    """Agency URLs and public keys from the environment; the engine's signer.

    Args:
        env: The environment holding the variables the registry names.
        signer: Signs every call with the engine's private key; None sends calls unsigned
            (an agency that checks signatures refuses them with 401).
        require_keys: Refuse to call an agency the registry names no keys for, whose answers
            could not be verified (production: ``NWD_DEPLOYMENT=production``).
    """

    def __init__(self, env: Mapping[str, str], signer: Signer | None = None, *,
                 require_keys: bool = False) -> None:
        self._env = env
        self.signer = signer
        self._keys = RegistryKeys(env)
        self._require_keys = require_keys

    def base_url(self, endpoint: AgencyEndpoint) -> str:
        url = self._env.get(endpoint.base_url_env or "") or endpoint.default_base_url
        if not url:
            raise AgencyMisconfigured(
                f"agency {endpoint.agency_id!r} has no base URL: set {endpoint.base_url_env}"
            )
        return url.rstrip("/")

    def public_keys(self, endpoint: AgencyEndpoint) -> PublicKeys | None:
        """Where the agency's answers are verified; None for an agency that does not sign."""
        try:
            keys = self._keys.of(endpoint.agency_id, endpoint.keys)
        except InvalidKeyError as exc:
            raise AgencyMisconfigured(str(exc)) from None
        if keys is None and self._require_keys:
            raise AgencyMisconfigured(
                f"agency {endpoint.agency_id!r} has no keys in the registry: in production "
                f"every agency's answers are verified (name its public keys under keys:)")
        return keys
