-- The event store: one row per event, globally ordered by (tx_id, position) for readers
-- that must never skip a late-committing transaction; that order is the primary key.
CREATE TABLE events (
    position     bigserial,
    tx_id        xid8 NOT NULL DEFAULT pg_current_xact_id(),
    event_id     uuid NOT NULL UNIQUE,
    stream_id    text NOT NULL,
    version      integer NOT NULL,
    type         text NOT NULL,
    data         jsonb NOT NULL,
    metadata     jsonb NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (stream_id, version),
    PRIMARY KEY (tx_id, position)
);
CREATE INDEX events_category_order ON events ((split_part(stream_id, '-', 1)), tx_id, position);

-- Appends a batch of events to one or more streams, each at its expected version, atomically;
-- returns each stream's new version, in the order of p_streams.
-- p_expected[i] = -1 means "any version"; 0 means "the stream must not exist yet".
--
-- Streams are locked with advisory locks *before* the transaction writes anything, so it is
-- given its transaction id only once it owns its streams: within a stream, (tx_id, position)
-- order is then version order, and the relay's safe global order keeps every stream in order.
-- A stream's version is its highest event version, read through the (stream_id, version) index
-- after the lock, so there is no second table to write.
--
-- The relay is woken by NOTIFY, but a notifying commit holds a database-wide lock until it is
-- flushed, which serialises every committer. So an append notifies only when the relay may be
-- asleep: the relay takes advisory lock 7301002 exclusively before it sleeps, and an append
-- that gets it shared instead keeps the relay waiting until it commits (services/relay.py;
-- infra/eventstore.py names the lock and the channel).
--
-- Generic plans: the custom plans PL/pgSQL would otherwise rebuild on every call cost more
-- than the statements themselves. The commonest append, to one stream at a known version, skips
-- PL/pgSQL altogether with one statement that keeps the same rules (infra/eventstore.py).
CREATE FUNCTION append_events(
    p_streams    text[],
    p_expected   integer[],
    p_event_ids  uuid[],
    p_stream_ids text[],
    p_types      text[],
    p_data       jsonb[],
    p_metadata   jsonb[]
) RETURNS integer[]
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    s text;
    versions integer[];
    event_versions integer[];
    k integer;  -- the index in p_streams of an event's stream
BEGIN
    IF pg_current_xact_id_if_assigned() IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'LJ002',
            MESSAGE = 'append_events must be the first write of its transaction';
    END IF;
    -- A fixed lock order means two multi-stream appends cannot deadlock.
    FOREACH s IN ARRAY ARRAY(SELECT unnest(p_streams) ORDER BY 1) LOOP
        PERFORM pg_advisory_xact_lock(hashtextextended(s, 0));
    END LOOP;
    versions := ARRAY(
        SELECT coalesce((SELECT max(e.version) FROM events e WHERE e.stream_id = u.name), 0)
        FROM unnest(p_streams) WITH ORDINALITY AS u(name, ord)
        ORDER BY u.ord
    );
    FOR i IN 1 .. cardinality(p_streams) LOOP
        IF p_expected[i] <> -1 AND p_expected[i] <> versions[i] THEN
            RAISE EXCEPTION USING ERRCODE = 'LJ001', MESSAGE = p_streams[i],
                DETAIL = format('expected version %s, stream is at %s', p_expected[i], versions[i]);
        END IF;
    END LOOP;
    FOR i IN 1 .. cardinality(p_event_ids) LOOP
        k := array_position(p_streams, p_stream_ids[i]);
        versions[k] := versions[k] + 1;
        event_versions[i] := versions[k];
    END LOOP;

    IF NOT pg_try_advisory_xact_lock_shared(7301002) THEN
        PERFORM pg_notify('linjerum_events', '');
    END IF;
    INSERT INTO events (event_id, stream_id, version, type, data, metadata)
    SELECT * FROM unnest(p_event_ids, p_stream_ids, event_versions, p_types, p_data, p_metadata);
    RETURN versions;
END;
$$;

-- Where the relay has published up to, in (tx_id, position) order; written after NATS acks.
CREATE TABLE relay_checkpoint (
    name      text PRIMARY KEY,
    tx_id     xid8 NOT NULL,
    position  bigint NOT NULL,
    event_id  uuid NOT NULL
);
