-- The caseworkers' task list and "my requests", read without asking Temporal.
--   kind    a step's kind (`call` or `decision`), as the workflow's StepOutcome says; NULL in
--           rows only agency calls wrote (always calls).
--   due_at  the step's deadline (StepOutcome.deadline_at; a decision step's `due`).
-- A decision step's row is written when it starts waiting (workflows/recording.py), so the
-- waiting decisions are a cheap, indexed read. The role that may decide one is its service
-- definition's, read from the catalog by the front door (never stored twice).
ALTER TABLE request_steps ADD COLUMN IF NOT EXISTS kind text;
ALTER TABLE request_steps ADD COLUMN IF NOT EXISTS due_at timestamptz;
CREATE INDEX IF NOT EXISTS request_steps_waiting_decisions
    ON request_steps (step_id, started_at) WHERE kind = 'decision' AND status = 'waiting';
-- A signed-in citizen's requests: by the HMAC of their issuer and subject.
CREATE INDEX IF NOT EXISTS request_access_owner ON request_access (owner_hash)
    WHERE owner_hash IS NOT NULL;
