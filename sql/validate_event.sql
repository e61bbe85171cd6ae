-- Validation and normalisation of event and manual definitions.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS activity_core;
RESET client_min_messages;
\set VERBOSITY default

CREATE FUNCTION pg_temp.def(ttype text, config jsonb) RETURNS jsonb
LANGUAGE sql AS $$
	INSERT INTO ac_activity_definitions (name, trigger_type, trigger_config)
	VALUES ('ve-' || md5(ttype || config::text || clock_timestamp()::text), ttype, config)
	RETURNING trigger_config
$$;

-- event: valid
SELECT pg_temp.def('event', '{"event_type": "order.created"}');
SELECT pg_temp.def('event', '{"event_type": "order.created", "filters": {}}');
SELECT pg_temp.def('event', '{"event_type": "order.created", "filters": {"region": "eu", "total": 10}}');
SELECT pg_temp.def('event', '{"event_type": "ping", "filters": {"tags": ["a", "b"], "customer": {"tier": "gold"}, "note": null}}');
SELECT pg_temp.def('event', '{"event_type": "user_signed-up.v2"}');
-- event: invalid
SELECT pg_temp.def('event', '{}');
SELECT pg_temp.def('event', '{"filters": {}}');
SELECT pg_temp.def('event', '{"event_type": 42}');
SELECT pg_temp.def('event', '{"event_type": null}');
SELECT pg_temp.def('event', '{"event_type": ""}');
SELECT pg_temp.def('event', '{"event_type": "order created"}');
SELECT pg_temp.def('event', '{"event_type": "order.*"}');
SELECT pg_temp.def('event', '{"event_type": "order.>"}');
SELECT pg_temp.def('event', '{"event_type": ".order"}');
SELECT pg_temp.def('event', '{"event_type": "order..created"}');
SELECT pg_temp.def('event', '{"event_type": "order."}');
SELECT pg_temp.def('event', '{"event_type": "order.created", "filters": []}');
SELECT pg_temp.def('event', '{"event_type": "order.created", "filters": "region=eu"}');
SELECT pg_temp.def('event', '{"event_type": "order.created", "filters": null}');
SELECT pg_temp.def('event', '{"event_type": "order.created", "filter": {}}');
SELECT pg_temp.def('event', '{"event_type": "order.created", "cron_expression": "@daily"}');
SELECT pg_temp.def('event', '[]');

-- manual: only an empty object
SELECT pg_temp.def('manual', '{}');
SELECT pg_temp.def('manual', '{"event_type": "x"}');
SELECT pg_temp.def('manual', '[]');
SELECT pg_temp.def('manual', 'null');
INSERT INTO ac_activity_definitions (name, trigger_type) VALUES ('manual-default', 'manual')
	RETURNING trigger_config, workflow_type, task_queue, enabled, input;

-- trigger_type and other columns
SELECT pg_temp.def('webhook', '{}');
SELECT pg_temp.def('Cron', '{"cron_expression": "@daily"}');
SELECT pg_temp.def('', '{}');
INSERT INTO ac_activity_definitions (name, trigger_type) VALUES ('', 'manual');
INSERT INTO ac_activity_definitions (name, trigger_type, workflow_type) VALUES ('no-type', 'manual', '');
INSERT INTO ac_activity_definitions (name, trigger_type, task_queue) VALUES ('no-queue', 'manual', '');
INSERT INTO ac_activity_definitions (name, trigger_type) VALUES ('manual-default', 'manual');

-- NULLs are refused by the trigger itself (before NOT NULL is checked)
INSERT INTO ac_activity_definitions (name, trigger_type) VALUES ('null-type', NULL);
INSERT INTO ac_activity_definitions (name, trigger_type, trigger_config) VALUES ('null-config', 'manual', NULL);

-- changing the trigger type re-validates the configuration
UPDATE ac_activity_definitions SET trigger_type = 'cron' WHERE name = 'manual-default';
UPDATE ac_activity_definitions SET trigger_type = 'event', trigger_config = '{"event_type": "x.y"}'
	WHERE name = 'manual-default' RETURNING trigger_type, trigger_config;

DELETE FROM ac_activity_definitions;
