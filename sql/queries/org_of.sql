-- Only the org a route finds: what labels a rejected body.
found AS (
    SELECT agent.org_id FROM agent
)
SELECT found.org_id FROM found
