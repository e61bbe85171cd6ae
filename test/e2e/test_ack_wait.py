"""The router's ack wait: a killed router's batch comes back within seconds,
a slow one is not delivered twice.

The consumer's AckWait is activity_core.router_ack_wait (default 5 s); a
consumer made with another one (0.1.0 made it with 30 s) is updated in place
when the router connects or the setting is reloaded, keeping its position.
While a batch's starts run, the router sends in-progress acks (+WPI) every
third of the ack wait, so a Temporal slower than the ack wait does not get
the batch delivered to another consumer of the durable (another router).
The time from a router's SIGKILL to its batch routed again is measured in
test_router_faults.test_router_killed_with_starts_outstanding_starts_each_event_once.
"""
import asyncio
import time

from conftest import (alter_system, assert_one_completed_run, connect, delta, log_offset,
                      log_since, poll, stats, token, wid, worker_pid)
from test_faults import freeze_temporal, thaw_temporal
from test_router_faults import (CONSUMER, ROUTER, STREAM, JetStream, dead_letters, define,
                                publish_batch, restore, router_ready, wait_fetched,  # noqa: F401
                                wait_processed, wait_runs, wait_workflows)

ACK_WAIT = 5.0


def ack_wait(js):
    """The consumer's AckWait in seconds."""
    return js.consumer().config.ack_wait


def test_ack_wait_is_the_setting_and_an_old_consumer_is_updated_in_place(restore):
    etype = f"ackwait.update.{token()}"
    with connect() as c:
        aid = define(c, etype)
        restore.ids.append(aid)
        js = JetStream()
        try:
            router_ready(js)
            assert ack_wait(js) == ACK_WAIT, js.consumer().config
            done = [js.event(etype, n=i) for i in range(3)]
            wait_workflows([wid(aid, e) for e, _ in done])
            before_ci = wait_processed(js, done[-1][1])
            before = stats(c)

            # the consumer as 0.1.0 made it: AckWait 30 s
            cfg = js.consumer().config
            cfg.ack_wait = 30.0
            js.run(js.js.add_consumer(STREAM, config=cfg))
            assert ack_wait(js) == 30.0
            router = worker_pid(c, ROUTER)
            offset = log_offset()
            assert c.execute("SELECT pg_terminate_backend(%s)", (router,)).fetchone()[0]
            new_router = worker_pid(c, ROUTER, timeout=20, other_than=router)
            line = f"ack wait of consumer {CONSUMER} changed from 30000 ms to 5000 ms"

            def updated():
                assert line in log_since(offset), f"{line!r} not logged"
                assert ack_wait(js) == ACK_WAIT
            poll(updated, timeout=20)

            # the same consumer: its position and history are kept, nothing is
            # delivered again, the next event is routed once
            ci = js.consumer()
            assert ci.delivered.stream_seq == before_ci.delivered.stream_seq, (ci, before_ci)
            assert ci.ack_floor.stream_seq == before_ci.ack_floor.stream_seq, (ci, before_ci)
            more, seq = js.event(etype, n=3)
            wait_workflows([wid(aid, more)])
            wait_processed(js, seq)
            wait_runs(aid, [wid(aid, e) for e, _ in done] + [wid(aid, more)])
            d = delta(before, stats(c))
            assert d["workflows_started"] == 1 and d["workflows_already_started"] == 0, d

            # a reload changes it too, in the same router
            alter_system(c, router_ack_wait="2s")
            poll(lambda: _eq(ack_wait(js), 2.0), timeout=10)
            assert worker_pid(c, ROUTER) == new_router
        finally:
            alter_system(c, router_ack_wait=None)
            poll(lambda: _eq(ack_wait(js), ACK_WAIT), timeout=10)
            js.close()


def _eq(got, want):
    assert got == want, f"{got} != {want}"


async def _pull(js, seconds):
    """Fetch from the durable as a second router would, for seconds: every
    message it gets was delivered again by JetStream (the router holds the
    batch).  Nak'd at once, so the router gets it back."""
    got = []
    psub = await js.js.pull_subscribe_bind(durable=CONSUMER, stream=STREAM)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            try:
                msgs = await psub.fetch(10, timeout=1)
            except (asyncio.TimeoutError, TimeoutError):
                continue
            except Exception as err:  # nats.errors.TimeoutError
                if "imeout" in type(err).__name__:
                    continue
                raise
            for m in msgs:
                got.append((m.metadata.sequence.stream, m.metadata.num_delivered,
                            round(time.monotonic() - deadline + seconds, 1)))
                await m.nak()
    finally:
        await psub.unsubscribe()
    return got


def test_batch_slower_than_the_ack_wait_is_not_delivered_again(restore):
    """Temporal frozen for almost twice the ack wait with a batch's starts in
    flight: the in-progress acks keep the batch with the router, so a second
    consumer of the durable gets nothing, and each event has one workflow."""
    etype = f"ackwait.slow.{token()}"
    with connect() as c:
        aid = define(c, etype)
        restore.ids.append(aid)
        js = JetStream()
        try:
            router_ready(js)
            router = worker_pid(c, ROUTER)
            before = stats(c)
            freeze_temporal()
            try:
                batch = publish_batch(js, router, etype, 5)
                seqs = [s for _, s in batch]
                wait_fetched(js, seqs)
                stolen = js.run(_pull(js, ACK_WAIT * 1.8))
            finally:
                thaw_temporal()
            assert stolen == [], (f"JetStream delivered the batch again while its starts ran "
                                  f"(stream seq, deliveries, s): {stolen}")
            ci = wait_processed(js, seqs[-1], timeout=30)
            assert ci.num_ack_pending == 0, ci
            for e, _ in batch:
                assert_one_completed_run(wid(aid, e))
            wait_runs(aid, [wid(aid, e) for e, _ in batch])
            d = delta(before, stats(c))
            assert d["workflows_started"] == len(batch), d
            assert d["workflows_already_started"] == 0, d
            assert d["events_retried"] == 0, d
            assert dead_letters(c, [e for e, _ in batch]) == []
            assert worker_pid(c, ROUTER) == router
        finally:
            js.close()


def test_router_that_exits_mid_batch_hands_the_batch_back(restore):
    """SIGTERM (a shutdown, pg_terminate_backend) while a batch's starts wait on a
    frozen Temporal: the exiting router naks the batch, so the next router routes
    it as soon as it runs, not one ack wait (here 60 s) after the last
    in-progress ack."""
    etype = f"ackwait.exit.{token()}"
    with connect() as c:
        aid = define(c, etype)
        restore.ids.append(aid)
        js = JetStream()
        try:
            alter_system(c, router_ack_wait="60s")
            poll(lambda: _eq(ack_wait(js), 60.0), timeout=15)
            router_ready(js)
            old = worker_pid(c, ROUTER)
            freeze_temporal()
            try:
                batch = publish_batch(js, old, etype, 5)
                wait_fetched(js, [s for _, s in batch])
                assert c.execute("SELECT pg_terminate_backend(%s)", (old,)).fetchone()[0]
                stopped = time.monotonic()
                worker_pid(c, ROUTER, timeout=20, other_than=old)
            finally:
                thaw_temporal()
            wait_workflows([wid(aid, e) for e, _ in batch], timeout=30)
            took = time.monotonic() - stopped
            assert took < 30, f"the batch was routed again only {took:.1f} s after the exit"
            wait_processed(js, batch[-1][1], timeout=30)
            for e, _ in batch:
                assert_one_completed_run(wid(aid, e))
            wait_runs(aid, [wid(aid, e) for e, _ in batch])
        finally:
            alter_system(c, router_ack_wait=None)
            js.close()
