-- A rejected webhook, kept raw with the org the routing rule finds for it, if any.
-- $3 body, $4 sqlstate, $5 message, $6 message type, $7 vapi call id.
inserted AS (
    INSERT INTO voxanne.rejected_events (org_id, body, sqlstate, message, message_type, vapi_call_id)
    VALUES ((SELECT agent.org_id FROM agent), $3, $4, $5, $6, $7)
    RETURNING id
)
SELECT id FROM inserted
