-- ours_create's message as a real Vapi body (bench/messages/status-update-ringing.json):
-- voxanne.handle_vapi_message. The body text is passed in (-D status_body) and the ids are put
-- in server-side, then cast text -> jsonb as the relay's statement does.
\set r random(1, 9000000000000000000)
\set a random(0, 99)
\set p random(0, 1999)
SELECT voxanne.handle_vapi_message(replace(replace(replace(:status_body, '@ID@', md5(:r::text)::uuid::text), '@ASST@', 'asst_bench_' || :a), '@PHONE@', '+1555' || lpad(:p::text, 7, '0'))::jsonb);
