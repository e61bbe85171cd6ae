"""Reconciliation: Temporal converges to the table, with drift you can see.

Schedules are changed behind the extension's back with the real temporal
CLI (and over HTTP), then ac_sync_schedules() / the dispatcher's periodic
reconcile must repair them, and never touch schedules that are not ours.
"""
import json
import os
import subprocess
import uuid

import pytest

from conftest import expect_status, temporal, wait_for

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TEMPORAL = os.path.join(REPO, ".cache", "bin", "temporal")
ADDRESS = os.environ.get("AC_TEMPORAL_ADDRESS", "127.0.0.1:17233")
STATE = os.environ.get("AC_STATE", os.path.join(REPO, ".local", "test"))


def cli(*args):
    """Run the temporal CLI against the test server."""
    out = subprocess.run([TEMPORAL, *args, "--address", ADDRESS],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def describe(sid):
    """The schedule sid as Temporal describes it; None when not found (404).
    Any other status fails the test: a 5xx is no "absent"."""
    status, body = temporal("GET", f"/schedules/{sid}")
    expect_status(status, body, f"describe {sid}")
    return body if status == 200 else None


@pytest.fixture
def defs(conn, app):
    """Three cron definitions written by the application role, applied; removed afterwards."""
    tag = uuid.uuid4().hex[:8]
    rows = app.execute(
        "INSERT INTO ac_activity_definitions (name, trigger_type, trigger_config, input) VALUES "
        "(%s, 'cron', '{\"cron_expression\": \"*/5 9-17 * * mon-fri\", \"timezone\": \"Europe/Berlin\"}', '{\"k\": 1}'),"
        "(%s, 'cron', '{\"cron_expression\": \"@every 90m\", \"misfire_policy\": \"catchup\"}', '{}'),"
        "(%s, 'cron', '{\"cron_expression\": \"0 0 * * 5-7 # weekend\", \"misfire_policy\": \"compress\"}', '{}') "
        "RETURNING id::text",
        (f"rec-a-{tag}", f"rec-b-{tag}", f"rec-c-{tag}")).fetchall()
    ids = [r[0] for r in rows]
    assert app.execute("SELECT ac_wait_sync('30s')").fetchone()[0]
    yield ids
    conn.execute("DELETE FROM ac_activity_definitions WHERE id = ANY(%s::uuid[])", (ids,))
    conn.execute("SELECT ac_wait_sync('30s')")


def sync(conn, ids=None):
    """Run ac_sync_schedules(); return {schedule_id: (action, detail)}."""
    rows = conn.execute("SELECT activity_id::text, schedule_id, action, detail FROM ac_sync_schedules()").fetchall()
    return {r[1]: (r[2], r[3]) for r in rows if ids is None or r[0] in ids}


def test_in_sync_schedules_take_no_action(conn, defs, ops):
    assert sync(ops, defs) == {}
    rows = ops.execute("SELECT activity_id::text, in_sync, paused, jsonb_array_length(next_fire_times) "
                        "FROM ac_schedules()").fetchall()
    ours = {r[0]: r for r in rows if r[0] in defs}
    assert set(ours) == set(defs)
    assert all(r[1] for r in ours.values()), ours
    assert all(r[2] is False and r[3] > 0 for r in ours.values()), ours


def test_deleted_behind_our_back_is_recreated(conn, defs, ops):
    sid = f"activity-schedule-{defs[0]}"
    cli("schedule", "delete", "--schedule-id", sid)
    assert describe(sid) is None
    drift = {r[0]: r[1] for r in ops.execute("SELECT schedule_id, drift FROM ac_schedules()").fetchall()}
    assert drift[sid] == "missing"
    assert sync(ops, defs) == {sid: ("created", "missing")}
    body = describe(sid)
    assert body is not None
    assert body["schedule"]["spec"]["timezoneName"] == "Europe/Berlin"
    assert sync(ops, defs) == {}


def test_overlap_policy_and_cron_changed_behind_our_back_are_repaired(conn, defs, ops):
    a, b = f"activity-schedule-{defs[0]}", f"activity-schedule-{defs[1]}"
    # overlap policy changed over HTTP, the rest kept
    body = describe(b)
    sched = body["schedule"]
    sched["policies"]["overlapPolicy"] = "SCHEDULE_OVERLAP_POLICY_ALLOW_ALL"
    status, resp = temporal("POST", f"/schedules/{b}/update",
                            {"requestId": str(uuid.uuid4()), "schedule": sched})
    assert status == 200, resp
    # cron changed with the CLI
    cli("schedule", "update", "--schedule-id", a, "--cron", "0 3 * * *",
        "--type", "RunActivityWorkflow", "--task-queue", "orchestrator-tq",
        "--workflow-id", f"activity-{defs[0]}:schedule")
    assert wait_for(lambda: describe(b)["schedule"]["policies"]["overlapPolicy"].endswith("ALLOW_ALL"))
    assert wait_for(lambda: describe(a)["schedule"]["spec"]["structuredCalendar"][0]["hour"][0].get("start") == 3)

    actions = sync(ops, defs)
    assert actions[b] == ("updated", "overlap_policy")
    assert actions[a][0] == "updated" and "spec" in actions[a][1] and "timezone" in actions[a][1]
    assert set(actions) == {a, b}
    assert wait_for(lambda: describe(b)["schedule"]["policies"]["overlapPolicy"] == "SCHEDULE_OVERLAP_POLICY_BUFFER_ALL")
    assert wait_for(lambda: describe(a)["schedule"]["spec"].get("timezoneName") == "Europe/Berlin")
    hour = describe(a)["schedule"]["spec"]["structuredCalendar"][0]["hour"][0]
    assert (hour.get("start"), hour.get("end")) == (9, 17)
    assert wait_for(lambda: sync(ops, defs) == {}, timeout=10)


def test_durations_beyond_int64_nanoseconds_are_drift_and_repaired(conn, defs, ops):
    """A Temporal Duration reaches 315576000000 s, and the server shows a huge
    catchup window as 9223372036.854775807s: more nanoseconds than an int64
    holds.  Reconcile reads such a reply as drift (the fuzz target of the
    Temporal readers found the conversion out of range) and repairs it."""
    b = f"activity-schedule-{defs[1]}"
    sched = describe(b)["schedule"]
    sched["spec"]["interval"] = [{"interval": "315576000000s"}]
    sched["policies"]["catchupWindow"] = "315576000000s"
    status, resp = temporal("POST", f"/schedules/{b}/update",
                            {"requestId": str(uuid.uuid4()), "schedule": sched})
    assert status == 200, resp
    assert wait_for(lambda: describe(b)["schedule"]["spec"]["interval"][0]["interval"] == "315576000000s")
    assert describe(b)["schedule"]["policies"]["catchupWindow"] == "9223372036.854775807s"

    assert sync(ops, defs) == {b: ("updated", "spec, catchup_window")}
    assert wait_for(lambda: describe(b)["schedule"]["spec"]["interval"][0]["interval"] == "5400s")
    assert describe(b)["schedule"]["policies"]["catchupWindow"] != "9223372036.854775807s"
    assert wait_for(lambda: sync(ops, defs) == {}, timeout=10)


def test_paused_behind_our_back_is_resumed(conn, defs, ops):
    sid = f"activity-schedule-{defs[2]}"
    cli("schedule", "toggle", "--schedule-id", sid, "--pause", "--reason", "paused by an operator")
    assert wait_for(lambda: describe(sid)["schedule"]["state"].get("paused"))
    assert sync(ops, defs) == {sid: ("resumed", "paused")}
    assert wait_for(lambda: not describe(sid)["schedule"]["state"].get("paused"))
    assert sync(ops, defs) == {}


def test_orphan_deleted_and_foreign_schedule_survives(conn, defs, ops):
    orphan = f"activity-schedule-{uuid.uuid4()}"
    foreign = "nightly-report"
    for sid in (orphan, foreign):
        if describe(sid) is None:
            cli("schedule", "create", "--schedule-id", sid, "--cron", "0 1 * * *",
                "--type", "Report", "--task-queue", "reports", "--workflow-id", f"wf-{sid}")
    # the list endpoint is eventually consistent
    assert wait_for(lambda: orphan in json.dumps(temporal("GET", "/schedules")[1]), timeout=20)
    actions = sync(ops)
    assert actions.get(orphan) == ("deleted", "no cron definition")
    assert foreign not in actions
    assert describe(orphan) is None
    for _ in range(2):
        assert foreign not in sync(ops)
    assert describe(foreign) is not None
    temporal("DELETE", f"/schedules/{foreign}")


def test_total_loss_recreated_by_periodic_reconcile(conn, defs, ops):
    # the dev server restarts empty: every schedule is gone (checked before the
    # short reconcile interval is set, so that no reconcile can race the check)
    subprocess.run(["bash", os.path.join(REPO, "test", "stack.sh"), "reset-temporal", STATE],
                   check=True, capture_output=True, timeout=180)
    assert all(describe(f"activity-schedule-{i}") is None for i in defs)
    conn.execute("ALTER SYSTEM SET activity_core.reconcile_interval = '2s'")
    conn.execute("SELECT pg_reload_conf()")
    try:
        # nobody acts: the dispatcher's periodic reconcile brings them back
        assert wait_for(lambda: all(describe(f"activity-schedule-{i}") for i in defs), timeout=60, every=1)
        spec = describe(f"activity-schedule-{defs[0]}")["schedule"]["spec"]
        assert spec["timezoneName"] == "Europe/Berlin"
    finally:
        conn.execute("ALTER SYSTEM RESET activity_core.reconcile_interval")
        conn.execute("SELECT pg_reload_conf()")
    assert wait_for(lambda: sync(ops, defs) == {}, timeout=20)


def test_schedule_of_another_installation_is_left_alone(conn, defs, ops):
    """Another database with the extension may share the namespace: a schedule
    whose memo names another installation is never deleted as an orphan."""
    sid = f"activity-schedule-{uuid.uuid4()}"
    status, body = temporal("POST", f"/schedules/{sid}", {
        "requestId": str(uuid.uuid4()),
        "schedule": {"spec": {"cronString": ["0 1 * * *"]},
                     "action": {"startWorkflow": {"workflowId": f"wf-{sid}", "workflowType": {"name": "X"},
                                                  "taskQueue": {"name": "q"}}}},
        "memo": {"fields": {"managed_by": "activity_core", "installation": "1:1"}}})
    assert status == 200, body
    try:
        assert wait_for(lambda: sid in json.dumps(temporal("GET", "/schedules")[1]), timeout=20)
        assert sid not in sync(ops)
        assert describe(sid) is not None
        listed = [r[0] for r in ops.execute("SELECT schedule_id FROM ac_schedules()").fetchall()]
        assert sid not in listed
    finally:
        temporal("DELETE", f"/schedules/{sid}")


def test_worker_reconcile_holds_no_snapshot_while_temporal_answers(conn):
    """The dispatcher's reconcile reads the table, then waits on Temporal with
    no snapshot held, so a slow Temporal never holds back vacuum: with Temporal
    frozen mid-reconcile, the dispatcher is in its transaction but has no xmin."""
    from test_faults import freeze_temporal, thaw_temporal
    from conftest import poll
    conn.execute("ALTER SYSTEM SET activity_core.reconcile_interval = '1s'")
    conn.execute("SELECT pg_reload_conf()")
    freeze_temporal()
    try:
        def stuck_in_reconcile():
            row = conn.execute(
                "SELECT xact_start IS NOT NULL AND now() - xact_start > interval '1 second', "
                "backend_xmin::text, backend_xid::text FROM pg_stat_activity "
                "WHERE backend_type = 'activity_core dispatcher'").fetchone()
            assert row is not None and row[0], f"dispatcher not waiting in a reconcile: {row}"
            return row
        xmin_seen = []
        for _ in range(10):
            row = poll(stuck_in_reconcile, 20, 0.1)
            xmin_seen.append(row[1])
        assert xmin_seen == [None] * 10, f"the dispatcher held a snapshot: xmin {xmin_seen}"
        assert row[2] is None, f"the reconcile took a transaction id: {row[2]}"
    finally:
        thaw_temporal()
        conn.execute("ALTER SYSTEM RESET activity_core.reconcile_interval")
        conn.execute("SELECT pg_reload_conf()")
