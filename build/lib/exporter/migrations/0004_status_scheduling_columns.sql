-- State the scheduler needs to survive restarts (backoff), and the failure reason and TLS expiry the
-- adapters report. Extra columns beside the spec's; readers of the spec's columns are unaffected.

ALTER TABLE public.integration_health_status
    ADD COLUMN reason               text,
    ADD COLUMN consecutive_failures integer     NOT NULL DEFAULT 0 CHECK (consecutive_failures >= 0),
    ADD COLUMN next_check_at        timestamptz,
    ADD COLUMN tls_expires_at       timestamptz;

ALTER TABLE public.health_check_history
    ADD COLUMN reason text;
