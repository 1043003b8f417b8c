-- voxanne_ext 0.1.0 -> 0.2.0: the outbox consumer API (commit-ordered reads with
-- acknowledgements), outbox retention, and Supabase Realtime publication membership.
-- Every statement here is also in the 0.2.0 install script; tests/it/tests/upgrade.rs checks
-- that an upgraded database and a fresh 0.2.0 one have the same schema.

\echo Use "ALTER EXTENSION voxanne_ext UPDATE TO '0.2.0'" to load this file. \quit

-- Rows already in the outbox get this transaction's xid: they are all older than anything
-- written after the upgrade, which is the order a reader needs.
ALTER TABLE voxanne.outbox ADD COLUMN xid xid8 NOT NULL DEFAULT pg_catalog.pg_current_xact_id();
CREATE INDEX outbox_commit_order_idx ON voxanne.outbox (xid, id);

-- Transcript lines keyed by call first, then content hash: inserts land on the pages of the
-- call's own lines, not on random pages of the whole table's hash index, and the key serves
-- "lines of a call" so the separate call index goes.
ALTER TABLE voxanne.call_transcripts DROP CONSTRAINT call_transcripts_pkey,
    ADD PRIMARY KEY (org_id, call_id, content_hash);
DROP INDEX voxanne.call_transcripts_call_idx;

-- Citus refuses ON DELETE SET NULL on a foreign key that includes the distribution column.
ALTER TABLE voxanne.calls DROP CONSTRAINT calls_lead_fkey,
    ADD CONSTRAINT calls_lead_fkey FOREIGN KEY (org_id, lead_id) REFERENCES voxanne.leads (org_id, id);

CREATE TABLE voxanne.outbox_consumers (
    consumer   text        PRIMARY KEY,
    last_xid   xid8        NOT NULL DEFAULT '0',
    last_id    bigint      NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
SELECT pg_catalog.pg_extension_config_dump('voxanne.outbox_consumers', '');
ALTER TABLE voxanne.outbox_consumers ENABLE ROW LEVEL SECURITY;

CREATE TYPE voxanne.outbox_message AS (
    org_id     uuid,
    id         bigint,
    topic      text,
    payload    jsonb,
    created_at timestamptz,
    xid        xid8
);

CREATE FUNCTION voxanne._consumer_name(p_consumer text) RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_consumer IS NULL THEN
        RAISE EXCEPTION 'p_consumer must not be null' USING ERRCODE = '22004';
    ELSIF p_consumer = '' THEN
        RAISE EXCEPTION 'p_consumer must not be empty' USING ERRCODE = '22023';
    ELSIF pg_catalog.octet_length(p_consumer) > 255 THEN
        RAISE EXCEPTION 'p_consumer is % bytes long; the limit is 255', pg_catalog.octet_length(p_consumer)
            USING ERRCODE = '22001';
    END IF;
    RETURN p_consumer;
END
$$;

-- The next messages after the consumer's acknowledged position, in commit order. Only rows of
-- transactions older than the oldest one still running are returned: a transaction that took
-- its ids earlier but commits later is waited for, never skipped. Reading registers the
-- consumer, so purge_outbox keeps what it has not acknowledged.
CREATE FUNCTION voxanne.outbox_read(p_consumer text, p_limit integer DEFAULT 100)
RETURNS SETOF voxanne.outbox_message
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_consumer text := voxanne._consumer_name(p_consumer);
    v_xid xid8;
    v_id bigint;
BEGIN
    IF p_limit IS NULL THEN
        RAISE EXCEPTION 'p_limit must not be null' USING ERRCODE = '22004';
    ELSIF p_limit < 1 OR p_limit > 10000 THEN
        RAISE EXCEPTION 'p_limit is out of range: % (allowed: 1 to 10000)', p_limit USING ERRCODE = '22003';
    END IF;
    INSERT INTO voxanne.outbox_consumers (consumer) VALUES (v_consumer) ON CONFLICT (consumer) DO NOTHING;
    SELECT c.last_xid, c.last_id INTO v_xid, v_id
    FROM voxanne.outbox_consumers AS c WHERE c.consumer = v_consumer;
    RETURN QUERY
        SELECT o.org_id, o.id, o.topic, o.payload, o.created_at, o.xid
        FROM voxanne.outbox AS o
        WHERE (o.xid, o.id) > (v_xid, v_id)
          AND o.xid < pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot())
        ORDER BY o.xid, o.id
        LIMIT p_limit;
END
$$;

-- Acknowledge everything up to and including (p_xid, p_id). The cursor only moves forward,
-- so a late or repeated acknowledgement is harmless.
CREATE FUNCTION voxanne.outbox_ack(p_consumer text, p_xid xid8, p_id bigint) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_consumer text := voxanne._consumer_name(p_consumer);
BEGIN
    IF p_xid IS NULL OR p_id IS NULL THEN
        RAISE EXCEPTION '% must not be null', CASE WHEN p_xid IS NULL THEN 'p_xid' ELSE 'p_id' END
            USING ERRCODE = '22004';
    END IF;
    IF NOT EXISTS (SELECT FROM voxanne.outbox AS o WHERE o.xid = p_xid AND o.id = p_id) THEN
        RAISE EXCEPTION 'p_id has invalid value ''%'': no outbox message (%, %)', p_id, p_xid, p_id
            USING ERRCODE = '22023';
    END IF;
    INSERT INTO voxanne.outbox_consumers AS c (consumer, last_xid, last_id)
    VALUES (v_consumer, p_xid, p_id)
    ON CONFLICT (consumer) DO UPDATE
        SET last_xid = EXCLUDED.last_xid, last_id = EXCLUDED.last_id, updated_at = pg_catalog.now()
        WHERE (c.last_xid, c.last_id) < (EXCLUDED.last_xid, EXCLUDED.last_id);
END
$$;

-- Forget a consumer that is gone for good: until then purge_outbox keeps everything it has
-- not acknowledged. Returns whether it existed.
CREATE FUNCTION voxanne.outbox_drop_consumer(p_consumer text) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM voxanne.outbox_consumers AS c WHERE c.consumer = voxanne._consumer_name(p_consumer);
    RETURN FOUND;
END
$$;

-- Supabase Realtime: stream the outbox when the publication exists (Supabase creates it);
-- otherwise: ALTER PUBLICATION supabase_realtime ADD TABLE voxanne.outbox;
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_publication WHERE pubname = 'supabase_realtime' AND NOT puballtables) THEN
        ALTER PUBLICATION supabase_realtime ADD TABLE voxanne.outbox;
    END IF;
END
$$;

CREATE FUNCTION voxanne.purge_outbox(p_older_than interval DEFAULT '7 days') RETURNS bigint
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'purge_outbox_wrapper';

REVOKE ALL ON FUNCTION voxanne._consumer_name(text), voxanne.outbox_read(text, integer),
    voxanne.outbox_ack(text, xid8, bigint), voxanne.outbox_drop_consumer(text),
    voxanne.purge_outbox(interval) FROM PUBLIC;

CREATE OR REPLACE FUNCTION voxanne.grant_api_roles() RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'service_role') THEN
        GRANT USAGE ON SCHEMA voxanne TO service_role;
        GRANT SELECT ON ALL TABLES IN SCHEMA voxanne TO service_role;
        GRANT INSERT, UPDATE, DELETE ON voxanne.leads TO service_role;
        GRANT EXECUTE ON FUNCTION
            voxanne.upsert_agent(uuid, text, text, boolean, text),
            voxanne.create_inbound_call(text, text, text, text, text, text, timestamptz),
            voxanne.complete_call(text, text, text, timestamptz, timestamptz, numeric, numeric,
                                  text, text, text, text),
            voxanne.record_transcript(text, text, text, text, timestamptz, text),
            voxanne.purge_processed_events(interval),
            voxanne.handle_vapi_message(jsonb),
            voxanne.record_rejected_event(text, text, text),
            voxanne.outbox_read(text, integer),
            voxanne.outbox_ack(text, xid8, bigint),
            voxanne.outbox_drop_consumer(text),
            voxanne.purge_outbox(interval),
            voxanne.current_org_id()
        TO service_role;
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'authenticated') THEN
        -- Read-only, and RLS narrows every read to the caller's org.
        GRANT USAGE ON SCHEMA voxanne TO authenticated;
        GRANT SELECT ON voxanne.agents, voxanne.leads, voxanne.calls, voxanne.call_transcripts,
                        voxanne.outbox TO authenticated;
        GRANT EXECUTE ON FUNCTION voxanne.current_org_id() TO authenticated;
    END IF;
    -- anon gets nothing at all.
END
$$;

SELECT voxanne.grant_api_roles();
