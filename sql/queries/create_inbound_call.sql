-- A status message before the end, as ONE statement: the ledger mark, the call upsert, the
-- outbox row and the NOTIFY commit together or not at all (seed #2, #3, #4, #8).
-- $1 assistant id, $2 vapi call id, $3 customer number, $4 phone number id, $5 call type,
-- $6 status, $7 occurred at, $8 event id, $9 notify (voxanne.notify).
WITH agent AS (
    SELECT a.org_id, a.id
    FROM voxanne.agents AS a
    WHERE a.vapi_assistant_id = $1 AND a.active
),
mark AS (
    INSERT INTO voxanne.processed_webhook_events AS e (org_id, event_id, event_type)
    SELECT agent.org_id, $8, 'status-update' FROM agent
    ON CONFLICT (org_id, event_id) DO NOTHING
    RETURNING e.org_id
),
call AS (
    INSERT INTO voxanne.calls AS c
        (org_id, vapi_call_id, agent_id, lead_id, call_type, customer_number, phone_number_id,
         status, status_event_id, started_at)
    SELECT agent.org_id, $2, agent.id,
           (SELECT l.id FROM voxanne.leads AS l WHERE l.org_id = agent.org_id AND l.phone = $3),
           $5, $3, $4, $6, $8,
           CASE WHEN $6 = 'in-progress' THEN $7 END
    FROM agent JOIN mark ON mark.org_id = agent.org_id
    ON CONFLICT (org_id, vapi_call_id) DO UPDATE SET
        -- status only moves forward; the rest fills gaps (a report's values win, see complete_call)
        status = CASE WHEN voxanne._status_rank(EXCLUDED.status) > voxanne._status_rank(c.status)
                      THEN EXCLUDED.status ELSE c.status END,
        status_event_id = CASE WHEN voxanne._status_rank(EXCLUDED.status) > voxanne._status_rank(c.status)
                               THEN EXCLUDED.status_event_id ELSE c.status_event_id END,
        lead_id = COALESCE(c.lead_id, EXCLUDED.lead_id),
        call_type = COALESCE(c.call_type, EXCLUDED.call_type),
        customer_number = COALESCE(c.customer_number, EXCLUDED.customer_number),
        phone_number_id = COALESCE(c.phone_number_id, EXCLUDED.phone_number_id),
        started_at = COALESCE(c.started_at, EXCLUDED.started_at),
        updated_at = pg_catalog.now()
    RETURNING c.org_id, c.id, c.status, c.status_event_id = $8 AS advanced
),
outbox AS (
    INSERT INTO voxanne.outbox AS o (org_id, topic, payload)
    SELECT call.org_id, 'call.status',
           pg_catalog.jsonb_build_object('call_id', call.id, 'vapi_call_id', $2,
                                         'status', call.status, 'occurred_at', $7)
    FROM call WHERE call.advanced
    RETURNING o.id, CASE WHEN $9 THEN pg_catalog.pg_notify('voxanne_outbox', pg_catalog.json_build_object(
        'org_id', o.org_id, 'id', o.id, 'topic', o.topic)::text) IS NOT NULL END AS notified
)
SELECT agent.org_id, mark.org_id IS NOT NULL AS marked, call.id AS call_id, call.status,
       outbox.id AS outbox_id
FROM agent
LEFT JOIN mark ON true
LEFT JOIN call ON true
LEFT JOIN outbox ON true
