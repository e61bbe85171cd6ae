"""On-demand starts: ac_trigger() starts the definition's workflow once the
transaction commits, exactly once per idempotency key; ac_runs() lists the
runs from Temporal's visibility.

Triggers are made as the application role; the reference worker completes
the workflows (the default task queue), so "exactly once" is a count of the
runs of a workflow id after the first one completed."""
import base64
import json
import urllib.parse
import uuid

import psycopg
import pytest

from conftest import (assert_one_completed_run, describe_workflow, poll, run_id, temporal,
                      wait_completed)


def describe(wid):
    """The describe body of wid, or None when Temporal says it does not exist."""
    return describe_workflow(wid)


def start_argument(wid):
    status, body = temporal("GET", "/workflows/" + urllib.parse.quote(wid, safe="")
                            + "/history?noPayloadShorthand=true")
    assert status == 200, body
    attrs = body["history"]["events"][0]["workflowExecutionStartedEventAttributes"]
    return json.loads(base64.b64decode(attrs["input"]["payloads"][0]["data"]))


def define(app, name, input_text):
    return app.execute("INSERT INTO ac_activity_definitions (name, trigger_type, input) "
                       "VALUES (%s, 'manual', %s) RETURNING id::text",
                       (name, input_text)).fetchone()[0]


@pytest.fixture
def manual(app):
    name = f"manual-{uuid.uuid4().hex[:8]}"
    aid = define(app, name, '{"full": true, "n": 12345678901234567890}')
    yield aid, name
    app.execute("DELETE FROM ac_activity_definitions WHERE id = %s", (aid,))


@pytest.fixture
def sentinel(app):
    """A second manual definition: its trigger, committed after the one under
    test, is the positive control that the dispatcher has drained past it."""
    aid = define(app, f"sentinel-{uuid.uuid4().hex[:8]}", "{}")
    yield aid
    app.execute("DELETE FROM ac_activity_definitions WHERE id = %s", (aid,))


def test_trigger_starts_once_after_commit(app, manual, sentinel, role_names):
    aid, name = manual
    with psycopg.connect(autocommit=True, user=role_names["app"]) as other:
        with app.transaction():
            wid = app.execute("SELECT ac_trigger(%s)", (aid,)).fetchone()[0]
            assert wid.startswith(f"activity-{aid}:manual-")
            # committed while ours is not: once its workflow runs, the dispatcher
            # has drained the outbox with our row in it, uncommitted
            control = other.execute("SELECT ac_trigger(%s)", (sentinel,)).fetchone()[0]
            assert other.execute("SELECT ac_wait_sync('30s')").fetchone()[0] is True
            wait_completed(control)
            assert describe(wid) is None, f"{wid} started before its transaction committed"
    assert app.execute("SELECT ac_wait_sync('30s')").fetchone()[0] is True
    body = wait_completed(wid)
    assert body["workflowExecutionInfo"]["type"]["name"] == "RunActivityWorkflow"
    assert body["workflowExecutionInfo"]["taskQueue"] == "orchestrator-tq"
    assert_one_completed_run(wid, run_id(body))
    arg = start_argument(wid)
    assert arg == {"activity_id": aid, "activity_name": name, "trigger": "manual",
                   "input": {"full": True, "n": 12345678901234567890}}


def test_trigger_input_override_and_idempotency_key(app, manual, role_names, conn):
    aid, _ = manual
    key = f"k-{uuid.uuid4().hex[:6]}"
    first = app.execute("SELECT ac_trigger(%s, '{\"full\": false}', %s)", (aid, key)).fetchone()[0]
    assert first == f"activity-{aid}:{key}"
    assert app.execute("SELECT ac_wait_sync('30s')").fetchone()[0]
    first_run = run_id(wait_completed(first))

    # the same key once the first run completed: the same workflow, no second run
    again = app.execute("SELECT ac_trigger(%s, '{\"other\": 1}', %s)", (aid, key)).fetchone()[0]
    assert again == first
    assert app.execute("SELECT ac_wait_sync('30s')").fetchone()[0]

    def drained():
        n = conn.execute("SELECT count(*) FROM ac_start_outbox WHERE activity_id = %s",
                         (aid,)).fetchone()[0]
        assert n == 0, "the second trigger's start is still in ac_start_outbox"
    poll(drained, timeout=15)
    assert_one_completed_run(first, first_run)
    assert start_argument(first)["input"] == {"full": False}

    def listed():
        rows = conn.execute("SELECT workflow_id, run_id, status FROM ac_runs(%s)", (aid,)).fetchall()
        assert [r[:2] for r in rows] == [(first, first_run)], rows
    poll(listed, timeout=15)


def test_rolled_back_trigger_starts_nothing(app, manual, conn):
    aid, _ = manual
    key = f"rb-{uuid.uuid4().hex[:6]}"
    with app.transaction():
        app.execute("SELECT ac_trigger(%s, NULL, %s)", (aid, key))
        raise psycopg.Rollback()
    # the positive control: a trigger committed after the rollback has run
    control = app.execute("SELECT ac_trigger(%s, NULL, %s)", (aid, f"ok-{key}")).fetchone()[0]
    assert app.execute("SELECT ac_wait_sync('10s')").fetchone()[0]
    wait_completed(control)
    assert describe(f"activity-{aid}:{key}") is None
    assert conn.execute("SELECT count(*) FROM ac_start_outbox WHERE activity_id = %s",
                        (aid,)).fetchone()[0] == 0


def test_trigger_refuses_unknown_and_disabled(app, manual):
    aid, name = manual
    with pytest.raises(psycopg.errors.NoDataFound):
        app.execute("SELECT ac_trigger(%s)", (str(uuid.uuid4()),))
    app.execute("UPDATE ac_activity_definitions SET enabled = false WHERE id = %s", (aid,))
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="is disabled"):
        app.execute("SELECT ac_trigger(%s)", (aid,))
    app.execute("UPDATE ac_activity_definitions SET enabled = true WHERE id = %s", (aid,))
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        app.execute("SELECT ac_trigger(%s, NULL, 'a/b')", (aid,))


@pytest.mark.parametrize("trigger_type,config", [
    ("cron", {"cron_expression": "0 4 * * *"}),
    ("event", {"event_type": "manual.run.now"}),
])
def test_trigger_runs_cron_and_event_definitions_now(app, trigger_type, config):
    """ac_trigger() is "run now" for any enabled definition: a cron or event
    definition starts its workflow once, with trigger "manual" and no event,
    and its schedule or event routing is left as it was."""
    name = f"now-{trigger_type}-{uuid.uuid4().hex[:6]}"
    aid = app.execute("INSERT INTO ac_activity_definitions (name, trigger_type, trigger_config, input) "
                      "VALUES (%s, %s, %s, '{\"k\": 1}') RETURNING id::text",
                      (name, trigger_type, json.dumps(config))).fetchone()[0]
    try:
        wid = app.execute("SELECT ac_trigger(%s, NULL, 'now')", (aid,)).fetchone()[0]
        assert wid == f"activity-{aid}:now"
        assert app.execute("SELECT ac_wait_sync('30s')").fetchone()[0] is True
        assert_one_completed_run(wid)
        arg = start_argument(wid)
        assert arg["trigger"] == "manual" and arg["input"] == {"k": 1} and arg.get("event") is None, arg
        assert arg["activity_id"] == aid and arg["activity_name"] == name, arg
    finally:
        app.execute("DELETE FROM ac_activity_definitions WHERE id = %s", (aid,))
        app.execute("SELECT ac_wait_sync('30s')")
