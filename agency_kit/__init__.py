"""The agencies kit: what an agency system needs to take part in No Wrong Door.

- :mod:`agency_kit.contract` — the request/response/callback bodies of the contract (v1).
- :mod:`agency_kit.signing` — RFC 9421 HTTP Message Signatures with Ed25519 (sign, verify).
- :mod:`agency_kit.keys` — each party's keys: keyrings, JWKS, a cached JWKS key source.
- :mod:`agency_kit.idempotency` — the first-response-wins store on PostgreSQL (asyncpg).
- :mod:`agency_kit.validation` — checking an operation's input against its declared schema.
- :mod:`agency_kit.reference` — the reference agency systems (one FastAPI app hosting every
  agency of a registry, each with its own PostgreSQL schema), used by the demo, the tests and
  the benchmarks. Run them with ``python -m agency_kit``.

The kit depends only on the public definition language (:mod:`definitions.models`), never on
the engine's internals. The contract is documented in ``docs/agency-contract.md``.
"""
