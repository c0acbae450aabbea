-- Expected sync schedules (passive health, schedule adherence) and the state of the automatic
-- fallback to passive health after repeated throttling.

ALTER TABLE public.integration_config
    ADD COLUMN sync_cron                 text,
    ADD COLUMN sync_timezone             text    NOT NULL DEFAULT 'UTC',
    ADD COLUMN sync_period_seconds       integer CHECK (sync_period_seconds > 0),
    ADD COLUMN sync_grace_seconds        integer NOT NULL DEFAULT 900 CHECK (sync_grace_seconds >= 0),
    ADD COLUMN sync_max_duration_seconds integer NOT NULL DEFAULT 3600 CHECK (sync_max_duration_seconds > 0),
    ADD CONSTRAINT integration_config_one_sync_schedule CHECK (sync_cron IS NULL OR sync_period_seconds IS NULL);

ALTER TABLE public.integration_health_status
    ADD COLUMN rate_limited_streak integer NOT NULL DEFAULT 0 CHECK (rate_limited_streak >= 0),
    ADD COLUMN passive_until       timestamptz;
