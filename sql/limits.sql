-- Identifier and number limits of Temporal and NATS, refused at the statement.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS activity_core;
RESET client_min_messages;
\set VERBOSITY default

CREATE FUNCTION pg_temp.def(cols jsonb) RETURNS text
LANGUAGE sql AS $$
	INSERT INTO ac_activity_definitions (name, trigger_type, workflow_type, task_queue)
	VALUES ('lim-' || md5(cols::text || clock_timestamp()::text), 'manual',
			coalesce(cols->>'workflow_type', 'RunActivityWorkflow'),
			coalesce(cols->>'task_queue', 'orchestrator-tq'))
	RETURNING workflow_type || ' on ' || task_queue
$$;

-- task_queue: Temporal's limit.maxIDLength (1000 bytes), its reserved
-- "/_sys/" prefix and its internal per-namespace queue
SELECT pg_temp.def(jsonb_build_object('task_queue', repeat('q', 1000))) = 'RunActivityWorkflow on ' || repeat('q', 1000) AS ok;
SELECT pg_temp.def(jsonb_build_object('task_queue', repeat('q', 1001)));
SELECT pg_temp.def(jsonb_build_object('task_queue', repeat('ä', 500))) IS NOT NULL AS ok;
SELECT pg_temp.def(jsonb_build_object('task_queue', repeat('ä', 501)));
SELECT pg_temp.def('{"task_queue": "/_sys/orders"}');
SELECT pg_temp.def('{"task_queue": "/_sys/"}');
SELECT pg_temp.def('{"task_queue": "temporal-sys-per-ns-tq"}');
SELECT pg_temp.def('{"task_queue": ""}');
-- what Temporal accepts is accepted: "/_sys" without the slash, other
-- temporal-sys-* names, spaces and control characters
SELECT pg_temp.def('{"task_queue": "/_sys"}');
SELECT pg_temp.def('{"task_queue": "temporal-sys-per-ns-tq2"}');
SELECT pg_temp.def('{"task_queue": "orders eu/1"}');
SELECT pg_temp.def('{"task_queue": "tab\there"}');
-- workflow_type: limit.maxIDLength too
SELECT pg_temp.def(jsonb_build_object('workflow_type', repeat('w', 1000))) IS NOT NULL AS ok;
SELECT pg_temp.def(jsonb_build_object('workflow_type', repeat('w', 1001)));
SELECT pg_temp.def('{"workflow_type": ""}');
SELECT pg_temp.def('{"workflow_type": "/_sys/Workflow"}');
-- an UPDATE is checked as well
UPDATE ac_activity_definitions SET task_queue = '/_sys/x' WHERE task_queue = '/_sys';

-- event_type: a NATS subject suffix, at most 255 bytes
SELECT ac_check_event_type(t) IS NULL AS ok, t
FROM unnest(ARRAY['order.created', 'a', 'user_signed-up.v2', 'ä.ö', 'a/b', 'a#b', 'UPPER.lower']) t;
SELECT ac_check_event_type(repeat('a', 255)) IS NULL AS ok_255, ac_check_event_type(repeat('a', 256));
SELECT ac_check_event_type(repeat('é', 127) || 'a') IS NULL AS ok_255_bytes, ac_check_event_type(repeat('é', 128));
SELECT to_hex(ascii(t)) AS code, ac_check_event_type('a' || t || 'b')
FROM unnest(ARRAY[E'\u0001', E'\t', E'\n', E'\r', E'\u001f', ' ', E'\u007f', E'\u0080', E'\u0085', E'\u009f',
				  E'\u00a0', E'\u1680', E'\u2000', E'\u200a', E'\u2028', E'\u2029', E'\u202f', E'\u205f',
				  E'\u3000', E'\ufeff', '*', '>']) t;
SELECT t, ac_check_event_type(t) FROM unnest(ARRAY['', '.', 'a.', '.a', 'a..b', 'order.*', 'order.>', '*', '>']) t;
-- characters next to the refused ranges are fine
SELECT ac_check_event_type(E'a\u00a1\u200b\u3001b') IS NULL AS ok;
-- the definitions trigger applies the same rule
INSERT INTO ac_activity_definitions (name, trigger_type, trigger_config)
	VALUES ('lim-ev-1', 'event', jsonb_build_object('event_type', E'order\u00a0created'));
INSERT INTO ac_activity_definitions (name, trigger_type, trigger_config)
	VALUES ('lim-ev-2', 'event', jsonb_build_object('event_type', E'order.created\u0085'));
INSERT INTO ac_activity_definitions (name, trigger_type, trigger_config)
	VALUES ('lim-ev-3', 'event', jsonb_build_object('event_type', repeat('x', 256)));
INSERT INTO ac_activity_definitions (name, trigger_type, trigger_config)
	VALUES ('lim-ev-4', 'event', jsonb_build_object('event_type', repeat('x', 255)))
	RETURNING length(trigger_config->>'event_type');

-- max_catchup_runs: any JSON number whose value is an integer from 1 to 1000
CREATE FUNCTION pg_temp.runs(v text) RETURNS jsonb
LANGUAGE sql AS $$
	INSERT INTO ac_activity_definitions (name, trigger_type, trigger_config)
	VALUES ('lim-' || md5(v || clock_timestamp()::text), 'cron',
			('{"cron_expression": "@daily", "max_catchup_runs": ' || v || '}')::jsonb)
	RETURNING trigger_config->'max_catchup_runs'
$$;
SELECT pg_temp.runs('100');
SELECT pg_temp.runs('1e2');
SELECT pg_temp.runs('100.0');
SELECT pg_temp.runs('1000.000');
SELECT pg_temp.runs('0.01e2');
SELECT pg_temp.runs('100.5');
SELECT pg_temp.runs('0');
SELECT pg_temp.runs('1001');
SELECT pg_temp.runs('-5');
SELECT pg_temp.runs('1e1000');
SELECT pg_temp.runs('"100"');
SELECT pg_temp.runs('null');

-- the cron checks read the time zone database: STABLE, not IMMUTABLE
SELECT proname, provolatile FROM pg_proc
WHERE proname IN ('ac_check_cron', 'ac_cron_spec', 'ac_check_event_type') ORDER BY proname;

DELETE FROM ac_activity_definitions;
