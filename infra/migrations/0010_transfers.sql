-- Transfers (domain/transfers.py). A TicketTransferred hands out a new ticket code and a new
-- attendee token: the index of what was handed out (0009_handed_out.sql) takes them in the
-- append's own transaction, so the new code verifies and scans the moment the accept is
-- acknowledged. The old code's and the old token's rows stay: they still lead to the ticket,
-- whose stream answers `resold` for the code and no longer opens the attendee pages. The new
-- rows take the ticket's purchase and organization from its first row, found by ticket id
-- (indexed by 0011_tickets_by_id.sql).

CREATE OR REPLACE FUNCTION index_handed_out() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF NEW.type = 'TicketTransferred' THEN
        INSERT INTO ticket_codes (code, ticket_id, purchase_token, organization_id)
        SELECT NEW.data->>'new_code', c.ticket_id, c.purchase_token, c.organization_id
        FROM ticket_codes c WHERE c.ticket_id = (NEW.data->>'ticket_id')::bigint LIMIT 1;
        INSERT INTO attendee_tokens (token, ticket_id, purchase_token, organization_id)
        SELECT NEW.data->>'new_attendee_token', c.ticket_id, c.purchase_token, c.organization_id
        FROM ticket_codes c WHERE c.ticket_id = (NEW.data->>'ticket_id')::bigint LIMIT 1;
        RETURN NULL;
    END IF;
    INSERT INTO ticket_codes (code, ticket_id, purchase_token, organization_id)
    SELECT t->>'code', (t->>'id')::bigint, NEW.data->>'token',
           (NEW.data->>'organization_id')::bigint
    FROM jsonb_array_elements(NEW.data->'tickets') AS t;
    INSERT INTO attendee_tokens (token, ticket_id, purchase_token, organization_id)
    SELECT t->>'attendee_token', (t->>'id')::bigint, NEW.data->>'token',
           (NEW.data->>'organization_id')::bigint
    FROM jsonb_array_elements(NEW.data->'tickets') AS t;
    INSERT INTO access_codes (organization_id, access_code, purchase_token, buyer_email)
    VALUES ((NEW.data->>'organization_id')::bigint, NEW.data->>'access_code',
            NEW.data->>'token', NEW.data->'buyer'->>'email');
    RETURN NULL;
END;
$$;

-- Replaced before the backfill, as in 0009: appends wait for this migration to commit, so every
-- TicketTransferred is indexed by exactly one of the two.
DROP TRIGGER events_handed_out ON events;
CREATE TRIGGER events_handed_out AFTER INSERT ON events
    FOR EACH ROW WHEN (NEW.type IN ('PurchaseOpened', 'TicketTransferred'))
    EXECUTE FUNCTION index_handed_out();

INSERT INTO ticket_codes (code, ticket_id, purchase_token, organization_id)
SELECT e.data->>'new_code', c.ticket_id, c.purchase_token, c.organization_id
FROM events e
JOIN LATERAL (
    SELECT * FROM ticket_codes WHERE ticket_id = (e.data->>'ticket_id')::bigint LIMIT 1
) c ON true
WHERE e.type = 'TicketTransferred'
ON CONFLICT DO NOTHING;

INSERT INTO attendee_tokens (token, ticket_id, purchase_token, organization_id)
SELECT e.data->>'new_attendee_token', c.ticket_id, c.purchase_token, c.organization_id
FROM events e
JOIN LATERAL (
    SELECT * FROM ticket_codes WHERE ticket_id = (e.data->>'ticket_id')::bigint LIMIT 1
) c ON true
WHERE e.type = 'TicketTransferred'
ON CONFLICT DO NOTHING;

-- The transfer e-mails: the offer to the recipient, and their ticket once they accepted. For
-- these kinds the row's purchase_token column holds the transfer's id (what the message is of).
ALTER TABLE mail_outbox DROP CONSTRAINT mail_outbox_kind_check;
ALTER TABLE mail_outbox ADD CONSTRAINT mail_outbox_kind_check
    CHECK (kind IN ('confirmation', 'resend', 'transfer_offer', 'transfer_completed'));
