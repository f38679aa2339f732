-- Refunds of paid purchases' tickets (domain/refunds.py).
-- The payments worker makes each RefundDecided at Stripe: a 'ticket_refund' row per decision,
-- named by its refund id (dedupe_key 'ticket_refund:<refund id>'; a purchase may have several).
ALTER TABLE payment_outbox ADD COLUMN refund_id text;
ALTER TABLE payment_outbox DROP CONSTRAINT payment_outbox_kind_check;
ALTER TABLE payment_outbox ADD CONSTRAINT payment_outbox_kind_check
    CHECK (kind IN ('refund', 'cancel_intent', 'ticket_refund'));
-- The buyer's e-mail of a refund ('refund:<refund id>'), with the kinds of 0010_transfers.sql.
ALTER TABLE mail_outbox DROP CONSTRAINT mail_outbox_kind_check;
ALTER TABLE mail_outbox ADD CONSTRAINT mail_outbox_kind_check
    CHECK (kind IN ('confirmation', 'resend', 'transfer_offer', 'transfer_completed', 'refund'));
