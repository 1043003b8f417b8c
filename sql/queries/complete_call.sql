-- The end of a call (end-of-call report, or status `ended`) as ONE statement.
-- Merge rule: a report's values overwrite, a status `ended` only fills gaps, so either arrival
-- order gives the same row.
-- $1 assistant id, $2 vapi call id, $3 ended reason, $4 started at, $5 ended at, $6 duration,
-- $7 cost, $8 summary, $9 transcript, $10 recording url, $11 is report, $12 event id,
-- $13 event type, $14 outbox topic, $15 notify (voxanne.notify).
WITH agent AS (
    SELECT a.org_id, a.id
    FROM voxanne.agents AS a
    WHERE a.vapi_assistant_id = $1 AND a.active
),
mark AS (
    INSERT INTO voxanne.processed_webhook_events AS e (org_id, event_id, event_type)
    SELECT agent.org_id, $12, $13 FROM agent
    ON CONFLICT (org_id, event_id) DO NOTHING
    RETURNING e.org_id
),
call AS (
    INSERT INTO voxanne.calls AS c
        (org_id, vapi_call_id, agent_id, status, status_event_id, ended_reason, started_at,
         ended_at, duration_seconds, cost, summary, transcript, recording_url)
    SELECT agent.org_id, $2, agent.id, 'ended', $12, $3, $4, $5, $6, $7, $8, $9, $10
    FROM agent JOIN mark ON mark.org_id = agent.org_id
    ON CONFLICT (org_id, vapi_call_id) DO UPDATE SET
        status = 'ended',
        -- the report owns an ended call's status event whichever came first, so the final
        -- row does not depend on arrival order; a status `ended` after it is stale
        status_event_id = CASE WHEN c.status IS DISTINCT FROM 'ended' OR $11
                               THEN EXCLUDED.status_event_id ELSE c.status_event_id END,
        ended_reason = CASE WHEN $11 THEN COALESCE(EXCLUDED.ended_reason, c.ended_reason)
                            ELSE COALESCE(c.ended_reason, EXCLUDED.ended_reason) END,
        started_at = CASE WHEN $11 THEN COALESCE(EXCLUDED.started_at, c.started_at)
                          ELSE COALESCE(c.started_at, EXCLUDED.started_at) END,
        ended_at = CASE WHEN $11 THEN COALESCE(EXCLUDED.ended_at, c.ended_at)
                        ELSE COALESCE(c.ended_at, EXCLUDED.ended_at) END,
        duration_seconds = CASE WHEN $11 THEN COALESCE(EXCLUDED.duration_seconds, c.duration_seconds)
                                ELSE COALESCE(c.duration_seconds, EXCLUDED.duration_seconds) END,
        cost = CASE WHEN $11 THEN COALESCE(EXCLUDED.cost, c.cost)
                    ELSE COALESCE(c.cost, EXCLUDED.cost) END,
        summary = CASE WHEN $11 THEN COALESCE(EXCLUDED.summary, c.summary)
                       ELSE COALESCE(c.summary, EXCLUDED.summary) END,
        transcript = CASE WHEN $11 THEN COALESCE(EXCLUDED.transcript, c.transcript)
                          ELSE COALESCE(c.transcript, EXCLUDED.transcript) END,
        recording_url = CASE WHEN $11 THEN COALESCE(EXCLUDED.recording_url, c.recording_url)
                             ELSE COALESCE(c.recording_url, EXCLUDED.recording_url) END,
        updated_at = pg_catalog.now()
    RETURNING c.org_id, c.id, c.status, c.ended_reason, c.started_at, c.ended_at,
              c.duration_seconds, c.cost, c.status_event_id = $12 AS advanced
),
outbox AS (
    INSERT INTO voxanne.outbox AS o (org_id, topic, payload)
    SELECT call.org_id, $14,
           pg_catalog.jsonb_build_object('call_id', call.id, 'vapi_call_id', $2,
               'status', call.status, 'ended_reason', call.ended_reason,
               'started_at', call.started_at, 'ended_at', call.ended_at,
               'duration_seconds', call.duration_seconds, 'cost', call.cost, 'source', $13)
    FROM call WHERE $11 OR call.advanced
    RETURNING o.id, CASE WHEN $15 THEN pg_catalog.pg_notify('voxanne_outbox', pg_catalog.json_build_object(
        'org_id', o.org_id, 'id', o.id, 'topic', o.topic)::text) IS NOT NULL END AS notified
)
SELECT agent.org_id, mark.org_id IS NOT NULL AS marked, call.id AS call_id, call.status,
       outbox.id AS outbox_id
FROM agent
LEFT JOIN mark ON true
LEFT JOIN call ON true
LEFT JOIN outbox ON true
