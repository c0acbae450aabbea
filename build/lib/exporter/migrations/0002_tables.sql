-- The monitor's tables. Configuration and sync runs are written by the app and the sync scheduler;
-- status and history by the monitor (service_role).

-- What to check, per organisation. `config` holds non-sensitive metadata only (URLs, tenant ids,
-- thresholds); `credential_ref` names a secret in the vault, never the secret itself.
CREATE TABLE IF NOT EXISTS public.integration_config (
    id               uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id           uuid        NOT NULL,
    integration_type text        NOT NULL,
    enabled          boolean     NOT NULL DEFAULT true,
    config           jsonb       NOT NULL DEFAULT '{}'::jsonb,
    credential_ref   text,
    health_mode      text        NOT NULL DEFAULT 'active' CHECK (health_mode IN ('active', 'passive')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, integration_type)
);

-- The latest result per integration: exactly the spec's columns, one row per (org, type).
CREATE TABLE public.integration_health_status (
    id               uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id           uuid        NOT NULL,
    integration_type text        NOT NULL,
    status           text        NOT NULL CHECK (status IN ('healthy', 'degraded', 'unreachable')),
    latency_ms       integer     CHECK (latency_ms >= 0),
    checked_at       timestamptz NOT NULL,
    error_message    text,
    UNIQUE (org_id, integration_type)
);

-- One row per integration per scheduled slot: the 24-hour trend. Unique on the slot, so a re-run of a
-- delayed or duplicated cycle cannot add a second row for the same period.
CREATE TABLE public.health_check_history (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id           uuid        NOT NULL,
    integration_type text        NOT NULL,
    slot             timestamptz NOT NULL,
    status           text        NOT NULL CHECK (status IN ('healthy', 'degraded', 'unreachable')),
    latency_ms       integer     CHECK (latency_ms >= 0),
    checked_at       timestamptz NOT NULL,
    error_message    text,
    UNIQUE (org_id, integration_type, slot)
);

-- The contract with the sync scheduler: one row per scheduled period; the unique key is the
-- idempotency key that turns a retried report into an update rather than a second row.
CREATE TABLE public.integration_sync_runs (
    id               uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id           uuid        NOT NULL,
    integration_type text        NOT NULL,
    scheduled_for    timestamptz NOT NULL,
    started_at       timestamptz,
    finished_at      timestamptz,
    outcome          text        NOT NULL CHECK (outcome IN ('success', 'failure', 'running')),
    error_message    text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, integration_type, scheduled_for),
    CHECK (finished_at IS NULL OR started_at IS NULL OR finished_at >= started_at)
);

-- Keep the latest 96 history rows (24 h of 15-minute slots) per (org, type), in the inserting
-- transaction. Statement-level with a transition table: one set-based DELETE per INSERT statement,
-- whatever its row count, instead of one DELETE per inserted row.
CREATE FUNCTION public.health_check_history_prune() RETURNS trigger
LANGUAGE plpgsql
SET search_path = public, pg_temp
AS $$
BEGIN
    -- First the cutoff per key (its 96th newest slot, read backwards from the unique index: ~96 index
    -- entries per key), materialised so it is computed once per key; then the older rows of each key
    -- are deleted by index range. Never a scan of the whole table, never a DELETE per row.
    WITH cutoff AS MATERIALIZED (
        SELECT k.org_id, k.integration_type, (
            SELECT x.slot FROM health_check_history x
            WHERE x.org_id = k.org_id AND x.integration_type = k.integration_type
            ORDER BY x.slot DESC
            OFFSET 95 LIMIT 1) AS slot
        FROM (SELECT DISTINCT org_id, integration_type FROM inserted) k
    )
    DELETE FROM health_check_history h
    USING cutoff c
    WHERE c.slot IS NOT NULL
      AND h.org_id = c.org_id
      AND h.integration_type = c.integration_type
      AND h.slot < c.slot;
    RETURN NULL;
END
$$;

CREATE TRIGGER health_check_history_keep_96
AFTER INSERT ON public.health_check_history
REFERENCING NEW TABLE AS inserted
FOR EACH STATEMENT EXECUTE FUNCTION public.health_check_history_prune();
