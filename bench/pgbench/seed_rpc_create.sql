-- The same message through the seed's Solution 1 plpgsql RPC (bench/seed_reference.sql).
\set r random(1, 9000000000000000000)
\set a random(0, 99)
\set p random(0, 1999)
SELECT seed.create_call_atomically(md5(:r::text)::uuid::text, 'asst_bench_' || :a, '+1555' || lpad(:p::text, 7, '0'), 'pn_bench_' || :a, 'inboundPhoneCall', 'ringing', now());
