-- The SQL surface as a Supabase user meets it: schema, tables and keys, functions and their
-- signatures, the service role's and the read grants, the names of the RLS policies. Run by
-- bin/test with pg_prove. Three cross-cutting facts have their one home in tests/it instead
-- (tests/README.md): anon / authenticated cannot execute the functions (attacks.rs), RLS on every
-- table with own-org SELECT policies (install_privileges.rs), search_path pinned on every
-- SECURITY DEFINER function (catalog.rs).
BEGIN;
SELECT plan(110);

SELECT has_schema('voxanne');
SELECT has_extension('voxanne_ext');

-- tables, keys (org_id first), NOT NULL org_id
SELECT tables_are('voxanne', ARRAY['agents', 'directory', 'tenant_keys', 'leads', 'calls', 'call_transcripts',
    'call_reports', 'processed_webhook_events', 'outbox', 'outbox_consumers', 'rejected_events', 'webhook_credentials']);
SELECT col_is_pk('voxanne', 'agents', ARRAY['org_id', 'id'], 'agents pk');
SELECT col_is_pk('voxanne', 'directory', ARRAY['org_id', 'kind', 'vapi_id'], 'directory pk');
SELECT col_is_pk('voxanne', 'tenant_keys', ARRAY['org_id'], 'one key per org');
SELECT col_is_pk('voxanne', 'call_reports', ARRAY['org_id', 'call_id'], 'one report per call');
SELECT col_is_pk('voxanne', 'webhook_credentials', ARRAY['org_id', 'id'], 'webhook credentials pk');
SELECT col_is_pk('voxanne', 'leads', ARRAY['org_id', 'id'], 'leads pk');
SELECT col_is_pk('voxanne', 'calls', ARRAY['org_id', 'id'], 'calls pk');
SELECT col_is_pk('voxanne', 'call_transcripts', ARRAY['org_id', 'call_id', 'content_hash'], 'transcripts keyed by call and content hash');
SELECT col_is_pk('voxanne', 'processed_webhook_events', ARRAY['org_id', 'event_id'], 'ledger pk (seed #12)');
SELECT col_is_pk('voxanne', 'outbox', ARRAY['org_id', 'id'], 'outbox pk');
SELECT col_is_unique('voxanne', 'calls', ARRAY['org_id', 'vapi_call_id'], 'one row per call per org');
SELECT col_is_unique('voxanne', 'leads', ARRAY['org_id', 'phone'], 'one lead per phone per org');
SELECT col_not_null('voxanne', t, 'org_id', t || '.org_id NOT NULL (seed #11)')
FROM unnest(ARRAY['agents', 'directory', 'tenant_keys', 'leads', 'calls', 'call_transcripts', 'call_reports',
    'processed_webhook_events', 'outbox', 'webhook_credentials']) AS t;
SELECT col_is_null('voxanne', 'rejected_events', 'org_id', 'rejected_events.org_id may be NULL: no tenant resolved');
SELECT fk_ok('voxanne', 'calls', ARRAY['org_id', 'agent_id'], 'voxanne', 'agents', ARRAY['org_id', 'id']);
SELECT fk_ok('voxanne', 'call_transcripts', ARRAY['org_id', 'call_id'], 'voxanne', 'calls', ARRAY['org_id', 'id']);
SELECT fk_ok('voxanne', 'call_reports', ARRAY['org_id', 'call_id'], 'voxanne', 'calls', ARRAY['org_id', 'id']);
SELECT col_is_null('voxanne', 'calls', 'agent_id', 'a call routed by no assistant has no agent (0.3.0)');

-- functions and signatures
SELECT has_function('voxanne', 'upsert_agent', ARRAY['uuid', 'text', 'text', 'boolean', 'text']);
SELECT has_function('voxanne', 'create_inbound_call', ARRAY['text', 'text', 'text', 'text', 'text', 'text', 'timestamp with time zone']);
SELECT has_function('voxanne', 'complete_call', ARRAY['text', 'text', 'text', 'timestamp with time zone',
    'timestamp with time zone', 'numeric', 'numeric', 'text', 'text', 'text', 'text']);
SELECT has_function('voxanne', 'record_transcript', ARRAY['text', 'text', 'text', 'text', 'timestamp with time zone', 'text']);
SELECT has_function('voxanne', 'handle_vapi_message', ARRAY['jsonb', 'bytea']);
SELECT has_function('voxanne', 'add_webhook_credential', ARRAY['uuid', 'text', 'text']);
SELECT has_function('voxanne', 'revoke_webhook_credential', ARRAY['uuid', 'uuid']);
SELECT has_function('voxanne', 'webhook_credential_digests', ARRAY[]::text[]);
SELECT has_function('voxanne', 'reply_message_types', ARRAY[]::text[]);
SELECT has_function('voxanne', 'calls_missing_end', ARRAY['interval', 'interval', 'interval', 'integer']);
SELECT has_function('voxanne', 'reconcile_call', ARRAY['uuid', 'jsonb']);
SELECT has_function('voxanne', 'grant_relay_role', ARRAY['regrole']);
SELECT has_function('voxanne', 'record_rejected_event', ARRAY['text', 'text', 'text']);
SELECT has_function('voxanne', 'purge_processed_events', ARRAY['interval']);
SELECT has_function('voxanne', 'purge_outbox', ARRAY['interval']);
SELECT has_function('voxanne', 'outbox_read', ARRAY['text', 'integer']);
SELECT has_function('voxanne', 'outbox_ack', ARRAY['text', 'xid8', 'bigint']);
SELECT has_function('voxanne', 'outbox_drop_consumer', ARRAY['text']);
SELECT has_function('voxanne', 'upsert_phone_number', ARRAY['uuid', 'text', 'text', 'boolean', 'text']);
SELECT has_function('voxanne', 'upsert_squad', ARRAY['uuid', 'text', 'boolean']);
SELECT has_function('voxanne', 'upsert_workflow', ARRAY['uuid', 'text', 'boolean']);
SELECT has_function('voxanne', 'upsert_vapi_org', ARRAY['uuid', 'text', 'boolean']);
SELECT has_function('voxanne', 'tenant_token', ARRAY['uuid']);
SELECT has_function('voxanne', 'rotate_tenant_key', ARRAY['uuid']);
SELECT has_function('voxanne', 'current_org_id', ARRAY[]::text[]);
SELECT is(pg_get_function_result('voxanne.tenant_token'::regproc), 'text', 'a tenant token is text');
SELECT is(pg_get_function_result('voxanne.upsert_phone_number'::regproc), 'void', 'the directory verbs return nothing');
SELECT is(pg_get_function_result('voxanne.create_inbound_call'::regproc), 'jsonb', 'call functions return jsonb');
SELECT is(pg_get_function_result('voxanne.upsert_agent'::regproc), 'uuid', 'upsert_agent returns the agent id');
SELECT is(pg_get_function_result('voxanne.purge_processed_events'::regproc), 'bigint', 'purges return a count');
SELECT is_definer('voxanne', f, f || ' is SECURITY DEFINER')
FROM unnest(ARRAY['upsert_agent', 'create_inbound_call', 'complete_call', 'record_transcript',
    'handle_vapi_message', 'record_rejected_event', 'purge_processed_events', 'purge_outbox',
    'outbox_read', 'outbox_ack', 'outbox_drop_consumer', 'upsert_phone_number', 'upsert_squad',
    'upsert_workflow', 'upsert_vapi_org', 'tenant_token', 'rotate_tenant_key', 'add_webhook_credential',
    'revoke_webhook_credential', 'webhook_credential_digests', 'calls_missing_end', 'reconcile_call']) AS f;

-- privileges: service_role may write, authenticated may only read, anon nothing (that anon and
-- authenticated may EXECUTE nothing but current_org_id(): attacks.rs)
SELECT function_privs_are('voxanne', 'create_inbound_call',
    ARRAY['text', 'text', 'text', 'text', 'text', 'text', 'timestamp with time zone'], 'service_role', ARRAY['EXECUTE']);
SELECT function_privs_are('voxanne', 'handle_vapi_message', ARRAY['jsonb', 'bytea'], 'service_role', ARRAY['EXECUTE']);
SELECT function_privs_are('voxanne', 'add_webhook_credential', ARRAY['uuid', 'text', 'text'], 'service_role', ARRAY['EXECUTE']);
SELECT function_privs_are('voxanne', 'webhook_credential_digests', ARRAY[]::text[], 'voxanne_relay', ARRAY['EXECUTE']);
SELECT function_privs_are('voxanne', 'reply_message_types', ARRAY[]::text[], 'voxanne_relay', ARRAY['EXECUTE']);
SELECT function_privs_are('voxanne', 'reconcile_call', ARRAY['uuid', 'jsonb'], 'voxanne_relay', ARRAY['EXECUTE']);
SELECT table_privs_are('voxanne', 'webhook_credentials', 'authenticated', ARRAY[]::text[]);
SELECT table_privs_are('voxanne', 'calls', 'authenticated', ARRAY['SELECT']);
SELECT table_privs_are('voxanne', 'calls', 'anon', ARRAY[]::text[]);
SELECT table_privs_are('voxanne', 'outbox', 'authenticated', ARRAY['SELECT']);
SELECT table_privs_are('voxanne', 'processed_webhook_events', 'authenticated', ARRAY[]::text[]);
SELECT table_privs_are('voxanne', 'leads', 'service_role', ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE']);
SELECT function_privs_are('voxanne', 'tenant_token', ARRAY['uuid'], 'service_role', ARRAY['EXECUTE']);
SELECT table_privs_are('voxanne', 'tenant_keys', 'service_role', ARRAY[]::text[]);
SELECT table_privs_are('voxanne', 'tenant_keys', 'authenticated', ARRAY[]::text[]);
SELECT table_privs_are('voxanne', 'directory', 'authenticated', ARRAY['SELECT']);
SELECT table_privs_are('voxanne', 'call_reports', 'authenticated', ARRAY['SELECT']);

-- one own-org read policy on each tenant table (RLS enabled, policies scoped and SELECT-only:
-- install_privileges.rs)
SELECT policies_are('voxanne', t, ARRAY[t || '_own_org_read'])
FROM unnest(ARRAY['agents', 'directory', 'leads', 'calls', 'call_transcripts', 'call_reports',
    'processed_webhook_events', 'outbox', 'rejected_events', 'webhook_credentials']) AS t;
SELECT policies_are('voxanne', 'tenant_keys', ARRAY[]::name[], 'tenant_keys: RLS on, no reader');

SELECT * FROM finish();
ROLLBACK;
