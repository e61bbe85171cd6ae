#!/usr/bin/env bash
# Run the benchmarks on a stack of their own (.local/bench, ports apart from
# the test and demo stacks) and print their figures.
#   bash bench/run.sh [schedules] [reconcile] [events] [memory]   (default: schedules)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
STATE=$REPO/.local/bench
# every name given runs, in order; an unknown one stops before the stack starts
for b in "${@:-schedules}"; do
	[ -f "$REPO/bench/$b.py" ] || { echo "bench/run.sh: no benchmark $b (bench/$b.py)" >&2; exit 2; }
done
# the ports: those of the environment when set, else the bench stack's own
export AC_PG_PORT=${AC_PG_PORT:-5497} AC_TEMPORAL_PORT=${AC_TEMPORAL_PORT:-27333} \
	AC_TEMPORAL_HTTP_PORT=${AC_TEMPORAL_HTTP_PORT:-27343} AC_TEMPORAL_UI_PORT=${AC_TEMPORAL_UI_PORT:-28333} \
	AC_NATS_PORT=${AC_NATS_PORT:-24222} AC_NATS_MON_PORT=${AC_NATS_MON_PORT:-28222} \
	AC_METRICS_PORT=${AC_METRICS_PORT:-29090}

bash "$REPO/test/stack.sh" deps
PG_CONFIG=${PG_CONFIG:-$(bash "$REPO/test/pg.sh" "${PG:-18}")}
export PG_CONFIG
bash "$REPO/test/build.sh" "$PG_CONFIG"
bash "$REPO/test/stack.sh" clean "$STATE" >/dev/null 2>&1 || true
trap 'bash "$REPO/test/stack.sh" stop "$STATE" >/dev/null 2>&1 || true' EXIT
bash "$REPO/test/stack.sh" start "$STATE" test >/dev/null
# shellcheck disable=SC1091
source "$STATE/stack.env"
# benchmark-only functions, not part of the extension's install
bash "$REPO/test/stack.sh" psql "$STATE" -X -q -v ON_ERROR_STOP=1 <"$REPO/bench/setup.sql"
echo "activity_core benchmarks on $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"
for b in "${@:-schedules}"; do
	echo "== $b"
	"$REPO/.cache/venv/bin/python" "$REPO/bench/$b.py"
done
