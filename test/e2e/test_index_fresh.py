"""The router's in-memory index of event definitions follows every committed
change to ac_activity_definitions, also those no row trigger of this backend
sees: TRUNCATE, COMMIT PREPARED from another session, and changes made with
the triggers disabled (the periodic refresh).  Each check goes through real
NATS and Temporal: an event is published to JetStream and the workflow is
looked up in Temporal; a workflow that must not exist is checked once the
router processed a later message (the consumer's ack floor), never after a
fixed sleep."""
import uuid

import psycopg
import pytest

from conftest import log_offset, log_since, poll, grant_roles, token, wid
from test_events import (Definitions, assert_no_workflow, describe_wf, envelope,
                         js, publish_env, wait_processed, wait_workflow)  # noqa: F401 (js: fixture)


@pytest.fixture
def defs(app):
    d = Definitions(app)
    yield d
    d.cleanup()


def publish(js, etype, payload=None):
    """Publish an event of etype; return (event id, stream sequence)."""
    env = envelope(etype, payload or {})
    return env["event_id"], publish_env(js, env)


def settle(js, seq, started, not_started):
    """Once message seq is processed: these workflows exist, those do not."""
    wait_processed(js, seq)
    for w in started:
        wait_workflow(w)
    for w in not_started:
        assert_no_workflow(w)


def test_truncate_reaches_the_router_index(conn, js, defs):
    etype = f"t{token()}.truncate"
    a = defs.add(etype, {})
    e1, seq = publish(js, etype)
    settle(js, seq, [wid(a, e1)], [])

    # TRUNCATE fires no row trigger; the rows that are not event definitions
    # are put back in the same transaction
    with conn.transaction():
        conn.execute("CREATE TEMP TABLE ac_keep ON COMMIT DROP AS "
                     "SELECT * FROM ac_activity_definitions WHERE trigger_type <> 'event'")
        conn.execute("TRUNCATE ac_activity_definitions")
        conn.execute("INSERT INTO ac_activity_definitions SELECT * FROM ac_keep")
    e2, seq = publish(js, etype)
    settle(js, seq, [], [wid(a, e2)])


def test_commit_prepared_reaches_the_router_index(conn, js, defs):
    etype = f"t{token()}.prepared"
    a = defs.add(etype, {})
    e1, seq = publish(js, etype)
    settle(js, seq, [wid(a, e1)], [])

    # prepared in one session, committed from another
    gid = f"ac-test-{uuid.uuid4().hex[:8]}"
    b_id = str(uuid.uuid4())
    with psycopg.connect(autocommit=True) as c1:
        c1.execute("BEGIN")
        c1.execute("INSERT INTO ac_activity_definitions (id, name, trigger_type, trigger_config) "
                   "VALUES (%s, %s, 'event', jsonb_build_object('event_type', %s::text))",
                   (b_id, f"prepared-{b_id[:8]}", etype))
        c1.execute("DELETE FROM ac_activity_definitions WHERE id = %s", (a,))
        c1.execute(f"PREPARE TRANSACTION '{gid}'")
    defs.ids.append(b_id)
    with psycopg.connect(autocommit=True) as c2:
        c2.execute(f"COMMIT PREPARED '{gid}'")
    e2, seq = publish(js, etype)
    settle(js, seq, [wid(b_id, e2)], [wid(a, e2)])


@pytest.fixture
def refresh_interval(conn):
    """Set activity_core.router_refresh_interval for the test, restored after it."""
    def set_(value):
        conn.execute(f"ALTER SYSTEM SET activity_core.router_refresh_interval = '{value}'")
        conn.execute("SELECT pg_reload_conf()")
    yield set_
    conn.execute("ALTER SYSTEM RESET activity_core.router_refresh_interval")
    conn.execute("SELECT pg_reload_conf()")


def test_change_with_triggers_disabled_reaches_the_router_by_refresh(conn, js, defs,
                                                                     refresh_interval):
    etype = f"t{token()}.disabled"
    a = defs.add(etype, {})
    e1, seq = publish(js, etype)
    settle(js, seq, [wid(a, e1)], [])

    refresh_interval("1s")
    conn.execute("ALTER TABLE ac_activity_definitions DISABLE TRIGGER USER")
    try:
        # no trigger fires for these: only the periodic rebuild sees them
        b = defs.add(etype, {})
        conn.execute("DELETE FROM ac_activity_definitions WHERE id = %s", (a,))

        def b_matches():
            e, s = publish(js, etype)
            wait_processed(js, s)
            status, _ = describe_wf(wid(b, e))
            assert status == 200, f"{wid(b, e)} not started yet"
            return e
        e2 = poll(b_matches, timeout=30, interval=0.3)
        assert_no_workflow(wid(a, e2))
    finally:
        conn.execute("ALTER TABLE ac_activity_definitions ENABLE TRIGGER USER")


def test_invalidate_trigger_refuses_other_tables_and_row_level(conn):
    with conn.transaction():
        conn.execute("CREATE TEMP TABLE ac_other (x int)")
        conn.execute("CREATE TRIGGER t AFTER INSERT ON ac_other FOR EACH STATEMENT "
                     "EXECUTE FUNCTION ac_definitions_invalidate()")
        with pytest.raises(psycopg.errors.TriggerProtocolViolated,
                           match="only on the extension's ac_activity_definitions"):
            with conn.transaction():
                conn.execute("INSERT INTO ac_other VALUES (1)")
        conn.execute("CREATE TRIGGER r AFTER INSERT ON ac_other FOR EACH ROW "
                     "EXECUTE FUNCTION ac_definitions_invalidate()")
        with pytest.raises(psycopg.errors.TriggerProtocolViolated,
                           match="must be an AFTER statement trigger"):
            with conn.transaction():
                conn.execute("INSERT INTO ac_other VALUES (1)")
        conn.execute("DROP TABLE ac_other")
    # no EXECUTE grant is needed to fire it, and none is given
    assert conn.execute("SELECT has_function_privilege('public', 'ac_definitions_invalidate()', "
                        "'EXECUTE')").fetchone()[0] is False


def test_router_follows_the_extension_into_another_schema(conn, js, role_names):
    """Dropped and created again in another schema, the extension's events are
    routed again (the router looks its schema up afresh after a failure), and
    the router holds one index, not one leaked per failed rebuild."""
    other = f"ac_moved_{token()}"
    etype = f"t{token()}.moved"
    try:
        with psycopg.connect(autocommit=True) as c:
            c.execute("SET client_min_messages = warning")
            c.execute("DROP EXTENSION activity_core CASCADE")
            c.execute(f"CREATE SCHEMA {other}")
            c.execute(f"CREATE EXTENSION activity_core SCHEMA {other}")
            aid = c.execute(f"INSERT INTO {other}.ac_activity_definitions (name, trigger_type, "
                            "trigger_config) VALUES (%s, 'event', jsonb_build_object('event_type', "
                            "%s::text)) RETURNING id::text", (f"moved-{etype}", etype)).fetchone()[0]

            def routed():
                e, s = publish(js, etype)
                wait_processed(js, s)
                status, _ = describe_wf(wid(aid, e))
                assert status == 200, f"{wid(aid, e)} not started yet"
            poll(routed, timeout=30, interval=0.3)

            pid = c.execute("SELECT pid FROM pg_stat_activity "
                            "WHERE backend_type = 'activity_core router'").fetchone()[0]
            offset = log_offset()
            c.execute("SELECT pg_log_backend_memory_contexts(%s)", (pid,))

            def contexts():
                log = log_since(offset)
                assert "Grand total" in log, "memory contexts not logged yet"
                return log.count("activity_core event index:")
            assert poll(contexts, timeout=10) == 1, log_since(offset)[-3000:]
    finally:
        with psycopg.connect(autocommit=True) as c:
            c.execute("SET client_min_messages = warning")
            c.execute("DROP EXTENSION IF EXISTS activity_core CASCADE")
            c.execute(f"DROP SCHEMA IF EXISTS {other} CASCADE")
            c.execute("CREATE EXTENSION activity_core SCHEMA public")
            grant_roles(c, role_names)
