"""Benchmark: the commit-time cost of an INSERT into a watched table.

Prints figures, asserts nothing.  pgbench, one client, one INSERT per
transaction (so each figure is the INSERT with its commit), into three
copies of one table:
  - unwatched;
  - watched with ac_watch() (the C trigger writing the outbox);
  - with a plpgsql AFTER ROW trigger calling ac_publish(type, to_jsonb(NEW)).
Each is run BENCH_WATCH_ROUNDS times (default 3), interleaved, for
BENCH_WATCH_SECONDS seconds (default 10); the median of the rounds is
printed.  Then the trigger's own cost per row without the commit: one
INSERT ... SELECT of 5,000 rows into each, rolled back (nothing reaches the
outbox's readers).  The dispatcher drains the outbox to NATS meanwhile, as it would
in production.  Runs against the stack whose environment bench/run.sh
exported (or any stack: PG* variables, AC_PGBIN for pgbench).
"""
import os
import re
import statistics
import subprocess
import tempfile
import time

import psycopg

PGBIN = os.environ.get("AC_PGBIN", "/usr/lib/postgresql/15/bin")
SECONDS = int(os.environ.get("BENCH_WATCH_SECONDS", "10"))
ROUNDS = int(os.environ.get("BENCH_WATCH_ROUNDS", "3"))
TABLES = ["bench_w_plain", "bench_w_c", "bench_w_plpgsql"]
LABELS = {"bench_w_plain": "unwatched", "bench_w_c": "ac_watch (C trigger)",
          "bench_w_plpgsql": "plpgsql trigger + ac_publish"}

SETUP = """
DROP TABLE IF EXISTS bench_w_plain, bench_w_c, bench_w_plpgsql;
CREATE TABLE bench_w_plain (id bigserial PRIMARY KEY, customer int NOT NULL, status text NOT NULL,
	amount numeric(12,2) NOT NULL, note text, created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE bench_w_c (LIKE bench_w_plain INCLUDING ALL);
CREATE TABLE bench_w_plpgsql (LIKE bench_w_plain INCLUDING ALL);
SELECT ac_watch('bench_w_c', 'bench.watch.c');
CREATE OR REPLACE FUNCTION bench_w_publish() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	PERFORM ac_publish('bench.watch.plpgsql', pg_catalog.jsonb_build_object(
		'op', pg_catalog.lower(TG_OP), 'table', TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME,
		'new', pg_catalog.to_jsonb(NEW)));
	RETURN NULL;
END $$;
CREATE TRIGGER bench_w_publish AFTER INSERT ON bench_w_plpgsql
	FOR EACH ROW EXECUTE FUNCTION bench_w_publish();
"""


def pgbench(table):
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(f"INSERT INTO {table} (customer, status, amount, note) "
                "VALUES ((random() * 100000)::int, 'open', (random() * 1000)::numeric(12,2), "
                "'a short note about the order');\n")
        script = f.name
    try:
        out = subprocess.run([f"{PGBIN}/pgbench", "-n", "-M", "prepared", "-c", "1", "-T", str(SECONDS),
                              "-f", script], check=True, capture_output=True, text=True).stdout
    finally:
        os.unlink(script)
    lat = float(re.search(r"latency average = ([0-9.]+) ms", out).group(1))
    tps = float(re.search(r"tps = ([0-9.]+)", out).group(1))
    return lat * 1000, tps


def main():
    conn = psycopg.connect(autocommit=True)
    conn.execute(SETUP)
    results = {t: [] for t in TABLES}
    for _ in range(ROUNDS):
        for t in TABLES:
            results[t].append(pgbench(t))
    base = statistics.median(r[0] for r in results["bench_w_plain"])
    print(f"{'table':32} {'us per INSERT+commit':>21} {'tps':>8} {'added us':>9}")
    for t in TABLES:
        us = statistics.median(r[0] for r in results[t])
        tps = statistics.median(r[1] for r in results[t])
        print(f"{LABELS[t]:32} {us:>21.0f} {tps:>8.0f} {us - base:>9.0f}")
    print()
    print(f"{'table':32} {'us per row, 5,000-row INSERT':>29} {'added us':>9}")
    per_row = {}
    for t in TABLES:
        runs = []
        for _ in range(ROUNDS):
            conn.execute("BEGIN")
            t0 = time.perf_counter()
            conn.execute(f"INSERT INTO {t} (customer, status, amount, note) SELECT g, 'open', 1.5, "
                         "'a short note about the order' FROM generate_series(1, 5000) g")
            runs.append((time.perf_counter() - t0) * 1e6 / 5000)
            conn.execute("ROLLBACK")
        per_row[t] = statistics.median(runs)
    for t in TABLES:
        print(f"{LABELS[t]:32} {per_row[t]:>29.1f} {per_row[t] - per_row['bench_w_plain']:>9.1f}")
    conn.execute("DROP TABLE bench_w_plain, bench_w_c, bench_w_plpgsql")
    conn.execute("DROP FUNCTION bench_w_publish()")


if __name__ == "__main__":
    main()
