#!/bin/sh
# First start of the compose database: a login for Grafana's PostgreSQL datasource, in the read-only
# reporting role that migration 0006 grants (created here first, so the grant has a target).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v pw="$GRAFANA_DB_PASSWORD" <<'SQL'
CREATE ROLE integration_health_reader NOLOGIN;
CREATE ROLE grafana LOGIN PASSWORD :'pw' IN ROLE integration_health_reader;
SQL
