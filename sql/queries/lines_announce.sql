-- The outbox row of each new line, and the answer's row: the org, the call, how many were new.
-- A provisional line says so; a listed line names the provisional lines it removed.
outbox AS (
    INSERT INTO voxanne.outbox AS o (org_id, topic, payload)
    SELECT line.org_id, 'call.transcript',
           pg_catalog.jsonb_build_object('call_id', line.call_id, 'vapi_call_id', $3,
               'role', line.role, 'transcript_type', line.transcript_type, 'spoken_at', line.spoken_at,
               'text', line.text, 'content_hash', pg_catalog.encode(line.content_hash, 'hex'),
               'provisional', line.provisional)
           || COALESCE((SELECT pg_catalog.jsonb_build_object('replaces',
                               pg_catalog.jsonb_agg(pg_catalog.encode(s.content_hash, 'hex')))
                        FROM superseded AS s WHERE s.by = line.content_hash HAVING pg_catalog.count(*) > 0), '{}')
    FROM line
    RETURNING o.id, CASE WHEN $9 THEN pg_catalog.pg_notify('voxanne_outbox', pg_catalog.json_build_object(
        'org_id', o.org_id, 'id', o.id, 'topic', o.topic)::text) IS NOT NULL END AS notified
)
SELECT agent.org_id, (SELECT call.id FROM call) AS call_id, (SELECT pg_catalog.count(*) FROM outbox) AS stored
FROM agent
