-- Credentials belong to organisations. `integration_config.credential_ref` is written by tenant admins,
-- so it must not be able to name another organisation's secret. The convention (operator-controlled):
-- an organisation's vault secrets are named `<org_id>/<name>` (org_id in lower case, as uuid::text
-- prints it); `credential_ref` is the `<name>` part, or the id of a secret whose name carries that prefix.
--
-- This function is the one way the service reads the vault: it returns the secret for (org_id, ref)
-- or NULL (malformed, missing, or another organisation's: indistinguishable to the caller), never any
-- other row of vault.decrypted_secrets, so the service role needs no SELECT on the vault.
--
-- SECURITY DEFINER: it runs as the role that applied this migration, which must be able to read
-- vault.decrypted_secrets (on Supabase, `postgres` can; on plain PostgreSQL, the superuser that created
-- the demo's stand-in). plpgsql, not sql: its body is checked when called, so it can be created on a
-- database where no vault exists yet (the demo creates its stand-in after migrating).
CREATE OR REPLACE FUNCTION public.integration_health_credential(p_org_id uuid, p_ref text)
RETURNS text
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = ''
AS $$
DECLARE
    plain constant text := '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$';
    prefix text;
    found_secret text;
BEGIN
    IF p_org_id IS NULL OR p_ref IS NULL OR p_ref !~ plain THEN
        RETURN NULL;
    END IF;
    prefix := p_org_id::text || '/';

    SELECT s.decrypted_secret INTO found_secret
    FROM vault.decrypted_secrets AS s
    WHERE s.name = prefix || p_ref;
    IF found_secret IS NOT NULL THEN
        RETURN found_secret;
    END IF;

    -- By id: only when that secret's name carries this organisation's prefix and a plain name after it.
    IF p_ref ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
        SELECT s.decrypted_secret INTO found_secret
        FROM vault.decrypted_secrets AS s
        WHERE s.id = p_ref::uuid
          AND left(s.name, length(prefix)) = prefix
          AND substr(s.name, length(prefix) + 1) ~ plain;
    END IF;
    RETURN found_secret;
END
$$;

-- Only the service calls it. Supabase's default privileges grant EXECUTE on new functions in public to
-- anon and authenticated (PostgREST would expose it as an RPC), so those are revoked by name too.
REVOKE ALL ON FUNCTION public.integration_health_credential(uuid, text) FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.integration_health_credential(uuid, text) TO service_role;

COMMENT ON FUNCTION public.integration_health_credential(uuid, text) IS
    'The secret named <org_id>/<ref> (or with id ref and that prefix) for integration-health; NULL otherwise.';
