/*-------------------------------------------------------------------------
 *
 * observe.c
 *	  Histograms, failure counters and gauges in shared memory: what the
 *	  workers record, what /metrics and ac_stats show, and ac_stats_reset().
 *
 * Every figure is a 64-bit atomic in AcShared (shmem.c), written by the
 * process that does the work and read by the metrics worker and by
 * backends; no lock is taken.  A histogram keeps a count per bucket (fixed
 * upper bounds, from 5 ms to an hour, then +Inf) and the sum of the
 * observations in microseconds; the bucket counts are made cumulative only
 * when shown.  Every recording function is plain C on atomics and may run
 * anywhere a worker's main thread runs; none is ever called from a library
 * thread.
 *
 * Gauges that need SQL (the outboxes' backlog) are measured by the
 * dispatcher on its own main loop, in a transaction of its own, at most
 * once a second (AcRefreshOutboxGauges, run as one of its drains); the
 * router stores the consumer's pending counts (AcSetConsumerPending) and
 * a reconcile its outcome (AcReconcileSucceeded).  Ages are computed when
 * read, from the stored timestamps, so they keep growing between two
 * measurements.
 *
 * AcEachSeries() walks every series in one order, with its family's type
 * and help text, so that /metrics (metrics.c) and the ac_stats view show
 * the same figures under the same names.
 *
 * IDENTIFICATION
 *	  src/observe.c
 *
 *-------------------------------------------------------------------------
 */
#include "activity_core.h"

#include <math.h>

#include "access/htup_details.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

PG_FUNCTION_INFO_V1(ac_stats_series);
PG_FUNCTION_INFO_V1(ac_stats_reset);

/* Upper bounds of the buckets, in seconds; +Inf follows. */
static const double bucket_bounds[AC_HIST_BUCKETS] = {
	0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600
};
static const char *const bucket_labels[AC_HIST_BUCKETS + 1] = {
	"0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10",
	"30", "60", "300", "900", "3600", "+Inf"
};

/* Label values of the operations, the failure classes and the outboxes. */
static const char *const operation_names[AC_NUM_OPERATIONS] = {
	"start", "schedule_create", "schedule_update", "schedule_delete",
	"schedule_describe", "schedule_backfill", "schedule_matching_times",
	"schedule_list", "workflow_list", "health", "other", "publish"
};
static const char *const failure_names[AC_NUM_FAILURES] = {
	"transient", "permanent", "timeout"
};
static const char *const outbox_names[AC_NUM_OUTBOXES] = {
	"schedule", "start", "publish"
};

/* How often the dispatcher measures the outboxes. */
#define OUTBOX_GAUGES_EVERY_MS 1000

/* Add one observation, in seconds, to a histogram. */
void
AcObserveSeconds(AcHistogram *h, double seconds)
{
	int			b = 0;

	if (ac_shared == NULL || h == NULL)
		return;
	if (!(seconds >= 0))
		seconds = 0;			/* also NaN */
	while (b < AC_HIST_BUCKETS && seconds > bucket_bounds[b])
		b++;
	pg_atomic_fetch_add_u64(&h->buckets[b], 1);
	pg_atomic_fetch_add_u64(&h->sum_us, (uint64) (Min(seconds, 1e9) * 1e6));
}

/* The latency of one answered request to Temporal. */
void
AcObserveLatency(AcOperation op, double seconds)
{
	if (ac_shared && op >= 0 && op < AC_NUM_TEMPORAL_OPERATIONS)
		AcObserveSeconds(&ac_shared->temporal_latency[op], seconds);
}

/*
 * The age of an event when Temporal answered its start: now less the time
 * JetStream stored the message (nanoseconds since the Unix epoch).
 */
void
AcObserveEventAge(int64 nats_timestamp_ns)
{
	TimestampTz now = GetCurrentTimestamp();
	int64		now_unix_us = now + (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY;

	if (ac_shared == NULL || nats_timestamp_ns <= 0)
		return;
	AcObserveSeconds(&ac_shared->event_age,
					 (double) (now_unix_us - nats_timestamp_ns / 1000) / 1e6);
}

/* The age of an outbox entry when it was drained. */
void
AcObserveOutboxAge(AcOutbox outbox, double seconds)
{
	if (ac_shared)
		AcObserveSeconds(&ac_shared->outbox_age[outbox], seconds);
}

/* Count a failed request of an operation. */
void
AcCountFailure(AcOperation op, AcFailure failure)
{
	if (ac_shared)
		pg_atomic_fetch_add_u64(&ac_shared->failures[op][failure], 1);
}

/* Record the durable consumer's pending counts (the router). */
void
AcSetConsumerPending(uint64 pending, uint64 ack_pending)
{
	if (ac_shared == NULL)
		return;
	pg_atomic_write_u64(&ac_shared->gauges.consumer_pending, pending);
	pg_atomic_write_u64(&ac_shared->gauges.consumer_ack_pending, ack_pending);
	pg_atomic_write_u64(&ac_shared->gauges.consumer_measured_at, (uint64) GetCurrentTimestamp());
}

/* Record a reconcile that ran to its end, and how many schedules drifted. */
void
AcReconcileSucceeded(int drifted)
{
	if (ac_shared == NULL)
		return;
	pg_atomic_write_u64(&ac_shared->gauges.reconcile_drifted, (uint64) Max(drifted, 0));
	pg_atomic_write_u64(&ac_shared->gauges.last_reconcile, (uint64) GetCurrentTimestamp());
}

/*
 * Measure the outboxes: entries pending, failed for good, and the oldest
 * pending one.  Run by the dispatcher as one of its drains (so in its own
 * error recovery), at most once a second; it handles no row, so it returns 0.
 */
int
AcRefreshOutboxGauges(const char *schema, int limit)
{
	static TimestampTz last = 0;
	TimestampTz now = GetCurrentTimestamp();
	const char *q = quote_identifier(schema);
	int			ret;

	if (ac_shared == NULL ||
		(last != 0 && now < TimestampTzPlusMilliseconds(last, OUTBOX_GAUGES_EVERY_MS)))
		return 0;
	last = now;
	AcWorkerBegin();
	ret = SPI_execute(psprintf("SELECT 0, count(*) FILTER (WHERE NOT f), count(*) FILTER (WHERE f), "
							   "  min(at) FILTER (WHERE NOT f) "
							   "FROM (SELECT i.changed_at AS at, coalesce(s.error_permanent "
							   "        AND s.attempted_revision >= i.revision, false) AS f "
							   "      FROM %s.ac_schedule_intents i "
							   "      LEFT JOIN %s.ac_schedule_sync s USING (activity_id) "
							   "      WHERE i.revision > coalesce(s.applied_revision, 0)) p "
							   "UNION ALL SELECT 1, count(*) FILTER (WHERE NOT error_permanent), "
							   "  count(*) FILTER (WHERE error_permanent), "
							   "  min(created_at) FILTER (WHERE NOT error_permanent) FROM %s.ac_start_outbox "
							   "UNION ALL SELECT 2, count(*) FILTER (WHERE NOT error_permanent), "
							   "  count(*) FILTER (WHERE error_permanent), "
							   "  min(created_at) FILTER (WHERE NOT error_permanent) FROM %s.ac_outbox",
							   q, q, q, q), true, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not measure the outboxes: %s", SPI_result_code_string(ret));
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		int			o = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
		int64		pending = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
		int64		failed = DatumGetInt64(SPI_getbinval(tup, desc, 3, &isnull));
		Datum		oldest = SPI_getbinval(tup, desc, 4, &isnull);

		if (o < 0 || o >= AC_NUM_OUTBOXES)
			continue;
		pg_atomic_write_u64(&ac_shared->gauges.outbox_pending[o], (uint64) pending);
		pg_atomic_write_u64(&ac_shared->gauges.outbox_failed[o], (uint64) failed);
		pg_atomic_write_u64(&ac_shared->gauges.outbox_oldest[o],
							isnull ? 0 : (uint64) DatumGetTimestampTz(oldest));
	}
	pg_atomic_write_u64(&ac_shared->gauges.outbox_measured_at, (uint64) now);
	AcWorkerCommit();
	return 0;
}

/* Seconds from a stored timestamp to now (0 when none is stored). */
static double
SecondsSince(uint64 stored, TimestampTz now)
{
	if (stored == 0 || (TimestampTz) stored > now)
		return 0;
	return (double) (now - (TimestampTz) stored) / 1e6;
}

/* Walk the series of one histogram. */
static void
EachHistogram(AcSeriesFn fn, void *arg, AcSeries *s, AcHistogram *h)
{
	uint64		cum = 0;
	int			n = s->nlabels;

	s->keys[n] = "le";
	for (int b = 0; b <= AC_HIST_BUCKETS; b++)
	{
		cum += pg_atomic_read_u64(&h->buckets[b]);
		s->suffix = "_bucket";
		s->nlabels = n + 1;
		s->values[n] = bucket_labels[b];
		s->value = (double) cum;
		fn(s, arg);
		s->first = false;
	}
	s->nlabels = n;
	s->suffix = "_sum";
	s->value = (double) pg_atomic_read_u64(&h->sum_us) / 1e6;
	fn(s, arg);
	s->suffix = "_count";
	s->value = (double) cum;
	fn(s, arg);
}

/* Start a family of series. */
static void
Family(AcSeries *s, const char *family, const char *type, const char *help)
{
	memset(s, 0, sizeof(*s));
	s->family = family;
	s->type = type;
	s->help = help;
	s->suffix = strcmp(type, "counter") == 0 ? "_total" : "";
	s->first = true;
}

/* Emit one series of a family and mark the family begun. */
static void
Emit(AcSeriesFn fn, void *arg, AcSeries *s, double value)
{
	s->value = value;
	fn(s, arg);
	s->first = false;
}

/*
 * Call fn for every series, in the order /metrics shows them.  Reads only
 * shared memory and the settings of the calling process.
 */
void
AcEachSeries(AcSeriesFn fn, void *arg)
{
	AcSeries	s;
	AcGauges   *g;
	TimestampTz now = GetCurrentTimestamp();
	uint64		last;

	if (ac_shared == NULL)
		return;
	g = &ac_shared->gauges;
	for (int i = 0; i < AC_NUM_COUNTERS; i++)
	{
		Family(&s, ac_counter_names[i], "counter", ac_counter_help[i]);
		Emit(fn, arg, &s, (double) pg_atomic_read_u64(&ac_shared->counters[i]));
	}

	Family(&s, "request_failures", "counter",
		   "Failed requests to Temporal (and publishes to NATS) by operation and class: transient (retried), permanent (refused for good), timeout.");
	s.nlabels = 2;
	s.keys[0] = "operation";
	s.keys[1] = "class";
	for (int op = 0; op < AC_NUM_OPERATIONS; op++)
		for (int c = 0; c < AC_NUM_FAILURES; c++)
		{
			s.values[0] = operation_names[op];
			s.values[1] = failure_names[c];
			Emit(fn, arg, &s, (double) pg_atomic_read_u64(&ac_shared->failures[op][c]));
		}

	Family(&s, "temporal_request_duration_seconds", "histogram",
		   "Time from sending a request to Temporal to its answer, by operation.");
	for (int op = 0; op < AC_NUM_TEMPORAL_OPERATIONS; op++)
	{
		s.nlabels = 1;
		s.keys[0] = "operation";
		s.values[0] = operation_names[op];
		EachHistogram(fn, arg, &s, &ac_shared->temporal_latency[op]);
	}

	Family(&s, "event_start_age_seconds", "histogram",
		   "Age of an event when Temporal answered the start it caused: from the time JetStream stored the message.");
	EachHistogram(fn, arg, &s, &ac_shared->event_age);

	Family(&s, "outbox_entry_age_seconds", "histogram",
		   "Age of an outbox entry when the dispatcher drained it, by outbox.");
	for (int o = 0; o < AC_NUM_OUTBOXES; o++)
	{
		s.nlabels = 1;
		s.keys[0] = "outbox";
		s.values[0] = outbox_names[o];
		EachHistogram(fn, arg, &s, &ac_shared->outbox_age[o]);
	}

	Family(&s, "outbox_pending", "gauge",
		   "Outbox entries not yet drained (failed for good ones excluded), as the dispatcher last measured, by outbox.");
	s.nlabels = 1;
	s.keys[0] = "outbox";
	for (int o = 0; o < AC_NUM_OUTBOXES; o++)
	{
		s.values[0] = outbox_names[o];
		Emit(fn, arg, &s, (double) pg_atomic_read_u64(&g->outbox_pending[o]));
	}
	Family(&s, "outbox_failed", "gauge",
		   "Outbox entries refused for good and kept for inspection, by outbox.");
	s.nlabels = 1;
	s.keys[0] = "outbox";
	for (int o = 0; o < AC_NUM_OUTBOXES; o++)
	{
		s.values[0] = outbox_names[o];
		Emit(fn, arg, &s, (double) pg_atomic_read_u64(&g->outbox_failed[o]));
	}
	Family(&s, "outbox_oldest_age_seconds", "gauge",
		   "Age of the oldest pending outbox entry (0 when none), by outbox.");
	s.nlabels = 1;
	s.keys[0] = "outbox";
	for (int o = 0; o < AC_NUM_OUTBOXES; o++)
	{
		s.values[0] = outbox_names[o];
		Emit(fn, arg, &s, SecondsSince(pg_atomic_read_u64(&g->outbox_oldest[o]), now));
	}

	Family(&s, "consumer_pending_messages", "gauge",
		   "Messages of the stream not yet delivered to the router's durable consumer (its lag), from consumer info.");
	Emit(fn, arg, &s, (double) pg_atomic_read_u64(&g->consumer_pending));
	Family(&s, "consumer_ack_pending_messages", "gauge",
		   "Messages delivered to the router and not acknowledged yet, from consumer info.");
	Emit(fn, arg, &s, (double) pg_atomic_read_u64(&g->consumer_ack_pending));
	Family(&s, "router_connected", "gauge",
		   "1 while the router is connected to NATS and consuming, else 0.");
	Emit(fn, arg, &s, pg_atomic_read_u32(&ac_shared->router_state) == AC_ROUTER_CONNECTED ? 1 : 0);

	last = pg_atomic_read_u64(&g->last_reconcile);
	Family(&s, "seconds_since_last_reconcile", "gauge",
		   "Seconds since the last full reconcile that ran to its end (since the server started, when none has).");
	Emit(fn, arg, &s, last ? SecondsSince(last, now) : SecondsSince((uint64) PgStartTime, now));
	Family(&s, "reconcile_interval_seconds", "gauge",
		   "The periodic reconcile this server runs: activity_core.reconcile_interval, 0 when it runs none (the setting is 0, or activity_core.manage_schedules is off).");
	/* a server that leaves the schedules to another one never reconciles */
	Emit(fn, arg, &s, ac_manage_schedules ? (double) ac_reconcile_interval_s : 0);
	Family(&s, "schedules_drifted", "gauge",
		   "Schedules that differed from their definition (missing, changed or orphaned) at the last full reconcile.");
	Emit(fn, arg, &s, (double) pg_atomic_read_u64(&g->reconcile_drifted));
}

/* What ac_stats_series collects its rows in. */
typedef struct SeriesRows
{
	ReturnSetInfo *rsinfo;
} SeriesRows;

/* One row of ac_stats_series. */
static void
SeriesRow(const AcSeries *s, void *arg)
{
	SeriesRows *sr = (SeriesRows *) arg;
	Datum		values[6];
	bool		nulls[6] = {false, false, false, false, false, false};
	StringInfoData labels;
	bool		counter = strcmp(s->suffix, "_total") == 0;

	initStringInfo(&labels);
	appendStringInfoChar(&labels, '{');
	for (int i = 0; i < s->nlabels; i++)
	{
		if (i > 0)
			appendStringInfoString(&labels, ", ");
		escape_json(&labels, s->keys[i]);
		appendStringInfoString(&labels, ": ");
		escape_json(&labels, s->values[i]);
	}
	appendStringInfoChar(&labels, '}');
	/* counters keep their names of ac_stats (without _total) */
	values[0] = CStringGetTextDatum(counter ? s->family : psprintf("%s%s", s->family, s->suffix));
	values[1] = Int64GetDatum((int64) floor(Min(s->value, 9.2e18)));
	values[2] = DirectFunctionCall1(jsonb_in, CStringGetDatum(labels.data));
	values[3] = CStringGetTextDatum(s->type);
	values[4] = Float8GetDatum(s->value);
	values[5] = CStringGetTextDatum(s->help);
	tuplestore_putvalues(sr->rsinfo->setResult, sr->rsinfo->setDesc, values, nulls);
}

/*
 * ac_stats_series() returns setof (name, value, labels, type, value_float,
 * help): every series of /metrics, for the ac_stats view.
 */
Datum
ac_stats_series(PG_FUNCTION_ARGS)
{
	SeriesRows	sr;

	AcRequireSelect("ac_stats");
	InitMaterializedSRF(fcinfo, 0);
	if (ac_shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("activity_core must be loaded via shared_preload_libraries to count"),
				 errhint("Add activity_core to shared_preload_libraries and restart PostgreSQL.")));
	sr.rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	AcEachSeries(SeriesRow, &sr);
	return (Datum) 0;
}

/*
 * ac_stats_reset() sets every counter and histogram back to zero; the
 * gauges measure the present and are left alone.
 */
Datum
ac_stats_reset(PG_FUNCTION_ARGS)
{
	if (ac_shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("activity_core must be loaded via shared_preload_libraries to count"),
				 errhint("Add activity_core to shared_preload_libraries and restart PostgreSQL.")));
	for (int i = 0; i < AC_NUM_COUNTERS; i++)
		pg_atomic_write_u64(&ac_shared->counters[i], 0);
	for (int op = 0; op < AC_NUM_OPERATIONS; op++)
		for (int c = 0; c < AC_NUM_FAILURES; c++)
			pg_atomic_write_u64(&ac_shared->failures[op][c], 0);
	for (int h = 0; h < AC_NUM_TEMPORAL_OPERATIONS + 1 + AC_NUM_OUTBOXES; h++)
	{
		AcHistogram *hist = h < AC_NUM_TEMPORAL_OPERATIONS ? &ac_shared->temporal_latency[h] :
			h == AC_NUM_TEMPORAL_OPERATIONS ? &ac_shared->event_age :
			&ac_shared->outbox_age[h - AC_NUM_TEMPORAL_OPERATIONS - 1];

		for (int b = 0; b <= AC_HIST_BUCKETS; b++)
			pg_atomic_write_u64(&hist->buckets[b], 0);
		pg_atomic_write_u64(&hist->sum_us, 0);
	}
	PG_RETURN_VOID();
}
