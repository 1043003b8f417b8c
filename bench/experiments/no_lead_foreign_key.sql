-- Experiment: calls.lead_id without its foreign key. The check (an SPI query with FOR KEY SHARE
-- on the lead row) runs for every call whose number is a lead's. Its ON DELETE SET NULL is kept
-- by a statement trigger on leads. (Neither way has an index on calls (org_id, lead_id): deleting
-- leads scans calls, with the key once per lead, with the trigger once per statement.)
ALTER TABLE voxanne.calls DROP CONSTRAINT calls_lead_fkey;

CREATE FUNCTION voxanne._unlink_deleted_leads() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE voxanne.calls AS c SET lead_id = NULL, updated_at = pg_catalog.now()
    FROM gone AS g WHERE c.org_id = g.org_id AND c.lead_id = g.id;
    RETURN NULL;
END
$$;
CREATE TRIGGER leads_unlink_calls AFTER DELETE ON voxanne.leads
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION voxanne._unlink_deleted_leads();
