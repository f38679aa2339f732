-- E-mail waiting to be sent for a purchase (services/mailer.py). dedupe_key folds duplicates:
-- 'confirmation:<token>' is enqueued once ever, 'resend:<token>:<UTC minute>' once a minute.
-- A mailer claims a due row by pushing next_attempt_at one lease ahead (so no other mailer takes
-- it while it is being sent) and counting the attempt. A row with sent_at set was accepted by the
-- SMTP server; a row with neither sent_at nor next_attempt_at was given up (see last_error).
CREATE TABLE mail_outbox (
    id               bigserial PRIMARY KEY,
    purchase_token   text NOT NULL,
    kind             text NOT NULL CHECK (kind IN ('confirmation', 'resend')),
    dedupe_key       text NOT NULL UNIQUE,
    created_at       timestamptz NOT NULL DEFAULT now(),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz DEFAULT now(),
    sent_at          timestamptz,
    last_error       text
);
-- The mailers' "what is due now" look.
CREATE INDEX mail_outbox_due ON mail_outbox (next_attempt_at) WHERE sent_at IS NULL;
