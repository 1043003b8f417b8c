-- voxanne_ext tables. Every tenant table leads its primary key and every unique index with
-- org_id (NOT NULL): the tenant boundary is part of every key, and the table can be
-- distributed on org_id by Citus later (docs/SCALING.md).

-- One row per Vapi assistant per org. The org of a webhook is derived from here or from the
-- directory below (src/routing.rs has the order), never taken from the caller.
CREATE TABLE voxanne.agents (
    org_id               uuid        NOT NULL,
    id                   uuid        NOT NULL DEFAULT pg_catalog.gen_random_uuid(),
    vapi_assistant_id    text        NOT NULL,
    vapi_phone_number_id text,
    name                 text,
    active               boolean     NOT NULL DEFAULT true,
    created_at           timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at           timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (org_id, id),
    CONSTRAINT agents_org_assistant_key UNIQUE (org_id, vapi_assistant_id),
    -- An assistant id routes to exactly one org. Exclusion constraints rather than unique
    -- indexes: the rule spans orgs, and their indexes double as the hot-path lookup.
    CONSTRAINT agents_one_active_per_assistant
        EXCLUDE USING btree (vapi_assistant_id WITH =) WHERE (active),
    CONSTRAINT agents_one_active_per_phone_number
        EXCLUDE USING btree (vapi_phone_number_id WITH =)
        WHERE (active AND vapi_phone_number_id IS NOT NULL)
);

-- Every Vapi id other than an assistant's that routes a call to an org (0.3.0): phone numbers,
-- squads, workflows and Vapi orgs (a tenant that brings its own Vapi account). An id belongs to
-- exactly one org, active or not, so no org can park a copy of another's id to take it over
-- later. A phone number may name what assistant-request answers for it: an assistant or a
-- squad, or neither (numbers whose assistant the app picks).
CREATE TABLE voxanne.directory (
    org_id            uuid        NOT NULL,
    kind              text        NOT NULL CONSTRAINT directory_kind_known
                                  CHECK (kind IN ('phone_number', 'squad', 'workflow', 'vapi_org')),
    vapi_id           text        NOT NULL,
    vapi_assistant_id text,
    vapi_squad_id     text,
    active            boolean     NOT NULL DEFAULT true,
    created_at        timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at        timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (org_id, kind, vapi_id),
    -- across orgs, as agents' constraints; its index is also the routing lookup
    CONSTRAINT directory_one_org_per_id EXCLUDE USING btree (kind WITH =, vapi_id WITH =),
    CONSTRAINT directory_answer_of_a_phone_number CHECK (
        (vapi_assistant_id IS NULL AND vapi_squad_id IS NULL)
        OR (kind = 'phone_number' AND (vapi_assistant_id IS NULL OR vapi_squad_id IS NULL)))
);

-- The per-org key of the signed tenant tokens (voxanne.tenant_token) that route the calls of
-- transient assistants (0.3.0). Only the extension's functions read it.
CREATE TABLE voxanne.tenant_keys (
    org_id     uuid        PRIMARY KEY,
    key        bytea       NOT NULL CONSTRAINT tenant_keys_256_bits CHECK (pg_catalog.length(key) = 32),
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);

-- Webhook credentials that belong to one org (src/credentials.rs): a tenant's own Vapi account
-- authenticates with a Bearer token that may write that org only. The token itself is never
-- kept, only its SHA-256; a revoked row stays, so the token can never be registered again.
CREATE TABLE voxanne.webhook_credentials (
    org_id     uuid        NOT NULL,
    id         uuid        NOT NULL DEFAULT pg_catalog.gen_random_uuid(),
    digest     bytea       NOT NULL CONSTRAINT webhook_credentials_sha256 CHECK (pg_catalog.length(digest) = 32),
    label      text,
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    revoked_at timestamptz,
    PRIMARY KEY (org_id, id),
    -- across orgs, as agents' constraints; its index is also the relay's lookup
    CONSTRAINT webhook_credentials_one_org_per_token EXCLUDE USING btree (digest WITH =)
);

CREATE TABLE voxanne.leads (
    org_id     uuid        NOT NULL,
    id         uuid        NOT NULL DEFAULT pg_catalog.gen_random_uuid(),
    phone      text        NOT NULL CONSTRAINT leads_phone_e164 CHECK (phone ~ '^\+[1-9][0-9]{1,14}$'),
    name       text,
    email      text,
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (org_id, id),
    CONSTRAINT leads_org_phone_key UNIQUE (org_id, phone)
);

-- ONE row per call: the seed's call_tracking, call_logs and calls collapsed, so they cannot
-- disagree. Whichever message arrives first creates the row; later ones enrich it.
-- fillfactor leaves room for the HOT updates each later message makes.
CREATE TABLE voxanne.calls (
    org_id           uuid        NOT NULL,
    id               bigint      GENERATED ALWAYS AS IDENTITY,
    vapi_call_id     text        NOT NULL,
    -- NULL when no assistant of the org routed the call: a squad, a workflow, a phone number
    -- without an assistant, a Vapi org or a tenant token did (0.3.0)
    agent_id         uuid,
    lead_id          uuid,
    call_type        text,
    customer_number  text,
    phone_number_id  text,
    -- NULL until the first status message; only ever moves forward
    -- (scheduled < queued < ringing < in-progress < forwarding < ended).
    status           text CONSTRAINT calls_status_known CHECK (status IN
                         ('scheduled', 'queued', 'ringing', 'in-progress', 'forwarding', 'ended')),
    -- The event id of the message that set the current status: how a write knows whether it
    -- advanced the call or was stale.
    status_event_id  text,
    ended_reason     text,
    started_at       timestamptz,
    ended_at         timestamptz,
    duration_seconds numeric CONSTRAINT calls_duration_nonnegative CHECK (duration_seconds >= 0),
    cost             numeric CONSTRAINT calls_cost_nonnegative CHECK (cost >= 0),
    summary          text,
    transcript       text,
    recording_url    text,
    created_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (org_id, id),
    CONSTRAINT calls_org_vapi_call_key UNIQUE (org_id, vapi_call_id),
    CONSTRAINT calls_agent_fkey FOREIGN KEY (org_id, agent_id) REFERENCES voxanne.agents (org_id, id),
    -- NO ACTION, not SET NULL: Citus refuses SET NULL on a key that includes org_id. A lead
    -- with calls is deleted by first clearing calls.lead_id (docs/OPERATIONS.md).
    CONSTRAINT calls_lead_fkey FOREIGN KEY (org_id, lead_id) REFERENCES voxanne.leads (org_id, id)
) WITH (fillfactor = 80);

-- A transcript line is identified by its content hash (sha256 over call id, role, type,
-- moment and text): a retry of the same message collides, the same phrase said again at
-- another moment does not. The key is also the idempotency mark, so transcripts need no
-- ledger row and their dedup never expires. call_id leads the hash in the key (0.2.0): a
-- call's lines share a few index pages, so an insert touches a page that is hot anyway
-- instead of a random one of a huge index, and the same index serves "lines of a call".
CREATE TABLE voxanne.call_transcripts (
    org_id          uuid        NOT NULL,
    content_hash    bytea       NOT NULL CONSTRAINT call_transcripts_hash_sha256 CHECK (pg_catalog.length(content_hash) = 32),
    call_id         bigint      NOT NULL,
    role            text        NOT NULL CONSTRAINT call_transcripts_role_known CHECK (role IN ('user', 'assistant')),
    transcript_type text        NOT NULL CONSTRAINT call_transcripts_type_known CHECK (transcript_type IN ('partial', 'final')),
    spoken_at       timestamptz NOT NULL,
    text            text        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    -- 0.3.0: when a listed line's words ended (a message list's endTime); and whether the line
    -- is a transcript message's that no list has given yet, keyed by when it was sent
    -- (src/transcript.rs): the listed line of the same utterance replaces it.
    ended_at        timestamptz,
    provisional     boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (org_id, call_id, content_hash),
    CONSTRAINT call_transcripts_call_fkey FOREIGN KEY (org_id, call_id)
        REFERENCES voxanne.calls (org_id, id) ON DELETE CASCADE
);
-- Every listed line looks for a provisional line to replace: almost always none, found here
-- in one probe of a tiny index. A provisional line looks for a listed line that ended in the
-- 10 s before it: a range of the second index, not every line of its call (measured: 1.71x
-- less server CPU per transcript message on calls of many lines; no cost visible on the
-- listed lines that pay its entry, bench/README.md).
CREATE INDEX call_transcripts_provisional_idx ON voxanne.call_transcripts (org_id, call_id) WHERE provisional;
CREATE INDEX call_transcripts_listed_end_idx ON voxanne.call_transcripts (org_id, call_id, ended_at)
    WHERE ended_at IS NOT NULL;

-- The end-of-call report as Vapi sent it (0.3.0), whole: its messages, analysis (summary,
-- structuredData, successEvaluation), costs and everything Vapi adds later, so an app can
-- recompute anything. calls holds what the product reads out of it.
CREATE TABLE voxanne.call_reports (
    org_id      uuid        NOT NULL,
    call_id     bigint      NOT NULL,
    report      jsonb       NOT NULL,
    received_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (org_id, call_id),
    CONSTRAINT call_reports_call_fkey FOREIGN KEY (org_id, call_id)
        REFERENCES voxanne.calls (org_id, id) ON DELETE CASCADE
);

-- The idempotency ledger (seed #2, #12): written in the same statement as the effect it guards.
CREATE TABLE voxanne.processed_webhook_events (
    org_id      uuid        NOT NULL,
    event_id    text        NOT NULL,
    event_type  text        NOT NULL,
    received_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (org_id, event_id)
);
-- Rows arrive in time order, so a BRIN index finds the purge range for almost no write cost.
CREATE INDEX processed_webhook_events_received_brin
    ON voxanne.processed_webhook_events USING brin (received_at);

-- The durable notification log (seed #8): one row per applied effect, same transaction.
-- pg_notify('voxanne_outbox') carries only ids; readers fetch the payload from here.
CREATE TABLE voxanne.outbox (
    org_id     uuid        NOT NULL,
    id         bigint      GENERATED ALWAYS AS IDENTITY,
    topic      text        NOT NULL,
    payload    jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    -- The producing transaction (0.2.0): ids are allocated before commit, so a reader that
    -- follows ids alone skips a row whose transaction commits late; (xid, id) read only below
    -- the oldest running transaction does not (voxanne.outbox_read).
    xid        xid8        NOT NULL DEFAULT pg_catalog.pg_current_xact_id(),
    PRIMARY KEY (org_id, id)
);
CREATE INDEX outbox_created_brin ON voxanne.outbox USING brin (created_at);
CREATE INDEX outbox_commit_order_idx ON voxanne.outbox (xid, id);

-- Where each outbox consumer has read up to (0.2.0). Not a tenant table: a consumer reads
-- every org's events (the service side of Realtime, a queue worker).
CREATE TABLE voxanne.outbox_consumers (
    consumer   text        PRIMARY KEY,
    last_xid   xid8        NOT NULL DEFAULT '0',
    last_id    bigint      NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);

-- Webhooks that handle_vapi_message rejected, kept raw (text: any UTF-8 a sender posted, even
-- JSON that jsonb refuses), so nothing is lost and an operator can replay them once fixed.
-- org_id is the one nullable org_id in the schema, by necessity: a body whose assistant and
-- phone number match no agent has no tenant to belong to. RLS hides such rows from every API
-- user; only the service role sees them. For the same reason the keys are id and the body's
-- digest alone. One row per distinct body: a sender retrying a refused body (Vapi retries a
-- 422 when its backoffPlan does not exclude it) counts on the row, with the latest refusal.
CREATE TABLE voxanne.rejected_events (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id       uuid,
    body         text        NOT NULL,
    sqlstate     text        NOT NULL,
    message      text,
    message_type text,
    vapi_call_id text,
    received_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    -- sha256 of the body's UTF-8
    body_sha256  bytea       NOT NULL,
    times_seen   integer     NOT NULL DEFAULT 1,
    last_seen_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT rejected_events_body_key UNIQUE (body_sha256)
);
CREATE INDEX rejected_events_org_idx ON voxanne.rejected_events (org_id, received_at);

-- User data survives pg_dump of a database that uses the extension.
SELECT pg_catalog.pg_extension_config_dump('voxanne.agents', '');
SELECT pg_catalog.pg_extension_config_dump('voxanne.directory', '');
SELECT pg_catalog.pg_extension_config_dump('voxanne.tenant_keys', '');
SELECT pg_catalog.pg_extension_config_dump('voxanne.webhook_credentials', '');
SELECT pg_catalog.pg_extension_config_dump('voxanne.leads', '');
SELECT pg_catalog.pg_extension_config_dump('voxanne.calls', '');
SELECT pg_catalog.pg_extension_config_dump('voxanne.call_transcripts', '');
SELECT pg_catalog.pg_extension_config_dump('voxanne.call_reports', '');
SELECT pg_catalog.pg_extension_config_dump('voxanne.processed_webhook_events', '');
SELECT pg_catalog.pg_extension_config_dump('voxanne.outbox', '');
SELECT pg_catalog.pg_extension_config_dump('voxanne.rejected_events', '');
SELECT pg_catalog.pg_extension_config_dump('voxanne.outbox_consumers', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('voxanne.calls', 'id')::pg_catalog.regclass, '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('voxanne.outbox', 'id')::pg_catalog.regclass, '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('voxanne.rejected_events', 'id')::pg_catalog.regclass, '');

-- Whether a transcript message sent at p_heard is the utterance a list gives as spoken from
-- p_spoken_at to p_ended_at: sent after the words began and at most 10 s after they ended (a
-- final transcript follows the end of the words by the transcriber's latency). The window
-- cannot tell apart the same speaker saying the same words twice within it; it is narrow so
-- that only then is a provisional line taken for the other. Plain SQL: inlined, with the end as
-- a bound an index on ended_at can use (STABLE: timestamptz - interval is).
CREATE FUNCTION voxanne._heard_during(p_heard timestamptz, p_spoken_at timestamptz, p_ended_at timestamptz)
RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT p_heard OPERATOR(pg_catalog.>=) p_spoken_at
       AND p_ended_at OPERATOR(pg_catalog.>=) (p_heard OPERATOR(pg_catalog.-) '10 seconds'::pg_catalog.interval)
$$;

-- Status order for "only moves forward"; NULL (no status yet) ranks lowest. Plain SQL so the
-- planner inlines it into the kept statements.
CREATE FUNCTION voxanne._status_rank(p_status text) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT COALESCE(pg_catalog.array_position(
        '{scheduled,queued,ringing,in-progress,forwarding,ended}'::pg_catalog.text[], p_status), 0)
$$;
