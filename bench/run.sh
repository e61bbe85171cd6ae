#!/usr/bin/env bash
# Run the benchmarks on a stack of their own (.local/bench, ports apart from
# the test and demo stacks) and print their figures.
#   bash bench/run.sh [publish] [events] [schedules] [reconcile] [memory] ...   (default: schedules)
#   bash bench/run.sh all     what `make bench` runs (QUICK=1: small sizes, < 5 min),
#                             then bench/report.py writes docs/benchmarks.md and its plots
# Each benchmark also saves its figures to bench/results/<name>.json.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
STATE=$REPO/.local/bench
report=
if [ "${1:-}" = all ]; then
	# scrape_cost measures the /metrics endpoint, when the tree has it
	set -- publish events schedules $([ -f "$REPO/bench/scrape_cost.py" ] && echo scrape_cost) reconcile
	report=1
fi
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
# what the benchmarks need beyond the tests' packages (matplotlib for the plots)
req=$REPO/bench/requirements.txt
stamp=$REPO/.cache/venv/.bench-req-$(sha256sum "$req" | cut -c1-16)
if [ ! -e "$stamp" ]; then
	"$REPO/.cache/venv/bin/python" -m pip install -q --disable-pip-version-check -r "$req"
	rm -f "$REPO"/.cache/venv/.bench-req-*
	touch "$stamp"
fi
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
export BENCH_RESULTS=${BENCH_RESULTS:-$REPO/bench/results}
if [ -n "$report" ]; then rm -f "$BENCH_RESULTS"/*.json; fi
mkdir -p "$BENCH_RESULTS"
# the machine and the versions the figures were measured with
"$REPO/.cache/venv/bin/python" "$REPO/bench/env.py" >"$BENCH_RESULTS/env.json"
echo "activity_core benchmarks on $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"
for b in "${@:-schedules}"; do
	echo "== $b"
	"$REPO/.cache/venv/bin/python" "$REPO/bench/$b.py"
done
if [ -n "$report" ]; then
	"$REPO/.cache/venv/bin/python" "$REPO/bench/report.py"
fi
