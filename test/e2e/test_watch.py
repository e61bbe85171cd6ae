"""Table watches (ac_watch): committed row changes of a user's table become
events through the outbox, NATS and the router, and start exactly the
workflows whose definitions (filters and conditions) match them.

A watched orders table: definitions on {"op": "insert"} and on
{"op": "update"} with the condition
$.old.status != $.new.status && $.new.status == "paid".  Rows come in by a
multi-row INSERT and by COPY (the insert definition's condition picks
every tenth id); 1,000 committed updates, some of which change
the status to paid, and updates to paid in a rolled-back transaction and a
rolled-back savepoint.  Temporal must hold one workflow per tenth inserted row
and one per committed change to paid, each carrying that change, and nothing for
the rest.  The watch survives pg_dump and restore, of the table alone and of
the whole database.
"""
import os
import random
import subprocess

import psycopg
import pytest

from conftest import token
from test_events import js, runs, start_arg, wait_processed  # noqa: F401

PAID = "$.old.status != $.new.status && $.new.status == \"paid\""
PGBIN = os.environ.get("AC_PGBIN", "/usr/lib/postgresql/15/bin")


@pytest.fixture
def orders(conn):
    """A watched table orders_<token> and its two definitions; dropped afterwards."""
    tbl = f"orders_{token()}"
    conn.execute(f"CREATE TABLE public.{tbl} (id int PRIMARY KEY, status text NOT NULL, "
                 "version int NOT NULL DEFAULT 0, card text)")
    etype = conn.execute("SELECT ac_watch(%s)", (f"public.{tbl}",)).fetchone()[0]
    assert etype == f"row.public.{tbl}"
    ids = {}
    for what, cfg in (("ins", {"event_type": etype, "filters": {"op": "insert"},
                               "condition": "$.new.id % 10 == 0"}),
                      ("paid", {"event_type": etype, "filters": {"op": "update"},
                                "condition": PAID})):
        ids[what] = str(conn.execute(
            "INSERT INTO ac_activity_definitions (name, trigger_type, trigger_config) "
            "VALUES (%s, 'event', %s) RETURNING id",
            (f"{tbl}-{what}", psycopg.types.json.Jsonb(cfg))).fetchone()[0])
    yield tbl, ids
    conn.execute("DELETE FROM ac_activity_definitions WHERE id = ANY(%s::uuid[])",
                 (list(ids.values()),))
    conn.execute(f"DROP TABLE IF EXISTS public.{tbl}")


def wait_count(aid, n, timeout=90.0):
    """Visibility lists n distinct workflows of aid (and not more); returns their ids."""
    import time
    deadline = time.monotonic() + timeout
    while True:
        got = runs(aid)
        if len(got) >= n or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(got) == n == len(set(got)), (len(got), n)
    return got


def test_watched_table_starts_exactly_the_committed_changes_to_paid(conn, js, orders):
    tbl, ids = orders
    r = random.Random(20261201)
    state = {}
    # 100 rows by one multi-row INSERT, 100 by COPY
    rows = [(i, r.choice(["open", "shipped"])) for i in range(1, 101)]
    conn.execute(f"INSERT INTO public.{tbl} (id, status) VALUES "
                 + ", ".join(f"({i}, '{s}')" for i, s in rows))
    with conn.cursor().copy(f"COPY public.{tbl} (id, status) FROM STDIN") as cp:
        for i in range(101, 201):
            s = r.choice(["open", "shipped", "paid"])
            rows.append((i, s))
            cp.write_row((i, s))
    for i, s in rows:
        state[i] = [s, 0]

    # 1,000 committed updates in 10 transactions, about 7% of them to paid
    expected = set()
    for _ in range(10):
        batch = []
        for _ in range(100):
            i = r.randint(1, 200)
            new = "paid" if r.random() < 0.08 else r.choice(["open", "shipped", "packed"])
            batch.append((new, i))
            old = state[i][0]
            state[i] = [new, state[i][1] + 1]
            if old != new and new == "paid":
                expected.add((i, state[i][1]))
        with conn.transaction():
            conn.cursor().executemany(f"UPDATE public.{tbl} SET status = %s, version = version + 1 "
                                      "WHERE id = %s", batch)
    not_paid = [i for i in state if state[i][0] != "paid"][:20]
    assert len(expected) >= 30 and len(not_paid) == 20

    # changes to paid that never commit: a rolled-back transaction, a rolled-back savepoint
    conn.execute("BEGIN")
    for i in not_paid[:10]:
        conn.execute(f"UPDATE public.{tbl} SET status = 'paid', version = version + 1 WHERE id = %s",
                     (i,))
    conn.execute("ROLLBACK")
    with conn.transaction():
        conn.execute(f"UPDATE public.{tbl} SET card = 'kept' WHERE id = %s", (not_paid[10],))
        try:
            with conn.transaction():
                for i in not_paid[10:]:
                    conn.execute(f"UPDATE public.{tbl} SET status = 'paid', version = version + 1 "
                                 "WHERE id = %s", (i,))
                raise RuntimeError("roll the savepoint back")
        except RuntimeError:
            pass

    assert conn.execute("SELECT ac_wait_sync('120s')").fetchone()[0] is True
    wait_processed(js, js.last_seq(), timeout=120)

    inserted = {start_arg(w)["event"]["payload"]["new"]["id"] for w in wait_count(ids["ins"], 20)}
    assert inserted == set(range(10, 201, 10))
    started = wait_count(ids["paid"], len(expected))
    seen = set()
    for w in started:
        event = start_arg(w)["event"]
        payload = event["payload"]
        assert payload["op"] == "update" and payload["table"] == f"public.{tbl}", payload
        assert payload["old"]["status"] != "paid" and payload["new"]["status"] == "paid", payload
        assert w.endswith(":" + event["event_id"])
        seen.add((payload["new"]["id"], payload["new"]["version"]))
    assert seen == expected


def dump_restore(conn, args, source_db, target_db):
    """pg_dump args of source_db, restored with psql into target_db."""
    env = dict(os.environ, PGDATABASE=source_db)
    dump = subprocess.run([f"{PGBIN}/pg_dump", "--no-owner", *args], env=env, check=True,
                          capture_output=True, text=True).stdout
    env["PGDATABASE"] = target_db
    subprocess.run([f"{PGBIN}/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1"], input=dump, env=env,
                   check=True, capture_output=True, text=True)


def test_watch_survives_pg_dump_and_restore(conn):
    """pg_dump -t of the table into a database with the extension, and a dump
    of a whole database into an empty one: the watch is there, with its event
    type (chosen before a rename) and columns, and it writes to the outbox."""
    t = token()
    src, dst1, dst2 = f"wsrc_{t}", f"wdst1_{t}", f"wdst2_{t}"
    for db in (src, dst1, dst2):
        conn.execute(f"CREATE DATABASE {db}")
    try:
        with psycopg.connect(dbname=src, autocommit=True) as s:
            s.execute("CREATE EXTENSION activity_core")
            s.execute("CREATE TABLE public.orders (id int, status text, card text)")
            s.execute("SELECT ac_watch('public.orders', 'shop.order', '{insert,update}', '{id,status}')")
            s.execute("ALTER TABLE public.orders RENAME TO orders2")
        with psycopg.connect(dbname=dst1, autocommit=True) as d:
            d.execute("CREATE EXTENSION activity_core")
        dump_restore(conn, ["-t", "public.orders2"], src, dst1)
        dump_restore(conn, [], src, dst2)
        for db in (dst1, dst2):
            with psycopg.connect(dbname=db) as d:
                w = d.execute("SELECT tbl::text, event_type, operations, columns FROM ac_watches").fetchall()
                assert w == [("orders2", "shop.order", ["insert", "update"], ["id", "status"])], (db, w)
                d.execute("INSERT INTO public.orders2 VALUES (1, 'open', '4111')")
                env = d.execute("SELECT subject, convert_from(data, 'UTF8')::jsonb -> 'payload' "
                                "FROM ac_outbox").fetchall()
                assert env == [("activity.shop.order",
                                {"op": "insert", "table": "public.orders2",
                                 "new": {"id": 1, "status": "open"}})], (db, env)
                d.rollback()
    finally:
        for db in (src, dst1, dst2):
            conn.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


def test_watch_cannot_be_steered_by_search_path_or_shadowing_objects(conn):
    """A table owner who controls search_path and plants a temporary
    ac_outbox and functions named like the extension's (which would make
    them superuser) watches a table: the trigger is the extension's, the
    row change reaches the extension's ac_outbox, nothing of theirs ran as
    the owner, and they still cannot attach ac_watch_trigger by hand."""
    t = token()
    role, schema = f"ac_w_evil_{t}", f"w_evil_{t}"
    conn.execute(f"CREATE ROLE {role} LOGIN")
    conn.execute(f"CREATE SCHEMA {schema} AUTHORIZATION {role}")
    conn.execute(f"GRANT EXECUTE ON FUNCTION ac_watch(regclass, text, text[], text[]) TO {role}")
    try:
        with psycopg.connect() as c:
            c.execute(f"SET ROLE {role}")
            c.execute(f"CREATE TABLE {schema}.orders (id int, status text)")
            evil = (f"CREATE FUNCTION {{s}}.{{f}} RETURNS trigger LANGUAGE plpgsql AS $$ "
                    f"BEGIN ALTER ROLE {role} SUPERUSER; RETURN NULL; END $$")
            c.execute(evil.format(s=schema, f="ac_watch_trigger()"))
            c.execute(evil.format(s="pg_temp", f="ac_watch_trigger()"))
            c.execute("CREATE TEMP TABLE ac_outbox (subject text, msg_id text, data bytea)")
            c.execute(f"SET search_path = pg_temp, {schema}, public")
            assert c.execute(f"SELECT public.ac_watch('{schema}.orders', 'evil.order')").fetchone()[0] \
                == "evil.order"
            c.execute(f"INSERT INTO {schema}.orders VALUES (1, 'open')")
            assert c.execute("SELECT count(*) FROM pg_temp.ac_outbox").fetchone()[0] == 0
            c.execute("RESET ROLE")
            got = c.execute("SELECT subject, convert_from(data, 'UTF8')::jsonb -> 'payload' "
                            "FROM public.ac_outbox WHERE subject = 'activity.evil.order'").fetchall()
            assert got == [("activity.evil.order", {"op": "insert", "table": f"{schema}.orders",
                                                    "new": {"id": 1, "status": "open"}})], got
            ours = c.execute(f"SELECT tgfoid = 'public.ac_watch_trigger()'::regprocedure FROM pg_trigger "
                             f"WHERE tgrelid = '{schema}.orders'::regclass").fetchall()
            assert ours == [(True,)], ours
            c.execute(f"SET ROLE {role}")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute(f"CREATE TRIGGER by_hand AFTER INSERT ON {schema}.orders "
                          "FOR EACH ROW EXECUTE FUNCTION public.ac_watch_trigger('x.y')")
            c.rollback()
        assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s",
                            (role,)).fetchone()[0] is False
    finally:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        conn.execute(f"REVOKE EXECUTE ON FUNCTION ac_watch(regclass, text, text[], text[]) FROM {role}")
        conn.execute(f"DROP ROLE IF EXISTS {role}")


def test_writers_need_no_right_on_the_extension_schema(conn):
    """With the extension in a schema the writing role may not even use, a
    row change of a watched table still reaches the outbox."""
    t = token()
    db, role = f"wpriv_{t}", f"ac_w_writer_{t}"
    conn.execute(f"CREATE DATABASE {db}")
    conn.execute(f"CREATE ROLE {role} LOGIN")
    try:
        with psycopg.connect(dbname=db, autocommit=True) as d:
            d.execute("CREATE SCHEMA ac")
            d.execute("CREATE EXTENSION activity_core SCHEMA ac")
            d.execute("CREATE TABLE public.orders (id int, status text)")
            d.execute("SELECT ac.ac_watch('public.orders')")
            d.execute(f"GRANT INSERT ON public.orders TO {role}")
        with psycopg.connect(dbname=db) as d:
            d.execute(f"SET ROLE {role}")
            assert d.execute("SELECT has_schema_privilege('ac', 'USAGE')").fetchone()[0] is False
            d.execute("INSERT INTO public.orders VALUES (1, 'open')")
            d.execute("RESET ROLE")
            got = d.execute("SELECT subject, convert_from(data, 'UTF8')::jsonb -> 'payload' -> 'new' "
                            "FROM ac.ac_outbox").fetchall()
            assert got == [("activity.row.public.orders", {"id": 1, "status": "open"})], got
            d.rollback()
    finally:
        conn.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        conn.execute(f"DROP ROLE IF EXISTS {role}")
