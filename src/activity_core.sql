-- activity_core: install script (the version is set by activity_core.control)
\echo Use "CREATE EXTENSION activity_core" to load this file. \quit

-- The definitions: the desired state of every activity.
CREATE TABLE ac_activity_definitions (
	id uuid PRIMARY KEY DEFAULT pg_catalog.gen_random_uuid(),
	name text NOT NULL UNIQUE,
	description text,
	enabled boolean NOT NULL DEFAULT true,
	trigger_type text NOT NULL,
	trigger_config jsonb NOT NULL DEFAULT '{}',
	workflow_type text NOT NULL DEFAULT 'RunActivityWorkflow',
	task_queue text NOT NULL DEFAULT 'orchestrator-tq',
	input jsonb NOT NULL DEFAULT '{}',
	created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
	updated_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);

COMMENT ON TABLE ac_activity_definitions IS
	'Activity definitions: what workflow to start, and when (cron, event or manual)';

SELECT pg_catalog.pg_extension_config_dump('ac_activity_definitions', '');

CREATE FUNCTION ac_definitions_validate() RETURNS trigger
	AS 'MODULE_PATHNAME', 'ac_definitions_validate'
	LANGUAGE C;

CREATE TRIGGER ac_definitions_validate
	BEFORE INSERT OR UPDATE ON ac_activity_definitions
	FOR EACH ROW EXECUTE FUNCTION ac_definitions_validate();

CREATE FUNCTION ac_check_cron(expression text) RETURNS text
	AS 'MODULE_PATHNAME', 'ac_check_cron'
	LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION ac_check_cron(text) IS
	'NULL when Temporal accepts the cron expression, otherwise the reason it does not';

CREATE FUNCTION ac_version() RETURNS text
	AS 'MODULE_PATHNAME', 'ac_version'
	LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;
