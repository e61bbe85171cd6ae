-- activity_core: upgrade from 0.1.0 to 0.2.0
\echo Use "ALTER EXTENSION activity_core UPDATE TO '0.2.0'" to load this file. \quit

-- Every change below is also made in activity_core.sql, the 0.2.0 install
-- script: a fresh install and an upgraded 0.1.0 must have identical catalogs.

-- Security: the trigger functions fire only on the extension's own table,
-- and nobody else may attach them elsewhere.
REVOKE ALL ON FUNCTION ac_definitions_validate() FROM PUBLIC;
REVOKE ALL ON FUNCTION ac_definitions_changed() FROM PUBLIC;
REVOKE ALL ON FUNCTION ac_router_status() FROM PUBLIC;

-- a TRUNCATE deletes the schedules of every cron definition, too
CREATE TRIGGER ac_definitions_truncated
	BEFORE TRUNCATE ON ac_activity_definitions
	FOR EACH STATEMENT EXECUTE FUNCTION ac_definitions_changed();

-- Operators' functions read the bookkeeping tables as the extension's owner.
ALTER FUNCTION ac_sync_schedules() SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ac_schedules() SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

-- Queued changes carry the session that queued them (ac_wait_sync), and an
-- outbox row NATS refuses for good is marked instead of retried forever.
CREATE FUNCTION ac_session_id() RETURNS text
	AS 'MODULE_PATHNAME', 'ac_session_id'
	LANGUAGE C STRICT STABLE PARALLEL SAFE;
ALTER TABLE ac_schedule_intents ADD COLUMN origin text;
ALTER TABLE ac_schedule_intents ALTER COLUMN origin SET DEFAULT ac_session_id();
ALTER TABLE ac_outbox ADD COLUMN error_permanent boolean NOT NULL DEFAULT false;
ALTER TABLE ac_outbox ADD COLUMN origin text;
ALTER TABLE ac_outbox ALTER COLUMN origin SET DEFAULT ac_session_id();
ALTER TABLE ac_start_outbox ADD COLUMN origin text;
ALTER TABLE ac_start_outbox ALTER COLUMN origin SET DEFAULT ac_session_id();

CREATE OR REPLACE FUNCTION ac_wait_sync(timeout interval DEFAULT '30 seconds') RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	me text := @extschema@.ac_session_id();
	my_xid xid := pg_catalog.pg_current_xact_id_if_assigned()::text::xid;
	ids uuid[];
	revs bigint[];
	origins text[];
	max_pub bigint;
	starts bigint[];
	deadline timestamptz := pg_catalog.clock_timestamp() + timeout;
	remaining bigint;
	failure record;
BEGIN
	IF pg_catalog.current_setting('transaction_isolation') <> 'read committed' THEN
		RAISE EXCEPTION 'ac_wait_sync needs READ COMMITTED isolation, not %',
			pg_catalog.current_setting('transaction_isolation')
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'Under one snapshot for the whole transaction it would never see a change applied; call it in a READ COMMITTED transaction.';
	END IF;
	IF my_xid IS NOT NULL AND (
		EXISTS (SELECT 1 FROM @extschema@.ac_schedule_intents WHERE xmin = my_xid)
		OR EXISTS (SELECT 1 FROM @extschema@.ac_outbox WHERE xmin = my_xid)
		OR EXISTS (SELECT 1 FROM @extschema@.ac_start_outbox WHERE xmin = my_xid)) THEN
		RAISE EXCEPTION 'ac_wait_sync cannot wait for changes made by its own transaction'
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'Commit the changes first, then call ac_wait_sync().';
	END IF;
	SELECT pg_catalog.array_agg(i.activity_id), pg_catalog.array_agg(i.revision),
		   pg_catalog.array_agg(i.origin)
	  INTO ids, revs, origins
	FROM @extschema@.ac_schedule_intents i
	LEFT JOIN @extschema@.ac_schedule_sync s USING (activity_id)
	WHERE i.revision > coalesce(s.applied_revision, 0)
	  -- with manage_schedules off another server applies them: never here
	  AND coalesce(pg_catalog.current_setting('activity_core.manage_schedules', true)::boolean, true);
	SELECT pg_catalog.max(o.id) INTO max_pub FROM @extschema@.ac_outbox o WHERE NOT o.error_permanent;
	SELECT pg_catalog.array_agg(o.id) INTO starts FROM @extschema@.ac_start_outbox o
	WHERE NOT o.error_permanent;
	LOOP
		-- the first failure for good of one of this session's changes
		SELECT t.id, s.last_error INTO failure
		FROM ROWS FROM (pg_catalog.unnest(ids), pg_catalog.unnest(revs), pg_catalog.unnest(origins))
			AS t(id, rev, origin)
		JOIN @extschema@.ac_schedule_sync s ON s.activity_id = t.id
		WHERE t.origin = me AND s.error_permanent AND s.attempted_revision >= t.rev
		  AND s.applied_revision < t.rev
		LIMIT 1;
		IF FOUND THEN
			RAISE EXCEPTION 'schedule of activity % was not applied: %', failure.id, failure.last_error
				USING ERRCODE = 'external_routine_exception',
					  HINT = 'See ac_sync_status; fix the definition and the dispatcher retries it.';
		END IF;
		SELECT o.workflow_id AS id, o.last_error INTO failure
		FROM @extschema@.ac_start_outbox o
		WHERE o.id = ANY (starts) AND o.error_permanent AND o.origin = me LIMIT 1;
		IF FOUND THEN
			RAISE EXCEPTION 'workflow % was not started: %', failure.id, failure.last_error
				USING ERRCODE = 'external_routine_exception',
					  HINT = 'See ac_start_outbox.';
		END IF;
		SELECT o.msg_id AS id, o.last_error INTO failure
		FROM @extschema@.ac_outbox o
		WHERE o.id <= max_pub AND o.error_permanent AND o.origin = me LIMIT 1;
		IF FOUND THEN
			RAISE EXCEPTION 'event % was not published: %', failure.id, failure.last_error
				USING ERRCODE = 'external_routine_exception',
					  HINT = 'See ac_outbox WHERE error_permanent.';
		END IF;
		-- what is neither applied nor failed for good
		SELECT pg_catalog.count(*) INTO remaining
		FROM ROWS FROM (pg_catalog.unnest(ids), pg_catalog.unnest(revs)) AS t(id, rev)
		JOIN @extschema@.ac_schedule_intents i ON i.activity_id = t.id
		LEFT JOIN @extschema@.ac_schedule_sync s ON s.activity_id = t.id
		WHERE coalesce(s.applied_revision, 0) < t.rev
		  AND NOT (coalesce(s.error_permanent, false) AND s.attempted_revision >= t.rev);
		remaining := remaining
			+ (SELECT pg_catalog.count(*) FROM @extschema@.ac_outbox o
			   WHERE o.id <= max_pub AND NOT o.error_permanent)
			+ (SELECT pg_catalog.count(*) FROM @extschema@.ac_start_outbox o
			   WHERE o.id = ANY (starts) AND NOT o.error_permanent);
		IF remaining = 0 THEN
			RETURN true;
		END IF;
		IF pg_catalog.clock_timestamp() >= deadline THEN
			SELECT e.last_error INTO failure FROM (
				SELECT s.last_error
				FROM ROWS FROM (pg_catalog.unnest(ids), pg_catalog.unnest(revs)) AS t(id, rev)
				JOIN @extschema@.ac_schedule_sync s ON s.activity_id = t.id
				WHERE s.last_error IS NOT NULL AND s.applied_revision < t.rev
				UNION ALL
				SELECT o.last_error FROM @extschema@.ac_outbox o
				WHERE o.id <= max_pub AND o.last_error IS NOT NULL
				UNION ALL
				SELECT o.last_error FROM @extschema@.ac_start_outbox o
				WHERE o.id = ANY (starts) AND o.last_error IS NOT NULL) e
			LIMIT 1;
			IF FOUND THEN
				RAISE WARNING '% change(s) still pending; last error: %', remaining, failure.last_error;
			END IF;
			RETURN false;
		END IF;
		PERFORM pg_catalog.pg_sleep(0.05);
	END LOOP;
END
$$;

-- ac_health() gains a hint per failing check, and rows for failures.
DROP FUNCTION ac_health();
CREATE FUNCTION ac_health(OUT "check" text, OUT ok boolean, OUT detail text, OUT hint text)
RETURNS SETOF record
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	preloaded boolean := pg_catalog.current_setting('shared_preload_libraries') ~ '(^|[ ,])"?activity_core"?($|[ ,])';
	served text := pg_catalog.current_setting('activity_core.database');
	nats text := pg_catalog.regexp_replace(pg_catalog.current_setting('activity_core.nats_url'),
										   '://[^@/,]*@', '://***@', 'g');
	n bigint;
	oldest interval;
	r record;
	standby boolean := pg_catalog.pg_is_in_recovery();
BEGIN
	IF standby THEN
		RETURN QUERY SELECT 'standby'::text, true,
			'this server is a standby (in recovery): its background workers start only at promotion, so nothing is routed, published, started or synced from here'::text,
			'Read ac_health() on the primary; after pg_ctl promote (or SELECT pg_promote()) the workers start by themselves.'::text;
	END IF;
	IF NOT coalesce(pg_catalog.current_setting('activity_core.manage_schedules', true)::boolean, true) THEN
		SELECT pg_catalog.count(*) INTO n FROM @extschema@.ac_sync_status WHERE pending;
		RETURN QUERY SELECT 'schedules_managed'::text, true,
			'activity_core.manage_schedules is off: this server neither syncs nor reconciles schedules; '
				|| n || ' schedule change(s) wait here',
			'Exactly one server that shares the Temporal namespace must have activity_core.manage_schedules = on; turn it on here only when that server is gone.'::text;
	END IF;
	-- while Temporal does not answer, the namespace and search attribute
	-- checks fail too: their hint points to the cause
	RETURN QUERY SELECT t."check", t.ok, t.detail,
		CASE WHEN t.ok THEN NULL
			 WHEN t."check" = 'temporal_reachable' THEN
				'Start Temporal or fix activity_core.temporal_url (and its TLS settings), then SELECT pg_reload_conf().'
			 WHEN NOT t.reachable THEN
				'Temporal does not answer: fix the temporal_reachable check first, then look again.'
			 WHEN t."check" = 'temporal_namespace' THEN
				'Create the namespace (temporal operator namespace create) or set activity_core.temporal_namespace.'
			 ELSE 'Register it: temporal operator search-attribute create --name activity_id --type Keyword.' END
	FROM (SELECT h."check", h.ok, h.detail,
				 coalesce(pg_catalog.bool_or(h.ok) FILTER (WHERE h."check" = 'temporal_reachable') OVER (), false)
					 AS reachable
		  FROM @extschema@.ac_temporal_health() h) t;

	IF pg_catalog.current_database() <> served THEN
		RETURN QUERY SELECT 'workers_database'::text, false,
			pg_catalog.format('the workers serve database %s, not this one (%s): nothing queued here is sent',
							  served, pg_catalog.current_database()),
			'Set activity_core.database to this database and restart, or use the extension in the database the workers serve.'::text;
	END IF;

	SELECT * INTO r FROM @extschema@.ac_router_status();
	RETURN QUERY SELECT 'nats_router'::text, r.state = 'connected',
		CASE r.state
			WHEN 'connected' THEN 'the router is connected to ' || nats || ' and consuming '
				|| pg_catalog.current_setting('activity_core.stream_name') || '/'
				|| pg_catalog.current_setting('activity_core.consumer_name')
				|| coalesce('; ' || r.error, '')
			WHEN 'failing' THEN 'the router cannot use NATS at ' || nats || ': ' || coalesce(r.error, 'unknown error')
			ELSE 'the router has not reported on NATS at ' || nats || ' yet' END,
		CASE WHEN r.state = 'connected' THEN NULL
			 ELSE 'Check that nats-server runs with JetStream at activity_core.nats_url and that its credentials and TLS settings are right; the router retries by itself.' END;

	SELECT * INTO r FROM @extschema@.ac_publisher_status();
	RETURN QUERY SELECT 'nats_publisher'::text, r.state <> 'failing',
		CASE r.state
			WHEN 'connected' THEN 'the dispatcher publishes ac_outbox to ' || nats || coalesce('; ' || r.error, '')
			WHEN 'failing' THEN 'the dispatcher cannot publish to NATS at ' || nats || ': ' || coalesce(r.error, 'unknown error')
			ELSE 'the dispatcher has not published to NATS at ' || nats || ' yet (it connects when ac_outbox has an entry)' END,
		CASE WHEN r.state = 'failing' THEN
			'Check that nats-server runs with JetStream at activity_core.nats_url and that its credentials and TLS settings are right; the dispatcher retries each entry with backoff.' END;

	FOR r IN SELECT w.name, w.label FROM (VALUES ('activity_core dispatcher', 'dispatcher_running'),
											   ('activity_core router', 'router_running')) AS w(name, label) LOOP
		SELECT pg_catalog.count(*) INTO n FROM pg_catalog.pg_stat_activity a
		WHERE a.backend_type = r.name AND a.datname = served;
		RETURN QUERY SELECT r.label::text, n > 0 OR standby,
			CASE WHEN n > 0 THEN 'running for database ' || served
				 WHEN standby THEN 'not running: this server is a standby; the workers start at promotion'
				 WHEN NOT preloaded THEN 'not running: activity_core is not in shared_preload_libraries'
				 ELSE 'not running for database ' || served || ' (it restarts 5 s after a crash; see the server log)' END,
			CASE WHEN n > 0 OR standby THEN NULL
				 WHEN NOT preloaded THEN 'Add activity_core to shared_preload_libraries and restart PostgreSQL.'
				 ELSE 'Look for "activity_core" errors in the server log.' END;
	END LOOP;

	SELECT pg_catalog.count(*) INTO n FROM @extschema@.ac_sync_status WHERE pending;
	RETURN QUERY SELECT 'schedule_backlog'::text, n < 1000, n || ' schedule change(s) pending',
		CASE WHEN n >= 1000 THEN 'The dispatcher is behind or Temporal is slow: see ac_sync_status and the temporal_reachable check.' END;
	SELECT pg_catalog.count(*) INTO n FROM @extschema@.ac_sync_status WHERE error_kind = 'permanent';
	RETURN QUERY SELECT 'schedule_failures'::text, n = 0, n || ' definition(s) whose schedule Temporal refused',
		CASE WHEN n > 0 THEN 'See SELECT * FROM ac_sync_status WHERE error_kind = ''permanent''; fix those definitions and the dispatcher retries them.' END;

	SELECT (SELECT pg_catalog.count(*) FROM @extschema@.ac_outbox WHERE NOT error_permanent)
		 + (SELECT pg_catalog.count(*) FROM @extschema@.ac_start_outbox WHERE NOT error_permanent) INTO n;
	RETURN QUERY SELECT 'outbox_backlog'::text, n < 1000, n || ' publish(es) and start(s) pending',
		CASE WHEN n >= 1000 THEN 'The dispatcher is behind, or NATS or Temporal is down: see the outbox_failing check.' END;
	SELECT pg_catalog.count(*), pg_catalog.max(pg_catalog.now() - created_at) INTO n, oldest FROM (
		SELECT created_at FROM @extschema@.ac_outbox WHERE NOT error_permanent AND attempts >= 5
		UNION ALL
		SELECT created_at FROM @extschema@.ac_start_outbox WHERE NOT error_permanent AND attempts >= 5) f;
	RETURN QUERY SELECT 'outbox_failing'::text, n = 0,
		n || ' publish(es) and start(s) failed 5 times or more'
			|| CASE WHEN n > 0 THEN ', the oldest queued ' || pg_catalog.date_trunc('second', oldest) || ' ago' ELSE '' END,
		CASE WHEN n > 0 THEN 'See last_error in ac_outbox and ac_start_outbox: NATS or Temporal refuses or is unreachable; they are retried by themselves.' END;
	SELECT (SELECT pg_catalog.count(*) FROM @extschema@.ac_outbox WHERE error_permanent)
		 + (SELECT pg_catalog.count(*) FROM @extschema@.ac_start_outbox WHERE error_permanent) INTO n;
	RETURN QUERY SELECT 'outbox_failures'::text, n = 0, n || ' publish(es) and start(s) refused for good',
		CASE WHEN n > 0 THEN 'See ac_outbox and ac_start_outbox WHERE error_permanent: last_error says why; delete the rows once dealt with.' END;
	SELECT pg_catalog.count(*) INTO n FROM @extschema@.ac_dead_letters WHERE replayed_at IS NULL;
	RETURN QUERY SELECT 'dead_letters'::text, n = 0, n || ' dead letter(s) not replayed',
		CASE WHEN n > 0 THEN 'See ac_dead_letters.reason; fix the cause and SELECT ac_replay_dead_letter(id), or delete them.' END;
END
$$;

COMMENT ON FUNCTION ac_health() IS
	'One row per check: Temporal, namespace, search attribute, NATS, workers, backlogs, failures, dead letters; a hint for each failing one';

REVOKE ALL ON FUNCTION ac_health() FROM PUBLIC;

-- Limits: identifier checks of Temporal and NATS
CREATE FUNCTION ac_check_event_type(event_type text) RETURNS text
	AS 'MODULE_PATHNAME', 'ac_check_event_type'
	LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION ac_check_event_type(text) IS
	'NULL when the event type can follow "<prefix>." in a NATS subject, otherwise the reason it cannot';

-- Limits: the cron checks read the time zone database
ALTER FUNCTION ac_check_cron(text) STABLE;
ALTER FUNCTION ac_cron_spec(text, text) STABLE;

-- Workers: a relcache invalidation of the definitions at every committed
-- change (TRUNCATE and COMMIT PREPARED too) keeps the router's index fresh.
CREATE FUNCTION ac_definitions_invalidate() RETURNS trigger
	AS 'MODULE_PATHNAME', 'ac_definitions_invalidate'
	LANGUAGE C;

REVOKE ALL ON FUNCTION ac_definitions_invalidate() FROM PUBLIC;

CREATE TRIGGER ac_definitions_invalidate
	AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ac_activity_definitions
	FOR EACH STATEMENT EXECUTE FUNCTION ac_definitions_invalidate();

-- ac_publish() checks every limit in C, the NATS server's max_payload among them.
CREATE FUNCTION ac_check_publish(event_type text, payload jsonb, event_id text) RETURNS void
	AS 'MODULE_PATHNAME', 'ac_check_publish'
	LANGUAGE C STABLE PARALLEL SAFE;

COMMENT ON FUNCTION ac_check_publish(text, jsonb, text) IS
	'Raises the error ac_publish() gives for these arguments, if any';

-- Publish an event to <prefix>.<event_type> once the transaction commits:
-- in C (checks, envelope and the outbox row in one call, the INSERT
-- prepared once per backend).
CREATE OR REPLACE FUNCTION ac_publish(event_type text, payload jsonb, event_id text DEFAULT NULL)
RETURNS text
	AS 'MODULE_PATHNAME', 'ac_publish'
	LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

-- Layout: the benchmark-only ac_router_bench() leaves the default install;
-- bench/setup.sql creates it for the benchmarks.
DROP FUNCTION ac_router_bench(jsonb, integer);

-- TLS and credentials: the dispatcher reports its NATS connection
-- (ac_health() above shows it as the nats_publisher check).
CREATE FUNCTION ac_publisher_status(OUT state text, OUT error text)
	AS 'MODULE_PATHNAME', 'ac_publisher_status'
	LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION ac_publisher_status() FROM PUBLIC;

-- Dead letters: the router looks up the dead letter of a redelivered
-- message by its stream sequence before it writes another one.
CREATE INDEX ac_dead_letters_stream_seq ON ac_dead_letters (stream_seq);

-- Observability: ac_stats shows every series of /metrics (failure
-- counters, histograms as bucket rows, gauges) with its labels, type and
-- help; ac_stats_reset() zeroes the counters and histograms.
CREATE FUNCTION ac_stats_series(OUT name text, OUT value bigint, OUT labels jsonb,
	OUT type text, OUT value_float double precision, OUT help text) RETURNS SETOF record
	AS 'MODULE_PATHNAME', 'ac_stats_series'
	LANGUAGE C VOLATILE;
CREATE OR REPLACE VIEW ac_stats AS
SELECT name, value, labels, type, value_float, help FROM ac_stats_series();
DROP FUNCTION ac_stats_counters();
COMMENT ON VIEW ac_stats IS
	'The figures of /metrics: counters since the server started or ac_stats_reset(), histograms as bucket rows, gauges';
CREATE FUNCTION ac_stats_reset() RETURNS void
	AS 'MODULE_PATHNAME', 'ac_stats_reset'
	LANGUAGE C VOLATILE;
COMMENT ON FUNCTION ac_stats_reset() IS
	'Set every counter and histogram of ac_stats and /metrics back to zero (gauges are left alone)';
REVOKE ALL ON FUNCTION ac_stats_reset() FROM PUBLIC;

-- Standby and several servers: ac_sync_status says why a schedule change
-- waits while activity_core.manage_schedules is off (another server owns the
-- schedules).  ac_health() above says when the server is a standby or does
-- not manage schedules, and ac_wait_sync() above does not wait for changes
-- this server never applies.
CREATE OR REPLACE VIEW ac_sync_status AS
SELECT coalesce(d.id, i.activity_id) AS activity_id,
	   d.name,
	   d.trigger_type,
	   d.enabled,
	   CASE WHEN d.trigger_type = 'cron' OR i.activity_id IS NOT NULL
			THEN 'activity-schedule-' || coalesce(d.id, i.activity_id) END AS schedule_id,
	   coalesce(i.revision, s.applied_revision, 0) AS desired_revision,
	   coalesce(s.applied_revision, 0) AS applied_revision,
	   coalesce(i.revision > coalesce(s.applied_revision, 0), false) AS pending,
	   coalesce(s.attempts, 0) AS attempts,
	   coalesce(s.last_error,
				CASE WHEN i.revision > coalesce(s.applied_revision, 0)
						  AND NOT coalesce(pg_catalog.current_setting('activity_core.manage_schedules', true)::boolean, true)
					 THEN 'not synced: activity_core.manage_schedules is off on this server (another server owns the schedules)' END) AS last_error,
	   CASE WHEN s.last_error IS NULL THEN NULL
			WHEN s.error_permanent THEN 'permanent' ELSE 'transient' END AS error_kind,
	   s.next_attempt_at,
	   s.last_attempt_at,
	   s.last_applied_at,
	   d.id IS NULL AS deleted
FROM ac_activity_definitions d
FULL JOIN ac_schedule_intents i ON i.activity_id = d.id
LEFT JOIN ac_schedule_sync s ON s.activity_id = coalesce(d.id, i.activity_id);



-- Table watches: committed row changes of a user's table become events
-- through ac_outbox; a watch is the table's trigger ac_watch (watch.c).
CREATE FUNCTION ac_watch_trigger() RETURNS trigger
	AS 'MODULE_PATHNAME', 'ac_watch_trigger'
	LANGUAGE C;

CREATE FUNCTION ac_watch(tbl regclass, event_type text DEFAULT NULL,
	operations text[] DEFAULT '{insert,update,delete}', columns text[] DEFAULT NULL)
	RETURNS text
	AS 'MODULE_PATHNAME', 'ac_watch'
	LANGUAGE C VOLATILE;

COMMENT ON FUNCTION ac_watch(regclass, text, text[], text[]) IS
	'Publish the committed row changes of a table as events {op, table, new, old}; returns the event type';

CREATE FUNCTION ac_unwatch(tbl regclass) RETURNS boolean
	AS 'MODULE_PATHNAME', 'ac_unwatch'
	LANGUAGE C STRICT VOLATILE;

COMMENT ON FUNCTION ac_unwatch(regclass) IS
	'Stop publishing the row changes of a table; false when it was not watched';

CREATE FUNCTION ac_watch_list(OUT tbl regclass, OUT event_type text, OUT operations text[],
	OUT columns text[], OUT enabled boolean)
	RETURNS SETOF record
	AS 'MODULE_PATHNAME', 'ac_watch_list'
	LANGUAGE C STABLE;

CREATE VIEW ac_watches AS SELECT * FROM @extschema@.ac_watch_list();

COMMENT ON VIEW ac_watches IS
	'The watched tables: event type, operations, published columns (NULL: all), trigger enabled';

REVOKE ALL ON FUNCTION ac_watch_trigger() FROM PUBLIC;
REVOKE ALL ON FUNCTION ac_watch(regclass, text, text[], text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION ac_unwatch(regclass) FROM PUBLIC;
