-- Schedule intents and the cron spec prediction.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS activity_core;
RESET client_min_messages;
\set VERBOSITY default

-- max_catchup_runs
INSERT INTO ac_activity_definitions (name, trigger_type, trigger_config)
VALUES ('cap-ok', 'cron', '{"cron_expression": "@hourly", "misfire_policy": "catchup", "max_catchup_runs": 5}')
RETURNING trigger_config;
INSERT INTO ac_activity_definitions (name, trigger_type, trigger_config)
VALUES ('cap-zero', 'cron', '{"cron_expression": "@hourly", "max_catchup_runs": 0}');
INSERT INTO ac_activity_definitions (name, trigger_type, trigger_config)
VALUES ('cap-big', 'cron', '{"cron_expression": "@hourly", "max_catchup_runs": 1001}');
INSERT INTO ac_activity_definitions (name, trigger_type, trigger_config)
VALUES ('cap-frac', 'cron', '{"cron_expression": "@hourly", "max_catchup_runs": 2.5}');
INSERT INTO ac_activity_definitions (name, trigger_type, trigger_config)
VALUES ('cap-text', 'cron', '{"cron_expression": "@hourly", "max_catchup_runs": "5"}');

-- a cron definition records one intent; a rolled-back one records nothing
SELECT count(*) AS intents FROM ac_schedule_intents i
	JOIN ac_activity_definitions d ON d.id = i.activity_id WHERE d.name = 'cap-ok';
BEGIN;
INSERT INTO ac_activity_definitions (name, trigger_type, trigger_config)
VALUES ('rolled-back', 'cron', '{"cron_expression": "@daily"}');
SELECT count(*) AS intents_inside FROM ac_schedule_intents i
	JOIN ac_activity_definitions d ON d.id = i.activity_id WHERE d.name = 'rolled-back';
-- waiting for one's own uncommitted change is refused
SELECT ac_wait_sync('1s');
ROLLBACK;
SELECT count(*) AS definitions FROM ac_activity_definitions WHERE name = 'rolled-back';

-- event and manual definitions, and irrelevant changes, record nothing
INSERT INTO ac_activity_definitions (name, trigger_type, trigger_config)
VALUES ('ev', 'event', '{"event_type": "a.b"}'), ('man', 'manual', '{}');
SELECT count(*) AS intents FROM ac_schedule_intents i
	JOIN ac_activity_definitions d ON d.id = i.activity_id WHERE d.name IN ('ev', 'man');
SELECT revision AS before FROM ac_schedule_intents i
	JOIN ac_activity_definitions d ON d.id = i.activity_id WHERE d.name = 'cap-ok' \gset
UPDATE ac_activity_definitions SET description = 'only the description' WHERE name = 'cap-ok';
SELECT revision = :before AS unchanged FROM ac_schedule_intents i
	JOIN ac_activity_definitions d ON d.id = i.activity_id WHERE d.name = 'cap-ok';
UPDATE ac_activity_definitions SET enabled = false WHERE name = 'cap-ok';
SELECT revision > :before AS bumped FROM ac_schedule_intents i
	JOIN ac_activity_definitions d ON d.id = i.activity_id WHERE d.name = 'cap-ok';

-- what Temporal compiles a cron expression into, as reconcile compares it
SELECT ac_cron_spec('*/15 9-17 * * mon-fri', 'Europe/Berlin');
SELECT ac_cron_spec('0 0 * * 5-7 # weekend');
SELECT ac_cron_spec('30 0 12 1 jan * 2030/5');
SELECT ac_cron_spec('@every 1d/2h');
SELECT ac_cron_spec('@weekly');
SELECT ac_cron_spec('61 * * * *');

-- (who may execute what: security.sql)

DELETE FROM ac_activity_definitions;
