-- Every decrypt by the codec server (the Temporal UI, the temporal CLI): who, through which
-- door, which workflow's payloads, how many, when. Written before the plaintext is answered;
-- if it cannot be written, nothing is decrypted. Append-only: nothing updates or deletes it.
--   subject      the operator's token subject; 'development-codec-token' for the dev UI's
--                token-in-path endpoint (which names no person)
--   via          'operator_token' or 'path_token'
--   workflow_id  the workflow the payloads are bound to (authenticated metadata); NULL for
--                payloads sealed before workflow binding
CREATE TABLE IF NOT EXISTS codec_audit (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    subject     text NOT NULL,
    via         text NOT NULL,
    namespace   text,
    workflow_id text,
    payloads    integer NOT NULL CHECK (payloads > 0),
    origin      text
);
CREATE INDEX IF NOT EXISTS codec_audit_workflow ON codec_audit (workflow_id, at);
CREATE INDEX IF NOT EXISTS codec_audit_subject ON codec_audit (subject, at);
