"""Security end to end: the documented grants work for an application, an
operator and a read-only role; no SECURITY DEFINER function can be steered
by a caller's search_path or shadowing temporary objects into running the
caller's code as the extension's owner; secrets never reach the log."""
import os
import re
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from conftest import connect, create_roles, drop_roles, log_offset, log_since, poll, temporal, unique


def as_role(role):
    """A fresh autocommit connection acting as role."""
    c = psycopg.connect(autocommit=True)
    c.execute(f"SET ROLE {role}")
    return c


def denied(c, sql, params=None):
    """True when sql fails with insufficient_privilege."""
    try:
        c.execute(sql, params)
    except psycopg.errors.InsufficientPrivilege:
        return True
    return False


@pytest.fixture
def roles(conn):
    """Roles app, ops and viewer (suffixed), granted exactly what the docs say."""
    names = create_roles(conn, uuid.uuid4().hex[:6])
    yield names
    drop_roles(conn, names)


def test_documented_grants_let_each_role_do_its_job_and_no_more(conn, roles):
    """The app writes definitions, triggers, publishes and waits; the operator
    reconciles, inspects and sees health; the viewer reads; none can do the
    others' work."""
    app, ops, viewer = (as_role(roles[r]) for r in ("app", "ops", "viewer"))
    try:
        name = unique("sec-app")
        aid = str(app.execute(
            "INSERT INTO ac_activity_definitions (name, trigger_type) VALUES (%s, 'manual') "
            "RETURNING id", (name,)).fetchone()[0])
        cron = str(app.execute(
            "INSERT INTO ac_activity_definitions (name, trigger_type, trigger_config) "
            "VALUES (%s, 'cron', '{\"cron_expression\": \"@daily\"}') RETURNING id",
            (unique("sec-app-cron"),)).fetchone()[0])
        wf = app.execute("SELECT ac_trigger(%s, '{\"n\": 1}', 'sec-grants')", (aid,)).fetchone()[0]
        app.execute("SELECT ac_publish('sec.grants', '{}', %s)", (unique("ev"),))
        assert app.execute("SELECT ac_wait_sync('30s')").fetchone()[0] is True
        assert app.execute("SELECT pending FROM ac_sync_status WHERE activity_id = %s",
                           (cron,)).fetchone()[0] is False
        status, body = temporal("GET", f"/workflows/{wf}")
        assert status == 200, body
        status, body = temporal("GET", f"/schedules/activity-schedule-{cron}")
        assert status == 200, body
        app.execute("UPDATE ac_activity_definitions SET enabled = false WHERE id = %s", (cron,))
        for sql in ("SELECT * FROM ac_sync_schedules()", "SELECT * FROM ac_health()",
                    "SELECT * FROM ac_dead_letters", "SELECT * FROM ac_stats",
                    "SELECT ac_replay_dead_letter(1)", "SELECT * FROM ac_outbox"):
            assert denied(app, sql), f"app may run: {sql}"

        ops.execute("SELECT * FROM ac_sync_schedules()").fetchall()

        def paused():
            live = {r[0]: r[1] for r in ops.execute("SELECT schedule_id, paused FROM ac_schedules()")}
            assert live.get("activity-schedule-" + cron) is True, live
        poll(paused, 15)
        health = {r[0]: r[1] for r in ops.execute("SELECT \"check\", ok FROM ac_health()")}
        assert health["temporal_reachable"] is True
        ops.execute("SELECT count(*) FROM ac_dead_letters").fetchone()
        ops.execute("SELECT * FROM ac_stats").fetchall()
        ops.execute("SELECT count(*) FROM ac_outbox WHERE error_permanent").fetchone()
        runs = poll(lambda: _runs(ops, aid), 15)
        assert [r[0] for r in runs] == [wf], runs
        for sql in ("INSERT INTO ac_activity_definitions (name, trigger_type) VALUES ('x', 'manual')",
                    "SELECT ac_publish('sec.ops', '{}')", f"SELECT ac_trigger('{aid}')"):
            assert denied(ops, sql), f"ops may run: {sql}"

        assert viewer.execute("SELECT count(*) FROM ac_activity_definitions WHERE id = %s",
                              (aid,)).fetchone()[0] == 1
        viewer.execute("SELECT * FROM ac_sync_status").fetchall()
        assert viewer.execute("SELECT count(*) FROM ac_stats").fetchone()[0] > 0
        assert viewer.execute("SELECT count(*) FROM ac_health()").fetchone()[0] > 5
        viewer.execute("SELECT * FROM ac_schedules()").fetchall()
        for sql in ("SELECT * FROM ac_sync_schedules()", "SELECT ac_publish('sec.viewer', '{}')",
                    f"SELECT ac_trigger('{aid}')", "SELECT ac_wait_sync('1s')",
                    "SELECT * FROM ac_dead_letters", f"DELETE FROM ac_activity_definitions WHERE id = '{aid}'",
                    "SELECT ac_replay_dead_letter(1)", "SHOW activity_core.temporal_api_key",
                    "SHOW activity_core.nats_url"):
            assert denied(viewer, sql), f"viewer may run: {sql}"
    finally:
        for c in (app, ops, viewer):
            c.close()
        conn.execute("DELETE FROM ac_activity_definitions WHERE name LIKE 'sec-app%'")


def _runs(c, aid):
    rows = c.execute("SELECT workflow_id, status FROM ac_runs(%s)", (aid,)).fetchall()
    assert rows, "no run visible yet"
    return rows


# The attack of 0.1.0: shadow the extension's tables with temporary ones that
# carry a trigger, get a SECURITY DEFINER function to write into them, and let
# the trigger run as the owner.  ESCALATE is that trigger's body.
SHADOWS = ("ac_activity_definitions", "ac_schedule_intents", "ac_schedule_sync", "ac_outbox",
           "ac_start_outbox", "ac_dead_letters", "ac_sync_status")
ESCALATE = """
CREATE FUNCTION pg_temp.escalate() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
	EXECUTE format('ALTER ROLE %I SUPERUSER', session_user);
	INSERT INTO pg_temp.hits VALUES (TG_TABLE_NAME, current_user);
	RETURN NULL;
END $f$;
CREATE TEMP TABLE hits (tbl text, ran_as text);
CREATE TEMP SEQUENCE ac_revision_seq;
"""


def plant_shadows(c):
    """Temporary tables named like the extension's, each with an escalating trigger."""
    c.execute(ESCALATE)
    for t in SHADOWS:
        c.execute(f"CREATE TEMP TABLE {t} (id bigint, activity_id uuid, revision bigint, "
                  "changed_at timestamptz, origin text, subject text, msg_id text, data bytea, "
                  "workflow_id text, workflow_type text, task_queue text, argument text, "
                  "name text, enabled boolean, trigger_type text, trigger_config jsonb, "
                  "input jsonb, last_error text, error_permanent boolean, raw bytea, "
                  "event_id text, reason text, replayed_at timestamptz, created_at timestamptz)")
        c.execute(f"CREATE TRIGGER escalate BEFORE INSERT OR UPDATE OR DELETE ON pg_temp.{t} "
                  "FOR EACH ROW EXECUTE FUNCTION pg_temp.escalate()")
        c.execute(f"CREATE TRIGGER escalate_s BEFORE TRUNCATE ON pg_temp.{t} "
                  "FOR EACH STATEMENT EXECUTE FUNCTION pg_temp.escalate()")
    c.execute("SET search_path = pg_temp, public")


def drop_role(conn, role):
    """Drop role once the sessions that acted as it have cleaned up their temporary objects."""
    def once():
        try:
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")
        except psycopg.errors.DependentObjectsStillExist as err:
            raise AssertionError(str(err))
    poll(once, 15)


def is_superuser(conn, role):
    return conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (role,)).fetchone()[0]


def test_a_role_without_grants_cannot_hijack_the_definer_trigger(conn):
    """The 0.1.0 attack: attach ac_definitions_changed to one's own temporary
    table, with shadowing intents table and sequence; now CREATE TRIGGER is
    refused and nothing runs as the owner."""
    role = f"ac_attacker_{uuid.uuid4().hex[:6]}"
    conn.execute(f"CREATE ROLE {role} LOGIN")
    try:
        with as_role(role) as c:
            plant_shadows(c)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute("CREATE TRIGGER hijack AFTER INSERT ON pg_temp.ac_activity_definitions "
                          "FOR EACH ROW EXECUTE FUNCTION public.ac_definitions_changed()")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute("CREATE TRIGGER hijack BEFORE INSERT ON pg_temp.ac_activity_definitions "
                          "FOR EACH ROW EXECUTE FUNCTION public.ac_definitions_validate()")
            c.execute("DISCARD TEMP")
        assert not is_superuser(conn, role)
    finally:
        drop_role(conn, role)


def test_no_definer_function_runs_a_callers_shadow_objects(conn):
    """Worst case: a role granted every SECURITY DEFINER function and the
    trigger functions themselves, with search_path = pg_temp first and a
    shadowing temporary table with an escalating trigger for every table name
    the extension uses.  Calling each function, writing definitions, and even
    attaching the definer trigger to its own shadow table run nothing as the
    owner, and every write lands in the extension's real tables."""
    role = f"ac_attacker_{uuid.uuid4().hex[:6]}"
    conn.execute(f"CREATE ROLE {role} LOGIN")
    definers = [r[0] for r in conn.execute(
        "SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid "
        "AND d.classid = 'pg_proc'::regclass AND d.deptype = 'e' JOIN pg_extension e "
        "ON e.oid = d.refobjid AND e.extname = 'activity_core' WHERE p.prosecdef").fetchall()]
    assert {"ac_definitions_changed()", "ac_trigger(uuid,jsonb,text)", "ac_publish(text,jsonb,text)",
            "ac_wait_sync(interval)", "ac_sync_schedules()", "ac_health()"} <= set(definers), definers
    for f in definers + ["ac_definitions_validate()"]:
        conn.execute(f"GRANT EXECUTE ON FUNCTION {f} TO {role}")
    conn.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ac_activity_definitions TO {role}")
    event_id = unique("shadow")
    calls = {
        "ac_publish(text,jsonb,text)": f"SELECT ac_publish('sec.shadow', '{{}}', '{event_id}')",
        "ac_trigger(uuid,jsonb,text)": "SELECT ac_trigger(%(aid)s, NULL, 'shadow')",
        "ac_wait_sync(interval)": "SELECT ac_wait_sync('20s') AS settled",
        "ac_replay_dead_letter(bigint)": "SELECT ac_replay_dead_letter(-1)",
        "ac_health()": "SELECT * FROM ac_health()",
        "ac_sync_schedules()": "SELECT * FROM ac_sync_schedules()",
        "ac_schedules()": "SELECT * FROM ac_schedules()",
    }
    try:
        with as_role(role) as c:
            plant_shadows(c)
            aid = str(c.execute(
                "INSERT INTO public.ac_activity_definitions (name, trigger_type) VALUES (%s, 'manual') "
                "RETURNING id", (unique("sec-shadow"),)).fetchone()[0])
            cron = str(c.execute(
                "INSERT INTO public.ac_activity_definitions (name, trigger_type, trigger_config) "
                "VALUES (%s, 'cron', '{\"cron_expression\": \"@daily\"}') RETURNING id",
                (unique("sec-shadow-cron"),)).fetchone()[0])
            c.execute("UPDATE public.ac_activity_definitions SET enabled = false WHERE id = %s", (cron,))
            for f in definers:
                if f in ("ac_definitions_changed()",):
                    continue
                assert f in calls, f"no attack call for SECURITY DEFINER function {f}"
                try:
                    cur = c.execute(calls[f], {"aid": aid})
                    if "settled" in calls[f]:
                        assert cur.fetchone()[0] is True, "ac_wait_sync did not see the real outboxes drain"
                except psycopg.errors.NoDataFound:
                    pass          # ac_replay_dead_letter(-1): no such dead letter
            # attaching the definer trigger to a shadow table fails at the first row
            c.execute("CREATE TRIGGER hijack AFTER INSERT ON pg_temp.ac_activity_definitions "
                      "FOR EACH ROW EXECUTE FUNCTION public.ac_definitions_changed()")
            c.execute("DROP TRIGGER escalate ON pg_temp.ac_activity_definitions")
            with pytest.raises(psycopg.errors.TriggerProtocolViolated):
                c.execute("INSERT INTO pg_temp.ac_activity_definitions (name, trigger_type, trigger_config) "
                          "VALUES ('x', 'cron', '{\"cron_expression\": \"@daily\"}')")
            hits = c.execute("SELECT * FROM pg_temp.hits").fetchall()
            assert hits == [], f"shadow objects were used: {hits}"
            c.execute("DELETE FROM public.ac_activity_definitions WHERE id IN (%s, %s)", (aid, cron))
            c.execute("DISCARD TEMP")
        assert not is_superuser(conn, role)
        # the start went through the real outbox to Temporal
        status, body = temporal("GET", f"/workflows/activity-{aid}:shadow")
        assert status == 200, body
    finally:
        drop_role(conn, role)


def write_secret(path, value):
    """A secret file readable by the server's account only."""
    Path(path).write_text(value + "\n")
    os.chmod(path, 0o600)
    if os.geteuid() == 0:
        import pwd
        pw = pwd.getpwnam("postgres")
        os.chown(path, pw.pw_uid, pw.pw_gid)


def reload_and_wait(conn, offset, setting):
    """pg_reload_conf() and wait until the postmaster logged the change of setting."""
    conn.execute("SELECT pg_reload_conf()")
    poll(lambda: _logged(offset, setting), 15)


def _logged(offset, setting):
    assert f'parameter "{setting}"' in log_since(offset), f"no reload line for {setting} yet"


def test_secrets_never_reach_the_log_views_or_health(conn, roles, tmp_path):
    """Inline secrets and secret files, changed by reloads: the key and the NATS
    password appear in no log line, no setting a non-superuser can read, and no
    ac_health() detail; runs still start with the key read from its file."""
    inline_key = f"sk-inline-{uuid.uuid4().hex}"
    file_key = f"sk-file-{uuid.uuid4().hex}"
    nats_pw = f"pw-{uuid.uuid4().hex}"
    file_pw = f"pw-file-{uuid.uuid4().hex}"
    secrets = (inline_key, file_key, nats_pw, file_pw)
    nats_url = conn.execute("SHOW activity_core.nats_url").fetchone()[0]
    keydir = Path("/var/tmp/activity_core-secrets-" + uuid.uuid4().hex[:8])
    keydir.mkdir(mode=0o755)
    key_file, pw_file = keydir / "temporal.key", keydir / "nats.pw"
    write_secret(key_file, file_key)
    write_secret(pw_file, file_pw)
    offset = log_offset()
    try:
        conn.execute("ALTER SYSTEM SET activity_core.temporal_api_key = %s" % _lit(inline_key))
        conn.execute("ALTER SYSTEM SET activity_core.nats_url = %s"
                     % _lit(nats_url.replace("nats://", f"nats://u:{nats_pw}@")))
        reload_and_wait(conn, offset, "activity_core.nats_url")
        conn.execute("ALTER SYSTEM SET activity_core.temporal_api_key_file = %s" % _lit(str(key_file)))
        conn.execute("ALTER SYSTEM SET activity_core.nats_user = 'u'")
        conn.execute("ALTER SYSTEM SET activity_core.nats_password_file = %s" % _lit(str(pw_file)))
        reload_and_wait(conn, offset, "activity_core.temporal_api_key_file")

        # the key is read from its file and requests go through
        c = connect()
        try:
            assert c.execute("SHOW activity_core.temporal_api_key_file").fetchone()[0] == str(key_file)
            aid = str(c.execute("INSERT INTO ac_activity_definitions (name, trigger_type) "
                                "VALUES (%s, 'manual') RETURNING id", (unique("sec-key"),)).fetchone()[0])
            wf = c.execute("SELECT ac_trigger(%s, NULL, 'keyed')", (aid,)).fetchone()[0]
            assert c.execute("SELECT ac_wait_sync('30s')").fetchone()[0] is True
            status, body = temporal("GET", f"/workflows/{wf}")
            assert status == 200, body
            health = c.execute("SELECT * FROM ac_health()").fetchall()
            router = [r for r in health if r[0] == "nats_router"][0]
            assert "u:***@" not in router[2] and "***@" in router[2], router
            c.execute("DELETE FROM ac_activity_definitions WHERE id = %s", (aid,))
        finally:
            c.close()
        with as_role(roles["viewer"]) as v:
            visible = v.execute("SELECT name, setting FROM pg_settings "
                                "WHERE name LIKE 'activity_core.%%'").fetchall()
        health_text = repr(health)
        log = log_since(offset)
        assert "(value not shown: it may hold a secret)" in log
        for s in secrets:
            assert s not in log, f"a secret is in the server log: {s}"
            assert s not in repr(visible), f"a secret is visible in pg_settings: {s}"
            assert s not in health_text, f"a secret is in ac_health(): {s}"

        # an unreadable key file fails the requests clearly, naming the path only
        conn.execute("ALTER SYSTEM SET activity_core.temporal_api_key_file = %s"
                     % _lit(str(keydir / "missing.key")))
        reload_and_wait(conn, log_offset(), "activity_core.temporal_api_key_file")
        c = connect()
        try:
            row = [r for r in c.execute("SELECT * FROM ac_health()") if r[0] == "temporal_reachable"][0]
            assert row[1] is False and "could not read activity_core.temporal_api_key_file" in row[2], row
            assert str(keydir / "missing.key") in row[2] and row[3], row
        finally:
            c.close()
    finally:
        for s in ("temporal_api_key", "temporal_api_key_file", "nats_url", "nats_user",
                  "nats_password_file"):
            conn.execute(f"ALTER SYSTEM RESET activity_core.{s}")
        conn.execute("SELECT pg_reload_conf()")
        for f in keydir.iterdir():
            f.unlink()
        keydir.rmdir()
        time.sleep(0.5)


def _lit(value):
    return "'" + value.replace("'", "''") + "'"
