-- Emails to citizens, exactly once per (reference, key). The key names the occasion
-- (e.g. 'information_requested:update_tax_address:-:1', 'decided:approve_licence',
-- 'finished'); the sending activity claims it before it talks to the SMTP server, and a
-- retry of a key already sent sends nothing. The Message-ID is derived from (reference, key),
-- so a receiver can drop a copy if a crash fell between the server's acceptance and the mark.
-- No address, subject or body: those are personal; the row says only that mail went out.
--   status     'sending' (claimed; a retry may send it), 'sent', or 'failed' (the last
--              attempt failed; Temporal retries it)
--   attempts   SMTP attempts made for the key
--   error      the last failure's type (e.g. SMTPConnectError), never its text
CREATE TABLE IF NOT EXISTS citizen_emails (
    reference   text NOT NULL,
    key         text NOT NULL,
    kind        text NOT NULL,
    message_id  text NOT NULL,
    status      text NOT NULL CHECK (status IN ('sending', 'sent', 'failed')),
    attempts    integer NOT NULL DEFAULT 0,
    error       text,
    claimed_at  timestamptz NOT NULL DEFAULT now(),
    sent_at     timestamptz,
    PRIMARY KEY (reference, key)
);

-- The one-question satisfaction survey at the end of a request: one answer per request.
-- The comment is the citizen's free text (it may hold anything): shown only in the report's
-- counts, never logged.
CREATE TABLE IF NOT EXISTS satisfaction (
    reference    text PRIMARY KEY,
    rating       smallint NOT NULL CHECK (rating BETWEEN 1 AND 5),
    comment      text CHECK (comment IS NULL OR char_length(comment) <= 1000),
    answered_at  timestamptz NOT NULL DEFAULT now()
);
