-- Sample definitions for `make demo`: one cron, two event (one with a
-- condition), one manual activity and a table watch, then what the
-- extension made of them.
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
	('large-order-review', 'Reviews EU orders over 500 (a condition on the payload)', 'event',
	 '{"event_type": "order.created", "filters": {"region": "eu"}, "condition": "$.total > 500"}',
	 '{"queue": "review"}'),
	('order-paid-invoice', 'Sends the invoice when a watched order becomes paid', 'event',
	 '{"event_type": "row.public.demo_orders", "filters": {"op": "update"},
	   "condition": "$.old.status != $.new.status && $.new.status == \"paid\""}',
	 '{"template": "invoice"}'),
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

\echo == A watched table: its committed row changes are events row.public.demo_orders
CREATE TABLE IF NOT EXISTS public.demo_orders (id int PRIMARY KEY, status text NOT NULL, card text);
SELECT ac_watch('public.demo_orders', columns => '{id,status}') AS watch_event_type;
SELECT * FROM ac_watches;
INSERT INTO public.demo_orders VALUES (1, 'open', '4111 1111'), (2, 'open', '5500 0000')
ON CONFLICT (id) DO UPDATE SET status = 'open';
UPDATE public.demo_orders SET status = 'paid' WHERE id = 1;
BEGIN;
UPDATE public.demo_orders SET status = 'paid' WHERE id = 2;
ROLLBACK;

\echo == An EU order event over 500, one under, an US one, and a manual start:
SELECT ac_publish('order.created', '{"region": "eu", "order": 1001, "total": 900}') AS eu_large_event,
	   ac_publish('order.created', '{"region": "eu", "order": 1003, "total": 40}') AS eu_small_event,
	   ac_publish('order.created', '{"region": "us", "order": 1002, "total": 900}') AS us_event;
SELECT ac_trigger(id, '{"full": false}') AS manual_workflow FROM ac_activity_definitions
WHERE name = 'reindex-search';
SELECT ac_wait_sync('30 seconds') AS published_and_started;
SELECT name, matches, reason FROM ac_explain_match(
	'{"event_id": "x", "type": "order.created", "payload": {"region": "us"}}') ORDER BY name;
SELECT name, matches, reason FROM ac_explain_match(
	'{"event_id": "y", "type": "order.created", "payload": {"region": "eu", "total": 40}}') ORDER BY name;
SELECT pg_sleep(3);

\echo == Runs in Temporal, by definition:
SELECT d.name, r.workflow_id, r.status
FROM ac_activity_definitions d, LATERAL ac_runs(d.id, 5) r
WHERE d.name IN ('order-created-mailer', 'large-order-review', 'order-paid-invoice', 'reindex-search')
ORDER BY d.name, r.start_time;

\echo == Counters:
SELECT name, value FROM ac_stats WHERE value > 0 ORDER BY name;
