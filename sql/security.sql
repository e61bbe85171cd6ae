-- Security: which functions run as the extension's owner, who may call
-- what, and the trigger functions refusing to act on any table but the
-- extension's own.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS activity_core;
RESET client_min_messages;
\set VERBOSITY default

-- every function of the extension: SECURITY DEFINER, its pinned search_path,
-- and whether PUBLIC may execute it
SELECT p.proname,
	   p.prosecdef AS definer,
	   p.proconfig,
	   pg_catalog.has_function_privilege('public', p.oid, 'EXECUTE') AS public_can_execute
FROM pg_catalog.pg_depend d
JOIN pg_catalog.pg_proc p ON p.oid = d.objid AND d.classid = 'pg_catalog.pg_proc'::regclass
JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid AND d.refclassid = 'pg_catalog.pg_extension'::regclass
WHERE e.extname = 'activity_core' AND d.deptype = 'e'
ORDER BY p.proname, p.oid;

-- every SECURITY DEFINER function pins search_path, and none is PUBLIC's
SELECT count(*) AS unsafe_definers
FROM pg_catalog.pg_proc p
JOIN pg_catalog.pg_depend d ON d.objid = p.oid AND d.classid = 'pg_catalog.pg_proc'::regclass AND d.deptype = 'e'
JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid AND e.extname = 'activity_core'
WHERE p.prosecdef AND (p.proconfig IS DISTINCT FROM '{"search_path=pg_catalog, pg_temp"}'
					   OR pg_catalog.has_function_privilege('public', p.oid, 'EXECUTE'));

-- tables and views: nothing is granted to PUBLIC
SELECT c.relname, c.relacl IS NULL OR NOT EXISTS (
		SELECT 1 FROM pg_catalog.aclexplode(c.relacl) a WHERE a.grantee = 0) AS nothing_for_public
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_depend d ON d.objid = c.oid AND d.classid = 'pg_catalog.pg_class'::regclass AND d.deptype = 'e'
JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid AND e.extname = 'activity_core'
ORDER BY c.relname;

-- the trigger functions refuse to fire on any other table, even for a
-- superuser who attaches them on purpose
CREATE TEMP TABLE ac_activity_definitions (LIKE ac_activity_definitions INCLUDING DEFAULTS);
CREATE TRIGGER hijack AFTER INSERT ON pg_temp.ac_activity_definitions
	FOR EACH ROW EXECUTE FUNCTION ac_definitions_changed();
INSERT INTO pg_temp.ac_activity_definitions (name, trigger_type, trigger_config)
VALUES ('x', 'cron', '{"cron_expression": "@daily"}');
DROP TRIGGER hijack ON pg_temp.ac_activity_definitions;
CREATE TRIGGER hijack BEFORE INSERT ON pg_temp.ac_activity_definitions
	FOR EACH ROW EXECUTE FUNCTION ac_definitions_validate();
INSERT INTO pg_temp.ac_activity_definitions (name, trigger_type, trigger_config)
VALUES ('x', 'cron', '{"cron_expression": "@daily"}');
DROP TABLE pg_temp.ac_activity_definitions;
SELECT ac_definitions_changed();

-- a role with no grants cannot even attach them, nor reach Temporal or NATS
CREATE ROLE ac_nobody LOGIN;
SET ROLE ac_nobody;
CREATE TEMP TABLE t (id uuid, trigger_type text, trigger_config jsonb);
CREATE TRIGGER hijack AFTER INSERT ON pg_temp.t FOR EACH ROW EXECUTE FUNCTION ac_definitions_changed();
CREATE TRIGGER hijack BEFORE INSERT ON pg_temp.t FOR EACH ROW EXECUTE FUNCTION ac_definitions_validate();
SELECT ac_publish('x', '{}');
SELECT ac_trigger('00000000-0000-0000-0000-000000000000');
SELECT ac_wait_sync();
SELECT * FROM ac_sync_schedules();
SELECT * FROM ac_schedules();
SELECT * FROM ac_health();
SELECT * FROM ac_stats;
SELECT * FROM ac_stats_series();
SELECT ac_stats_reset();
SELECT * FROM ac_router_status();
SELECT * FROM ac_publisher_status();
SELECT ac_replay_dead_letter(1);
SELECT * FROM ac_runs('00000000-0000-0000-0000-000000000000');
DROP TABLE pg_temp.t;
RESET ROLE;

-- under one snapshot per transaction, waiting and reconciling are refused
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT ac_wait_sync('1s');
ROLLBACK;
BEGIN ISOLATION LEVEL SERIALIZABLE;
SELECT * FROM ac_sync_schedules();
ROLLBACK;

-- inside the transaction that queued a publish or a start, waiting is refused
BEGIN;
SELECT ac_publish('security.wait', '{}', 'sec-wait-1');
SELECT ac_wait_sync('1s');
ROLLBACK;
INSERT INTO ac_activity_definitions (id, name, trigger_type)
VALUES ('00000000-0000-0000-0000-0000000000f1', 'sec-manual', 'manual');
BEGIN;
SELECT ac_trigger('00000000-0000-0000-0000-0000000000f1', NULL, 'k1');
SELECT ac_wait_sync('1s');
ROLLBACK;
-- ac_trigger's input is an object, like the workflow's arguments
SELECT ac_trigger('00000000-0000-0000-0000-0000000000f1', '[1, 2]');
SELECT ac_trigger('00000000-0000-0000-0000-0000000000f1', '"x"');
DELETE FROM ac_activity_definitions WHERE id = '00000000-0000-0000-0000-0000000000f1';
DROP ROLE ac_nobody;
