-- The folded state of a long stream (an on-sale event's inventory holds one event per purchase)
-- as of `version`, so a desk that starts cold reads the snapshot and the events after it instead
-- of the whole stream (infra/snapshots.py). A cache, never the truth: a snapshot is used only
-- while the stream's event at `version` is `event_id`, and only by code whose state schema is
-- `state_schema`; each schema keeps its own row, so two releases running side by side during a
-- deploy never overwrite each other's.
CREATE TABLE snapshots (
    stream_id     text NOT NULL,
    state_schema  smallint NOT NULL,
    version       integer NOT NULL,
    event_id      uuid NOT NULL,
    data          jsonb NOT NULL,
    taken_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (stream_id, state_schema)
);
