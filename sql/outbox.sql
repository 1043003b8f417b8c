-- The outbox consumer API (0.2.0), in the style of pgmq: read a batch, process it, acknowledge.
-- Supabase users can instead subscribe to voxanne.outbox with Realtime (added to the
-- supabase_realtime publication below; RLS keeps each tenant to its own rows).

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

-- The next messages after the consumer's acknowledged position, in (xid, id) order. Only rows of
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
