-- The idempotency mark of a call message ($3 vapi call id, $4 event id, $5 event type): the
-- effect that follows joins it, so a message seen before writes nothing (seed #2, #3, #4).
mark AS (
    INSERT INTO voxanne.processed_webhook_events AS e (org_id, event_id, event_type)
    SELECT agent.org_id, $4, $5 FROM agent
    ON CONFLICT (org_id, event_id) DO NOTHING
    RETURNING e.org_id
),
