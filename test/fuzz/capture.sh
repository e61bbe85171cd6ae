#!/usr/bin/env bash
# Capture real replies of the Temporal dev server for the seed corpus of
# the temporal fuzz target (test/fuzz/corpus/temporal), from a running test
# stack (bash test/stack.sh start .local/test test).  Definitions made here
# are deleted again.  Each seed is one selector letter and the reply body,
# as fuzz_temporal.c reads it:
#   D  DescribeSchedule (compared with the definition the harness wants)
#   S  DescribeSchedule read for ac_schedules() (no comparison)
#   L  ListSchedules          R  ListWorkflowExecutions
#   B  ListScheduleMatchingTimes (a backfill)
#   E  an error body (the harness derives an HTTP status from its size)
#
#   bash test/fuzz/capture.sh [STATE_DIR]
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck disable=SC1091
source "${1:-$REPO/.local/test}/stack.env"
OUT=$REPO/test/fuzz/corpus/temporal
NS=default
T=$AC_TEMPORAL_URL/namespaces/$NS
mkdir -p "$OUT"

# the definition fuzz_temporal.c compares DescribeSchedule answers with
ID=00000000-0000-4000-8000-00000000f022
IDS="'$ID', '00000000-0000-4000-8000-00000000f023', '00000000-0000-4000-8000-00000000f024', '00000000-0000-4000-8000-00000000f025'"

sql() { psql -X -q -v ON_ERROR_STOP=1 -At -c "$1"; }
get() { curl --noproxy '*' -sS --max-time 10 "$@"; }
save() {
  local f
  f=$(mktemp)
  { printf '%s' "$1"; cat; } >"$f"
  chmod 644 "$f"
  mv "$f" "$OUT/$(sha1sum "$f" | cut -c1-40)"
}
# wait until a schedule exists, then save its description
describe() {
  for _ in $(seq 100); do
    if [ "$(get -o /dev/null -w '%{http_code}' "$T/schedules/activity-schedule-$2")" = 200 ]; then
      get "$T/schedules/activity-schedule-$2" | save "$1"
      return
    fi
    sleep 0.3
  done
  echo "capture.sh: schedule activity-schedule-$2 did not appear" >&2
  exit 1
}

sql "CREATE EXTENSION IF NOT EXISTS activity_core"
sql "DELETE FROM ac_activity_definitions WHERE id IN ($IDS)"
sql "INSERT INTO ac_activity_definitions (id, name, trigger_type, trigger_config, workflow_type, task_queue, input)
     VALUES ('$ID', 'fuzz-cron', 'cron',
             '{\"cron_expression\": \"0 9 * * MON-FRI\", \"timezone\": \"Europe/Berlin\"}',
             'FuzzWorkflow', 'fuzz-tq', '{\"k\": 1}'),
            ('00000000-0000-4000-8000-00000000f023', 'fuzz-every', 'cron',
             '{\"cron_expression\": \"@every 90m/5m\", \"misfire_policy\": \"catchup\"}',
             'FuzzWorkflow', 'fuzz-tq', '{\"list\": [1, 2.5, \"x\"], \"n\": null}'),
            ('00000000-0000-4000-8000-00000000f024', 'fuzz-seven', 'cron',
             '{\"cron_expression\": \"*/10 1-5/2,8 0 1,15 jan-jun 1-7 2026-2030 # c\", \"misfire_policy\": \"compress\"}',
             'FuzzWorkflow', 'fuzz-tq', '{}'),
            ('00000000-0000-4000-8000-00000000f025', 'fuzz-manual', 'manual', '{}',
             'FuzzWorkflow', 'fuzz-tq', '{\"m\": true}')"
describe D "$ID"
describe D 00000000-0000-4000-8000-00000000f023
describe S 00000000-0000-4000-8000-00000000f024
# disabled: paused, with a note
sql "UPDATE ac_activity_definitions SET enabled = false WHERE id = '$ID'"
for _ in $(seq 100); do
  get "$T/schedules/activity-schedule-$ID" | grep -q '"paused":true' && break
  sleep 0.3
done
get "$T/schedules/activity-schedule-$ID" | save D

# durations beyond int64 nanoseconds, as the server keeps and shows them
get -X POST "$T/schedules/fuzz-huge-durations" -d '{"requestId": "fuzz-capture", "schedule": {"spec": {"interval": [{"interval": "315576000000s", "phase": "1.5s"}]}, "action": {"startWorkflow": {"workflowId": "w", "workflowType": {"name": "t"}, "taskQueue": {"name": "q"}}}, "policies": {"catchupWindow": "315576000000s"}, "state": {"paused": true}}}' >/dev/null
get "$T/schedules/fuzz-huge-durations" | save D
get -X DELETE "$T/schedules/fuzz-huge-durations" >/dev/null

get "$T/schedules?maximumPageSize=100" | save L
get "$T/schedules?maximumPageSize=1" | save L
get "$T/schedules/activity-schedule-00000000-0000-4000-8000-00000000f023/matching-times?startTime=2026-01-01T00:00:00Z&endTime=2026-01-02T00:00:00Z" | save B
get "$T/schedules/activity-schedule-$ID/matching-times?startTime=2026-01-01T00:00:00Z&endTime=2026-01-01T01:00:00Z" | save B

sql "SELECT ac_trigger('00000000-0000-4000-8000-00000000f025')" >/dev/null
sleep 1
get "$T/workflows?pageSize=10" | save R
get "$T/workflows?pageSize=10&query=WorkflowType%3D%27NoSuchType%27" | save R

# errors: not found, already exists, invalid argument, unknown namespace, bad route
get "$T/schedules/activity-schedule-no-such" | save E
get -X POST "$T/schedules/activity-schedule-$ID" -d '{"requestId": "fuzz-capture", "schedule": {"spec": {"cronString": ["0 9 * * *"]}, "action": {"startWorkflow": {"workflowId": "w", "workflowType": {"name": "t"}, "taskQueue": {"name": "q"}}}}}' | save E
get -X POST "$T/schedules/fuzz-invalid" -d '{"requestId": "fuzz-capture", "schedule": {"spec": {"cronString": ["not a cron"]}, "action": {"startWorkflow": {"workflowId": "w", "workflowType": {"name": "t"}, "taskQueue": {"name": "q"}}}}}' | save E
get "$AC_TEMPORAL_URL/namespaces/no-such-namespace/schedules/x" | save E
get -X POST "$T/workflows/fuzz-wf" -d '{"workflowType": 5}' | save E
get "$AC_TEMPORAL_URL/no/such/route" | save E

sql "CREATE EXTENSION IF NOT EXISTS activity_core"
sql "DELETE FROM ac_activity_definitions WHERE id IN ($IDS)"
echo "capture.sh: $(ls "$OUT" | wc -l) replies in $OUT"
