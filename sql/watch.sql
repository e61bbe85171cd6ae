-- Table watches: ac_watch/ac_unwatch/ac_watches, the envelopes the trigger
-- writes to ac_outbox (read inside the writing transaction, which is then
-- rolled back, so the dispatcher never sees them), and who may watch.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS activity_core;
RESET client_min_messages;
\set VERBOSITY default

CREATE SCHEMA watch_s;
CREATE TABLE watch_s.orders (id int PRIMARY KEY, status text, amount numeric, card text, meta jsonb);
SELECT ac_watch('watch_s.orders');
SELECT * FROM ac_watches WHERE tbl = 'watch_s.orders'::regclass;

-- the envelopes of this transaction's row changes, without the fresh parts
CREATE FUNCTION pg_temp.mine() RETURNS TABLE (subject text, id_is_msg_id boolean, envelope jsonb)
LANGUAGE sql AS $$
	SELECT o.subject, o.msg_id = (convert_from(o.data, 'UTF8')::jsonb ->> 'event_id'),
		   convert_from(o.data, 'UTF8')::jsonb - 'event_id' - 'occurred_at'
	FROM ac_outbox o WHERE o.xmin::text = pg_current_xact_id()::text ORDER BY o.id
$$;

BEGIN;
INSERT INTO watch_s.orders VALUES (1, 'open', 10.50, '4111', '{"a": [1, null]}'), (2, 'new', 20, NULL, NULL);
UPDATE watch_s.orders SET status = 'paid' WHERE id = 1;
DELETE FROM watch_s.orders WHERE id = 2;
COPY watch_s.orders FROM STDIN;
3	open	1	\N	\N
4	open	2	\N	\N
\.
SELECT * FROM pg_temp.mine();
-- every change has its own event id, and occurred_at is the transaction's start
SELECT count(DISTINCT msg_id) AS ids, bool_and((convert_from(data, 'UTF8')::jsonb ->> 'occurred_at')::timestamptz = now()) AS at_start
FROM ac_outbox WHERE xmin::text = pg_current_xact_id()::text;
ROLLBACK;

-- a rolled-back savepoint takes its events with it
BEGIN;
INSERT INTO watch_s.orders VALUES (5, 'open', 1, NULL, NULL);
SAVEPOINT s;
UPDATE watch_s.orders SET status = 'paid' WHERE id = 5;
ROLLBACK TO SAVEPOINT s;
SELECT envelope -> 'payload' ->> 'op' AS op FROM pg_temp.mine();
ROLLBACK;

-- columns: only they leave the database; an update changing none publishes nothing
INSERT INTO watch_s.orders VALUES (6, 'open', 1, '4111', NULL);
SELECT ac_watch('watch_s.orders', 'shop.order', '{update,delete}', '{status,amount}');
SELECT * FROM ac_watches WHERE tbl = 'watch_s.orders'::regclass;
BEGIN;
UPDATE watch_s.orders SET card = '5500' WHERE id = 6;
UPDATE watch_s.orders SET status = 'open' WHERE id = 6;
UPDATE watch_s.orders SET status = 'paid', card = '6011' WHERE id = 6;
INSERT INTO watch_s.orders VALUES (7, 'open', 1, NULL, NULL);
DELETE FROM watch_s.orders WHERE id = 6;
SELECT * FROM pg_temp.mine();
ROLLBACK;

-- a rename keeps the event type; dropping the table drops the watch
ALTER TABLE watch_s.orders RENAME TO orders_renamed;
SELECT * FROM ac_watches WHERE event_type = 'shop.order';
BEGIN;
UPDATE watch_s.orders_renamed SET status = 'x' WHERE id = 6;
SELECT subject, envelope ->> 'type' AS type, envelope -> 'payload' ->> 'table' AS tbl FROM pg_temp.mine();
ROLLBACK;
DROP TABLE watch_s.orders_renamed;
SELECT count(*) FROM ac_watches WHERE event_type = 'shop.order';

-- refused
CREATE TABLE watch_s.t (id int, "odd name" text);
SELECT ac_watch('watch_s.t', 'bad type');
SELECT ac_watch('watch_s.t', 'a.b', '{insert,truncate}');
SELECT ac_watch('watch_s.t', 'a.b', '{}');
SELECT ac_watch('watch_s.t', 'a.b', '{insert,NULL}');
SELECT ac_watch('watch_s.t', 'a.b', NULL, '{}');
SELECT ac_watch('watch_s.t', 'a.b', NULL, '{nope}');
SELECT ac_watch('watch_s.t', 'a.b', NULL, '{"odd name"}');
SELECT ac_watch(NULL);
CREATE VIEW watch_s.v AS SELECT 1 AS x;
SELECT ac_watch('watch_s.v');
CREATE TEMP TABLE tt (id int);
SELECT ac_watch('pg_temp.tt');
SELECT ac_watch('ac_outbox');
SELECT ac_watch('pg_catalog.pg_class');
CREATE TABLE "watch_s"."with space" (id int);
SELECT ac_watch('watch_s."with space"');

-- only the owner may watch; nobody may attach the trigger function by hand
CREATE ROLE ac_watch_owner;
CREATE ROLE ac_watch_other;
GRANT USAGE, CREATE ON SCHEMA watch_s TO ac_watch_owner, ac_watch_other;
GRANT EXECUTE ON FUNCTION ac_watch(regclass, text, text[], text[]), ac_unwatch(regclass)
	TO ac_watch_owner, ac_watch_other;
SET ROLE ac_watch_owner;
CREATE TABLE watch_s.mine (id int);
SELECT ac_watch('watch_s.mine');
CREATE TRIGGER by_hand AFTER INSERT ON watch_s.mine FOR EACH ROW EXECUTE FUNCTION ac_watch_trigger('x.y');
-- a writer without any right on ac_outbox still publishes through the watch
GRANT INSERT ON watch_s.mine TO ac_watch_other;
SET ROLE ac_watch_other;
SELECT ac_watch('watch_s.mine');
SELECT ac_unwatch('watch_s.mine');
SELECT * FROM ac_outbox;
BEGIN;
INSERT INTO watch_s.mine VALUES (1);
RESET ROLE;
SELECT subject, envelope -> 'payload' AS payload FROM pg_temp.mine();
ROLLBACK;
RESET ROLE;
SELECT ac_watch_trigger();
SELECT tbl, event_type FROM ac_watches WHERE tbl::text LIKE 'watch_s.%' ORDER BY 1;
DROP SCHEMA watch_s CASCADE;
DROP OWNED BY ac_watch_owner, ac_watch_other;
DROP ROLE ac_watch_owner;
DROP ROLE ac_watch_other;
