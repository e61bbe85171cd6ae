"""Benchmark: ac_publish() and the outbox drain.

Prints figures, asserts nothing; saves them to bench/results/publish.json:
  1. TPS of `SELECT ac_publish(type, payload)` per transaction against a
     plain INSERT of the same payload into an ordinary table
     (bench_plain: bigserial key, subject, jsonb payload, created_at),
     pgbench with 4 clients, in alternating rounds, with a perf profile
     of the publishing backends;
  2. the outbox backlog, sampled every second, while 4 pgbench clients
     call ac_publish() for BENCH_BACKLOG_SECONDS (60);
  3. draining a backlog of BENCH_DRAIN_N (100,000) envelopes committed at
     once into ac_outbox, against bench/async_publisher (nats.c
     js_PublishAsync) sending as many envelopes of the same shape, once
     with 256 acknowledgements pending and once with the dispatcher's 4,000;
     the baseline is the faster of the two.  The router is stopped
     (SIGSTOP) through all three, so that each side measures publishing
     into JetStream alone, not the router's consumption beside it.  The
     stream must gain exactly N messages (nothing lost, nothing twice) in
     each.
Runs against the stack whose environment bench/run.sh exported.
"""
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid

import psycopg

from common import QUICK, REPO, cpu_seconds, perf_top, save

PAYLOAD = '{"order": 12345, "region": "eu", "items": [{"sku": "a-1", "n": 2}], "total": 12.5}'
CLIENTS = 4
TPS_SECONDS = int(os.environ.get("BENCH_TPS_SECONDS", "6" if QUICK else "20"))
ROUNDS = int(os.environ.get("BENCH_TPS_ROUNDS", "1" if QUICK else "2"))
BACKLOG_SECONDS = int(os.environ.get("BENCH_BACKLOG_SECONDS", "10" if QUICK else "60"))
DRAIN_N = int(os.environ.get("BENCH_DRAIN_N", "20000" if QUICK else "100000"))
STATE = os.environ.get("AC_STATE", "/tmp")


def pgbench(script, seconds, tag):
    """TPS of pgbench running script with CLIENTS clients."""
    path = os.path.join(STATE, f"bench-{tag}.sql")
    with open(path, "w") as f:
        f.write(script + "\n")
    out = subprocess.run(["pgbench", "-n", "-c", str(CLIENTS), "-j", "2", "-T", str(seconds), "-f", path],
                         capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if line.startswith("tps = "):
            return float(line.split()[2])
    raise SystemExit(f"pgbench printed no tps:\n{out}")


def wait_outbox_empty(conn, timeout=600):
    deadline = time.time() + timeout
    # a cheap probe, 20 times a second: a count(*) of the backlog this often
    # would take CPU from the drain it measures, which the baseline does not pay
    while conn.execute("SELECT EXISTS (SELECT FROM ac_outbox WHERE NOT error_permanent)").fetchone()[0]:
        if time.time() > deadline:
            raise SystemExit("the outbox did not drain")
        time.sleep(0.05)


def stream_messages():
    with urllib.request.urlopen(os.environ["AC_NATS_MONITOR"] + "/jsz?streams=true") as r:
        d = json.load(r)
    for acct in d.get("account_details", []):
        for s in acct.get("stream_detail", []):
            if s["name"] == "ACTIVITY_EVENTS":
                return s["state"]["messages"]
    return d.get("messages", 0)


def backend_pids(conn):
    return [r[0] for r in conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'pgbench' AND backend_type = 'client backend'")]


def pipeline_pids(conn):
    """The processes that carry a published event on: dispatcher, nats-server, router."""
    rows = dict(conn.execute("SELECT backend_type, pid FROM pg_stat_activity WHERE backend_type IN "
                             "('activity_core dispatcher', 'activity_core router')").fetchall())
    with open(os.path.join(STATE, "nats", "nats.pid")) as f:
        nats_pid = int(f.read().strip())
    return {"dispatcher": rows.get("activity_core dispatcher"), "nats-server": nats_pid,
            "router": rows.get("activity_core router")}


def machine_ticks():
    """(busy, total) CPU ticks of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        vals = [int(x) for x in f.readline().split()[1:]]
    return sum(vals) - vals[3] - vals[4], sum(vals)


def measured_pgbench(conn, script, seconds, tag):
    """pgbench's TPS, with the CPU the pipeline processes and the machine spent meanwhile."""
    pids = pipeline_pids(conn)
    c0 = {k: cpu_seconds(p) for k, p in pids.items() if p}
    b0, t0 = machine_ticks()
    rate = pgbench(script, seconds, tag)
    b1, t1 = machine_ticks()
    cpu = {k: cpu_seconds(p) - c0[k] for k, p in pids.items() if p and k in c0}
    return rate, {"cpu_s": cpu, "machine_busy": (b1 - b0) / max(t1 - t0, 1), "seconds": seconds}


def tps(conn):
    print(f"1. ac_publish per transaction vs a plain INSERT of the same payload: pgbench, {CLIENTS} clients, "
          f"{ROUNDS} x {TPS_SECONDS} s each")
    conn.execute("DROP TABLE IF EXISTS bench_plain")
    conn.execute("CREATE TABLE bench_plain (id bigserial PRIMARY KEY, subject text NOT NULL, "
                 "payload jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT now())")
    insert = f"INSERT INTO bench_plain (subject, payload) VALUES ('bench.pub', '{PAYLOAD}');"
    publish = f"SELECT ac_publish('bench.pub', '{PAYLOAD}');"
    ins, pub = [], []
    profile = []
    split = {}
    for r in range(ROUNDS):
        def run(script, tag, first=r == 0):
            """One pgbench round; the first also measures where the CPU goes
            (the pipeline's processes, and how busy the machine is)."""
            if not first:
                return pgbench(script, TPS_SECONDS, tag)
            rate, split[tag] = measured_pgbench(conn, script, TPS_SECONDS, tag)
            return rate

        wait_outbox_empty(conn)
        ins.append(run(insert, "insert"))
        conn.execute("TRUNCATE bench_plain")
        wait_outbox_empty(conn)
        if r == ROUNDS - 1:
            # profile the publishing backends in the middle of the last round
            holder = {}
            t = threading.Thread(target=lambda: holder.update(tps=run(publish, "publish")))
            t.start()
            time.sleep(2)
            with psycopg.connect(autocommit=True) as c2:
                profile = perf_top(backend_pids(c2), min(5, TPS_SECONDS - 3))
            t.join()
            pub.append(holder["tps"])
        else:
            pub.append(run(publish, "publish"))
    wait_outbox_empty(conn)
    # the call alone: the dispatcher stopped (SIGSTOP), so that neither it nor
    # nats-server nor the router takes the 2 cores from the publishing
    # backends; the outbox fills and drains once it goes on
    dpid = conn.execute("SELECT pid FROM pg_stat_activity "
                        "WHERE backend_type = 'activity_core dispatcher'").fetchone()[0]
    os.kill(dpid, signal.SIGSTOP)
    try:
        alone = pgbench(publish, TPS_SECONDS, "publish-alone")
    finally:
        os.kill(dpid, signal.SIGCONT)
    wait_outbox_empty(conn)
    mi, mp = sorted(ins)[len(ins) // 2], sorted(pub)[len(pub) // 2]
    print(f"   plain INSERT: {', '.join(f'{x:.0f}' for x in ins)} TPS; ac_publish: "
          f"{', '.join(f'{x:.0f}' for x in pub)} TPS; ratio {mp / mi:.2f}")
    print(f"   ac_publish with the dispatcher stopped (the call alone, nothing published meanwhile): "
          f"{alone:.0f} TPS; ratio {alone / mi:.2f}")
    events = pub[0] * TPS_SECONDS
    per_event = {k: v * 1e6 / max(events, 1) for k, v in split["publish"]["cpu_s"].items()}
    print(f"   machine busy: {split['insert']['machine_busy'] * 100:.0f}% of its {os.cpu_count()} cores "
          f"during the INSERT round, {split['publish']['machine_busy'] * 100:.0f}% during the ac_publish round")
    print("   CPU per published event in the first ac_publish round: "
          + ", ".join(f"{k} {v:.1f} us" for k, v in per_event.items())
          + f"; together {sum(split['publish']['cpu_s'].values()) / TPS_SECONDS:.2f} cores")
    for p in profile[:10]:
        print(f"     {p['pct']:5.2f}%  {p['dso']:<20} {p['sym']}")
    save("publish", insert_tps=ins, publish_tps=pub, tps_ratio=mp / mi, publish_profile=profile,
         tps_cpu_split=split, tps_cpu_us_per_event=per_event,
         publish_alone_tps=alone, publish_alone_ratio=alone / mi,
         clients=CLIENTS, tps_seconds=TPS_SECONDS)
    conn.execute("DROP TABLE bench_plain")


def backlog(conn):
    print(f"2. outbox backlog while {CLIENTS} clients call ac_publish for {BACKLOG_SECONDS} s")
    wait_outbox_empty(conn)
    samples = []
    stop = threading.Event()

    def sample():
        with psycopg.connect(autocommit=True) as c:
            t0 = time.time()
            while not stop.is_set():
                n = c.execute("SELECT count(*) FROM ac_outbox").fetchone()[0]
                samples.append((round(time.time() - t0, 2), n))
                stop.wait(1.0)

    base = stream_messages()
    th = threading.Thread(target=sample)
    th.start()
    rate = pgbench(f"SELECT ac_publish('bench.backlog', '{PAYLOAD}');", BACKLOG_SECONDS, "backlog")
    t_end = time.time()
    wait_outbox_empty(conn)
    settle = time.time() - t_end
    stop.set()
    th.join()
    published = stream_messages() - base
    peak = max(n for _, n in samples)
    print(f"   {rate:.0f} publishes/s; backlog sampled every second: peak {peak}, "
          f"at the end {samples[-1][1] if samples else 0}; empty {settle:.1f} s after the clients stopped; "
          f"{published} messages reached the stream")
    print("   backlog over time: " + " ".join(f"{t:.0f}s:{n}" for t, n in samples[::max(1, len(samples) // 15)]))
    save("publish", backlog_rate=rate, backlog_samples=samples, backlog_peak=peak,
         backlog_settle_s=settle, backlog_seconds=BACKLOG_SECONDS, backlog_stream_messages=published)


def drain(conn):
    n = DRAIN_N
    print(f"3. draining a backlog of {n} envelopes vs a nats.c async publisher (256 or 4,000 pending), "
          f"the router stopped")
    binary = os.path.join(STATE, "async_publisher")
    subprocess.run(["gcc", "-O2", "-o", binary, os.path.join(REPO, "bench", "async_publisher.c"), "-lnats"],
                   check=True)
    tag = uuid.uuid4().hex[:8]
    # the dispatcher is up and connected before the clock starts: one event through
    conn.execute("SELECT ac_publish('bench.drain', '{}'::jsonb, %s)", (f"warm-{tag}",))
    wait_outbox_empty(conn)
    # the router would consume beside one side and after the other (it lags
    # the fastest publisher): stopped, it takes nothing from either
    rpid = pipeline_pids(conn)["router"]
    time.sleep(0.5)
    os.kill(rpid, signal.SIGSTOP)
    try:
        drain_stopped(conn, n, binary, tag)
    finally:
        os.kill(rpid, signal.SIGCONT)
    wait_router_caught_up()


def wait_router_caught_up(timeout=180):
    """Until the router's consumer has nothing pending: what follows starts clean."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        with urllib.request.urlopen(os.environ["AC_NATS_MONITOR"] + "/jsz?consumers=true") as r:
            d = json.load(r)
        left = [c["num_pending"] + c["num_ack_pending"]
                for a in d.get("account_details", []) for s in a.get("stream_detail", [])
                for c in s.get("consumer_detail", []) if c["name"] == "activity-core-event-router"]
        if left and left[0] == 0:
            return
        time.sleep(0.2)
    raise SystemExit("the router did not catch up after the drain")


def drain_stopped(conn, n, binary, tag):
    """The drain and its baselines, while the router is stopped."""
    base = stream_messages()
    t0 = time.time()
    # the backlog commits at once, with the commit-time wake-up ac_publish also asks for
    with conn.transaction():
        conn.execute(f"""
            INSERT INTO ac_outbox (subject, msg_id, data)
            SELECT 'activity.bench.drain', 'drain-{tag}-' || g,
                   convert_to(jsonb_build_object('event_id', 'drain-{tag}-' || g, 'type', 'bench.drain',
                              'payload', '{PAYLOAD}'::jsonb, 'occurred_at', now(),
                              'source', 'activity_core')::text, 'UTF8')
            FROM generate_series(1, {n}) g""")
        conn.execute("SELECT ac_outbox_wake()")
    t_commit = time.time()
    wait_outbox_empty(conn)
    secs = time.time() - t_commit
    got = stream_messages() - base
    drain_rate = n / secs
    print(f"   dispatcher: {n} in {secs:.2f} s = {drain_rate:.0f} events/s (insert took {t_commit - t0:.2f} s); "
          f"stream gained {got}")
    # the baseline with a small window and with the dispatcher's (a whole batch)
    async_rates, async_gained = {}, {}
    for window in (256, 4000):
        base = stream_messages()
        out = subprocess.run([binary, os.environ["AC_NATS_URL"], "activity.bench.drain", "bench.drain", PAYLOAD,
                              f"async{window}-{tag}", str(n), str(window)], capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"async_publisher failed: {out.stderr}")
        cnt, asecs, failed = out.stdout.split()
        async_gained[window] = stream_messages() - base
        async_rates[window] = int(cnt) / float(asecs)
        print(f"   nats.c async publisher, {window} pending: {cnt} in {float(asecs):.2f} s = "
              f"{async_rates[window]:.0f} events/s (refused {failed}); stream gained {async_gained[window]}")
    best = max(async_rates, key=async_rates.get)
    async_rate, got2 = async_rates[best], async_gained[best]
    print(f"   ratio dispatcher / the faster async publisher ({best} pending): {drain_rate / async_rate:.2f}")
    # dedup: the same Msg-Ids again add nothing
    base = stream_messages()
    conn.execute(f"""
        INSERT INTO ac_outbox (subject, msg_id, data)
        SELECT 'activity.bench.drain', 'drain-{tag}-' || g, convert_to('{{}}', 'UTF8')
        FROM generate_series(1, 1000) g""")
    wait_outbox_empty(conn)
    dup = stream_messages() - base
    print(f"   1000 outbox rows with Msg-Ids already published: the stream gained {dup}")
    save("publish", drain_n=n, drain_rate=drain_rate, drain_stream_gained=got, async_rate=async_rate,
         async_window=best, async_rates={str(k): v for k, v in async_rates.items()},
         async_stream_gained=got2, drain_ratio=drain_rate / async_rate, dedup_gained=dup)


def main():
    with psycopg.connect(autocommit=True) as conn:
        conn.execute("SET client_min_messages = warning")
        conn.execute("CREATE EXTENSION IF NOT EXISTS activity_core")
        which = os.environ.get("BENCH_PUBLISH_PARTS", "tps,backlog,drain").split(",")
        if "tps" in which:
            tps(conn)
        if "backlog" in which:
            backlog(conn)
        if "drain" in which:
            drain(conn)


if __name__ == "__main__":
    sys.exit(main())
