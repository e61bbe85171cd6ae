"""Routers on several database servers: two independent PostgreSQL clusters
(initdb'd for the test, ports AC_CLUSTER_PORT_BASE+20 and +21) with the
extension and the same definitions, routing from one durable consumer on
the stack's NATS.  Events are shared between them, none is started twice
or lost, and when one postmaster is killed mid-stream the other takes the
whole load.  The combined throughput is printed beside that of one router,
measured in the same run (a figure, not an asserted timing).

Schedules: only one server manages them (activity_core.manage_schedules =
off on the other), so that a cron definition both have is owned by one and
not flipped back and forth by their reconciles."""
import json
import time
import uuid

import pytest

from conftest import (NATS_ADDRESS, described, payload_value, poll, schedule_gone, unique,
                      wait_gone)
from extra_servers import (EVENTS, PORT_BASE, Cluster, Publisher, envelope, exactly_once,
                           health, print_figures, wait_router_connected)

PREFIX = "acms"
STREAM = "AC_MULTI"
CONSUMER = "ac-multi-router"
SETTINGS = dict(stream_name=STREAM, subject_prefix=PREFIX, consumer_name=CONSUMER,
                router_batch_size="20", reconcile_interval="2s")
# the same ids on both servers (as when one set of definitions is deployed
# to both), new for each run
EVENT_ID = str(uuid.uuid4())
CRON_ID = str(uuid.uuid4())


@pytest.fixture
def servers():
    a = Cluster("ms-a", PORT_BASE + 20, "acms", **SETTINGS)
    b = Cluster("ms-b", PORT_BASE + 21, "acms", manage_schedules="off", **SETTINGS)
    pub = Publisher([NATS_ADDRESS])
    try:
        yield a, b, pub
    finally:
        for c in (a, b):
            c.cleanup()
        try:
            pub.call(lambda js: js.delete_stream(STREAM), 5)
        except Exception:  # noqa: BLE001 - the stream may not exist
            pass
        pub.close()


def define(c, cron_expr):
    c.execute("INSERT INTO ac_activity_definitions (id, name, trigger_type, trigger_config) "
              "VALUES (%s, 'ms-event', 'event', %s)",
              (EVENT_ID, '{"event_type": "ms.order", "filters": {"kind": "go"}}'))
    c.execute("INSERT INTO ac_activity_definitions (id, name, trigger_type, trigger_config) "
              "VALUES (%s, 'ms-cron', 'cron', %s)",
              (CRON_ID, json.dumps({"cron_expression": cron_expr})))


def acked(c):
    return dict(c.execute("SELECT name, value FROM ac_stats").fetchall())["events_acked"]


def drained(pub):
    last = pub.call(lambda js: js.stream_info(STREAM)).state.last_seq
    ci = pub.call(lambda js: js.consumer_info(STREAM, CONSUMER))
    assert ci.ack_floor.stream_seq >= last and ci.num_ack_pending == 0, (
        f"ack floor {ci.ack_floor.stream_seq} of {last}, ack pending {ci.num_ack_pending}")


def hours(body):
    cal = body["schedule"]["spec"]["structuredCalendar"][0]
    return [h.get("start", 0) for h in cal.get("hour", [])]


def test_two_servers_share_one_consumer_and_one_owns_the_schedules(servers):
    a, b, pub = servers
    from nats.js.api import ConsumerConfig, StreamConfig
    # the consumer made beforehand, as an operator may, with a short ack
    # wait: what the killed server had fetched comes back in seconds
    pub.call(lambda js: js.add_stream(StreamConfig(name=STREAM, subjects=[f"{PREFIX}.>"])))
    pub.call(lambda js: js.add_consumer(STREAM, ConsumerConfig(
        durable_name=CONSUMER, ack_policy="explicit", ack_wait=10,
        filter_subject=f"{PREFIX}.>", max_ack_pending=10000)))
    a.initdb()
    b.initdb()
    a.start()
    b.start()
    ca = a.create_db()
    cb = b.create_db()
    define(ca, "0 3 * * *")
    define(cb, "0 5 * * *")      # the same definition, drifted on the second server
    wait_router_connected(ca)
    wait_router_connected(cb)

    expected, sent = [], 0

    def send(n, tag, during=None):
        nonlocal sent
        for i in range(n):
            eid = f"{tag}-{unique('e')}"
            kind = "go" if i % 5 else "skip"
            pub.publish(f"{PREFIX}.ms.order", envelope("ms.order", eid, kind=kind, i=i))
            sent += 1
            if kind == "go":
                expected.append(eid)
            if during and i == n // 3:
                during()

    n = max(EVENTS // 2, 30)
    # 1. one router alone (the other server's router waits on a stopped postmaster)
    b.stop("fast")
    t0 = time.monotonic()
    send(n, "one")
    poll(lambda: drained(pub), 120, 0.1)
    one_rate = n / (time.monotonic() - t0)

    # 2. both routers
    b.start()
    cb = b.connect()
    wait_router_connected(cb)
    a0, b0 = acked(ca), acked(cb)
    t0 = time.monotonic()
    send(n, "two")
    poll(lambda: drained(pub), 120, 0.1)
    two_rate = n / (time.monotonic() - t0)
    share = (acked(ca) - a0, acked(cb) - b0)
    assert share[0] > 0 and share[1] > 0, f"events were not shared: {share}"

    # 3. the second server's postmaster is killed mid-stream; the first takes all
    t_kill = {}

    orphans = [r[0] for r in cb.execute(
        "SELECT pid FROM pg_stat_activity WHERE backend_type LIKE 'activity_core%'").fetchall()]

    def kill():
        b.kill9()
        t_kill["t"] = time.monotonic()
    a1 = acked(ca)
    send(n, "kill", during=kill)
    # its workers notice the dead postmaster even while busy, and stop
    # routing and publishing at once
    for pid in orphans:
        assert wait_gone(pid, 10), f"worker {pid} outlived its killed postmaster"
    poll(lambda: drained(pub), 120, 0.2)
    takeover_s = time.monotonic() - t_kill["t"]
    assert acked(ca) - a1 >= n * 2 // 3 - 1, "the first server did not take the load"

    figures = exactly_once(EVENT_ID, expected, timeout=120)
    print_figures("several servers", dict(
        events=sent, **figures, shared_a=share[0], shared_b=share[1],
        one_router_per_s=round(one_rate), two_routers_per_s=round(two_rate),
        kill_to_drained_s=round(takeover_s, 1)))
    assert figures["missing"] == [] and figures["extra"] == [] and figures["twice"] == [], figures

    # 4. schedules: the first server owns the cron definition's schedule; the
    # second neither syncs nor reconciles it, and says so
    b.start()
    cb = b.connect()
    installation_a = ca.execute(
        "SELECT system_identifier || ':' || (SELECT oid FROM pg_database WHERE datname = "
        "current_database()) FROM pg_control_system()").fetchone()[0]
    def owners_spec(body):
        assert hours(body) == [3], body["schedule"]["spec"]
    body = described(CRON_ID, owners_spec, 30)
    memo = payload_value(body["memo"]["fields"]["installation"])
    assert memo == installation_a, memo
    for _ in range(8):          # four reconcile intervals of each server
        time.sleep(1)
        body = described(CRON_ID)
        assert hours(body) == [3], f"the schedule was flipped: {body['schedule']['spec']}"
    row = cb.execute("SELECT pending, last_error FROM ac_sync_status WHERE activity_id = %s",
                     (CRON_ID,)).fetchone()
    assert row[0] is True and "manage_schedules is off" in row[1], row
    h = health(cb)["schedules_managed"]
    assert h[0] is True and "manage_schedules is off" in h[1] and h[2], h
    assert "schedules_managed" not in health(ca)
    with pytest.raises(Exception, match="manage_schedules is off"):
        cb.execute("SELECT * FROM ac_sync_schedules()")
    # ac_wait_sync() there waits for what this server sends, not for schedules
    eid = unique("wait")
    cb.execute("SELECT ac_publish('ms.order', '{\"kind\": \"go\"}', %s)", (eid,))
    t0 = time.monotonic()
    assert cb.execute("SELECT ac_wait_sync('30s')").fetchone()[0]
    assert time.monotonic() - t0 < 25
    assert exactly_once(EVENT_ID, [eid], 60)["missing"] == [], eid
    # the owner deletes it; the other leaves it deleted
    ca.execute("DELETE FROM ac_activity_definitions WHERE id = %s", (CRON_ID,))
    assert ca.execute("SELECT ac_wait_sync('60s')").fetchone()[0]
    schedule_gone(CRON_ID, 30)
    time.sleep(3)
    schedule_gone(CRON_ID, 1)
