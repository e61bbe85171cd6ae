-- Events and manual starts: the SQL side (the routing itself is tested end to end).
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS activity_core;
RESET client_min_messages;
\set VERBOSITY default

INSERT INTO ac_activity_definitions (id, name, trigger_type, trigger_config, enabled) VALUES
	('00000000-0000-0000-0000-00000000000a', 'eu-orders', 'event',
	 '{"event_type": "order.created", "filters": {"region": "eu", "lines": [{"sku": "a"}]}}', true),
	('00000000-0000-0000-0000-00000000000b', 'all-orders', 'event', '{"event_type": "order.created"}', true),
	('00000000-0000-0000-0000-00000000000c', 'off-orders', 'event', '{"event_type": "order.created"}', false),
	('00000000-0000-0000-0000-00000000000d', 'refunds', 'event', '{"event_type": "order.refunded"}', true),
	('00000000-0000-0000-0000-00000000000e', 'reindex', 'manual', '{}', false);

-- the router's decision, with the reason for every definition
SELECT name, matches, reason FROM ac_explain_match(
	'{"event_id": "e1", "type": "order.created", "payload": {"region": "eu", "lines": [{"sku": "a", "n": 2}, {"sku": "b"}]}}')
ORDER BY name;
SELECT name, matches, reason FROM ac_explain_match(
	'{"event_id": "e2", "type": "order.created", "payload": {"region": "us"}}') ORDER BY name;
-- CloudEvents: id and data
SELECT name, matches FROM ac_explain_match(
	'{"specversion": "1.0", "id": "c1", "type": "order.refunded", "source": "shop", "data": {}}') ORDER BY name;
-- envelopes the router would dead-letter
SELECT * FROM ac_explain_match('{"type": "order.created"}');
SELECT * FROM ac_explain_match('{"event_id": "a/b", "type": "order.created"}');
SELECT * FROM ac_explain_match('{"event_id": "x", "type": "order.created", "payload": [1]}');
SELECT * FROM ac_explain_match('[]');

-- the matcher agrees with SQL's @> on every pair of these filters and payloads:
-- scalar-only filters (strings, numbers written two ways, booleans, null) and
-- nested ones, against payloads that have, lack or differ in each member
CREATE TEMP TABLE flat_filters (n int, filters jsonb);
INSERT INTO flat_filters VALUES
	(1, '{"region": "eu"}'), (2, '{"tier": 2}'), (3, '{"tier": 2.0}'), (4, '{"tier": "2"}'),
	(5, '{"ok": true}'), (6, '{"ok": false}'), (7, '{"gone": null}'), (8, '{"region": "eu", "tier": 2}'),
	(9, '{"region": "EU"}'), (10, '{"region": "e"}'), (11, '{"lines": [{"sku": "a"}]}'),
	(12, '{"lines": []}'), (13, '{"nested": {"k": 1}}'), (14, '{"nested": {}}'), (15, '{"": ""}'),
	(16, '{"region": "eu", "nested": {"k": 1}}'), (17, '{"big": 1e3}'), (18, '{"q": "a\"b\u00e9"}');
CREATE TEMP TABLE flat_payloads (p int, payload jsonb);
INSERT INTO flat_payloads VALUES
	(1, '{}'), (2, '{"region": "eu"}'), (3, '{"region": "eu", "tier": 2, "ok": true, "gone": null}'),
	(4, '{"tier": 2.00}'), (5, '{"tier": "2"}'), (6, '{"ok": false, "gone": 0}'),
	(7, '{"region": ["eu"], "tier": [2]}'), (8, '{"lines": [{"sku": "a", "n": 1}, {"sku": "b"}]}'),
	(9, '{"nested": {"k": 1, "j": 2}, "region": "eu"}'), (10, '{"nested": {"k": "1"}}'),
	(11, '{"": "", "big": 1000}'), (12, '{"region": {"eu": true}, "q": "a\"b\u00e9"}'), (13, '{"ok": "true"}'),
	(14, '{"tier": 3, "big": 1001, "ok": null, "region": "eu "}');
INSERT INTO ac_activity_definitions (name, trigger_type, trigger_config)
SELECT 'flat-' || n, 'event', jsonb_build_object('event_type', 'flat.t', 'filters', filters) FROM flat_filters;
SELECT count(*) AS pairs, count(*) FILTER (WHERE e.matches <> (p.payload @> f.filters)) AS disagreements,
	count(*) FILTER (WHERE e.matches) AS matching
FROM flat_payloads p
CROSS JOIN LATERAL ac_explain_match(jsonb_build_object('event_id', 'f' || p.p, 'type', 'flat.t',
	'payload', p.payload)) e
JOIN flat_filters f ON e.name = 'flat-' || f.n;
DELETE FROM ac_activity_definitions WHERE name LIKE 'flat-%';

-- ac_publish refuses what the router would refuse
SELECT ac_publish('order created', '{}');
SELECT ac_publish('order.*', '{}');
SELECT ac_publish('order.created', '[1, 2]');
SELECT ac_publish('order.created', '{}', 'a/b');
SELECT ac_publish('order.created', '{}', '');
SELECT ac_publish('order.created', jsonb_build_object('blob', repeat('x', 2000000)));
-- a subject NATS cannot carry, a payload too deep for the SDKs, an id unfit for a header
SELECT ac_publish(E'order\u0085created', '{}');
SELECT ac_publish(repeat('t', 256), '{}');
SELECT ac_publish('order.created', (repeat('{"a": ', 101) || '1' || repeat('}', 101))::jsonb);
BEGIN;
SELECT ac_publish('order.created', (repeat('{"a": ', 100) || '1' || repeat('}', 100))::jsonb, 'deep-ok') AS deep_ok;
ROLLBACK;
SELECT ac_publish('order.created', '{}', E'line\nbreak');
SELECT ac_check_publish('order.created', '{}', 'fine');
-- a committed publish is queued for the dispatcher
BEGIN;
SELECT ac_publish('order.created', '{"region": "eu"}', 'fixed-id') AS event_id;
SELECT subject, msg_id, convert_from(data, 'UTF8')::jsonb - 'occurred_at' AS envelope FROM ac_outbox;
-- the envelope is, byte for byte, the jsonb text of the same object
SELECT convert_from(data, 'UTF8') = jsonb_build_object('event_id', 'fixed-id', 'type', 'order.created',
	'payload', '{"region": "eu"}'::jsonb, 'occurred_at', now(), 'source', 'activity_core')::text AS same_text
FROM ac_outbox;
SELECT ac_publish('order.created', '{"q": "a\"b\u00e9\n", "n": [1.50, null, true]}', E'id \u00e9 "x"') AS escaped_id;
SELECT convert_from(data, 'UTF8') = jsonb_build_object('event_id', E'id \u00e9 "x"', 'type', 'order.created',
	'payload', '{"q": "a\"b\u00e9\n", "n": [1.50, null, true]}'::jsonb, 'occurred_at', now(),
	'source', 'activity_core')::text AS same_text_escaped
FROM ac_outbox WHERE msg_id = E'id \u00e9 "x"';
ROLLBACK;
SELECT count(*) AS outbox_after_rollback FROM ac_outbox;

-- ac_trigger refuses unknown and disabled definitions and bad keys
SELECT ac_trigger('00000000-0000-0000-0000-0000000000ff');
SELECT ac_trigger('00000000-0000-0000-0000-00000000000e');
UPDATE ac_activity_definitions SET enabled = true WHERE name = 'reindex';
SELECT ac_trigger('00000000-0000-0000-0000-00000000000e', NULL, 'a/b');
SELECT ac_trigger('00000000-0000-0000-0000-00000000000e', NULL, '');
BEGIN;
SELECT ac_trigger('00000000-0000-0000-0000-00000000000e', '{"full": false}', 'nightly-1') AS workflow_id;
SELECT workflow_id, workflow_type, task_queue, argument::jsonb FROM ac_start_outbox;
ROLLBACK;

-- replay of a dead letter that does not exist
SELECT ac_replay_dead_letter(-1);

DELETE FROM ac_activity_definitions;
