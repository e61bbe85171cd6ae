"""Standby and failover: a primary made for the test and its standby
(pg_basebackup -R through a replication slot), both preloading activity_core
with the same settings.  On the standby no worker runs (nothing reaches
Temporal or NATS from it) and ac_health() says why; then the primary stops,
events are published from outside while no primary is up, the standby is
promoted, and its workers take over: every event is routed exactly once, and
a schedule change made after the promotion reaches Temporal.

The test stack's own cluster is not touched (the failover is between two
extra clusters on ports AC_CLUSTER_PORT_BASE+10 and +11); they share the
stack's Temporal and NATS, with a stream and consumer of their own.
"""
import time

import pytest

from conftest import NATS_ADDRESS, described, poll, schedule_gone, unique
from extra_servers import (EVENTS, PORT_BASE, Cluster, Publisher, envelope, exactly_once,
                           health, print_figures, wait_router_connected, worker_count)

PREFIX = "acfo"
STREAM = "AC_FAILOVER"
CONSUMER = "ac-failover-router"
SETTINGS = dict(stream_name=STREAM, subject_prefix=PREFIX, consumer_name=CONSUMER,
                reconcile_interval="10s")


@pytest.fixture
def pair():
    primary = Cluster("fo-primary", PORT_BASE + 10, "acfo", **SETTINGS)
    standby = Cluster("fo-standby", PORT_BASE + 11, "acfo", **SETTINGS)
    pub = None
    try:
        yield primary, standby
    finally:
        standby.cleanup()
        primary.cleanup()
        try:
            pub = Publisher([NATS_ADDRESS])
            pub.call(lambda js: js.delete_stream(STREAM), 5)
        except Exception:  # noqa: BLE001 - the stream may not exist
            pass
        finally:
            if pub:
                pub.close()


def test_standby_starts_nothing_and_takes_over_after_promotion(pair):
    primary, standby = pair
    primary.initdb()
    primary.start()
    c = primary.create_db()
    aid = str(c.execute(
        "INSERT INTO ac_activity_definitions (name, trigger_type, trigger_config) "
        "VALUES (%s, 'event', %s) RETURNING id",
        (unique("fo-event"), '{"event_type": "fo.order", "filters": {"kind": "go"}}')).fetchone()[0])
    cron = str(c.execute(
        "INSERT INTO ac_activity_definitions (name, trigger_type, trigger_config) "
        "VALUES (%s, 'cron', '{\"cron_expression\": \"0 3 * * *\"}') RETURNING id",
        (unique("fo-cron"),)).fetchone()[0])
    wait_router_connected(c)
    described(cron, timeout=30)

    # the standby, streaming from the primary through a slot
    standby.basebackup(primary, "fo_standby")
    standby.start()
    s = standby.connect()
    assert s.execute("SELECT pg_is_in_recovery()").fetchone()[0]
    poll(lambda: _streaming(c), 30)

    pub = Publisher([NATS_ADDRESS])
    expected, sent = [], 0

    def send(n, tag):
        nonlocal sent
        for i in range(n):
            eid = f"{tag}-{unique('e')}"
            kind = "go" if i % 5 else "skip"
            pub.publish(f"{PREFIX}.fo.order", envelope("fo.order", eid, kind=kind, i=i))
            sent += 1
            if kind == "go":
                expected.append(eid)

    try:
        # 1. the primary routes; the standby runs no worker and says why
        n = max(EVENTS // 4, 10)
        send(n, "before")
        for _ in range(5):
            eid = unique("pub-before")
            c.execute("SELECT ac_publish('fo.order', '{\"kind\": \"go\"}', %s)", (eid,))
            expected.append(eid)
            sent += 1
        time.sleep(3)
        assert worker_count(s) == 0, "a worker runs on the standby"
        h = health(s)
        assert h["standby"][0] is True and "standby" in h["standby"][1], h["standby"]
        assert h["standby"][2] and "promot" in h["standby"][2], h["standby"]
        for check in ("dispatcher_running", "router_running"):
            assert h[check][0] is True and "standby" in h[check][1], h[check]
        assert "standby" not in health(c)
        consumers = pub.call(lambda js: js.consumer_info(STREAM, CONSUMER))
        assert consumers.num_waiting <= 1, "more than one router pulls: the standby's?"

        # 2. the primary stops; events keep coming while no primary is up
        poll(lambda: _replayed(c, s), 30)
        primary.stop("fast")
        t_down = time.monotonic()
        send(n, "down")

        # 3. promotion: the new primary's workers start and route the backlog
        standby.stop("fast")
        standby.start()   # still a standby after a restart (standby.signal)
        s = standby.connect()
        assert s.execute("SELECT pg_is_in_recovery()").fetchone()[0]
        assert worker_count(s) == 0
        down_s = time.monotonic() - t_down
        t_promote = time.monotonic()
        s.execute("SELECT pg_promote(true, 60)")
        poll(lambda: _workers(s), 30, 0.2)
        wait_router_connected(s)
        poll(lambda: _drained(pub), 60, 0.2)
        recovery_s = time.monotonic() - t_promote
        send(n, "after")
        for _ in range(5):
            eid = unique("pub-after")
            s.execute("SELECT ac_publish('fo.order', '{\"kind\": \"go\"}', %s)", (eid,))
            expected.append(eid)
            sent += 1
        assert "standby" not in health(s)

        # 4. a schedule change after the promotion reaches Temporal
        s.execute("UPDATE ac_activity_definitions SET trigger_config = "
                  "'{\"cron_expression\": \"15 4 * * *\"}' WHERE id = %s", (cron,))
        assert s.execute("SELECT ac_wait_sync('60s')").fetchone()[0]
        described(cron, lambda b: _check_cron(b, "15 4 * * *"), timeout=30)

        figures = exactly_once(aid, expected, timeout=120)
        figures = dict(events=sent, **figures, publish_retries=pub.retries,
                       primary_down_s=round(down_s, 1),
                       promotion_to_backlog_routed_s=round(recovery_s, 1))
        print_figures("failover", figures)
        assert figures["missing"] == [] and figures["extra"] == [] and figures["twice"] == [], figures

        s.execute("DELETE FROM ac_activity_definitions WHERE id = %s", (cron,))
        assert s.execute("SELECT ac_wait_sync('60s')").fetchone()[0]
        schedule_gone(cron, 30)
    finally:
        pub.close()


def _drained(pub):
    last = pub.call(lambda js: js.stream_info(STREAM)).state.last_seq
    ci = pub.call(lambda js: js.consumer_info(STREAM, CONSUMER))
    assert ci.ack_floor.stream_seq >= last, f"ack floor {ci.ack_floor.stream_seq} < {last}"


def _streaming(c):
    n = c.execute("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'").fetchone()[0]
    assert n == 1, "the standby does not stream"


def _replayed(primary_conn, standby_conn):
    lsn = primary_conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
    got = standby_conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,)).fetchone()[0]
    assert got, "the standby has not replayed the primary's WAL yet"


def _workers(c):
    assert not c.execute("SELECT pg_is_in_recovery()").fetchone()[0]
    n = c.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type IN "
                  "('activity_core dispatcher', 'activity_core router')").fetchone()[0]
    assert n == 2, f"{n} workers after promotion"


def _hours_minutes(body):
    cal = body["schedule"]["spec"]["structuredCalendar"][0]
    return ([h.get("start", 0) for h in cal.get("hour", [])],
            [m.get("start", 0) for m in cal.get("minute", [])])


def _check_cron(body, expr):
    minute, hour = (int(x) for x in expr.split()[:2])
    assert _hours_minutes(body) == ([hour], [minute]), body["schedule"]["spec"]
