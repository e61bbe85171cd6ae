"""Benchmark: long-run memory of the workers.

Prints figures, asserts nothing (docs/reliability.md has the last run):
  1. router RSS across BENCH_MEM_EVENTS (1,000,000) events published to
     JetStream: of each 100, 90 of a type with definitions whose filters do
     not match (parse + match), 8 of a type nothing listens to, 1 poison
     (bad JSON: dead-lettered), 1 matched whose definition is disabled;
  2. dispatcher RSS across BENCH_MEM_CHANGES (10,000) schedule changes:
     rounds of one UPDATE of 100 cron definitions, with deletes and creates
     every tenth round, each applied to Temporal before the next;
  3. RSS across BENCH_MEM_RECONCILES (1,000) reconciles: ac_sync_schedules()
     in one backend over 20 cron definitions, while the dispatcher runs its
     own periodic reconcile every second (activity_core.reconcile_interval).
VmRSS and RssAnon of /proc/<pid>/status are sampled after each tenth of
the work, the router's at rest (a second after it took the last event);
the first tenth is the warm-up.  Printed: start (after warm-up),
peak, end, and the growth from start to peak and to end, of both.  VmRSS
also counts the pages of shared memory the process has touched (RssShmem):
it grows as the process reads more distinct shared buffers (a table that
grows, ac_dead_letters here), up to shared_buffers, and is no leak.  RssAnon
is the process's private memory: its heap, where a leak would show.
Runs against the stack whose environment bench/run.sh exported.
"""
import asyncio
import json
import os
import time
import uuid

import nats
import psycopg

from common import memory_kb

NATS_URL = os.environ["AC_NATS_URL"]
EVENTS = int(os.environ.get("BENCH_MEM_EVENTS", "1000000"))
CHANGES = int(os.environ.get("BENCH_MEM_CHANGES", "10000"))
RECONCILES = int(os.environ.get("BENCH_MEM_RECONCILES", "1000"))
TAG = uuid.uuid4().hex[:6]


def stat(conn, name):
    return conn.execute("SELECT value FROM ac_stats WHERE name = %s", (name,)).fetchone()[0]


def worker_pid(conn, role):
    row = conn.execute("SELECT pid FROM pg_stat_activity WHERE backend_type = %s",
                       (f"activity_core {role}",)).fetchone()
    return row[0] if row else None


def report(what, samples, pid_same):
    """Print the samples and start (after warm-up), peak and end."""
    for count, kb in samples:
        print(f"   after {count:>9}: VmRSS {kb['VmRSS'] / 1024:.1f} MiB, RssAnon {kb['RssAnon'] / 1024:.1f} MiB, "
              f"RssShmem {kb['RssShmem'] / 1024:.1f} MiB")
    after = samples[1:]
    for key in ("VmRSS", "RssAnon"):
        start, peak, end = after[0][1][key], max(kb[key] for _, kb in after), after[-1][1][key]
        print(f"   {what} {key}: start {start / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB, end {end / 1024:.1f} MiB; "
              f"peak {(peak - start) * 100 / start:+.1f}%, end {(end - start) * 100 / start:+.1f}%")
    print(f"   (same process throughout: {pid_same})", flush=True)


async def publish(bodies):
    nc = await nats.connect(NATS_URL)
    for i in range(0, len(bodies), 2000):
        for subject, body in bodies[i:i + 2000]:
            await nc.publish(subject, body)
        await nc.flush()
    await nc.close()


def events(conn):
    print(f"1. router RSS across {EVENTS} events", flush=True)
    conn.execute(
        "INSERT INTO ac_activity_definitions (name, trigger_type, trigger_config) "
        "SELECT 'mem-ev-' || %s || '-' || g, 'event', "
        "jsonb_build_object('event_type', 'mem.filtered', 'filters', jsonb_build_object('k', 'no-' || g)) "
        "FROM generate_series(1, 50) g", (TAG,))
    conn.execute(
        "INSERT INTO ac_activity_definitions (name, trigger_type, trigger_config, enabled) "
        "VALUES (%s, 'event', '{\"event_type\": \"mem.disabled\"}', false)", (f"mem-ev-{TAG}-off",))
    time.sleep(2)
    pid = worker_pid(conn, "router")
    base = stat(conn, "events_received")
    samples = [(0, memory_kb(pid))]
    step = EVENTS // 10
    sent = 0
    t0 = time.monotonic()
    while sent < EVENTS:
        bodies = []
        for i in range(sent, sent + step):
            kind = i % 100
            eid = f"m{TAG}-{i}"
            if kind == 0:
                bodies.append(("activity.mem.poison", b'{"event_id": "' + eid.encode() + b'", "type"'))
                continue
            t = "mem.disabled" if kind == 1 else "mem.other" if kind < 10 else "mem.filtered"
            body = json.dumps({"event_id": eid, "type": t,
                               "payload": {"k": f"v{i % 1000}", "i": i, "pad": "x" * (i % 200),
                                           "list": [1, 2, {"n": i}]}}).encode()
            bodies.append((f"activity.{t}", body))
        asyncio.run(publish(bodies))
        sent += step
        while stat(conn, "events_received") - base < sent:
            time.sleep(0.1)
        # at rest: the last batch committed and its memory released
        time.sleep(1)
        samples.append((sent, memory_kb(pid)))
    print(f"   {EVENTS} events in {time.monotonic() - t0:.0f} s")
    report("router", samples, worker_pid(conn, "router") == pid)
    conn.execute("DELETE FROM ac_activity_definitions WHERE name LIKE %s", (f"mem-ev-{TAG}-%",))
    conn.execute("DELETE FROM ac_dead_letters WHERE subject = 'activity.mem.poison'")


def wait_sync(conn):
    if not conn.execute("SELECT ac_wait_sync('600 seconds')").fetchone()[0]:
        raise SystemExit("the dispatcher did not apply the schedule changes")


def schedules(conn):
    print(f"2. dispatcher RSS across {CHANGES} schedule changes", flush=True)
    like = f"mem-cron-{TAG}-%"
    conn.execute(
        "INSERT INTO ac_activity_definitions (name, trigger_type, trigger_config) "
        "SELECT 'mem-cron-' || %s || '-' || g, 'cron', "
        "jsonb_build_object('cron_expression', (g %% 60) || ' * * * *', 'timezone', 'Europe/Berlin') "
        "FROM generate_series(1, 100) g", (TAG,))
    wait_sync(conn)
    pid = worker_pid(conn, "dispatcher")
    base = stat(conn, "schedule_changes")
    samples = [(0, memory_kb(pid))]
    rounds = CHANGES // 100
    t0 = time.monotonic()
    for r in range(1, rounds + 1):
        if r % 10 == 0:
            conn.execute("DELETE FROM ac_activity_definitions WHERE id IN (SELECT id FROM "
                         "ac_activity_definitions WHERE name LIKE %s ORDER BY name LIMIT 10)", (like,))
            conn.execute(
                "INSERT INTO ac_activity_definitions (name, trigger_type, trigger_config) "
                "SELECT 'mem-cron-' || %s || '-r' || %s || '-' || g, 'cron', "
                "jsonb_build_object('cron_expression', '*/' || (1 + g) || ' * * * *') "
                "FROM generate_series(1, 10) g", (TAG, r))
        conn.execute(
            "UPDATE ac_activity_definitions SET trigger_config = jsonb_set(trigger_config, "
            "'{cron_expression}', to_jsonb(((%s + ascii(right(name, 1))) %% 60) || ' ' || (%s %% 24) || ' * * *')), "
            "enabled = (%s %% 7 <> 0), input = jsonb_build_object('round', %s) WHERE name LIKE %s",
            (r, r, r, r, like))
        wait_sync(conn)
        if r % (rounds // 10) == 0:
            samples.append((stat(conn, "schedule_changes") - base, memory_kb(pid)))
    print(f"   {stat(conn, 'schedule_changes') - base} schedule changes in {time.monotonic() - t0:.0f} s")
    report("dispatcher", samples, worker_pid(conn, "dispatcher") == pid)
    conn.execute("DELETE FROM ac_activity_definitions WHERE name LIKE %s", (like,))
    wait_sync(conn)


def reconciles(conn):
    print(f"3. RSS across {RECONCILES} reconciles (ac_sync_schedules() in a backend; the dispatcher's own every 1 s)",
          flush=True)
    like = f"mem-rec-{TAG}-%"
    conn.execute(
        "INSERT INTO ac_activity_definitions (name, trigger_type, trigger_config) "
        "SELECT 'mem-rec-' || %s || '-' || g, 'cron', "
        "jsonb_build_object('cron_expression', (g %% 60) || ' 3 * * *') FROM generate_series(1, 20) g", (TAG,))
    wait_sync(conn)
    conn.execute("ALTER SYSTEM SET activity_core.reconcile_interval = 1")
    conn.execute("SELECT pg_reload_conf()")
    backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    dpid = worker_pid(conn, "dispatcher")
    runs0 = stat(conn, "reconcile_runs")
    bs, ds = [(0, memory_kb(backend))], [(0, memory_kb(dpid))]
    t0 = time.monotonic()
    for i in range(1, RECONCILES + 1):
        conn.execute("SELECT count(*) FROM ac_sync_schedules()").fetchone()
        if i % (RECONCILES // 10) == 0:
            bs.append((i, memory_kb(backend)))
            ds.append((stat(conn, "reconcile_runs") - runs0, memory_kb(dpid)))
    print(f"   {RECONCILES} ac_sync_schedules() in {time.monotonic() - t0:.0f} s; "
          f"reconcile_runs +{stat(conn, 'reconcile_runs') - runs0}")
    print("   the backend calling ac_sync_schedules(), by calls:")
    report("backend", bs, True)
    print("   the dispatcher, by reconcile_runs:")
    report("dispatcher", ds, worker_pid(conn, "dispatcher") == dpid)
    conn.execute("ALTER SYSTEM RESET activity_core.reconcile_interval")
    conn.execute("SELECT pg_reload_conf()")
    conn.execute("DELETE FROM ac_activity_definitions WHERE name LIKE %s", (like,))


def main():
    with psycopg.connect(autocommit=True) as conn:
        conn.execute("SET client_min_messages = warning")
        conn.execute("CREATE EXTENSION IF NOT EXISTS activity_core")
        deadline = time.time() + 60
        while conn.execute("SELECT state FROM ac_router_status()").fetchone()[0] != "connected":
            if time.time() > deadline:
                raise SystemExit("the router did not connect")
            time.sleep(0.5)
        which = os.environ.get("BENCH_MEM_PARTS", "events,schedules,reconciles").split(",")
        if "events" in which:
            events(conn)
        if "schedules" in which:
            schedules(conn)
        if "reconciles" in which:
            reconciles(conn)


if __name__ == "__main__":
    main()
