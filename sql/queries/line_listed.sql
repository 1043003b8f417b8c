-- One listed line (a transcript message its artifact lists, a list of one): its values as they
-- are, so the most common line costs no array.
line AS (
    INSERT INTO voxanne.call_transcripts AS t
        (org_id, content_hash, call_id, role, transcript_type, spoken_at, text, ended_at)
    SELECT call.org_id, $8, call.id, $4, $7, $6, $5, $10 FROM call
    ON CONFLICT ON CONSTRAINT call_transcripts_pkey DO NOTHING
    RETURNING t.org_id, t.call_id, t.role, t.transcript_type, t.spoken_at, t.text, t.content_hash, t.provisional
),
-- The call's provisional lines this line is the same utterance as (src/transcript.rs), in one
-- scan of the provisional index: each is removed, or, sent at the very moment the words began
-- (the same key), confirmed.
covered AS (
    SELECT p.content_hash
    FROM call
    JOIN voxanne.call_transcripts AS p ON p.org_id = call.org_id AND p.call_id = call.id AND p.provisional
    WHERE p.role = $4 AND p.text = $5
      AND (p.content_hash = $8 OR voxanne._heard_during(p.spoken_at, $6, $10))
),
superseded AS (
    DELETE FROM voxanne.call_transcripts AS p
    USING call, covered AS c
    WHERE p.org_id = call.org_id AND p.call_id = call.id AND p.content_hash = c.content_hash
      AND c.content_hash <> $8
    RETURNING p.content_hash, $8::bytea AS by
),
confirmed AS (
    UPDATE voxanne.call_transcripts AS p SET provisional = false, ended_at = $10
    FROM call, covered AS c
    WHERE p.org_id = call.org_id AND p.call_id = call.id AND p.content_hash = c.content_hash
      AND c.content_hash = $8
),
