-- activity_core: upgrade from 0.1.0 to 0.2.0
\echo Use "ALTER EXTENSION activity_core UPDATE TO '0.2.0'" to load this file. \quit

-- Every change below is also made in activity_core.sql, the 0.2.0 install
-- script: a fresh install and an upgraded 0.1.0 must have identical catalogs.

-- Workers: an outbox row NATS refuses for good is marked and skipped.
ALTER TABLE ac_outbox ADD COLUMN error_permanent boolean NOT NULL DEFAULT false;

-- Workers: a relcache invalidation of the definitions at every committed
-- change (TRUNCATE and COMMIT PREPARED too) keeps the router's index fresh.
CREATE FUNCTION ac_definitions_invalidate() RETURNS trigger
	AS 'MODULE_PATHNAME', 'ac_definitions_invalidate'
	LANGUAGE C;

REVOKE ALL ON FUNCTION ac_definitions_invalidate() FROM PUBLIC;

CREATE TRIGGER ac_definitions_invalidate
	AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ac_activity_definitions
	FOR EACH STATEMENT EXECUTE FUNCTION ac_definitions_invalidate();
