-- Many lines (conversation-update, the report's messages), as parallel arrays in one insert.
line AS (
    INSERT INTO voxanne.call_transcripts AS t
        (org_id, content_hash, call_id, role, transcript_type, spoken_at, text)
    SELECT call.org_id, g.content_hash, call.id, g.role, g.transcript_type, g.spoken_at, g.text
    FROM call, ROWS FROM (pg_catalog.unnest($4::text[]), pg_catalog.unnest($5::text[]),
                          pg_catalog.unnest($6::timestamptz[]), pg_catalog.unnest($7::text[]),
                          pg_catalog.unnest($8::bytea[])) AS g (role, text, spoken_at, transcript_type, content_hash)
    ON CONFLICT ON CONSTRAINT call_transcripts_pkey DO NOTHING
    RETURNING t.org_id, t.call_id, t.role, t.transcript_type, t.spoken_at, t.text, t.content_hash
),
