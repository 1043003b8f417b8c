-- A transcript message's line that its artifact does not list, keyed by $6, when Vapi sent it:
-- provisional, and not stored when a listed line of the call is the same utterance
-- (src/transcript.rs; the caller holds the call's line lock). $10 is not used.
line AS (
    INSERT INTO voxanne.call_transcripts AS t
        (org_id, content_hash, call_id, role, transcript_type, spoken_at, text, provisional)
    SELECT call.org_id, $8, call.id, $4, $7, $6, $5, true FROM call
    WHERE NOT EXISTS (
        SELECT FROM voxanne.call_transcripts AS l
        WHERE l.org_id = call.org_id AND l.call_id = call.id AND l.role = $4 AND l.text = $5
          AND voxanne._heard_during($6, l.spoken_at, l.ended_at))
    ON CONFLICT ON CONSTRAINT call_transcripts_pkey DO NOTHING
    RETURNING t.org_id, t.call_id, t.role, t.transcript_type, t.spoken_at, t.text, t.content_hash, t.provisional
),
superseded (content_hash, by) AS (SELECT NULL::bytea, NULL::bytea WHERE false),
