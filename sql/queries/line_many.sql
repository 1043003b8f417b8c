-- Many lines (conversation-update, the report's messages), as parallel arrays in one insert.
given AS (
    SELECT g.* FROM ROWS FROM (pg_catalog.unnest($4::text[]), pg_catalog.unnest($5::text[]),
        pg_catalog.unnest($6::timestamptz[]), pg_catalog.unnest($7::text[]), pg_catalog.unnest($8::bytea[]),
        pg_catalog.unnest($10::timestamptz[])) AS g (role, text, spoken_at, transcript_type, content_hash, ended_at)
),
line AS (
    INSERT INTO voxanne.call_transcripts AS t
        (org_id, content_hash, call_id, role, transcript_type, spoken_at, text, ended_at)
    SELECT call.org_id, g.content_hash, call.id, g.role, g.transcript_type, g.spoken_at, g.text, g.ended_at
    FROM call, given AS g
    ON CONFLICT ON CONSTRAINT call_transcripts_pkey DO NOTHING
    RETURNING t.org_id, t.call_id, t.role, t.transcript_type, t.spoken_at, t.text, t.content_hash, t.provisional
),
-- Each listed line removes the provisional line of the same utterance (src/transcript.rs), or,
-- when that was sent at the very moment the words began (the same key), confirms it.
superseded AS (
    DELETE FROM voxanne.call_transcripts AS p
    USING call, given AS g
    WHERE p.org_id = call.org_id AND p.call_id = call.id AND p.provisional AND p.content_hash <> ALL ($8::bytea[])
      AND p.role = g.role AND p.text = g.text AND voxanne._heard_during(p.spoken_at, g.spoken_at, g.ended_at)
    RETURNING p.content_hash, g.content_hash AS by
),
confirmed AS (
    UPDATE voxanne.call_transcripts AS p SET provisional = false, ended_at = g.ended_at
    FROM call, given AS g
    WHERE p.org_id = call.org_id AND p.call_id = call.id AND p.provisional AND p.content_hash = g.content_hash
),
