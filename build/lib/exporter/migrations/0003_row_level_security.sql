-- Row-level security on every table, ENABLE + FORCE (the owner is not exempt either).
-- authenticated: SELECT of its own organisations' rows only. service_role: reads and writes all.
-- anon: nothing. Grants are explicit because Supabase's default privileges grant everything to
-- anon and authenticated on new tables; RLS is the second wall behind them.

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['integration_config', 'integration_health_status',
                             'health_check_history', 'integration_sync_runs']
    LOOP
        EXECUTE format('ALTER TABLE public.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE public.%I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('REVOKE ALL ON public.%I FROM PUBLIC, anon, authenticated', t);
        EXECUTE format('GRANT SELECT ON public.%I TO authenticated', t);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON public.%I TO service_role', t);
        EXECUTE format(
            'CREATE POLICY %I ON public.%I FOR SELECT TO authenticated '
            'USING (org_id IN (SELECT unnest(public.integration_health_claimed_org_ids())))',
            t || '_read_own_org', t);
        EXECUTE format(
            'CREATE POLICY %I ON public.%I FOR ALL TO service_role USING (true) WITH CHECK (true)',
            t || '_service_role_all', t);
    END LOOP;
END
$$;

GRANT USAGE, SELECT ON SEQUENCE public.health_check_history_id_seq TO service_role;
