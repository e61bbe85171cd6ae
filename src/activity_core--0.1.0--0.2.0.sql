-- activity_core: upgrade from 0.1.0 to 0.2.0
\echo Use "ALTER EXTENSION activity_core UPDATE TO '0.2.0'" to load this file. \quit

-- Every change below is also made in activity_core.sql, the 0.2.0 install
-- script: a fresh install and an upgraded 0.1.0 must have identical catalogs.

-- Limits: identifier checks of Temporal and NATS
CREATE FUNCTION ac_check_event_type(event_type text) RETURNS text
	AS 'MODULE_PATHNAME', 'ac_check_event_type'
	LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION ac_check_event_type(text) IS
	'NULL when the event type can follow "<prefix>." in a NATS subject, otherwise the reason it cannot';

-- Limits: the cron checks read the time zone database
ALTER FUNCTION ac_check_cron(text) STABLE;
ALTER FUNCTION ac_cron_spec(text, text) STABLE;
