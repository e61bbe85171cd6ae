"""TRUNCATE of the definitions table deletes the schedules of every cron
definition, as a DELETE of each row would (0.1.0 left them running).

It empties the whole table, so it runs in a module of its own, after the
suites that keep definitions across their tests."""
from conftest import described, poll, schedule_gone, unique


def test_truncate_deletes_every_cron_schedule(conn):
    ids = []
    for i in range(3):
        ids.append(str(conn.execute(
            "INSERT INTO ac_activity_definitions (name, trigger_type, trigger_config) "
            "VALUES (%s, 'cron', %s) RETURNING id",
            (unique(f"trunc-{i}"), '{"cron_expression": "0 %d * * *"}' % (i + 1))).fetchone()[0]))
    assert conn.execute("SELECT ac_wait_sync('30s')").fetchone()[0] is True
    for aid in ids:
        described(aid)

    conn.execute("TRUNCATE ac_activity_definitions")
    assert conn.execute("SELECT ac_wait_sync('30s')").fetchone()[0] is True
    for aid in ids:
        schedule_gone(aid)

    def settled():
        rows = conn.execute("SELECT activity_id, pending, deleted FROM ac_sync_status "
                            "WHERE activity_id = ANY(%s::uuid[])", (ids,)).fetchall()
        assert all(not pending and deleted for _, pending, deleted in rows), rows
    poll(settled, 15)
