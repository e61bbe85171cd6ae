#!/usr/bin/env bash
# make fuzz: build the libFuzzer targets and run each for a bounded time.
#
#   bash test/fuzz/run.sh [TARGET...]     (default: cron envelope validate temporal)
#   FUZZ_SECONDS=N  seconds per target (default 180; make test uses 60)
#   FUZZ_RUNS=N     also stop a target after N executions (0: no limit)
#   FUZZ_OUT=DIR    build and work directory (default .cache/fuzz)
#
# cron is a standalone binary (cron.c is plain C).  envelope, validate and
# temporal run inside `postgres --single` on a throwaway cluster
# (.cache/fuzz/cluster) with the ASan runtime preloaded, calling
# ac_fuzz_run() of the fuzz-only library .cache/fuzz/ac_fuzz.so (see
# fuzz_driver.c).  Seeds come from test/fuzz/corpus/<target>; the growing
# corpus, the logs and any crash-*/leak-*/timeout-* inputs stay under
# .cache/fuzz/<target>/.  Prints executions, coverage and the result of
# each target; exits non-zero when any target reports anything.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
FUZZ=$REPO/test/fuzz
OUT=${FUZZ_OUT:-$REPO/.cache/fuzz}
SECONDS_PER=${FUZZ_SECONDS:-180}
RUNS=${FUZZ_RUNS:-0}
TARGETS=${*:-cron envelope validate temporal}
CLANG=clang-14
APT_PACKAGES=(clang-14 libclang-rt-14-dev)

# --- clang and libFuzzer from Debian, as test/stack.sh deps installs its own
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "fuzz: missing apt packages (${missing[*]}); run as root" >&2; exit 1; }
  echo "fuzz: installing apt packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
RT=$($CLANG -print-resource-dir)/lib/linux
ASAN_RT=$RT/libclang_rt.asan-x86_64.so
FUZZER_NO_MAIN=$RT/libclang_rt.fuzzer_no_main-x86_64.a

PG_CONFIG=${PG_CONFIG:-$(bash "$REPO/test/pg.sh" "${PG:-18}")}
PGBIN=$("$PG_CONFIG" --bindir)

# --- build (objects are few: rebuild every time)
mkdir -p "$OUT/obj"
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
CFLAGS="-g -O1 $SAN -Wall -Wextra -Werror -Wno-unused-parameter"
EXTVERSION=$(sed -n "s/^default_version = '\(.*\)'/\1/p" "$REPO/activity_core.control")
$CLANG $CFLAGS -fsanitize=fuzzer -I"$REPO/src" "$FUZZ/fuzz_cron.c" "$REPO/src/cron.c" \
  -o "$OUT/fuzz_cron"
# the server was built with gcc: clang ignores its gnu_printf format attribute
PGINC="-Wno-ignored-attributes -I$REPO/src -I$FUZZ -I$("$PG_CONFIG" --includedir-server) -DAC_VERSION=\"$EXTVERSION\""
objs=()
for f in src/catalog.c src/condition.c src/cron.c src/envelope.c src/ids.c src/limits.c src/temporal_json.c src/timezone.c src/validate.c \
         test/fuzz/fuzz_driver.c test/fuzz/fuzz_envelope.c test/fuzz/fuzz_temporal.c \
         test/fuzz/fuzz_validate.c; do
  o=$OUT/obj/$(basename "$f" .c).o
  # shellcheck disable=SC2086
  $CLANG $CFLAGS -fsanitize=fuzzer-no-link -fPIC $PGINC -c "$REPO/$f" -o "$o"
  objs+=("$o")
done
$CLANG -shared $SAN -shared-libsan -o "$OUT/ac_fuzz.so" "${objs[@]}" \
  -Wl,-Bsymbolic \
  -Wl,--whole-archive "$FUZZER_NO_MAIN" -Wl,--no-whole-archive -lstdc++ -ljansson

# --- the throwaway cluster of the in-server targets, as the postgres account
as_pg() {
  if [ "$(id -u)" = 0 ]; then
    (cd / && runuser -u postgres -- "$@")
  else
    "$@"
  fi
}
CLUSTER=$OUT/cluster
single() {
  # ASan's leak check at exit would report the server's own exit-time memory:
  # libFuzzer checks leaks per input itself (-detect_leaks=1)
  as_pg nice -n "${NICE:-0}" env LD_PRELOAD="$ASAN_RT" \
    ASAN_OPTIONS="detect_leaks=1:leak_check_at_exit=0:abort_on_error=0:allocator_may_return_null=1:detect_odr_violation=0:handle_abort=1" \
    UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
    "$PGBIN/postgres" --single -D "$CLUSTER" -c max_stack_depth=2MB postgres
}
case " $TARGETS " in
  *" envelope "*|*" validate "*|*" temporal "*)
    chmod a+rx "$OUT" && chmod a+r "$OUT/ac_fuzz.so"
    if [ ! -s "$CLUSTER/PG_VERSION" ] || [ "$(cat "$CLUSTER/PG_VERSION")" != "$("$PG_CONFIG" --version | sed 's/^PostgreSQL \([0-9]*\).*/\1/')" ]; then
      rm -rf "$CLUSTER"
      mkdir -p "$CLUSTER"
      [ "$(id -u)" = 0 ] && chown postgres "$CLUSTER"
      as_pg "$PGBIN/initdb" -D "$CLUSTER" -A trust -U postgres --no-sync >/dev/null
    fi
    # one statement a line: that is how --single reads its input
    echo "CREATE OR REPLACE FUNCTION ac_fuzz_run(text, text[]) RETURNS int AS '$OUT/ac_fuzz.so' LANGUAGE C STRICT" |
      single >"$OUT/create.log" 2>&1
    if grep -q 'ERROR\|FATAL' "$OUT/create.log"; then cat "$OUT/create.log" >&2; exit 1; fi
    ;;
esac

# --- run each target
status=0
printf '%-9s %12s %8s %6s %7s  %s\n' target executions exec/s cov corpus result
summary=()
for t in $TARGETS; do
  dir=$OUT/$t
  mkdir -p "$dir/corpus" "$dir/artifacts"
  rm -f "$dir/artifacts"/*
  [ "$(id -u)" = 0 ] && chown -R postgres "$dir"
  args=(-max_total_time="$SECONDS_PER" -runs="${RUNS/#0/-1}" -print_final_stats=1 -timeout=10
        -rss_limit_mb=2048 -malloc_limit_mb=512 -max_len=8192 -detect_leaks=1
        -artifact_prefix="$dir/artifacts/")
  [ -f "$FUZZ/$t.dict" ] && args+=(-dict="$FUZZ/$t.dict")
  args+=("$dir/corpus" "$FUZZ/corpus/$t")
  t0=$(date +%s)
  set +e
  if [ "$t" = cron ]; then
    as_pg nice -n 10 "$OUT/fuzz_cron" "${args[@]}" >"$dir/log" 2>&1
  else
    arr=$(printf "'%s'," "${args[@]}")
    echo "SELECT ac_fuzz_run('$t', ARRAY[${arr%,}]::text[])" | NICE=10 single >"$dir/log" 2>&1
  fi
  rc=$?
  set -e
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/log" | tail -1 || true)
  cov=$(grep -o 'cov: [0-9]*' "$dir/log" | tail -1 | cut -d' ' -f2 || true)
  secs=$(( $(date +%s) - t0 )); [ "$secs" -gt 0 ] || secs=1
  ncorp=$(ls "$dir/corpus" | wc -l)
  found=$(ls "$dir/artifacts" | wc -l)
  if [ "$rc" = 0 ] && [ "$found" = 0 ] && [ -n "$execs" ] && \
     ! grep -q 'ERROR: \(AddressSanitizer\|LeakSanitizer\|libFuzzer\)\|runtime error:' "$dir/log"; then
    result=ok
  else
    result="FAILED (rc $rc, $found inputs in $dir/artifacts; log $dir/log)"
    status=1
    grep -m1 -A30 'ERROR: \|runtime error:\|==ERROR\|fuzz_[a-z]*: ' "$dir/log" || tail -n 30 "$dir/log"
  fi
  printf '%-9s %12s %8s %6s %7s  %s\n' "$t" "${execs:-?}" "$(( ${execs:-0} / secs ))" "${cov:-?}" "$ncorp" "$result"
done
exit $status
