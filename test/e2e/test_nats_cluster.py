"""A clustered NATS: three nats-server nodes with JetStream on loopback
(ports from AC_CLUSTER_PORT_BASE), the extension's nats_url set to all three,
activity_core.stream_replicas = 3 and a stream and consumer of their own.
Events are published from outside (nats-py) and with ac_publish(); midway
the node that leads the stream is killed with SIGKILL and restarted on its
store.  Every event that should start a workflow starts exactly one, the
router reconnects by itself and the node rejoins.  The settings are reset at
the end, so later suites find the stack as it was."""
import time

import pytest

from conftest import alter_system, poll, unique
from extra_servers import (EVENTS, NatsCluster, Publisher, envelope, exactly_once, health,
                           print_figures)

PREFIX = "accl"
STREAM = "AC_CLUSTER"
CONSUMER = "ac-cluster-router"
NAMES = ("nats_url", "stream_replicas", "stream_name", "subject_prefix", "consumer_name")


def router_detail(conn):
    ok, detail, _ = health(conn)["nats_router"]
    assert ok, detail
    return detail


@pytest.fixture
def cluster(conn):
    nc = NatsCluster()
    nc.start_all()
    try:
        yield nc
    finally:
        alter_system(conn, **{n: None for n in NAMES})
        nc.stop_all()
        # the router is back on the stack's own NATS before the next suite
        poll(lambda: "ACTIVITY_EVENTS" in router_detail(conn), 60, 0.5)


def leader(pub):
    info = pub.call(lambda js: js.stream_info(STREAM))
    return info.cluster.leader


def test_router_survives_the_loss_of_the_stream_leader(conn, cluster):
    aid = str(conn.execute(
        "INSERT INTO ac_activity_definitions (name, trigger_type, trigger_config) "
        "VALUES (%s, 'event', %s) RETURNING id",
        (unique("cl-event"), '{"event_type": "cl.order", "filters": {"kind": "go"}}')).fetchone()[0])
    urls = ",".join(cluster.urls())
    alter_system(conn, nats_url=urls, stream_replicas="3", stream_name=STREAM,
                 subject_prefix=PREFIX, consumer_name=CONSUMER)
    poll(lambda: f"consuming {STREAM}/{CONSUMER}" in router_detail(conn), 60, 0.5)
    pub = Publisher(cluster.urls())
    try:
        info = pub.call(lambda js: js.stream_info(STREAM))
        assert info.config.num_replicas == 3, info.config
        ci = pub.call(lambda js: js.consumer_info(STREAM, CONSUMER))
        peers = {p.name for p in ci.cluster.replicas or []} | {ci.cluster.leader} - {None}
        assert peers == set(cluster.nodes), ci.cluster

        expected, sent = [], 0
        n = max(EVENTS, 30)
        killed, t_kill, restarted = None, None, False
        for i in range(n):
            eid = unique("cl")
            kind = "go" if i % 4 else "skip"
            if i % 10 == 5:
                conn.execute("SELECT ac_publish('cl.order', '{\"kind\": \"go\"}', %s)", (eid,))
                expected.append(eid)
            else:
                pub.publish(f"{PREFIX}.cl.order", envelope("cl.order", eid, kind=kind, i=i))
                if kind == "go":
                    expected.append(eid)
            sent += 1
            if i == n // 3:
                name = leader(pub)
                killed = cluster.nodes.index(name)
                cluster.kill9(killed)
                t_kill = time.monotonic()
            if i == 2 * n // 3:
                cluster.start(killed)
                restarted = True
        assert restarted

        figures = exactly_once(aid, expected, timeout=120)
        recovery_s = time.monotonic() - t_kill

        # the node rejoined: its monitor shows the stream, current with the others
        def rejoined():
            s = cluster.stream(killed, STREAM)
            assert s is not None, f"{cluster.nodes[killed]} does not carry {STREAM}"
            info = pub.call(lambda js: js.stream_info(STREAM))
            peers = {p.name: p for p in info.cluster.replicas or []}
            peers[info.cluster.leader] = None
            assert cluster.nodes[killed] in peers, info.cluster
            p = peers[cluster.nodes[killed]]
            assert p is None or p.current, info.cluster
            assert s["state"]["last_seq"] == info.state.last_seq, (s["state"], info.state)
        poll(rejoined, 60, 0.5)
        # the router reconnected by itself and is consuming
        poll(lambda: f"consuming {STREAM}/{CONSUMER}" in router_detail(conn), 30, 0.5)
        state = conn.execute("SELECT state FROM ac_router_status()").fetchone()[0]
        assert state == "connected"

        figures = dict(events=sent, **figures, killed=cluster.nodes[killed],
                       new_leader=leader(pub), publish_retries=pub.retries,
                       kill_to_all_routed_s=round(recovery_s, 1))
        print_figures("nats cluster", figures)
        assert figures["missing"] == [] and figures["extra"] == [] and figures["twice"] == [], figures
    finally:
        pub.close()
        conn.execute("DELETE FROM ac_activity_definitions WHERE id = %s", (aid,))


def test_an_existing_stream_with_other_replicas_is_left_and_reported(conn, cluster):
    """A stream made with one replica stays at one when stream_replicas asks
    for three; ac_health() says so."""
    pub = Publisher(cluster.urls())
    try:
        from nats.js.api import StreamConfig
        pub.call(lambda js: js.add_stream(StreamConfig(name=STREAM, subjects=[f"{PREFIX}.>"],
                                                       num_replicas=1)))
        alter_system(conn, nats_url=",".join(cluster.urls()), stream_replicas="3",
                     stream_name=STREAM, subject_prefix=PREFIX, consumer_name=CONSUMER)

        def noted():
            detail = router_detail(conn)
            assert f"consuming {STREAM}/{CONSUMER}" in detail, detail
            assert (f"stream {STREAM} has 1 replica(s), activity_core.stream_replicas asks "
                    "for 3; the stream is left as it is") in detail, detail
        poll(noted, 60, 0.5)
        # the dispatcher notes it too once it publishes; neither clears the other
        conn.execute("SELECT ac_publish('replica.note', '{}'::jsonb)")

        def publisher_noted():
            ok, detail, _ = health(conn)["nats_publisher"]
            assert ok and "publishes ac_outbox to" in detail, detail
            assert (f"stream {STREAM} has 1 replica(s), activity_core.stream_replicas asks "
                    "for 3; the stream is left as it is") in detail, detail
        poll(publisher_noted, 60, 0.5)
        noted()
        assert pub.call(lambda js: js.stream_info(STREAM)).config.num_replicas == 1
    finally:
        try:
            pub.call(lambda js: js.delete_stream(STREAM), 5)
        finally:
            pub.close()
