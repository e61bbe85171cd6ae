"""A short load through every path of the extension, for the memory tools.

test/asan.sh and test/valgrind.sh run it (pytest -s memory/test_load.py, by
way of test/run.sh) against their own stack; it is not part of `make test`.
It drives, through the real services:
  - events published to JetStream and routed to workflows (matched, filtered
    out, unmatched, and poison: bad JSON, a null payload, too deep, no id);
  - ac_publish() events drained by the dispatcher and routed back;
  - ac_trigger() starts of manual definitions;
  - cron definitions created, updated, disabled and deleted, applied by the
    dispatcher; ac_sync_schedules() and ac_schedules();
  - ac_explain_match(), ac_runs(), ac_health(), ac_stats and /metrics.
It asserts that the work was done (counters moved, nothing pending), not
how fast.  LOAD_SCALE (default 1.0) scales every count: valgrind runs 0.1.
"""
import asyncio
import json
import os
import time
import urllib.request
import uuid

import nats
import psycopg

SCALE = float(os.environ.get("LOAD_SCALE", "1"))
NATS_URL = os.environ["AC_NATS_URL"]
METRICS_URL = os.environ["AC_METRICS_URL"]
TIMEOUT = float(os.environ.get("LOAD_TIMEOUT", "300"))
TAG = uuid.uuid4().hex[:8]


def n(count):
    """count scaled by LOAD_SCALE, at least 1."""
    return max(1, int(count * SCALE))


def stats(conn):
    return dict(conn.execute("SELECT name, value FROM ac_stats").fetchall())


def wait(what, pred, timeout=TIMEOUT):
    """Poll pred() until true; exit non-zero after timeout."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"load: timed out waiting for {what}")
        time.sleep(0.5)


def step(msg):
    print(f"load: {msg}", flush=True)


async def publish(bodies):
    """Publish (subject, bytes) pairs to JetStream and wait for every ack."""
    nc = await nats.connect(NATS_URL, connect_timeout=10)
    js = nc.jetstream()
    for i in range(0, len(bodies), 200):
        await asyncio.gather(*(js.publish(s, b, timeout=60) for s, b in bodies[i:i + 200]))
    await nc.close()


def event_load(conn):
    """Events through NATS: matched, filtered, unmatched and poison."""
    types = [f"load{TAG}.t{i}" for i in range(10)]
    with conn.transaction():
        for i, t in enumerate(types):
            conn.execute(
                "INSERT INTO ac_activity_definitions (name, trigger_type, trigger_config, input) "
                "VALUES (%s, 'event', %s, %s)",
                (f"load-ev-{TAG}-{i}", json.dumps({"event_type": t, "filters": {"k": i % 3}}),
                 json.dumps({"def": i})))
            conn.execute(
                "INSERT INTO ac_activity_definitions (name, trigger_type, trigger_config) "
                "VALUES (%s, 'event', %s)",
                (f"load-ev-{TAG}-{i}-all", json.dumps({"event_type": t})))
    before = stats(conn)
    bodies = []
    total = n(3000)
    for i in range(total):
        t = types[i % len(types)]
        kind = i % 20
        env = {"event_id": f"ld-{TAG}-{i}", "type": t,
               "payload": {"k": i % 3, "i": i, "s": "x" * (i % 50), "nested": {"a": [1, 2, {"b": i}]}}}
        if kind == 1:
            body = b'{"event_id": "broken-' + str(i).encode() + b'", "type": '
        elif kind == 2:
            env["payload"] = None
            body = json.dumps(env).encode()
        elif kind == 3:
            deep = 0
            for _ in range(120):
                deep = [deep]
            env["payload"] = {"d": deep}
            body = json.dumps(env).encode()
        elif kind == 4:
            del env["event_id"]
            body = json.dumps(env).encode()
        elif kind == 5:
            env["type"] = f"load{TAG}.nomatch"
            body = json.dumps(env).encode()
            t = env["type"]
        else:
            body = json.dumps(env).encode()
        bodies.append((f"activity.{t}", body))
    step(f"publishing {total} events to JetStream")
    asyncio.run(publish(bodies))
    wait("the router to take every event",
         lambda: stats(conn)["events_received"] - before["events_received"] >= total)
    after = stats(conn)
    step("events: " + ", ".join(f"{k} +{after[k] - before[k]}" for k in
                                ("events_received", "events_acked", "events_unmatched",
                                 "events_dead_lettered", "workflows_started")))
    if after["workflows_started"] == before["workflows_started"]:
        raise AssertionError("load: no workflow was started from events")
    if after["events_dead_lettered"] == before["events_dead_lettered"]:
        raise AssertionError("load: no poison event was dead-lettered")
    rows = conn.execute("SELECT count(*) FROM ac_explain_match(%s::jsonb)",
                        (json.dumps({"event_id": "x", "type": types[0], "payload": {"k": 0}}),)).fetchone()[0]
    step(f"ac_explain_match: {rows} rows")
    dl = conn.execute("SELECT id FROM ac_dead_letters ORDER BY id DESC LIMIT 3").fetchall()
    for (i,) in dl:
        conn.execute("SELECT ac_replay_dead_letter(%s)", (i,))
    return types


def publish_load(conn, types):
    """ac_publish() through the outbox, drained by the dispatcher, routed back."""
    before = stats(conn)
    total = n(500)
    for start in range(0, total, 50):
        with conn.transaction():
            for i in range(start, min(total, start + 50)):
                conn.execute("SELECT ac_publish(%s, %s::jsonb)",
                             (types[i % len(types)], json.dumps({"k": i % 3, "pub": i})))
    step(f"ac_publish: {total} events committed")
    wait("the outbox to drain", lambda: conn.execute("SELECT count(*) FROM ac_outbox").fetchone()[0] == 0)
    wait("the router to take the published events",
         lambda: stats(conn)["events_received"] - before["events_received"] >= total)
    step(f"ac_publish: drained, events_published +{stats(conn)['events_published'] - before['events_published']}")


def trigger_load(conn):
    """ac_trigger() starts of manual definitions."""
    ids = []
    with conn.transaction():
        for i in range(5):
            ids.append(conn.execute(
                "INSERT INTO ac_activity_definitions (name, trigger_type, input) "
                "VALUES (%s, 'manual', %s) RETURNING id",
                (f"load-man-{TAG}-{i}", json.dumps({"m": i}))).fetchone()[0])
    before = stats(conn)
    total = n(300)
    for start in range(0, total, 25):
        with conn.transaction():
            for i in range(start, min(total, start + 25)):
                conn.execute("SELECT ac_trigger(%s, %s::jsonb, %s)",
                             (ids[i % len(ids)], json.dumps({"t": i}), f"k{i}"))
    wait("the start outbox to drain",
         lambda: conn.execute("SELECT count(*) FROM ac_start_outbox WHERE NOT error_permanent").fetchone()[0] == 0)
    after = stats(conn)
    step(f"ac_trigger: {total} starts, workflows_started +{after['workflows_started'] - before['workflows_started']}")
    runs = conn.execute("SELECT count(*) FROM ac_runs(%s, 5)", (ids[0],)).fetchone()[0]
    step(f"ac_runs: {runs} runs of one manual definition")


def schedule_load(conn):
    """Cron definitions created, updated, disabled and deleted; a reconcile."""
    before = stats(conn)
    total = n(300)
    conn.execute(
        "INSERT INTO ac_activity_definitions (name, trigger_type, trigger_config, input) "
        "SELECT 'load-cron-' || %s || '-' || g, 'cron', "
        "jsonb_build_object('cron_expression', (g %% 60) || ' ' || (g %% 24) || ' * * *', "
        "'timezone', (ARRAY['UTC','Europe/Berlin','America/New_York'])[1 + g %% 3], "
        "'misfire_policy', (ARRAY['skip','catchup','compress'])[1 + g %% 3]), "
        "jsonb_build_object('g', g) FROM generate_series(1, %s) g", (TAG, total))
    like = f"load-cron-{TAG}-%"
    conn.execute("UPDATE ac_activity_definitions SET trigger_config = "
                 "jsonb_set(trigger_config, '{cron_expression}', '\"*/5 * * * 1-5\"') "
                 "WHERE name LIKE %s AND (input->>'g')::int %% 2 = 0", (like,))
    conn.execute("UPDATE ac_activity_definitions SET enabled = false "
                 "WHERE name LIKE %s AND (input->>'g')::int %% 5 = 0", (like,))
    conn.execute("DELETE FROM ac_activity_definitions WHERE name LIKE %s AND (input->>'g')::int %% 7 = 0",
                 (like,))
    step(f"schedules: {total} created, then updated, disabled, deleted")
    if not conn.execute("SELECT ac_wait_sync(%s::interval)", (f"{int(TIMEOUT)} seconds",)).fetchone()[0]:
        raise AssertionError("load: the dispatcher did not apply every schedule change")
    after = stats(conn)
    step(f"schedules: applied +{after['schedules_applied'] - before['schedules_applied']}")
    actions = conn.execute("SELECT action, count(*) FROM ac_sync_schedules() GROUP BY 1").fetchall()
    step(f"ac_sync_schedules: {dict(actions) or 'nothing to do'}")
    rows = conn.execute("SELECT count(*), count(*) FILTER (WHERE in_sync) FROM ac_schedules()").fetchone()
    step(f"ac_schedules: {rows[0]} schedules, {rows[1]} in sync")
    conn.execute("DELETE FROM ac_activity_definitions WHERE name LIKE %s", (like,))
    if not conn.execute("SELECT ac_wait_sync(%s::interval)", (f"{int(TIMEOUT)} seconds",)).fetchone()[0]:
        raise AssertionError("load: the dispatcher did not apply the deletes")


def status_calls(conn):
    """The read-only status functions and the metrics endpoint."""
    health = conn.execute("SELECT count(*) FILTER (WHERE ok), count(*) FROM ac_health()").fetchone()
    step(f"ac_health: {health[0]} of {health[1]} checks ok")
    conn.execute("SELECT * FROM ac_router_status()").fetchall()
    conn.execute("SELECT * FROM ac_temporal_health()").fetchall()
    for _ in range(5):
        with urllib.request.urlopen(METRICS_URL, timeout=30) as resp:
            resp.read()
    step("metrics: 5 scrapes")


def test_load():
    """The whole load, in order; each step asserts its work was done."""
    t0 = time.monotonic()
    with psycopg.connect(autocommit=True) as conn:
        conn.execute("SET client_min_messages = warning")
        conn.execute("CREATE EXTENSION IF NOT EXISTS activity_core")
        wait("the router", lambda: conn.execute(
            "SELECT state = 'connected' FROM ac_router_status()").fetchone()[0])
        types = event_load(conn)
        publish_load(conn, types)
        trigger_load(conn)
        schedule_load(conn)
        status_calls(conn)
        conn.execute("DELETE FROM ac_activity_definitions WHERE name LIKE %s", (f"load-%-{TAG}-%",))
    step(f"done in {time.monotonic() - t0:.0f} s")

