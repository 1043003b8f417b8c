-- The tenant of a message routed by a tenant token: the org it names ($1), whose key
-- src/tenant_token.rs has just verified it with (a second read of tenant_keys here would find
-- what that read found).
WITH agent AS (
    SELECT $1::uuid AS org_id, NULL::uuid AS id
),
