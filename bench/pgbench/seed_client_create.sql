-- The same message as the seed's handleCallStarted really runs it: separate round trips, each
-- statement its own transaction (supabase-js has none), values passed back with \gset.
-- 9 round trips, 5 commits. (The handler's agent-config read and RAG call are left out.)
\set r random(1, 9000000000000000000)
\set a random(0, 99)
\set p random(0, 1999)
SELECT count(*) AS dup FROM seed.processed_webhook_events WHERE event_id = 'call.started:' || md5(:r::text)::uuid::text \gset
\if :dup > 0
\else
INSERT INTO seed.processed_webhook_events (event_id, call_id, event_type) VALUES ('call.started:' || md5(:r::text)::uuid::text, md5(:r::text)::uuid::text, 'call.started');
SELECT count(*) AS existing FROM seed.call_tracking WHERE vapi_call_id = md5(:r::text)::uuid::text \gset
SELECT id AS agent_id, org_id FROM seed.agents WHERE vapi_assistant_id = 'asst_bench_' || :a AND active \gset
INSERT INTO seed.call_tracking (org_id, agent_id, vapi_call_id, phone, status) VALUES (:org_id, :agent_id, md5(:r::text)::uuid::text, '+1555' || lpad(:p::text, 7, '0'), 'ringing') RETURNING id AS tracking_id \gset
SELECT coalesce((SELECT id::text FROM seed.leads WHERE org_id = :org_id AND phone = '+1555' || lpad(:p::text, 7, '0')), '') AS lead_id \gset
INSERT INTO seed.call_logs (org_id, vapi_call_id, agent_id, lead_id, phone_number, call_type, status, started_at) VALUES (:org_id, md5(:r::text)::uuid::text, :agent_id, NULLIF(:lead_id, '')::uuid, '+1555' || lpad(:p::text, 7, '0'), 'inboundPhoneCall', 'in_progress', now()) RETURNING id AS log_id \gset
UPDATE seed.call_tracking SET call_log_id = :log_id, lead_id = NULLIF(:lead_id, '')::uuid, status = 'ringing', updated_at = now() WHERE id = :tracking_id AND org_id = :org_id;
INSERT INTO seed.websocket_broadcast_queue (org_id, tracking_id, event_type, payload) VALUES (:org_id, :tracking_id, 'call_status', jsonb_build_object('vapiCallId', md5(:r::text)::uuid::text, 'status', 'ringing', 'occurredAt', now()));
\endif
