"""Drift, field by field: each field of a schedule that the reconcile compares
(docs/schedules.md) is changed behind the extension's back over Temporal's
HTTP API, alone; ac_schedules() must name exactly that field, and
ac_sync_schedules() must repair exactly it and leave the schedule in sync.
Also: the reconcile after a failure is retried within 30 s, and
ac_sync_schedules() refuses REPEATABLE READ.
"""
import base64
import json
import uuid

import psycopg
import pytest

from conftest import log_offset, log_since, poll, schedule_id, temporal, wait_for, worker_pid

CONFIG = {"cron_expression": "*/5 9-17 * * mon-fri", "timezone": "Europe/Berlin",
          "misfire_policy": "catchup"}


def describe(sid):
    status, body = temporal("GET", f"/schedules/{sid}")
    assert status == 200, f"describe {sid}: HTTP {status} {body}"
    return body


def sync(conn, aid):
    """ac_sync_schedules() rows of aid: {schedule_id: (action, detail)}."""
    rows = conn.execute("SELECT activity_id::text, schedule_id, action, detail "
                        "FROM ac_sync_schedules()").fetchall()
    return {r[1]: (r[2], r[3]) for r in rows if r[0] == aid}


def drift_of(conn, sid):
    row = conn.execute("SELECT in_sync, drift FROM ac_schedules() WHERE schedule_id = %s",
                       (sid,)).fetchone()
    assert row is not None, f"{sid} not in ac_schedules()"
    return row


@pytest.fixture
def cron_def(conn):
    """One cron definition, applied in Temporal and in sync; removed afterwards."""
    aid = conn.execute(
        "INSERT INTO ac_activity_definitions (name, trigger_type, trigger_config, input) "
        "VALUES (%s, 'cron', %s, '{\"k\": 1}') RETURNING id::text",
        (f"drift-{uuid.uuid4().hex[:8]}", json.dumps(CONFIG))).fetchone()[0]
    assert conn.execute("SELECT ac_wait_sync('30s')").fetchone()[0]
    sid = schedule_id(aid)
    assert drift_of(conn, sid) == (True, None)
    yield aid
    conn.execute("DELETE FROM ac_activity_definitions WHERE id = %s", (aid,))
    conn.execute("SELECT ac_wait_sync('30s')")


def tamper(sid, change, check):
    """Update the schedule with change(schedule) applied; wait until Temporal shows it."""
    sched = describe(sid)["schedule"]
    change(sched)
    status, body = temporal("POST", f"/schedules/{sid}/update",
                            {"requestId": str(uuid.uuid4()), "schedule": sched})
    assert status == 200, body
    poll(lambda: check(describe(sid)["schedule"]), timeout=15)


def start_workflow(sched):
    return sched["action"]["startWorkflow"]


def expect_repair(conn, aid, field, repaired):
    """The schedule drifted in field alone; a sync repairs exactly that."""
    sid = schedule_id(aid)
    assert drift_of(conn, sid) == (False, field)
    assert sync(conn, aid) == {sid: ("updated", field)}
    poll(lambda: repaired(describe(sid)["schedule"]), timeout=15)
    assert wait_for(lambda: sync(conn, aid) == {}, timeout=10)
    assert drift_of(conn, sid) == (True, None)


def test_spec_drift_is_repaired(conn, cron_def):
    sid = schedule_id(cron_def)

    def change(s):
        s["spec"]["structuredCalendar"][0]["hour"] = [{"start": 3, "end": 3, "step": 1}]

    def hours(s):
        return [(h.get("start", 0), h.get("end", 0)) for h in s["spec"]["structuredCalendar"][0]["hour"]]

    def changed(s):
        assert hours(s) == [(3, 3)], hours(s)

    def repaired(s):
        assert hours(s) == [(9, 17)], hours(s)
    tamper(sid, change, changed)
    expect_repair(conn, cron_def, "spec", repaired)


def test_timezone_drift_is_repaired(conn, cron_def):
    sid = schedule_id(cron_def)

    def changed(s):
        assert s["spec"].get("timezoneName") == "Asia/Tokyo", s["spec"]

    def repaired(s):
        assert s["spec"].get("timezoneName") == "Europe/Berlin", s["spec"]
    tamper(sid, lambda s: s["spec"].__setitem__("timezoneName", "Asia/Tokyo"), changed)
    expect_repair(conn, cron_def, "timezone", repaired)


def test_overlap_policy_drift_is_repaired(conn, cron_def):
    sid = schedule_id(cron_def)

    def changed(s):
        assert s["policies"]["overlapPolicy"] == "SCHEDULE_OVERLAP_POLICY_ALLOW_ALL", s["policies"]

    def repaired(s):
        assert s["policies"]["overlapPolicy"] == "SCHEDULE_OVERLAP_POLICY_BUFFER_ALL", s["policies"]
    tamper(sid, lambda s: s["policies"].__setitem__("overlapPolicy", "SCHEDULE_OVERLAP_POLICY_ALLOW_ALL"),
           changed)
    expect_repair(conn, cron_def, "overlap_policy", repaired)


def test_catchup_window_drift_is_repaired(conn, cron_def):
    sid = schedule_id(cron_def)

    def changed(s):
        assert s["policies"].get("catchupWindow") == "60s", s["policies"]

    def repaired(s):
        # misfire_policy catchup: a catch-up window of one year
        assert s["policies"].get("catchupWindow") == "31536000s", s["policies"]
    tamper(sid, lambda s: s["policies"].__setitem__("catchupWindow", "60s"), changed)
    expect_repair(conn, cron_def, "catchup_window", repaired)


def test_paused_drift_is_repaired(conn, cron_def):
    sid = schedule_id(cron_def)
    status, body = temporal("POST", f"/schedules/{sid}/patch",
                            {"requestId": str(uuid.uuid4()), "patch": {"pause": "paused by an operator"}})
    assert status == 200, body
    assert wait_for(lambda: describe(sid)["schedule"]["state"].get("paused") is True)
    assert drift_of(conn, sid) == (False, "paused")
    assert sync(conn, cron_def) == {sid: ("resumed", "paused")}
    assert wait_for(lambda: not describe(sid)["schedule"]["state"].get("paused"))
    assert wait_for(lambda: sync(conn, cron_def) == {}, timeout=10)
    assert drift_of(conn, sid) == (True, None)


def test_workflow_type_drift_is_repaired(conn, cron_def):
    sid = schedule_id(cron_def)

    def changed(s):
        assert start_workflow(s)["workflowType"]["name"] == "OtherWorkflow", start_workflow(s)

    def repaired(s):
        assert start_workflow(s)["workflowType"]["name"] == "RunActivityWorkflow", start_workflow(s)
    tamper(sid, lambda s: start_workflow(s).__setitem__("workflowType", {"name": "OtherWorkflow"}), changed)
    expect_repair(conn, cron_def, "workflow_type", repaired)


def test_task_queue_drift_is_repaired(conn, cron_def):
    sid = schedule_id(cron_def)

    def changed(s):
        assert start_workflow(s)["taskQueue"]["name"] == "other-tq", start_workflow(s)

    def repaired(s):
        assert start_workflow(s)["taskQueue"]["name"] == "orchestrator-tq", start_workflow(s)
    tamper(sid, lambda s: start_workflow(s)["taskQueue"].__setitem__("name", "other-tq"), changed)
    expect_repair(conn, cron_def, "task_queue", repaired)


def test_workflow_id_drift_is_repaired(conn, cron_def):
    sid = schedule_id(cron_def)
    want = f"activity-{cron_def}:schedule"

    def changed(s):
        assert start_workflow(s)["workflowId"] == "someone-else", start_workflow(s)

    def repaired(s):
        assert start_workflow(s)["workflowId"] == want, start_workflow(s)
    tamper(sid, lambda s: start_workflow(s).__setitem__("workflowId", "someone-else"), changed)
    expect_repair(conn, cron_def, "workflow_id", repaired)


def argument(s):
    """The first input payload of the schedule's action, decoded."""
    p = start_workflow(s)["input"]
    if isinstance(p, dict):
        p = p["payloads"]
    p = p[0]
    if isinstance(p, dict) and set(p) == {"metadata", "data"}:
        return json.loads(base64.b64decode(p["data"]))
    return p


def test_input_drift_is_repaired(conn, cron_def):
    sid = schedule_id(cron_def)
    want = argument(describe(sid)["schedule"])
    assert want["input"] == {"k": 1}, want

    def change(s):
        start_workflow(s)["input"] = [dict(want, input={"k": 2})]

    def changed(s):
        assert argument(s)["input"] == {"k": 2}, argument(s)

    def repaired(s):
        assert argument(s) == want, argument(s)
    tamper(sid, change, changed)
    expect_repair(conn, cron_def, "input", repaired)


def search_attribute(s):
    p = start_workflow(s).get("searchAttributes", {}).get("indexedFields", {}).get("activity_id")
    if isinstance(p, dict) and "data" in p:
        return json.loads(base64.b64decode(p["data"]))
    return p


def test_search_attribute_drift_is_repaired(conn, cron_def):
    sid = schedule_id(cron_def)
    assert search_attribute(describe(sid)["schedule"]) == cron_def

    def change(s):
        p = start_workflow(s)["searchAttributes"]["indexedFields"]["activity_id"]
        p["data"] = base64.b64encode(b'"someone-else"').decode()

    def changed(s):
        assert search_attribute(s) == "someone-else", start_workflow(s)

    def repaired(s):
        assert search_attribute(s) == cron_def, start_workflow(s)
    tamper(sid, change, changed)
    expect_repair(conn, cron_def, "search_attribute", repaired)


@pytest.mark.parametrize("level", ["repeatable read", "serializable"])
def test_sync_schedules_refuses_repeatable_read(conn, level):
    with psycopg.connect(autocommit=True) as c:
        c.execute(f"BEGIN ISOLATION LEVEL {level}")
        assert c.execute("SHOW transaction_isolation").fetchone()[0] == level
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState,
                           match="ac_sync_schedules needs READ COMMITTED"):
            c.execute("SELECT * FROM ac_sync_schedules()")
        c.execute("ROLLBACK")


def reload(conn):
    conn.execute("SELECT pg_reload_conf()")


def test_failed_reconcile_is_retried_within_30_s(conn, cron_def):
    """The dispatcher's reconcile fails (Temporal unreachable); once Temporal
    answers again, the next try comes within 30 s, not a reconcile_interval
    (1 h here) later: a schedule deleted meanwhile is back by then."""
    sid = schedule_id(cron_def)
    url = conn.execute("SHOW activity_core.temporal_url").fetchone()[0]
    offset = log_offset()
    conn.execute("ALTER SYSTEM SET activity_core.reconcile_interval = '1h'")
    conn.execute("ALTER SYSTEM SET activity_core.temporal_url = 'http://127.0.0.1:1'")
    try:
        reload(conn)
        assert wait_for(lambda: conn.execute("SELECT setting FROM pg_settings WHERE name = "
                                             "'activity_core.temporal_url'").fetchone()[0]
                        == "http://127.0.0.1:1", timeout=5)
        # a new dispatcher reconciles at once, and fails
        old = worker_pid(conn, "activity_core dispatcher")
        conn.execute("SELECT pg_terminate_backend(%s)", (old,))
        worker_pid(conn, "activity_core dispatcher", timeout=30, other_than=old)
        assert wait_for(lambda: "could not list the schedules in Temporal" in log_since(offset),
                        timeout=30), log_since(offset)[-3000:]
        # Temporal answers again; meanwhile the schedule disappears
        conn.execute("ALTER SYSTEM RESET activity_core.temporal_url")
        reload(conn)
        assert wait_for(lambda: conn.execute("SHOW activity_core.temporal_url").fetchone()[0] == url,
                        timeout=5)
        status, body = temporal("DELETE", f"/schedules/{sid}")
        assert status == 200, body
        assert wait_for(lambda: temporal("GET", f"/schedules/{sid}")[0] == 404, timeout=10)
        # the retry recreates it within 30 s of the failure
        assert wait_for(lambda: temporal("GET", f"/schedules/{sid}")[0] == 200, timeout=45), \
            "the failed reconcile was not retried within 30 s"
        assert "reconcile checked" in log_since(offset)
    finally:
        conn.execute("ALTER SYSTEM RESET activity_core.reconcile_interval")
        conn.execute("ALTER SYSTEM RESET activity_core.temporal_url")
        reload(conn)
        conn.execute("SELECT ac_wait_sync('30s')")
