    RETURNING c.org_id, c.id, c.status, c.status_event_id = $4 AS advanced,
              pg_catalog.jsonb_build_object('call_id', c.id, 'vapi_call_id', $3,
                  'status', c.status, 'ended_reason', c.ended_reason, 'started_at', c.started_at,
                  'ended_at', c.ended_at, 'duration_seconds', c.duration_seconds, 'cost', c.cost,
                  'source', $5) AS payload
),
