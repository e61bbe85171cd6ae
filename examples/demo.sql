-- Sample definitions for `make demo`: one cron, one event and one manual
-- activity, then what the extension made of them.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS activity_core;
RESET client_min_messages;

INSERT INTO ac_activity_definitions (name, description, trigger_type, trigger_config, input)
VALUES
	('nightly-report', 'Builds the sales report every night at 02:30 Berlin time', 'cron',
	 '{"cron_expression": "30 2 * * *", "timezone": "europe/berlin", "misfire_policy": "catchup"}',
	 '{"report": "sales"}'),
	('order-created-mailer', 'Sends the confirmation mail for EU orders', 'event',
	 '{"event_type": "order.created", "filters": {"region": "eu"}}',
	 '{"template": "order-confirmation"}'),
	('reindex-search', 'Rebuilds the search index when someone asks for it', 'manual',
	 '{}', '{"full": true}')
ON CONFLICT (name) DO NOTHING;

\echo
\echo Definitions, with trigger_config as the extension normalised it:
SELECT name, trigger_type, enabled, trigger_config FROM ac_activity_definitions ORDER BY name;

\echo A definition the validator refuses (the error is expected):
\set ON_ERROR_STOP 0
INSERT INTO ac_activity_definitions (name, trigger_type, trigger_config)
VALUES ('broken', 'cron', '{"cron_expression": "0 25 * * *"}');
\set ON_ERROR_STOP 1
