-- A gateway gives back the calls of a slice it could not spend before the slice's hold ended
-- (infra/rate_limits.py, services/api/shared_limits.py): until now the window counted them for a
-- minute, so a key calling in bursts with pauses lost about ten calls at each pause and was
-- refused before its limit. `claim_given_back` takes them off the window, each slice by the end
-- its claim was counted until, then claims as `claim_rate_window` (0015) does in the same
-- transaction, and says until when the window now counts what it granted (`counted_until`, the
-- row's last end, which the gateway keeps to give that slice back by).
CREATE FUNCTION claim_given_back(
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
    v_units integer[];
    v_at integer;
BEGIN
    IF p_asked > 0 AND coalesce(cardinality(p_given_back_ends), 0) > 0 THEN
        -- A slice's calls were counted in the first entry ending at or after its end: its own,
        -- or the one it was merged into (a merged entry keeps the later end).
        SELECT w.units INTO v_units FROM rate_windows w WHERE w.window_key = p_key FOR UPDATE;
        FOR k IN 1 .. cardinality(p_given_back_ends) LOOP
            SELECT min(x.i) INTO v_at
              FROM rate_windows w, unnest(w.ends) WITH ORDINALITY AS x(e, i)
             WHERE w.window_key = p_key AND x.e >= p_given_back_ends[k];
            IF v_at IS NOT NULL THEN
                v_units[v_at] := greatest(v_units[v_at] - p_given_back_units[k], 0);
            END IF;
        END LOOP;
        UPDATE rate_windows SET units = v_units WHERE window_key = p_key;
    END IF;
    SELECT c.granted, c.remaining, c.wait INTO granted, remaining, wait
      FROM claim_rate_window(p_key, p_limit, p_asked, p_window, p_hold, p_channel) c;
    IF granted > 0 THEN
        SELECT w.counted_until INTO counted_until FROM rate_windows w WHERE w.window_key = p_key;
    END IF;
END;
$$;
