"""On-demand starts: ac_trigger() starts the definition's workflow once the
transaction commits, exactly once per idempotency key; ac_runs() lists the
runs from Temporal's visibility."""
import json
import time
import urllib.parse
import uuid

import psycopg
import pytest

from conftest import temporal, wait_for


def describe(wid):
    status, body = temporal("GET", "/workflows/" + urllib.parse.quote(wid, safe=""))
    return body if status == 200 else None


def runs_of(aid):
    query = urllib.parse.quote(f"activity_id = '{aid}'")
    return temporal("GET", f"/workflows?query={query}")[1].get("executions", [])


def start_argument(wid):
    status, body = temporal("GET", "/workflows/" + urllib.parse.quote(wid, safe="") + "/history?noPayloadShorthand=true")
    assert status == 200, body
    attrs = body["history"]["events"][0]["workflowExecutionStartedEventAttributes"]
    import base64
    return json.loads(base64.b64decode(attrs["input"]["payloads"][0]["data"]))


@pytest.fixture
def manual(conn):
    name = f"manual-{uuid.uuid4().hex[:8]}"
    aid = conn.execute("INSERT INTO ac_activity_definitions (name, trigger_type, input, task_queue) "
                       "VALUES (%s, 'manual', '{\"full\": true, \"n\": 12345678901234567890}', 'manual-tq') "
                       "RETURNING id::text", (name,)).fetchone()[0]
    yield aid, name
    conn.execute("DELETE FROM ac_activity_definitions WHERE id = %s", (aid,))


def test_trigger_starts_once_after_commit(conn, manual):
    aid, name = manual
    wid = conn.execute("SELECT ac_trigger(%s)", (aid,)).fetchone()[0]
    assert wid.startswith(f"activity-{aid}:manual-")
    assert conn.execute("SELECT ac_wait_sync('30s')").fetchone()[0]
    body = wait_for(lambda: describe(wid))
    assert body["workflowExecutionInfo"]["type"]["name"] == "RunActivityWorkflow"
    assert body["workflowExecutionInfo"]["taskQueue"] == "manual-tq"
    arg = start_argument(wid)
    assert arg == {"activity_id": aid, "activity_name": name, "trigger": "manual",
                   "input": {"full": True, "n": 12345678901234567890}}


def test_trigger_input_override_and_idempotency_key(conn, manual):
    aid, _ = manual
    key = f"k-{uuid.uuid4().hex[:6]}"
    first = conn.execute("SELECT ac_trigger(%s, '{\"full\": false}', %s)", (aid, key)).fetchone()[0]
    assert first == f"activity-{aid}:{key}"
    assert conn.execute("SELECT ac_wait_sync('30s')").fetchone()[0]
    again = conn.execute("SELECT ac_trigger(%s, '{\"other\": 1}', %s)", (aid, key)).fetchone()[0]
    assert again == first
    assert conn.execute("SELECT ac_wait_sync('30s')").fetchone()[0]
    assert start_argument(first)["input"] == {"full": False}
    time.sleep(1)
    ids = [e["execution"]["workflowId"] for e in wait_for(lambda: runs_of(aid))]
    assert ids.count(first) == 1, ids
    rows = conn.execute("SELECT workflow_id, status FROM ac_runs(%s)", (aid,)).fetchall()
    assert [r[0] for r in rows].count(first) == 1, rows


def test_rolled_back_trigger_starts_nothing(conn, manual):
    aid, _ = manual
    key = f"rb-{uuid.uuid4().hex[:6]}"
    with conn.transaction():
        conn.execute("SELECT ac_trigger(%s, NULL, %s)", (aid, key))
        raise psycopg.Rollback()
    assert conn.execute("SELECT ac_wait_sync('10s')").fetchone()[0]
    time.sleep(2)
    assert describe(f"activity-{aid}:{key}") is None
    assert conn.execute("SELECT count(*) FROM ac_start_outbox WHERE activity_id = %s", (aid,)).fetchone()[0] == 0


def test_trigger_refuses_unknown_and_disabled(conn, manual):
    aid, name = manual
    with pytest.raises(psycopg.errors.NoDataFound):
        conn.execute("SELECT ac_trigger(%s)", (str(uuid.uuid4()),))
    conn.execute("UPDATE ac_activity_definitions SET enabled = false WHERE id = %s", (aid,))
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="is disabled"):
        conn.execute("SELECT ac_trigger(%s)", (aid,))
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        conn.execute("UPDATE ac_activity_definitions SET enabled = true WHERE id = %s", (aid,))
        conn.execute("SELECT ac_trigger(%s, NULL, 'a/b')", (aid,))


@pytest.mark.parametrize("trigger_type,config", [
    ("cron", {"cron_expression": "0 4 * * *"}),
    ("event", {"event_type": "manual.run.now"}),
])
def test_trigger_runs_cron_and_event_definitions_now(conn, trigger_type, config):
    """ac_trigger() is "run now" for any enabled definition: a cron or event
    definition starts its workflow once, with trigger "manual" and no event,
    and its schedule or event routing is left as it was."""
    name = f"now-{trigger_type}-{uuid.uuid4().hex[:6]}"
    aid = conn.execute("INSERT INTO ac_activity_definitions (name, trigger_type, trigger_config, input) "
                       "VALUES (%s, %s, %s, '{\"k\": 1}') RETURNING id::text",
                       (name, trigger_type, json.dumps(config))).fetchone()[0]
    try:
        wid = conn.execute("SELECT ac_trigger(%s, NULL, 'now')", (aid,)).fetchone()[0]
        assert wid == f"activity-{aid}:now"
        assert conn.execute("SELECT ac_wait_sync('30s')").fetchone()[0] is True
        assert describe(wid) is not None
        arg = start_argument(wid)
        assert arg["trigger"] == "manual" and arg["input"] == {"k": 1} and arg.get("event") is None, arg
        assert arg["activity_id"] == aid and arg["activity_name"] == name, arg
    finally:
        conn.execute("DELETE FROM ac_activity_definitions WHERE id = %s", (aid,))
        conn.execute("SELECT ac_wait_sync('30s')")
