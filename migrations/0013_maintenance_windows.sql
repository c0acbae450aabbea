-- Maintenance windows: planned time (a vendor's upgrade, an organisation's migration) during which an
-- integration is still checked, but its results are flagged, no per-integration alert fires and the time
-- does not count against availability. org_id NULL: every organisation; integration_type NULL: every type.
-- Times are timestamptz (UTC inside); the API accepts any offset.

CREATE TABLE public.maintenance_window (
    id               uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id           uuid,
    integration_type text        CHECK (integration_type IS NULL OR integration_type ~ '^[A-Za-z0-9_.-]{1,64}$'),
    starts_at        timestamptz NOT NULL,
    ends_at          timestamptz NOT NULL,
    reason           text        NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
    created_by       text        NOT NULL DEFAULT 'operator' CHECK (length(created_by) BETWEEN 1 AND 200),
    created_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT maintenance_window_ends_after_start CHECK (ends_at > starts_at)
);

-- The scheduler asks for the windows not yet over each cycle; the index serves that range.
CREATE INDEX maintenance_window_ends_at ON public.maintenance_window (ends_at);

-- Results carry the flag: the status row (and the API) says "in maintenance"; availability leaves the
-- flagged history rows out.
ALTER TABLE public.integration_health_status ADD COLUMN maintenance boolean NOT NULL DEFAULT false;
ALTER TABLE public.health_check_history ADD COLUMN maintenance boolean NOT NULL DEFAULT false;

-- As 0003: ENABLE + FORCE; clients get SELECT only and RLS narrows it; only service_role writes.
-- An organisation reads its own windows and the global ones (org_id NULL), by the same claims function.
ALTER TABLE public.maintenance_window ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.maintenance_window FORCE ROW LEVEL SECURITY;
REVOKE ALL ON public.maintenance_window FROM PUBLIC, anon, authenticated;
GRANT SELECT ON public.maintenance_window TO authenticated;
GRANT SELECT, INSERT, UPDATE, DELETE ON public.maintenance_window TO service_role;
CREATE POLICY maintenance_window_read_own_org_and_global ON public.maintenance_window FOR SELECT TO authenticated
    USING (org_id IS NULL OR org_id IN (SELECT unnest(public.integration_health_claimed_org_ids())));
CREATE POLICY maintenance_window_service_role_all ON public.maintenance_window FOR ALL TO service_role
    USING (true) WITH CHECK (true);

-- As 0006: the reporting role (Grafana's annotations) reads every window, writes none.
GRANT SELECT ON public.maintenance_window TO integration_health_reader;
CREATE POLICY maintenance_window_reporting_read ON public.maintenance_window FOR SELECT
    TO integration_health_reader USING (true);
