"""Without shared_preload_libraries the extension still works from SQL:
definitions are validated, ac_sync_schedules() applies them to Temporal, and
ac_health() says the workers are missing.  Runs a second throwaway cluster."""
import os
import shutil
import subprocess
import tempfile
import uuid

import psycopg
import pytest

from conftest import TEMPORAL_URL, temporal

# the same PostgreSQL as the stack's, on a port beside it
PGBIN = os.environ.get("AC_PGBIN", "/usr/lib/postgresql/15/bin")
PORT = int(os.environ.get("AC_NOPRELOAD_PORT", str(int(os.environ.get("PGPORT", "5498")) - 2)))


def as_postgres(*cmd):
    return subprocess.run(["runuser", "-u", "postgres", "--", *cmd], capture_output=True, text=True,
                          cwd="/", timeout=120)


@pytest.fixture
def bare_cluster():
    base = tempfile.mkdtemp(prefix="ac-nopreload-", dir="/var/tmp")
    shutil.chown(base, "postgres")
    data = os.path.join(base, "data")
    out = as_postgres(f"{PGBIN}/initdb", "-D", data, "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8")
    assert out.returncode == 0, out.stderr
    with open(os.path.join(data, "postgresql.conf"), "a") as f:
        f.write(f"port = {PORT}\nlisten_addresses = ''\nunix_socket_directories = '{base}'\n"
                f"activity_core.temporal_url = '{TEMPORAL_URL}'\n")
    out = as_postgres(f"{PGBIN}/pg_ctl", "-D", data, "-l", os.path.join(base, "log"), "-w", "start")
    assert out.returncode == 0, out.stderr
    try:
        yield base
    finally:
        as_postgres(f"{PGBIN}/pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(base, ignore_errors=True)


def test_sql_works_without_preload(bare_cluster):
    with psycopg.connect(host=bare_cluster, port=PORT, user="postgres", dbname="postgres", autocommit=True) as c:
        assert c.execute("SHOW shared_preload_libraries").fetchone()[0] == ""
        c.execute("CREATE EXTENSION activity_core")
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            c.execute("INSERT INTO ac_activity_definitions (name, trigger_type, trigger_config) "
                      "VALUES ('bad', 'cron', '{\"cron_expression\": \"61 * * * *\"}')")
        aid = c.execute("INSERT INTO ac_activity_definitions (name, trigger_type, trigger_config) "
                        "VALUES (%s, 'cron', '{\"cron_expression\": \"@hourly\"}') RETURNING id::text",
                        (f"np-{uuid.uuid4().hex[:6]}",)).fetchone()[0]
        sid = f"activity-schedule-{aid}"
        try:
            rows = c.execute("SELECT schedule_id, action FROM ac_sync_schedules()").fetchall()
            assert (sid, "created") in rows, rows
            status, body = temporal("GET", f"/schedules/{sid}")
            assert status == 200, body
            health = {r[0]: (r[1], r[2], r[3]) for r in c.execute("SELECT * FROM ac_health()").fetchall()}
            assert health["temporal_reachable"][0] is True
            assert health["dispatcher_running"] == (
                False, "not running: activity_core is not in shared_preload_libraries",
                "Add activity_core to shared_preload_libraries and restart PostgreSQL.")
        finally:
            temporal("DELETE", f"/schedules/{sid}")
