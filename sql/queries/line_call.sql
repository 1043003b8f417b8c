-- The call of transcript lines: found, or created if this is its first message (seed #7:
-- never dropped). Followed by line_given.sql, line_listed.sql, line_many.sql or line_sent.sql
-- (src/transcript.rs), then lines_announce.sql. Each line's content-hash key is its
-- idempotency mark. $3 vapi call id, $4 role(s), $5 text(s), $6 spoken at, $7 transcript
-- type(s), $8 content hash(es), $9 notify (voxanne.notify), $10 ended at (a listed line's end;
-- NULL otherwise).
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
