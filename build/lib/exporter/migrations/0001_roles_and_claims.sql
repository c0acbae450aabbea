-- Roles and the one function that decides which organisations the caller may read.
-- Runs unchanged on plain PostgreSQL 15+ and on Supabase (where the roles already exist).

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
        CREATE ROLE anon NOLOGIN NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
        CREATE ROLE authenticated NOLOGIN NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        CREATE ROLE service_role NOLOGIN NOINHERIT;
    END IF;
END
$$;

GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;

-- The organisations the current request may read, from the JWT claims PostgREST / Supabase put in
-- `request.jwt.claims`: a top-level `org_id`, or `app_metadata.org_id` / `app_metadata.org_ids`
-- (where Supabase keeps custom claims). Values that are not UUIDs are ignored rather than raising,
-- so a malformed token reads nothing instead of erroring. Deployers with a membership table replace
-- this function (same name and signature); every policy calls it.
CREATE OR REPLACE FUNCTION public.integration_health_claimed_org_ids()
RETURNS uuid[]
LANGUAGE sql
STABLE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
    WITH claims AS (
        SELECT coalesce(nullif(current_setting('request.jwt.claims', true), ''), '{}')::jsonb AS c
    ),
    candidates AS (
        SELECT c ->> 'org_id' AS v FROM claims
        UNION ALL
        SELECT c -> 'app_metadata' ->> 'org_id' FROM claims
        UNION ALL
        SELECT jsonb_array_elements_text(
                   CASE WHEN jsonb_typeof(c -> 'app_metadata' -> 'org_ids') = 'array'
                        THEN c -> 'app_metadata' -> 'org_ids' ELSE '[]'::jsonb END)
        FROM claims
    )
    SELECT coalesce(array_agg(DISTINCT v::uuid), '{}')
    FROM candidates
    WHERE v ~* '^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$'
$$;

REVOKE ALL ON FUNCTION public.integration_health_claimed_org_ids() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.integration_health_claimed_org_ids() TO authenticated, service_role;
