-- Scale-out: organisations are hashed into a fixed number of shards; replicas hold leases on shards
-- (renewed while alive, taken over after they lapse) and check only their shards' integrations.

CREATE TABLE public.integration_health_shards (
    shard       integer     PRIMARY KEY CHECK (shard >= 0),
    owner       text,
    lease_until timestamptz
);
INSERT INTO public.integration_health_shards (shard) SELECT generate_series(0, 63);

-- Replicas announce themselves, so each can compute its fair share of the shards.
CREATE TABLE public.integration_health_replicas (
    replica_id text        PRIMARY KEY,
    seen_at    timestamptz NOT NULL
);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['integration_health_shards', 'integration_health_replicas']
    LOOP
        EXECUTE format('ALTER TABLE public.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE public.%I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('REVOKE ALL ON public.%I FROM PUBLIC, anon, authenticated', t);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON public.%I TO service_role', t);
        EXECUTE format('CREATE POLICY %I ON public.%I FOR ALL TO service_role USING (true) WITH CHECK (true)',
                       t || '_service_role_all', t);
    END LOOP;
END
$$;

-- The shard of an organisation: the low 32 bits of its id, modulo the shard count (Python: uuid.int % 2**32 % n).
CREATE FUNCTION public.integration_health_shard_of(org uuid, shards integer) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT (('x' || right(replace(org::text, '-', ''), 8))::bit(32)::bigint % shards)::integer $$;
