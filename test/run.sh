#!/usr/bin/env bash
# make test: install what is needed, build and install the extension, start
# the real stack (PostgreSQL, Temporal dev server, NATS JetStream) in test
# mode, run pg_regress (sql/, expected/) and every pytest suite under test/,
# stop the stack, and exit non-zero on any failure.  PG=<major> (14 to 18,
# default 18) picks the PostgreSQL.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
STATE=${AC_TEST_STATE:-$REPO/.local/test}
t0=$(date +%s)

bash "$REPO/test/stack.sh" deps
# PG=<major> picks the server (test/pg.sh fetches it); default 18, the newest
PG_CONFIG=${PG_CONFIG:-$(bash "$REPO/test/pg.sh" "${PG:-18}")}
export PG_CONFIG
bash "$REPO/test/build.sh" "$PG_CONFIG"

bash "$REPO/test/stack.sh" clean "$STATE" >/dev/null 2>&1 || true
trap 'bash "$REPO/test/stack.sh" stop "$STATE" >/dev/null 2>&1 || true' EXIT
bash "$REPO/test/stack.sh" start "$STATE" test
# shellcheck disable=SC1091
source "$STATE/stack.env"

status=0

# pg_regress runs as the postgres account on a copy of the test files, so
# the checkout itself may stay unreadable to that account: `make
# installcheck`, as a packager runs it, in the database the workers serve.
REGRESS_DIR=$(dirname "$AC_PG_DATA")/regress
rm -rf "$REGRESS_DIR"
mkdir -p "$REGRESS_DIR"
cp -r "$REPO/sql" "$REPO/expected" "$REPO/Makefile" "$REPO/activity_core.control" "$REGRESS_DIR/"
chown -R postgres "$REGRESS_DIR" 2>/dev/null || true
# AC_REGRESS="a b" runs only those pg_regress files ("none": none)
tests=${AC_REGRESS:-$(cd "$REPO/sql" && ls *.sql | sed 's/\.sql$//' | sort)}
[ "$tests" = none ] && tests=
tests=$(echo $tests)
echo "== pg_regress (make installcheck): $(echo $tests | wc -w) files"
if [ -n "$tests" ] && ! (cd "$REGRESS_DIR" && runuser -u postgres -- \
	env PGHOST="$PGHOST" PGPORT="$PGPORT" PGUSER=postgres \
	make -s installcheck PG_CONFIG="$PG_CONFIG" REGRESS="$tests" \
	CONTRIB_TESTDB="$PGDATABASE" EXTRA_REGRESS_OPTS=--use-existing); then
	status=1
	cat "$REGRESS_DIR/regression.diffs" || true
	cp "$REGRESS_DIR/regression.diffs" "$REPO/regression.diffs" 2>/dev/null || true
fi

# AC_PYTEST="e2e/test_x.py -k y" narrows the end-to-end run (default: all of e2e)
echo "== pytest"
cd "$REPO/test"
# shellcheck disable=SC2086
if ! "$REPO/.cache/venv/bin/python" -m pytest -q -p no:cacheprovider ${AC_PYTEST:-e2e}; then
	status=1
	echo "---- last lines of the PostgreSQL log"
	tail -n 60 "$AC_PG_LOG" || true
fi

# the fuzz targets (test/fuzz), a minute each on a full run; a narrowed run
# (AC_REGRESS or AC_PYTEST set) skips them unless AC_FUZZ_SECONDS is given
fuzz_seconds=${AC_FUZZ_SECONDS:-$([ -z "${AC_REGRESS:-}${AC_PYTEST:-}" ] && echo 60 || echo 0)}
if [ "$fuzz_seconds" != 0 ]; then
	echo "== fuzz: $fuzz_seconds s per target"
	FUZZ_SECONDS=$fuzz_seconds bash "$REPO/test/fuzz/run.sh" || status=1
fi

echo "== make test took $(( $(date +%s) - t0 )) s"
exit $status
