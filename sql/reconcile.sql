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
