-- A rejected webhook, kept raw with the org the routing rule finds for it, if any.
-- $1 org id (NULL: none), $2 body, $3 sqlstate, $4 message, $5 message type, $6 vapi call id.
INSERT INTO voxanne.rejected_events (org_id, body, sqlstate, message, message_type, vapi_call_id)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING id
