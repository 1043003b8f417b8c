-- The tenant of a message without an assistant id, routed by its phone number id ($2): the org
-- of the active agent registered for that number (route.sql's twin for squads and transient
-- assistants).
WITH agent AS (
    SELECT a.org_id, a.id
    FROM voxanne.agents AS a
    WHERE a.active AND a.vapi_phone_number_id = $2
),
