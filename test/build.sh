#!/usr/bin/env bash
# Build and install the extension for the server of the given pg_config.
# Each server gets a build directory of its own under .cache/build (a copy
# of the working tree, refreshed on every call, so make rebuilds only what
# changed): objects built for one major never end up in another's library.
#
#   test/build.sh PG_CONFIG
# AC_BUILD=asan|debug builds with ASAN=1 / DEBUG=1 in a directory of its own.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
PG_CONFIG=${1:?usage: test/build.sh PG_CONFIG}
dir=$REPO/.cache/build/$("$PG_CONFIG" --version | tr -c 'A-Za-z0-9.\n' '-')${AC_BUILD:+-$AC_BUILD}
flags=()
case ${AC_BUILD:-} in
  '') ;;
  asan) flags=(ASAN=1) ;;
  debug) flags=(DEBUG=1) ;;
  *) echo "build.sh: AC_BUILD must be asan or debug, not '$AC_BUILD'" >&2; exit 2 ;;
esac
mkdir -p "$dir"
tar -C "$REPO" --exclude=./.cache --exclude=./.local --exclude=./.git \
  --exclude='*.o' --exclude='*.so' -cf - . | tar -C "$dir" -xf -
make -C "$dir" -s PG_CONFIG="$PG_CONFIG" "${flags[@]}"
make -C "$dir" -s PG_CONFIG="$PG_CONFIG" "${flags[@]}" install >/dev/null
