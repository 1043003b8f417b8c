-- Fixture data of every bench database, ours (schema voxanne) and the seed's (schema seed) alike:
-- 10 orgs, 100 agents (asst_bench_0 .. asst_bench_99, org = n % 10), 1000 leads per org with
-- phones +15550000000 .. +15550000999 (the scripts draw numbers from 2000, so half the calls
-- find a lead), and the `bench` schema: the floor table, the sequences, the measurement and
-- preload helpers. Live calls (for transcript lines) are created by bench/sql/live_calls.sql,
-- after a preload, through the real functions.
\set ON_ERROR_STOP on
SET client_min_messages = warning;
-- bench/run --ab-extension installs another build (renamed) in the "b" databases
\if :{?ext}
\else
\set ext voxanne_ext
\endif

CREATE EXTENSION IF NOT EXISTS :"ext";
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
\ir ../seed_reference.sql

CREATE SCHEMA bench;

-- The floor: the cheapest durable write, one row, no index.
CREATE TABLE bench.floor (id bigint);

-- Calls k = 1 .. n of a preload have vapi call id md5('c' || k)::uuid and agent k % 100; the
-- end-of-call contenders complete them in order through this sequence.
CREATE SEQUENCE bench.pool_seq;

CREATE TABLE bench.agents (n int PRIMARY KEY, org_id uuid NOT NULL, agent_id uuid NOT NULL);

INSERT INTO bench.agents (n, org_id, agent_id)
SELECT n, o.org_id,
       voxanne.upsert_agent(o.org_id, 'asst_bench_' || n, 'Bench agent ' || n)
FROM generate_series(0, 99) AS n
CROSS JOIN LATERAL (SELECT md5('voxanne-bench-org-' || (n % 10))::uuid AS org_id) AS o
ORDER BY n;

INSERT INTO seed.agents (id, org_id, name, active, vapi_assistant_id)
SELECT agent_id, org_id, 'Bench agent ' || n, true, 'asst_bench_' || n FROM bench.agents;

INSERT INTO voxanne.leads (org_id, id, phone, name)
SELECT md5('voxanne-bench-org-' || o)::uuid, md5('lead-' || o || '-' || i)::uuid,
       '+1555' || lpad(i::text, 7, '0'), 'Lead ' || i
FROM generate_series(0, 9) AS o, generate_series(0, 999) AS i;

INSERT INTO seed.leads (id, org_id, phone, contact_name, name)
SELECT id, org_id, phone, name, name FROM voxanne.leads;

-- CPU and wall time of one statement, read by the backend itself: /proc/self/schedstat's first
-- field is the nanoseconds this process has run on a CPU. The commit is not included.
CREATE FUNCTION bench.measure(p_sql text, OUT cpu_ns bigint, OUT wall_ns bigint)
LANGUAGE plpgsql AS $$
DECLARE
    c0 bigint;
    t0 timestamptz;
BEGIN
    c0 := split_part(pg_read_file('/proc/self/schedstat'), ' ', 1)::bigint;
    t0 := clock_timestamp();
    EXECUTE p_sql;
    wall_ns := (extract(epoch FROM clock_timestamp() - t0) * 1e9)::bigint;
    cpu_ns := split_part(pg_read_file('/proc/self/schedstat'), ' ', 1)::bigint - c0;
END
$$;

-- A new call's rows (ledger mark, call, outbox) as plain INSERTs in one statement: no ON
-- CONFLICT, no lead lookup, the agent found as ours and the reference find it. Not a design
-- (a retry would fail); it is what writing these rows costs inside a plpgsql function with the
-- reference's header, to compare server CPU per call against the reference (section cpu).
CREATE FUNCTION bench.raw_create_rows(
    p_vapi_call_id text, p_assistant_id text, p_customer_number text, p_phone_number_id text,
    p_call_type text, p_status text, p_occurred_at timestamptz
) RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_event_id text := 'status:' || p_vapi_call_id || ':' || p_status;
    v_call_id  bigint;
BEGIN
    WITH a AS (
        SELECT org_id, id FROM voxanne.agents WHERE vapi_assistant_id = p_assistant_id AND active
    ), m AS (
        INSERT INTO voxanne.processed_webhook_events (org_id, event_id, event_type)
        SELECT org_id, v_event_id, 'status-update' FROM a
    ), c AS (
        INSERT INTO voxanne.calls (org_id, vapi_call_id, agent_id, call_type, customer_number,
                                   phone_number_id, status, status_event_id)
        SELECT org_id, p_vapi_call_id, id, p_call_type, p_customer_number, p_phone_number_id,
               p_status, v_event_id
        FROM a RETURNING org_id, id
    ), o AS (
        INSERT INTO voxanne.outbox (org_id, topic, payload)
        SELECT org_id, 'call.status',
               jsonb_build_object('call_id', id, 'vapi_call_id', p_vapi_call_id, 'status', p_status,
                                  'occurred_at', p_occurred_at)
        FROM c
    )
    SELECT id INTO v_call_id FROM c;
    RETURN jsonb_build_object('applied', true, 'call_id', v_call_id, 'event_id', v_event_id);
END
$$;

-- This backend's memory, from /proc/self/status (kB).
CREATE FUNCTION bench.backend_memory(OUT vm_rss_kb bigint, OUT rss_anon_kb bigint, OUT vm_hwm_kb bigint)
LANGUAGE sql AS $$
    WITH s AS (SELECT pg_read_file('/proc/self/status') AS t)
    SELECT (regexp_match(t, 'VmRSS:\s+(\d+)'))[1]::bigint,
           (regexp_match(t, 'RssAnon:\s+(\d+)'))[1]::bigint,
           (regexp_match(t, 'VmHWM:\s+(\d+)'))[1]::bigint
    FROM s
$$;

-- Set-based preload of calls lo .. hi (and p_lines transcript lines each), written straight into
-- the tables, consistent with the schema and with what the functions write for an in-progress
-- call: the call row (lead linked when the number is a lead's), its ledger row, optionally its
-- outbox rows. Ids are random-looking (md5 uuids), so the unique indexes grow the way real
-- Vapi call ids make them grow. Run with session_replication_role = replica: the foreign keys
-- hold by construction and their per-row checks would only slow the load.
CREATE FUNCTION bench.preload(lo bigint, hi bigint, p_lines int, p_outbox boolean) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    CREATE TEMP TABLE IF NOT EXISTS preload_batch
        (k bigint, org_id uuid, agent_id uuid, vapi_call_id text, phone text, at timestamptz)
        ON COMMIT DROP;
    INSERT INTO preload_batch
    SELECT k, a.org_id, a.agent_id, md5('c' || k)::uuid::text,
           '+1555' || lpad((k % 2000)::text, 7, '0'),
           timestamptz '2026-01-01 00:00:00+00' + make_interval(secs => k * 0.25)
    FROM generate_series(lo, hi) AS k
    JOIN bench.agents AS a ON a.n = k % 100;

    INSERT INTO voxanne.calls (org_id, id, vapi_call_id, agent_id, lead_id, call_type,
                               customer_number, phone_number_id, status, status_event_id,
                               started_at, created_at, updated_at)
    OVERRIDING SYSTEM VALUE
    SELECT b.org_id, b.k, b.vapi_call_id, b.agent_id, l.id, 'inboundPhoneCall', b.phone,
           'pn_bench_' || (b.k % 100), 'in-progress', 'status:' || b.vapi_call_id || ':in-progress',
           b.at, b.at, b.at
    FROM preload_batch AS b
    LEFT JOIN voxanne.leads AS l ON l.org_id = b.org_id AND l.phone = b.phone
    ORDER BY b.k;

    INSERT INTO voxanne.processed_webhook_events (org_id, event_id, event_type, received_at)
    SELECT b.org_id, 'status:' || b.vapi_call_id || ':in-progress', 'status-update', b.at
    FROM preload_batch AS b ORDER BY b.k;

    IF p_lines > 0 THEN
        INSERT INTO voxanne.call_transcripts (org_id, content_hash, call_id, role, transcript_type,
                                              spoken_at, text, created_at)
        SELECT b.org_id, sha256(convert_to('line:' || b.k || ':' || j, 'UTF8')), b.k,
               CASE WHEN j % 2 = 1 THEN 'user' ELSE 'assistant' END, 'final',
               b.at + make_interval(secs => j), 
               CASE WHEN j % 2 = 1 THEN 'Hi, I''d like to book a cleaning for Tuesday.'
                    ELSE 'Sure, what time works for you?' END,
               b.at + make_interval(secs => j)
        FROM preload_batch AS b, generate_series(1, p_lines) AS j
        ORDER BY b.k, j;
    END IF;

    IF p_outbox THEN
        INSERT INTO voxanne.outbox (org_id, topic, payload, created_at)
        SELECT b.org_id, 'call.status',
               jsonb_build_object('call_id', b.k, 'vapi_call_id', b.vapi_call_id,
                                  'status', 'in-progress', 'occurred_at', b.at), b.at
        FROM preload_batch AS b ORDER BY b.k;
        IF p_lines > 0 THEN
            INSERT INTO voxanne.outbox (org_id, topic, payload, created_at)
            SELECT b.org_id, 'call.transcript',
                   jsonb_build_object('call_id', b.k, 'vapi_call_id', b.vapi_call_id,
                       'role', CASE WHEN j % 2 = 1 THEN 'user' ELSE 'assistant' END,
                       'transcript_type', 'final', 'spoken_at', b.at + make_interval(secs => j),
                       'text', CASE WHEN j % 2 = 1 THEN 'Hi, I''d like to book a cleaning for Tuesday.'
                                    ELSE 'Sure, what time works for you?' END,
                       'content_hash', encode(sha256(convert_to('line:' || b.k || ':' || j, 'UTF8')), 'hex')),
                   b.at
            FROM preload_batch AS b, generate_series(1, p_lines) AS j
            ORDER BY b.k, j;
        END IF;
    END IF;
END
$$;
