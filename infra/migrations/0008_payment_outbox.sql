-- What is to be asked of Stripe because a stored event decided it (services/payment_effects.py):
-- 'refund' for a LatePaymentRefundDecided, 'cancel_intent' for a purchase that expired or was
-- cancelled while its PaymentIntent could still be paid. A row commits with the projection
-- checkpoint of the event that calls for it; dedupe_key ('refund:<token>',
-- 'cancel_intent:<intent id>') folds a replay into the row already there.
-- A worker claims a due row by pushing next_attempt_at one lease ahead and counting the attempt.
-- A row with done_at set was carried out (outcome says how); a row with neither done_at nor
-- next_attempt_at was given up (see last_error).
CREATE TABLE payment_outbox (
    id               bigserial PRIMARY KEY,
    purchase_token   text NOT NULL,
    intent_id        text NOT NULL,
    kind             text NOT NULL CHECK (kind IN ('refund', 'cancel_intent')),
    dedupe_key       text NOT NULL UNIQUE,
    created_at       timestamptz NOT NULL DEFAULT now(),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz DEFAULT now(),
    done_at          timestamptz,
    outcome          text,
    last_error       text
);
-- The workers' "what is due now" look.
CREATE INDEX payment_outbox_due ON payment_outbox (next_attempt_at) WHERE done_at IS NULL;
