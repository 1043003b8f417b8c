        -- The end-of-call report is authoritative: its values overwrite, and it owns an ended
        -- call's status event whichever came first, so the final row does not depend on the
        -- order; a status `ended` after it is stale.
        status_event_id = EXCLUDED.status_event_id,
        ended_reason = COALESCE(EXCLUDED.ended_reason, c.ended_reason),
        started_at = COALESCE(EXCLUDED.started_at, c.started_at),
        ended_at = COALESCE(EXCLUDED.ended_at, c.ended_at),
        duration_seconds = COALESCE(EXCLUDED.duration_seconds, c.duration_seconds),
        cost = COALESCE(EXCLUDED.cost, c.cost),
        summary = COALESCE(EXCLUDED.summary, c.summary),
        transcript = COALESCE(EXCLUDED.transcript, c.transcript),
        recording_url = COALESCE(EXCLUDED.recording_url, c.recording_url)
