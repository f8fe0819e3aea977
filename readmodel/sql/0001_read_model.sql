-- The read model: "where is my request" answered without asking Temporal.
CREATE TABLE IF NOT EXISTS requests (
    reference           text PRIMARY KEY,
    service             text NOT NULL,
    version             integer NOT NULL,
    content_hash        text NOT NULL,
    language            text NOT NULL,
    status              text NOT NULL,
    agencies            text[] NOT NULL DEFAULT '{}',
    agencies_contacted  integer NOT NULL DEFAULT 0,
    submitted_at        timestamptz NOT NULL,
    finished_at         timestamptz,
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS requests_service_submitted ON requests (service, submitted_at);

CREATE TABLE IF NOT EXISTS request_steps (
    reference        text NOT NULL REFERENCES requests (reference) ON DELETE CASCADE,
    step_id          text NOT NULL,
    item_key         text NOT NULL DEFAULT '',
    agency           text,
    operation        text,
    status           text NOT NULL,
    agency_reference text,
    attempts         integer NOT NULL DEFAULT 0,
    reason           text,
    escalated        boolean NOT NULL DEFAULT false,
    started_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (reference, step_id, item_key)
);

-- Audit log: one row per thing that happened, never updated.
CREATE TABLE IF NOT EXISTS request_events (
    id          bigserial PRIMARY KEY,
    reference   text NOT NULL,
    step_id     text,
    item_key    text,
    kind        text NOT NULL,
    detail      jsonb NOT NULL DEFAULT '{}'::jsonb,
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS request_events_reference ON request_events (reference, id);
