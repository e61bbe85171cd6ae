"""Upgrades: an extension installed at 0.1.0 and updated with ALTER EXTENSION
ends with exactly the catalog of a fresh install of the current version, and
keeps its definitions and queued work."""
import uuid

import psycopg
import pytest

# Everything an extension's objects carry that a user or the code relies on.
CATALOG = """
WITH members AS (
	SELECT d.classid, d.objid FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
	WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e' AND e.extname = 'activity_core')
SELECT 'member ' || pg_describe_object(classid, objid, 0) FROM members
UNION ALL
SELECT 'function ' || p.oid::regprocedure || ' ' || pg_get_functiondef(p.oid)
	|| ' acl=' || coalesce(p.proacl::text, '') || ' comment=' || coalesce(obj_description(p.oid, 'pg_proc'), '')
FROM members m JOIN pg_proc p ON m.classid = 'pg_proc'::regclass AND p.oid = m.objid
UNION ALL
SELECT 'column ' || c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
	|| ' notnull=' || a.attnotnull || ' default=' || coalesce(pg_get_expr(ad.adbin, ad.adrelid), '')
	|| ' position=' || a.attnum
FROM members m JOIN pg_class c ON m.classid = 'pg_class'::regclass AND c.oid = m.objid
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_attrdef ad ON ad.adrelid = c.oid AND ad.adnum = a.attnum
UNION ALL
SELECT 'relation ' || c.relname || ' kind=' || c.relkind::text || ' acl=' || coalesce(c.relacl::text, '')
	|| ' comment=' || coalesce(obj_description(c.oid, 'pg_class'), '')
	|| ' view=' || coalesce(pg_get_viewdef(c.oid), '')
FROM members m JOIN pg_class c ON m.classid = 'pg_class'::regclass AND c.oid = m.objid
UNION ALL
SELECT 'index ' || pg_get_indexdef(i.indexrelid)
FROM members m JOIN pg_index i ON m.classid = 'pg_class'::regclass AND i.indrelid = m.objid
UNION ALL
SELECT 'constraint ' || conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid)
FROM pg_constraint WHERE conrelid IN (SELECT objid FROM members WHERE classid = 'pg_class'::regclass)
UNION ALL
SELECT 'trigger ' || pg_get_triggerdef(t.oid) || ' enabled=' || t.tgenabled::text
FROM pg_trigger t WHERE NOT t.tgisinternal
  AND t.tgrelid IN (SELECT objid FROM members WHERE classid = 'pg_class'::regclass)
UNION ALL
SELECT 'config ' || unnest(extconfig)::regclass || ' ' || coalesce(array_to_string(extcondition, ','), '')
FROM pg_extension WHERE extname = 'activity_core'
ORDER BY 1
"""


def catalog(c):
    return [r[0] for r in c.execute(CATALOG).fetchall()]


@pytest.fixture
def databases(conn):
    """Two scratch databases (the workers serve neither): fresh and upgraded."""
    names = [f"ac_up_{kind}_{uuid.uuid4().hex[:6]}" for kind in ("fresh", "old")]
    for n in names:
        conn.execute(f"CREATE DATABASE {n}")
    yield names
    for n in names:
        conn.execute(f"DROP DATABASE {n}")


def test_upgrade_from_0_1_0_equals_a_fresh_install_and_keeps_the_data(conn, databases):
    fresh_db, old_db = databases
    current = conn.execute("SELECT default_version FROM pg_available_extensions "
                           "WHERE name = 'activity_core'").fetchone()[0]
    assert current != "0.1.0"
    with psycopg.connect(dbname=fresh_db, autocommit=True) as fresh, \
            psycopg.connect(dbname=old_db, autocommit=True) as old:
        for c in (fresh, old):
            c.execute("SET client_min_messages = warning")
        fresh.execute("CREATE EXTENSION activity_core")
        old.execute("CREATE EXTENSION activity_core VERSION '0.1.0'")
        ids = {}
        for kind, config in (("cron", '{"cron_expression": "0 5 * * *", "misfire_policy": "catchup"}'),
                             ("event", '{"event_type": "up.order", "filters": {"a": 1}}'),
                             ("manual", "{}")):
            ids[kind] = str(old.execute(
                "INSERT INTO ac_activity_definitions (name, trigger_type, trigger_config) "
                "VALUES (%s, %s, %s) RETURNING id", (f"up-{kind}", kind, config)).fetchone()[0])
        old.execute("SELECT ac_publish('up.order', '{\"a\": 1}', 'up-1')")
        old.execute("SELECT ac_trigger(%s, NULL, 'up')", (ids["manual"],))
        before = old.execute("SELECT id, name, trigger_type, trigger_config, enabled, updated_at "
                             "FROM ac_activity_definitions ORDER BY name").fetchall()

        old.execute("ALTER EXTENSION activity_core UPDATE")
        assert old.execute("SELECT extversion FROM pg_extension WHERE extname = 'activity_core'"
                           ).fetchone()[0] == current

        fresh_cat, old_cat = catalog(fresh), catalog(old)
        assert fresh_cat == old_cat, (
            "catalogs differ:\nonly fresh: " + "\n".join(sorted(set(fresh_cat) - set(old_cat)))
            + "\nonly upgraded: " + "\n".join(sorted(set(old_cat) - set(fresh_cat))))

        # the data came through, and the new version works on it
        assert old.execute("SELECT id, name, trigger_type, trigger_config, enabled, updated_at "
                           "FROM ac_activity_definitions ORDER BY name").fetchall() == before
        assert old.execute("SELECT count(*) FROM ac_schedule_intents WHERE activity_id = %s",
                           (ids["cron"],)).fetchone()[0] == 1
        assert old.execute("SELECT msg_id, error_permanent FROM ac_outbox").fetchall() == [("up-1", False)]
        assert old.execute("SELECT workflow_id FROM ac_start_outbox").fetchall() == [
            (f"activity-{ids['manual']}:up",)]
        old.execute("UPDATE ac_activity_definitions SET enabled = false WHERE id = %s", (ids["cron"],))
        old.execute("TRUNCATE ac_activity_definitions")
        assert old.execute("SELECT count(*) FROM ac_schedule_intents").fetchone()[0] == 1
        names = {r[0] for r in old.execute("SELECT \"check\" FROM ac_health()").fetchall()}
        assert {"workers_database", "outbox_failures", "schedule_failures"} <= names, names
