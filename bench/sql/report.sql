-- bench/run's report, from table `raw` (bench/.work/results.tsv) of the meta database.
-- psql -v format=console: the ratio table; -v format=markdown: every table of RESULTS.md.
-- Ratios are taken per round (contenders of a round ran back to back) and the median of the
-- rounds is reported, so machine noise that hits a round hits both sides of its ratio.
\set ON_ERROR_STOP on
\set QUIET on
SET client_min_messages = warning;

-- A query's rows as a Markdown table (column order kept: json, not jsonb).
CREATE OR REPLACE FUNCTION pg_temp.md(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    rows json;
    cols text[];
    r json;
    out text;
BEGIN
    EXECUTE format('SELECT json_agg(row_to_json(t)) FROM (%s) AS t', q) INTO rows;
    IF rows IS NULL THEN
        RETURN '(no figures: section not run)';
    END IF;
    SELECT array_agg(k) INTO cols FROM json_object_keys(rows -> 0) AS k;
    out := '| ' || array_to_string(cols, ' | ') || E' |\n|'
        || repeat(' --- |', array_length(cols, 1));
    FOR r IN SELECT * FROM json_array_elements(rows) LOOP
        out := out || E'\n| ' || (SELECT string_agg(coalesce(r ->> c, ''), ' | ' ORDER BY i)
                                  FROM unnest(cols) WITH ORDINALITY AS u(c, i)) || ' |';
    END LOOP;
    RETURN out;
END
$$;

CREATE TEMP VIEW med AS
SELECT section, contender, clients, metric,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY value) AS value,
       min(value) AS lo, max(value) AS hi, count(*) AS n
FROM raw GROUP BY 1, 2, 3, 4;

-- What is compared with what. higher_is_better = false: the ratio is theirs ÷ ours (CPU).
CREATE TEMP TABLE cmp (ord int, what text, ours_section text, ours text, their_section text,
                       theirs text, clients int, metric text, target numeric, higher_is_better bool);

INSERT INTO cmp
SELECT d.ord * 20 + row_number() OVER (PARTITION BY d.ord ORDER BY c.clients), d.what, 'main', d.ours,
       'main', d.theirs, c.clients, 'tps',
       -- the TPS targets are judged at the largest client count (8 by default): a server's
       -- concurrency; the other counts are shown for information
       CASE WHEN c.clients = (SELECT max(clients) FROM raw WHERE section = 'main') THEN d.target END, true
FROM (VALUES
    (1, 'create_inbound_call ÷ plpgsql reference (TPS)', 'ours_create', 'seed_rpc_create', 1.25, true),
    (2, 'create_inbound_call ÷ client-side sequence (TPS)', 'ours_create', 'seed_client_create', 6, true),
    (3, 'create_inbound_call ÷ floor (TPS)', 'ours_create', 'floor', 0.65, true),
    (4, 'record_transcript ÷ floor (TPS)', 'ours_transcript', 'floor', 0.85, true),
    (5, 'record_transcript ÷ plpgsql reference (TPS)', 'ours_transcript', 'seed_rpc_transcript', NULL, false),
    (6, 'complete_call ÷ floor (TPS)', 'ours_complete', 'floor', NULL, false),
    (7, 'handle_vapi_message(status-update) ÷ create_inbound_call', 'ours_hvm_status', 'ours_create', NULL, false),
    (8, 'handle_vapi_message(transcript) ÷ record_transcript', 'ours_hvm_transcript', 'ours_transcript', NULL, false),
    (9, 'handle_vapi_message(end-of-call-report) ÷ complete_call', 'ours_hvm_report', 'ours_complete', NULL, false),
    (10, 'create_inbound_call ÷ its rows as plain INSERTs', 'ours_create', 'raw_create', NULL, false),
    (11, 'a call''s rows as plain INSERTs ÷ floor', 'raw_create', 'floor', NULL, false),
    (12, 'record_transcript ÷ its rows as plain INSERTs', 'ours_transcript', 'raw_transcript', NULL, false),
    (13, 'a line''s rows as plain INSERTs ÷ floor', 'raw_transcript', 'floor', NULL, false),
    (14, 'floor + one pg_notify ÷ floor', 'floor_notify', 'floor', NULL, false),
    (15, 'create_inbound_call with voxanne.notify on ÷ off', 'ours_create_notify', 'ours_create', NULL, false),
    (16, 'record_transcript with voxanne.notify on ÷ off', 'ours_transcript_notify', 'ours_transcript', NULL, false)
) AS d(ord, what, ours, theirs, target, max_clients_only)
CROSS JOIN (SELECT DISTINCT clients FROM raw WHERE section = 'main' AND metric = 'tps') AS c;

INSERT INTO cmp VALUES
    (1100, 'server CPU per call: create_inbound_call vs plpgsql reference', 'cpu', 'ours_create', 'cpu', 'seed_rpc_create', 1, 'cpu_us_per_call', 1.25, false),
    (1110, 'server CPU per call: a call''s rows as plain INSERTs (plpgsql) vs plpgsql reference', 'cpu', 'raw_create', 'cpu', 'seed_rpc_create', 1, 'cpu_us_per_call', NULL, false),
    (1120, 'server CPU per call: create_inbound_call vs its rows as plain INSERTs (plpgsql)', 'cpu', 'ours_create', 'cpu', 'raw_create', 1, 'cpu_us_per_call', NULL, false),
    (1200, 'server CPU per call: record_transcript vs plpgsql reference', 'cpu', 'ours_transcript', 'cpu', 'seed_rpc_transcript', 1, 'cpu_us_per_call', NULL, false),
    (1300, 'server CPU per call: create_inbound_call vs handle_vapi_message', 'cpu', 'ours_create', 'cpu', 'ours_hvm_status', 1, 'cpu_us_per_call', NULL, false);

INSERT INTO cmp
SELECT 2000 + d.ord * 20 + row_number() OVER (PARTITION BY d.ord ORDER BY c.clients), d.what, 'relay',
       d.ours, 'relay', d.theirs, c.clients, 'tps',
       CASE WHEN c.clients = (SELECT max(clients) FROM raw WHERE section = 'relay') THEN 0.80 END, true
FROM (VALUES
    (1, 'relay HTTP ÷ direct SQL, status-update bodies', 'relay_status', 'ours_hvm_status'),
    (2, 'relay HTTP ÷ direct SQL, transcript bodies', 'relay_transcript', 'ours_hvm_transcript')
) AS d(ord, what, ours, theirs)
CROSS JOIN (SELECT DISTINCT clients FROM raw WHERE section = 'relay' AND metric = 'tps') AS c;

-- the spool costs nothing while the database is healthy: no target but "within noise"
INSERT INTO cmp
SELECT 2100 + d.ord * 20 + row_number() OVER (PARTITION BY d.ord ORDER BY c.clients), d.what, 'relay',
       d.ours, 'relay', d.theirs, c.clients, 'tps', NULL, true
FROM (VALUES
    (1, 'relay with --spool-dir ÷ without, status-update bodies', 'relay_spool_status', 'relay_status'),
    (2, 'relay with --spool-dir ÷ without, transcript bodies', 'relay_spool_transcript', 'relay_transcript')
) AS d(ord, what, ours, theirs)
CROSS JOIN (SELECT DISTINCT clients FROM raw WHERE section = 'relay' AND metric = 'tps') AS c;

INSERT INTO cmp
SELECT 3000 + d.ord * 100 + row_number() OVER (PARTITION BY d.ord ORDER BY s.size),
       format('%s TPS at %s calls ÷ empty', d.name, to_char(s.size, 'FM999,999,999,999')),
       s.section, d.contender, 'scale_0', d.contender, s.clients, 'tps',
       CASE WHEN s.size = max(s.size) OVER () THEN 0.85 END, true
FROM (VALUES (1, 'create_inbound_call', 'ours_create'), (2, 'record_transcript', 'ours_transcript'))
     AS d(ord, name, contender)
CROSS JOIN (SELECT DISTINCT section, substr(section, 7)::bigint AS size, clients FROM raw
            WHERE section LIKE 'scale\_%' AND section <> 'scale_0' AND metric = 'tps') AS s;

-- --ab-extension: the candidate build (b) ÷ voxanne_ext as it is (a)
INSERT INTO cmp
SELECT 4000 + row_number() OVER (ORDER BY s.contender, s.clients),
       format('A/B: %s, candidate ÷ current (TPS)', s.contender), 'ab_b', s.contender, 'ab_a',
       s.contender, s.clients, 'tps', NULL, true
FROM (SELECT DISTINCT contender, clients FROM raw WHERE section = 'ab_b' AND metric = 'tps') AS s;
INSERT INTO cmp
SELECT 4500 + row_number() OVER (ORDER BY s.contender),
       format('A/B: %s, server CPU per call, candidate vs current', s.contender), 'ab_cpu_b',
       s.contender, 'ab_cpu_a', s.contender, 1, 'cpu_us_per_call', NULL, false
FROM (SELECT DISTINCT contender FROM raw WHERE section = 'ab_cpu_b') AS s;

CREATE TEMP VIEW ratios AS
WITH per_round AS (
    SELECT c.ord, o.round,
           CASE WHEN c.higher_is_better THEN o.value / nullif(t.value, 0)
                ELSE t.value / nullif(o.value, 0) END AS ratio
    FROM cmp AS c
    JOIN raw AS o ON o.section = c.ours_section AND o.contender = c.ours AND o.clients = c.clients
                 AND o.metric = c.metric
    JOIN raw AS t ON t.section = c.their_section AND t.contender = c.theirs AND t.clients = c.clients
                 AND t.metric = c.metric AND t.round = o.round
)
SELECT c.ord, c.what AS comparison, c.clients,
       round(mo.value::numeric, CASE WHEN c.metric = 'tps' THEN 0 ELSE 1 END)
           || CASE WHEN c.metric = 'tps' THEN ' tps' ELSE ' µs' END AS ours,
       round(mt.value::numeric, CASE WHEN c.metric = 'tps' THEN 0 ELSE 1 END)
           || CASE WHEN c.metric = 'tps' THEN ' tps' ELSE ' µs' END AS contender,
       to_char(percentile_cont(0.5) WITHIN GROUP (ORDER BY p.ratio), 'FM990.00')
           || CASE WHEN c.higher_is_better THEN '×' ELSE '× less' END AS ratio,
       CASE WHEN c.target IS NULL THEN '' ELSE '≥ ' || c.target END AS target,
       CASE WHEN c.target IS NULL THEN ''
            WHEN percentile_cont(0.5) WITHIN GROUP (ORDER BY p.ratio) >= c.target THEN 'met'
            ELSE 'MISSED' END AS status,
       count(p.ratio) AS rounds
FROM cmp AS c
JOIN per_round AS p ON p.ord = c.ord
JOIN med AS mo ON mo.section = c.ours_section AND mo.contender = c.ours AND mo.clients = c.clients AND mo.metric = c.metric
JOIN med AS mt ON mt.section = c.their_section AND mt.contender = c.theirs AND mt.clients = c.clients AND mt.metric = c.metric
GROUP BY c.ord, c.what, c.clients, c.target, c.higher_is_better, c.metric, mo.value, mt.value;

SELECT :'format' = 'markdown' AS markdown \gset
\if :markdown
\pset format unaligned
\pset tuples_only on
\echo '## Ratios (ours ÷ each contender, same run)'
\echo ''
\echo 'Median over rounds of the per-round ratio. For CPU the ratio is the contender''s CPU per call ÷ ours ("× less"). Status is against the targets of issue 6; TPS targets are judged at the largest client count (a server''s concurrency), other counts are for information.'
\echo ''
SELECT pg_temp.md($$SELECT comparison, clients, ours, contender, ratio, target, status, rounds FROM ratios ORDER BY ord$$);
\echo ''
\echo '## Throughput (median TPS over rounds, min–max in brackets; WAL from pg_stat_wal around each run; machine CPU from /proc/stat: every process, pgbench included, ÷ transactions, and the share of the CPUs busy and stolen by the hypervisor during the run)'
\echo ''
SELECT pg_temp.md($$
    SELECT t.section, t.contender, t.clients,
           round(t.value::numeric) || ' (' || round(t.lo) || '–' || round(t.hi) || ')' AS tps,
           round(l.value::numeric, 3) AS "latency ms",
           round(w.value::numeric) AS "WAL bytes/txn", round(f.value::numeric, 2) AS "full-page images/txn",
           round(m.value::numeric) AS "machine CPU µs/txn", round(b.value::numeric) AS "busy %",
           round(st.value::numeric) AS "stolen %", t.n AS runs
    FROM med AS t
    LEFT JOIN med AS l ON (l.section, l.contender, l.clients, l.metric) = (t.section, t.contender, t.clients, 'latency_ms')
    LEFT JOIN med AS w ON (w.section, w.contender, w.clients, w.metric) = (t.section, t.contender, t.clients, 'wal_bytes_per_txn')
    LEFT JOIN med AS f ON (f.section, f.contender, f.clients, f.metric) = (t.section, t.contender, t.clients, 'wal_fpi_per_txn')
    LEFT JOIN med AS m ON (m.section, m.contender, m.clients, m.metric) = (t.section, t.contender, t.clients, 'machine_cpu_us_per_txn')
    LEFT JOIN med AS b ON (b.section, b.contender, b.clients, b.metric) = (t.section, t.contender, t.clients, 'machine_busy_pct')
    LEFT JOIN med AS st ON (st.section, st.contender, st.clients, st.metric) = (t.section, t.contender, t.clients, 'machine_steal_pct')
    WHERE t.metric = 'tps' ORDER BY t.section, t.clients, t.value DESC$$);
\echo ''
\echo '## Server CPU per call (median µs over rounds; one statement of --cpu-calls calls, timed by the backend from /proc/self/schedstat, commit excluded)'
\echo ''
SELECT pg_temp.md($$
    SELECT c.contender, round(c.value::numeric, 2) AS "CPU µs/call", round(c.lo, 2) AS min, round(c.hi, 2) AS max,
           round(w.value::numeric, 2) AS "wall µs/call"
    FROM med AS c JOIN med AS w ON (w.section, w.contender, w.clients, w.metric) = (c.section, c.contender, c.clients, 'wall_us_per_call')
    WHERE c.section = 'cpu' AND c.metric = 'cpu_us_per_call' ORDER BY c.value$$);
\echo ''
\echo '## Scale (preloaded calls, each with its transcript lines and ledger row; set-based INSERT … SELECT)'
\echo ''
SELECT pg_temp.md($$
    SELECT substr(s.contender, 6)::bigint AS "preloaded calls",
           pg_size_pretty(s.value::bigint) AS "database size",
           round(p.value::numeric) AS "preload seconds",
           (SELECT round(value::numeric) FROM med WHERE section = 'scale_' || substr(s.contender, 6) AND contender = 'ours_create' AND metric = 'tps') AS "create_inbound_call tps",
           (SELECT round(value::numeric) FROM med WHERE section = 'scale_' || substr(s.contender, 6) AND contender = 'ours_transcript' AND metric = 'tps') AS "record_transcript tps"
    FROM med AS s
    LEFT JOIN med AS p ON p.section = 'preload' AND p.contender = 'voxanne_bench_s' || substr(s.contender, 6)
    WHERE s.section = 'scale' AND s.metric = 'database_bytes'
    ORDER BY 1$$);
\echo ''
\echo '## Storage (rows written through the functions, after VACUUM; pg_total_relation_size: heap, TOAST and every index)'
\echo ''
SELECT pg_temp.md($$
    SELECT r.contender AS "table", r.value AS rows, pg_size_pretty(b.value::bigint) AS total,
           round(b.value / nullif(r.value, 0)) AS "bytes/row"
    FROM med AS r JOIN med AS b ON (b.section, b.contender, b.metric) = (r.section, r.contender, 'total_bytes')
    WHERE r.section = 'storage' AND r.metric = 'rows' ORDER BY r.contender$$);
\echo ''
SELECT pg_temp.md($$
    SELECT side, round(sum(b.value) / (SELECT value FROM med WHERE section = 'storage' AND contender = 'calls' AND metric = 'n'))
               AS "bytes per call, all its rows"
    FROM med AS b CROSS JOIN LATERAL (SELECT split_part(b.contender, '.', 1) AS side) AS s
    WHERE b.section = 'storage' AND b.metric = 'total_bytes' GROUP BY side ORDER BY side$$);
\echo ''
\echo 'Bytes per call, all its rows: every table of the side (the call, its lines, ledger, outbox or queue rows) ÷ calls.'
\echo ''
\echo '## Memory'
\echo ''
SELECT pg_temp.md($$
    SELECT contender AS "process / moment",
           max(value) FILTER (WHERE metric IN ('vm_rss_kb', 'rss_kb')) AS "VmRSS kB",
           max(value) FILTER (WHERE metric = 'rss_anon_kb') AS "RssAnon kB",
           max(value) FILTER (WHERE metric IN ('vm_hwm_kb', 'rss_peak_kb')) AS "VmHWM / sampled peak kB"
    FROM raw WHERE section IN ('memory', 'relay') AND metric IN ('vm_rss_kb', 'rss_anon_kb', 'vm_hwm_kb', 'rss_peak_kb', 'rss_kb')
    GROUP BY contender ORDER BY contender$$);
\echo ''
SELECT 'Backend growth from the first 10,000 calls to the end (' || to_char(max(value) FILTER (WHERE contender = 'calls'), 'FM999,999,999') || ' calls): VmRSS '
       || (max(value) FILTER (WHERE contender = 'backend_after_all' AND metric = 'vm_rss_kb')
           - max(value) FILTER (WHERE contender = 'backend_after_first_batch' AND metric = 'vm_rss_kb')) || ' kB, RssAnon (private memory) '
       || (max(value) FILTER (WHERE contender = 'backend_after_all' AND metric = 'rss_anon_kb')
           - max(value) FILTER (WHERE contender = 'backend_after_first_batch' AND metric = 'rss_anon_kb')) || ' kB. (VmRSS also counts the shared buffers this backend has touched.)'
FROM raw WHERE section = 'memory' HAVING count(*) > 0;
\echo ''
\echo '## Relay CPU per request (user + system time of the relay process over a wrk run ÷ requests)'
\echo ''
SELECT pg_temp.md($$
    SELECT contender, clients, round(value::numeric, 1) AS "relay CPU µs/request", round(lo, 1) AS min, round(hi, 1) AS max
    FROM med WHERE section = 'relay' AND metric = 'cpu_us_per_request' ORDER BY contender, clients$$);
\echo ''
\echo '## The spool while the database is down, and its drain'
\echo ''
SELECT pg_temp.md($$
    SELECT (SELECT round(value) FROM med WHERE section = 'relay' AND contender = 'relay_spool_while_down' AND metric = 'tps')
               AS "req/s answered from the spool, database stopped",
           (SELECT round(value) FROM med WHERE section = 'relay' AND contender = 'spool_drain' AND metric = 'entries')
               AS "spooled per run",
           (SELECT round(value) FROM med WHERE section = 'relay' AND contender = 'spool_drain' AND metric = 'msgs_per_s')
               AS "drained msgs/s (from pg_ctl start)",
           (SELECT max(value) FROM raw WHERE section = 'relay' AND contender = 'spool_healthy' AND metric = 'appended')
               AS "spooled while healthy"$$);
\echo ''
\echo 'Medians over the rounds; the drain rate counts from the start of the restart until the spool is empty, one statement per message.'
\else
\pset footer off
SELECT comparison, clients, ours, contender, ratio, target, status FROM ratios ORDER BY ord;
\endif
