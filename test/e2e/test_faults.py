"""Faults injected into the real services: nothing is lost, nothing hangs.

Temporal is frozen with SIGSTOP (its process keeps its sockets, so requests
connect and then wait for an answer that does not come) or stopped and
started again (the test server keeps its state in a SQLite file under the
stack's state directory, so it comes back with the schedules and workflows
it had: what a test finds after the restart is what the extension did).
PostgreSQL is restarted with `pg_ctl -m immediate`, and the dispatcher
background worker is killed with SIGKILL or terminated with SIGTERM.

Every test restores the stack in its teardown: Temporal is thawed and
running, PostgreSQL is up, and the definitions the test created are deleted
and their deletions applied.

A restart of PostgreSQL drops every open connection, including the
session-wide `conn` of conftest.py, so this module opens its own
connections and is marked `restarts_postgres` (conftest.py runs such
modules after all others).
"""
import json
import os
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from conftest import (alive, assert_one_completed_run, connect, connect_as, delta,
                      described, load_stack_env, log_offset, log_since, log_tail, pg_log, poll,
                      run_id, schedule_gone, signal_group, stack, state_dir, wait_completed,
                      stats, wait_gone, worker_pid, worker_pids)

load_stack_env()

STATE = state_dir()
PG_DATA = os.environ.get("AC_PG_DATA") or f"{STATE}/pg/data"
PG_LOG = pg_log()
PG_CTL = os.path.join(os.environ.get("AC_PGBIN", "/usr/lib/postgresql/15/bin"), "pg_ctl")
TEMPORAL_PIDFILE = Path(STATE) / "temporal" / "temporal.pid"
DISPATCHER = "activity_core dispatcher"
QUERY_CANCELED = "57014"

pytestmark = pytest.mark.restarts_postgres


# ---------------------------------------------------------------- processes

def pg_ctl(*args, timeout=90):
    """pg_ctl as the postgres account; the server logs to AC_PG_LOG."""
    res = subprocess.run(["runuser", "-u", "postgres", "--", PG_CTL, "-D", PG_DATA, *args],
                         cwd="/", stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         timeout=timeout)
    return res


def restart_postgres(mode):
    res = pg_ctl("-w", "-t", "60", "-l", PG_LOG, "restart", "-m", mode)
    assert res.returncode == 0, f"pg_ctl restart -m {mode}: {res.stdout}\n{res.stderr}"


def temporal_pid():
    """Pid of the running Temporal test server, from its pid file."""
    pid = int(TEMPORAL_PIDFILE.read_text().strip())
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        assert b"temporal" in f.read(), f"pid {pid} of {TEMPORAL_PIDFILE} is not Temporal"
    return pid


def signal_temporal(sig):
    """Send sig to Temporal and to its process group (it runs in its own session)."""
    try:
        pid = temporal_pid()
    except (FileNotFoundError, ValueError):
        return
    signal_group(pid, sig)


def freeze_temporal():
    signal_temporal(signal.SIGSTOP)
    pid = temporal_pid()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "T":
                return
        time.sleep(0.02)
    raise AssertionError(f"Temporal (pid {pid}) did not stop on SIGSTOP")


def thaw_temporal():
    signal_temporal(signal.SIGCONT)


# ---------------------------------------------------------------- database

def wait_dispatcher_in_requests(c, timeout=5.0):
    """Wait until the dispatcher reports that it is applying changes to Temporal."""
    def once():
        row = c.execute("SELECT state, query FROM pg_stat_activity WHERE backend_type = %s",
                        (DISPATCHER,)).fetchone()
        assert row == ("active", "applying schedule changes to Temporal"), row
    poll(once, timeout, 0.05)


def status(c, ids):
    """ac_sync_status rows of these ids, by id."""
    cur = c.execute("SELECT * FROM ac_sync_status WHERE activity_id = ANY(%s::uuid[])",
                    (list(ids),))
    cols = [d.name for d in cur.description]
    return {str(r[0]): dict(zip(cols, r)) for r in cur.fetchall()}


def wait_applied(c, ids, timeout=60.0):
    """Poll ac_sync_status until none of ids is pending; return their rows."""
    ids = list(ids)

    def once():
        rows = status(c, ids)
        pending = {i: (r["attempts"], r["last_error"]) for i, r in rows.items() if r["pending"]}
        assert not pending, f"{len(pending)} change(s) still pending: {list(pending.items())[:3]}"
        return rows
    return poll(once, timeout, 0.25)


def insert_crons(c, names, cron="*/5 * * * *", enabled=True):
    rows = c.execute(
        "INSERT INTO ac_activity_definitions (name, trigger_type, trigger_config, enabled) "
        "SELECT n, 'cron', %s::jsonb, %s FROM unnest(%s::text[]) AS n RETURNING id::text",
        (json.dumps({"cron_expression": cron}), enabled, list(names))).fetchall()
    return [r[0] for r in rows]


def unique(prefix):
    return f"fault-{prefix}-{uuid.uuid4().hex[:10]}"


# ---------------------------------------------------------------- Temporal

def calendar_field(body, field):
    cal = body["schedule"]["spec"]["structuredCalendar"][0]
    return [(r.get("start", 0), max(r.get("end", r.get("start", 0)), r.get("start", 0)))
            for r in cal.get(field, [{}])]


def paused(body):
    return body["schedule"].get("state", {}).get("paused", False)


# ---------------------------------------------------------------- restore

class Faults:
    """What a test broke and created; restore() puts the stack back."""

    def __init__(self):
        self.ids = []
        self.log_start = log_offset()

    def restore(self):
        thaw_temporal()
        stack("start-temporal")
        if pg_ctl("status").returncode != 0:
            res = pg_ctl("-w", "-t", "60", "-l", PG_LOG, "start")
            assert res.returncode == 0, f"pg_ctl start: {res.stdout}\n{res.stderr}"
        with connect() as c:
            worker_pid(c, DISPATCHER, timeout=15)
            if self.ids:
                c.execute("DELETE FROM ac_activity_definitions WHERE id = ANY(%s::uuid[])",
                          (self.ids,))
                ok = c.execute("SELECT ac_wait_sync('60s')").fetchone()[0]
                assert ok, f"cleanup not applied: {list(status(c, self.ids).values())[:3]}"


@pytest.fixture
def faults():
    f = Faults()
    try:
        yield f
    finally:
        f.restore()


# ---------------------------------------------------------------- tests

def test_cancel_and_statement_timeout_stop_a_request_to_a_frozen_temporal(faults):
    with connect() as c, connect() as other:
        faults.ids += insert_crons(c, [unique("timeout")])
        assert c.execute("SELECT ac_wait_sync('30s')").fetchone()[0]

        freeze_temporal()
        try:
            # statement_timeout: the backend waits on Temporal, then gives up at 1 s
            c.execute("SET statement_timeout = '1s'")
            t0 = time.monotonic()
            with pytest.raises(psycopg.Error) as err:
                c.execute("SELECT * FROM ac_sync_schedules()").fetchall()
            elapsed = time.monotonic() - t0
            assert err.value.sqlstate == QUERY_CANCELED, repr(err.value)
            assert "statement timeout" in str(err.value), str(err.value)
            assert 0.9 <= elapsed < 2.5, f"statement_timeout 1s took {elapsed:.2f}s"
            c.execute("RESET statement_timeout")

            # pg_cancel_backend from a second connection
            pid = c.info.backend_pid
            cancelled_at = []

            def cancel():
                time.sleep(0.5)
                cancelled_at.append(time.monotonic())
                other.execute("SELECT pg_cancel_backend(%s)", (pid,))

            t0 = time.monotonic()
            th = threading.Thread(target=cancel)
            th.start()
            try:
                with pytest.raises(psycopg.Error) as err:
                    c.execute("SELECT * FROM ac_sync_schedules()").fetchall()
                done = time.monotonic()
            finally:
                th.join()
            assert err.value.sqlstate == QUERY_CANCELED, repr(err.value)
            assert "canceling statement due to user request" in str(err.value), str(err.value)
            assert done - t0 >= 0.45, f"returned after {done - t0:.2f}s, before the cancel"
            assert done - cancelled_at[0] < 1.5, \
                f"cancel took {done - cancelled_at[0]:.2f}s to stop the request"
        finally:
            thaw_temporal()

        # the same backends work again, and nothing of the cancelled batches is left over
        for conn in (c, other):
            conn.execute("SELECT * FROM ac_sync_schedules()").fetchall()
            second = conn.execute("SELECT * FROM ac_sync_schedules()").fetchall()
            assert second == [], f"second reconcile still acted: {second}"
        described(faults.ids[0])


def test_changes_survive_a_postgres_crash_restart_while_temporal_is_down(faults):
    with connect() as c:
        upd, gone, paused_one, kept = insert_crons(
            c, [unique("upd"), unique("gone"), unique("pause"), unique("kept")])
        faults.ids += [upd, gone, paused_one, kept]
        assert c.execute("SELECT ac_wait_sync('30s')").fetchone()[0]
        for aid in (upd, gone, paused_one, kept):
            described(aid)
        kept_spec = described(kept)["schedule"]["spec"]

        stack("stop-temporal")
        (new,) = insert_crons(c, [unique("new")], cron="0 3 * * *")
        faults.ids.append(new)
        c.execute("UPDATE ac_activity_definitions SET trigger_config = %s WHERE id = %s",
                  (json.dumps({"cron_expression": "15 4 * * *"}), upd))
        c.execute("UPDATE ac_activity_definitions SET enabled = false WHERE id = %s",
                  (paused_one,))
        c.execute("DELETE FROM ac_activity_definitions WHERE id = %s", (gone,))
        changed = [new, upd, paused_one, gone]

        rows = status(c, changed)
        assert set(rows) == set(changed), rows
        assert all(r["pending"] for r in rows.values()), rows
        assert rows[gone]["deleted"] is True, rows[gone]

        # the dispatcher tries, fails and says why
        def tried():
            r = status(c, [new])[new]
            assert r["error_kind"] == "transient" and r["attempts"] >= 1, r
        poll(tried, timeout=5, interval=0.1)

    with connect() as c:
        old_dispatcher = worker_pid(c, DISPATCHER)
    restart_postgres("immediate")

    # the crash lost nothing: every change is still pending while Temporal is down
    with connect() as c:
        rows = status(c, changed)
        assert set(rows) == set(changed) and all(r["pending"] for r in rows.values()), rows
    stack("start-temporal")

    with connect() as c:
        assert worker_pid(c, DISPATCHER, other_than=old_dispatcher) != old_dispatcher
        rows = wait_applied(c, changed, timeout=60)
        assert gone not in rows, f"deleted definition still listed: {rows.get(gone)}"
        for aid in (new, upd, paused_one):
            r = rows[aid]
            assert r["applied_revision"] == r["desired_revision"] and r["last_error"] is None, r

    def new_ok(body):
        assert calendar_field(body, "hour") == [(3, 3)], body["schedule"]["spec"]
        assert not paused(body)
    described(new, new_ok)

    def upd_ok(body):
        assert calendar_field(body, "minute") == [(15, 15)], body["schedule"]["spec"]
        assert calendar_field(body, "hour") == [(4, 4)], body["schedule"]["spec"]
        assert not paused(body)
    described(upd, upd_ok)

    def paused_ok(body):
        assert paused(body), body["schedule"].get("state")
    described(paused_one, paused_ok)
    # Temporal kept its state across the restart: the schedule nobody changed is
    # there as it was, so the one that is gone was deleted by the dispatcher
    assert described(kept)["schedule"]["spec"] == kept_spec
    schedule_gone(gone, grpc_code=5)


def test_killed_dispatcher_comes_back_and_applies_pending_changes(faults):
    with connect() as c:
        old = worker_pid(c, DISPATCHER)
        freeze_temporal()
        ids = insert_crons(c, [unique(f"kill{i}") for i in range(3)])
        faults.ids += ids
        wait_dispatcher_in_requests(c)
        assert all(r["pending"] for r in status(c, ids).values())

        os.kill(old, signal.SIGKILL)
        assert wait_gone(old, 5, interval=0.05), f"dispatcher {old} survived SIGKILL"

    # the postmaster resets every process after a crashed child, then restarts them
    with connect(timeout=60) as c:
        new = worker_pid(c, DISPATCHER, timeout=30, other_than=old)
        assert new != old
        rows = status(c, ids)
        assert set(rows) == set(ids) and all(r["pending"] for r in rows.values()), rows
        thaw_temporal()
        wait_applied(c, ids, timeout=45)
        assert worker_pids(c, DISPATCHER) == [new], "the dispatcher restarted again"
    for aid in ids:
        described(aid)
    log = log_since(faults.log_start)
    assert f'background worker "{DISPATCHER}" (PID {old}) was terminated by signal 9' in log, \
        log_tail(faults.log_start)


def test_sigterm_stops_the_dispatcher_promptly_in_the_middle_of_requests(faults):
    with connect() as c:
        old = worker_pid(c, DISPATCHER)
        freeze_temporal()
        ids = insert_crons(c, [unique(f"term{i:03d}") for i in range(200)], cron="@hourly")
        faults.ids += ids
        wait_dispatcher_in_requests(c)

        t0 = time.monotonic()
        assert c.execute("SELECT pg_terminate_backend(%s)", (old,)).fetchone()[0] is True

        def gone():
            assert not alive(old), f"dispatcher {old} still running"
        poll(gone, timeout=2.0, interval=0.02)
        stopped = time.monotonic() - t0
        assert stopped < 2.0, f"dispatcher took {stopped:.2f}s to stop"

        # an orderly exit: no crash restart, so this connection is still there
        assert c.execute("SELECT 1").fetchone() == (1,)
        assert all(r["pending"] for r in status(c, ids).values())

        new = worker_pid(c, DISPATCHER, timeout=15, other_than=old)
        restarted = time.monotonic() - t0
        assert new != old
        assert 3.0 <= restarted <= 12.0, f"dispatcher restarted after {restarted:.1f}s"

        thaw_temporal()
        rows = wait_applied(c, ids, timeout=45)
        assert all(r["last_error"] is None for r in rows.values())
        assert c.execute("SELECT 1").fetchone() == (1,)

    log = log_since(faults.log_start)
    assert f"(PID {old}) was terminated by signal" not in log, log_tail(faults.log_start)
    assert "terminating any other active server processes" not in log, log_tail(faults.log_start)
    for aid in (ids[0], ids[99], ids[-1]):
        described(aid)


def test_start_retried_after_its_workflow_completed_starts_it_once(faults, role_names):
    """ac_trigger's start reached Temporal and the workflow completed, but the
    dispatcher never committed the outbox row's deletion (it waits on a table
    lock the test holds, and is terminated there): the new dispatcher sends the
    start again, and Temporal's reuse policy keeps it from a second run."""
    with connect() as c, connect() as locker, connect_as(role_names["app"]) as app:
        (aid,) = app.execute("INSERT INTO ac_activity_definitions (name, trigger_type) "
                             "VALUES (%s, 'manual') RETURNING id::text",
                             (unique("retry"),)).fetchone()
        faults.ids.append(aid)
        old = worker_pid(c, DISPATCHER)
        key = f"retry-{uuid.uuid4().hex[:8]}"
        freeze_temporal()
        try:
            # the start cannot return before the thaw, so it cannot be deleted before
            wid = app.execute("SELECT ac_trigger(%s, NULL, %s)", (aid, key)).fetchone()[0]
            (row,) = c.execute("SELECT id FROM ac_start_outbox WHERE workflow_id = %s",
                               (wid,)).fetchone()
            # reading the outbox goes on; deleting from it waits for the test
            locker.execute("BEGIN")
            locker.execute("LOCK TABLE ac_start_outbox IN SHARE MODE")
        finally:
            thaw_temporal()
        try:
            first = run_id(wait_completed(wid))

            def blocked():
                st = c.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                               (old,)).fetchone()
                assert st == ("Lock",), f"dispatcher not waiting on the lock: {st}"
            poll(blocked, timeout=10, interval=0.05)
            before = stats(c)
            assert c.execute("SELECT pg_terminate_backend(%s)", (old,)).fetchone()[0] is True
            assert wait_gone(old, 5), f"dispatcher {old} survived SIGTERM"
        finally:
            locker.execute("ROLLBACK")
        assert c.execute("SELECT count(*) FROM ac_start_outbox WHERE id = %s",
                         (row,)).fetchone()[0] == 1, "the row went with the terminated dispatcher"
        worker_pid(c, DISPATCHER, timeout=15, other_than=old)

        def drained():
            n = c.execute("SELECT count(*) FROM ac_start_outbox WHERE id = %s",
                          (row,)).fetchone()[0]
            assert n == 0, "the start outbox row was not retried"
        poll(drained, timeout=30)
        assert_one_completed_run(wid, first)
        # the resent start carried the first one's request id: Temporal answered
        # it as the same request (the run it made), not as another start refused
        d = delta(before, stats(c))
        assert (d["workflows_started"], d["workflows_already_started"]) == (1, 0), d
