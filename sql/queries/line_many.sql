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
-- The call's provisional lines these lines are the same utterance as (src/transcript.rs), in
-- one scan of the provisional index: each is removed, or, sent at the very moment its words
-- began (the same key), confirmed. A key the list gives is never removed, so no row is both.
covered AS (
    SELECT p.content_hash, g.content_hash AS by, g.ended_at
    FROM call
    JOIN voxanne.call_transcripts AS p ON p.org_id = call.org_id AND p.call_id = call.id AND p.provisional
    JOIN given AS g ON p.role = g.role AND p.text = g.text
    WHERE p.content_hash = g.content_hash OR voxanne._heard_during(p.spoken_at, g.spoken_at, g.ended_at)
),
superseded AS (
    DELETE FROM voxanne.call_transcripts AS p
    USING call, covered AS c
    WHERE p.org_id = call.org_id AND p.call_id = call.id AND p.content_hash = c.content_hash
      AND c.content_hash <> ALL ($8::bytea[])
    RETURNING p.content_hash, c.by
),
confirmed AS (
    UPDATE voxanne.call_transcripts AS p SET provisional = false, ended_at = c.ended_at
    FROM call, covered AS c
    WHERE p.org_id = call.org_id AND p.call_id = call.id AND p.content_hash = c.content_hash
      AND c.content_hash = c.by
),
