-- The report as Vapi sent it ($16: the webhook's body), kept whole with its call (0.3.0). A
-- report seen again once its ledger mark was purged replaces the kept one, as its values
-- overwrite the call's.
report AS (
    INSERT INTO voxanne.call_reports AS r (org_id, call_id, report)
    SELECT call.org_id, call.id, $16 OPERATOR(pg_catalog.->) 'message' FROM call
    ON CONFLICT (org_id, call_id) DO UPDATE SET report = EXCLUDED.report, received_at = pg_catalog.now()
),
