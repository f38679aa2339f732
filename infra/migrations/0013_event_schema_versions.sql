-- The shape each event was written in (domain/upcasting.py): a read turns older shapes into the
-- current one. A column rather than a metadata key: metadata says who caused an event, and every
-- append encodes one metadata object shared by many events, while the version is the event
-- type's. Existing events were all written in version 1; a constant default adds the column
-- without rewriting the table.
ALTER TABLE events ADD COLUMN schema_version smallint NOT NULL DEFAULT 1;

-- append_events as in 0001, also storing each event's schema version. p_schema_versions may be
-- left out (version 1 each), so a caller that only writes first versions stays as it was.
DROP FUNCTION append_events(text[], integer[], uuid[], text[], text[], jsonb[], jsonb[]);
CREATE FUNCTION append_events(
    p_streams         text[],
    p_expected        integer[],
    p_event_ids       uuid[],
    p_stream_ids      text[],
    p_types           text[],
    p_data            jsonb[],
    p_metadata        jsonb[],
    p_schema_versions smallint[] DEFAULT NULL
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
    INSERT INTO events (event_id, stream_id, version, type, data, metadata, schema_version)
    SELECT e.id, e.stream, e.v, e.t, e.d, e.m, coalesce(e.sv, 1)
    FROM unnest(p_event_ids, p_stream_ids, event_versions, p_types, p_data, p_metadata,
                p_schema_versions) AS e(id, stream, v, t, d, m, sv);
    RETURN versions;
END;
$$;
