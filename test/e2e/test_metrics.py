"""Observability: /metrics and ac_stats against the real stack, and the
Prometheus alert rules of examples/prometheus.

* promtool (Debian's prometheus package, taken out by test/stack.sh deps)
  checks the alert rules, runs their unit tests, and checks a scrape taken
  while events flow;
* every figure is made to move for a real reason: starts sent to Temporal
  (the start histogram, the event age), ac_trigger and ac_publish (the
  outbox ages), a start Temporal refuses (the permanent failure counter and
  the failed outbox gauge), a Temporal that never answers (the timeout
  counter, and the consumer's lag piling up behind the router), NATS
  stopped (router connected 0, the publish outbox counted and ageing), a
  schedule deleted behind the table's back (drift at the reconcile);
* ac_stats shows the figures /metrics shows, and ac_stats_reset() zeroes
  the counters (ops may call it, viewers may not).
"""
import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request
import uuid

import nats
import psycopg
import pytest

from conftest import (NATS_URL, REPO, alter_system, poll, schedule_id, stack, temporal, unique,
                      wait_for)
from test_router_faults import pid_of, stop_nats, NATS_PIDFILE

METRICS_URL = os.environ.get("AC_METRICS_URL", "http://127.0.0.1:19090/metrics")
PROMTOOL = shutil.which("promtool") or str(REPO / ".cache" / "bin" / "promtool")
RULES_DIR = REPO / "examples" / "prometheus"
STREAM = "ACTIVITY_EVENTS"
CONSUMER = "activity-core-event-router"
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})? (\S+)$')


def until(pred, timeout):
    """Wait until pred() is true; fail with the last value otherwise."""
    assert wait_for(pred, timeout), "not reached within %s s" % timeout


def scrape():
    """The text of GET /metrics."""
    with urllib.request.urlopen(METRICS_URL, timeout=5) as resp:
        assert resp.status == 200
        return resp.read().decode()


def parse(text):
    """{(sample name, ((label, value), ...)): value} of an exposition text."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, line
        labels = tuple(sorted(re.findall(r'(\w+)="([^"]*)"', m.group(3) or "")))
        out[(m.group(1), labels)] = float(m.group(4))
    return out


def metric(name, text=None, **labels):
    """One sample of a scrape (a fresh one unless given)."""
    return parse(text or scrape())[(name, tuple(sorted(labels.items())))]


def promtool(*args, stdin=None):
    assert os.path.exists(PROMTOOL), f"promtool not found ({PROMTOOL}): run test/stack.sh deps"
    return subprocess.run([PROMTOOL, *args], input=stdin, capture_output=True, text=True,
                          timeout=60, cwd=RULES_DIR)


def define(c, trigger_type, **cols):
    name = unique(f"metrics-{trigger_type}")
    cols = {"name": name, "trigger_type": trigger_type, **cols}
    keys = ", ".join(cols)
    marks = ", ".join(["%s"] * len(cols))
    return str(c.execute(f"INSERT INTO ac_activity_definitions ({keys}) VALUES ({marks}) RETURNING id",
                         list(cols.values())).fetchone()[0])


class JetStream:
    """A synchronous face on nats-py's JetStream client."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.nc = self.loop.run_until_complete(nats.connect(NATS_URL, connect_timeout=5,
                                                            max_reconnect_attempts=3))
        self.js = self.nc.jetstream()

    def event(self, event_type, event_id=None):
        event_id = event_id or uuid.uuid4().hex
        data = json.dumps({"event_id": event_id, "type": event_type, "payload": {}}).encode()
        self.loop.run_until_complete(self.js.publish(f"activity.{event_type}", data, timeout=5,
                                                     headers={"Nats-Msg-Id": event_id}))
        return event_id

    def pending(self):
        return self.loop.run_until_complete(self.js.consumer_info(STREAM, CONSUMER)).num_pending

    def close(self):
        self.loop.run_until_complete(self.nc.close())
        self.loop.close()


@pytest.fixture
def cleanup(conn):
    ids = []
    yield ids
    if ids:
        conn.execute("DELETE FROM ac_activity_definitions WHERE id = ANY(%s::uuid[])", (ids,))


def test_alert_rules_pass_promtool_and_their_unit_tests():
    """The shipped rules load, and their unit tests fire the router,
    outbox, dead letter and reconcile alerts when (and only when) they should."""
    res = promtool("check", "rules", "activity_core.rules.yml")
    assert res.returncode == 0 and "SUCCESS: 7 rules found" in res.stdout, res.stdout + res.stderr
    res = promtool("test", "rules", "activity_core.rules.test.yml")
    assert res.returncode == 0 and "SUCCESS" in res.stdout, res.stdout + res.stderr


def test_scrape_during_load_passes_promtool_and_moves_the_histograms(conn, cleanup):
    """300 events published through ac_publish flow to Temporal while /metrics
    is scraped every 50 ms: a scrape taken mid-flow passes `promtool check
    metrics` (HELP and TYPE for every family), and the publish outbox age,
    the start latency and the event age histograms each count every event."""
    etype = unique("metrics.load")
    cleanup.append(define(conn, "event", trigger_config=json.dumps({"event_type": etype})))
    before = parse(scrape())
    n = 300
    conn.execute("SELECT ac_publish(%s, jsonb_build_object('n', i)) FROM generate_series(1, %s) i",
                 (etype, n))
    mid_flow = None
    deadline = time.time() + 90
    last = before
    while time.time() < deadline:
        text = scrape()
        now = parse(text)
        started = now[("activity_core_workflows_started_total", ())]
        if mid_flow is None and last[("activity_core_events_received_total", ())] < \
                now[("activity_core_events_received_total", ())] and \
                started < before[("activity_core_workflows_started_total", ())] + n:
            mid_flow = text
        last = now
        if started >= before[("activity_core_workflows_started_total", ())] + n:
            break
        time.sleep(0.05)
    assert mid_flow is not None, "no scrape was taken while events flowed"
    res = promtool("check", "metrics", stdin=mid_flow)
    assert res.returncode == 0 and res.stdout.strip() == "" and res.stderr.strip() == "", \
        res.stdout + res.stderr

    # every sample belongs to a family with a HELP and a TYPE line
    helped = set(re.findall(r"^# HELP (\S+) ", mid_flow, re.M))
    typed = dict(re.findall(r"^# TYPE (\S+) (\S+)$", mid_flow, re.M))
    assert helped == set(typed), helped ^ set(typed)
    for name, _ in parse(mid_flow):
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in typed else name
        assert family in typed, name

    after = last

    def grew(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after[key] - before[key]
    assert grew("activity_core_workflows_started_total") >= n
    assert grew("activity_core_temporal_request_duration_seconds_count", operation="start") >= n
    assert grew("activity_core_temporal_request_duration_seconds_sum", operation="start") > 0
    assert grew("activity_core_temporal_request_duration_seconds_bucket", operation="start",
                le="+Inf") >= n
    assert grew("activity_core_event_start_age_seconds_count") >= n
    assert grew("activity_core_outbox_entry_age_seconds_count", outbox="publish") >= n
    # the buckets are cumulative
    les = [after[k] for k in sorted(
        (k for k in after if k[0] == "activity_core_event_start_age_seconds_bucket"),
        key=lambda k: float(dict(k[1])["le"].replace("+Inf", "inf")))]
    assert les == sorted(les) and les[-1] == after[("activity_core_event_start_age_seconds_count", ())]


def test_a_reload_during_a_slow_request_is_still_answered(conn):
    """A reload's SIGHUP reaching the metrics worker while it waits for a
    client's request must not cut the request short: the client connects,
    a reload is sent, and only then the request line follows."""
    host, port = METRICS_URL.split("/")[2].rsplit(":", 1)
    for _ in range(3):
        with socket.create_connection((host, int(port)), timeout=5) as s:
            time.sleep(0.3)  # the worker has accepted and waits in poll()
            conn.execute("SELECT pg_reload_conf()")
            time.sleep(0.3)  # the SIGHUP has been delivered
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            reply = b""
            while chunk := s.recv(65536):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 200 OK"), reply[:200]
        assert b"activity_core_" in reply


def test_ac_stats_shows_the_figures_of_metrics(conn):
    """Every series of /metrics is a row of ac_stats, with the same value,
    type and help, and the same labels (the counters under their ac_stats
    names, without _total)."""
    def once():
        text = scrape()
        rows = conn.execute("SELECT name, labels, type, value_float, help FROM ac_stats").fetchall()
        scraped = parse(text)
        helps = dict(re.findall(r"^# HELP (\S+) (.*)$", text, re.M))
        assert len(rows) == len(scraped), (len(rows), len(scraped))
        for name, labels, typ, value, help_ in rows:
            sample = f"activity_core_{name}_total" if typ == "counter" else f"activity_core_{name}"
            key = (sample, tuple(sorted(labels.items())))
            assert key in scraped, key
            family = sample if typ == "counter" else re.sub(r"_(bucket|sum|count)$", "", sample) \
                if typ == "histogram" else sample
            assert helps[family] == help_, family
            if "age_seconds" in name and typ == "gauge" or name.startswith("seconds_since"):
                assert abs(scraped[key] - value) < 5, (key, scraped[key], value)
            else:
                assert scraped[key] == pytest.approx(value, abs=1e-6), (key, scraped[key], value)
    poll(once, 20, 0.5)


def test_trigger_and_schedule_changes_move_their_outbox_ages(conn, cleanup):
    """An ac_trigger start drains the start outbox (age histogram, start
    latency); a new cron definition drains a schedule intent (age histogram,
    schedule_create latency)."""
    before = parse(scrape())
    manual = define(conn, "manual")
    cleanup.append(manual)
    conn.execute("SELECT ac_trigger(%s)", (manual,))
    cleanup.append(define(conn, "cron", trigger_config=json.dumps({"cron_expression": "0 3 * * *"})))
    assert conn.execute("SELECT ac_wait_sync('30s')").fetchone()[0]

    def moved():
        now = parse(scrape())
        for name, labels in [
                ("activity_core_outbox_entry_age_seconds_count", (("outbox", "start"),)),
                ("activity_core_outbox_entry_age_seconds_count", (("outbox", "schedule"),)),
                ("activity_core_temporal_request_duration_seconds_count", (("operation", "start"),)),
                ("activity_core_temporal_request_duration_seconds_count",
                 (("operation", "schedule_create"),))]:
            assert now[(name, labels)] >= before[(name, labels)] + 1, (name, labels)
    poll(moved, 15)


def test_permanent_refusal_counts_a_permanent_failure(conn, cleanup):
    """A start Temporal refuses for good (a workflow type over its limit,
    written past the validation) counts one permanent start failure, and the
    start outbox's failed gauge shows the row until it is deleted."""
    before = parse(scrape())
    with conn.transaction():
        conn.execute("ALTER TABLE ac_activity_definitions DISABLE TRIGGER ac_definitions_validate")
        aid = str(conn.execute("INSERT INTO ac_activity_definitions (name, trigger_type, workflow_type) "
                               "VALUES (%s, 'manual', %s) RETURNING id",
                               (unique("metrics-refused"), "W" * 1100)).fetchone()[0])
        conn.execute("ALTER TABLE ac_activity_definitions ENABLE TRIGGER ac_definitions_validate")
    cleanup.append(aid)
    wf = conn.execute("SELECT ac_trigger(%s, NULL, 'refused')", (aid,)).fetchone()[0]
    key = ("activity_core_request_failures_total", (("class", "permanent"), ("operation", "start")))
    try:
        until(lambda: parse(scrape())[key] >= before[key] + 1, 20)
        until(lambda: metric("activity_core_outbox_failed", outbox="start") >= 1, 10)
    finally:
        conn.execute("DELETE FROM ac_start_outbox WHERE workflow_id = %s", (wf,))
    until(lambda: metric("activity_core_outbox_failed", outbox="start") == 0, 10)


def test_temporal_silent_counts_timeouts_and_the_consumer_lag_piles_up(conn, cleanup):
    """activity_core.temporal_url pointing at a socket that accepts and never
    answers (request timeout 1 s, batches of one): the starts count timeout
    failures and the consumer's pending messages (its lag, from consumer
    info) pile up behind the router; with Temporal back the lag drains to 0."""
    etype = unique("metrics.lag")
    cleanup.append(define(conn, "event", trigger_config=json.dumps({"event_type": etype})))
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(128)
    key = ("activity_core_request_failures_total", (("class", "timeout"), ("operation", "start")))
    before = parse(scrape())
    js = JetStream()
    try:
        alter_system(conn, temporal_url=f"http://127.0.0.1:{silent.getsockname()[1]}",
                     temporal_request_timeout="1s", router_batch_size="1")
        time.sleep(1)
        for _ in range(30):
            js.event(etype)
        until(lambda: metric("activity_core_consumer_pending_messages") >= 10, 30)
        until(lambda: parse(scrape())[key] >= before[key] + 1, 30)
    finally:
        alter_system(conn, temporal_url=None, temporal_request_timeout=None, router_batch_size=None)
        silent.close()
    try:
        until(lambda: js.pending() == 0, 90)
        until(lambda: metric("activity_core_consumer_pending_messages") == 0, 15)
    finally:
        js.close()


def test_nats_stopped_flips_router_connected_and_the_outbox_counts(conn):
    """With nats-server stopped the router reports 0 on router_connected,
    events published from SQL are counted (and age) in the publish outbox
    and their failed publishes count as timeouts or transient failures; once NATS is back the
    router reports 1 and the outbox drains to 0."""
    until(lambda: metric("activity_core_router_connected") == 1, 30)
    etype = unique("metrics.down")
    keys = [("activity_core_request_failures_total", (("class", c), ("operation", "publish")))
            for c in ("transient", "timeout")]
    before = parse(scrape())
    stop_nats()
    try:
        until(lambda: metric("activity_core_router_connected") == 0, 20)
        for i in range(3):
            conn.execute("SELECT ac_publish(%s, %s::jsonb)", (etype, json.dumps({"n": i})))

        def counted():
            now = parse(scrape())
            assert now[("activity_core_outbox_pending", (("outbox", "publish"),))] >= 3, now
            assert now[("activity_core_outbox_oldest_age_seconds", (("outbox", "publish"),))] >= 1, now
            # a publish while nats.c reconnects times out; one to no server is transient
            assert sum(now[k] for k in keys) >= sum(before[k] for k in keys) + 1
        poll(counted, 20)
    finally:
        if pid_of(NATS_PIDFILE, "nats-server") is None:
            stack("start")
    until(lambda: metric("activity_core_router_connected") == 1, 30)
    def drained():
        text = scrape()
        assert metric("activity_core_outbox_pending", text, outbox="publish") == 0
        assert metric("activity_core_outbox_oldest_age_seconds", text, outbox="publish") == 0, \
            (text, conn.execute("SELECT id, created_at, now(), attempts FROM ac_outbox").fetchall())
    poll(drained, 60)


def test_reconcile_gauges(conn, cleanup):
    """A reconcile sets seconds_since_last_reconcile near 0; a schedule
    deleted in Temporal behind the table's back is drift at the next
    reconcile, repaired there, so the one after finds none."""
    aid = define(conn, "cron", trigger_config=json.dumps({"cron_expression": "0 5 * * *"}))
    cleanup.append(aid)
    assert conn.execute("SELECT ac_wait_sync('30s')").fetchone()[0]
    # no periodic reconcile of the dispatcher in between
    alter_system(conn, reconcile_interval="1h")
    try:
        until(lambda: metric("activity_core_reconcile_interval_seconds") == 3600, 10)
        status, body = temporal("DELETE", f"/schedules/{schedule_id(aid)}")
        assert status == 200, body
        actions = conn.execute("SELECT action FROM ac_sync_schedules() WHERE activity_id = %s",
                               (aid,)).fetchall()
        assert actions == [("created",)], actions
        text = scrape()
        assert metric("activity_core_schedules_drifted", text) >= 1
        assert metric("activity_core_seconds_since_last_reconcile", text) < 5
        conn.execute("SELECT * FROM ac_sync_schedules()").fetchall()
        assert metric("activity_core_schedules_drifted") == 0
    finally:
        alter_system(conn, reconcile_interval=None)


def test_a_server_that_leaves_the_schedules_to_another_reports_no_reconcile_interval(conn):
    """With manage_schedules off the server never reconciles, so its
    reconcile interval gauge is 0 and the stale-reconcile alert (which
    requires an interval above 0) stays silent however long it runs."""
    assert metric("activity_core_reconcile_interval_seconds") > 0
    alter_system(conn, manage_schedules="off")
    try:
        until(lambda: metric("activity_core_reconcile_interval_seconds") == 0, 10)
    finally:
        alter_system(conn, manage_schedules=None)
    until(lambda: metric("activity_core_reconcile_interval_seconds") > 0, 10)


def test_stats_reset_zeroes_counters_for_ops_only(conn, ops, viewer, cleanup):
    """ac_stats_reset() (granted to the operator role) sets the counters and
    histograms of ac_stats and /metrics to 0 and leaves the gauges; the
    read-only role may not call it."""
    manual = define(conn, "manual")
    cleanup.append(manual)
    conn.execute("SELECT ac_trigger(%s)", (manual,))
    assert conn.execute("SELECT ac_wait_sync('30s')").fetchone()[0]
    assert metric("activity_core_workflows_started_total") >= 1
    interval = metric("activity_core_reconcile_interval_seconds")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        viewer.execute("SELECT ac_stats_reset()")
    ops.execute("SELECT ac_stats_reset()")
    text = scrape()
    for name in ("activity_core_workflows_started_total", "activity_core_events_published_total",
                 "activity_core_schedules_applied_total"):
        assert metric(name, text) == 0, name
    assert metric("activity_core_temporal_request_duration_seconds_count", text, operation="start") == 0
    assert metric("activity_core_outbox_entry_age_seconds_count", text, outbox="start") == 0
    assert metric("activity_core_reconcile_interval_seconds", text) == interval
    assert conn.execute("SELECT value FROM ac_stats WHERE name = 'workflows_started'").fetchone()[0] == 0
