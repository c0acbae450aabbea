-- Credentials that expire are known ahead (an Entra client secret lives at most 24 months), so the
-- monitor can warn before the vendor starts refusing them.
--
-- The convention (operator-controlled, like the names): a vault secret's `description` may carry a token
-- `expires_at=<ISO 8601>` anywhere in it, e.g. 'Acme Dynamics client secret; expires_at=2027-05-01T00:00:00Z'.
-- This companion of integration_health_credential() returns that value as text for the same secret (same
-- ownership rule: named <org_id>/<ref>, or with id ref and that prefix), or NULL; never the secret, never
-- another organisation's metadata. The service parses the value and ignores (with a warning) a malformed one.
CREATE OR REPLACE FUNCTION public.integration_health_credential_expiry(p_org_id uuid, p_ref text)
RETURNS text
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = ''
AS $$
DECLARE
    plain constant text := '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$';
    prefix text;
    found_description text;
BEGIN
    IF p_org_id IS NULL OR p_ref IS NULL OR p_ref !~ plain THEN
        RETURN NULL;
    END IF;
    prefix := p_org_id::text || '/';

    SELECT s.description INTO found_description
    FROM vault.secrets AS s
    WHERE s.name = prefix || p_ref;
    IF NOT FOUND AND p_ref ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
        SELECT s.description INTO found_description
        FROM vault.secrets AS s
        WHERE s.id = p_ref::uuid
          AND left(s.name, length(prefix)) = prefix
          AND substr(s.name, length(prefix) + 1) ~ plain;
    END IF;
    RETURN substring(found_description FROM '(?:^|[\s;,])expires_at=([^\s;,]{1,64})');
END
$$;

REVOKE ALL ON FUNCTION public.integration_health_credential_expiry(uuid, text) FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.integration_health_credential_expiry(uuid, text) TO service_role;

COMMENT ON FUNCTION public.integration_health_credential_expiry(uuid, text) IS
    'The expires_at= value in the description of the secret <org_id>/<ref> for integration-health; NULL otherwise.';

-- The last known expiry beside the status, so a restart keeps the metric (and its alert) until the next check.
ALTER TABLE public.integration_health_status
    ADD COLUMN credential_expires_at timestamptz;
