-- A status message before the end: creates the call or moves it forward. The status only
-- moves forward; the other values fill gaps (a report's values win, see end_by_report.sql).
-- $8 customer number, $9 phone number id, $10 call type (NULL: 'inboundPhoneCall'), $11 status,
-- $12 occurred at (NULL: now(), the transaction's start).
call AS (
    INSERT INTO voxanne.calls AS c
        (org_id, vapi_call_id, agent_id, lead_id, call_type, customer_number, phone_number_id,
         status, status_event_id, started_at)
    SELECT agent.org_id, $3, agent.id,
           (SELECT l.id FROM voxanne.leads AS l WHERE l.org_id = agent.org_id AND l.phone = $8),
           COALESCE($10, 'inboundPhoneCall'), $8, $9, $11, $4,
           CASE WHEN $11 = 'in-progress' THEN COALESCE($12, pg_catalog.now()) END
    FROM agent JOIN mark ON mark.org_id = agent.org_id
    ON CONFLICT (org_id, vapi_call_id) DO UPDATE SET
        status = CASE WHEN voxanne._status_rank(EXCLUDED.status) > voxanne._status_rank(c.status)
                      THEN EXCLUDED.status ELSE c.status END,
        status_event_id = CASE WHEN voxanne._status_rank(EXCLUDED.status) > voxanne._status_rank(c.status)
                               THEN EXCLUDED.status_event_id ELSE c.status_event_id END,
        agent_id = COALESCE(c.agent_id, EXCLUDED.agent_id),
        lead_id = COALESCE(c.lead_id, EXCLUDED.lead_id),
        call_type = COALESCE(c.call_type, EXCLUDED.call_type),
        customer_number = COALESCE(c.customer_number, EXCLUDED.customer_number),
        phone_number_id = COALESCE(c.phone_number_id, EXCLUDED.phone_number_id),
        started_at = COALESCE(c.started_at, EXCLUDED.started_at),
        updated_at = pg_catalog.now()
    RETURNING c.org_id, c.id, c.status, c.status_event_id = $4 AS advanced,
              pg_catalog.jsonb_build_object('call_id', c.id, 'vapi_call_id', $3, 'status', c.status,
                                            'occurred_at', COALESCE($12, pg_catalog.now())) AS payload
),
