-- Nonces of signed callbacks already taken (RFC 9421 `nonce`), so a captured callback sent
-- again is refused. A row is kept until its signature's `expires` (plus the clock skew
-- allowed): after that the signature itself is refused, and the row may go.
CREATE TABLE IF NOT EXISTS signature_nonces (
    key_id     text        NOT NULL,
    nonce      text        NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (key_id, nonce)
);
CREATE INDEX IF NOT EXISTS signature_nonces_expires ON signature_nonces (expires_at);
