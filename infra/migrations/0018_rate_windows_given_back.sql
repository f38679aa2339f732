-- A gateway gives back the calls of a slice it could not spend before the slice's hold ended
-- (infra/rate_limits.py, services/api/shared_limits.py): until now the window counted them for a
-- minute, so a key calling in bursts with pauses lost about ten calls at each pause and was
-- refused before its limit. A claim now carries what is given back, each as the end its claim
-- was counted until and the calls unspent, and says until when it is counted itself
-- (`counted_until`, which the gateway keeps to give the slice back by). Otherwise as 0015.
DROP FUNCTION claim_rate_window(text, integer, integer, double precision, double precision, text);

CREATE FUNCTION claim_rate_window(
    p_key text,
    p_limit integer,
    p_asked integer,
    p_window double precision,
    p_hold double precision,
    p_channel text,
    p_given_back_ends timestamptz[],
    p_given_back_units integer[],
    OUT granted integer,
    OUT remaining integer,
    OUT wait double precision,
    OUT counted_until timestamptz
) LANGUAGE plpgsql AS $$
DECLARE
    v_ends timestamptz[];
    v_units integer[];
    v_now timestamptz;
    v_used integer;
    v_end timestamptz;
    v_last integer;
    v_at integer;
BEGIN
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
        -- A slice's calls were counted in the first entry ending at or after its claim's end:
        -- its own, or the one it was merged into (entries end at least a second apart).
        FOR k IN 1 .. coalesce(cardinality(p_given_back_ends), 0) LOOP
            SELECT min(x.i) INTO v_at FROM unnest(v_ends) WITH ORDINALITY AS x(e, i)
             WHERE x.e >= p_given_back_ends[k];
            IF v_at IS NOT NULL THEN
                v_units[v_at] := greatest(v_units[v_at] - p_given_back_units[k], 0);
            END IF;
        END LOOP;
    END IF;
    v_now := clock_timestamp();
    SELECT coalesce(array_agg(e ORDER BY i), '{}'), coalesce(array_agg(u ORDER BY i), '{}'),
           coalesce(sum(u), 0)::integer
      INTO v_ends, v_units, v_used
      FROM unnest(v_ends, v_units) WITH ORDINALITY AS x(e, u, i)
     WHERE e > v_now AND u > 0;
    IF p_asked > 0 AND v_used < p_limit THEN
        granted := least(p_asked, greatest((p_limit - v_used) / 16, 1));
        v_end := v_now + make_interval(
            secs => p_window + CASE WHEN granted > 1 THEN p_hold ELSE 0 END);
        counted_until := v_end;
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
