#!/usr/bin/env bash
# Build and install the extension for the server of the given pg_config.
# Objects are rebuilt from scratch when the last build was for another
# server, so one checkout can be tested against every major in turn.
#
#   test/build.sh PG_CONFIG
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
PG_CONFIG=${1:?usage: test/build.sh PG_CONFIG}
stamp=$REPO/.cache/build-for
mkdir -p "$REPO/.cache"
if [ "$(cat "$stamp" 2>/dev/null)" != "$PG_CONFIG" ]; then
  make -C "$REPO" -s PG_CONFIG="$PG_CONFIG" clean >/dev/null
fi
make -C "$REPO" -s PG_CONFIG="$PG_CONFIG"
echo "$PG_CONFIG" >"$stamp"
make -C "$REPO" -s PG_CONFIG="$PG_CONFIG" install >/dev/null
