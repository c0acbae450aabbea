-- A read-only role for reporting (the Grafana PostgreSQL datasource): reads status, history and sync
-- runs of every organisation, nothing else, writes nothing. Grant it to a login role you create:
--   CREATE ROLE grafana LOGIN PASSWORD '…' IN ROLE integration_health_reader;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'integration_health_reader') THEN
        CREATE ROLE integration_health_reader NOLOGIN;
    END IF;
END
$$;

GRANT USAGE ON SCHEMA public TO integration_health_reader;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['integration_health_status', 'health_check_history', 'integration_sync_runs']
    LOOP
        EXECUTE format('GRANT SELECT ON public.%I TO integration_health_reader', t);
        EXECUTE format('CREATE POLICY %I ON public.%I FOR SELECT TO integration_health_reader USING (true)',
                       t || '_reporting_read', t);
    END LOOP;
END
$$;
