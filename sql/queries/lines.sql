-- A call's transcript lines, one (a transcript message) or many (conversation-update, the
-- report's messages), as parallel arrays. Each line's content-hash key is its idempotency mark;
-- the call row is created if this is the first message of the call (seed #7: never dropped).
-- $3 vapi call id, $4 roles, $5 texts, $6 spoken at, $7 transcript types, $8 content hashes,
-- $9 notify (voxanne.notify).
found AS (
    SELECT c.org_id, c.id
    FROM voxanne.calls AS c JOIN agent ON c.org_id = agent.org_id
    WHERE c.vapi_call_id = $3
),
-- Only lines of a call not seen yet try the insert (almost every line finds its call: no
-- speculative insert, no CHECKs of calls to evaluate). ON CONFLICT still settles the race
-- with a concurrent first message of the same call.
created AS (
    INSERT INTO voxanne.calls AS c (org_id, vapi_call_id, agent_id)
    SELECT agent.org_id, $3, agent.id FROM agent WHERE NOT EXISTS (SELECT FROM found)
    ON CONFLICT (org_id, vapi_call_id) DO NOTHING
    RETURNING c.org_id, c.id
),
-- Exactly one row, unless the call was committed by another session after this statement's
-- snapshot: then none, nothing is written, and the caller runs the statement again.
call AS (
    SELECT found.org_id, found.id FROM found
    UNION ALL
    SELECT created.org_id, created.id FROM created
),
line AS (
    INSERT INTO voxanne.call_transcripts AS t
        (org_id, content_hash, call_id, role, transcript_type, spoken_at, text)
    SELECT call.org_id, g.content_hash, call.id, g.role, g.transcript_type, g.spoken_at, g.text
    FROM call, ROWS FROM (pg_catalog.unnest($4::text[]), pg_catalog.unnest($5::text[]),
                          pg_catalog.unnest($6::timestamptz[]), pg_catalog.unnest($7::text[]),
                          pg_catalog.unnest($8::bytea[])) AS g (role, text, spoken_at, transcript_type, content_hash)
    -- by name: the key is (org_id, content_hash) in 0.1.0 and (org_id, call_id, content_hash)
    -- from 0.2.0, and a 0.1.0 database runs this library until ALTER EXTENSION ... UPDATE
    ON CONFLICT ON CONSTRAINT call_transcripts_pkey DO NOTHING
    RETURNING t.org_id, t.call_id, t.role, t.transcript_type, t.spoken_at, t.text, t.content_hash
),
outbox AS (
    INSERT INTO voxanne.outbox AS o (org_id, topic, payload)
    SELECT line.org_id, 'call.transcript',
           pg_catalog.jsonb_build_object('call_id', line.call_id, 'vapi_call_id', $3,
               'role', line.role, 'transcript_type', line.transcript_type, 'spoken_at', line.spoken_at,
               'text', line.text, 'content_hash', pg_catalog.encode(line.content_hash, 'hex'))
    FROM line
    RETURNING o.id, CASE WHEN $9 THEN pg_catalog.pg_notify('voxanne_outbox', pg_catalog.json_build_object(
        'org_id', o.org_id, 'id', o.id, 'topic', o.topic)::text) IS NOT NULL END AS notified
)
SELECT agent.org_id, (SELECT call.id FROM call) AS call_id, (SELECT pg_catalog.count(*) FROM outbox) AS stored
FROM agent
