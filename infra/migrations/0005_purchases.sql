-- Idempotency-Key records per API key: the first response to replay, kept 24 hours. A row
-- without a response is a request still running (or one whose process died: taken over after
-- five minutes).
CREATE TABLE idempotency_keys (
    api_key_id    bigint NOT NULL,
    key           text NOT NULL,
    request_hash  bytea NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    status        smallint,
    body          bytea,
    PRIMARY KEY (api_key_id, key)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);

-- Stripe event ids already processed: a redelivered webhook changes nothing.
CREATE TABLE stripe_events (
    id           text PRIMARY KEY,
    type         text NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now()
);
