-- A new call's first status (ringing): voxanne.create_inbound_call, one statement.
\set r random(1, 9000000000000000000)
\set a random(0, 99)
\set p random(0, 1999)
SELECT voxanne.create_inbound_call(md5(:r::text)::uuid::text, 'asst_bench_' || :a, '+1555' || lpad(:p::text, 7, '0'), 'pn_bench_' || :a, 'inboundPhoneCall', 'ringing', now());
