"""What the router decides per message, through real NATS and Temporal: a
null payload and a payload nested deeper than AC_MAX_EVENT_DEPTH are poison
(dead letters with their reason), and copies of one event id in one batch
route once, with the payload of the first one delivered."""
import json
import os
import signal

import pytest

from conftest import delta, stats, token, wait_no_pull_waiting, wid, worker_pid
from test_events import (Definitions, PREFIX, dead_letter_mark, dumps, js,  # noqa: F401
                         start_arg, wait_processed, wait_workflow, assert_no_workflow)

AC_MAX_EVENT_DEPTH = 100


@pytest.fixture
def defs(app):
    d = Definitions(app)
    yield d
    d.cleanup()


def nested(levels):
    """A JSON object text nested `levels` deep (the outermost object counts)."""
    return '{"a":' * (levels - 1) + "{}" + "}" * (levels - 1)


def dead_letter(conn, mark, seq):
    return conn.execute("SELECT reason, event_id FROM ac_dead_letters WHERE id > %s "
                        "AND stream_seq = %s", (mark, seq)).fetchone()


def test_null_payload_and_too_deep_payload_are_poison(conn, js, defs, dead_letter_mark):
    run = token()
    etype = f"t{run}.shape"
    aid = defs.add(etype, {})
    subject = f"{PREFIX}.{etype}"

    def env(eid, payload_text):
        return f'{{"event_id": "{eid}", "type": "{etype}", "payload": {payload_text}}}'.encode()

    null_seq = js.publish(subject, env(f"null-{run}", "null")).seq
    deep_seq = js.publish(subject, env(f"deep-{run}", nested(AC_MAX_EVENT_DEPTH + 1))).seq
    ok_seq = js.publish(subject, env(f"limit-{run}", nested(AC_MAX_EVENT_DEPTH))).seq
    wait_processed(js, ok_seq)

    reason, eid = dead_letter(conn, dead_letter_mark, null_seq)
    assert reason == "payload is null, not a JSON object", reason
    assert eid == f"null-{run}", eid
    reason, _ = dead_letter(conn, dead_letter_mark, deep_seq)
    assert reason == (f"the payload is nested deeper than {AC_MAX_EVENT_DEPTH} levels "
                      "(AC_MAX_EVENT_DEPTH)"), reason
    assert_no_workflow(wid(aid, f"null-{run}"))
    assert_no_workflow(wid(aid, f"deep-{run}"))
    # exactly at the limit it routes
    wait_workflow(wid(aid, f"limit-{run}"))
    assert dead_letter(conn, dead_letter_mark, ok_seq) is None


def test_copies_of_an_event_id_in_one_batch_route_the_first_delivered(conn, js, defs):
    run = token()
    etype = f"t{run}.dup"
    subject = f"{PREFIX}.{etype}"
    aid = defs.add(etype, {})
    eid = f"dup-{run}"
    # the router stopped (SIGSTOP, its pull request expired) while the copies
    # arrive, so that its next fetch takes them all in one batch
    router = worker_pid(conn, "activity_core router")
    copies = []
    before = stats(conn)
    os.kill(router, signal.SIGSTOP)
    try:
        wait_no_pull_waiting(js)
        for i in range(5):
            data = dumps({"event_id": eid, "type": etype, "payload": {"copy": i}}).encode()
            copies.append(js.publish(subject, data).seq)
    finally:
        os.kill(router, signal.SIGCONT)
    wait_processed(js, copies[-1], timeout=60)
    arg = start_arg(wid(aid, eid))
    assert arg["event"]["payload"] == {"copy": 0}, arg
    # every copy was acked: none is left pending or dead-lettered
    assert js.consumer().num_ack_pending == 0
    # one start for the copies: the later ones were never sent to Temporal
    # (not even as starts that found the workflow there)
    d = delta(before, stats(conn))
    assert (d["workflows_started"], d["workflows_already_started"]) == (1, 0), d
