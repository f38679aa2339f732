-- Rate windows roll again for calls less than a second apart. 0015 merged a claim into the last
-- entry of a window's log when it ended within a second of it, and moved that entry's end to the
-- claim's: calls made every half second built one entry whose end kept sliding, all of them were
-- counted until a minute after the latest, and a key calling steadily under its limit was refused
-- for a whole minute once the window filled. Now a claim joins the last entry only within a
-- grain (a second, or a sixtieth of a shorter window) of that entry's end, which it never moves:
-- each call leaves the window within a grain of its own minute, and a full window's wait is
-- never longer than the window. claim_given_back (0018) calls this function and is unchanged.
CREATE OR REPLACE FUNCTION claim_rate_window(
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
    v_grain double precision;
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
        -- Joins the last entry when it ends within a grain before this claim's end, and keeps
        -- that end: the claim leaves the window at most a grain early, never later.
        v_grain := least(1.0, p_window / 60);
        IF v_last > 0 AND v_ends[v_last] > v_end - make_interval(secs => v_grain) THEN
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
