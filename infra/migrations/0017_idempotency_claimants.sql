-- Who runs the request that claimed an idempotency key (infra/idempotency.py). A gateway process
-- is a claimant while it renews its row; a key claimed by one that stopped (its process killed)
-- is taken over by the next retry at once instead of answering "in flight" for minutes, and the
-- retry decides with the value the first request drew (`reserved`: a purchase's token), so a
-- purchase the first request stored is found again rather than made twice. Rows written before
-- this migration have no claimant and count as abandoned.
ALTER TABLE idempotency_keys ADD COLUMN claimed_by text, ADD COLUMN reserved text;

CREATE TABLE idempotency_claimants (
    claimant     text PRIMARY KEY,
    alive_until  timestamptz NOT NULL
);
