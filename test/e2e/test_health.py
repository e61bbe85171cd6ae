"""ac_health() tells the truth when things are wrong, and ac_wait_sync()
raises a failure only to the session whose change failed.

Each test causes failures for real (Temporal unreachable, a namespace that
does not exist and then one without the search attribute, a worker
terminated, NATS stopped with publishes queued, a start Temporal refuses, a
poison event, a database the workers do not serve, a schedule Temporal
refuses) and checks each failing row, its detail and its hint, as the
operator or viewer role reads them, then that the check passes again once
the cause is gone.  Every check ac_health() reports is made to fail here."""
import asyncio
import os
import re
import signal
import subprocess
import uuid
from pathlib import Path

import nats
import psycopg
import pytest

from conftest import (NATS_URL, REPO, alter_system, connect, poll, stack, state_dir, temporal, unique,
                      wait_gone, worker_pid)

NATS_PIDFILE = Path(state_dir()) / "nats" / "nats.pid"


ALL_CHECKS = {"temporal_reachable", "temporal_namespace", "search_attribute_activity_id",
              "nats_router", "nats_publisher", "dispatcher_running", "router_running", "schedule_backlog",
              "schedule_failures", "outbox_backlog", "outbox_failing", "outbox_failures",
              "dead_letters"}
HINTS = {
    "temporal_reachable": "Start Temporal or fix activity_core.temporal_url (and its TLS settings), "
                          "then SELECT pg_reload_conf().",
    "temporal_namespace": "Create the namespace (temporal operator namespace create) or set "
                          "activity_core.temporal_namespace.",
    "search_attribute_activity_id": "Register it: temporal operator search-attribute create "
                                    "--name activity_id --type Keyword.",
    "temporal_down": "Temporal does not answer: fix the temporal_reachable check first, then look again.",
    "worker": 'Look for "activity_core" errors in the server log.',
    "schedule_backlog": "The dispatcher is behind or Temporal is slow: see ac_sync_status and the "
                        "temporal_reachable check.",
    "outbox_backlog": "The dispatcher is behind, or NATS or Temporal is down: see the "
                      "outbox_failing check.",
    "outbox_failing": "See last_error in ac_outbox and ac_start_outbox: NATS or Temporal refuses "
                      "or is unreachable; they are retried by themselves.",
    "outbox_failures": "See ac_outbox and ac_start_outbox WHERE error_permanent: last_error says "
                       "why; delete the rows once dealt with.",
    "dead_letters": "See ac_dead_letters.reason; fix the cause and SELECT "
                    "ac_replay_dead_letter(id), or delete them.",
}
TEMPORAL_CLI = str(REPO / ".cache" / "bin" / "temporal")
ADDRESS = os.environ.get("AC_TEMPORAL_ADDRESS", "127.0.0.1:17233")


def health(c):
    """ac_health() as {check: (ok, detail, hint)}."""
    return {r[0]: (r[1], r[2], r[3]) for r in c.execute("SELECT * FROM ac_health()").fetchall()}


def check_is(c, check, ok, detail=None, hint=None, match=None):
    """Assert one row of ac_health(): ok, and its detail (exact, or a regex
    match) and hint (exact); return the row."""
    row = health(c)[check]
    assert row[0] is ok, (check, row)
    if detail is not None:
        assert row[1] == detail, (check, row)
    if match is not None:
        assert re.fullmatch(match, row[1]), (check, row)
    assert row[2] == hint, (check, row)
    return row


def cli(*args):
    """The temporal CLI against the test server."""
    out = subprocess.run([TEMPORAL_CLI, *args, "--address", ADDRESS], capture_output=True,
                         text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_health_when_temporal_is_unreachable(conn, app, ops):
    """activity_core.temporal_url pointing where nothing listens: the three
    Temporal checks fail with the reason and the URL, and a backlog of 1,000
    schedule changes fails schedule_backlog; both pass again once the URL is
    right."""
    tag = unique("health-backlog")
    alter_system(conn, temporal_url="http://127.0.0.1:1")
    try:
        def unreachable():
            for check in ("temporal_reachable", "temporal_namespace", "search_attribute_activity_id"):
                row = health(ops)[check]
                assert row[0] is False, (check, row)
                assert row[1].startswith("unavailable: ") and row[1].endswith("(http://127.0.0.1:1)"), row
                # the namespace and search attribute checks point to the cause
                assert row[2] == (HINTS[check] if check == "temporal_reachable" else HINTS["temporal_down"]), row
        poll(unreachable, 15)
        app.execute("INSERT INTO ac_activity_definitions (name, trigger_type, trigger_config) "
                    "SELECT %s || '-' || i, 'cron', '{\"cron_expression\": \"0 4 * * *\"}' "
                    "FROM generate_series(1, 1000) i", (tag,))
        row = check_is(ops, "schedule_backlog", False, hint=HINTS["schedule_backlog"],
                       match=r"\d+ schedule change\(s\) pending")
        assert int(row[1].split()[0]) >= 1000, row
        app.execute("DELETE FROM ac_activity_definitions WHERE name LIKE %s", (tag + "-%",))
    finally:
        alter_system(conn, temporal_url=None)
    url = os.environ["AC_TEMPORAL_URL"]
    poll(lambda: check_is(ops, "temporal_reachable", True, detail=f"{url} answers"), 15)
    poll(lambda: check_is(ops, "schedule_backlog", True, match=r"\d+ schedule change\(s\) pending"), 90)


def test_health_namespace_then_search_attribute(conn, app, ops):
    """activity_core.temporal_namespace naming a namespace that does not exist
    fails temporal_namespace; once the CLI created it, the namespace check
    passes and the search attribute check fails until activity_id is
    registered there.  Runs then start in that namespace, not in default."""
    ns = f"ac-health-{uuid.uuid4().hex[:8]}"
    alter_system(conn, temporal_namespace=ns)
    aid = None
    try:
        row = poll(lambda: check_is(ops, "temporal_namespace", False, hint=HINTS["temporal_namespace"]), 15)
        assert ns in row[1], row
        check_is(ops, "temporal_reachable", True)
        cli("operator", "namespace", "create", "--namespace", ns, "--retention", "24h")
        poll(lambda: check_is(ops, "temporal_namespace", True, detail=f"namespace {ns} exists"), 60, 0.5)
        # (the namespace's search attributes answer a little after the namespace)
        row = poll(lambda: check_is(ops, "search_attribute_activity_id", False,
                                    hint=HINTS["search_attribute_activity_id"],
                                    match="search attribute activity_id is not registered .*"), 60, 0.5)
        assert row[1] == (f"search attribute activity_id is not registered as Keyword in namespace {ns}; "
                          f"run: temporal operator search-attribute create --namespace {ns} "
                          "--name activity_id --type Keyword"), row
        cli("operator", "search-attribute", "create", "--namespace", ns, "--name", "activity_id",
            "--type", "Keyword")
        poll(lambda: check_is(ops, "search_attribute_activity_id", True,
                              detail="activity_id is a Keyword search attribute"), 60, 0.5)

        # the namespace setting is where runs start
        aid = str(app.execute("INSERT INTO ac_activity_definitions (name, trigger_type) "
                              "VALUES (%s, 'manual') RETURNING id", (unique("health-ns"),)).fetchone()[0])
        wf = app.execute("SELECT ac_trigger(%s, NULL, 'in-ns')", (aid,)).fetchone()[0]
        assert app.execute("SELECT ac_wait_sync('30s')").fetchone()[0] is True
        status, body = temporal_in(ns, "GET", f"/workflows/{wf}")
        assert status == 200, body
        assert body["workflowExecutionInfo"]["type"]["name"] == "RunActivityWorkflow", body
        status, body = temporal("GET", f"/workflows/{wf}")
        assert status == 404, body
    finally:
        alter_system(conn, temporal_namespace=None)
        if aid:
            conn.execute("DELETE FROM ac_activity_definitions WHERE id = %s", (aid,))
    poll(lambda: check_is(ops, "temporal_namespace", True, detail="namespace default exists"), 15)


def temporal_in(ns, method, path, body=None):
    """Temporal's HTTP API under namespace ns."""
    from conftest import TEMPORAL_URL, http
    return http(method, f"{TEMPORAL_URL}/namespaces/{ns}{path}", body)


@pytest.mark.parametrize("backend_type,check", [("activity_core dispatcher", "dispatcher_running"),
                                                ("activity_core router", "router_running")])
def test_health_while_a_worker_is_not_running(conn, viewer, backend_type, check):
    """A terminated worker shows as not running, with the restart delay and a
    hint, until the postmaster starts it again 5 s later."""
    served = conn.execute("SHOW activity_core.database").fetchone()[0]
    pid = worker_pid(conn, backend_type)
    assert conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0] is True
    poll(lambda: check_is(viewer, check, False, hint=HINTS["worker"],
                          detail=f"not running for database {served} (it restarts 5 s after a "
                                 "crash; see the server log)"), 5, 0.05)
    worker_pid(conn, backend_type, timeout=20, other_than=pid)
    poll(lambda: check_is(viewer, check, True, detail=f"running for database {served}"), 10)


def test_every_check_has_a_hint_exactly_when_it_fails(conn):
    rows = conn.execute("SELECT \"check\", ok, hint FROM ac_health()").fetchall()
    # every check this file makes fail (workers_database shows only elsewhere)
    assert {r[0] for r in rows} == ALL_CHECKS, rows
    for check, ok, hint in rows:
        assert (hint is None) == ok, (check, ok, hint)


def test_health_in_a_database_the_workers_do_not_serve(conn):
    """There the workers_database check fails and names the database they serve."""
    served = conn.execute("SHOW activity_core.database").fetchone()[0]
    db = f"ac_other_{uuid.uuid4().hex[:6]}"
    conn.execute(f"CREATE DATABASE {db}")
    try:
        with psycopg.connect(dbname=db, autocommit=True) as c:
            c.execute("SET client_min_messages = warning")
            c.execute("CREATE EXTENSION activity_core")
            def workers_up():
                h = health(c)
                assert h["dispatcher_running"] == (True, f"running for database {served}", None), h
                return h
            h = poll(workers_up, 20)
            ok, detail, hint = h["workers_database"]
            assert ok is False and f"serve database {served}, not this one ({db})" in detail, detail
            assert "activity_core.database" in hint, hint
        assert "workers_database" not in health(conn)
    finally:
        conn.execute(f"DROP DATABASE {db}")


async def _publish_raw(subject, data):
    """Publish bytes to JetStream as any producer would, and wait for the ack."""
    nc = await nats.connect(NATS_URL, connect_timeout=5, max_reconnect_attempts=2)
    try:
        return (await nc.jetstream().publish(subject, data, timeout=10)).seq
    finally:
        await nc.close()


def test_health_outbox_checks_with_nats_down(conn, app, ops):
    """With nats-server stopped, 1,000 publishes queued fail outbox_backlog,
    and once they have failed five times outbox_failing names the age of the
    oldest; both pass again when NATS is back and the outbox drained."""
    tag = unique("health-outbox")
    pid = int(NATS_PIDFILE.read_text().strip())
    os.kill(pid, signal.SIGTERM)
    assert wait_gone(pid, 15), "nats-server survived SIGTERM"
    try:
        app.execute("SELECT ac_publish(%s, '{}', %s || '-' || i) FROM generate_series(1, 1000) i",
                    ("health.outbox", tag))
        row = check_is(ops, "outbox_backlog", False, hint=HINTS["outbox_backlog"],
                       match=r"\d+ publish\(es\) and start\(s\) pending")
        assert int(row[1].split()[0]) >= 1000, row
        # four failures already (as 30 s of outage would leave them): the next is the fifth
        poll(lambda: _attempted(conn, tag), 15)
        conn.execute("UPDATE ac_outbox SET attempts = 4, next_attempt_at = now() WHERE msg_id LIKE %s",
                     (tag + "-%",))
        row = poll(lambda: check_is(ops, "outbox_failing", False, hint=HINTS["outbox_failing"],
                                    match=r"\d+ publish\(es\) and start\(s\) failed 5 times or more, "
                                          r"the oldest queued \d\d:\d\d:\d\d ago"), 20)
        assert int(row[1].split()[0]) >= 1, row
    finally:
        stack("start")
    poll(lambda: check_is(ops, "outbox_backlog", True,
                          detail="0 publish(es) and start(s) pending"), 90, 0.5)
    check_is(ops, "outbox_failing", True, detail="0 publish(es) and start(s) failed 5 times or more")
    assert conn.execute("SELECT count(*) FROM ac_outbox WHERE msg_id LIKE %s",
                        (tag + "-%",)).fetchone()[0] == 0


def _attempted(conn, tag):
    n = conn.execute("SELECT count(*) FROM ac_outbox WHERE msg_id LIKE %s AND attempts >= 1",
                     (tag + "-%",)).fetchone()[0]
    assert n >= 1, "no publish attempted yet"


def test_health_outbox_failures_when_temporal_refuses_a_start(conn, app, ops):
    """A start Temporal refuses for good (a workflow type over its limit,
    written past the validation) fails outbox_failures; the operator deletes
    the row as the hint says and the check passes."""
    name = unique("health-refused-start")
    with conn.transaction():
        conn.execute("ALTER TABLE ac_activity_definitions DISABLE TRIGGER ac_definitions_validate")
        aid = str(conn.execute("INSERT INTO ac_activity_definitions (name, trigger_type, workflow_type) "
                               "VALUES (%s, 'manual', %s) RETURNING id", (name, "W" * 1100)).fetchone()[0])
        conn.execute("ALTER TABLE ac_activity_definitions ENABLE TRIGGER ac_definitions_validate")
    try:
        wf = app.execute("SELECT ac_trigger(%s, NULL, 'refused')", (aid,)).fetchone()[0]
        row = poll(lambda: check_is(ops, "outbox_failures", False, hint=HINTS["outbox_failures"],
                                    match=r"\d+ publish\(es\) and start\(s\) refused for good"), 20)
        last_error = ops.execute("SELECT last_error FROM ac_start_outbox WHERE workflow_id = %s "
                                 "AND error_permanent", (wf,)).fetchone()[0]
        assert last_error, last_error
        assert ops.execute("DELETE FROM ac_start_outbox WHERE error_permanent").rowcount >= 1
        ops.execute("DELETE FROM ac_outbox WHERE error_permanent")
        check_is(ops, "outbox_failures", True, detail="0 publish(es) and start(s) refused for good")
    finally:
        conn.execute("DELETE FROM ac_activity_definitions WHERE id = %s", (aid,))


def test_health_dead_letters_until_dealt_with(conn, ops):
    """A poison event becomes a dead letter and fails dead_letters; once the
    operator deleted the unreplayed ones the check passes."""
    run = uuid.uuid4().hex[:8]
    seq = asyncio.run(_publish_raw(f"activity.health{run}.poison", b'{"event_id": "x", "type": '))
    row = poll(lambda: _dead_letter(ops, seq), 20)
    assert row[0].startswith("invalid JSON"), row
    n = ops.execute("SELECT count(*) FROM ac_dead_letters WHERE replayed_at IS NULL").fetchone()[0]
    check_is(ops, "dead_letters", False, detail=f"{n} dead letter(s) not replayed",
             hint=HINTS["dead_letters"])
    ops.execute("DELETE FROM ac_dead_letters WHERE replayed_at IS NULL")
    check_is(ops, "dead_letters", True, detail="0 dead letter(s) not replayed")


def _dead_letter(c, seq):
    row = c.execute("SELECT reason FROM ac_dead_letters WHERE stream_seq = %s", (seq,)).fetchone()
    assert row, f"no dead letter for stream sequence {seq} yet"
    return row


def test_health_says_when_nats_is_down_without_showing_credentials(conn):
    """With nats-server stopped the router check fails with the URL (credentials
    masked) and what went wrong, and a hint; after a restart it passes again."""
    pid = int(NATS_PIDFILE.read_text().strip())
    os.kill(pid, signal.SIGTERM)
    assert wait_gone(pid, 15), "nats-server survived SIGTERM"
    try:
        def failing():
            ok, detail, hint = health(conn)["nats_router"]
            assert ok is False, detail
            assert "the router cannot use NATS at nats://127.0.0.1:" in detail, detail
            assert not re.search(r"\w+\.c:\d+", detail), f"a source location in the detail: {detail}"
            assert os.environ["AC_NATS_PASSWORD"] not in detail, "the NATS password is in the detail"
            assert hint and "nats-server" in hint, hint
            return detail
        poll(failing, 30)
    finally:
        stack("start")

    def back():
        ok, detail, hint = health(conn)["nats_router"]
        assert ok is True and hint is None, detail
    poll(back, 40)


def test_wait_sync_raises_only_the_callers_own_permanent_failures(conn):
    """A schedule Temporal refuses for good is raised by ac_wait_sync() in the
    session that changed the definition; another session's ac_wait_sync()
    counts it as settled and returns true.  ac_health() shows the failure with
    a hint, and the check passes once the definition is fixed."""
    name = unique("refused-own")
    owner = connect()
    other = connect()
    try:
        # a definition the validation would refuse, written with it disabled
        owner.execute("BEGIN")
        owner.execute("ALTER TABLE ac_activity_definitions DISABLE TRIGGER ac_definitions_validate")
        aid = str(owner.execute(
            "INSERT INTO ac_activity_definitions (name, trigger_type, trigger_config, workflow_type) "
            "VALUES (%s, 'cron', '{\"cron_expression\": \"0 3 * * *\"}', %s) RETURNING id",
            (name, "W" * 1100)).fetchone()[0])
        owner.execute("ALTER TABLE ac_activity_definitions ENABLE TRIGGER ac_definitions_validate")
        owner.execute("COMMIT")

        assert other.execute("SELECT ac_wait_sync('20s')").fetchone()[0] is True
        with pytest.raises(psycopg.Error) as err:
            owner.execute("SELECT ac_wait_sync('20s')")
        assert err.value.sqlstate == "38000" and aid in str(err.value), err.value

        ok, detail, hint = health(conn)["schedule_failures"]
        assert ok is False and "definition(s) whose schedule Temporal refused" in detail, detail
        assert hint and "ac_sync_status" in hint, hint

        owner.execute("UPDATE ac_activity_definitions SET workflow_type = 'RunActivityWorkflow' "
                      "WHERE id = %s", (aid,))
        assert owner.execute("SELECT ac_wait_sync('20s')").fetchone()[0] is True
        assert conn.execute("SELECT error_kind FROM ac_sync_status WHERE activity_id = %s",
                            (aid,)).fetchone()[0] is None
    finally:
        owner.execute("DELETE FROM ac_activity_definitions WHERE name = %s", (name,))
        owner.execute("SELECT ac_wait_sync('20s')")
        owner.close()
        other.close()
