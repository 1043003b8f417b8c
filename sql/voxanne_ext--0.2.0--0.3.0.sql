-- voxanne_ext 0.2.0 -> 0.3.0: every call shape routes (the directory of phone numbers, squads,
-- workflows and Vapi orgs; signed tenant tokens for transient assistants), calls without an
-- agent, the end-of-call report kept whole, and webhook credentials bound to one org. Every statement here is also in the 0.3.0
-- install script; tests/it/tests/upgrade.rs checks that an upgraded database and a fresh 0.3.0
-- one have the same schema.

\echo Use "ALTER EXTENSION voxanne_ext UPDATE TO '0.3.0'" to load this file. \quit

-- Every Vapi id other than an assistant's that routes a call to an org (0.3.0): phone numbers,
-- squads, workflows and Vapi orgs (a tenant that brings its own Vapi account). An id belongs to
-- exactly one org, active or not, so no org can park a copy of another's id to take it over
-- later. A phone number may name what assistant-request answers for it: an assistant or a
-- squad, or neither (numbers whose assistant the app picks).
CREATE TABLE voxanne.directory (
    org_id            uuid        NOT NULL,
    kind              text        NOT NULL CONSTRAINT directory_kind_known
                                  CHECK (kind IN ('phone_number', 'squad', 'workflow', 'vapi_org')),
    vapi_id           text        NOT NULL,
    vapi_assistant_id text,
    vapi_squad_id     text,
    active            boolean     NOT NULL DEFAULT true,
    created_at        timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at        timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (org_id, kind, vapi_id),
    -- across orgs, as agents' constraints; its index is also the routing lookup
    CONSTRAINT directory_one_org_per_id EXCLUDE USING btree (kind WITH =, vapi_id WITH =),
    CONSTRAINT directory_answer_of_a_phone_number CHECK (
        (vapi_assistant_id IS NULL AND vapi_squad_id IS NULL)
        OR (kind = 'phone_number' AND (vapi_assistant_id IS NULL OR vapi_squad_id IS NULL)))
);

-- The per-org key of the signed tenant tokens (voxanne.tenant_token) that route the calls of
-- transient assistants (0.3.0). Only the extension's functions read it.
CREATE TABLE voxanne.tenant_keys (
    org_id     uuid        PRIMARY KEY,
    key        bytea       NOT NULL CONSTRAINT tenant_keys_256_bits CHECK (pg_catalog.length(key) = 32),
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);

-- Webhook credentials that belong to one org (src/credentials.rs): a tenant's own Vapi account
-- authenticates with a Bearer token that may write that org only. The token itself is never
-- kept, only its SHA-256; a revoked row stays, so the token can never be registered again.
CREATE TABLE voxanne.webhook_credentials (
    org_id     uuid        NOT NULL,
    id         uuid        NOT NULL DEFAULT pg_catalog.gen_random_uuid(),
    digest     bytea       NOT NULL CONSTRAINT webhook_credentials_sha256 CHECK (pg_catalog.length(digest) = 32),
    label      text,
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    revoked_at timestamptz,
    PRIMARY KEY (org_id, id),
    -- across orgs, as agents' constraints; its index is also the relay's lookup
    CONSTRAINT webhook_credentials_one_org_per_token EXCLUDE USING btree (digest WITH =)
);

-- Existing calls keep their agent; a call routed by anything but an assistant has none.
ALTER TABLE voxanne.calls ALTER COLUMN agent_id DROP NOT NULL;

-- A listed line's end, and the provisional lines of transcript messages no list has given yet
-- (src/transcript.rs). Lines stored before 0.3.0 have no end: they replace nothing.
ALTER TABLE voxanne.call_transcripts ADD COLUMN ended_at timestamptz,
    ADD COLUMN provisional boolean NOT NULL DEFAULT false;
CREATE INDEX call_transcripts_provisional_idx ON voxanne.call_transcripts (org_id, call_id) WHERE provisional;
CREATE INDEX call_transcripts_listed_end_idx ON voxanne.call_transcripts (org_id, call_id, ended_at)
    WHERE ended_at IS NOT NULL;
CREATE FUNCTION voxanne._heard_during(p_heard timestamptz, p_spoken_at timestamptz, p_ended_at timestamptz)
RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT p_heard OPERATOR(pg_catalog.>=) p_spoken_at
       AND p_ended_at OPERATOR(pg_catalog.>=) (p_heard OPERATOR(pg_catalog.-) '10 seconds'::pg_catalog.interval)
$$;

-- The end-of-call report as Vapi sent it (0.3.0), whole: its messages, analysis (summary,
-- structuredData, successEvaluation), costs and everything Vapi adds later, so an app can
-- recompute anything. calls holds what the product reads out of it.
CREATE TABLE voxanne.call_reports (
    org_id      uuid        NOT NULL,
    call_id     bigint      NOT NULL,
    report      jsonb       NOT NULL,
    received_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (org_id, call_id),
    CONSTRAINT call_reports_call_fkey FOREIGN KEY (org_id, call_id)
        REFERENCES voxanne.calls (org_id, id) ON DELETE CASCADE
);

SELECT pg_catalog.pg_extension_config_dump('voxanne.directory', '');
SELECT pg_catalog.pg_extension_config_dump('voxanne.tenant_keys', '');
SELECT pg_catalog.pg_extension_config_dump('voxanne.webhook_credentials', '');
SELECT pg_catalog.pg_extension_config_dump('voxanne.call_reports', '');

ALTER TABLE voxanne.directory ENABLE ROW LEVEL SECURITY;
CREATE POLICY directory_own_org_read ON voxanne.directory
    FOR SELECT USING (org_id = (SELECT voxanne.current_org_id()));
ALTER TABLE voxanne.call_reports ENABLE ROW LEVEL SECURITY;
CREATE POLICY call_reports_own_org_read ON voxanne.call_reports
    FOR SELECT USING (org_id = (SELECT voxanne.current_org_id()));
ALTER TABLE voxanne.tenant_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE voxanne.webhook_credentials ENABLE ROW LEVEL SECURITY;
CREATE POLICY webhook_credentials_own_org_read ON voxanne.webhook_credentials
    FOR SELECT USING (org_id = (SELECT voxanne.current_org_id()));

CREATE FUNCTION voxanne.upsert_phone_number(
	"p_org_id" uuid, /* Option < Uuid > */
	"p_vapi_phone_number_id" TEXT, /* Option < & str > */
	"p_vapi_assistant_id" TEXT DEFAULT NULL, /* Option < & str > */
	"p_active" bool DEFAULT true, /* Option < bool > */
	"p_vapi_squad_id" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS VOID /* Result < (), ErrorReport > */
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'upsert_phone_number_wrapper';

CREATE FUNCTION voxanne.upsert_vapi_org(
	"p_org_id" uuid, /* Option < Uuid > */
	"p_vapi_org_id" TEXT, /* Option < & str > */
	"p_active" bool DEFAULT true /* Option < bool > */
) RETURNS VOID /* Result < (), ErrorReport > */
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'upsert_vapi_org_wrapper';

CREATE FUNCTION voxanne.upsert_squad(
	"p_org_id" uuid, /* Option < Uuid > */
	"p_vapi_squad_id" TEXT, /* Option < & str > */
	"p_active" bool DEFAULT true /* Option < bool > */
) RETURNS VOID /* Result < (), ErrorReport > */
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'upsert_squad_wrapper';

CREATE FUNCTION voxanne.upsert_workflow(
	"p_org_id" uuid, /* Option < Uuid > */
	"p_vapi_workflow_id" TEXT, /* Option < & str > */
	"p_active" bool DEFAULT true /* Option < bool > */
) RETURNS VOID /* Result < (), ErrorReport > */
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'upsert_workflow_wrapper';

CREATE FUNCTION voxanne.tenant_token(
	"p_org_id" uuid /* Option < Uuid > */
) RETURNS TEXT /* Result < String, ErrorReport > */
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'tenant_token_wrapper';

CREATE FUNCTION voxanne.rotate_tenant_key(
	"p_org_id" uuid /* Option < Uuid > */
) RETURNS TEXT /* Result < String, ErrorReport > */
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'rotate_tenant_key_wrapper';

-- p_credential (0.3.0): the tenant credential a message came with.
DROP FUNCTION voxanne.handle_vapi_message(jsonb);
CREATE FUNCTION voxanne.handle_vapi_message(
	"p_body" jsonb, /* Option < JsonbArg > */
	"p_credential" bytea DEFAULT NULL /* Option < & [u8] > */
) RETURNS jsonb /* Result < JsonbOut, ErrorReport > */
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'handle_vapi_message_wrapper';

CREATE FUNCTION voxanne.add_webhook_credential(
	"p_org_id" uuid, /* Option < Uuid > */
	"p_token" TEXT, /* Option < & str > */
	"p_label" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS uuid /* Result < Uuid, ErrorReport > */
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'add_webhook_credential_wrapper';

CREATE FUNCTION voxanne.revoke_webhook_credential(
	"p_org_id" uuid, /* Option < Uuid > */
	"p_id" uuid /* Option < Uuid > */
) RETURNS bool /* Result < bool, ErrorReport > */
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'revoke_webhook_credential_wrapper';

CREATE FUNCTION voxanne.webhook_credential_digests() RETURNS SETOF bytea /* Result < SetOfIterator < 'static, Vec < u8 > >, ErrorReport > */
STABLE STRICT SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'webhook_credential_digests_wrapper';

CREATE FUNCTION voxanne.reply_message_types() RETURNS text[] /* Vec < String > */
IMMUTABLE STRICT PARALLEL SAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'reply_message_types_wrapper';

REVOKE ALL ON FUNCTION
    voxanne.upsert_phone_number(uuid, text, text, boolean, text),
    voxanne.upsert_vapi_org(uuid, text, boolean),
    voxanne.upsert_squad(uuid, text, boolean),
    voxanne.upsert_workflow(uuid, text, boolean),
    voxanne.tenant_token(uuid),
    voxanne.rotate_tenant_key(uuid),
    voxanne._heard_during(timestamptz, timestamptz, timestamptz),
    voxanne.handle_vapi_message(jsonb, bytea),
    voxanne.add_webhook_credential(uuid, text, text),
    voxanne.revoke_webhook_credential(uuid, uuid),
    voxanne.webhook_credential_digests(),
    voxanne.reply_message_types()
FROM PUBLIC;

-- Reconciliation: calls whose end never arrived (Vapi sends each webhook once unless its
-- backoffPlan says otherwise, so a report lost on the way is lost for good), and the call as
-- Vapi's API returns it (GET /call/{id}) fed through the same path as the message it stands
-- for. `voxanne-relay reconcile` (relay/README.md, "Reconcile") lists, fetches and feeds.

-- Calls without an end-of-call report: quiet for p_quiet since their last message, or started
-- longer ago than p_longest (a call that went on sending transcripts but whose report never
-- came), created within p_horizon. Oldest first, at most p_limit.
CREATE FUNCTION voxanne.calls_missing_end(
    p_quiet interval DEFAULT '15 minutes',
    p_longest interval DEFAULT '6 hours',
    p_horizon interval DEFAULT '7 days',
    p_limit integer DEFAULT 100
) RETURNS TABLE (org_id uuid, vapi_call_id text, status text, updated_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c.org_id, c.vapi_call_id, c.status, c.updated_at
    FROM voxanne.calls AS c
    WHERE c.created_at > pg_catalog.now() - p_horizon
      AND (c.updated_at < pg_catalog.now() - p_quiet OR c.created_at < pg_catalog.now() - p_longest)
      AND NOT EXISTS (SELECT FROM voxanne.call_reports AS r WHERE r.org_id = c.org_id AND r.call_id = c.id)
    ORDER BY c.updated_at, c.org_id, c.vapi_call_id
    LIMIT p_limit
$$;

-- Applies Vapi's Call object (its API's GET /call/{id}) for a call of org p_org_id: an ended
-- call as the end-of-call report its fields make (endedReason, startedAt, endedAt, cost,
-- costs, analysis, artifact: the report's own fields, under the same names), any other as the
-- status update of its status. The message goes through handle_vapi_message, so the org is
-- derived as for any message, the same report delivered later is a duplicate (its event is the
-- call's report), and reconciling twice changes nothing. A call that resolves to another org
-- than the one listed is refused (42501) and nothing is written.
CREATE FUNCTION voxanne.reconcile_call(p_org_id uuid, p_call jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    message jsonb;
    answer  jsonb;
BEGIN
    IF p_org_id IS NULL THEN
        RAISE EXCEPTION 'p_org_id is required' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF p_call IS NULL OR pg_catalog.jsonb_typeof(p_call) <> 'object' THEN
        RAISE EXCEPTION 'p_call must be a Vapi Call object, not %', coalesce(pg_catalog.jsonb_typeof(p_call), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_call->>'status' = 'ended' THEN
        message := pg_catalog.jsonb_build_object('type', 'end-of-call-report', 'call', p_call)
            || pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
                   'endedReason', p_call->'endedReason', 'startedAt', p_call->'startedAt',
                   'endedAt', p_call->'endedAt', 'cost', p_call->'cost', 'costs', p_call->'costs',
                   'analysis', p_call->'analysis', 'artifact', p_call->'artifact'));
    ELSE
        message := pg_catalog.jsonb_build_object('type', 'status-update', 'status', p_call->'status', 'call', p_call);
    END IF;
    answer := voxanne.handle_vapi_message(pg_catalog.jsonb_build_object('message', message));
    IF answer ? 'org_id' AND answer->>'org_id' IS DISTINCT FROM p_org_id::text THEN
        RAISE EXCEPTION 'call % resolves to another org than %', p_call->>'id', p_org_id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN answer;
END
$$;
REVOKE ALL ON FUNCTION voxanne.calls_missing_end(interval, interval, interval, integer),
    voxanne.reconcile_call(uuid, jsonb) FROM PUBLIC;
REVOKE ALL ON voxanne.directory, voxanne.tenant_keys, voxanne.call_reports, voxanne.webhook_credentials FROM PUBLIC;

CREATE OR REPLACE FUNCTION voxanne.grant_api_roles() RETURNS void
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

-- The dead letter keeps one row per distinct body (sql/schema.sql): rows of the same body merge
-- into the oldest, counted, with the latest refusal.
ALTER TABLE voxanne.rejected_events
    ADD COLUMN body_sha256 bytea,
    ADD COLUMN times_seen integer NOT NULL DEFAULT 1,
    ADD COLUMN last_seen_at timestamptz NOT NULL DEFAULT pg_catalog.now();
UPDATE voxanne.rejected_events
SET body_sha256 = pg_catalog.sha256(pg_catalog.convert_to(body, 'UTF8')), last_seen_at = received_at;
WITH seen AS (
    SELECT body_sha256, pg_catalog.min(id) AS keep, pg_catalog.count(*) AS n, pg_catalog.max(id) AS latest,
           pg_catalog.max(received_at) AS last_seen
    FROM voxanne.rejected_events GROUP BY body_sha256 HAVING pg_catalog.count(*) > 1
), merged AS (
    UPDATE voxanne.rejected_events AS r
    SET times_seen = s.n, last_seen_at = s.last_seen, sqlstate = l.sqlstate, message = l.message
    FROM seen AS s JOIN voxanne.rejected_events AS l ON l.id = s.latest
    WHERE r.id = s.keep
)
DELETE FROM voxanne.rejected_events AS r USING seen AS s
WHERE r.body_sha256 = s.body_sha256 AND r.id <> s.keep;
ALTER TABLE voxanne.rejected_events
    ALTER COLUMN body_sha256 SET NOT NULL,
    ADD CONSTRAINT rejected_events_body_key UNIQUE (body_sha256);
