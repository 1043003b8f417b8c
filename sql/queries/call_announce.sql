-- The outbox row of a call message that advanced its call ($6 topic, $7 voxanne.notify), in
-- the same statement as its mark and its effect (seed #8), and the answer's row. `call` returns
-- org_id, id, status, advanced and payload.
outbox AS (
    INSERT INTO voxanne.outbox AS o (org_id, topic, payload)
    SELECT call.org_id, $6, call.payload FROM call WHERE call.advanced
    RETURNING o.id, CASE WHEN $7 THEN pg_catalog.pg_notify('voxanne_outbox', pg_catalog.json_build_object(
        'org_id', o.org_id, 'id', o.id, 'topic', o.topic)::text) IS NOT NULL END AS notified
)
SELECT agent.org_id, mark.org_id IS NOT NULL AS marked, call.id AS call_id, call.status,
       outbox.id AS outbox_id
FROM agent
LEFT JOIN mark ON true
LEFT JOIN call ON true
LEFT JOIN outbox ON true
