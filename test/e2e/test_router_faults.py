"""Faults injected around the event router: nothing is lost, nothing starts twice.

The router background worker consumes ACTIVITY_EVENTS from NATS JetStream
and starts Temporal workflows.  These tests break its real neighbours and
the router process itself, and read the outcome back from the real
services:

* nats-server is stopped with SIGTERM (through its pid file) and started
  again with test/stack.sh on the same store directory, so JetStream keeps
  its stream and consumer;
* the Temporal dev server is stopped and started again (it is in-memory, so
  it comes back empty);
* the router is terminated with pg_terminate_backend (an orderly exit, the
  postmaster starts a new one after the worker's restart delay) or killed
  with SIGKILL (the postmaster then resets every process).

Workflows are checked with DescribeWorkflowExecution and with the visibility
list by the activity_id search attribute (each expected workflow id listed
exactly once), the consumer with JetStream's consumer info, the rest from
ac_stats, ac_dead_letters, ac_outbox and the PostgreSQL log.

Every test restores the stack in its teardown: Temporal thawed and running,
nats-server running, PostgreSQL up with a router, settings reset, and the
definitions and dead letters of the test deleted.  The SIGKILL test crashes
a backend, so the module opens its own connections and that test is marked
`restarts_postgres`.
"""
import asyncio
import json
import os
import signal
import time
import urllib.parse
import uuid
from pathlib import Path

import nats
import pytest

from conftest import (alive, connect, delta, http, load_stack_env, log_offset, log_since,
                      log_tail, poll, signal_group, stack, state_dir, stats, token, wait_gone,
                      wait_processed, wid, worker_pid)

load_stack_env()

STATE = state_dir()
TEMPORAL_URL = os.environ.get("AC_TEMPORAL_URL", "http://127.0.0.1:17243")
NATS_URL = os.environ.get("AC_NATS_URL", "nats://127.0.0.1:14222")
NATS_PIDFILE = Path(STATE) / "nats" / "nats.pid"
TEMPORAL_PIDFILE = Path(STATE) / "temporal" / "temporal.pid"
ROUTER = "activity_core router"
STREAM = "ACTIVITY_EVENTS"
CONSUMER = "activity-core-event-router"
PREFIX = "activity"


# ---------------------------------------------------------------- processes

def pid_of(pidfile, name):
    """Pid from a pid file when it names a live `name` process, else None."""
    try:
        pid = int(pidfile.read_text().strip())
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return pid if name.encode() in f.read() and alive(pid) else None
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None


def stop_nats():
    pid = pid_of(NATS_PIDFILE, "nats-server")
    assert pid, f"nats-server is not running ({NATS_PIDFILE})"
    os.kill(pid, signal.SIGTERM)
    assert wait_gone(pid, 15), f"nats-server (pid {pid}) survived SIGTERM"
    return pid


def signal_temporal(sig):
    """Send sig to Temporal and to its process group (it runs in its own session)."""
    pid = pid_of(TEMPORAL_PIDFILE, "temporal")
    if pid is not None:
        signal_group(pid, sig)


def require(condition, message):
    assert condition, message


# ---------------------------------------------------------------- database

def define(c, event_type):
    """An enabled event definition for event_type; returns its id."""
    return str(c.execute(
        "INSERT INTO ac_activity_definitions (name, trigger_type, trigger_config) "
        "VALUES (%s, 'event', %s) RETURNING id",
        (f"router-fault-{token()}", json.dumps({"event_type": event_type}))).fetchone()[0])


def dead_letters(c, event_ids):
    return c.execute("SELECT id, deliveries, reason, event_id, stream_seq, replayed_at "
                     "FROM ac_dead_letters WHERE event_id = ANY(%s) ORDER BY id",
                     (list(event_ids),)).fetchall()


def outbox_rows(c, event_type):
    return c.execute("SELECT id, msg_id, attempts, last_error FROM ac_outbox WHERE subject = %s "
                     "ORDER BY id", (f"{PREFIX}.{event_type}",)).fetchall()


# ---------------------------------------------------------------- NATS

class JetStream:
    """A synchronous face on nats-py's asyncio JetStream client."""

    def __init__(self, timeout=15.0):
        self.loop = asyncio.new_event_loop()
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.nc = self.run(nats.connect(NATS_URL, connect_timeout=2,
                                                max_reconnect_attempts=0, allow_reconnect=False))
                break
            except Exception:
                if time.monotonic() >= deadline:
                    self.loop.close()
                    raise
                time.sleep(0.2)
        self.js = self.nc.jetstream()

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    def publish(self, event_type, env, timeout=15.0):
        """Publish an envelope with a fresh Msg-Id, retrying while JetStream recovers; the seq."""
        data = json.dumps(env, separators=(",", ":")).encode()
        headers = {"Nats-Msg-Id": uuid.uuid4().hex}
        deadline = time.monotonic() + timeout
        while True:
            try:
                ack = self.run(self.js.publish(f"{PREFIX}.{event_type}", data, timeout=3,
                                               headers=headers))
                return ack.seq
            except Exception:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.3)

    def event(self, event_type, **payload):
        """Publish a new event of event_type; return (event_id, stream seq)."""
        eid = f"ev-{token()}"
        seq = self.publish(event_type, {"event_id": eid, "type": event_type, "payload": payload})
        return eid, seq

    def consumer(self):
        return self.run(self.js.consumer_info(STREAM, CONSUMER))

    def last_seq(self):
        return self.run(self.js.stream_info(STREAM)).state.last_seq

    def close(self):
        try:
            self.run(self.nc.close())
        except Exception:
            pass
        self.loop.close()


def router_ready(js, timeout=40.0):
    """The router consumes: an event nobody listens to is acknowledged."""
    _, seq = js.event(f"probe.{token()}")
    return wait_processed(js, seq, timeout)


# ---------------------------------------------------------------- Temporal

def temporal(method, path):
    return http(method, f"{TEMPORAL_URL}/namespaces/default{path}")


def describe_wf(workflow_id):
    return temporal("GET", "/workflows/" + urllib.parse.quote(workflow_id, safe=""))


def wait_workflows(workflow_ids, timeout=20.0):
    def once():
        missing = []
        for w in workflow_ids:
            code, body = describe_wf(w)
            assert code in (200, 404), f"describe {w}: HTTP {code} {body}"
            if code == 404:
                missing.append(w)
        assert not missing, f"{len(missing)} of {len(workflow_ids)} workflows not started: " \
                            f"{missing[:4]}"
    poll(once, timeout, 0.3)


def runs(aid):
    """Workflow ids that visibility lists for activity_id = aid."""
    query = urllib.parse.quote(f"activity_id = '{aid}'")
    code, body = temporal("GET", f"/workflows?pageSize=1000&query={query}")
    assert code == 200, f"list workflows of {aid}: HTTP {code} {body}"
    return [e["execution"]["workflowId"] for e in body.get("executions", [])]


def wait_runs(aid, expected, timeout=20.0):
    """Visibility lists exactly the expected workflow ids, each once, for aid."""
    expected = sorted(expected)

    def once():
        got = sorted(runs(aid))
        assert got == expected, (
            f"runs of {aid}: {len(got)} listed, {len(expected)} expected; "
            f"missing {sorted(set(expected) - set(got))[:4]}, "
            f"unexpected {sorted(set(got) - set(expected))[:4]}, "
            f"listed twice {sorted(w for w in set(got) if got.count(w) > 1)[:4]}")
    poll(once, timeout, 0.3)


# ---------------------------------------------------------------- restore

class Stack:
    """What a test broke and created; restore() puts the stack back."""

    def __init__(self):
        self.ids = []
        self.dead_mark = None
        self.log_start = log_offset()
        with connect() as c:
            self.dead_mark = c.execute("SELECT coalesce(max(id), 0) FROM ac_dead_letters").fetchone()[0]

    def restore(self):
        signal_temporal(signal.SIGCONT)
        stack("start")          # whatever is down: nats-server, Temporal, PostgreSQL
        with connect(timeout=60) as c:
            c.execute("ALTER SYSTEM RESET activity_core.router_max_deliveries")
            c.execute("SELECT pg_reload_conf()")
            if self.ids:
                c.execute("DELETE FROM ac_activity_definitions WHERE id = ANY(%s::uuid[])",
                          (self.ids,))
            c.execute("DELETE FROM ac_dead_letters WHERE id > %s", (self.dead_mark,))
            worker_pid(c, ROUTER, timeout=30)


@pytest.fixture
def restore():
    s = Stack()
    try:
        yield s
    finally:
        s.restore()


# ---------------------------------------------------------------- 1. NATS restarts

def test_router_and_outbox_ride_out_a_nats_restart(restore):
    etype = f"fault.nats.{token()}"
    with connect() as c:
        aid = define(c, etype)
        restore.ids.append(aid)
        js = JetStream()
        try:
            router_ready(js)
            router = worker_pid(c, ROUTER)
            before = stats(c)

            # events flow: some are routed, the last ones are published just before the kill
            routed = [js.event(etype, n=i)[0] for i in range(5)]
            wait_workflows([wid(aid, e) for e in routed])
            in_flight = [js.event(etype, n=i)[0] for i in range(5, 8)]
        finally:
            js.close()
        stopped_pid = stop_nats()
        down_at = time.monotonic()

        # published from SQL while NATS is down: the outbox keeps them and retries
        outbox = [c.execute("SELECT ac_publish(%s, %s::jsonb)",
                            (etype, json.dumps({"n": 8 + i}))).fetchone()[0] for i in range(3)]

        def tried():
            rows = outbox_rows(c, etype)
            assert sorted(r[1] for r in rows) == sorted(outbox), rows
            assert all(r[2] >= 1 and r[3] for r in rows), \
                f"the dispatcher has not failed to publish yet: {rows}"
        poll(tried, timeout=15)
        assert alive(router), "the router exited while NATS was down"
        time.sleep(max(0.0, 2.0 - (time.monotonic() - down_at)))
        assert pid_of(NATS_PIDFILE, "nats-server") is None, "nats-server came back by itself"
        stack("start")
        assert pid_of(NATS_PIDFILE, "nats-server") not in (None, stopped_pid)

        js = JetStream()
        try:
            after = [js.event(etype, n=11 + i) for i in range(5)]
            everything = routed + in_flight + outbox + [e for e, _ in after]
            wait_workflows([wid(aid, e) for e in everything], timeout=45)

            def drained():
                assert outbox_rows(c, etype) == [], "ac_outbox still holds events"
            poll(drained, timeout=30)
            # all acknowledged (an ack lost with the old server waits for the ack wait)
            ci = wait_processed(js, js.last_seq(), timeout=45)
            assert ci.num_ack_pending == 0, ci
        finally:
            js.close()

        # each event's workflow once, and nothing else
        wait_runs(aid, [wid(aid, e) for e in everything])
        d = delta(before, stats(c))
        assert d["workflows_started"] == len(everything), d
        assert d["events_dead_lettered"] == 0, d
        assert dead_letters(c, everything) == []

        # no PostgreSQL restart: the same router and the same connection throughout
        assert worker_pid(c, ROUTER) == router, "the router was restarted"
    log = log_since(restore.log_start)
    assert "terminated by signal" not in log and "exited with exit code" not in log, \
        log_tail(restore.log_start)


# ---------------------------------------------------------------- 2. Temporal down

def test_events_wait_for_temporal_and_start_when_it_is_back(restore):
    etype = f"fault.temporal.{token()}"
    n = 4
    with connect() as c:
        aid = define(c, etype)
        restore.ids.append(aid)
        js = JetStream()
        try:
            router_ready(js)
            stack("stop-temporal")
            before = stats(c)
            published = [js.event(etype, n=i) for i in range(n)]
            eids = [e for e, _ in published]

            # every message is nak'd, at least twice, and none is given up
            def retried():
                d = delta(before, stats(c))
                assert d["events_retried"] >= 2 * n, d
                return d
            d = poll(retried, timeout=20)
            assert d["workflows_started"] == 0 and d["events_dead_lettered"] == 0, d
            ci = js.consumer()
            assert ci.num_ack_pending >= n and ci.ack_floor.stream_seq < published[0][1], ci
            assert dead_letters(c, eids) == []
            log = log_since(restore.log_start)
            for delay, delivery in ((1000, 1), (2000, 2)):
                line = f"event {eids[0]} retried in {delay} ms (delivery {delivery})"
                assert line in log, f"{line!r} not logged:\n{log_tail(restore.log_start)}"

            # an empty Temporal comes back; nobody does anything else
            stack("start-temporal")
            wait_workflows([wid(aid, e) for e in eids], timeout=60)
            wait_runs(aid, [wid(aid, e) for e in eids])
            wait_processed(js, published[-1][1], timeout=15)
        finally:
            js.close()
        d = delta(before, stats(c))
        assert d["workflows_started"] == n, d
        assert d["events_dead_lettered"] == 0, d
        assert dead_letters(c, eids) == []


# ---------------------------------------------------------------- 3. max deliveries

def test_event_is_dead_lettered_after_max_deliveries_and_replayed(restore):
    etype = f"fault.maxdel.{token()}"
    with connect() as c:
        aid = define(c, etype)
        restore.ids.append(aid)
        js = JetStream()
        try:
            router_ready(js)
            offset = log_offset()
            c.execute("ALTER SYSTEM SET activity_core.router_max_deliveries = 2")
            c.execute("SELECT pg_reload_conf()")
            poll(lambda: require('parameter "activity_core.router_max_deliveries" changed to "2"'
                                 in log_since(offset), "configuration not reloaded"), timeout=5)
            time.sleep(1.5)  # the router reloads between two fetches (at most 1 s each)
            stack("stop-temporal")
            before = stats(c)
            eid, seq = js.event(etype, k="v")

            def dead():
                rows = dead_letters(c, [eid])
                assert rows, f"no dead letter for {eid}; stats {delta(before, stats(c))}"
                return rows
            rows = poll(dead, timeout=20)
            assert len(rows) == 1, rows
            dl_id, deliveries, reason, _, dl_seq, replayed_at = rows[0]
            assert reason.startswith("gave up after 2 deliveries"), reason
            assert deliveries == 2 and dl_seq == seq and replayed_at is None, rows[0]

            # terminated: not redelivered, nothing left pending
            ci = wait_processed(js, seq, timeout=10)
            assert ci.num_ack_pending == 0, ci
            received = stats(c)["events_received"]
            time.sleep(3)
            ci2 = js.consumer()
            assert ci2.num_redelivered == ci.num_redelivered, (ci, ci2)
            assert ci2.num_ack_pending == 0 and ci2.delivered.stream_seq == ci.delivered.stream_seq, ci2
            assert stats(c)["events_received"] == received, "the router received it again"
            assert len(dead_letters(c, [eid])) == 1, dead_letters(c, [eid])
            d = delta(before, stats(c))
            assert d["events_retried"] == 1 and d["events_dead_lettered"] == 1, d
            assert d["workflows_started"] == 0, d

            # back to normal, then replay
            c.execute("ALTER SYSTEM RESET activity_core.router_max_deliveries")
            c.execute("SELECT pg_reload_conf()")
            stack("start-temporal")
            code, body = describe_wf(wid(aid, eid))
            assert code == 404, f"workflow of a dead letter exists: HTTP {code} {body}"
            assert c.execute("SELECT ac_replay_dead_letter(%s)", (dl_id,)).fetchone()[0] == eid
            wait_workflows([wid(aid, eid)], timeout=20)
            wait_runs(aid, [wid(aid, eid)])
            assert c.execute("SELECT replayed_at IS NOT NULL FROM ac_dead_letters WHERE id = %s",
                             (dl_id,)).fetchone()[0]
            poll(lambda: require(c.execute("SELECT count(*) FROM ac_outbox WHERE msg_id LIKE %s",
                                           (f"replay-{dl_id}-%",)).fetchone()[0] == 0,
                                 "the replay is still in ac_outbox"), timeout=10)
            assert delta(before, stats(c))["workflows_started"] == 1
        finally:
            js.close()


# ---------------------------------------------------------------- 4. SIGTERM

def test_terminated_router_stops_promptly_and_a_new_one_routes(restore):
    etype = f"fault.term.{token()}"
    with connect() as c:
        aid = define(c, etype)
        restore.ids.append(aid)
        js = JetStream()
        try:
            router_ready(js)
            old = worker_pid(c, ROUTER)
            time.sleep(0.3)
            state = c.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", (old,)).fetchone()
            assert state in ((None,), ("idle",)), f"router not idle: {state}"

            t0 = time.monotonic()
            assert c.execute("SELECT pg_terminate_backend(%s)", (old,)).fetchone()[0] is True
            assert wait_gone(old, 2.0), f"router {old} still running 2 s after SIGTERM"
            stopped = time.monotonic() - t0

            # an orderly exit: no crash restart, this connection is still there
            assert c.execute("SELECT 1").fetchone() == (1,)
            new = worker_pid(c, ROUTER, timeout=15, other_than=old)
            restarted = time.monotonic() - t0
            assert 3.0 <= restarted <= 12.0, f"router restarted after {restarted:.1f}s"

            eid, seq = js.event(etype)
            wait_workflows([wid(aid, eid)], timeout=15)
            wait_runs(aid, [wid(aid, eid)])
            wait_processed(js, seq)
            assert worker_pid(c, ROUTER) == new
        finally:
            js.close()
    log = log_since(restore.log_start)
    assert f'background worker "{ROUTER}" (PID {old}) exited with exit code 1' in log, \
        log_tail(restore.log_start)
    assert "terminated by signal" not in log, log_tail(restore.log_start)
    assert "terminating any other active server processes" not in log, log_tail(restore.log_start)
    assert stopped < 2.0, stopped


# ---------------------------------------------------------------- 5. SIGKILL

@pytest.mark.restarts_postgres
def test_killed_router_loses_no_event(restore):
    etype = f"fault.kill.{token()}"
    with connect() as c:
        aid = define(c, etype)
        restore.ids.append(aid)
        js = JetStream()
        try:
            router_ready(js)
            old = worker_pid(c, ROUTER)
        except BaseException:
            js.close()
            raise
    try:
        os.kill(old, signal.SIGKILL)
        killed = time.monotonic()
        first, first_seq = js.event(etype, when="right after the kill")
        assert wait_gone(old, 5), f"router {old} survived SIGKILL"

        # the postmaster resets every process, then starts them again; connect once it
        # says so (a connection made before it noticed the crash would be dropped)
        def reset_done():
            log = log_since(restore.log_start)
            crashed = log.find(f'background worker "{ROUTER}" (PID {old}) was terminated by signal 9')
            assert crashed >= 0 and "database system is ready to accept connections" in \
                log[crashed:], log_tail(restore.log_start)
        poll(reset_done, timeout=30, interval=0.05)
        with connect(timeout=60) as c:
            new = worker_pid(c, ROUTER, timeout=30, other_than=old)
            assert new != old
            wait_workflows([wid(aid, first)], timeout=max(5.0, 45 - (time.monotonic() - killed)))
            second, second_seq = js.event(etype, when="once back")
            wait_workflows([wid(aid, second)], timeout=15)
            wait_runs(aid, [wid(aid, first), wid(aid, second)])
            ci = wait_processed(js, second_seq, timeout=max(5.0, 50 - (time.monotonic() - killed)))
            assert ci.num_ack_pending == 0, ci
            assert dead_letters(c, [first, second]) == []
            assert worker_pid(c, ROUTER) == new, "the router restarted again"
    finally:
        js.close()
    log = log_since(restore.log_start)
    assert f'background worker "{ROUTER}" (PID {old}) was terminated by signal 9' in log, \
        log_tail(restore.log_start)
