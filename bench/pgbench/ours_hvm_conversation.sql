-- A conversation-update as Vapi's SDK shapes it (bench/messages/conversation-update.json, from
-- tests/fixtures/sdk/): a live call's conversation so far, two spoken lines already stored
-- after the first time, and one new user turn at a random moment; on live calls 500-999 (no
-- provisional lines there, as with Vapi's default serverMessages).
\set k random(500, 999)
\set a :k % 100
\set t random(1, 9000000000000)
SELECT voxanne.handle_vapi_message(replace(replace(replace(replace(replace(:conversation_body, '@ID@', md5('live' || :k)::uuid::text), '@ASST@', 'asst_bench_' || :a), '@PHONE@', '+15550000001'), '@TS@', (1767225600000 + :t::float8 / 1000)::text), '@TE@', (1767225600900 + :t::float8 / 1000)::text)::jsonb);
