#!/usr/bin/env bash
# The project's entry point: ./dev.sh demo | ./dev.sh test [pytest args] | ./dev.sh <integration-health args>
# Creates .venv on first use and reinstalls when pyproject.toml changes.
set -euo pipefail
cd "$(dirname "$0")"
VENV=.venv
PG15_BIN=${EXPORTER_SYSTEM_PG_BIN:-/usr/lib/postgresql/15/bin}
CORE="exporter/core/*,exporter/engine/*"

ensure_venv() {
  if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "error: Python 3.11 or newer is needed as python3 (found: $(python3 --version 2>&1))" >&2
    exit 2
  fi
  if [ ! -x "$VENV/bin/python" ]; then
    echo "» creating the virtualenv in $VENV"
    python3 -m venv "$VENV" || {
      echo "error: python3 -m venv failed; on Debian/Ubuntu: sudo apt-get install python3-venv" >&2; exit 2; }
  fi
  local stamp="$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
  if [ ! -f "$stamp" ]; then
    echo "» installing Python packages into $VENV (first run takes a minute)"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -e ".[test]"
    touch "$stamp"
  fi
}

run_tests() {
  export PATH="$PWD/$VENV/bin:$PATH"
  coverage erase
  echo "» pass 1: the whole suite, database tests on the embedded PostgreSQL"
  coverage run -m pytest "$@"
  if [ -x "$PG15_BIN/postgres" ]; then
    echo "» pass 2: the database tests again on the system PostgreSQL ($PG15_BIN)"
    EXPORTER_TEST_PG_BIN="$PG15_BIN" coverage run --append -m pytest -m db "$@"
  elif [ "${CI:-}" = "true" ]; then
    echo "error: CI needs the system PostgreSQL 15 at $PG15_BIN (apt-get install postgresql-15)" >&2
    exit 1
  else
    echo "» note: no PostgreSQL 15 at $PG15_BIN, so the second database pass did not run" \
         "(sudo apt-get install postgresql-15 to run it)"
  fi
  echo "» branch coverage of the core (must be >= 85%)"
  coverage report --include="$CORE" --fail-under=85
}

ensure_venv
case "${1:-}" in
  test) shift; run_tests "$@" ;;
  "") echo "usage: ./dev.sh demo | ./dev.sh test | ./dev.sh <integration-health command>" >&2; exit 2 ;;
  *) exec "$VENV/bin/integration-health" "$@" ;;
esac
