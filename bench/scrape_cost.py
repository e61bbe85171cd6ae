"""Benchmark: what scraping /metrics every 100 ms costs the router.

Prints figures, asserts nothing.  The router's intake (a backlog of
unmatched events consumed, routed and acked: the router's own work, not
Temporal's) is measured in rounds that alternate without and with a scraper
that GETs /metrics every 100 ms, in the same run on the same stack; it
prints the median rate of each, their ratio, what the scrapes took, and
the CPU time a scrape costs the metrics worker and the scraper (the part
of the cost that does not drown in the noise of a shared machine).
Runs against the stack whose environment bench/run.sh exported (needs
AC_METRICS_URL).  BENCH_SCRAPE_N events per round (default 100,000; QUICK=1: 30,000),
BENCH_SCRAPE_ROUNDS rounds of each kind (default 5; QUICK=1: 3), BENCH_SCRAPE_EVERY_MS
(default 100).
"""
import asyncio
import os
import statistics
import sys
import threading
import time
import urllib.request

import psycopg

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import QUICK  # noqa: E402
from events import hold_router, publish, stat, wait_for_stream  # noqa: E402

METRICS_URL = os.environ.get("AC_METRICS_URL", "http://127.0.0.1:9090/metrics")
N = int(os.environ.get("BENCH_SCRAPE_N", "30000" if QUICK else "100000"))
ROUNDS = int(os.environ.get("BENCH_SCRAPE_ROUNDS", "3" if QUICK else "5"))
EVERY = int(os.environ.get("BENCH_SCRAPE_EVERY_MS", "100")) / 1000.0


class Scraper(threading.Thread):
    """GET /metrics every EVERY seconds until stopped; keeps each scrape's time."""

    def __init__(self):
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.times = []
        self.size = 0
        self.errors = 0
        self.cpu = 0.0

    def run(self):
        c0 = time.thread_time()
        while not self.stop.is_set():
            t0 = time.perf_counter()
            try:
                with urllib.request.urlopen(METRICS_URL, timeout=5) as resp:
                    self.size = len(resp.read())
                self.times.append(time.perf_counter() - t0)
            except OSError:
                self.errors += 1
            self.stop.wait(max(0.0, EVERY - (time.perf_counter() - t0)))
        self.cpu = time.thread_time() - c0


def metrics_worker_pid():
    """The pid of the stack's metrics worker: a child of its postmaster."""
    with open(os.path.join(os.environ["AC_PG_DATA"], "postmaster.pid")) as f:
        postmaster = f.readline().strip()
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = f.read().rsplit(")", 1)[1].split()[1]
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
        except (OSError, IndexError):
            continue
        if ppid == postmaster and b"activity_core metrics" in cmd:
            return int(pid)
    return None


def cpu_seconds(pid):
    """User + system CPU time of a process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_round(conn, scrape):
    """Intake rate (events/s) of one backlog of N unmatched events."""
    hold_router(conn, True)
    asyncio.run(publish(lambda i: "scrapecost.x", N, lambda i: {"i": i}))
    base = stat(conn, "events_acked")
    scraper = Scraper() if scrape else None
    if scraper:
        scraper.start()
    hold_router(conn, False)
    deadline = time.time() + 600
    t_first, first = None, 0
    while time.time() < deadline:
        acked = stat(conn, "events_acked") - base
        if t_first is None and acked > 0:
            t_first, first = time.time(), acked
        if acked >= N:
            break
        time.sleep(0.02)
    elapsed = time.time() - (t_first or time.time())
    if scraper:
        scraper.stop.set()
        scraper.join()
    rate = (N - first) / elapsed if t_first and elapsed > 0 else 0.0
    return rate, scraper


def main():
    with psycopg.connect(autocommit=True) as conn:
        conn.execute("SET client_min_messages = warning")
        conn.execute("CREATE EXTENSION IF NOT EXISTS activity_core")
        wait_for_stream()
        print(f"scrape cost: router intake of {N} unmatched events, {ROUNDS} rounds without and "
              f"{ROUNDS} with a scraper every {EVERY * 1000:.0f} ms, alternating")
        without, with_, scrapes = [], [], []
        worker = metrics_worker_pid()
        worker_cpu = client_cpu = 0.0
        for r in range(ROUNDS):
            # ABBA order: a trend in the machine's load hits both kinds alike
            for scrape in ((False, True) if r % 2 == 0 else (True, False)):
                c0 = cpu_seconds(worker) if worker else 0.0
                rate, scraper = one_round(conn, scrape)
                (with_ if scrape else without).append(rate)
                extra = ""
                if scraper:
                    worker_cpu += (cpu_seconds(worker) - c0) if worker else 0.0
                    client_cpu += scraper.cpu
                    scrapes.extend(scraper.times)
                    extra = (f" ({len(scraper.times)} scrapes of {scraper.size} bytes, "
                             f"{scraper.errors} errors)")
                print(f"   round {r + 1} {'with' if scrape else 'without'} scraping: "
                      f"{rate:.0f} events/s{extra}")
        a, b = statistics.median(without), statistics.median(with_)
        print(f"   median without scraping: {a:.0f} events/s")
        print(f"   median with scraping every {EVERY * 1000:.0f} ms: {b:.0f} events/s "
              f"(ratio {b / a:.3f})")
        if scrapes:
            n = len(scrapes)
            scrapes.sort()
            print(f"   scrape time: p50 {statistics.median(scrapes) * 1000:.2f} ms, "
                  f"p99 {scrapes[max(0, int(n * 0.99) - 1)] * 1000:.2f} ms")
            print(f"   CPU per scrape: metrics worker {worker_cpu / n * 1000:.2f} ms, scraper "
                  f"{client_cpu / n * 1000:.2f} ms; at one scrape per {EVERY * 1000:.0f} ms the worker "
                  f"uses {worker_cpu / n / EVERY * 100:.2f}% of a core")


if __name__ == "__main__":
    sys.exit(main())
