-- One line (a transcript message, record_transcript): its values as they are, so the most
-- common line costs no array.
line AS (
    INSERT INTO voxanne.call_transcripts AS t
        (org_id, content_hash, call_id, role, transcript_type, spoken_at, text)
    SELECT call.org_id, $8, call.id, $4, $7, $6, $5 FROM call
    -- by name: the key is (org_id, content_hash) in 0.1.0 and (org_id, call_id, content_hash)
    -- from 0.2.0, and a 0.1.0 database runs this library until ALTER EXTENSION ... UPDATE
    ON CONFLICT ON CONSTRAINT call_transcripts_pkey DO NOTHING
    RETURNING t.org_id, t.call_id, t.role, t.transcript_type, t.spoken_at, t.text, t.content_hash
),
