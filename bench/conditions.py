"""Benchmark: matching cost per event with conditions (trigger_config.condition).

Prints figures, asserts nothing.  For 10, 1,000 and 10,000 enabled event
definitions on one event type, the router's matching cost per event
(ac_router_bench(), the router's own index and matcher; bench/setup.sql
creates it), for:
  - filters only (no condition): the baseline;
  - a comparison condition on every definition ($.amount > k && $.currency == "EUR"),
    with empty filters, so every condition runs (the worst case);
  - a like_regex condition on every definition;
  - the same comparison conditions behind a filter that the event does not
    match, so no condition runs (filters as the pre-filter).
Runs against the stack whose environment bench/run.sh exported (or any
stack: PG* variables).
"""
import json
import os

import psycopg

SIZES = [int(x) for x in os.environ.get("BENCH_COND_SIZES", "10,1000,10000").split(",")]
ETYPE = "bench.cond"
EVENT = json.dumps({"event_id": "b1", "type": ETYPE,
                    "payload": {"amount": 5000, "currency": "EUR", "region": "eu",
                                "name": "order-42", "tags": ["vip", "new"]}})


def load(conn, n, config_of):
    conn.execute("DELETE FROM ac_activity_definitions WHERE name LIKE 'bench-cond-%'")
    with conn.transaction():
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO ac_activity_definitions (name, trigger_type, trigger_config) "
                "VALUES (%s, 'event', %s)",
                [(f"bench-cond-{i}", json.dumps(config_of(i))) for i in range(n)])


def measure(conn, n):
    iterations = max(20, 200000 // n)
    row = conn.execute("SELECT definitions, match_us, matches FROM ac_router_bench(%s, %s)",
                       (EVENT, iterations)).fetchone()
    return row


CASES = [
    ("filters only", lambda i: {"event_type": ETYPE, "filters": {"region": "eu"}}),
    ("comparison condition", lambda i: {"event_type": ETYPE,
                                        "condition": f'$.amount > {i} && $.currency == "EUR"'}),
    ("like_regex condition", lambda i: {"event_type": ETYPE,
                                        "condition": f'$.name like_regex "^order-{i % 100}"'}),
    ("condition behind a failing filter", lambda i: {"event_type": ETYPE, "filters": {"region": "us"},
                                                     "condition": f"$.amount > {i}"}),
]


def main():
    conn = psycopg.connect(autocommit=True)
    print(f"{'case':36} {'definitions':>11} {'match us/event':>15} {'us/definition':>14} {'matches':>8}")
    for name, config_of in CASES:
        for n in SIZES:
            load(conn, n, config_of)
            defs, match_us, matches = measure(conn, n)
            print(f"{name:36} {defs:>11} {match_us:>15.1f} {match_us / max(defs, 1):>14.3f} {matches:>8}")
    conn.execute("DELETE FROM ac_activity_definitions WHERE name LIKE 'bench-cond-%'")


if __name__ == "__main__":
    main()
