#!/usr/bin/env bash
# make asan-test: the extension built with AddressSanitizer and
# UndefinedBehaviorSanitizer (make ASAN=1), loaded into an uninstrumented
# PostgreSQL whose postmaster has the sanitizer runtime preloaded; the whole
# pg_regress suite and a short load (test/memory/test_load.py) run against
# it on a stack of its own (.local/asan).  Fails when any sanitizer report
# file appears, when a report reaches the server log, or when a process of
# the cluster is terminated by a signal.  Options: docs/reliability.md.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
STATE=$REPO/.local/asan
# the reports, one file per reporting process (<prefix>.<pid>); the
# postgres account writes them
REPORTS=/var/tmp/activity_core/sanitizer-$(printf '%s' "$REPO" | sha256sum | cut -c1-12)
runtime=$(gcc -print-file-name=libasan.so)
[ -f "$runtime" ] || { echo "asan.sh: gcc has no libasan.so ($runtime)" >&2; exit 1; }

rm -rf "$REPORTS"
mkdir -p "$REPORTS"
chmod 755 /var/tmp/activity_core
chown postgres "$REPORTS" 2>/dev/null || true

# detect_leaks=0: every backend exits leaving PostgreSQL's memory contexts
#   to the exit (by design), and LeakSanitizer at each exit would report
#   them; leaks are valgrind-test's part.
# quarantine_size_mb=32: freed blocks stay poisoned for a while in every
#   one of the cluster's ~15 processes; the default 256 MB each is too much
#   for the machine.
# abort_on_error=0, disable_coredump=1: a report ends the process with
#   exit code 1 (the postmaster then restarts the cluster) and no core file.
# halt_on_error=0 (UBSan): report and go on, so one run shows them all.
ASAN_OPTIONS="detect_leaks=0:log_path=$REPORTS/asan:quarantine_size_mb=32"
ASAN_OPTIONS+=":abort_on_error=0:disable_coredump=1:strict_string_checks=1"
UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=0:log_path=$REPORTS/ubsan"
export AC_PG_ENV="LD_PRELOAD=$runtime ASAN_OPTIONS=$ASAN_OPTIONS UBSAN_OPTIONS=$UBSAN_OPTIONS"
export AC_BUILD=asan AC_TEST_STATE=$STATE
export AC_PYTEST=${AC_PYTEST:--s memory/test_load.py}

status=0
bash "$REPO/test/run.sh" || status=$?
# the stack is stopped now: the workers' and backends' exit paths ran too
log=$(bash -c "source '$STATE/stack.env' && echo \$AC_PG_LOG")

echo "== sanitizer reports ($REPORTS)"
reports=$(find "$REPORTS" -type f | sort)
if [ -n "$reports" ]; then
	status=1
	for f in $reports; do
		echo "---- $f"
		head -n 60 "$f"
	done
else
	echo "none"
fi
echo "== server log ($log)"
if [ ! -f "$log" ]; then
	echo "no server log: the stack did not start"
	status=1
elif grep -E "terminated by signal|AddressSanitizer|runtime error:|LeakSanitizer" "$log"; then
	status=1
else
	echo "no process terminated by a signal, no sanitizer output"
fi
echo "== asan-test: $([ $status = 0 ] && echo PASSED || echo FAILED)"
exit $status
