-- Rate limits and the auth-failure throttle, held across every gateway on this database
-- (services/api/limits.py, infra/rate_limits.py). One row per rolling window: an API key's general
-- limit ('key:7'), one of its dedicated buckets ('key:7:ticket_pdf'), or the failed
-- authentications of one source address ('auth:203.0.113.5'). A row is a short log, ascending by
-- end: `units[i]` calls counted until `ends[i]`. Claims less than a second apart share an entry
-- (the later end), so a log holds about 62 entries whatever the limit. `counted_until` is the
-- last end: the gateways delete rows past it.
CREATE TABLE rate_windows (
    window_key     text PRIMARY KEY,
    ends           timestamptz[] NOT NULL,
    units          integer[] NOT NULL,
    counted_until  timestamptz NOT NULL
);
CREATE INDEX rate_windows_by_end ON rate_windows (counted_until);

-- Claims up to `p_asked` calls of a window's room in one round trip (p_asked = 0 only looks).
-- The row lock orders concurrent claims, so the windows' claims never add up past `p_limit`. A
-- claim is counted for `p_window` seconds, plus `p_hold` when it grants more than one call (the
-- time the gateway may take to spend them). Near the limit a claim grants one call at a time, so
-- no gateway sits on room another one needs. `wait`: seconds until the window has room again
-- (0 when it has). `p_channel`: notified when this claim filled the window.
CREATE FUNCTION claim_rate_window(
    p_key text,
    p_limit integer,
    p_asked integer,
    p_window double precision,
    p_hold double precision,
    p_channel text,
    OUT granted integer,
    OUT remaining integer,
    OUT wait double precision
) LANGUAGE plpgsql AS $$
DECLARE
    v_ends timestamptz[];
    v_units integer[];
    v_now timestamptz;
    v_used integer;
    v_end timestamptz;
    v_last integer;
BEGIN
    -- A claim's commit does not wait for the disk (a flush cost more than the claim itself): a
    -- server crash may forget the last moment's claims, which at worst lets a key make those calls
    -- again.
    PERFORM set_config('synchronous_commit', 'off', true);
    granted := 0;
    wait := 0;
    IF p_asked = 0 THEN
        SELECT w.ends, w.units INTO v_ends, v_units FROM rate_windows w WHERE w.window_key = p_key;
    ELSE
        LOOP
            SELECT w.ends, w.units INTO v_ends, v_units
              FROM rate_windows w WHERE w.window_key = p_key FOR UPDATE;
            EXIT WHEN FOUND;
            INSERT INTO rate_windows VALUES (p_key, '{}', '{}', clock_timestamp())
                ON CONFLICT (window_key) DO NOTHING;
        END LOOP;
    END IF;
    -- The clock after the lock: a claim that waited for another is timed when it is decided.
    v_now := clock_timestamp();
    SELECT coalesce(array_agg(e ORDER BY i), '{}'), coalesce(array_agg(u ORDER BY i), '{}'),
           coalesce(sum(u), 0)::integer
      INTO v_ends, v_units, v_used
      FROM unnest(v_ends, v_units) WITH ORDINALITY AS x(e, u, i)
     WHERE e > v_now;
    IF p_asked > 0 AND v_used < p_limit THEN
        granted := least(p_asked, greatest((p_limit - v_used) / 16, 1));
        v_end := v_now + make_interval(
            secs => p_window + CASE WHEN granted > 1 THEN p_hold ELSE 0 END);
        v_last := cardinality(v_ends);
        IF v_last > 0 AND v_ends[v_last] > v_end - interval '1 second' THEN
            v_ends[v_last] := greatest(v_ends[v_last], v_end);
            v_units[v_last] := v_units[v_last] + granted;
        ELSE
            v_ends := v_ends || v_end;
            v_units := v_units || granted;
        END IF;
        v_used := v_used + granted;
    END IF;
    IF p_asked > 0 THEN
        UPDATE rate_windows
           SET ends = v_ends, units = v_units,
               counted_until = coalesce(v_ends[cardinality(v_ends)], v_now)
         WHERE window_key = p_key;
    END IF;
    remaining := greatest(p_limit - v_used, 0);
    IF v_used >= p_limit THEN
        SELECT extract(epoch FROM y.e - v_now) INTO wait
          FROM (SELECT x.e, x.i, sum(x.u) OVER (ORDER BY x.i) AS freed
                  FROM unnest(v_ends, v_units) WITH ORDINALITY AS x(e, u, i)) y
         WHERE v_used - y.freed < p_limit
         ORDER BY y.i
         LIMIT 1;
        IF granted > 0 AND p_channel IS NOT NULL THEN
            PERFORM pg_notify(p_channel, '');
        END IF;
    END IF;
END;
$$;
