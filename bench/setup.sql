-- Benchmark-only objects, kept out of the extension's default install.
-- bench/run.sh runs this as superuser once the stack is up:
--   ac_router_bench(envelope, iterations): the router's parse and match cost
--   per event on the current definitions, measured with its own code
--   (bench/events.py).  The C symbol lives in the extension's library.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS activity_core;
RESET client_min_messages;

CREATE OR REPLACE FUNCTION ac_router_bench(envelope jsonb, iterations integer DEFAULT 10000,
	OUT definitions integer, OUT parse_us float8, OUT match_us float8, OUT matches integer)
	AS 'activity_core', 'ac_router_bench'
	LANGUAGE C STRICT VOLATILE;

REVOKE ALL ON FUNCTION ac_router_bench(jsonb, integer) FROM PUBLIC;

COMMENT ON FUNCTION ac_router_bench(jsonb, integer) IS
	'The router''s cost per event (envelope parsing and matching) on the current definitions, measured with its own code';
