-- Read models for the app (PostgREST / supabase-js): one row per integration with everything an
-- organisation admin's screen shows, and the 24-hour timeline. Both run as the CALLER (a view with
-- security_invoker, a SECURITY INVOKER function), so the tables' row-level security decides what a
-- signed-in user sees: their own organisations' rows, nothing for anon. Nothing here is a second
-- definition of who may read what.

-- Per integration: the latest status and when it is checked next, failures in a row, the flags an admin
-- reads next to a failure (a maintenance window covered it; the vendor is down for everyone since …),
-- the credential's known expiry, availability over the last 24 h of history (the share of checked slots
-- that were not unreachable, slots in a maintenance window left out: the API's and the dashboard's
-- figure), and the last failure (the newest non-healthy slot the history still holds: at most 24 h back).
CREATE VIEW public.integration_health_overview WITH (security_invoker = true) AS
SELECT c.org_id,
       c.integration_type,
       c.enabled,
       c.health_mode,
       s.status,
       s.reason,
       s.error_message,
       s.latency_ms,
       s.checked_at                      AS last_check_at,
       s.next_check_at,
       COALESCE(s.consecutive_failures, 0) AS failures_in_a_row,
       COALESCE(s.maintenance, false)    AS maintenance,
       s.vendor_incident_since,
       s.credential_expires_at,
       a.checks_24h,
       a.maintenance_slots_24h,
       a.availability_24h,
       f.checked_at                      AS last_failure_at,
       f.status                          AS last_failure_status,
       f.reason                          AS last_failure_reason,
       f.error_message                   AS last_failure_message
FROM public.integration_config c
LEFT JOIN public.integration_health_status s
       ON s.org_id = c.org_id AND s.integration_type = c.integration_type
LEFT JOIN LATERAL (
    SELECT (count(*) FILTER (WHERE NOT h.maintenance))::integer AS checks_24h,
           (count(*) FILTER (WHERE h.maintenance))::integer AS maintenance_slots_24h,
           (avg((h.status <> 'unreachable')::int) FILTER (WHERE NOT h.maintenance))::double precision
               AS availability_24h
    FROM public.health_check_history h
    WHERE h.org_id = c.org_id AND h.integration_type = c.integration_type
      AND h.slot >= now() - interval '24 hours'
) a ON true
LEFT JOIN LATERAL (
    SELECT h.checked_at, h.status, h.reason, h.error_message
    FROM public.health_check_history h
    WHERE h.org_id = c.org_id AND h.integration_type = c.integration_type AND h.status <> 'healthy'
    ORDER BY h.slot DESC
    LIMIT 1
) f ON true;

COMMENT ON VIEW public.integration_health_overview IS
    'One row per integration for the app: status, next check, failures in a row, maintenance and vendor-incident '
    'flags, credential expiry, 24 h availability (maintenance left out), last failure. '
    'Runs as the caller: row-level security shows a user only their own organisations.';

-- The timeline, one row per checked slot, oldest first, for the last `hours` (1 to 24: history keeps 24 h).
-- PostgREST: POST /rest/v1/rpc/integration_health_timeline {"integration_type": "xledger"}; its query
-- filters (org_id=eq.…) apply to the rows returned.
CREATE FUNCTION public.integration_health_timeline(integration_type text DEFAULT NULL, hours integer DEFAULT 24)
RETURNS TABLE (org_id uuid, integration_type text, slot timestamptz, status text, reason text,
               latency_ms integer, checked_at timestamptz, error_message text, maintenance boolean,
               vendor_incident_since timestamptz)
LANGUAGE sql STABLE SECURITY INVOKER
SET search_path = ''
AS $$
    SELECT h.org_id, h.integration_type, h.slot, h.status, h.reason, h.latency_ms, h.checked_at, h.error_message,
           h.maintenance, h.vendor_incident_since
    FROM public.health_check_history h
    WHERE ($1 IS NULL OR h.integration_type = $1)
      AND h.slot >= now() - make_interval(hours => least(greatest(COALESCE($2, 24), 1), 24))
    ORDER BY h.org_id, h.integration_type, h.slot
$$;

-- Clients read through these, as themselves; anon gets nothing (0010: revoke what each migration creates).
REVOKE ALL ON public.integration_health_overview FROM PUBLIC, anon, authenticated;
GRANT SELECT ON public.integration_health_overview TO authenticated, service_role;
REVOKE ALL ON FUNCTION public.integration_health_timeline(text, integer) FROM PUBLIC, anon;
GRANT EXECUTE ON FUNCTION public.integration_health_timeline(text, integer) TO authenticated, service_role;
