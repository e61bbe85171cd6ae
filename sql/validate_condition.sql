-- Event conditions: jsonpath predicates checked and normalised at the
-- statement, and ac_explain_match naming the part that failed.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS activity_core;
RESET client_min_messages;
\set VERBOSITY default

CREATE FUNCTION pg_temp.def(config jsonb) RETURNS jsonb
LANGUAGE sql AS $$
	INSERT INTO ac_activity_definitions (name, trigger_type, trigger_config)
	VALUES ('vc-' || md5(config::text || clock_timestamp()::text), 'event', config)
	RETURNING trigger_config
$$;

-- valid: stored as PostgreSQL prints the parsed path
SELECT pg_temp.def('{"event_type": "cond.v", "condition": "$.amount > 100 && $.currency == \"EUR\""}');
SELECT pg_temp.def('{"event_type": "cond.v", "condition": "$.old.status != $.new.status"}');
SELECT pg_temp.def('{"event_type": "cond.v", "condition": "strict $.a.b == 1"}');
SELECT pg_temp.def('{"event_type": "cond.v", "condition": "$.name like_regex \"^ab.*\" flag \"i\""}');
SELECT pg_temp.def('{"event_type": "cond.v", "condition": "exists($.tags[*] ? (@ == \"vip\"))"}');
SELECT pg_temp.def('{"event_type": "cond.v", "condition": "$.n * 2 + 1 >= 7 || !($.x starts with \"a\")"}');
SELECT pg_temp.def('{"event_type": "cond.v", "condition": "($.n > 1) is unknown", "filters": {"r": 1}}');
-- the normal form is a fixed point
SELECT pg_temp.def(pg_temp.def('{"event_type": "cond.v", "condition": "$.a == 1"}')) ->> 'condition';

-- invalid: syntax errors name the position, non-predicates and variables are refused
SELECT pg_temp.def('{"event_type": "cond.v", "condition": "$.amount > > 100"}');
SELECT pg_temp.def('{"event_type": "cond.v", "condition": "$.amount > 1 &&"}');
SELECT pg_temp.def('{"event_type": "cond.v", "condition": "$.é == 1 ]"}');
SELECT pg_temp.def('{"event_type": "cond.v", "condition": "$.a like_regex \"(\""}');
SELECT pg_temp.def('{"event_type": "cond.v", "condition": "$.amount"}');
SELECT pg_temp.def('{"event_type": "cond.v", "condition": "$.tags ? (@ == 1)"}');
SELECT pg_temp.def('{"event_type": "cond.v", "condition": "true"}');
SELECT pg_temp.def('{"event_type": "cond.v", "condition": "$.amount > $limit"}');
SELECT pg_temp.def('{"event_type": "cond.v", "condition": "exists($.a ? (@ > $x))"}');
SELECT pg_temp.def('{"event_type": "cond.v", "condition": ""}');
SELECT pg_temp.def('{"event_type": "cond.v", "condition": 1}');
SELECT pg_temp.def('{"event_type": "cond.v", "condition": null}');
SELECT pg_temp.def(jsonb_build_object('event_type', 'cond.v', 'condition', '$.a == "' || repeat('x', 8200) || '"'));
DELETE FROM ac_activity_definitions WHERE name LIKE 'vc-%';

-- ac_explain_match says which part failed: type, filter key, or condition
INSERT INTO ac_activity_definitions (name, trigger_type, trigger_config) VALUES
	('vc-amount', 'event', '{"event_type": "cond.x", "filters": {"region": "eu"}, "condition": "$.amount > 100"}'),
	('vc-strict', 'event', '{"event_type": "cond.x", "condition": "strict $.a.b == 1"}'),
	('vc-tz', 'event', '{"event_type": "cond.x", "condition": "$.d.datetime() < \"2020-01-01T00:00:00+00:00\".datetime()"}'),
	('vc-other', 'event', '{"event_type": "cond.y", "condition": "$.amount > 100"}');
SELECT name, matches, reason FROM ac_explain_match(
	'{"event_id": "e1", "type": "cond.x", "payload": {"region": "eu", "amount": 150, "a": {"b": 1}, "d": "2020-01-01T00:00:00+00:00"}}')
WHERE name LIKE 'vc-%' ORDER BY name;
SELECT name, matches, reason FROM ac_explain_match(
	'{"event_id": "e2", "type": "cond.x", "payload": {"region": "eu", "amount": 50, "a": 1, "d": "2020-01-01"}}')
WHERE name LIKE 'vc-%' ORDER BY name;
SELECT name, matches, reason FROM ac_explain_match(
	'{"event_id": "e3", "type": "cond.x", "payload": {"region": "us", "amount": 500}}')
WHERE name LIKE 'vc-%' ORDER BY name;
-- explaining counts nothing in the router's statistics
SELECT value AS condition_errors_before FROM ac_stats WHERE name = 'condition_errors' \gset
SELECT count(*) FROM ac_explain_match('{"event_id": "e4", "type": "cond.x", "payload": {"d": "2020-01-01"}}') WHERE name LIKE 'vc-%';
SELECT value = :condition_errors_before AS uncounted FROM ac_stats WHERE name = 'condition_errors';
DELETE FROM ac_activity_definitions WHERE name LIKE 'vc-%';
