-- Experiment: the hot tables' CHECK constraints as domains. Same rules, enforced on every write,
-- but a domain's CHECK expression is read and planned once per backend (the typcache keeps it),
-- where a table CHECK is re-read (stringToNode) and re-planned (expression_planner) on every
-- execution of a statement (ExecRelCheck in PostgreSQL 15).
CREATE DOMAIN voxanne.call_status AS text
    CONSTRAINT call_status_known CHECK (VALUE IN ('scheduled', 'queued', 'ringing', 'in-progress', 'forwarding', 'ended'));
CREATE DOMAIN voxanne.nonnegative_numeric AS numeric
    CONSTRAINT nonnegative CHECK (VALUE >= 0);
CREATE DOMAIN voxanne.sha256 AS bytea
    CONSTRAINT sha256_length CHECK (pg_catalog.length(VALUE) = 32);
CREATE DOMAIN voxanne.transcript_role AS text
    CONSTRAINT transcript_role_known CHECK (VALUE IN ('user', 'assistant'));
CREATE DOMAIN voxanne.transcript_type AS text
    CONSTRAINT transcript_type_known CHECK (VALUE IN ('partial', 'final'));

ALTER TABLE voxanne.calls
    DROP CONSTRAINT calls_status_known,
    DROP CONSTRAINT calls_duration_nonnegative,
    DROP CONSTRAINT calls_cost_nonnegative,
    ALTER COLUMN status TYPE voxanne.call_status,
    ALTER COLUMN duration_seconds TYPE voxanne.nonnegative_numeric,
    ALTER COLUMN cost TYPE voxanne.nonnegative_numeric;
ALTER TABLE voxanne.call_transcripts
    DROP CONSTRAINT call_transcripts_hash_sha256,
    DROP CONSTRAINT call_transcripts_role_known,
    DROP CONSTRAINT call_transcripts_type_known,
    ALTER COLUMN content_hash TYPE voxanne.sha256,
    ALTER COLUMN role TYPE voxanne.transcript_role,
    ALTER COLUMN transcript_type TYPE voxanne.transcript_type;
