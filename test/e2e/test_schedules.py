"""Cron definitions become Temporal Schedules, kept in step with the table.

Every test changes rows of ac_activity_definitions, lets the dispatcher
apply the change (ac_wait_sync), and then reads the outcome back from the
real Temporal server: DescribeSchedule for the schedule itself, and
ListWorkflowExecutions for the runs a backfill started.

Temporal applies schedule updates and patches asynchronously (they are
signals to the schedule's internal workflow), so reads of a schedule after
a change poll until the expected state shows up or a deadline passes; the
last assertion error is then reported as is.
"""
import base64
import json
import re
import os
import time
import urllib.parse
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest

from conftest import (TEMPORAL_URL, connect, describe_schedule, ensure_grants, described, http, insert_definition,
                      log_offset, log_since, payload_value, poll, schedule_gone, schedule_id, stack,
                      temporal, unique)

DISABLED_NOTE = "disabled in ac_activity_definitions"
ENABLED_NOTE = "enabled in ac_activity_definitions"
POLICIES = {
    "skip": ("SCHEDULE_OVERLAP_POLICY_SKIP", "60s"),
    "catchup": ("SCHEDULE_OVERLAP_POLICY_BUFFER_ALL", "31536000s"),
    "compress": ("SCHEDULE_OVERLAP_POLICY_BUFFER_ONE", "31536000s"),
}


# ---------------------------------------------------------------- helpers

def wait_sync(conn, timeout="30s"):
    """ac_wait_sync must report that every committed change is applied."""
    ok = conn.execute("SELECT ac_wait_sync(%s::interval)", (timeout,)).fetchone()[0]
    assert ok is True, f"ac_wait_sync({timeout}) timed out: {sync_status(conn)}"


def sync_status(conn, aid=None):
    """Rows of ac_sync_status as dicts (one dict when aid is given, or None)."""
    cur = conn.execute(
        "SELECT * FROM ac_sync_status" + (" WHERE activity_id = %s" if aid else ""),
        (aid,) if aid else ())
    cols = [d.name for d in cur.description]
    rows = [dict(zip(cols, r)) for r in cur.fetchall()]
    if aid is None:
        return rows
    return rows[0] if rows else None


def sync_row(conn, aid):
    cur = conn.execute("SELECT * FROM ac_schedule_sync WHERE activity_id = %s", (aid,))
    row = cur.fetchone()
    return dict(zip([d.name for d in cur.description], row)) if row else None


def ranges(field):
    """Normalise a structuredCalendar field: omitted start=0, end=start, step=1."""
    out = []
    for r in field or [{}]:
        start = r.get("start", 0)
        end = r.get("end", start)
        out.append((start, max(end, start), r.get("step", 1)))
    return out


def calendar(body):
    cals = body["schedule"]["spec"].get("structuredCalendar", [])
    assert len(cals) == 1, f"expected one calendar: {body['schedule']['spec']}"
    return {k: ranges(cals[0].get(k)) for k in
            ("second", "minute", "hour", "dayOfMonth", "month", "dayOfWeek", "year")}


def future_times(body, tz):
    times = body["info"].get("futureActionTimes", [])
    assert times, f"no future action times: {body['info']}"
    return [datetime.fromisoformat(t.replace("Z", "+00:00")).astimezone(ZoneInfo(tz))
            for t in times]


def rfc3339(dt):
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def insert_cron(conn, name, cron, tz=None, policy=None, max_runs=None, enabled=True,
                input=None, workflow_type=None, task_queue=None):
    cfg = {"cron_expression": cron}
    if tz is not None:
        cfg["timezone"] = tz
    if policy is not None:
        cfg["misfire_policy"] = policy
    if max_runs is not None:
        cfg["max_catchup_runs"] = max_runs
    cols = {"name": name, "trigger_type": "cron", "trigger_config": json.dumps(cfg),
            "enabled": enabled}
    return insert_definition(conn, cols, input=None if input is None else json.dumps(input),
                             workflow_type=workflow_type, task_queue=task_queue)


def set_config(conn, aid, **changes):
    """Merge keys into trigger_config of one definition."""
    conn.execute("UPDATE ac_activity_definitions SET trigger_config = trigger_config || %s::jsonb "
                 "WHERE id = %s", (json.dumps(changes), aid))


def expect_minute(body, minute):
    assert calendar(body)["minute"] == [(minute, minute, 1)], calendar(body)


def expect_paused(body):
    state = body["schedule"].get("state", {})
    assert state.get("paused") is True, state
    assert state.get("notes") == DISABLED_NOTE, state


def expect_running(body):
    state = body["schedule"].get("state", {})
    assert not state.get("paused", False), state
    assert state.get("notes") == ENABLED_NOTE, state


def assert_applied(conn, aid):
    st = sync_status(conn, aid)
    assert st is not None, f"no ac_sync_status row for {aid}"
    assert not st["pending"], st
    assert st["applied_revision"] == st["desired_revision"], st
    assert st["last_error"] is None and st["error_kind"] is None, st
    assert st["schedule_id"] == schedule_id(aid), st
    return st


def settle(conn, ids, timeout=60.0):
    """Wait, without ac_wait_sync, until no change of these definitions is pending."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = conn.execute("SELECT count(*) FROM ac_sync_status WHERE activity_id = ANY(%s::uuid[]) "
                         "AND pending", (list(ids),)).fetchone()[0]
        if n == 0:
            return
        time.sleep(0.2)


@pytest.fixture
def defs(conn):
    """Collects the ids a test creates; deletes those rows afterwards."""
    ids = []
    yield ids
    if ids:
        conn.execute("DELETE FROM ac_activity_definitions WHERE id = ANY(%s::uuid[])", (ids,))
        settle(conn, ids)


# ---------------------------------------------------------------- create / update

def test_create_describes_spec_action_policies_and_search_attributes(conn, defs, app):
    name = unique("report")
    payload = {"report": "sales", "regions": ["eu", "us"], "n": 3}
    aid = insert_cron(app, name, "30 9 * * 1-5", tz="Europe/Berlin", policy="catchup",
                      input=payload)
    defs.append(aid)
    wait_sync(conn)

    st = assert_applied(conn, aid)
    assert st["name"] == name and st["trigger_type"] == "cron" and st["enabled"] is True
    assert st["desired_revision"] > 0 and st["last_applied_at"] is not None

    body = described(aid)
    sched = body["schedule"]

    # spec: the cron string compiled into a calendar, in the definition's zone
    assert sched["spec"]["timezoneName"] == "Europe/Berlin"
    assert calendar(body) == {
        "second": [(0, 0, 1)], "minute": [(30, 30, 1)], "hour": [(9, 9, 1)],
        "dayOfMonth": [(1, 31, 1)], "month": [(1, 12, 1)], "dayOfWeek": [(1, 5, 1)],
        "year": [(0, 0, 1)],
    }
    for t in future_times(body, "Europe/Berlin"):
        assert (t.hour, t.minute, t.second) == (9, 30, 0), t
        assert t.weekday() < 5, t

    # action: start the workflow with the definition as its single argument
    start = sched["action"]["startWorkflow"]
    assert start["workflowId"] == f"activity-{aid}:schedule"
    assert start["workflowType"]["name"] == "RunActivityWorkflow"
    assert start["taskQueue"]["name"] == "orchestrator-tq"
    assert [payload_value(a) for a in start["input"]] == [
        {"activity_id": aid, "activity_name": name, "trigger": "cron", "input": payload}]
    assert payload_value(start["searchAttributes"]["indexedFields"]["activity_id"]) == aid

    # policies of misfire_policy catchup, running
    assert sched["policies"]["overlapPolicy"] == "SCHEDULE_OVERLAP_POLICY_BUFFER_ALL"
    assert sched["policies"]["catchupWindow"] == "31536000s"
    assert not sched.get("state", {}).get("paused", False)

    # the schedule itself is findable by activity_id, and says who manages it
    assert payload_value(body["searchAttributes"]["indexedFields"]["activity_id"]) == aid
    memo = {k: payload_value(v) for k, v in body.get("memo", {}).get("fields", {}).items()}
    installation = memo.pop("installation", "")
    assert memo == {"managed_by": "activity_core", "activity_name": name}
    # which database made it: the cluster's system identifier and the database oid
    assert re.fullmatch(r"\d+:\d+", installation), installation


def test_create_with_custom_workflow_type_and_task_queue(conn, defs, app):
    name = unique("custom")
    aid = insert_cron(app, name, "@hourly", workflow_type="ReportWorkflow",
                      task_queue="reports-tq")
    defs.append(aid)
    wait_sync(conn)
    assert_applied(conn, aid)

    body = described(aid)
    start = body["schedule"]["action"]["startWorkflow"]
    assert start["workflowType"]["name"] == "ReportWorkflow"
    assert start["taskQueue"]["name"] == "reports-tq"
    assert body["schedule"]["spec"]["timezoneName"] == "UTC"
    assert calendar(body)["minute"] == [(0, 0, 1)]
    assert calendar(body)["hour"] == [(0, 23, 1)]
    # default misfire policy is skip
    assert body["schedule"]["policies"]["overlapPolicy"] == "SCHEDULE_OVERLAP_POLICY_SKIP"
    assert body["schedule"]["policies"]["catchupWindow"] == "60s"


def test_update_cron_timezone_and_policy_reach_temporal(conn, defs, app):
    name = unique("update")
    aid = insert_cron(app, name, "0 6 * * *", tz="UTC", policy="skip", input={"v": 1})
    defs.append(aid)
    wait_sync(conn)
    first = described(aid)
    assert calendar(first)["hour"] == [(6, 6, 1)]
    assert first["schedule"]["spec"]["timezoneName"] == "UTC"
    rev1 = assert_applied(conn, aid)["applied_revision"]

    new_name = unique("update-renamed")
    conn.execute(
        "UPDATE ac_activity_definitions SET name = %s, input = %s, workflow_type = 'OtherWorkflow', "
        "task_queue = 'other-tq', trigger_config = %s WHERE id = %s",
        (new_name, json.dumps({"v": 2}),
         json.dumps({"cron_expression": "45 17 * * 0", "timezone": "America/New_York",
                     "misfire_policy": "compress"}), aid))
    wait_sync(conn)
    st = assert_applied(conn, aid)
    assert st["applied_revision"] > rev1

    def updated(body):
        sched = body["schedule"]
        assert sched["spec"]["timezoneName"] == "America/New_York"
        cal = calendar(body)
        assert cal["hour"] == [(17, 17, 1)] and cal["minute"] == [(45, 45, 1)], cal
        assert cal["dayOfWeek"] == [(0, 0, 1)], cal
        assert sched["policies"]["overlapPolicy"] == "SCHEDULE_OVERLAP_POLICY_BUFFER_ONE"
        assert sched["policies"]["catchupWindow"] == "31536000s"
        start = sched["action"]["startWorkflow"]
        assert start["workflowType"]["name"] == "OtherWorkflow"
        assert start["taskQueue"]["name"] == "other-tq"
        assert start["workflowId"] == f"activity-{aid}:schedule"
        assert [payload_value(a) for a in start["input"]] == [
            {"activity_id": aid, "activity_name": new_name, "trigger": "cron", "input": {"v": 2}}]

    body = described(aid, updated)
    for t in future_times(body, "America/New_York"):
        assert (t.hour, t.minute) == (17, 45) and t.weekday() == 6, t

    # a change of the zone alone moves the fire times
    set_config(app, aid, timezone="Asia/Tokyo")
    wait_sync(conn)

    def tokyo(body):
        assert body["schedule"]["spec"]["timezoneName"] == "Asia/Tokyo"
        for t in future_times(body, "Asia/Tokyo"):
            assert (t.hour, t.minute) == (17, 45) and t.weekday() == 6, t
    described(aid, tokyo)


# ---------------------------------------------------------------- pause / delete

def test_disable_pauses_and_enable_resumes(conn, defs, app):
    aid = insert_cron(app, unique("pause"), "*/5 * * * *")
    defs.append(aid)
    wait_sync(conn)
    described(aid, expect_running)
    assert sync_row(conn, aid)["paused_at"] is None

    app.execute("UPDATE ac_activity_definitions SET enabled = false WHERE id = %s", (aid,))
    wait_sync(conn)
    st = assert_applied(conn, aid)
    assert st["enabled"] is False

    described(aid, expect_paused)
    assert sync_row(conn, aid)["paused_at"] is not None

    app.execute("UPDATE ac_activity_definitions SET enabled = true WHERE id = %s", (aid,))
    wait_sync(conn)
    assert_applied(conn, aid)
    described(aid, expect_running)
    assert sync_row(conn, aid)["paused_at"] is None


def test_created_disabled_is_paused_from_the_start(conn, defs, app):
    aid = insert_cron(app, unique("born-paused"), "0 3 * * *", enabled=False)
    defs.append(aid)
    wait_sync(conn)
    assert_applied(conn, aid)

    described(aid, expect_paused)


def test_delete_row_deletes_schedule(conn, defs, app):
    aid = insert_cron(app, unique("delete"), "0 4 * * *")
    defs.append(aid)
    wait_sync(conn)
    described(aid)

    with conn.transaction():
        conn.execute("DELETE FROM ac_activity_definitions WHERE id = %s", (aid,))
        # the deletion is a pending change of a deleted definition
        st = sync_status(conn, aid)
        assert st is not None, "no ac_sync_status row for the deleted definition"
        assert st["deleted"] is True and st["pending"] is True, st
        assert st["schedule_id"] == schedule_id(aid), st
    wait_sync(conn)
    schedule_gone(aid, grpc_code=5)
    assert sync_status(conn, aid) is None


def test_deleted_definition_leaves_no_sync_rows(conn, defs, app):
    """Once its schedule is deleted, a deleted definition leaves no trace in
    the outbox tables (schedule.c: "a deleted definition whose schedule is
    gone leaves no trace")."""
    aid = insert_cron(app, unique("no-trace"), "0 5 * * *")
    defs.append(aid)
    wait_sync(conn)
    described(aid)
    app.execute("DELETE FROM ac_activity_definitions WHERE id = %s", (aid,))
    wait_sync(conn)
    schedule_gone(aid, grpc_code=5)
    intents = conn.execute("SELECT count(*) FROM ac_schedule_intents WHERE activity_id = %s",
                           (aid,)).fetchone()[0]
    assert intents == 0
    assert sync_row(conn, aid) is None


def test_cron_to_event_deletes_schedule_and_back_recreates_it(conn, defs, app):
    name = unique("switch")
    aid = insert_cron(app, name, "15 8 * * *")
    defs.append(aid)
    wait_sync(conn)
    described(aid)

    app.execute("UPDATE ac_activity_definitions SET trigger_type = 'event', "
                 "trigger_config = %s WHERE id = %s",
                 (json.dumps({"event_type": f"orders.{name}"}), aid))
    wait_sync(conn)
    schedule_gone(aid, grpc_code=5)
    st = sync_status(conn, aid)
    assert st["trigger_type"] == "event" and not st["pending"] and st["last_error"] is None, st

    app.execute("UPDATE ac_activity_definitions SET trigger_type = 'cron', "
                 "trigger_config = %s WHERE id = %s",
                 (json.dumps({"cron_expression": "20 8 * * *"}), aid))
    wait_sync(conn)
    assert_applied(conn, aid)
    described(aid, lambda b: expect_minute(b, 20))


def test_rolled_back_insert_creates_nothing(conn):
    aid = None
    with conn.transaction() as tx:
        aid = insert_cron(conn, unique("rollback"), "0 7 * * *")
        # inside the transaction the intent exists...
        n = conn.execute("SELECT count(*) FROM ac_schedule_intents WHERE activity_id = %s",
                         (aid,)).fetchone()[0]
        assert n == 1
        raise psycopg.Rollback(tx)
    # ...and after the rollback nothing is left, nothing reaches Temporal: a
    # sentinel committed afterwards is applied first (the positive control)
    sentinel = insert_cron(conn, unique("rollback-sentinel"), "0 8 * * *")
    try:
        wait_sync(conn)
        described(sentinel)
    finally:
        conn.execute("DELETE FROM ac_activity_definitions WHERE id = %s", (sentinel,))
    status, body = describe_schedule(aid)
    assert status == 404, body
    assert conn.execute("SELECT count(*) FROM ac_schedule_intents WHERE activity_id = %s",
                        (aid,)).fetchone()[0] == 0
    assert sync_row(conn, aid) is None
    assert sync_status(conn, aid) is None
    status, body = describe_schedule(aid)
    assert status == 404, body


def test_misfire_policy_round_trip(conn, defs, app):
    aid = insert_cron(app, unique("misfire"), "0 12 * * *", policy="skip")
    defs.append(aid)
    for policy in ["skip", "catchup", "compress", "catchup", "skip"]:
        set_config(app, aid, misfire_policy=policy)
        wait_sync(conn)
        assert_applied(conn, aid)
        overlap, window = POLICIES[policy]

        def check(body, overlap=overlap, window=window, policy=policy):
            pol = body["schedule"]["policies"]
            assert (pol["overlapPolicy"], pol["catchupWindow"]) == (overlap, window), \
                f"misfire_policy {policy}: {pol}"
        described(aid, check)


def update_count(body):
    """How many times the schedule was written: Temporal's conflict token is a
    counter, 1 at creation, one more for each update."""
    return int.from_bytes(base64.b64decode(body["conflictToken"]), "big")


def test_quick_updates_coalesce_to_the_last_state(conn, app, defs):
    """Ten updates committed while the dispatcher is held up reach Temporal as
    at most two schedule updates (the one in flight and the last state), not
    ten; the schedule ends with the last state."""
    name = unique("burst")
    aid = insert_cron(app, name, "0 * * * *", input={"i": -1})
    defs.append(aid)
    wait_sync(conn)
    before = assert_applied(conn, aid)["applied_revision"]
    writes = update_count(described(aid))

    # the dispatcher is held up by a lock on its outcome table while the ten
    # updates commit one by one; it may send one update before it blocks
    holder = connect()
    try:
        holder.execute("BEGIN")
        holder.execute("LOCK TABLE ac_schedule_sync IN SHARE MODE")
        for i in range(10):
            app.execute("UPDATE ac_activity_definitions SET input = %s, "
                        "trigger_config = trigger_config || %s::jsonb WHERE id = %s",
                        (json.dumps({"i": i}), json.dumps({"cron_expression": f"{i} * * * *"}), aid))
        intent_rev = conn.execute("SELECT revision FROM ac_schedule_intents WHERE activity_id = %s",
                                  (aid,)).fetchone()[0]
        assert intent_rev >= before + 10
    finally:
        holder.execute("COMMIT")
        holder.close()
    wait_sync(conn)
    st = assert_applied(conn, aid)
    assert st["desired_revision"] == intent_rev
    assert st["applied_revision"] == st["desired_revision"]

    def final(body):
        assert calendar(body)["minute"] == [(9, 9, 1)], calendar(body)
        start = body["schedule"]["action"]["startWorkflow"]
        assert [payload_value(a) for a in start["input"]] == [
            {"activity_id": aid, "activity_name": name, "trigger": "cron", "input": {"i": 9}}]
    body = described(aid, final)
    assert 1 <= update_count(body) - writes <= 2, \
        f"ten row updates became {update_count(body) - writes} schedule updates"


# ---------------------------------------------------------------- backfill

def _sleep_to_mid_gap(period=2.0, lo=1.2, hi=1.4):
    """Sleep until the wall clock sits between two fire times of a */2 s cron."""
    while True:
        phase = time.time() % period
        if lo <= phase < hi:
            return
        time.sleep(0.02)


def _runs_in_span(aid, start, end):
    q = (f"TemporalScheduledById = '{schedule_id(aid)}' "
         f"AND TemporalScheduledStartTime > '{rfc3339(start)}' "
         f"AND TemporalScheduledStartTime < '{rfc3339(end)}'")
    status, body = temporal("GET", "/workflows?pageSize=1000&query=" + urllib.parse.quote(q))
    assert status == 200, body
    return sorted(payload_value(e["searchAttributes"]["indexedFields"]["TemporalScheduledStartTime"])
                  for e in body.get("executions", []))


def _after_span(r):
    later = datetime.now(timezone.utc).replace(year=2100)
    assert _runs_in_span(r["id"], r["end"], later), f"no run of {r['id']} after {r['end']} visible yet"


@pytest.fixture(scope="module")
def backfill(conn, role_names, role_conns):
    """Pause three */2 s definitions (skip, catchup capped at 3, compress)
    for about 12 s, re-enable them, and collect the runs whose scheduled
    time lies inside the paused span."""
    ensure_grants(conn, role_names)
    app = role_conns["app"]
    ids = {}
    result = {}
    stack("worker-start")
    try:
        for policy in ["skip", "catchup", "compress"]:
            ids[policy] = insert_cron(app, unique(f"backfill-{policy}"), "*/2 * * * * * *",
                                      policy=policy, max_runs=3 if policy == "catchup" else None)
        wait_sync(conn)
        described(ids["catchup"])

        _sleep_to_mid_gap()
        app.execute("UPDATE ac_activity_definitions SET enabled = false WHERE id = ANY(%s::uuid[])",
                     (list(ids.values()),))
        wait_sync(conn)
        paused_at = {p: sync_row(conn, aid)["paused_at"] for p, aid in ids.items()}
        for p, aid in ids.items():
            assert paused_at[p] is not None, f"{p}: paused_at not recorded"
            described(aid, expect_paused)

        time.sleep(10.5)
        _sleep_to_mid_gap()
        reenabled = conn.execute(
            "UPDATE ac_activity_definitions SET enabled = true WHERE id = ANY(%s::uuid[]) "
            "RETURNING now()", (list(ids.values()),)).fetchone()[0]
        wait_sync(conn)

        for p, aid in ids.items():
            start, end = paused_at[p], reenabled
            fires = [s for s in range(int(start.timestamp()) + 1, int(end.timestamp()) + 1)
                     if s % 2 == 0 and start.timestamp() < s < end.timestamp()]
            result[p] = {"id": aid, "start": start, "end": end, "missed": len(fires),
                         "last_missed": datetime.fromtimestamp(fires[-1], timezone.utc)
                         .strftime("%Y-%m-%dT%H:%M:%SZ") if fires else None,
                         "last_backfill": sync_row(conn, aid)["last_backfill"]}

        # visibility is eventually consistent: wait for the backfilled runs,
        # then a little longer so that extra runs would show up too
        want = {"skip": 0, "catchup": 3, "compress": 1}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if all(len(_runs_in_span(r["id"], r["start"], r["end"])) >= want[p]
                   for p, r in result.items()):
                break
            time.sleep(0.5)
        # extra runs inside the span would be visible by the time a run of
        # each schedule scheduled after the span is (the positive control)
        for p, r in result.items():
            poll(lambda r=r: _after_span(r), timeout=30, interval=0.5)
        for p, r in result.items():
            r["runs"] = _runs_in_span(r["id"], r["start"], r["end"])
    finally:
        stack("worker-stop")
        if ids:
            conn.execute("DELETE FROM ac_activity_definitions WHERE id = ANY(%s::uuid[])",
                         (list(ids.values()),))
            settle(conn, ids.values())
    return result


def test_backfill_catchup_is_capped_by_max_catchup_runs(backfill):
    r = backfill["catchup"]
    assert r["missed"] >= 5, r
    assert len(r["runs"]) == 3, r
    # the last three missed fire times, two seconds apart
    times = [datetime.fromisoformat(t.replace("Z", "+00:00")) for t in r["runs"]]
    assert [(b - a).total_seconds() for a, b in zip(times, times[1:])] == [2.0, 2.0], r
    assert r["runs"][-1] == r["last_missed"], r
    assert r["last_backfill"] is not None and r["last_backfill"]["runs"] == 3, r


def test_backfill_compress_runs_once(backfill):
    r = backfill["compress"]
    assert r["missed"] >= 5, r
    assert len(r["runs"]) == 1, r
    assert r["runs"] == [r["last_missed"]], r
    assert r["last_backfill"] is not None and r["last_backfill"]["runs"] == 1, r


def test_backfill_skip_runs_nothing(backfill):
    r = backfill["skip"]
    assert r["missed"] >= 5, r
    assert r["runs"] == [], r
    assert r["last_backfill"] is None, r


def test_backfill_sent_again_after_a_lost_outcome_keeps_its_request_id(conn, app):
    """A crash between the backfill and recording it (here: recording fails
    twice, so the change is applied again on the next pass) sends the
    backfill again with the same request id, which Temporal deduplicates."""
    aid = insert_cron(app, unique("backfill-retry"), "*/2 * * * * * *", policy="catchup",
                      max_runs=2)
    seq = f"ac_fail_{aid[:8]}"
    try:
        wait_sync(conn)
        app.execute("UPDATE ac_activity_definitions SET enabled = false WHERE id = %s", (aid,))
        wait_sync(conn)
        assert sync_row(conn, aid)["paused_at"] is not None
        time.sleep(4.5)
        # recording the backfill fails on the first two tries (the batch, then the row alone)
        conn.execute(f"CREATE SEQUENCE {seq}")
        conn.execute(f"""CREATE FUNCTION {seq}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.last_backfill IS NOT NULL AND nextval('{seq}') <= 2 THEN
                    RAISE EXCEPTION 'outcome lost, backfill request %',
                        NEW.last_backfill->>'request_id';
                END IF;
                RETURN NEW;
            END $$""")
        conn.execute(f"CREATE TRIGGER {seq} BEFORE INSERT OR UPDATE ON ac_schedule_sync "
                     f"FOR EACH ROW WHEN (NEW.activity_id = '{aid}') EXECUTE FUNCTION {seq}()")
        offset = log_offset()
        app.execute("UPDATE ac_activity_definitions SET enabled = true WHERE id = %s", (aid,))
        wait_sync(conn)
        recorded = sync_row(conn, aid)["last_backfill"]
        assert recorded and recorded.get("request_id"), recorded
        lost = re.findall(r"outcome lost, backfill request (\S+)", log_since(offset))
        assert lost, log_since(offset)[-2000:]
        assert set(lost) == {recorded["request_id"]}, (lost, recorded)
        assert conn.execute(f"SELECT last_value FROM {seq}").fetchone()[0] >= 3
    finally:
        conn.execute(f"DROP TRIGGER IF EXISTS {seq} ON ac_schedule_sync")
        conn.execute(f"DROP FUNCTION IF EXISTS {seq}()")
        conn.execute(f"DROP SEQUENCE IF EXISTS {seq}")
        app.execute("DELETE FROM ac_activity_definitions WHERE id = %s", (aid,))
        settle(conn, [aid])


# ---------------------------------------------------------------- failures

def test_temporal_outage_is_retried_until_applied(conn, defs, app):
    existing = insert_cron(app, unique("outage-existing"), "0 9 * * *")
    defs.append(existing)
    wait_sync(conn)
    described(existing)
    try:
        stack("stop-temporal")
        assert not temporal_up(), "Temporal still answers after stop-temporal"

        set_config(app, existing, cron_expression="10 9 * * *")
        created = insert_cron(app, unique("outage-new"), "0 22 * * *", policy="compress")
        defs.append(created)

        def failing():
            rows = {r["activity_id"]: r for r in sync_status(conn)
                    if str(r["activity_id"]) in (existing, created)}
            assert len(rows) == 2, rows
            for r in rows.values():
                assert r["pending"] is True, r
                assert r["attempts"] >= 1, r
                assert r["error_kind"] == "transient", r
                assert r["last_error"], r
                assert r["next_attempt_at"] is not None, r
            return rows
        poll(failing, timeout=15)
        # a bounded wait reports the timeout instead of raising
        assert conn.execute("SELECT ac_wait_sync('1s')").fetchone()[0] is False

        # retried with backoff 1, 2, 4 ... s: by the third attempt nobody gave
        # up, and each next attempt is 2^(attempts-1) s after the last one
        def third():
            rows = failing()
            for r in rows.values():
                assert r["attempts"] >= 3, r
            return rows
        for r in poll(third, timeout=30).values():
            assert r["next_attempt_at"] - r["last_attempt_at"] == \
                timedelta(seconds=2 ** (r["attempts"] - 1)), r

        # the cap: a change that failed many times already (its count of
        # attempts set high, as hours of outage would leave it) waits 5 minutes
        capped = insert_cron(app, unique("outage-capped"), "0 23 * * *")
        defs.append(capped)
        poll(lambda: _attempted(conn, capped, 1), timeout=15)
        conn.execute("UPDATE ac_schedule_sync SET attempts = 20, next_attempt_at = now() "
                     "WHERE activity_id = %s", (capped,))
        st = poll(lambda: _attempted(conn, capped, 21), timeout=15)
        assert st["next_attempt_at"] - st["last_attempt_at"] == timedelta(seconds=300), st
        assert st["error_kind"] == "transient" and st["pending"], st
        # deleting it is a new change, due at once: no 5 minute wait below
        app.execute("DELETE FROM ac_activity_definitions WHERE id = %s", (capped,))
    finally:
        stack("start-temporal")
        stack("worker-stop")

    # nobody touches anything: the retries bring both schedules in
    wait_sync(conn, "90s")
    for aid in (existing, created):
        st = assert_applied(conn, aid)
        assert st["attempts"] == 0, st
    described(existing, lambda b: expect_minute(b, 10))

    def compress(body):
        assert body["schedule"]["policies"]["overlapPolicy"] == \
            "SCHEDULE_OVERLAP_POLICY_BUFFER_ONE", body["schedule"]["policies"]
        assert calendar(body)["hour"] == [(22, 22, 1)], calendar(body)
    described(created, compress)


def _attempted(conn, aid, attempts):
    st = sync_status(conn, aid)
    assert st and st["attempts"] == attempts, st
    return st


def _later_than(conn, ts, seconds):
    """The server's clock is more than seconds past ts."""
    assert conn.execute("SELECT now() > %s + make_interval(secs => %s)", (ts, seconds)).fetchone()[0]


def temporal_up():
    try:
        status, _ = http("GET", f"{TEMPORAL_URL}/system-info", timeout=2)
        return status == 200
    except OSError:
        return False


def test_temporal_refusal_is_permanent_and_dispatcher_goes_on(conn, defs, app):
    long_type = "W" * 1100

    # Temporal itself refuses such a workflow type
    probe = f"probe-{uuid.uuid4()}"
    status, body = temporal("POST", f"/schedules/{probe}", {
        "requestId": str(uuid.uuid4()),
        "schedule": {"spec": {"cronString": ["0 1 * * *"]},
                     "action": {"startWorkflow": {"workflowId": probe,
                                                  "workflowType": {"name": long_type},
                                                  "taskQueue": {"name": "orchestrator-tq"}}},
                     "state": {"paused": True}}})
    if status == 200:
        temporal("DELETE", f"/schedules/{probe}")
    assert status == 400 and body.get("code") == 3, (status, body)
    refusal = body["message"]

    # the definitions trigger refuses it at the statement now: write it past
    # the trigger, in the same transaction, as an older row could hold it
    with conn.transaction():
        bad = insert_cron(conn, unique("refused"), "0 1 * * *")
        conn.execute("ALTER TABLE ac_activity_definitions DISABLE TRIGGER ac_definitions_validate")
        conn.execute("UPDATE ac_activity_definitions SET workflow_type = %s WHERE id = %s", (long_type, bad))
        conn.execute("ALTER TABLE ac_activity_definitions ENABLE TRIGGER ac_definitions_validate")
    defs.append(bad)
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        app.execute("UPDATE ac_activity_definitions SET workflow_type = %s WHERE id = %s", (long_type, bad))

    def refused():
        st = sync_status(conn, bad)
        assert st["error_kind"] == "permanent", st
        return st
    st = poll(refused, timeout=15)
    assert st["pending"] is True and st["attempts"] == 1, st
    assert refusal in st["last_error"], st
    assert st["next_attempt_at"] is None, st

    with pytest.raises(psycopg.Error) as err:
        conn.execute("SELECT ac_wait_sync('10s')")
    assert err.value.sqlstate == "38000", err.value
    assert bad in str(err.value) and refusal in str(err.value), err.value

    status, body = describe_schedule(bad)
    assert status == 404, body

    # the dispatcher is not stuck: a later definition is applied
    good = insert_cron(app, unique("after-refusal"), "0 2 * * *")
    defs.append(good)
    poll(lambda: assert_applied(conn, good), timeout=15)
    described(good)

    # the refusal is not retried while the definition stays the same: once a
    # transient retry would have been due (1 s after the attempt), a sentinel
    # committed later is applied, and the refused one still has one attempt
    poll(lambda: _later_than(conn, st["last_attempt_at"], 2), timeout=10)
    sentinel = insert_cron(app, unique("refusal-sentinel"), "0 3 * * *")
    defs.append(sentinel)
    poll(lambda: assert_applied(conn, sentinel), timeout=15)
    st = sync_status(conn, bad)
    assert st["attempts"] == 1 and st["error_kind"] == "permanent", st

    log = os.environ.get("AC_PG_LOG")
    if log and os.access(log, os.R_OK):
        text = Path(log).read_text(errors="replace")
        assert f"Temporal refused the schedule of activity {bad}" in text

    # fixing the definition clears the error
    app.execute("UPDATE ac_activity_definitions SET workflow_type = 'RunActivityWorkflow' "
                 "WHERE id = %s", (bad,))
    wait_sync(conn)
    assert_applied(conn, bad)
    described(bad)
