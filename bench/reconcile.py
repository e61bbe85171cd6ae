"""Benchmark: full reconcile of many cron definitions.

Prints figures, asserts nothing:
  1. ac_sync_schedules() over N definitions whose schedules are all in sync
     (N describes): time and requests per second;
  2. the same after the Temporal dev server lost everything (restarted
     empty): time to recreate all N schedules.
The dispatcher's own periodic reconcile is switched off meanwhile.
"""
import os
import subprocess
import sys
import time

import psycopg

from common import QUICK, save

N = int(os.environ.get("BENCH_RECONCILE_N", "500" if QUICK else "10000"))
REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def wait_applied(conn, timeout=1800):
    t0 = time.perf_counter()
    while conn.execute("SELECT count(*) FROM ac_sync_status WHERE pending").fetchone()[0]:
        if time.perf_counter() - t0 > timeout:
            raise SystemExit("dispatcher did not finish")
        time.sleep(0.5)
    return time.perf_counter() - t0


def timed_sync(conn):
    t0 = time.perf_counter()
    rows = conn.execute("SELECT action, count(*) FROM ac_sync_schedules() GROUP BY 1").fetchall()
    return time.perf_counter() - t0, dict(rows)


def main():
    with psycopg.connect(autocommit=True) as conn:
        conn.execute("SET client_min_messages = warning")
        conn.execute("CREATE EXTENSION IF NOT EXISTS activity_core")
        conn.execute("ALTER SYSTEM SET activity_core.reconcile_interval = 0")
        conn.execute("SELECT pg_reload_conf()")
        conn.execute("""
            INSERT INTO ac_activity_definitions (name, trigger_type, trigger_config)
            SELECT 'rbench-' || g, 'cron',
                   jsonb_build_object('cron_expression', (g % 60) || ' ' || (g % 24) || ' * * *',
                                      'misfire_policy', (ARRAY['skip','catchup','compress'])[1 + g % 3])
            FROM generate_series(1, NNN) g""".replace("NNN", str(N)))
        created = wait_applied(conn)
        print(f"setup: dispatcher created {N} schedules in {created:.1f} s ({N/created:.0f}/s)")
        figures = {"n": N, "created_s": created, "in_sync": []}

        for conc in [int(c) for c in os.environ.get("BENCH_RECONCILE_CONCURRENCY", "8,32").split(",")]:
            conn.execute(f"ALTER SYSTEM SET activity_core.reconcile_concurrency = {conc}")
            conn.execute("SELECT pg_reload_conf()")
            time.sleep(1)
            elapsed, actions = timed_sync(conn)
            print(f"reconcile of {N} in-sync definitions, {conc} requests in flight: {elapsed:.1f} s, "
                  f"{N/elapsed:.0f} describe requests/s, actions taken: {actions or 'none'}")
            figures["in_sync"].append({"concurrency": conc, "seconds": elapsed})
        conn.execute("ALTER SYSTEM RESET activity_core.reconcile_concurrency")
        conn.execute("SELECT pg_reload_conf()")

        subprocess.run(["bash", os.path.join(REPO, "test", "stack.sh"), "restart-temporal",
                        os.environ["AC_STATE"]], check=True, capture_output=True)
        elapsed, actions = timed_sync(conn)
        print(f"reconcile after total loss (Temporal restarted empty): {elapsed:.1f} s to recreate, "
              f"{N/elapsed:.0f} schedules/s, actions: {actions}")
        figures["recreate_s"] = elapsed
        elapsed, actions = timed_sync(conn)
        print(f"reconcile right after: {elapsed:.1f} s, actions taken: {actions or 'none'}")
        figures["after_s"] = elapsed
        save("reconcile", **figures)
        conn.execute("ALTER SYSTEM RESET activity_core.reconcile_interval")
        conn.execute("SELECT pg_reload_conf()")


if __name__ == "__main__":
    sys.exit(main())
