-- ours_complete's report as a real Vapi body (bench/messages/end-of-call-report.json).
SELECT voxanne.handle_vapi_message(replace(replace(replace(:report_body, '@ID@', md5('c' || s.k)::uuid::text), '@ASST@', 'asst_bench_' || (s.k % 100)), '@PHONE@', '+15550000001')::jsonb) FROM (SELECT nextval('bench.pool_seq') AS k) AS s;
