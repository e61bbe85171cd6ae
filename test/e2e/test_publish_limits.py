"""ac_publish() refuses at the call an event the NATS server would refuse:
the dispatcher reads the server's max_payload when it connects, and an
envelope that fits activity_core.max_event_size but not max_payload (with
its headers) is refused with both figures named, instead of failing for
good in the outbox after the commit."""
import psycopg
import pytest

from conftest import poll, unique


def test_publish_over_the_servers_max_payload_is_refused_at_the_call(conn, app):
    conn.execute("ALTER SYSTEM SET activity_core.max_event_size = '8MB'")
    conn.execute("SELECT pg_reload_conf()")
    try:
        # once the dispatcher has published, the server's max_payload is known
        app.execute("SELECT ac_publish('limits.probe', '{}', %s)", (unique("probe"),))
        assert app.execute("SELECT ac_wait_sync('30s')").fetchone()[0] is True

        def refused():
            with pytest.raises(psycopg.errors.ProgramLimitExceeded) as err:
                app.execute("SELECT ac_publish('limits.big', jsonb_build_object('blob', repeat('x', 1100000)))")
            return str(err.value)
        msg = poll(lambda: _assert_reload(app) or refused(), 15)
        assert "over the NATS server's max_payload of 1048576 bytes" in msg, msg
        # a payload under it still goes through
        app.execute("SELECT ac_publish('limits.big', jsonb_build_object('blob', repeat('x', 900000)), %s)",
                    (unique("under"),))
        assert app.execute("SELECT ac_wait_sync('30s')").fetchone()[0] is True
        assert conn.execute("SELECT count(*) FROM ac_outbox WHERE subject = 'activity.limits.big'"
                            ).fetchone()[0] == 0
    finally:
        conn.execute("ALTER SYSTEM RESET activity_core.max_event_size")
        conn.execute("SELECT pg_reload_conf()")


def _assert_reload(conn):
    assert conn.execute("SHOW activity_core.max_event_size").fetchone()[0] == "8MB"
