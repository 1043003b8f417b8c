-- The tenant of a message routed by a directory id ($1) of kind $2 (phone_number, squad,
-- workflow, vapi_org): its org, one row or none (directory_one_org_per_id), and the agent of
-- the phone number's assistant when it has one.
WITH agent AS (
    SELECT d.org_id, a.id
    FROM voxanne.directory AS d
    LEFT JOIN voxanne.agents AS a
           ON a.org_id = d.org_id AND a.active AND a.vapi_assistant_id = d.vapi_assistant_id
    WHERE d.active AND d.kind = $2 AND d.vapi_id = $1
),
