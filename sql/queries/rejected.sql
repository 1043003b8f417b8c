-- A rejected webhook, kept raw with the org the routing rule finds for it, if any; a body
-- refused before is counted on its row, which takes the latest refusal.
-- $1 org id (NULL: none), $2 body, $3 sqlstate, $4 message, $5 message type, $6 vapi call id.
INSERT INTO voxanne.rejected_events AS r (org_id, body, sqlstate, message, message_type, vapi_call_id, body_sha256)
VALUES ($1, $2, $3, $4, $5, $6, pg_catalog.sha256(pg_catalog.convert_to($2, 'UTF8')))
ON CONFLICT (body_sha256) DO UPDATE
SET times_seen = r.times_seen + 1, last_seen_at = pg_catalog.now(), org_id = EXCLUDED.org_id,
    sqlstate = EXCLUDED.sqlstate, message = EXCLUDED.message
RETURNING id
