"""ac_health() tells the truth when things are wrong, and ac_wait_sync()
raises a failure only to the session whose change failed.

Each test causes one failure for real (NATS stopped, a database the workers
do not serve, a schedule Temporal refuses) and checks the row, its detail
and its hint, then that the check passes again once the cause is gone."""
import os
import re
import signal
import uuid
from pathlib import Path

import psycopg
import pytest

from conftest import connect, poll, stack, state_dir, unique, wait_gone

NATS_PIDFILE = Path(state_dir()) / "nats" / "nats.pid"


def health(c):
    """ac_health() as {check: (ok, detail, hint)}."""
    return {r[0]: (r[1], r[2], r[3]) for r in c.execute("SELECT * FROM ac_health()").fetchall()}


def test_every_check_has_a_hint_exactly_when_it_fails(conn):
    rows = conn.execute("SELECT \"check\", ok, hint FROM ac_health()").fetchall()
    assert len(rows) >= 12, rows
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
