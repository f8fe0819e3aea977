-- A step's row follows the request while it runs (callbacks, answers, decisions land as they
-- happen), and a late write must not take it back to an older state.
--   as_of       the workflow time of the state the workflow last wrote into the row; NULL
--               while only agency calls wrote it. A workflow write older than it is ignored,
--               and an agency call's write never overwrites a state the workflow settled.
--   decided_by  who decided a decision step.
ALTER TABLE request_steps ADD COLUMN IF NOT EXISTS as_of timestamptz;
ALTER TABLE request_steps ADD COLUMN IF NOT EXISTS decided_by text;
