-- The ticket resource finds a ticket by its id (its `uid`) before it is issued, when only the
-- purchase that opened it knows it: the index of handed-out codes, searched by ticket. A ticket
-- transferred since has a row per code it had; all lead to the same purchase.
CREATE INDEX ticket_codes_by_ticket ON ticket_codes (ticket_id);
