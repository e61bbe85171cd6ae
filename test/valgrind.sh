#!/usr/bin/env bash
# make valgrind-test: the whole cluster under valgrind memcheck (the
# postmaster is started by way of a wrapper; every process it forks, the
# router, the dispatcher, the metrics worker and the backends, stays under
# valgrind), the extension built with symbols (make DEBUG=1), a short load
# (test/memory/test_load.py at LOAD_SCALE=0.1) on a stack of its own
# (.local/valgrind).  Fails on any memcheck error, on any definite leak
# whose stack passes through activity_core.so, and on a process terminated
# by a signal.  Known noise of PostgreSQL and the libraries:
# test/valgrind.supp.  Options: docs/reliability.md.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
STATE=$REPO/.local/valgrind
OUT=/var/tmp/activity_core/valgrind-$(printf '%s' "$REPO" | sha256sum | cut -c1-12)
PG_CONFIG=${PG_CONFIG:-$(bash "$REPO/test/pg.sh" "${PG:-18}")}
export PG_CONFIG
command -v valgrind >/dev/null || { echo "valgrind.sh: valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }

rm -rf "$OUT"
mkdir -p "$OUT"
chmod 755 /var/tmp/activity_core
cp "$REPO/test/valgrind.supp" "$OUT/valgrind.supp"
# --trace-children=yes: follow an exec too (archive or restore commands; the
#   forks of the postmaster are followed anyway)
# --leak-check=full --show-leak-kinds=definite: every definite leak with
#   its stack, at the exit of every process
# --track-origins=yes: where uninitialised bytes came from
# --vex-iropt-register-updates=allregs-at-mem-access and
# --vgdb=no: exact registers at each access; no gdbserver per process
cat >"$OUT/postgres" <<EOF
#!/bin/sh
exec valgrind --trace-children=yes --child-silent-after-fork=no \\
	--log-file=$OUT/vg.%p --num-callers=30 --error-limit=no \\
	--leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=none \\
	--track-origins=yes --vgdb=no --suppressions=$OUT/valgrind.supp \\
	--gen-suppressions=all \\
	$("$PG_CONFIG" --bindir)/postgres "\$@"
EOF
chmod 755 "$OUT/postgres"
chown -R postgres "$OUT" 2>/dev/null || true

export AC_POSTGRES=$OUT/postgres AC_PG_START_TIMEOUT=600
export AC_BUILD=debug AC_TEST_STATE=$STATE
export LOAD_SCALE=${LOAD_SCALE:-0.1} LOAD_TIMEOUT=${LOAD_TIMEOUT:-900}
export AC_REGRESS=${AC_REGRESS:-}
export AC_PYTEST=${AC_PYTEST:--s memory/test_load.py}

status=0
bash "$REPO/test/run.sh" || status=$?
# stopped: every process has exited and written its leak summary
log=$(bash -c "source '$STATE/stack.env' && echo \$AC_PG_LOG")

echo "== valgrind ($OUT, $(find "$OUT" -name 'vg.*' | wc -l) processes)"
"$REPO/.cache/venv/bin/python" "$REPO/test/memory/vg_summary.py" "$OUT" || status=1
echo "== server log ($log)"
if [ ! -f "$log" ]; then
	echo "no server log: the stack did not start"
	status=1
elif grep -E "terminated by signal" "$log"; then
	status=1
else
	echo "no process terminated by a signal"
fi
echo "== valgrind-test: $([ $status = 0 ] && echo PASSED || echo FAILED)"
exit $status
