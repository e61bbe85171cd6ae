#!/usr/bin/env bash
# make demo: start the whole local stack under .local/demo (PostgreSQL with
# the extension, Temporal dev server with its UI, NATS JetStream, and the
# reference worker), load sample definitions and show what happened.  The
# stack keeps running; `make stop` stops it.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
STATE=$REPO/.local/demo

bash "$REPO/test/stack.sh" deps
# a demo cluster made earlier keeps the PostgreSQL it was made with, unless PG says otherwise
if [ -z "${PG:-}" ] && [ -z "${PG_CONFIG:-}" ] && [ -f "$STATE/stack.conf" ]; then
	old_bin=$(. "$STATE/stack.conf"; echo "${PGBIN:-/usr/lib/postgresql/15/bin}")
	[ -x "$old_bin/pg_config" ] && PG_CONFIG=$old_bin/pg_config
fi
PG_CONFIG=${PG_CONFIG:-$(bash "$REPO/test/pg.sh" "${PG:-18}")}
export PG_CONFIG
bash "$REPO/test/build.sh" "$PG_CONFIG"
# a restart picks up a freshly installed library
bash "$REPO/test/stack.sh" stop "$STATE" >/dev/null 2>&1 || true
bash "$REPO/test/stack.sh" start "$STATE" demo
bash "$REPO/test/stack.sh" worker-start "$STATE"
# shellcheck disable=SC1091
source "$STATE/stack.env"

# a demo database made by an older release is upgraded, never dropped
installed=$(psql -X -tAc "SELECT extversion FROM pg_extension WHERE extname = 'activity_core'")
if [ -n "$installed" ]; then
	psql -X -q -v ON_ERROR_STOP=1 -c "ALTER EXTENSION activity_core UPDATE"
	now=$(psql -X -tAc "SELECT extversion FROM pg_extension WHERE extname = 'activity_core'")
	[ "$installed" = "$now" ] || echo "activity_core upgraded from $installed to $now; the definitions are kept"
fi
psql -X -q -v ON_ERROR_STOP=1 -f "$REPO/examples/demo.sql"

cat <<INFO

activity_core demo is running.
  PostgreSQL   psql -h $PGHOST -p $PGPORT -U postgres $PGDATABASE
  Temporal UI  ${AC_TEMPORAL_UI:-http://127.0.0.1:8233}
  Temporal API $AC_TEMPORAL_URL
  NATS         $AC_NATS_URL (monitor $AC_NATS_MONITOR)
Stop it with: make stop
INFO
