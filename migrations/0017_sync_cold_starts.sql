-- Cold starts of the sync function, and the one place the monitor reads sync runs from.
--
-- integration_config.sync_warmup_url: the sync function's endpoint, warmed a little before each scheduled
-- sync (tenant input: validated again by the exporter, which also applies its egress policy).
-- integration_sync_runs.cold_start / invocation_latency_ms: what the sync side reports about its own start.
-- integration_health_sync_runs_source: the view the exporter reads runs through. Deployers whose sync
-- component keeps its own log (the specification's bufdir_export_audit_log) may redefine it over that log,
-- as they may replace integration_health_claimed_org_ids(); README "The sync-run source" has an example.

ALTER TABLE public.integration_config
    ADD COLUMN sync_warmup_url text CHECK (length(sync_warmup_url) <= 2048);

ALTER TABLE public.integration_sync_runs
    ADD COLUMN cold_start            boolean,
    ADD COLUMN invocation_latency_ms integer CHECK (invocation_latency_ms BETWEEN 0 AND 86400000);

-- security_invoker: whoever reads the view is held to the rows RLS lets them read in the table under it
-- (a view otherwise runs with its owner's rights, and the owner bypasses RLS).
CREATE VIEW public.integration_health_sync_runs_source WITH (security_invoker = true) AS
SELECT org_id, integration_type, scheduled_for, started_at, finished_at, outcome, error_message,
       cold_start, invocation_latency_ms
FROM public.integration_sync_runs;

-- Supabase's default privileges grant every new relation to the client roles: take that back. The exporter
-- (service_role) reads it; apps read integration_sync_runs itself, under its policies.
REVOKE ALL ON public.integration_health_sync_runs_source FROM PUBLIC, anon, authenticated;
GRANT SELECT ON public.integration_health_sync_runs_source TO service_role;
