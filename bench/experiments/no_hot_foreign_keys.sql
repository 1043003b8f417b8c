-- Experiment: no foreign-key check on the hot inserts. Each check is a separate SPI query
-- (RI_FKey_check: SELECT 1 ... FOR KEY SHARE) run after the statement, and it locks the parent
-- row (a WAL record and a dirtied page per line for call_transcripts -> calls). The statements
-- already read the parent (the agent; the call) in the same statement. What the keys also did
-- is kept by triggers that cost nothing on the insert path:
--   agents are never deleted (upsert_agent deactivates), so DELETE on agents is refused;
--   deleting a call deletes its lines (the ON DELETE CASCADE).
-- calls_lead_fkey (ON DELETE SET NULL, checked only when a lead matched) is kept.
ALTER TABLE voxanne.calls DROP CONSTRAINT calls_agent_fkey;
ALTER TABLE voxanne.call_transcripts DROP CONSTRAINT call_transcripts_call_fkey;

CREATE FUNCTION voxanne._agents_are_not_deleted() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'agents are deactivated, not deleted (voxanne.upsert_agent(..., p_active => false))'
        USING ERRCODE = '55000';
END
$$;
CREATE TRIGGER agents_no_delete BEFORE DELETE OR TRUNCATE ON voxanne.agents
    FOR EACH STATEMENT EXECUTE FUNCTION voxanne._agents_are_not_deleted();

CREATE FUNCTION voxanne._delete_call_lines() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM voxanne.call_transcripts AS t
    USING gone AS g WHERE t.org_id = g.org_id AND t.call_id = g.id;
    RETURN NULL;
END
$$;
CREATE TRIGGER calls_delete_lines AFTER DELETE ON voxanne.calls
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION voxanne._delete_call_lines();
