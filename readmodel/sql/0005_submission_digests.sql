-- The body each idempotency key was first used with, as a keyed digest (HMAC-SHA256 of the
-- canonical JSON of service, submission and language, with a key derived from the payload
-- key: the digest of a short form cannot be guessed back from this table). The same key with
-- another body is refused with 409 idempotency_conflict instead of silently answering the
-- first request. One row per request reference (the reference is derived from the key).
CREATE TABLE IF NOT EXISTS submission_digests (
    reference   text PRIMARY KEY,
    digest      text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
