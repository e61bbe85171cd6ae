"""One bad row never blocks the others: the dispatcher's drains (schedule
sync, on-demand starts, event publishes) each recover on their own, and a
row that cannot be processed becomes a permanent failure of that row while
the rest flows.  Every outcome is read back from the real services:
schedules and workflows from Temporal's HTTP API, events through NATS and
the router."""
import json
import uuid

import pytest

from conftest import described, insert_definition, poll, unique
from test_events import wait_workflow


class Rows:
    """Definitions made by a test, deleted when it ends."""

    def __init__(self, conn):
        self.conn = conn
        self.ids = []

    def add(self, trigger_type, config, validated=True, **cols):
        c = self.conn
        values = dict(name=unique(f"iso-{trigger_type}"), trigger_type=trigger_type,
                      trigger_config=json.dumps(config), **cols)
        if validated:
            aid = insert_definition(c, values)
        else:
            # as an administrator could: written past the validation trigger
            with c.transaction():
                c.execute("ALTER TABLE ac_activity_definitions DISABLE TRIGGER ac_definitions_validate")
                aid = insert_definition(c, values)
                c.execute("ALTER TABLE ac_activity_definitions ENABLE TRIGGER ac_definitions_validate")
        self.ids.append(aid)
        return aid

    def cleanup(self):
        if self.ids:
            self.conn.execute("DELETE FROM ac_activity_definitions WHERE id = ANY(%s::uuid[])",
                              (self.ids,))


@pytest.fixture
def rows(conn):
    r = Rows(conn)
    yield r
    r.cleanup()


def sync_status(conn, aid):
    return conn.execute("SELECT last_error, error_kind, pending FROM ac_sync_status "
                        "WHERE activity_id = %s", (aid,)).fetchone()


def test_unparseable_intent_fails_alone_while_starts_and_publishes_flow(conn, app, rows):
    # a cron row the dispatcher cannot read: max_catchup_runs is not an integer
    bad = rows.add("cron", {"cron_expression": "0 3 * * *", "misfire_policy": "catchup",
                            "max_catchup_runs": "many"}, validated=False)
    good = rows.add("cron", {"cron_expression": "0 4 * * *"})
    manual = rows.add("manual", {})
    run = uuid.uuid4().hex[:10]
    event = rows.add("event", {"event_type": f"iso.{run}"})

    # the bad row is a permanent failure of its own, visible in ac_sync_status
    def bad_failed():
        last_error, kind, _ = sync_status(conn, bad)
        assert kind == "permanent", (last_error, kind)
        assert "max_catchup_runs" in last_error, last_error
    poll(bad_failed, timeout=30)

    # the rest flows: schedules, on-demand starts and event publishes
    described(good, timeout=30)
    wid = app.execute("SELECT ac_trigger(%s, NULL, %s)", (manual, f"k-{run}")).fetchone()[0]
    wait_workflow(wid)
    eid = app.execute("SELECT ac_publish(%s, '{}'::jsonb)", (f"iso.{run}",)).fetchone()[0]
    wait_workflow(f"activity-{event}:{eid}")
    # still failed, and not retried: a permanent failure waits for a change
    last_error, kind, pending = sync_status(conn, bad)
    assert kind == "permanent" and pending, (last_error, kind, pending)



def test_outbox_rows_nats_refuses_are_permanent_and_the_rest_flows(conn, app, rows):
    run = uuid.uuid4().hex[:10]
    event = rows.add("event", {"event_type": f"iso.{run}"})
    # rows ac_publish would not write, as the extension's owner could: a subject
    # longer than the server's control line, and a message over its max_payload
    long_subject = f"activity.iso.{run}." + "x" * 5000
    ids = [r[0] for r in conn.execute(
        "INSERT INTO ac_outbox (subject, msg_id, data) VALUES "
        "(%s, %s, convert_to('{}', 'UTF8')), "
        "(%s, %s, convert_to(repeat('a', 1048576), 'UTF8')) RETURNING id",
        (long_subject, f"long-{run}", f"activity.iso.{run}", f"big-{run}")).fetchall()]
    try:
        eid = app.execute("SELECT ac_publish(%s, '{}'::jsonb)", (f"iso.{run}",)).fetchone()[0]
        wait_workflow(f"activity-{event}:{eid}")

        def refused():
            got = dict((r[0], r[1:]) for r in conn.execute(
                "SELECT id, error_permanent, last_error, next_attempt_at FROM ac_outbox "
                "WHERE id = ANY(%s)", (ids,)).fetchall())
            assert set(got) == set(ids), got
            for i in ids:
                assert got[i][0] and got[i][2] is None, got[i]
            assert "control line" in got[ids[0]][1].lower(), got[ids[0]]
            assert "max_payload" in got[ids[1]][1], got[ids[1]]
        poll(refused, timeout=30)

        # refused rows are skipped: later events keep flowing
        eid2 = app.execute("SELECT ac_publish(%s, '{}'::jsonb)", (f"iso.{run}",)).fetchone()[0]
        wait_workflow(f"activity-{event}:{eid2}")
        attempts = conn.execute("SELECT array_agg(attempts ORDER BY id) FROM ac_outbox "
                                "WHERE id = ANY(%s)", (ids,)).fetchone()[0]
        assert attempts == [1, 1], attempts
    finally:
        conn.execute("DELETE FROM ac_outbox WHERE id = ANY(%s)", (ids,))


def test_worker_transactions_reach_table_statistics(conn):
    """The dispatcher reports its transactions' statistics: the outbox rows it
    deletes once published show up in pg_stat_user_tables."""
    def deleted():
        return conn.execute("SELECT coalesce(n_tup_del, 0) FROM pg_stat_user_tables "
                            "WHERE relname = 'ac_outbox'").fetchone()[0]
    before = deleted()
    for _ in range(3):
        conn.execute("SELECT ac_publish(%s, '{}'::jsonb)", (f"stats.{uuid.uuid4().hex[:8]}",))

    def drained():
        left = conn.execute("SELECT count(*) FROM ac_outbox WHERE NOT error_permanent").fetchone()[0]
        assert left == 0, f"{left} outbox rows not published yet"
    poll(drained, timeout=30)

    def reported():
        assert deleted() >= before + 3, (before, deleted())
    poll(reported, timeout=15)
