-- The tenant of a message, by the one routing rule (src/routing.rs): the active agent of the
-- assistant id $1 when the message names one, else the active agent of the phone number id $2.
-- Each id is active in at most one org (agents' exclusion constraints), so this is one row or
-- none. Every statement that acts for a tenant starts with this CTE.
WITH agent AS (
    SELECT a.org_id, a.id
    FROM voxanne.agents AS a
    WHERE a.active AND a.vapi_assistant_id = $1
    UNION ALL
    SELECT a.org_id, a.id
    FROM voxanne.agents AS a
    WHERE a.active AND $1 IS NULL AND a.vapi_phone_number_id = $2
),
