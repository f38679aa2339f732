-- What the service has handed out to buyers (ticket codes, attendee tokens, access codes), each
-- leading to the streams that hold its truth. Written by a trigger on `events`, so a code is
-- findable in the same transaction that appends the event returning it: verify, scan and the
-- buyer's lookups never wait for a projector, the relay or NATS (DESIGN invariant 4).
--
-- Ownership: these tables belong to the event store. Only `index_handed_out` writes them, and
-- only from events; rows are never updated or deleted, as a code handed out once must keep
-- leading to its ticket, whose own stream says whether the code is still good. An event that
-- hands out something new (a transfer giving a ticket a new code) is indexed by replacing the
-- function in a later migration. infra/handed_out.py holds the reads.
CREATE TABLE ticket_codes (
    code             text PRIMARY KEY,
    ticket_id        bigint NOT NULL,
    purchase_token   text NOT NULL,
    organization_id  bigint NOT NULL
);

CREATE TABLE attendee_tokens (
    token            text PRIMARY KEY,
    ticket_id        bigint NOT NULL,
    purchase_token   text NOT NULL,
    organization_id  bigint NOT NULL
);

-- Access codes are short (8 characters): two purchases of one organization may share one, and
-- the buyer's e-mail tells them apart.
CREATE TABLE access_codes (
    organization_id  bigint NOT NULL,
    access_code      text NOT NULL,
    purchase_token   text NOT NULL,
    buyer_email      text NOT NULL,
    PRIMARY KEY (organization_id, access_code, purchase_token)
);

CREATE FUNCTION index_handed_out() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
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

-- Created before the backfill: it locks out appends until this migration commits, so every
-- PurchaseOpened is indexed by exactly one of the two.
CREATE TRIGGER events_handed_out AFTER INSERT ON events
    FOR EACH ROW WHEN (NEW.type = 'PurchaseOpened') EXECUTE FUNCTION index_handed_out();

INSERT INTO ticket_codes (code, ticket_id, purchase_token, organization_id)
SELECT t->>'code', (t->>'id')::bigint, e.data->>'token', (e.data->>'organization_id')::bigint
FROM events e, jsonb_array_elements(e.data->'tickets') AS t
WHERE e.type = 'PurchaseOpened';

INSERT INTO attendee_tokens (token, ticket_id, purchase_token, organization_id)
SELECT t->>'attendee_token', (t->>'id')::bigint, e.data->>'token',
       (e.data->>'organization_id')::bigint
FROM events e, jsonb_array_elements(e.data->'tickets') AS t
WHERE e.type = 'PurchaseOpened';

INSERT INTO access_codes (organization_id, access_code, purchase_token, buyer_email)
SELECT (data->>'organization_id')::bigint, data->>'access_code', data->>'token',
       data->'buyer'->>'email'
FROM events
WHERE type = 'PurchaseOpened';
