-- record_transcript's line: the caller's moment, a line of its own (it neither replaces nor is
-- replaced, src/transcript.rs). Only 0.1.0's columns, so the SQL function keeps working on a
-- database whose schema is not updated yet (docs/OPERATIONS.md "Upgrades").
line AS (
    INSERT INTO voxanne.call_transcripts AS t
        (org_id, content_hash, call_id, role, transcript_type, spoken_at, text)
    SELECT call.org_id, $8, call.id, $4, $7, $6, $5 FROM call
    -- by name: the key is (org_id, content_hash) in 0.1.0 and (org_id, call_id, content_hash)
    -- from 0.2.0, and a 0.1.0 database runs this library until ALTER EXTENSION ... UPDATE
    ON CONFLICT ON CONSTRAINT call_transcripts_pkey DO NOTHING
    RETURNING t.org_id, t.call_id, t.role, t.transcript_type, t.spoken_at, t.text, t.content_hash,
              false AS provisional
),
superseded (content_hash, by) AS (SELECT NULL::bytea, NULL::bytea WHERE false),
