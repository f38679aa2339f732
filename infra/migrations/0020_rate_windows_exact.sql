-- Rate windows that roll, and never let a key past its limit. 0015 merged a claim into the
-- last entry of a window's log when it ended within a second of it and moved that entry's end
-- to the claim's: calls made every half second built one entry whose end kept sliding, all of
-- them were counted until a minute after the latest, and a key calling steadily under its limit
-- was refused for a whole minute once the window filled. (Keeping the earlier end instead, as a
-- first mend did, let the calls of one second leave together at the first one's end: sixteen
-- calls in a minute on a limit of ten.) Now each entry keeps the end of its first claim as well
-- (`firsts`): a claim joins it only within a grain (a second, or a sixtieth of a shorter window)
-- of that, and moves the entry's end to its own. A call is counted at least its minute and at
-- most a grain more; no chain can form, as a merge never moves what the next is compared to;
-- and a full window's wait is never longer than the window (a refusal comes after the latest
-- claim). Rows written before read their ends as their firsts. claim_given_back (0018) calls
-- this function and is unchanged.
ALTER TABLE rate_windows ADD COLUMN firsts timestamptz[];

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
    v_firsts timestamptz[];
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
        SELECT w.ends, w.units, coalesce(w.firsts, w.ends) INTO v_ends, v_units, v_firsts
          FROM rate_windows w WHERE w.window_key = p_key;
    ELSE
        LOOP
            SELECT w.ends, w.units, coalesce(w.firsts, w.ends) INTO v_ends, v_units, v_firsts
              FROM rate_windows w WHERE w.window_key = p_key FOR UPDATE;
            EXIT WHEN FOUND;
            INSERT INTO rate_windows VALUES (p_key, '{}', '{}', clock_timestamp())
                ON CONFLICT (window_key) DO NOTHING;
        END LOOP;
    END IF;
    -- The clock after the lock: a claim that waited for another is timed when it is decided.
    v_now := clock_timestamp();
    SELECT coalesce(array_agg(e ORDER BY i), '{}'), coalesce(array_agg(u ORDER BY i), '{}'),
           coalesce(array_agg(f ORDER BY i), '{}'), coalesce(sum(u), 0)::integer
      INTO v_ends, v_units, v_firsts, v_used
      FROM unnest(v_ends, v_units, v_firsts) WITH ORDINALITY AS x(e, u, f, i)
     WHERE e > v_now;
    IF p_asked > 0 AND v_used < p_limit THEN
        granted := least(p_asked, greatest((p_limit - v_used) / 16, 1));
        v_end := v_now + make_interval(
            secs => p_window + CASE WHEN granted > 1 THEN p_hold ELSE 0 END);
        v_last := cardinality(v_ends);
        -- Joins the last entry when its first claim ends within a grain of this one, and moves
        -- its end to this claim's: each call leaves the window at most a grain late, never early.
        v_grain := least(1.0, p_window / 60);
        IF v_last > 0 AND v_firsts[v_last] > v_end - make_interval(secs => v_grain) THEN
            v_ends[v_last] := greatest(v_ends[v_last], v_end);
            v_units[v_last] := v_units[v_last] + granted;
        ELSE
            v_ends := v_ends || v_end;
            v_units := v_units || granted;
            v_firsts := v_firsts || v_end;
        END IF;
        v_used := v_used + granted;
    END IF;
    IF p_asked > 0 THEN
        UPDATE rate_windows
           SET ends = v_ends, units = v_units, firsts = v_firsts,
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
