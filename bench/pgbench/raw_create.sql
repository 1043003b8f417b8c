-- The rows a new call's first status writes (ledger, call, outbox), as plain INSERTs into the
-- same tables (their indexes, CHECKs and foreign keys apply), with no function, no duplicate
-- handling, no lead lookup: what this schema's writes cost, whoever issues them.
\set r random(1, 9000000000000000000)
\set a random(0, 99)
\set p random(0, 1999)
WITH a AS (SELECT org_id, agent_id FROM bench.agents WHERE n = :a::int), m AS (INSERT INTO voxanne.processed_webhook_events (org_id, event_id, event_type) SELECT org_id, 'status:' || md5(:r::text)::uuid || ':' || 'ringing', 'status-update' FROM a), c AS (INSERT INTO voxanne.calls (org_id, vapi_call_id, agent_id, call_type, customer_number, phone_number_id, status, status_event_id) SELECT org_id, md5(:r::text)::uuid::text, agent_id, 'inboundPhoneCall', '+1555' || lpad(:p::text, 7, '0'), 'pn_bench_' || :a::int, 'ringing', 'status:' || md5(:r::text)::uuid || ':' || 'ringing' FROM a RETURNING org_id, id) INSERT INTO voxanne.outbox (org_id, topic, payload) SELECT org_id, 'call.status', jsonb_build_object('call_id', id, 'vapi_call_id', md5(:r::text)::uuid::text, 'status', 'ringing', 'occurred_at', now()) FROM c;
