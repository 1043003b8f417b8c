        -- A status `ended` only fills gaps, and advances the call only if it was not ended yet.
        status_event_id = CASE WHEN c.status IS DISTINCT FROM 'ended'
                               THEN EXCLUDED.status_event_id ELSE c.status_event_id END,
        ended_reason = COALESCE(c.ended_reason, EXCLUDED.ended_reason),
        started_at = COALESCE(c.started_at, EXCLUDED.started_at),
        ended_at = COALESCE(c.ended_at, EXCLUDED.ended_at),
        duration_seconds = COALESCE(c.duration_seconds, EXCLUDED.duration_seconds),
        cost = COALESCE(c.cost, EXCLUDED.cost),
        summary = COALESCE(c.summary, EXCLUDED.summary),
        transcript = COALESCE(c.transcript, EXCLUDED.transcript),
        recording_url = COALESCE(c.recording_url, EXCLUDED.recording_url)
