-- 1000 calls in progress (vapi call id md5('live' || k)::uuid, agent k % 100) that the
-- transcript contenders write lines for, created through each side's own function.
\set ON_ERROR_STOP on
SELECT count(voxanne.create_inbound_call(md5('live' || k)::uuid::text, 'asst_bench_' || (k % 100),
           '+1555' || lpad((k % 2000)::text, 7, '0'), 'pn_bench_' || (k % 100), 'inboundPhoneCall',
           'in-progress', now()))
FROM generate_series(0, 999) AS k;
SELECT count(seed.create_call_atomically(md5('live' || k)::uuid::text, 'asst_bench_' || (k % 100),
           '+1555' || lpad((k % 2000)::text, 7, '0'), 'pn_bench_' || (k % 100), 'inboundPhoneCall',
           'in-progress', now()))
FROM generate_series(0, 999) AS k;
