-- A Stripe event's id is the causation id in the metadata of the events it caused, so the
-- purchase's own stream says whether it was applied: a table of ids seen is not needed.
DROP TABLE stripe_events;
