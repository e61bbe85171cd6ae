-- Limits at their exact boundary: the largest value allowed passes, one more
-- is refused (event ids, payload depth, idempotency keys), on the router's
-- side (ac_explain_match parses envelopes as the router does) and on the
-- publisher's side (ac_publish), so the two never disagree.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS activity_core;
RESET client_min_messages;

-- 'ok', or the error with long runs of one character shortened
CREATE FUNCTION pg_temp.try(q text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE q;
	RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE || ': ' || regexp_replace(SQLERRM, '(.)\1{9,}', '\1...', 'g');
END
$$;

-- the router: event_id at most 900 bytes (450 two-byte characters are 900)
SELECT n, pg_temp.try(format('SELECT * FROM ac_explain_match(%L)',
		jsonb_build_object('event_id', repeat('e', n), 'type', 'limits.edge', 'payload', '{}'::jsonb)))
FROM unnest(ARRAY[899, 900, 901]) n;
SELECT pg_temp.try(format('SELECT * FROM ac_explain_match(%L)',
		jsonb_build_object('event_id', repeat('é', 450), 'type', 'limits.edge'))) AS bytes_900,
	pg_temp.try(format('SELECT * FROM ac_explain_match(%L)',
		jsonb_build_object('event_id', repeat('é', 450) || 'e', 'type', 'limits.edge'))) AS bytes_901;

-- the router: the payload nested at most 100 levels (the envelope is one more)
SELECT n, pg_temp.try(format('SELECT * FROM ac_explain_match(%L)',
		'{"event_id": "deep", "type": "limits.edge", "payload": '
		|| repeat('{"a": ', n - 1) || '{}' || repeat('}', n - 1) || '}'))
FROM unnest(ARRAY[99, 100, 101]) n;

-- the publisher: the same event_id limit
BEGIN;
SELECT n, pg_temp.try(format('SELECT ac_publish(%L, %L, %L)', 'limits.edge', '{}', repeat('p', n)))
FROM unnest(ARRAY[900, 901]) n;
ROLLBACK;

-- ac_trigger: an idempotency key of at most 900 bytes
INSERT INTO ac_activity_definitions (id, name, trigger_type)
	VALUES ('00000000-0000-0000-0000-0000000000e9', 'limits-edge-manual', 'manual');
BEGIN;
SELECT n, pg_temp.try(format('SELECT ac_trigger(%L, NULL, %L)',
		'00000000-0000-0000-0000-0000000000e9', repeat('k', n)))
FROM unnest(ARRAY[900, 901]) n;
ROLLBACK;
DELETE FROM ac_activity_definitions WHERE id = '00000000-0000-0000-0000-0000000000e9';
