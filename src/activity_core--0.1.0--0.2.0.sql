-- activity_core: upgrade from 0.1.0 to 0.2.0
\echo Use "ALTER EXTENSION activity_core UPDATE TO '0.2.0'" to load this file. \quit

-- Every change below is also made in activity_core.sql, the 0.2.0 install
-- script: a fresh install and an upgraded 0.1.0 must have identical catalogs.

-- Workers: an outbox row NATS refuses for good is marked and skipped.
ALTER TABLE ac_outbox ADD COLUMN error_permanent boolean NOT NULL DEFAULT false;
