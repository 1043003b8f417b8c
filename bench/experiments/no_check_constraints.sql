-- Experiment: the hot tables without their CHECK constraints (every value is already validated
-- in Rust, src/events.rs, before any SQL runs; writes are only possible through the functions).
-- PostgreSQL 15 re-reads (stringToNode) and re-plans (expression_planner) each CHECK
-- expression of a result relation on every execution of a statement (ExecRelCheck), kept plan
-- or not: 6 constraints per record_transcript (calls' 3 are checked even when ON CONFLICT
-- then finds the call), 3 per create_inbound_call.
ALTER TABLE voxanne.calls
    DROP CONSTRAINT calls_status_known,
    DROP CONSTRAINT calls_duration_nonnegative,
    DROP CONSTRAINT calls_cost_nonnegative;
ALTER TABLE voxanne.call_transcripts
    DROP CONSTRAINT call_transcripts_hash_sha256,
    DROP CONSTRAINT call_transcripts_role_known,
    DROP CONSTRAINT call_transcripts_type_known;
