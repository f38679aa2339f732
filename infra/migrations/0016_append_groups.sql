-- Group commit across streams (infra/append_batcher.py): several callers' appends in one
-- statement and one commit, each stored or refused on its own. A caller's append is a group of
-- one or more streams, atomic together: it is stored only when every one of its streams is at
-- the version the caller expected; a group that is not is left out and the others are stored.
-- Returns each stream's version before the append, in the order of p_streams, from which the
-- caller tells which groups were stored and their new versions without another read.
--
-- The rules of append_events (0001): the first write of its transaction, every stream locked in
-- one fixed order (text order, as append_events) before anything is written, so the transaction
-- id is drawn only once it owns its streams, and the versions read after the locks by a
-- statement whose snapshot is younger than them, so the check is exact.
--
-- p_expected: -1 any version, 0 the stream must not exist yet. Per event: p_stream_of, its
-- stream's index in p_streams, and p_offsets, its place in that stream's events (1, 2, ...).
CREATE FUNCTION append_groups(
    p_streams         text[],
    p_expected        integer[],
    p_groups          integer[],
    p_stream_of       integer[],
    p_offsets         integer[],
    p_event_ids       uuid[],
    p_types           text[],
    p_data            jsonb[],
    p_metadata        jsonb[],
    p_schema_versions smallint[]
) RETURNS integer[]
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    versions integer[];
    refused integer[];
BEGIN
    IF pg_current_xact_id_if_assigned() IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'LJ002',
            MESSAGE = 'append_groups must be the first write of its transaction';
    END IF;
    -- A sorted subquery is not flattened: the locks are taken in its order.
    PERFORM pg_advisory_xact_lock(hashtextextended(sorted.s, 0))
    FROM (SELECT u.s FROM unnest(p_streams) AS u(s) ORDER BY 1) AS sorted;
    versions := ARRAY(
        SELECT coalesce((SELECT max(e.version) FROM events e WHERE e.stream_id = u.s), 0)
        FROM unnest(p_streams) WITH ORDINALITY AS u(s, i)
        ORDER BY u.i
    );
    refused := ARRAY(
        SELECT DISTINCT p_groups[i] FROM generate_subscripts(p_streams, 1) AS i
        WHERE p_expected[i] <> -1 AND p_expected[i] <> versions[i]
    );
    IF NOT pg_try_advisory_xact_lock_shared(7301002) THEN
        PERFORM pg_notify('linjerum_events', '');
    END IF;
    INSERT INTO events (event_id, stream_id, version, type, data, metadata, schema_version)
    SELECT e.id, p_streams[e.k], versions[e.k] + e.n, e.t, e.d, e.m, e.sv
    FROM unnest(p_stream_of, p_offsets, p_event_ids, p_types, p_data, p_metadata,
                p_schema_versions) WITH ORDINALITY AS e(k, n, id, t, d, m, sv, ord)
    WHERE p_groups[e.k] <> ALL (refused)
    ORDER BY e.ord;
    RETURN versions;
END;
$$;
