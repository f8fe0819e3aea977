-- Who may follow a request: its owner or the holder of its access code, never a stranger.
--   request_access   one row per request started through the front door, written before the
--                    workflow starts (taken back if it does not). Neither column is the
--                    secret itself: owner_hash is an HMAC of the owner's issuer and subject
--                    (the token's `sub`), code_hash an HMAC of the one-time access code shown
--                    once in the submission's answer; both keyed with the server's reference
--                    key, so a copy of the table proves nothing and reveals no subject.
--   access_failures  one row per refused attempt, by scope (`address:<client>`,
--                    `reference:<ref>`), for the rate limit; rows older than its window are
--                    deleted as new ones arrive.
CREATE TABLE IF NOT EXISTS request_access (
    reference  text PRIMARY KEY,
    owner_hash bytea,
    code_hash  bytea,
    granted_at timestamptz NOT NULL DEFAULT now(),
    CHECK (owner_hash IS NOT NULL OR code_hash IS NOT NULL)
);

CREATE TABLE IF NOT EXISTS access_failures (
    scope     text NOT NULL,
    failed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS access_failures_scope_at ON access_failures (scope, failed_at);
