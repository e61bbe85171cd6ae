"""Decisions about routing that a user relies on, pinned through real NATS and
Temporal: an event is matched against the definitions as they are committed
when the router routes it.  Events routed while a definition is disabled
never start it, even after it is enabled again; events routed after it is
enabled do, each exactly once."""
import os
import signal

import pytest

from conftest import assert_one_completed_run, token, wid, worker_pid
from test_events import (Definitions, assert_no_workflow, js, wait_workflow,  # noqa: F401
                         wait_processed)


@pytest.fixture
def defs(app):
    d = Definitions(app)
    yield d
    d.cleanup()


def publish(conn, etype, event_id):
    conn.execute("SELECT ac_publish(%s, '{}', %s)", (etype, event_id))


def test_events_routed_while_a_definition_is_disabled_never_start_it(app, js, defs):
    conn = app
    run = token()
    etype, sentinel_type = f"t{run}.toggle", f"t{run}.sentinel"
    aid = defs.add(etype, {}, enabled=False)
    sentinel = defs.add(sentinel_type, {})

    # routed while disabled: the sentinel published after them proves they were routed
    while_off = [f"off-{run}-{i}" for i in range(20)]
    for e in while_off:
        publish(conn, etype, e)
    publish(conn, sentinel_type, f"s1-{run}")
    assert conn.execute("SELECT ac_wait_sync('30s')").fetchone()[0] is True
    wait_workflow(wid(sentinel, f"s1-{run}"))

    conn.execute("UPDATE ac_activity_definitions SET enabled = true WHERE id = %s", (aid,))
    while_on = [f"on-{run}-{i}" for i in range(5)]
    for e in while_on:
        publish(conn, etype, e)
    publish(conn, sentinel_type, f"s2-{run}")
    assert conn.execute("SELECT ac_wait_sync('30s')").fetchone()[0] is True
    wait_workflow(wid(sentinel, f"s2-{run}"))
    for e in while_on:
        assert_one_completed_run(wid(aid, e))
    for e in while_off:
        assert_no_workflow(wid(aid, e))


def test_events_waiting_in_the_stream_follow_the_definition_as_it_is_when_routed(conn, app, js,
                                                                                 defs):
    """With the router paused, events wait in the stream while their definition
    is disabled and enabled again: when the router goes on, it routes every one
    of them against the enabled definition, each exactly once."""
    run = token()
    etype = f"t{run}.waiting"
    aid = defs.add(etype, {})
    router = worker_pid(conn, "activity_core router")
    waiting = [f"w-{run}-{i}" for i in range(10)]
    os.kill(router, signal.SIGSTOP)
    try:
        for e in waiting:
            publish(app, etype, e)
        assert app.execute("SELECT ac_wait_sync('30s')").fetchone()[0] is True
        app.execute("UPDATE ac_activity_definitions SET enabled = false WHERE id = %s", (aid,))
        app.execute("UPDATE ac_activity_definitions SET enabled = true WHERE id = %s", (aid,))
    finally:
        os.kill(router, signal.SIGCONT)
    for e in waiting:
        wait_workflow(wid(aid, e), timeout=40)
    for e in waiting:
        assert_one_completed_run(wid(aid, e))
