#!/usr/bin/env bash
# make demo: start the whole local stack under .local/demo (PostgreSQL with
# the extension, Temporal dev server with its UI, NATS JetStream, and the
# reference worker), load sample definitions and show what happened.  The
# stack keeps running; `make stop` stops it.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
STATE=$REPO/.local/demo

bash "$REPO/test/stack.sh" deps
PG_CONFIG=${PG_CONFIG:-$(bash "$REPO/test/pg.sh" "${PG:-18}")}
export PG_CONFIG
bash "$REPO/test/build.sh" "$PG_CONFIG"
# a restart picks up a freshly installed library
bash "$REPO/test/stack.sh" stop "$STATE" >/dev/null 2>&1 || true
bash "$REPO/test/stack.sh" start "$STATE" demo
bash "$REPO/test/stack.sh" worker-start "$STATE"
# shellcheck disable=SC1091
source "$STATE/stack.env"

# a demo database left by an older build gets the extension afresh
sum=$(md5sum "$REPO"/activity_core--*.sql | md5sum | cut -d' ' -f1)
if [ "$(cat "$STATE/extension.sum" 2>/dev/null)" != "$sum" ]; then
	psql -X -q -c "SET client_min_messages = warning" -c "DROP EXTENSION IF EXISTS activity_core CASCADE"
	echo "$sum" >"$STATE/extension.sum"
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
