-- Sample definitions for `make demo`: one cron, one event and one manual
-- activity, then what the extension made of them.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS activity_core;
RESET client_min_messages;

INSERT INTO ac_activity_definitions (name, description, trigger_type, trigger_config, input)
VALUES
	('nightly-report', 'Builds the sales report every night at 02:30 Berlin time', 'cron',
	 '{"cron_expression": "30 2 * * *", "timezone": "europe/berlin", "misfire_policy": "catchup"}',
	 '{"report": "sales"}'),
	('order-created-mailer', 'Sends the confirmation mail for EU orders', 'event',
	 '{"event_type": "order.created", "filters": {"region": "eu"}}',
	 '{"template": "order-confirmation"}'),
	('reindex-search', 'Rebuilds the search index when someone asks for it', 'manual',
	 '{}', '{"full": true}')
ON CONFLICT (name) DO NOTHING;

\echo
\echo == Definitions, with trigger_config as the extension normalised it:
SELECT name, trigger_type, enabled, trigger_config FROM ac_activity_definitions ORDER BY name;

\echo == A definition the validator refuses (the error is expected):
\set ON_ERROR_STOP 0
INSERT INTO ac_activity_definitions (name, trigger_type, trigger_config)
VALUES ('broken', 'cron', '{"cron_expression": "0 25 * * *"}');
\set ON_ERROR_STOP 1

\echo == The cron definition became a Temporal Schedule:
SELECT ac_wait_sync('30 seconds') AS synced;
SELECT s.schedule_id, s.paused, s.in_sync, s.next_fire_times->>0 AS next_fire
FROM ac_schedules() s JOIN ac_activity_definitions d ON d.id = s.activity_id
WHERE d.name = 'nightly-report';

\echo == An EU order event and an US one (only the first matches), and a manual start:
SELECT ac_publish('order.created', '{"region": "eu", "order": 1001}') AS eu_event,
	   ac_publish('order.created', '{"region": "us", "order": 1002}') AS us_event;
SELECT ac_trigger(id, '{"full": false}') AS manual_workflow FROM ac_activity_definitions
WHERE name = 'reindex-search';
SELECT ac_wait_sync('30 seconds') AS published_and_started;
SELECT name, matches, reason FROM ac_explain_match(
	'{"event_id": "x", "type": "order.created", "payload": {"region": "us"}}') ORDER BY name;
SELECT pg_sleep(3);

\echo == Runs in Temporal, by definition:
SELECT d.name, r.workflow_id, r.status
FROM ac_activity_definitions d, LATERAL ac_runs(d.id, 5) r
WHERE d.name IN ('order-created-mailer', 'reindex-search')
ORDER BY d.name, r.start_time;

\echo == Counters:
SELECT name, value FROM ac_stats WHERE value > 0 ORDER BY name;
