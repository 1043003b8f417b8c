-- A final transcript line on one of the 1000 calls in progress: voxanne.record_transcript.
\set k random(0, 999)
\set a :k % 100
\set t random(1, 9000000000000)
SELECT voxanne.record_transcript(md5('live' || :k)::uuid::text, 'asst_bench_' || :a, 'user', 'Hi, I''d like to book a cleaning for Tuesday.', timestamptz '2026-01-01 00:00:00+00' + make_interval(secs => :t::float8 / 1000000), 'final');
