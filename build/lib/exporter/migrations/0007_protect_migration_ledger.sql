-- The migration ledger lives in public, which PostgREST exposes: nobody but its owner reads it.
-- RLS without policies (and not forced, so the owner that migrates still can).
ALTER TABLE public.integration_health_migrations ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON public.integration_health_migrations FROM PUBLIC, anon, authenticated, service_role;
