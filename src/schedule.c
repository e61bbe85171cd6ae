/*-------------------------------------------------------------------------
 *
 * schedule.c
 *	  Apply committed schedule intents to Temporal Schedules.
 *
 * One batch: read the pending intents together with the committed state of
 * their definitions (one short transaction), bring each schedule in line
 * with many requests in flight at once (no transaction open), then record
 * each outcome (a second short transaction).  Per definition the steps are:
 *
 *	 gone, or no longer cron   DELETE (a missing schedule is fine)
 *	 cron                      CREATE, or UPDATE when it exists; the full
 *							   schedule, paused with a note when disabled
 *	 re-enabled (catchup,      GET matching-times for the span it was
 *	 compress)				   paused, then PATCH a backfill: the last
 *							   max_catchup_runs fire times (catchup), or
 *							   only the last one (compress)
 *
 * Misfire policy mapping: skip -> overlap SKIP, catch-up window 60s, no
 * backfill; catchup -> BUFFER_ALL, catch-up window 365 days, backfill;
 * compress -> BUFFER_ONE, catch-up window 365 days, backfill of one run.
 *
 * Transient failures (Temporal unreachable, 5xx, auth) are retried with
 * exponential backoff capped at five minutes; Temporal refusing the request
 * (invalid argument) is recorded as permanent and not retried until the
 * definition changes again.
 *
 * IDENTIFICATION
 *	  src/schedule.c
 *
 *-------------------------------------------------------------------------
 */
#include "activity_core.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "temporal.h"

#define DEFAULT_MAX_CATCHUP_RUNS 100
#define MAX_BACKOFF_S 300

typedef enum SyncStep
{
	STEP_DELETE,
	STEP_CREATE,
	STEP_UPDATE,
	STEP_MATCHING,
	STEP_BACKFILL
} SyncStep;

/* One definition to bring in line, and what happened to it. */
typedef struct SyncItem
{
	AcRequest	req;			/* first member: the request is the item */

	char	   *id;
	int64		revision;
	bool		is_cron;		/* the definition exists and is cron */
	bool		enabled;
	char	   *name;
	char	   *workflow_type;
	char	   *task_queue;
	char	   *cron;
	char	   *timezone;
	char	   *policy;
	int			max_catchup;
	char	   *input;			/* JSON text */
	bool		schedule_exists;
	char	   *paused_at;		/* RFC 3339, or NULL when not paused by us */
	char	   *now;			/* RFC 3339 at read time */
	int			attempts;
	int64		attempted_revision;
	TimestampTz changed_at;		/* of the intent */

	/* outcome */
	bool		tried_create;
	bool		done_ok;
	bool		permanent;
	char	   *error;
	bool		exists_after;
	char	   *backfill;		/* JSON text describing the backfill */
	bool		refused;		/* the row itself cannot be processed */
} SyncItem;

static char *ScheduleBody(SyncItem *it, bool create);

/* The current time as RFC 3339 in UTC, with microseconds. */
static char *
Rfc3339Now(void)
{
	TimestampTz now = GetCurrentTimestamp();
	pg_time_t	t = timestamptz_to_time_t(now);
	int			usec = (int) (now % USECS_PER_SEC);
	struct pg_tm *tm;

	if (usec < 0)
		usec += USECS_PER_SEC;
	tm = pg_gmtime(&t);
	return psprintf("%04d-%02d-%02dT%02d:%02d:%02d.%06dZ",
					tm->tm_year + 1900, tm->tm_mon + 1, tm->tm_mday,
					tm->tm_hour, tm->tm_min, tm->tm_sec, usec);
}

/* Set the item's request for a step. */
static void
SetStep(SyncItem *it, SyncStep step)
{
	char	   *sid = AcTemporalEscape(psprintf("activity-schedule-%s", it->id));

	it->req.step = step;
	switch (step)
	{
		case STEP_DELETE:
			AcRequestSet(&it->req, "DELETE",
						 AcTemporalUrl("/schedules/%s?identity=activity_core", sid), NULL);
			break;
		case STEP_CREATE:
			it->tried_create = true;
			AcRequestSet(&it->req, "POST", AcTemporalUrl("/schedules/%s", sid),
						 ScheduleBody(it, true));
			break;
		case STEP_UPDATE:
			AcRequestSet(&it->req, "POST", AcTemporalUrl("/schedules/%s/update", sid),
						 ScheduleBody(it, false));
			break;
		case STEP_MATCHING:
			/* the missed span ends now that the schedule runs again */
			it->now = Rfc3339Now();
			AcRequestSet(&it->req, "GET",
						 AcTemporalUrl("/schedules/%s/matching-times?startTime=%s&endTime=%s",
									   sid, AcTemporalEscape(it->paused_at),
									   AcTemporalEscape(it->now)), NULL);
			break;
		case STEP_BACKFILL:
			/* body set by the caller */
			break;
	}
}

/* Does this item need a backfill once its schedule is running again? */
static bool
NeedsBackfill(SyncItem *it)
{
	return it->is_cron && it->enabled && it->paused_at != NULL &&
		(strcmp(it->policy, "catchup") == 0 || strcmp(it->policy, "compress") == 0);
}

/* Build the Create/UpdateSchedule body of an item. */
static char *
ScheduleBody(SyncItem *it, bool create)
{
	AcScheduleSpec spec;

	spec.id = it->id;
	spec.name = it->name;
	spec.workflow_type = it->workflow_type;
	spec.task_queue = it->task_queue;
	spec.cron = it->cron;
	spec.timezone = it->timezone;
	spec.policy = it->policy;
	spec.input = it->input;
	spec.enabled = it->enabled;
	return AcScheduleBody(&spec, create);
}

/*
 * Turn the matching times of the paused span into a backfill request.
 * Returns false when nothing was missed.
 */
static bool
PrepareBackfill(SyncItem *it)
{
	char	   *body;

	/*
	 * The request id is derived from the definition, the revision that
	 * re-enabled it and the start of the paused span, none of which change
	 * when the backfill is sent again because its outcome was not recorded
	 * (a crash, a failed commit): Temporal drops the repeat.
	 */
	char	   *request_id = AcDerivedUuid(psprintf("backfill|%s|" INT64_FORMAT "|%s",
													it->id, it->revision, it->paused_at));

	if (!AcBackfillBody(it->req.response, it->req.response_len, it->policy,
						it->max_catchup, it->paused_at, it->now,
						request_id, &body, &it->backfill))
		return false;
	AcRequestSet(&it->req, "POST",
				 AcTemporalUrl("/schedules/%s/patch",
							   AcTemporalEscape(psprintf("activity-schedule-%s", it->id))),
				 body);
	it->req.step = STEP_BACKFILL;
	AcCount(AC_STAT_BACKFILLS, 1);
	return true;
}

/* Mark an item finished with an error taken from its last request. */
static bool
FailItem(SyncItem *it)
{
	it->done_ok = false;
	it->permanent = !AcTemporalIsTransient(it->req.status) &&
		it->req.status != AC_T_OK;
	it->error = psprintf("%s: %s",
						 AcTemporalStatusName(it->req.status), it->req.error);
	AcCount(AC_STAT_TEMPORAL_ERRORS, 1);
	return false;
}

/* After the schedule itself is in place: backfill, or finish. */
static bool
AfterUpsert(SyncItem *it)
{
	it->exists_after = true;
	if (NeedsBackfill(it))
	{
		SetStep(it, STEP_MATCHING);
		return true;
	}
	it->done_ok = true;
	return false;
}

/* Request-finished callback: decide the next step of an item. */
static bool
SyncDone(AcRequest *req, void *arg)
{
	SyncItem   *it = (SyncItem *) req;
	AcTemporalStatus st = req->status;

	AcCount(AC_STAT_TEMPORAL_REQUESTS, 1);
	switch ((SyncStep) req->step)
	{
		case STEP_DELETE:
			if (st == AC_T_OK || st == AC_T_NOT_FOUND)
			{
				it->exists_after = false;
				it->done_ok = true;
				return false;
			}
			return FailItem(it);
		case STEP_CREATE:
			if (st == AC_T_OK)
				return AfterUpsert(it);
			if (st == AC_T_ALREADY_EXISTS)
			{
				SetStep(it, STEP_UPDATE);
				return true;
			}
			return FailItem(it);
		case STEP_UPDATE:
			if (st == AC_T_OK)
				return AfterUpsert(it);
			if (st == AC_T_NOT_FOUND && !it->tried_create)
			{
				SetStep(it, STEP_CREATE);
				return true;
			}
			return FailItem(it);
		case STEP_MATCHING:
			if (st != AC_T_OK)
				return FailItem(it);
			if (PrepareBackfill(it))
				return true;
			it->done_ok = true;
			return false;
		case STEP_BACKFILL:
			if (st != AC_T_OK)
				return FailItem(it);
			it->done_ok = true;
			return false;
	}
	return false;
}

/* Copy column `col` of the current SPI row, or NULL. */
static char *
GetText(HeapTuple tup, TupleDesc desc, int col)
{
	char	   *v = SPI_getvalue(tup, desc, col);

	return v ? pstrdup(v) : NULL;
}

/* What reading one intent row needs. */
typedef struct ReadRow
{
	HeapTuple	tup;
	TupleDesc	desc;
	SyncItem   *it;
} ReadRow;

/* Parse max_catchup_runs as the validation trigger would accept it. */
static int
ParseMaxCatchup(const char *v)
{
	char	   *end;
	long		n;

	errno = 0;
	n = strtol(v, &end, 10);
	if (errno != 0 || end == v || *end != '\0' || n < 1 || n > 1000)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("trigger_config.max_catchup_runs must be an integer from 1 to 1000, not \"%s\"", v),
				 errhint("The row was written without the validation trigger; fix the definition.")));
	return (int) n;
}

/* Fill an item from its intent row (may throw: run in a subtransaction). */
static void
ReadItem(void *arg)
{
	ReadRow    *r = (ReadRow *) arg;
	HeapTuple	tup = r->tup;
	TupleDesc	desc = r->desc;
	SyncItem   *it = r->it;
	char	   *v;

	v = SPI_getvalue(tup, desc, 3);
	it->is_cron = v && v[0] == 't';
	v = SPI_getvalue(tup, desc, 4);
	it->enabled = v && v[0] == 't';
	it->name = GetText(tup, desc, 5);
	it->workflow_type = GetText(tup, desc, 6);
	it->task_queue = GetText(tup, desc, 7);
	it->cron = GetText(tup, desc, 8);
	it->timezone = GetText(tup, desc, 9);
	it->policy = GetText(tup, desc, 10);
	v = SPI_getvalue(tup, desc, 11);
	it->max_catchup = v && it->is_cron ? ParseMaxCatchup(v) : DEFAULT_MAX_CATCHUP_RUNS;
	it->input = GetText(tup, desc, 12);
	v = SPI_getvalue(tup, desc, 13);
	it->schedule_exists = v && v[0] == 't';
	it->paused_at = GetText(tup, desc, 14);
	it->now = GetText(tup, desc, 15);
	it->attempts = pg_strtoint32(SPI_getvalue(tup, desc, 16));
	it->attempted_revision = pg_strtoint64(SPI_getvalue(tup, desc, 17));
	if (it->timezone == NULL)
		it->timezone = "UTC";
	if (it->policy == NULL)
		it->policy = "skip";
	if (it->input == NULL)
		it->input = "{}";
	/* a row written without the validation trigger may lack its cron */
	if (it->is_cron && it->cron == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("trigger_config.cron_expression is missing"),
				 errhint("The row was written without the validation trigger; fix the definition.")));
}

/* Mark an item as a permanent failure of its own, never sent to Temporal. */
static void
RefuseItem(SyncItem *it, const char *error)
{
	it->refused = true;
	it->done_ok = false;
	it->permanent = true;
	it->error = psprintf("cannot be processed: %s", error);
}

/*
 * Read up to `limit` due intents with their definitions.  A row that
 * cannot be read is returned refused, with the reason.
 */
static int
ReadDueItems(const char *schema, int limit, MemoryContext cxt, SyncItem ***items)
{
	const char *q = quote_identifier(schema);
	char	   *sql = psprintf(
							   "SELECT i.activity_id::text, i.revision, d.id IS NOT NULL AND d.trigger_type = 'cron', "
							   "  d.enabled, d.name, d.workflow_type, d.task_queue, "
							   "  d.trigger_config->>'cron_expression', d.trigger_config->>'timezone', "
							   "  d.trigger_config->>'misfire_policy', d.trigger_config->>'max_catchup_runs', d.input::text, "
							   "  coalesce(s.schedule_exists, false), "
							   "  to_char(s.paused_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), "
							   "  to_char(pg_catalog.clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), "
							   "  coalesce(s.attempts, 0), coalesce(s.attempted_revision, 0), i.changed_at "
							   "FROM %s.ac_schedule_intents i "
							   "LEFT JOIN %s.ac_schedule_sync s USING (activity_id) "
							   "LEFT JOIN %s.ac_activity_definitions d ON d.id = i.activity_id "
							   "WHERE i.revision > coalesce(s.applied_revision, 0) "
							   "  AND (s.activity_id IS NULL OR s.attempted_revision < i.revision "
							   "       OR s.next_attempt_at <= pg_catalog.now()) "
							   "ORDER BY i.revision LIMIT %d",
							   q, q, q, limit);
	int			ret = SPI_execute(sql, true, 0);
	int			n;
	MemoryContext old;
	SPITupleTable *tuptable = SPI_tuptable;

	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read schedule intents: %s", SPI_result_code_string(ret));
	n = (int) SPI_processed;
	old = MemoryContextSwitchTo(cxt);
	*items = palloc0(sizeof(SyncItem *) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		ReadRow		r;
		char	   *error;
		SyncItem   *it = palloc0(sizeof(SyncItem));

		r.tup = tuptable->vals[i];
		r.desc = tuptable->tupdesc;
		r.it = it;
		/* the key columns are a uuid and a bigint: always readable */
		it->id = GetText(r.tup, r.desc, 1);
		it->revision = pg_strtoint64(SPI_getvalue(r.tup, r.desc, 2));
		{
			bool		isnull;

			it->changed_at = DatumGetTimestampTz(SPI_getbinval(r.tup, r.desc, 18, &isnull));
		}
		error = AcTryInSubxact(ReadItem, &r);
		if (error)
			RefuseItem(it, error);
		(*items)[i] = it;
	}
	MemoryContextSwitchTo(old);
	return n;
}

/* Record the outcome of one item. */
static void
RecordOutcome(const char *schema, SyncItem *it)
{
	const char *q = quote_identifier(schema);
	Datum		values[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};
	Oid			types[6] = {UUIDOID, INT8OID, BOOLOID, TEXTOID, BOOLOID, INT4OID};
	int			ret;

	values[0] = DirectFunctionCall1(uuid_in, CStringGetDatum(it->id));
	values[1] = Int64GetDatum(it->revision);
	values[2] = BoolGetDatum(it->exists_after);

	if (it->done_ok)
	{
		AcObserveOutboxAge(AC_OUTBOX_SCHEDULE,
						   (double) (GetCurrentTimestamp() - it->changed_at) / 1e6);
		/* a deleted definition whose schedule is gone leaves no trace */
		if (!it->is_cron && !it->exists_after)
		{
			ret = SPI_execute_with_args(psprintf(
												 "DELETE FROM %s.ac_schedule_intents WHERE activity_id = $1 AND revision = $2 "
												 "  AND activity_id IN (SELECT activity_id FROM %s.ac_schedule_intents "
												 "                      WHERE activity_id = $1 FOR UPDATE SKIP LOCKED) "
												 "  AND NOT EXISTS (SELECT 1 FROM %s.ac_activity_definitions WHERE id = $1)",
												 q, q, q),
										2, types, values, NULL, false, 0);
			if (ret < 0)
				elog(ERROR, "could not clean up a schedule intent: %s", SPI_result_code_string(ret));
			if (SPI_processed == 1)
			{
				ret = SPI_execute_with_args(psprintf("DELETE FROM %s.ac_schedule_sync WHERE activity_id = $1", q),
											1, types, values, NULL, false, 0);
				if (ret < 0)
					elog(ERROR, "could not clean up a schedule outcome: %s", SPI_result_code_string(ret));
				AcCount(AC_STAT_SCHEDULES_APPLIED, 1);
				return;
			}
		}
		values[3] = it->backfill ? CStringGetTextDatum(it->backfill) : (Datum) 0;
		nulls[3] = it->backfill ? ' ' : 'n';
		values[4] = BoolGetDatum(it->is_cron && !it->enabled);
		ret = SPI_execute_with_args(psprintf(
											 "INSERT INTO %s.ac_schedule_sync AS s (activity_id, applied_revision, attempted_revision, attempts, "
											 "  last_error, error_permanent, next_attempt_at, last_attempt_at, last_applied_at, schedule_exists, "
											 "  paused_at, last_backfill) "
											 "VALUES ($1, $2, $2, 0, NULL, false, NULL, now(), now(), $3, "
											 "  CASE WHEN $5 THEN now() END, $4::jsonb) "
											 "ON CONFLICT (activity_id) DO UPDATE SET "
											 "  applied_revision = greatest(s.applied_revision, $2), "
											 "  attempted_revision = greatest(s.attempted_revision, $2), attempts = 0, "
											 "  last_error = NULL, error_permanent = false, next_attempt_at = NULL, "
											 "  last_attempt_at = now(), last_applied_at = now(), schedule_exists = $3, "
											 "  paused_at = CASE WHEN $5 THEN coalesce(s.paused_at, now()) END, "
											 "  last_backfill = coalesce($4::jsonb, s.last_backfill)",
											 q),
									5, types, values, nulls, false, 0);
		AcCount(AC_STAT_SCHEDULES_APPLIED, 1);
	}
	else
	{
		int			attempts = it->attempted_revision < it->revision ? 1 : it->attempts + 1;
		int			backoff = attempts >= 9 ? MAX_BACKOFF_S : Min(MAX_BACKOFF_S, 1 << (attempts - 1));

		values[2] = BoolGetDatum(it->schedule_exists || it->exists_after);
		values[3] = CStringGetTextDatum(it->error);
		values[4] = BoolGetDatum(it->permanent);
		values[5] = Int32GetDatum(attempts);
		ret = SPI_execute_with_args(psprintf(
											 "INSERT INTO %s.ac_schedule_sync AS s (activity_id, attempted_revision, attempts, last_error, "
											 "  error_permanent, next_attempt_at, last_attempt_at, schedule_exists) "
											 "VALUES ($1, $2, $6, $4, $5, CASE WHEN NOT $5 THEN now() + make_interval(secs => %d) END, now(), $3) "
											 "ON CONFLICT (activity_id) DO UPDATE SET "
											 "  attempted_revision = greatest(s.attempted_revision, $2), attempts = $6, "
											 "  last_error = $4, error_permanent = $5, "
											 "  next_attempt_at = CASE WHEN NOT $5 THEN now() + make_interval(secs => %d) END, "
											 "  last_attempt_at = now(), schedule_exists = $3",
											 q, backoff, backoff),
									6, types, values, nulls, false, 0);
		if (it->permanent)
		{
			AcCount(AC_STAT_SCHEDULE_FAILURES, 1);
			ereport(WARNING,
					(errmsg("%s the schedule of activity %s (\"%s\"): %s",
							it->refused ? "activity_core could not build" : "Temporal refused",
							it->id, it->name ? it->name : "deleted", it->error),
					 errhint("The change is not retried until the definition changes; see ac_sync_status.")));
		}
		else
		{
			AcCount(AC_STAT_SCHEDULE_RETRIES, 1);
			elog(LOG, "activity_core: schedule of activity %s not applied (attempt %d, retry in %d s): %s",
				 it->id, attempts, backoff, it->error);
		}
	}
	if (ret < 0)
		elog(ERROR, "could not record a schedule outcome: %s", SPI_result_code_string(ret));
}

/* The batch whose outcomes are recorded. */
typedef struct RecordArgs
{
	const char *schema;
	SyncItem  **items;
} RecordArgs;

/* Record the outcome of row i of a batch. */
static void
RecordRow(int i, void *arg)
{
	RecordArgs *ra = (RecordArgs *) arg;

	RecordOutcome(ra->schema, ra->items[i]);
}

/* Free the malloc'd parts of every request of a batch. */
static void
FreeItems(SyncItem **items, int n)
{
	for (int i = 0; i < n; i++)
		AcRequestFree(&items[i]->req);
}

/*
 * Record the outcomes of a batch in one transaction; a row whose outcome
 * cannot be recorded fails alone.  Temporal's responses are malloc'd:
 * they are freed on every path.
 */
static void
RecordBatch(const char *schema, SyncItem **items, int n)
{
	PG_TRY();
	{
		RecordArgs	ra = {schema, items};
		char	  **errors;

		AcWorkerBegin();
		errors = AcEachRowIsolated(n, RecordRow, &ra);
		for (int i = 0; i < n; i++)
			if (errors[i])
				ereport(WARNING,
						(errmsg("activity_core: could not record the schedule outcome of activity %s: %s",
								items[i]->id, errors[i]),
						 errhint("It is applied again on the next pass.")));
		AcWorkerCommit();
	}
	PG_CATCH();
	{
		FreeItems(items, n);
		PG_RE_THROW();
	}
	PG_END_TRY();
	FreeItems(items, n);
}

/*
 * Apply one batch of due schedule intents; returns how many were handled.
 * Must be called outside a transaction.
 */
int
AcSyncScheduleBatch(const char *schema, int limit)
{
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext,
											  "activity_core schedule batch",
											  ALLOCSET_DEFAULT_SIZES);
	MemoryContext old = MemoryContextSwitchTo(cxt);
	SyncItem  **items;
	int			n;

	/* 1. read, in a short transaction */
	AcWorkerBegin();
	n = ReadDueItems(schema, limit, cxt, &items);
	AcWorkerCommit();
	MemoryContextSwitchTo(cxt);

	if (n == 0)
	{
		MemoryContextSwitchTo(old);
		MemoryContextDelete(cxt);
		return 0;
	}

	/* 2. talk to Temporal, no transaction open */
	pgstat_report_activity(STATE_RUNNING, "applying schedule changes to Temporal");
	{
		SyncItem  **run = palloc(sizeof(SyncItem *) * n);
		volatile int nrun = 0;

		for (int i = 0; i < n; i++)
		{
			SyncItem   *it = items[i];

			if (it->refused)
				continue;
			/* building the request may refuse what the row holds */
			PG_TRY();
			{
				SetStep(it, it->is_cron ?
						(it->schedule_exists ? STEP_UPDATE : STEP_CREATE) : STEP_DELETE);
				run[nrun++] = it;
			}
			PG_CATCH();
			{
				ErrorData  *edata;

				MemoryContextSwitchTo(cxt);
				edata = CopyErrorData();
				FlushErrorState();
				AcRequestFree(&it->req);
				RefuseItem(it, edata->message);
			}
			PG_END_TRY();
		}
		AcTemporalRun((AcRequest **) run, nrun, ac_temporal_concurrency, SyncDone, NULL);
	}

	/* 3. record, in a second short transaction */
	RecordBatch(schema, items, n);
	pgstat_report_activity(STATE_IDLE, NULL);

	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
	return n;
}
