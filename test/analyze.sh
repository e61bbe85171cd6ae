#!/usr/bin/env bash
# make analyze: gcc -fanalyzer over every file of src/, in two passes, on a
# copy of the tree (.cache/build/analyze; nothing is installed):
#   1. as built: malloc/free, the libraries' allocations (nats.c, curl,
#      jansson), NULL results, leaks of malloc'd memory;
#   2. with test/analyze_palloc.h forced in: PostgreSQL's palloc family as
#      allocators paired with pfree (double pfree, use after pfree,
#      mismatched free/pfree); leaks off (memory contexts free in bulk).
# At -O0: at -O2 the analyzer sees through less.  Prints every finding and
# fails on any; the functions where the analyzer hit its exploration limit
# (-Wanalyzer-too-complex) are listed as a note, not a failure.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
PG_CONFIG=${PG_CONFIG:-$(bash "$REPO/test/pg.sh" "${PG:-18}")}
dir=$REPO/.cache/build/analyze
mkdir -p "$dir"
tar -C "$REPO" --exclude=./.cache --exclude=./.local --exclude=./.git \
  --exclude='*.o' --exclude='*.so' -cf - . | tar -C "$dir" -xf -
flags="-Wall -Wextra -Wno-unused-parameter -O0 -fanalyzer -Wanalyzer-too-complex"

status=0
pass() {
  local name=$1 extra=$2 log=$dir/analyze-$1.log findings
  make -C "$dir" -s clean PG_CONFIG="$PG_CONFIG" >/dev/null
  nice make -C "$dir" -s -k PG_CONFIG="$PG_CONFIG" PG_CFLAGS="$flags $extra" >"$log" 2>&1 || true
  findings=$(grep -E '(warning|error): ' "$log" | grep -v 'analyzer-too-complex' || true)
  echo "== pass $name: $(printf '%s' "$findings" | grep -c . || true) findings"
  if [ -n "$findings" ]; then
    status=1
    grep -v 'analyzer-too-complex' "$log" | grep -A12 -E '(warning|error): ' | head -200
  fi
  echo "   analyzer gave up early (too complex) in: $(grep 'analyzer-too-complex' "$log" |
    sed -n 's/^\(src\/[a-z_]*\.c\):.*/\1/p' | sort | uniq -c | awk '{printf "%s (%s) ", $2, $1}')"
}
pass malloc ""
pass palloc "-include $REPO/test/analyze_palloc.h -Wno-analyzer-malloc-leak"
make -C "$dir" -s clean PG_CONFIG="$PG_CONFIG" >/dev/null
echo "== analyze: $([ $status = 0 ] && echo PASSED || echo FAILED)"
exit $status
