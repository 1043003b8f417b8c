-- The CPU-per-call driver, in bench/run's meta database. It holds one dblink session per
-- contender (each in its own backend, its own database if need be), warms each one up, then
-- measures them in turns, slice by slice, so that a slow moment of the machine hits every
-- contender of the round alike. The contender's backend times itself (bench.measure reads
-- /proc/self/schedstat); this session only waits.
\set ON_ERROR_STOP on
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS dblink;

-- p_conninfo[i], p_sql[i]: contender i's database and statement. '@S@' in a statement is
-- replaced by the slice number (0 for the warm-up), so every slice writes new calls.
CREATE OR REPLACE FUNCTION cpu_interleaved(p_conninfo text[], p_sql text[], p_slices int)
RETURNS TABLE (contender int, cpu_ns bigint, wall_ns bigint)
LANGUAGE plpgsql AS $$
DECLARE
    n int := array_length(p_sql, 1);
    cpu bigint[] := array_fill(0::bigint, ARRAY[n]);
    wall bigint[] := array_fill(0::bigint, ARRAY[n]);
    c bigint;
    w bigint;
    s int;
    k int;
    i int;
BEGIN
    FOR i IN 1 .. n LOOP
        IF 'bench' || i = ANY (dblink_get_connections()) THEN
            PERFORM dblink_disconnect('bench' || i);
        END IF;
        PERFORM dblink_connect('bench' || i, p_conninfo[i]);
        PERFORM * FROM dblink('bench' || i, replace(p_sql[i], '@S@', '0')) AS t(x text);
    END LOOP;
    FOR s IN 1 .. p_slices LOOP
        FOR k IN 0 .. n - 1 LOOP
            i := (k + s) % n + 1;   -- a different contender opens each slice
            SELECT t.cpu_ns, t.wall_ns INTO c, w
            FROM dblink('bench' || i, format('SELECT cpu_ns, wall_ns FROM bench.measure(%L)',
                                              replace(p_sql[i], '@S@', s::text)))
                 AS t(cpu_ns bigint, wall_ns bigint);
            cpu[i] := cpu[i] + c;
            wall[i] := wall[i] + w;
        END LOOP;
    END LOOP;
    FOR i IN 1 .. n LOOP
        PERFORM dblink_disconnect('bench' || i);
        contender := i;
        cpu_ns := cpu[i];
        wall_ns := wall[i];
        RETURN NEXT;
    END LOOP;
END
$$;
