-- ours_transcript's line as a real Vapi body (bench/messages/transcript-final.json): a transcript
-- message no list gives, on live calls 0-499 (those get no conversation-update here).
\set k random(0, 499)
\set a :k % 100
\set t random(1, 9000000000000)
SELECT voxanne.handle_vapi_message(replace(replace(replace(replace(:transcript_body, '@ID@', md5('live' || :k)::uuid::text), '@ASST@', 'asst_bench_' || :a), '@PHONE@', '+15550000001'), '@TS@', (1767225600000 + :t::float8 / 1000)::text)::jsonb);
