-- Vendor-wide incidents: a result taken (or left standing) while its vendor was down for many
-- organisations at once carries the slot that incident began, so an organisation's admin reads that the
-- vendor is down for everyone, not that their own integration broke. NULL: no incident.

ALTER TABLE public.integration_health_status
    ADD COLUMN vendor_incident_since timestamptz;

ALTER TABLE public.health_check_history
    ADD COLUMN vendor_incident_since timestamptz;
