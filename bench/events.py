"""Benchmark: the event router.

Prints figures, asserts nothing:
  1. matching cost per event with 10, 1,000, 10,000 and 100,000 event
     definitions (the router's own code, ac_router_bench(), which
     bench/setup.sql creates: it is not part of the extension's install);
  2. sustained throughput, events published to workflows started, against
     a direct concurrent StartWorkflowExecution client on the same server,
     and publish-to-started latency p50 / p99;
     and the router's CPU time per started workflow (/proc/<pid>/stat);
  3. intake when nothing matches: a backlog drained by the router, against
     a bare nats.c pull consumer that only fetches and acks
     (bench/bare_consumer), pipelined (the next fetch in flight while it
     acks the current batch: the baseline) and strictly one after the other;
  4. router RSS while it consumes 1,000,000 unmatched events, with a perf
     profile of the router meanwhile;
  5. latency at half the direct-start ceiling for BENCH_LATENCY_SECONDS
     (60): events paced at that rate, publish to the start time Temporal
     records, against the direct client paced at the same rate (its send
     to the recorded start time), p50 / p99 of both.
Figures go to bench/results/events.json as well.
Runs against the stack whose environment bench/run.sh exported.
"""
import asyncio
import datetime
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from concurrent.futures import ThreadPoolExecutor
import http.client

import nats
import psycopg

from common import QUICK, cpu_seconds, memory_kb, pctl, perf_top, save

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
NATS_URL = os.environ["AC_NATS_URL"]
TEMPORAL = os.environ["AC_TEMPORAL_URL"].split("//", 1)[1]
THROUGHPUT_N = int(os.environ.get("BENCH_EVENTS_N", "1000" if QUICK else "3000"))
INTAKE_N = int(os.environ.get("BENCH_INTAKE_N", "50000" if QUICK else "200000"))
SOAK_N = int(os.environ.get("BENCH_SOAK_N", "100000" if QUICK else "1000000"))
LATENCY_SECONDS = int(os.environ.get("BENCH_LATENCY_SECONDS", "10" if QUICK else "60"))
SIZES = [int(x) for x in os.environ.get("BENCH_MATCH_SIZES", "10,1000,10000,100000").split(",")]


def stat(conn, name):
    return conn.execute("SELECT value FROM ac_stats WHERE name = %s", (name,)).fetchone()[0]


def router_pid(conn):
    row = conn.execute("SELECT pid FROM pg_stat_activity WHERE backend_type = 'activity_core router'").fetchone()
    return row[0] if row else None


async def publish(subject_of, n, payload_of, chunk=2000):
    """Publish n envelopes with core NATS (the stream captures them); return publish times."""
    nc = await nats.connect(NATS_URL)
    times = {}
    for start in range(0, n, chunk):
        for i in range(start, min(n, start + chunk)):
            eid = f"bench-{i}-{uuid.uuid4().hex[:8]}"
            times[eid] = time.time()
            body = json.dumps({"event_id": eid, "type": subject_of(i), "payload": payload_of(i)}).encode()
            await nc.publish(f"activity.{subject_of(i)}", body)
        await nc.flush()
    await nc.close()
    return times


def match_cost(conn):
    print("1. matching cost per event (parse = envelope bytes to jsonb; match = index lookup + payload @> filters)")
    conn.execute("DELETE FROM ac_activity_definitions WHERE name LIKE 'mbench-%'")
    have = 0
    rows = []
    for size in SIZES:
        # 10 definitions per event type at every size, so only the index size grows
        conn.execute("""
            INSERT INTO ac_activity_definitions (name, trigger_type, trigger_config)
            SELECT 'mbench-' || g, 'event',
                   jsonb_build_object('event_type', 'mb.t' || (g / 10),
                                      'filters', jsonb_build_object('region', CASE WHEN g %% 2 = 0 THEN 'eu' ELSE 'us' END,
                                                                    'tier', g %% 5))
            FROM generate_series(%s::int, %s::int) g""", (have, size - 1))
        have = size
        env = {"event_id": "x", "type": "mb.t0",
               "payload": {"region": "eu", "tier": 2, "total": 12.5, "items": [{"sku": "a", "n": 1}], "note": None}}
        row = conn.execute("SELECT definitions, parse_us, match_us, matches FROM ac_router_bench(%s, 20000)",
                           (json.dumps(env),)).fetchone()
        print(f"   {row[0]:>7} definitions: parse {row[1]:.2f} us, match {row[2]:.2f} us per event "
              f"({row[3]} of 10 candidates match)")
        rows.append({"definitions": row[0], "parse_us": row[1], "match_us": row[2], "matches": row[3]})
    conn.execute("DELETE FROM ac_activity_definitions WHERE name LIKE 'mbench-%'")
    save("events", match=rows)


def temporal_call(local, method, path, body=None):
    if not hasattr(local, "c"):
        host, port = TEMPORAL.split(":")
        local.c = http.client.HTTPConnection(host, int(port), timeout=60)
    local.c.request(method, "/namespaces/default" + path, body=json.dumps(body) if body else None,
                    headers={"Content-Type": "application/json"})
    r = local.c.getresponse()
    data = r.read()
    return r.status, data


def direct_start(local, tag, i):
    """One StartWorkflowExecution as the router sends it; its HTTP status."""
    wid = f"direct-{tag}-{i}"
    return temporal_call(local, "POST", f"/workflows/{wid}", {
        "requestId": str(uuid.uuid4()), "workflowType": {"name": "RunActivityWorkflow"},
        "taskQueue": {"name": "bench-direct"}, "input": [{"n": i}],
        "searchAttributes": {"indexedFields": {"activity_id": f"direct-{tag}"}},
        "workflowIdReusePolicy": "WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE"})[0]


def direct_start_rate(n, threads=64):
    local = threading.local()
    tag = uuid.uuid4().hex[:8]

    def start(i):
        return direct_start(local, tag, i)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        codes = list(pool.map(start, range(n)))
    return n / (time.perf_counter() - t0), sum(c != 200 for c in codes)


def start_times(activity_id):
    """workflowId -> start time (epoch s) of the runs of a definition."""
    local = threading.local()
    out, token = {}, ""
    while True:
        q = urllib.parse.quote(f"activity_id = '{activity_id}'")
        path = f"/workflows?query={q}&pageSize=1000" + (f"&nextPageToken={urllib.parse.quote(token)}" if token else "")
        status, data = temporal_call(local, "GET", path)
        body = json.loads(data)
        for e in body.get("executions", []):
            st = datetime.datetime.fromisoformat(e["startTime"].replace("Z", "+00:00"))
            out[e["execution"]["workflowId"]] = st.timestamp()
        token = body.get("nextPageToken", "")
        if not token:
            return out


def throughput(conn):
    n = THROUGHPUT_N
    print(f"2. throughput: {n} events, each matching one definition")
    did = conn.execute("INSERT INTO ac_activity_definitions (name, trigger_type, trigger_config, task_queue) "
                       "VALUES ('tbench', 'event', '{\"event_type\": \"tb.go\"}', 'bench-router') "
                       "RETURNING id::text").fetchone()[0]
    time.sleep(2)
    base = stat(conn, "workflows_started")
    rpid = router_pid(conn)
    cpu0 = cpu_seconds(rpid)
    t0 = time.time()
    times = asyncio.run(publish(lambda i: "tb.go", n, lambda i: {"i": i}))
    while stat(conn, "workflows_started") - base < n:
        if time.time() - t0 > 300:
            print("   (gave up waiting)")
            break
        time.sleep(0.05)
    elapsed = time.time() - t0
    routed = stat(conn, "workflows_started") - base
    cpu_ms = (cpu_seconds(rpid) - cpu0) * 1000
    direct, errors = direct_start_rate(n)
    rate = routed / elapsed
    print(f"   router: {routed} workflows started in {elapsed:.2f} s = {rate:.0f} events/s")
    print(f"   direct concurrent StartWorkflowExecution client (64 connections): {direct:.0f} starts/s "
          f"(errors {errors}); ratio router/direct {rate / direct:.2f}")
    print(f"   router CPU: {cpu_ms:.0f} ms for {routed} started workflows = "
          f"{cpu_ms / max(routed, 1):.3f} ms per started workflow")
    save("events", throughput_n=n, router_rate=rate, direct_ceiling=direct, direct_errors=errors,
         throughput_ratio=rate / direct, router_cpu_ms_per_start=cpu_ms / max(routed, 1))
    conn.execute("DELETE FROM ac_activity_definitions WHERE id = %s", (did,))
    return direct


def hold_router(conn, hold):
    """Keep the router away from NATS (hold=True) or let it back.

    A reload alone does it: the router closes its connection when the URL
    changes, and a reload wakes it from its back-off to connect at once.
    The router is never terminated here: a router that reconnected in the
    reload's moment and was then replaced would stop for the worker's
    restart interval in the middle of the measured drain."""
    if hold:
        conn.execute("ALTER SYSTEM SET activity_core.nats_url = 'nats://127.0.0.1:1'")
    else:
        conn.execute("ALTER SYSTEM RESET activity_core.nats_url")
    conn.execute("SELECT pg_reload_conf()")
    if hold:
        # the router has let go once it no longer says it is connected
        deadline = time.time() + 30
        while time.time() < deadline and conn.execute(
                "SELECT state = 'connected' FROM ac_router_status()").fetchone()[0]:
            time.sleep(0.05)


def intake(conn):
    n = INTAKE_N
    print(f"3. intake, nothing matches: a backlog of {n} events")
    binary = os.path.join(os.environ.get("AC_STATE", "/tmp"), "bare_consumer")
    subprocess.run(["gcc", "-O2", "-o", binary, os.path.join(REPO, "bench", "bare_consumer.c"), "-lnats", "-lpthread"],
                   check=True)

    async def add_bare():
        """Two durables like the router's (MaxAckPending 10,000), for the two modes."""
        nc = await nats.connect(NATS_URL)
        js = nc.jetstream()
        for name in ("bench-bare", "bench-bare-simple"):
            try:
                await js.delete_consumer("ACTIVITY_EVENTS", name)
            except Exception:
                pass
            await js.add_consumer("ACTIVITY_EVENTS", durable_name=name, ack_policy="explicit",
                                  filter_subject="activity.nomatch.>", deliver_policy="new",
                                  max_ack_pending=10000)
        await nc.close()

    asyncio.run(add_bare())
    hold_router(conn, True)
    asyncio.run(publish(lambda i: "nomatch.x", n, lambda i: {"i": i}))
    base = stat(conn, "events_acked")
    hold_router(conn, False)
    deadline = time.time() + 600
    while stat(conn, "events_received") == 0 and time.time() < deadline:
        time.sleep(0.01)
    t_first = None
    while stat(conn, "events_acked") - base < n and time.time() < deadline:
        if t_first is None and stat(conn, "events_acked") > base:
            t_first = time.time()
        time.sleep(0.01)
    router_rate = n / (time.time() - (t_first or time.time()))
    rates = {}
    for mode, durable in (("pipelined", "bench-bare"), ("simple", "bench-bare-simple")):
        args = [binary, NATS_URL, "ACTIVITY_EVENTS", durable, "activity.nomatch.>", str(n),
                os.environ.get("BENCH_BATCH", "256")] + (["simple"] if mode == "simple" else [])
        out = subprocess.run(args, capture_output=True, text=True, check=True)
        got, secs = out.stdout.split()
        rates[mode] = int(got) / float(secs)
    # the baseline is the best plain consumer of this run: on two cores the
    # pipelined mode's thread hand-offs sometimes cost more than they hide
    bare_rate = max(rates.values())
    print(f"   router: {router_rate:.0f} events/s consumed, routed and acked")
    print(f"   bare nats.c pull consumer (fetch + ack only), the next fetch in flight while it acks: "
          f"{rates['pipelined']:.0f} events/s")
    print(f"   the same consumer fetching and acking one after the other: {rates['simple']:.0f} events/s")
    print(f"   ratio router/best bare consumer {router_rate / bare_rate:.2f}")
    save("events", intake_n=n, intake_router=router_rate, intake_bare=rates["pipelined"],
         intake_bare_simple=rates["simple"], intake_bare_best=bare_rate,
         intake_ratio=router_rate / bare_rate)


def soak(conn):
    n = SOAK_N
    print(f"4. router memory over {n} unmatched events")
    pid = router_pid(conn)
    base = stat(conn, "events_acked")
    samples = []
    parts = []
    sent = 0
    step = n // 10
    profile = []
    while sent < n:
        if sent == step:
            # profile the router while it drains the second tenth
            holder = {}
            th = threading.Thread(target=lambda: holder.update(p=perf_top([pid], 3)))
            th.start()
            asyncio.run(publish(lambda i: "soak.x", step, lambda i: {"i": i, "pad": "x" * 64}))
            th.join()
            profile = holder["p"]
        else:
            asyncio.run(publish(lambda i: "soak.x", step, lambda i: {"i": i, "pad": "x" * 64}))
        sent += step
        while stat(conn, "events_acked") - base < sent:
            time.sleep(0.05)
        kb = memory_kb(pid)
        samples.append((sent, kb["VmRSS"]))
        parts.append((sent, kb["RssAnon"], kb["RssShmem"]))
    for (count, kb), (_, anon, shmem) in zip(samples, parts):
        print(f"   after {count:>8} events: RSS {kb / 1024:.1f} MiB "
              f"(its own memory {anon / 1024:.1f} MiB, shared memory touched {shmem / 1024:.1f} MiB)")
    first = samples[0][1]
    print(f"   growth from the first to the last sample: {(samples[-1][1] - first) * 100 / first:+.1f}% "
          f"(same pid throughout: {router_pid(conn) == pid})")
    for p in profile[:10]:
        print(f"     {p['pct']:5.2f}%  {p['dso']:<20} {p['sym']}")
    save("events", soak_n=n, soak_rss_kb=samples, soak_anon_shmem_kb=parts, soak_growth_pct=(samples[-1][1] - first) * 100 / first,
         soak_same_pid=router_pid(conn) == pid, router_profile=profile)


def paced(rate, seconds, fn, threads=48):
    """Call fn(i) at `rate` per second for `seconds` from a pool; returns send times."""
    n = int(rate * seconds)
    t0 = time.time() + 0.2
    sent = [0.0] * n

    def one(i):
        due = t0 + i / rate
        d = due - time.time()
        if d > 0:
            time.sleep(d)
        sent[i] = time.time()
        return fn(i)

    with ThreadPoolExecutor(threads) as pool:
        codes = list(pool.map(one, range(n)))
    return sent, codes


def latency(conn, ceiling):
    rate = ceiling / 2
    print(f"5. latency at half the direct-start ceiling ({ceiling:.0f}/s): {rate:.0f}/s for {LATENCY_SECONDS} s")
    did = conn.execute("INSERT INTO ac_activity_definitions (name, trigger_type, trigger_config, task_queue) "
                       "VALUES ('lbench', 'event', '{\"event_type\": \"lb.go\"}', 'bench-router') "
                       "RETURNING id::text").fetchone()[0]
    time.sleep(2)
    base = stat(conn, "workflows_started")
    n = int(rate * LATENCY_SECONDS)

    async def paced_publish():
        nc = await nats.connect(NATS_URL)
        times = {}
        t0 = time.time() + 0.2
        for i in range(n):
            due = t0 + i / rate
            d = due - time.time()
            if d > 0:
                await asyncio.sleep(d)
            eid = f"lat-{i}-{uuid.uuid4().hex[:8]}"
            body = json.dumps({"event_id": eid, "type": "lb.go", "payload": {"i": i}}).encode()
            times[eid] = time.time()
            await nc.publish("activity.lb.go", body)
            await nc.flush()
        await nc.close()
        return times

    times = asyncio.run(paced_publish())
    deadline = time.time() + 120
    while stat(conn, "workflows_started") - base < n and time.time() < deadline:
        time.sleep(0.1)
    local = threading.local()
    tag = uuid.uuid4().hex[:8]
    sent, codes = paced(rate, LATENCY_SECONDS, lambda i: direct_start(local, tag, i))
    time.sleep(3)
    starts = start_times(did)
    lat = sorted((starts[f"activity-{did}:{eid}"] - t) * 1000 for eid, t in times.items()
                 if f"activity-{did}:{eid}" in starts)
    dstarts = start_times(f"direct-{tag}")
    dlat = sorted((dstarts[f"direct-{tag}-{i}"] - t) * 1000 for i, t in enumerate(sent)
                  if f"direct-{tag}-{i}" in dstarts)
    conn.execute("DELETE FROM ac_activity_definitions WHERE id = %s", (did,))
    if not lat or not dlat:
        print("   (no start times found)")
        return
    r50, r99, d50, d99 = pctl(lat, 0.5), pctl(lat, 0.99), pctl(dlat, 0.5), pctl(dlat, 0.99)
    print(f"   router, publish to recorded start: {len(lat)} of {n}: p50 {r50:.1f} ms, p99 {r99:.1f} ms")
    print(f"   direct client, send to recorded start: {len(dlat)} of {n} (errors {sum(c != 200 for c in codes)}): "
          f"p50 {d50:.1f} ms, p99 {d99:.1f} ms; p99 ratio router/direct {r99 / d99:.2f}")
    step = max(1, len(lat) // 2000)
    dstep = max(1, len(dlat) // 2000)
    save("events", latency_rate=rate, latency_seconds=LATENCY_SECONDS, latency_router_p50=r50,
         latency_router_p99=r99, latency_direct_p50=d50, latency_direct_p99=d99,
         latency_p99_ratio=r99 / d99, latency_router_ms=lat[::step], latency_direct_ms=dlat[::dstep],
         latency_router_n=len(lat), latency_direct_n=len(dlat), latency_sent=n)


def wait_for_stream(timeout=60):
    """Wait until the router has created the stream (a core publish before that is lost)."""
    async def check():
        nc = await nats.connect(NATS_URL)
        try:
            await nc.jetstream().stream_info("ACTIVITY_EVENTS")
            return True
        except Exception:
            return False
        finally:
            await nc.close()

    deadline = time.time() + timeout
    while time.time() < deadline:
        if asyncio.run(check()):
            return
        time.sleep(0.5)
    raise SystemExit("the router did not create the stream")


def main():
    with psycopg.connect(autocommit=True) as conn:
        conn.execute("SET client_min_messages = warning")
        conn.execute("CREATE EXTENSION IF NOT EXISTS activity_core")
        wait_for_stream()
        which = os.environ.get("BENCH_EVENTS_PARTS", "match,throughput,latency,intake,soak").split(",")
        ceiling = None
        if "match" in which:
            match_cost(conn)
        if "throughput" in which:
            ceiling = throughput(conn)
        if "latency" in which:
            latency(conn, ceiling or direct_start_rate(THROUGHPUT_N)[0])
        if "intake" in which:
            intake(conn)
        if "soak" in which:
            soak(conn)


if __name__ == "__main__":
    sys.exit(main())
