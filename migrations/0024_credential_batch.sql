-- A cycle's credentials in a few round trips: one call of this function answers up to 10,000
-- (org_id, ref) pairs, where integration_health_credential() and integration_health_credential_expiry()
-- answer one each (at 100,000 integrations, 200,000 queries a cycle through a pool of 10 connections).
--
-- The same ownership rule as those two (migrations 0011 and 0018), pair by pair: a ref resolves only to the
-- secret named `<org_id>/<ref>`, or, when there is none, to the secret whose id is `ref` and whose name
-- carries that org's prefix and a plain name after it. A pair that resolves to nothing (malformed, missing,
-- another organisation's) returns no row: the caller cannot tell which. The org_ids and refs are the
-- tenant-written ones, so each pair is judged on its own; the arrays only carry them.
--
-- Each row: the pair as asked, the secret, and the `expires_at=` value of its description (text, parsed by
-- the service; NULL when there is none). Duplicated pairs are answered once.
--
-- SECURITY DEFINER like its companions (it reads vault.secrets and vault.decrypted_secrets as the role that
-- applied this migration); plpgsql so it can be created before any vault exists.
CREATE OR REPLACE FUNCTION public.integration_health_credentials(p_org_ids uuid[], p_refs text[])
RETURNS TABLE (org_id uuid, ref text, secret text, expires_at text)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = ''
AS $$
DECLARE
    plain constant text := '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$';
    secret_id constant text := '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$';
    most constant integer := 10000;  -- per call: the service sends its cycle in chunks below this
BEGIN
    IF p_org_ids IS NULL OR p_refs IS NULL THEN
        RETURN;
    END IF;
    IF cardinality(p_org_ids) <> cardinality(p_refs) THEN
        RAISE EXCEPTION 'integration_health_credentials: % org_ids but % refs',
            cardinality(p_org_ids), cardinality(p_refs) USING ERRCODE = '22023';
    END IF;
    IF cardinality(p_org_ids) > most THEN
        RAISE EXCEPTION 'integration_health_credentials: at most % pairs per call, not %',
            most, cardinality(p_org_ids) USING ERRCODE = '54000';
    END IF;

    RETURN QUERY
    WITH asked AS (
        SELECT DISTINCT a.o, a.r, a.o::text || '/' AS prefix
        FROM unnest(p_org_ids, p_refs) AS a(o, r)
        WHERE a.o IS NOT NULL AND a.r IS NOT NULL AND a.r ~ plain
    ),
    named AS (  -- `<org_id>/<ref>`
        SELECT q.o, q.r, s.id
        FROM asked AS q
        JOIN vault.secrets AS s ON s.name = q.prefix || q.r
    ),
    by_id AS (  -- only where no secret has that name, as in the single-pair functions
        SELECT q.o, q.r, s.id
        FROM asked AS q
        JOIN vault.secrets AS s
          ON s.id = CASE WHEN q.r ~* secret_id THEN q.r::uuid END  -- the cast only for a ref shaped like an id
        WHERE left(s.name, length(q.prefix)) = q.prefix
          AND substr(s.name, length(q.prefix) + 1) ~ plain
          AND NOT EXISTS (SELECT 1 FROM named AS n WHERE n.o = q.o AND n.r = q.r)
    ),
    resolved AS (
        SELECT * FROM named
        UNION ALL
        SELECT * FROM by_id
    )
    SELECT z.o, z.r, d.decrypted_secret,
           -- 0018's pattern, answered alike: no token, no regex; `+` then 64 characters, not `{1,64}`, which
           -- PostgreSQL's regex engine runs about 8 times slower (it was most of a batch's time)
           CASE WHEN strpos(s.description, 'expires_at=') > 0
                THEN left(substring(s.description FROM '(?:^|[\s;,])expires_at=([^\s;,]+)'), 64) END
    FROM resolved AS z
    JOIN vault.secrets AS s ON s.id = z.id
    JOIN vault.decrypted_secrets AS d ON d.id = z.id;
END
$$;

-- Only the service calls it (see 0011 on Supabase's default privileges).
REVOKE ALL ON FUNCTION public.integration_health_credentials(uuid[], text[]) FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.integration_health_credentials(uuid[], text[]) TO service_role;

COMMENT ON FUNCTION public.integration_health_credentials(uuid[], text[]) IS
    'For each (org_id, ref) pair, the secret <org_id>/<ref> (or with id ref and that prefix) and its expires_at= '
    'value, for integration-health; no row for a pair that resolves to none. At most 10000 pairs per call.';
