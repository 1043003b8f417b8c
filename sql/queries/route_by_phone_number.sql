-- The tenant of a message routed by a phone number id ($1) registered the 0.2.0 way, on an
-- agent (upsert_agent's p_vapi_phone_number_id): that agent's org, and the agent.
WITH agent AS (
    SELECT a.org_id, a.id
    FROM voxanne.agents AS a
    WHERE a.active AND a.vapi_phone_number_id = $1
),
