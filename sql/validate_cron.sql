-- Validation and normalisation of cron definitions.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS activity_core;
RESET client_min_messages;
\set VERBOSITY default

CREATE FUNCTION pg_temp.cron(expr text, extra jsonb DEFAULT '{}') RETURNS jsonb
LANGUAGE sql AS $$
	INSERT INTO ac_activity_definitions (name, trigger_type, trigger_config)
	VALUES ('vc-' || md5(expr || extra::text || clock_timestamp()::text), 'cron',
			jsonb_build_object('cron_expression', expr) || extra)
	RETURNING trigger_config
$$;

-- valid: 5, 6 and 7 fields, names, ranges, steps, lists
SELECT pg_temp.cron('* * * * *');
SELECT pg_temp.cron('0 9 * * MON-FRI');
SELECT pg_temp.cron('*/5 9-17 * * mon-fri');
SELECT pg_temp.cron('1-5/2,8-16/3,2 * * * *');
SELECT pg_temp.cron('5/15 * * * *');
SELECT pg_temp.cron('0 0 1 jan,jul *');
SELECT pg_temp.cron('0 0 * sept-dec sun');
SELECT pg_temp.cron('0 0 * * 7');
SELECT pg_temp.cron('0 0 * * 0-7/2');
SELECT pg_temp.cron('0 12 * * * 2026-2030');
SELECT pg_temp.cron('30 0 12 * * * 2100');
SELECT pg_temp.cron('0 0 29 2 *');
SELECT pg_temp.cron('+5 * * * *');
-- valid: macros, intervals, comments, time zone prefix
SELECT pg_temp.cron('@yearly');
SELECT pg_temp.cron('@annually');
SELECT pg_temp.cron('@monthly');
SELECT pg_temp.cron('@weekly');
SELECT pg_temp.cron('@daily');
SELECT pg_temp.cron('@midnight');
SELECT pg_temp.cron('@hourly');
SELECT pg_temp.cron('@every 90m');
SELECT pg_temp.cron('@every 1d/2h');
SELECT pg_temp.cron('@every 1h30m');
SELECT pg_temp.cron('0 0 * * * # nightly report');
SELECT pg_temp.cron('  @hourly  ');
SELECT pg_temp.cron('CRON_TZ=Europe/Berlin 30 9 * * 1-5');
SELECT pg_temp.cron('TZ=america/new_york @daily');
-- the white space after a prefix is not part of the stored schedule (found
-- by fuzzing: the normal form must not change when validated again)
SELECT pg_temp.cron('CRON_TZ=Asia/Tokyo       0 9 * * *', '{"timezone": "asia/tokyo"}');

-- invalid: field count and macros
SELECT pg_temp.cron('* * * *');
SELECT pg_temp.cron('* * * * * * * *');
SELECT pg_temp.cron('');
SELECT pg_temp.cron('# only a comment');
SELECT pg_temp.cron('@reboot');
SELECT pg_temp.cron('@Daily');
-- invalid: values out of range, per field
SELECT pg_temp.cron('60 * * * *');
SELECT pg_temp.cron('0 24 * * *');
SELECT pg_temp.cron('0 0 0 * *');
SELECT pg_temp.cron('0 0 32 * *');
SELECT pg_temp.cron('0 0 * 13 *');
SELECT pg_temp.cron('0 0 * * 8');
SELECT pg_temp.cron('0 0 * * * 1999');
SELECT pg_temp.cron('0 0 * * * 2101');
SELECT pg_temp.cron('60 0 0 * * * *');
-- invalid: names, ranges, steps, lists
SELECT pg_temp.cron('0 0 * ju *');
SELECT pg_temp.cron('0 0 * * m');
SELECT pg_temp.cron('0 0 * dec-jan *');
SELECT pg_temp.cron('0 0 * * sat-sun');
SELECT pg_temp.cron('17-9 * * * *');
SELECT pg_temp.cron('1-2-3 * * * *');
SELECT pg_temp.cron('*/0 * * * *');
SELECT pg_temp.cron('*/x * * * *');
SELECT pg_temp.cron('1/2/3 * * * *');
SELECT pg_temp.cron('5,,6 * * * *');
SELECT pg_temp.cron('0 0 L * *');
SELECT pg_temp.cron('0 0 ? * *');
-- '#' starts a comment (there is no Quartz weekday#n): stored, with a warning
SELECT pg_temp.cron('0 0 * * 1#2');
-- invalid: intervals and comments
SELECT pg_temp.cron('@every');
SELECT pg_temp.cron('@every 0.5s');
SELECT pg_temp.cron('@every 5x');
SELECT pg_temp.cron('@every 1m/1m');
SELECT pg_temp.cron('0 0 * * * # ' || repeat('x', 201));

-- time zones
SELECT pg_temp.cron('0 9 * * *', '{"timezone": "Europe/Berlin"}');
SELECT pg_temp.cron('0 9 * * *', '{"timezone": "asia/tokyo"}');
SELECT pg_temp.cron('0 9 * * *', '{"timezone": "Etc/GMT+3"}');
SELECT pg_temp.cron('0 9 * * *', '{"timezone": "Mars/Olympus_Mons"}');
SELECT pg_temp.cron('0 9 * * *', '{"timezone": "UTC+3"}');
SELECT pg_temp.cron('0 9 * * *', '{"timezone": ""}');
SELECT pg_temp.cron('0 9 * * *', '{"timezone": 3}');
SELECT pg_temp.cron('CRON_TZ=Mars/Base 0 9 * * *');
SELECT pg_temp.cron('CRON_TZ=UTC');
SELECT pg_temp.cron('CRON_TZ=Asia/Tokyo 0 9 * * *', '{"timezone": "Europe/Paris"}');
SELECT pg_temp.cron('CRON_TZ=Asia/Tokyo 0 9 * * *', '{"timezone": "asia/tokyo"}');

-- misfire policies
SELECT pg_temp.cron('0 9 * * *', '{"misfire_policy": "skip"}');
SELECT pg_temp.cron('0 9 * * *', '{"misfire_policy": "catchup"}');
SELECT pg_temp.cron('0 9 * * *', '{"misfire_policy": "compress"}');
SELECT pg_temp.cron('0 9 * * *', '{"misfire_policy": "later"}');
SELECT pg_temp.cron('0 9 * * *', '{"misfire_policy": "SKIP"}');
SELECT pg_temp.cron('0 9 * * *', '{"misfire_policy": null}');

-- keys and types
SELECT pg_temp.cron('0 9 * * *', '{"cron": "0 9 * * *"}');
INSERT INTO ac_activity_definitions (name, trigger_type, trigger_config)
	VALUES ('no-expression', 'cron', '{}');
INSERT INTO ac_activity_definitions (name, trigger_type, trigger_config)
	VALUES ('number-expression', 'cron', '{"cron_expression": 5}');
INSERT INTO ac_activity_definitions (name, trigger_type, trigger_config)
	VALUES ('array-config', 'cron', '["0 9 * * *"]');
INSERT INTO ac_activity_definitions (name, trigger_type, trigger_config)
	VALUES ('string-config', 'cron', '"0 9 * * *"');

-- an UPDATE is validated too, and keeps updated_at current
INSERT INTO ac_activity_definitions (name, trigger_type, trigger_config, created_at, updated_at)
	VALUES ('upd', 'cron', '{"cron_expression": "@daily"}', '2020-01-01', '2020-01-01');
UPDATE ac_activity_definitions SET trigger_config = '{"cron_expression": "61 * * * *"}' WHERE name = 'upd';
UPDATE ac_activity_definitions SET trigger_config = '{"cron_expression": "@hourly", "misfire_policy": "compress"}'
	WHERE name = 'upd';
SELECT trigger_config, created_at = '2020-01-01' AS created_kept, updated_at > '2020-01-01' AS updated
	FROM ac_activity_definitions WHERE name = 'upd';

-- the same check from SQL
SELECT expr, ac_check_cron(expr) FROM (VALUES ('0 9 * * MON-FRI'), ('0 9 * * MON-FRY'), ('@every 5m')) v(expr);

-- steps as Temporal reads them: a 64-bit integer kept in 32 bits; refused
-- when those 32 bits are negative, run with them (0 meaning 1) otherwise
SELECT pg_temp.cron('*/2147483647 * * * *');
SELECT pg_temp.cron('*/2147483648 * * * *');
SELECT pg_temp.cron('0 0 * * 0-7/4294967295');
SELECT pg_temp.cron('0 0 * * * */9223372036854775807');
SELECT pg_temp.cron('*/9223372036854775808 * * * *');
SELECT pg_temp.cron('*/4294967296 * * * *');
-- Temporal compiles day-of-week 1-7 to 1-6: stored, with a warning
SELECT pg_temp.cron('0 0 * * 1-7');
SELECT pg_temp.cron('0 0 * * mon-7');
SELECT expr, ac_check_cron(expr) FROM (VALUES ('*/2147483648 * * * *'), ('*/4294967295 * * * *'),
	('*/4294967296 * * * *'), ('*/6442450944 * * * *'), ('5/9223372036854775807 * * * *'),
	('*/9223372036854775808 * * * *'), ('*/-9223372036854775808 * * * *'),
	('99999999999999999999 * * * *')) v(expr);

-- ac_cron_spec predicts the calendar Temporal compiles, range by range
SELECT expr, field, ac_cron_spec(expr, '')->'calendar'->0->field AS ranges
FROM (VALUES ('*/4294967301 * * * *', 'minute'), ('*/4294967296 * * * *', 'minute'),
	('0 0 * * 0-7/4294967303', 'dayOfWeek'), ('0 0 * * 7/4294967296', 'dayOfWeek'),
	('0 0 * * 1-7', 'dayOfWeek'), ('0 0 * * 0-7', 'dayOfWeek'), ('0 0 * * 2-7', 'dayOfWeek'),
	('0 0 * * 0-7/7', 'dayOfWeek'), ('0 0 * * 1-7/2', 'dayOfWeek'),
	('0 0 * * * *', 'year'), ('0 0 * * * *,2030', 'year'), ('0 0 * * * */4', 'year')) v(expr, field);
-- every element is a range of its own, duplicates too: no cap on their number
SELECT jsonb_array_length(ac_cron_spec(string_agg((i % 60)::text, ',') || ' * * * *', '')->'calendar'->0->'minute'),
	ac_cron_spec(string_agg((i % 60)::text, ',') || ' * * * *', '')->'calendar'->0->'minute'->299
FROM generate_series(0, 299) i;
SELECT jsonb_array_length(ac_cron_spec('0 0 * * ' || string_agg('1-7/2', ','), '')->'calendar'->0->'dayOfWeek')
FROM generate_series(1, 150) i;

DELETE FROM ac_activity_definitions;
