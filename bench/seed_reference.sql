-- The seed backend's "Solution 1", written as the honest reference for bench/run.
--
-- Table shapes follow the seed review (/work/shared/seed, "Senior Code Review: Voxanne Backend"):
-- call_tracking + call_logs (two rows per call that the handler keeps in step), the
-- processed_webhook_events ledger keyed by event_id alone, and a websocket_broadcast_queue row
-- for the UI. Keys are Supabase-style uuid primary keys. Indexes are only the ones the
-- handler's own lookups need (no dashboard indexes), so the reference is not handicapped.
--
-- create_call_atomically is the handler's handleCallStarted sequence moved into ONE plpgsql
-- transaction, with the review's fixes applied (mark before the writes, org_id on every
-- UPDATE, lead read filtered by org): idempotency check, agent lookup (org derived from the
-- assistant), mark, call_tracking lookup, lead lookup, call_tracking insert, call_logs insert,
-- call_tracking update, broadcast queue row. What the handler does outside the database (RAG
-- injection, the WebSocket send itself) is left out. The header is the same as ours
-- (SECURITY DEFINER, SET search_path): equal security posture, equal per-call GUC cost.
--
-- record_transcript_atomically is handleTranscript the same way, with the review's fix #5
-- (content-hash event id): check, mark, call lookup, transcript insert, broadcast queue row.
--
-- bench/pgbench/seed_client_create.sql is the same handleCallStarted sequence as the handler
-- really runs it: separate round trips, each statement its own transaction (supabase-js).

CREATE SCHEMA seed;

CREATE TABLE seed.agents (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id            uuid,
    name              text,
    active            boolean NOT NULL DEFAULT true,
    vapi_assistant_id text,
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX agents_vapi_assistant_id_idx ON seed.agents (vapi_assistant_id);

CREATE TABLE seed.leads (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id       uuid,
    phone        text,
    contact_name text,
    name         text,
    clinic_name  text,
    company_name text,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX leads_org_phone_idx ON seed.leads (org_id, phone);

CREATE TABLE seed.call_tracking (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id       uuid,
    agent_id     uuid,
    vapi_call_id text NOT NULL UNIQUE,
    lead_id      uuid,
    phone        text,
    status       text,
    call_log_id  uuid,
    metadata     jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE seed.call_logs (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id           uuid,
    vapi_call_id     text NOT NULL UNIQUE,
    agent_id         uuid,
    lead_id          uuid,
    phone_number     text,
    call_type        text,
    status           text,
    outcome          text,
    started_at       timestamptz,
    ended_at         timestamptz,
    duration_seconds numeric,
    recording_url    text,
    transcript       text,
    summary          text,
    created_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE seed.processed_webhook_events (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id      uuid,
    event_id    text NOT NULL,
    call_id     text,
    event_type  text,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX idx_processed_events_event_id ON seed.processed_webhook_events (event_id);

CREATE TABLE seed.websocket_broadcast_queue (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id        uuid,
    tracking_id   uuid,
    user_id       text,
    event_type    text,
    payload       jsonb,
    attempt_count integer NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE seed.call_transcripts (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id     uuid,
    call_id    uuid,
    speaker    text,
    text       text,
    spoken_at  timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX call_transcripts_call_idx ON seed.call_transcripts (call_id);

CREATE FUNCTION seed.create_call_atomically(
    p_vapi_call_id text, p_assistant_id text, p_customer_number text, p_phone_number_id text,
    p_call_type text, p_status text, p_occurred_at timestamptz
) RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_event_id    text := 'call.started:' || p_vapi_call_id;
    v_agent_id    uuid;
    v_org_id      uuid;
    v_tracking_id uuid;
    v_lead_id     uuid;
    v_log_id      uuid;
BEGIN
    -- 1. idempotency check
    PERFORM 1 FROM seed.processed_webhook_events WHERE event_id = v_event_id;
    IF FOUND THEN
        RETURN jsonb_build_object('applied', false, 'outcome', 'duplicate', 'event_id', v_event_id);
    END IF;
    -- 2. agent lookup: the org comes from the active agent of the assistant
    SELECT a.id, a.org_id INTO v_agent_id, v_org_id
    FROM seed.agents AS a WHERE a.vapi_assistant_id = p_assistant_id AND a.active;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'No active agent found for vapi_assistant_id: %', p_assistant_id
            USING ERRCODE = 'P0002';
    END IF;
    -- 3. mark as processed before any write (review fix #2)
    INSERT INTO seed.processed_webhook_events (org_id, event_id, call_id, event_type)
    VALUES (v_org_id, v_event_id, p_vapi_call_id, 'call.started');
    -- 4. existing call_tracking row?
    SELECT t.id INTO v_tracking_id
    FROM seed.call_tracking AS t WHERE t.vapi_call_id = p_vapi_call_id AND t.org_id = v_org_id;
    -- 5. lead lookup, filtered by org
    SELECT l.id INTO v_lead_id
    FROM seed.leads AS l WHERE l.org_id = v_org_id AND l.phone = p_customer_number;
    -- 6. call_tracking
    IF v_tracking_id IS NULL THEN
        INSERT INTO seed.call_tracking (org_id, agent_id, vapi_call_id, lead_id, phone, status)
        VALUES (v_org_id, v_agent_id, p_vapi_call_id, v_lead_id, p_customer_number, p_status)
        RETURNING id INTO v_tracking_id;
    END IF;
    -- 7. call_logs
    INSERT INTO seed.call_logs (org_id, vapi_call_id, agent_id, lead_id, phone_number, call_type,
                                status, started_at)
    VALUES (v_org_id, p_vapi_call_id, v_agent_id, v_lead_id, p_customer_number, p_call_type,
            'in_progress', p_occurred_at)
    RETURNING id INTO v_log_id;
    -- 8. link them (org_id on the UPDATE, review fix #1)
    UPDATE seed.call_tracking SET call_log_id = v_log_id, status = p_status, updated_at = now()
    WHERE id = v_tracking_id AND org_id = v_org_id;
    -- 9. broadcast queue row for the UI
    INSERT INTO seed.websocket_broadcast_queue (org_id, tracking_id, event_type, payload)
    VALUES (v_org_id, v_tracking_id, 'call_status',
            jsonb_build_object('vapiCallId', p_vapi_call_id, 'status', p_status,
                               'occurredAt', p_occurred_at));
    RETURN jsonb_build_object('applied', true, 'outcome', 'applied', 'org_id', v_org_id,
                              'call_tracking_id', v_tracking_id, 'call_logs_id', v_log_id,
                              'vapi_call_id', p_vapi_call_id, 'event_id', v_event_id);
END
$$;

CREATE FUNCTION seed.record_transcript_atomically(
    p_vapi_call_id text, p_assistant_id text, p_role text, p_text text, p_spoken_at timestamptz
) RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_event_id    text;
    v_org_id      uuid;
    v_tracking_id uuid;
BEGIN
    -- review fix #5: content hash instead of a 50-character prefix and a one-second bucket
    v_event_id := 'transcript:' || p_vapi_call_id || ':'
        || left(encode(sha256(convert_to(p_role || ':' || p_text || ':' || p_spoken_at::text, 'UTF8')), 'hex'), 16);
    PERFORM 1 FROM seed.processed_webhook_events WHERE event_id = v_event_id;
    IF FOUND THEN
        RETURN jsonb_build_object('applied', false, 'outcome', 'duplicate', 'event_id', v_event_id);
    END IF;
    SELECT a.org_id INTO v_org_id
    FROM seed.agents AS a WHERE a.vapi_assistant_id = p_assistant_id AND a.active;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'No active agent found for vapi_assistant_id: %', p_assistant_id
            USING ERRCODE = 'P0002';
    END IF;
    INSERT INTO seed.processed_webhook_events (org_id, event_id, call_id, event_type)
    VALUES (v_org_id, v_event_id, p_vapi_call_id, 'transcript');
    SELECT t.id INTO v_tracking_id
    FROM seed.call_tracking AS t WHERE t.vapi_call_id = p_vapi_call_id AND t.org_id = v_org_id;
    IF v_tracking_id IS NULL THEN
        -- the seed drops (or queues) a line whose call is not known yet (seed #7)
        RETURN jsonb_build_object('applied', false, 'outcome', 'no_call', 'event_id', v_event_id);
    END IF;
    INSERT INTO seed.call_transcripts (org_id, call_id, speaker, text, spoken_at)
    VALUES (v_org_id, v_tracking_id, p_role, p_text, p_spoken_at);
    INSERT INTO seed.websocket_broadcast_queue (org_id, tracking_id, event_type, payload)
    VALUES (v_org_id, v_tracking_id, 'transcript',
            jsonb_build_object('vapiCallId', p_vapi_call_id, 'speaker', p_role, 'text', p_text,
                               'spokenAt', p_spoken_at));
    RETURN jsonb_build_object('applied', true, 'outcome', 'applied', 'org_id', v_org_id,
                              'call_tracking_id', v_tracking_id, 'event_id', v_event_id);
END
$$;
