-- Experiment: no_check_constraints.sql, no_hot_foreign_keys.sql and no_lead_foreign_key.sql together.
ALTER TABLE voxanne.calls
    DROP CONSTRAINT calls_status_known,
    DROP CONSTRAINT calls_duration_nonnegative,
    DROP CONSTRAINT calls_cost_nonnegative;
ALTER TABLE voxanne.call_transcripts
    DROP CONSTRAINT call_transcripts_hash_sha256,
    DROP CONSTRAINT call_transcripts_role_known,
    DROP CONSTRAINT call_transcripts_type_known;
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
