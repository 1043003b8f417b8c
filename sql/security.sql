-- Row level security and privileges. Runs last, after every function exists.

-- RLS on every tenant table. Functions are SECURITY DEFINER (owned by the installing superuser)
-- and filter by org_id themselves; these policies govern direct reads by API users: an
-- `authenticated` JWT sees only its own org (voxanne.current_org_id()). The sub-select makes
-- the claim lookup run once per statement, not once per row.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['agents', 'directory', 'leads', 'calls', 'call_transcripts', 'call_reports',
                             'processed_webhook_events', 'outbox', 'rejected_events', 'webhook_credentials'] LOOP
        EXECUTE pg_catalog.format('ALTER TABLE voxanne.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE pg_catalog.format(
            'CREATE POLICY %I ON voxanne.%I FOR SELECT USING (org_id = (SELECT voxanne.current_org_id()))',
            t || '_own_org_read', t);
    END LOOP;
END
$$;

-- Consumer cursors are service-side state: RLS on, no policy, so no API user sees them. Tenant
-- keys likewise, and no role but the owner is ever granted them (grant_api_roles).
ALTER TABLE voxanne.outbox_consumers ENABLE ROW LEVEL SECURITY;
ALTER TABLE voxanne.tenant_keys ENABLE ROW LEVEL SECURITY;

-- Nothing is callable by default; grant_api_roles() hands out exactly what each role needs.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA voxanne FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA voxanne FROM PUBLIC;
REVOKE ALL ON SCHEMA voxanne FROM PUBLIC;

-- Grants for the Supabase API roles (service_role, authenticated, anon). Called at install
-- time; call it again after creating those roles on a plain Postgres installed earlier.
CREATE FUNCTION voxanne.grant_api_roles() RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'service_role') THEN
        GRANT USAGE ON SCHEMA voxanne TO service_role;
        GRANT SELECT ON ALL TABLES IN SCHEMA voxanne TO service_role;
        -- a key would let its holder mint tokens without tenant_token's audit trail
        REVOKE SELECT ON voxanne.tenant_keys FROM service_role;
        GRANT INSERT, UPDATE, DELETE ON voxanne.leads TO service_role;
        GRANT EXECUTE ON FUNCTION
            voxanne.upsert_agent(uuid, text, text, boolean, text),
            voxanne.upsert_phone_number(uuid, text, text, boolean, text),
            voxanne.upsert_vapi_org(uuid, text, boolean),
            voxanne.upsert_squad(uuid, text, boolean),
            voxanne.upsert_workflow(uuid, text, boolean),
            voxanne.tenant_token(uuid),
            voxanne.rotate_tenant_key(uuid),
            voxanne.add_webhook_credential(uuid, text, text),
            voxanne.revoke_webhook_credential(uuid, uuid),
            voxanne.create_inbound_call(text, text, text, text, text, text, timestamptz),
            voxanne.complete_call(text, text, text, timestamptz, timestamptz, numeric, numeric,
                                  text, text, text, text),
            voxanne.record_transcript(text, text, text, text, timestamptz, text),
            voxanne.purge_processed_events(interval),
            voxanne.handle_vapi_message(jsonb, bytea),
            voxanne.record_rejected_event(text, text, text),
            voxanne.outbox_read(text, integer),
            voxanne.outbox_ack(text, xid8, bigint),
            voxanne.outbox_drop_consumer(text),
            voxanne.purge_outbox(interval),
            voxanne.current_org_id()
        TO service_role;
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'authenticated') THEN
        -- Read-only, and RLS narrows every read to the caller's org.
        GRANT USAGE ON SCHEMA voxanne TO authenticated;
        GRANT SELECT ON voxanne.agents, voxanne.directory, voxanne.leads, voxanne.calls,
                        voxanne.call_transcripts, voxanne.call_reports, voxanne.outbox TO authenticated;
        GRANT EXECUTE ON FUNCTION voxanne.current_org_id() TO authenticated;
    END IF;
    -- anon gets nothing at all.
END
$$;
REVOKE ALL ON FUNCTION voxanne.grant_api_roles() FROM PUBLIC;

SELECT voxanne.grant_api_roles();

-- The relay's role (any name): exactly the functions the relay calls, nothing else, and a role
-- that could become one bypassing RLS is refused. They are SECURITY DEFINER, so no table grant
-- is needed. For the extension's owner to call, once per database.
CREATE FUNCTION voxanne.grant_relay_role(p_role regrole) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    wider name;
BEGIN
    SELECT r.rolname INTO wider FROM pg_catalog.pg_roles AS r
    WHERE (r.rolsuper OR r.rolbypassrls) AND pg_catalog.pg_has_role(p_role, r.oid, 'MEMBER')
    LIMIT 1;
    IF wider IS NOT NULL THEN
        RAISE EXCEPTION 'role % can act as %, which bypasses row level security', p_role, wider
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'create the relay''s role LOGIN NOINHERIT, member of no other role';
    END IF;
    EXECUTE pg_catalog.format('GRANT USAGE ON SCHEMA voxanne TO %s', p_role);
    EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION voxanne.handle_vapi_message(jsonb, bytea),
        voxanne.record_rejected_event(text, text, text), voxanne.webhook_credential_digests(),
        voxanne.reply_message_types(), voxanne.calls_missing_end(interval, interval, interval, integer),
        voxanne.reconcile_call(uuid, jsonb) TO %s', p_role);
END
$$;
REVOKE ALL ON FUNCTION voxanne.grant_relay_role(regrole) FROM PUBLIC;
