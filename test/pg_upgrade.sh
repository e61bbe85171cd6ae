#!/usr/bin/env bash
# pg_upgrade with activity_core in place: build and install the extension for
# an old and a new PostgreSQL major, make a cluster on the old one with
# definitions of every kind and queued work, upgrade it with the new major's
# own pg_upgrade, and check on the new server that everything came through
# and still works.  Prints one line per check; exits non-zero on a failure.
#
#   test/pg_upgrade.sh OLD_MAJOR NEW_MAJOR       e.g. test/pg_upgrade.sh 14 18
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
OLD=${1:?usage: test/pg_upgrade.sh OLD_MAJOR NEW_MAJOR}
NEW=${2:?usage: test/pg_upgrade.sh OLD_MAJOR NEW_MAJOR}
PORT=${AC_UPGRADE_PORT:-5491}
WORK=$(mktemp -d /var/tmp/ac-pg-upgrade.XXXXXX)
chmod 755 "$WORK"
chown postgres "$WORK"
as_pg() { (cd "$WORK" && runuser -u postgres -- "$@"); }
fail() { echo "pg_upgrade $OLD -> $NEW: FAILED: $*" >&2; exit 1; }
PGC_OLD=$(AC_PG_FROM=pypi bash "$REPO/test/pg.sh" "$OLD")
PGC_NEW=$(AC_PG_FROM=pypi bash "$REPO/test/pg.sh" "$NEW")
BIN_OLD=$("$PGC_OLD" --bindir)
BIN_NEW=$("$PGC_NEW" --bindir)
stop_all() {
  as_pg "$BIN_OLD/pg_ctl" -D "$WORK/old" -m immediate -w stop >/dev/null 2>&1 || true
  as_pg "$BIN_NEW/pg_ctl" -D "$WORK/new" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap stop_all EXIT
bash "$REPO/test/build.sh" "$PGC_OLD"
bash "$REPO/test/build.sh" "$PGC_NEW"

psql_old() { as_pg "$BIN_OLD/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h "$WORK" -p "$PORT" -d up "$@"; }
psql_new() { as_pg "$BIN_NEW/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h "$WORK" -p "$PORT" -d up "$@"; }
start() {
  as_pg "$1/pg_ctl" -D "$WORK/$2" -l "$WORK/$2.log" -w -o "-p $PORT -k $WORK -c listen_addresses=''" start >/dev/null ||
    { tail -20 "$WORK/$2.log" >&2; fail "the $2 server did not start"; }
}

# the old cluster, with definitions and queued work
as_pg "$BIN_OLD/initdb" -D "$WORK/old" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >/dev/null
start "$BIN_OLD" old
as_pg "$BIN_OLD/createdb" -h "$WORK" -p "$PORT" -U postgres up
psql_old -U postgres >/dev/null <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION activity_core;
INSERT INTO ac_activity_definitions (id, name, trigger_type, trigger_config) VALUES
	('00000000-0000-0000-0000-0000000000c1', 'up-cron', 'cron',
	 '{"cron_expression": "30 2 * * *", "timezone": "europe/berlin", "misfire_policy": "catchup"}'),
	('00000000-0000-0000-0000-0000000000e1', 'up-event', 'event',
	 '{"event_type": "order.paid", "filters": {"region": "eu"}}'),
	('00000000-0000-0000-0000-0000000000a1', 'up-manual', 'manual', '{}');
SELECT ac_publish('order.paid', '{"region": "eu"}', 'up-event-1');
SELECT ac_trigger('00000000-0000-0000-0000-0000000000a1', '{"n": 1}', 'up-run');
SQL
snapshot='SELECT extversion FROM pg_extension WHERE extname = $$activity_core$$;
SELECT id, name, trigger_type, trigger_config, enabled FROM ac_activity_definitions ORDER BY id;
SELECT activity_id, revision FROM ac_schedule_intents ORDER BY activity_id;
SELECT subject, msg_id, convert_from(data, $$UTF8$$)::jsonb - $$occurred_at$$ FROM ac_outbox;
SELECT workflow_id, argument FROM ac_start_outbox;'
before=$(psql_old -U postgres <<<"$snapshot")
[ "$(echo "$before" | wc -l)" -eq 7 ] || fail "unexpected state before the upgrade: $before"
as_pg "$BIN_OLD/pg_ctl" -D "$WORK/old" -m fast -w stop >/dev/null

# the upgrade, with the new major's own pg_upgrade
# 18 turns data checksums on by default; pg_upgrade needs the old cluster's choice
checksums=()
if [ "$NEW" -ge 18 ] && [ "$OLD" -lt 18 ]; then checksums=(--no-data-checksums); fi
as_pg "$BIN_NEW/initdb" -D "$WORK/new" -U postgres -A trust -E UTF8 --locale=C.UTF-8 "${checksums[@]}" >/dev/null
if ! as_pg "$BIN_NEW/pg_upgrade" -b "$BIN_OLD" -B "$BIN_NEW" -d "$WORK/old" -D "$WORK/new" \
  -p "$PORT" -P "$PORT" -s "$WORK" -U postgres >"$WORK/pg_upgrade.log" 2>&1; then
  tail -30 "$WORK/pg_upgrade.log" >&2
  find "$WORK/new" -name '*.txt' -path '*pg_upgrade_output.d*' -exec cat {} + >&2 2>/dev/null || true
  fail "pg_upgrade refused"
fi
echo "pg_upgrade $OLD -> $NEW: pg_upgrade done"

start "$BIN_NEW" new
after=$(psql_new -U postgres <<<"$snapshot")
[ "$before" = "$after" ] || { diff <(echo "$before") <(echo "$after") >&2; fail "data differs after the upgrade"; }
echo "pg_upgrade $OLD -> $NEW: definitions, intents and outboxes came through unchanged"
out=$(psql_new -U postgres <<'SQL'
SET client_min_messages = warning;
INSERT INTO ac_activity_definitions (name, trigger_type, trigger_config)
VALUES ('after-upgrade', 'cron', '{"cron_expression": "@hourly"}');
UPDATE ac_activity_definitions SET enabled = false WHERE name = 'up-cron';
SELECT count(*) FROM ac_schedule_intents;
SELECT ac_check_cron('61 * * * *') IS NOT NULL;
SELECT matches FROM ac_explain_match('{"event_id": "x", "type": "order.paid", "payload": {"region": "eu"}}');
SELECT (SELECT server_version_num FROM (SELECT current_setting('server_version_num')::int AS server_version_num) v) / 10000;
SQL
)
expected=$(printf '2\nt\nt\n%s' "$NEW")
[ "$out" = "$expected" ] || fail "after the upgrade: got $(echo $out), expected $(echo $expected)"
echo "pg_upgrade $OLD -> $NEW: validation, intents and matching work on PostgreSQL $NEW"
echo "pg_upgrade $OLD -> $NEW: passed"
