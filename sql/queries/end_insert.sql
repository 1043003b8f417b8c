-- The end of a call: the call row as the message knows it, merged into an existing row by the
-- rule that follows (end_by_report.sql or end_by_status.sql). $8 ended reason, $9 started at,
-- $10 ended at, $11 duration, $12 cost, $13 summary, $14 transcript, $15 recording url.
call AS (
    INSERT INTO voxanne.calls AS c
        (org_id, vapi_call_id, agent_id, status, status_event_id, ended_reason, started_at,
         ended_at, duration_seconds, cost, summary, transcript, recording_url)
    SELECT agent.org_id, $3, agent.id, 'ended', $4, $8, $9, $10, $11, $12, $13, $14, $15
    FROM agent JOIN mark ON mark.org_id = agent.org_id
    ON CONFLICT (org_id, vapi_call_id) DO UPDATE SET
        status = 'ended',
        agent_id = COALESCE(c.agent_id, EXCLUDED.agent_id),
        updated_at = pg_catalog.now(),
