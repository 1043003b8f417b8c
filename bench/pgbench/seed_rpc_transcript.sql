-- The same line through the seed's handleTranscript as one plpgsql RPC (bench/seed_reference.sql).
\set k random(0, 999)
\set a :k % 100
\set t random(1, 9000000000000)
SELECT seed.record_transcript_atomically(md5('live' || :k)::uuid::text, 'asst_bench_' || :a, 'user', 'Hi, I''d like to book a cleaning for Tuesday.', timestamptz '2026-01-01 00:00:00+00' + make_interval(secs => :t::float8 / 1000000));
