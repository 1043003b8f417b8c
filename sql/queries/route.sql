-- The tenant of a message routed by its assistant id ($1): the org of the active agent of that
-- assistant. Each id is active in at most one org (agents' exclusion constraints), so this is
-- one row or none. The rule that picks the id is src/routing.rs; every tenant statement starts
-- with this CTE or with route_by_phone_number.sql, as one kept plan each.
WITH agent AS (
    SELECT a.org_id, a.id
    FROM voxanne.agents AS a
    WHERE a.active AND a.vapi_assistant_id = $1
),
