"""Faults injected around the event router: nothing is lost, nothing starts twice.

The router background worker consumes ACTIVITY_EVENTS from NATS JetStream
and starts Temporal workflows.  These tests break its real neighbours and
the router process itself, and read the outcome back from the real
services:

* nats-server is stopped with SIGTERM (through its pid file) and started
  again with test/stack.sh on the same store directory, so JetStream keeps
  its stream and consumer;
* the Temporal dev server is stopped and started again (on its SQLite file,
  so it comes back with the schedules and workflows it had), or frozen with
  SIGSTOP so that the router's starts stay outstanding;
* the router is terminated with pg_terminate_backend (an orderly exit, the
  postmaster starts a new one after the worker's restart delay) or killed
  with SIGKILL (the postmaster then resets every process).

Workflows are checked with DescribeWorkflowExecution and with the visibility
list by the activity_id search attribute (each expected workflow id listed
exactly once); the reference worker completes them, and "exactly once" is a
count of the runs per workflow id (closed and open), so that a second start
of a completed workflow would show.  The consumer is read with JetStream's
consumer info, the rest from ac_stats, ac_dead_letters, ac_outbox and the
PostgreSQL log.

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

from conftest import (NATS_URL, alive, assert_one_completed_run, connect, delta,
                      describe_workflow, http, load_stack_env, log_offset, log_since, log_tail,
                      poll, run_id, signal_group, stack, state_dir, stats, token, wait_completed,
                      wait_gone, wait_no_pull_waiting, wait_processed, wid, worker_pid)
from test_faults import freeze_temporal, thaw_temporal

load_stack_env()

STATE = state_dir()
TEMPORAL_URL = os.environ.get("AC_TEMPORAL_URL", "http://127.0.0.1:17243")
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


def wait_workflows(workflow_ids, timeout=20.0):
    def once():
        missing = [w for w in workflow_ids if describe_workflow(w) is None]
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
            c.execute("ALTER SYSTEM RESET activity_core.router_ack_wait")
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


def subject_count(js, subject):
    """Messages the stream holds on subject."""
    info = js.run(js.js.stream_info(STREAM, subjects_filter=subject))
    return (info.state.subjects or {}).get(subject, 0)


def test_outbox_backlog_is_published_once_through_a_nats_restart_and_a_dispatcher_stop(restore):
    """A backlog of many batches (the dispatcher reads the next one while the
    last is in flight) is broken twice in the middle of its drain: nats-server
    is stopped, then the dispatcher is terminated.  Every row reaches the
    stream exactly once, and the outbox ends empty."""
    n = 60000
    etype = f"fault.backlog.{token()}"
    subject = f"{PREFIX}.{etype}"
    with connect() as c:
        dispatcher = worker_pid(c, "activity_core dispatcher")

        def backlog():
            return c.execute("SELECT count(*) FROM ac_outbox WHERE subject = %s", (subject,)).fetchone()[0]

        def publish(first):
            c.execute("SELECT count(ac_publish(%s, jsonb_build_object('n', g))) "
                      "FROM generate_series(%s, %s) g", (etype, first, first + n - 1))

        def mid_drain():
            """Wait until the drain is under way but far from done."""
            def once():
                left = backlog()
                assert left < n - 4000, f"{left} of {n} rows still in the outbox"
                return left
            left = poll(once, timeout=30, interval=0.01)
            assert left > 0, "the backlog drained before it could be broken"
            return left

        # 1. nats-server stops in the middle of the drain, and comes back
        publish(0)
        left_at_stop = mid_drain()
        stop_nats()
        time.sleep(1.0)
        stuck = backlog()
        assert stuck > 0, "nothing left in the outbox while NATS was down"
        stack("start")
        poll(lambda: require(backlog() == 0, f"{backlog()} rows still in the outbox"), timeout=60)

        # 2. the dispatcher is terminated in the middle of the next drain
        publish(n)
        left_at_kill = mid_drain()
        c.execute("SELECT pg_terminate_backend(%s)", (dispatcher,))
        worker_pid(c, "activity_core dispatcher", timeout=30, other_than=dispatcher)
        poll(lambda: require(backlog() == 0, f"{backlog()} rows still in the outbox"), timeout=60)
        permanent = c.execute("SELECT count(*) FROM ac_outbox WHERE error_permanent").fetchone()[0]
        assert permanent == 0, f"{permanent} outbox rows failed for good"

    js = JetStream()
    try:
        # each row once: the Msg-Ids drop what went twice
        got = subject_count(js, subject)
        assert got == 2 * n, (f"the stream holds {got} messages on {subject}, {2 * n} expected "
                              f"(broken with {left_at_stop} and {left_at_kill} rows left)")
    finally:
        js.close()


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
            # a workflow from before the stop: Temporal keeps it across the restart
            kept, _ = js.event(etype, n=-1)
            kept_run = run_id(wait_completed(wid(aid, kept)))
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

            # Temporal comes back with what it had; nobody does anything else
            stack("start-temporal")
            assert run_id(wait_completed(wid(aid, kept))) == kept_run
            wait_workflows([wid(aid, e) for e in eids], timeout=60)
            wait_processed(js, published[-1][1], timeout=15)
            for e in eids:
                assert_one_completed_run(wid(aid, e))
            wait_runs(aid, [wid(aid, e) for e in [kept] + eids])
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
            # a workflow from before the stop, to tell a kept Temporal from an empty one
            kept, _ = js.event(etype, k="kept")
            kept_run = run_id(wait_completed(wid(aid, kept)))
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

            # terminated: below the ack floor, JetStream never delivers it again
            ci = wait_processed(js, seq, timeout=10)
            assert ci.num_ack_pending == 0, ci
            assert len(dead_letters(c, [eid])) == 1, dead_letters(c, [eid])
            d = delta(before, stats(c))
            assert d["events_retried"] == 1 and d["events_dead_lettered"] == 1, d
            assert d["workflows_started"] == 0, d

            # back to normal, then replay
            c.execute("ALTER SYSTEM RESET activity_core.router_max_deliveries")
            c.execute("SELECT pg_reload_conf()")
            stack("start-temporal")
            # the state from before the stop is there: the dead letter's workflow is
            # absent because nothing started it, not because Temporal forgot it
            assert run_id(wait_completed(wid(aid, kept))) == kept_run
            body = describe_workflow(wid(aid, eid))
            assert body is None, f"workflow of a dead letter exists: {body}"
            assert c.execute("SELECT ac_replay_dead_letter(%s)", (dl_id,)).fetchone()[0] == eid
            assert_one_completed_run(wid(aid, eid), timeout=20)
            wait_runs(aid, [wid(aid, kept), wid(aid, eid)])
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


# ---------------------------------------------------------------- 6. faults with work in flight
# JetStream redelivers a message that was delivered and never acknowledged
# once the consumer's AckWait (activity_core.router_ack_wait, 5 s) passed:
# each of these tests waits for it.

ACK_WAIT = 5.0


def wait_fetched(js, seqs, timeout=10.0):
    """Wait until the router fetched every message of seqs and acknowledged none."""
    def once():
        ci = js.consumer()
        assert ci.delivered.stream_seq >= max(seqs) and ci.num_ack_pending >= len(seqs), (
            f"batch not fetched yet: delivered {ci.delivered.stream_seq}, ack pending "
            f"{ci.num_ack_pending}, want {len(seqs)} up to {max(seqs)}")
        assert ci.ack_floor.stream_seq < min(seqs), f"acked before its starts returned: {ci}"
        return ci
    return poll(once, timeout, 0.05)


def publish_batch(js, router, etype, n):
    """Publish n events while the router is stopped (SIGSTOP), so that its next
    fetch takes them as one batch; return [(event id, stream seq)]."""
    os.kill(router, signal.SIGSTOP)
    try:
        # its pull request still waiting would take the first message alone
        wait_no_pull_waiting(js)
        return [js.event(etype, n=i) for i in range(n)]
    finally:
        os.kill(router, signal.SIGCONT)


def wait_crash_reset(restore, pid):
    """Wait until the postmaster noticed that pid died by a signal and is ready again."""
    def reset_done():
        log = log_since(restore.log_start)
        crashed = log.find(f'background worker "{ROUTER}" (PID {pid}) was terminated by signal 9')
        assert crashed >= 0 and "database system is ready to accept connections" in \
            log[crashed:], log_tail(restore.log_start)
    poll(reset_done, timeout=30, interval=0.05)


@pytest.mark.restarts_postgres
def test_router_killed_with_starts_outstanding_starts_each_event_once(restore):
    """SIGKILL while a batch's starts wait on a frozen Temporal: nothing was acked,
    JetStream redelivers the batch to the new router one ack wait after the last
    in-progress ack, and every event ends with exactly one completed run.  The
    time from the SIGKILL to every event routed again is printed and must stay
    within 10 s (ack wait 5 s, plus the postmaster's reset and a new router)."""
    etype = f"fault.killbatch.{token()}"
    with connect() as c:
        aid = define(c, etype)
        restore.ids.append(aid)
    js = JetStream()
    try:
        router_ready(js)
        with connect() as c:
            old = worker_pid(c, ROUTER)
        freeze_temporal()
        try:
            batch = publish_batch(js, old, etype, 5)
            wait_fetched(js, [s for _, s in batch])
            os.kill(old, signal.SIGKILL)
            killed = time.monotonic()
            assert wait_gone(old, 5), f"router {old} survived SIGKILL"
        finally:
            thaw_temporal()
        wait_workflows([wid(aid, e) for e, _ in batch], timeout=60)
        recovered = time.monotonic() - killed
        print(f"\nbatch of a killed router routed again {recovered:.1f} s after the SIGKILL")
        assert recovered <= 10.0, f"routed again only {recovered:.1f} s after the SIGKILL"
        wait_crash_reset(restore, old)
        with connect(timeout=60) as c:
            worker_pid(c, ROUTER, timeout=30, other_than=old)
            ci = wait_processed(js, batch[-1][1], timeout=ACK_WAIT + 30)
            assert ci.num_ack_pending == 0, ci
            for e, _ in batch:
                assert_one_completed_run(wid(aid, e))
            wait_runs(aid, [wid(aid, e) for e, _ in batch])
            assert dead_letters(c, [e for e, _ in batch]) == []
    finally:
        js.close()


@pytest.mark.restarts_postgres
def test_message_redelivered_after_its_workflow_completed_starts_nothing(restore):
    """The router started the workflows, the acks never reached NATS (nats-server
    was down, then the router was killed): the redelivered messages find the
    workflows completed, and Temporal's reuse policy refuses a second run."""
    etype = f"fault.redeliver.{token()}"
    with connect() as c:
        aid = define(c, etype)
        restore.ids.append(aid)
    js = JetStream()
    try:
        router_ready(js)
        with connect() as c:
            old = worker_pid(c, ROUTER)
        freeze_temporal()
        try:
            batch = publish_batch(js, old, etype, 3)
            wait_fetched(js, [s for _, s in batch])
        finally:
            js.close()
            stop_nats()
            thaw_temporal()
        # the starts return; the acks have no server to go to
        first_runs = {e: run_id(wait_completed(wid(aid, e))) for e, _ in batch}
        os.kill(old, signal.SIGKILL)
        assert wait_gone(old, 5), f"router {old} survived SIGKILL"
        wait_crash_reset(restore, old)
        with connect(timeout=60) as c:
            worker_pid(c, ROUTER, timeout=30, other_than=old)
            # counted before NATS is back: the ack wait (5 s) is long over, so the
            # new router gets the messages as soon as it reconnects
            before = stats(c)
            stack("start")
            js = JetStream()
            ci = wait_processed(js, batch[-1][1], timeout=ACK_WAIT + 30)
            assert ci.num_ack_pending == 0, ci
            d = delta(before, stats(c))
            assert d["workflows_already_started"] == len(batch), d
            assert d["workflows_started"] == 0, d
            for e, _ in batch:
                assert_one_completed_run(wid(aid, e), first_runs[e])
            assert dead_letters(c, [e for e, _ in batch]) == []
    finally:
        js.close()


def test_sigterm_mid_batch_acks_nothing_unstarted(restore):
    """pg_terminate_backend while a batch's starts wait on a frozen Temporal: the
    router exits promptly without acking them; the new router starts each once."""
    etype = f"fault.termbatch.{token()}"
    with connect() as c:
        aid = define(c, etype)
        restore.ids.append(aid)
        js = JetStream()
        try:
            router_ready(js)
            old = worker_pid(c, ROUTER)
            freeze_temporal()
            try:
                batch = publish_batch(js, old, etype, 5)
                seqs = [s for _, s in batch]
                wait_fetched(js, seqs)
                assert c.execute("SELECT pg_terminate_backend(%s)", (old,)).fetchone()[0] is True
                assert wait_gone(old, 2.0), f"router {old} still running 2 s after SIGTERM"
                # nothing of the batch acknowledged: no start of it has returned
                ci = js.consumer()
                assert ci.ack_floor.stream_seq < min(seqs) and ci.num_ack_pending >= len(seqs), ci
            finally:
                thaw_temporal()
            assert c.execute("SELECT 1").fetchone() == (1,)
            worker_pid(c, ROUTER, timeout=15, other_than=old)
            ci = wait_processed(js, seqs[-1], timeout=ACK_WAIT + 30)
            assert ci.num_ack_pending == 0, ci
            for e, _ in batch:
                assert_one_completed_run(wid(aid, e))
            wait_runs(aid, [wid(aid, e) for e, _ in batch])
            assert dead_letters(c, [e for e, _ in batch]) == []
        finally:
            js.close()
    log = log_since(restore.log_start)
    assert f'background worker "{ROUTER}" (PID {old}) exited with exit code 1' in log, \
        log_tail(restore.log_start)
    assert "terminated by signal" not in log, log_tail(restore.log_start)


# ---------------------------------------------------------------- 7. refusals and dead letters

# Temporal's dev server refuses a payload over 2 MiB (limit.blobSize.error)
# with INVALID_ARGUMENT "Blob data size exceeds limit."  The statement refuses
# an input that alone passes that limit, so the input stays just under it and
# the event's payload (known only when it is routed) takes the argument over.
REFUSED_INPUT = {"blob": "x" * (2 * 1024 * 1024 - 8 * 1024)}
REFUSED_EVENT_PAD = "y" * (32 * 1024)


def test_start_temporal_refuses_becomes_a_dead_letter(restore):
    etype = f"fault.refused.{token()}"
    with connect() as c:
        refused = str(c.execute(
            "INSERT INTO ac_activity_definitions (name, trigger_type, trigger_config, input) "
            "VALUES (%s, 'event', %s, %s) RETURNING id",
            (f"router-refused-{token()}", json.dumps({"event_type": etype, "filters": {"k": 1}}),
             json.dumps(REFUSED_INPUT))).fetchone()[0])
        restore.ids.append(refused)
        ok = define(c, etype)
        restore.ids.append(ok)
        js = JetStream()
        try:
            router_ready(js)
            before = stats(c)
            eid, seq = js.event(etype, k=1, pad=REFUSED_EVENT_PAD)
            sentinel, sentinel_seq = js.event(etype, k=2)
            # the positive control: the event after it went through
            wait_completed(wid(ok, sentinel))
            ci = wait_processed(js, sentinel_seq)
            assert ci.num_ack_pending == 0, ci
            rows = dead_letters(c, [eid])
            assert len(rows) == 1, rows
            _, deliveries, reason, _, dl_seq, replayed_at = rows[0]
            assert reason == (f"Temporal refused: start of activity {refused}: invalid argument: "
                              "Blob data size exceeds limit."), reason
            assert (deliveries, dl_seq, replayed_at) == (1, seq, None), rows[0]
            assert describe_workflow(wid(refused, eid)) is None
            # the other definition's start for the same event went through, once
            assert_one_completed_run(wid(ok, eid))
            d = delta(before, stats(c))
            assert d["events_dead_lettered"] == 1 and d["events_retried"] == 0, d
        finally:
            js.close()


@pytest.mark.restarts_postgres
def test_poison_is_terminated_only_after_its_dead_letter_commits(restore):
    """While the router's dead-letter insert waits on a lock the test holds, the
    poison message stays unacknowledged: it is terminated only after the dead
    letter committed.  The router killed right then, JetStream delivers the
    message again and it gets exactly one dead letter."""
    etype = f"fault.dlorder.{token()}"
    eid = f"dl-{token()}"
    js = JetStream()
    try:
        router_ready(js)
        with connect() as c:
            old = worker_pid(c, ROUTER)
        locker = connect()
        try:
            locker.execute("BEGIN")
            locker.execute("LOCK TABLE ac_dead_letters IN EXCLUSIVE MODE")
            seq = js.publish(etype, {"event_id": eid, "type": etype, "payload": "s"})

            def router_waits_on_the_lock():
                n = locker.execute("SELECT count(*) FROM pg_locks WHERE pid = %s AND NOT granted",
                                   (old,)).fetchone()[0]
                assert n > 0, "the router does not wait on the dead letters' lock"
            poll(router_waits_on_the_lock, 30, 0.05)
            # the router is held inside its dead-letter insert: a Term sent before
            # it would reach nats-server within this second
            time.sleep(1)
            ci = js.consumer()
            assert ci.ack_floor.stream_seq < seq and ci.num_ack_pending == 1, (
                f"message {seq} was acknowledged before its dead letter committed: {ci}")
            os.kill(old, signal.SIGKILL)
            assert wait_gone(old, 5), f"router {old} survived SIGKILL"
        finally:
            try:
                locker.close()
            except Exception:
                pass
        wait_crash_reset(restore, old)
        with connect(timeout=60) as c:
            worker_pid(c, ROUTER, timeout=30, other_than=old)
            ci = wait_processed(js, seq, timeout=ACK_WAIT + 30)
            assert ci.num_ack_pending == 0, ci
            rows = dead_letters(c, [eid])
            assert len(rows) == 1, rows
            assert rows[0][4] == seq, rows
    finally:
        js.close()


def test_dead_letter_written_before_a_crash_is_not_written_twice(restore):
    """The router commits a dead letter, then terms the message; a crash between
    the two makes JetStream redeliver it.  Simulated deterministically: with the
    router stopped (SIGSTOP), the message is published and its dead letter
    committed as the router would have written it; then the router goes on.  It
    must find that dead letter, write no second one, and terminate the message."""
    etype = f"fault.dlcrash.{token()}"
    subject = f"{PREFIX}.{etype}"
    raw = json.dumps({"event_id": f"dl-{token()}", "type": etype, "payload": "s"}).encode()
    with connect() as c:
        aid = define(c, etype)
        restore.ids.append(aid)
        js = JetStream()
        try:
            router_ready(js)
            router = worker_pid(c, ROUTER)
            before = stats(c)
            os.kill(router, signal.SIGSTOP)
            try:
                ack = js.run(js.js.publish(subject, raw, timeout=5,
                                           headers={"Nats-Msg-Id": uuid.uuid4().hex}))
                seq = ack.seq
                event_id = json.loads(raw)["event_id"]
                (dl_id,) = c.execute(
                    "INSERT INTO ac_dead_letters (subject, stream_seq, deliveries, reason, "
                    "event_id, event_type, raw) VALUES (%s, %s, 1, "
                    "'payload is a string, not a JSON object', %s, %s, %s) RETURNING id",
                    (subject, seq, event_id, etype, raw)).fetchone()
            finally:
                os.kill(router, signal.SIGCONT)
            sentinel, sentinel_seq = js.event(etype)
            wait_completed(wid(aid, sentinel))
            ci = wait_processed(js, sentinel_seq)
            assert ci.num_ack_pending == 0, ci
            rows = c.execute("SELECT id FROM ac_dead_letters WHERE stream_seq = %s",
                             (seq,)).fetchall()
            assert rows == [(dl_id,)], f"dead letters of stream sequence {seq}: {rows}"
            d = delta(before, stats(c))
            assert d["events_dead_lettered"] == 0 and d["events_retried"] == 0, d
            assert describe_workflow(wid(aid, event_id)) is None
            assert worker_pid(c, ROUTER) == router
        finally:
            js.close()
    assert (f"dead letter for stream sequence {seq} already written by an earlier delivery"
            in log_since(restore.log_start)), log_tail(restore.log_start)
