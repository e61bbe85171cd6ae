#!/usr/bin/env bash
# Build and install the extension for the server of the given pg_config.
# Each server gets a build directory of its own under .cache/build (a copy
# of the working tree, refreshed on every call, so make rebuilds only what
# changed): objects built for one major never end up in another's library.
#
#   test/build.sh PG_CONFIG
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
PG_CONFIG=${1:?usage: test/build.sh PG_CONFIG}
dir=$REPO/.cache/build/$("$PG_CONFIG" --version | tr -c 'A-Za-z0-9.\n' '-')
mkdir -p "$dir"
tar -C "$REPO" --exclude=./.cache --exclude=./.local --exclude=./.git \
  --exclude='*.o' --exclude='*.so' -cf - . | tar -C "$dir" -xf -
make -C "$dir" -s PG_CONFIG="$PG_CONFIG"
make -C "$dir" -s PG_CONFIG="$PG_CONFIG" install >/dev/null
