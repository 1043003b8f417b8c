-- The tenant of a message routed by a tenant token that src/tenant_token.rs verified: the org
-- it names ($1), as long as that org still has its key.
WITH agent AS (
    SELECT k.org_id, NULL::uuid AS id
    FROM voxanne.tenant_keys AS k
    WHERE k.org_id = $1::uuid
),
