-- The tenant of a message routed by an assistant id ($1): the org of the active agent of that
-- assistant, one row or none (agents' exclusion constraints). The agent is the call's only when
-- the id is the call's own ($2 NULL), not that of a squad member speaking ($2 'member'), so a
-- call's agent does not depend on which message came first. The order in which routes are
-- tried is src/routing.rs; every tenant statement starts with one route_by_*.sql.
WITH agent AS (
    SELECT a.org_id, CASE WHEN $2 IS NULL THEN a.id END AS id
    FROM voxanne.agents AS a
    WHERE a.active AND a.vapi_assistant_id = $1
),
