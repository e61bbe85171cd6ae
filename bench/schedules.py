"""Benchmark: cron definitions to Temporal Schedules.

Prints figures, asserts nothing:
  1. commit time of one INSERT of N cron definitions, and the ratio to the
     same INSERT into an identical table without the extension's triggers;
  2. how fast the dispatcher applies those N schedules with its concurrent
     client, against the same dispatcher made sequential
     (activity_core.temporal_concurrency = 1), in the same run, against the
     same Temporal server.
Runs against the stack whose environment bench/run.sh exported.
"""
import os
import statistics
import sys
import time

import http.client
import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import psycopg

from common import QUICK, save

N = int(os.environ.get("BENCH_N", "200" if QUICK else "1000"))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "32"))

INSERT = """
INSERT INTO {table} (name, trigger_type, trigger_config, input)
SELECT 'bench-{tag}-' || g, 'cron',
       jsonb_build_object('cron_expression', (g % 60) || ' ' || (g % 24) || ' * * *',
                          'timezone', 'Europe/Berlin', 'misfire_policy', 'skip'),
       jsonb_build_object('n', g)
FROM generate_series(1, {n}) g
"""


def commit_time(conn, table, tag):
    """Seconds for INSERT + COMMIT of N rows into table."""
    t0 = time.perf_counter()
    with conn.transaction():
        conn.execute(INSERT.format(table=table, tag=tag, n=N))
    return time.perf_counter() - t0


def set_concurrency(conn, n):
    conn.execute(f"ALTER SYSTEM SET activity_core.temporal_concurrency = {n}")
    conn.execute("SELECT pg_reload_conf()")
    time.sleep(1.5)


def wait_applied(conn, timeout=600):
    """Seconds until no schedule intent is pending."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        pending = conn.execute("SELECT count(*) FROM ac_sync_status WHERE pending").fetchone()[0]
        if pending == 0:
            return time.perf_counter() - t0
        time.sleep(0.02)
    raise SystemExit(f"still {pending} pending after {timeout}s")


def apply_run(conn, tag, concurrency):
    """Insert N definitions and time how long the dispatcher takes to apply them."""
    set_concurrency(conn, concurrency)
    commit = commit_time(conn, "ac_activity_definitions", tag)
    t0 = time.perf_counter()
    applied = wait_applied(conn) + 0 * t0
    errors = conn.execute("SELECT count(*) FROM ac_sync_status WHERE last_error IS NOT NULL").fetchone()[0]
    conn.execute("DELETE FROM ac_activity_definitions WHERE name LIKE %s", (f"bench-{tag}-%",))
    deleted = wait_applied(conn)
    return commit, applied, deleted, errors


def direct_client(threads):
    """Create and delete N schedules straight over HTTP with `threads`
    connections: the server's own ceiling, without the extension."""
    url = os.environ["AC_TEMPORAL_URL"].split("//", 1)[1]
    host, port = url.split(":")
    local = threading.local()
    tag = uuid.uuid4().hex[:8]

    def call(method, path, body=None):
        if not hasattr(local, "c"):
            local.c = http.client.HTTPConnection(host, int(port), timeout=30)
        local.c.request(method, "/namespaces/default" + path,
                        body=json.dumps(body) if body is not None else None,
                        headers={"Content-Type": "application/json"})
        r = local.c.getresponse()
        r.read()
        return r.status

    def create(i):
        sid = f"bench-direct-{tag}-{i}"
        return call("POST", f"/schedules/{sid}", {
            "requestId": str(uuid.uuid4()),
            "schedule": {"spec": {"cronString": [f"{i % 60} {i % 24} * * *"], "timezoneName": "Europe/Berlin"},
                         "action": {"startWorkflow": {"workflowId": sid, "workflowType": {"name": "RunActivityWorkflow"},
                                                      "taskQueue": {"name": "orchestrator-tq"}, "input": [{"n": i}]}},
                         "policies": {"overlapPolicy": "SCHEDULE_OVERLAP_POLICY_SKIP", "catchupWindow": "60s"}}})

    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        codes = list(pool.map(create, range(N)))
    elapsed = time.perf_counter() - t0
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: call("DELETE", f"/schedules/bench-direct-{tag}-{i}"), range(N)))
    return elapsed, sum(c != 200 for c in codes)


def main():
    with psycopg.connect(autocommit=True) as conn:
        conn.execute("SET client_min_messages = warning")
        conn.execute("CREATE EXTENSION IF NOT EXISTS activity_core")
        conn.execute("DROP TABLE IF EXISTS bench_plain")
        conn.execute("CREATE TABLE bench_plain (LIKE ac_activity_definitions INCLUDING ALL)")

        # 1. commit path: with and without the triggers, 5 rounds each
        with_tr, without = [], []
        set_concurrency(conn, CONCURRENCY)
        for r in range(5):
            conn.execute("ALTER TABLE ac_activity_definitions DISABLE TRIGGER USER")
            without.append(commit_time(conn, "bench_plain", f"p{r}"))
            conn.execute("ALTER TABLE ac_activity_definitions ENABLE TRIGGER USER")
            with_tr.append(commit_time(conn, "ac_activity_definitions", f"c{r}"))
            conn.execute("TRUNCATE bench_plain")
            wait_applied(conn)
            conn.execute("DELETE FROM ac_activity_definitions WHERE name LIKE 'bench-c%'")
            wait_applied(conn)
        mw, mo = statistics.median(with_tr), statistics.median(without)
        print(f"commit of one INSERT of {N} cron definitions: median {mw*1000:.1f} ms "
              f"(min {min(with_tr)*1000:.1f}, max {max(with_tr)*1000:.1f}); "
              f"same INSERT without the triggers: {mo*1000:.1f} ms; ratio {mw/mo:.2f}x")

        # 2. apply rate: concurrent vs sequential dispatcher, same run
        seq = apply_run(conn, "seq", 1)
        con = apply_run(conn, "con", CONCURRENCY)
        print(f"dispatcher, sequential (1 request in flight): {N} schedules applied in {seq[1]:.2f} s "
              f"= {N/seq[1]:.0f} schedules/s; deleted in {seq[2]:.2f} s; errors {seq[3]}")
        print(f"dispatcher, concurrent ({CONCURRENCY} in flight): {N} schedules applied in {con[1]:.2f} s "
              f"= {N/con[1]:.0f} schedules/s; deleted in {con[2]:.2f} s; errors {con[3]}")
        print(f"speed-up of the concurrent client: {seq[1]/con[1]:.2f}x")
        save("schedules", n=N, commit_ms=mw * 1000, commit_plain_ms=mo * 1000, commit_ratio=mw / mo,
             sequential_per_s=N / seq[1], concurrent_per_s=N / con[1], concurrency=CONCURRENCY,
             speedup=seq[1] / con[1])
        d1 = direct_client(1)
        dn = direct_client(CONCURRENCY)
        print(f"direct HTTP client without the extension, same server: 1 connection {N/d1[0]:.0f} schedules/s, "
              f"{CONCURRENCY} connections {N/dn[0]:.0f} schedules/s (errors {d1[1]}+{dn[1]}): "
              f"the server's own ceiling for concurrency is {d1[0]/dn[0]:.2f}x")
        save("schedules", direct_1_per_s=N / d1[0], direct_n_per_s=N / dn[0], direct_speedup=d1[0] / dn[0])
        set_concurrency(conn, CONCURRENCY)
        conn.execute("ALTER SYSTEM RESET activity_core.temporal_concurrency")
        conn.execute("SELECT pg_reload_conf()")
        conn.execute("DROP TABLE bench_plain")


if __name__ == "__main__":
    sys.exit(main())
