/*-------------------------------------------------------------------------
 *
 * start_drain.c
 *	  The dispatcher's drain of ac_start_outbox: the workflow starts that
 *	  ac_trigger() recorded.
 *
 * Committed rows are sent as StartWorkflowExecution requests, many in
 * flight at once, with a request id derived from the workflow id, so that a
 * retry after a lost answer starts the workflow once.  An accepted start or
 * a workflow already there deletes the row; a transient failure is retried
 * with backoff (at most five minutes); Temporal refusing the request, or a
 * row whose request cannot be built, is recorded as permanent.
 *
 * IDENTIFICATION
 *	  src/start_drain.c
 *
 *-------------------------------------------------------------------------
 */
#include "activity_core.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "temporal.h"

/* One pending start of the outbox. */
typedef struct StartRow
{
	AcRequest	req;			/* first member */
	int64		id;
	char	   *workflow_id;
	int			attempts;
	TimestampTz created_at;
	char	   *refused;		/* why the row cannot be processed, or NULL */
} StartRow;

/* Request-finished callback of the start drain. */
static bool
StartRowDone(AcRequest *req, void *arg)
{
	AcCountStart(req->status);
	return false;
}

/* What building the request of one start outbox row needs. */
typedef struct StartRead
{
	HeapTuple	tup;
	TupleDesc	desc;
	StartRow   *r;
} StartRead;

/* Build the start request of a row (may throw: run in a subtransaction). */
static void
BuildStart(void *arg)
{
	StartRead  *sr = (StartRead *) arg;
	HeapTuple	tup = sr->tup;
	TupleDesc	desc = sr->desc;
	StartRow   *r = sr->r;

	r->attempts = pg_strtoint32(SPI_getvalue(tup, desc, 7));
	AcRequestSet(&r->req, "POST",
				 AcTemporalUrl("/workflows/%s", AcTemporalEscape(r->workflow_id)),
				 AcStartBody(SPI_getvalue(tup, desc, 6), SPI_getvalue(tup, desc, 3),
							 SPI_getvalue(tup, desc, 4), SPI_getvalue(tup, desc, 5),
							 AcDerivedUuid(r->workflow_id), "activity_core dispatcher"));
}

/* The batch of starts whose outcomes are recorded. */
typedef struct StartBatch
{
	const char *q;
	StartRow  **rows;
} StartBatch;

/* Record the outcome of start i of a batch. */
static void
RecordStart(int i, void *arg)
{
	StartBatch *b = (StartBatch *) arg;
	const char *q = b->q;
	StartRow   *r = b->rows[i];
	Oid			types[4] = {INT8OID, TEXTOID, BOOLOID, INT4OID};
	Datum		values[4];
	int			ret;

	values[0] = Int64GetDatum(r->id);
	if (r->refused == NULL &&
		(r->req.status == AC_T_OK || r->req.status == AC_T_ALREADY_EXISTS))
	{
		ret = SPI_execute_with_args(psprintf("DELETE FROM %s.ac_start_outbox WHERE id = $1", q),
									1, types, values, NULL, false, 0);
		AcObserveOutboxAge(AC_OUTBOX_START,
						   (double) (GetCurrentTimestamp() - r->created_at) / 1e6);
	}
	else
	{
		bool		permanent = r->refused != NULL || !AcTemporalIsTransient(r->req.status);
		int			backoff = Min(300, 1 << Min(r->attempts, 8));
		char	   *error = r->refused ? psprintf("cannot be processed: %s", r->refused) :
			psprintf("%s: %s", AcTemporalStatusName(r->req.status), r->req.error);

		values[1] = CStringGetTextDatum(error);
		values[2] = BoolGetDatum(permanent);
		values[3] = Int32GetDatum(backoff);
		ret = SPI_execute_with_args(psprintf("UPDATE %s.ac_start_outbox SET attempts = attempts + 1, "
											 "last_error = $2, error_permanent = $3, "
											 "next_attempt_at = pg_catalog.now() + pg_catalog.make_interval(secs => $4) "
											 "WHERE id = $1", q),
									4, types, values, NULL, false, 0);
		if (permanent)
			ereport(WARNING,
					(errmsg("%s workflow %s: %s",
							r->refused ? "activity_core could not start" : "Temporal refused to start",
							r->workflow_id, error)));
		else
			elog(LOG, "activity_core: start of %s failed, retry in %d s: %s",
				 r->workflow_id, backoff, error);
	}
	if (ret < 0)
		elog(ERROR, "could not record a start outcome: %s", SPI_result_code_string(ret));
}

/* Free the malloc'd parts of every request of a batch. */
static void
FreeStarts(StartRow **rows, int n)
{
	for (int i = 0; i < n; i++)
		AcRequestFree(&rows[i]->req);
}

/*
 * Send the starts of a batch and record their outcomes; a row whose
 * outcome cannot be recorded fails alone.  Temporal's malloc'd responses
 * are freed on every path.
 */
static void
RunStarts(const char *q, StartRow **rows, int n)
{
	PG_TRY();
	{
		StartBatch	b = {q, rows};
		StartRow  **run = palloc(sizeof(StartRow *) * n);
		int			nrun = 0;
		char	  **errors;

		for (int i = 0; i < n; i++)
			if (rows[i]->refused == NULL)
				run[nrun++] = rows[i];
		AcTemporalRun((AcRequest **) run, nrun, ac_temporal_concurrency, StartRowDone, NULL);

		AcWorkerBegin();
		errors = AcEachRowIsolated(n, RecordStart, &b);
		for (int i = 0; i < n; i++)
			if (errors[i])
				ereport(WARNING,
						(errmsg("activity_core: could not record the start of %s: %s",
								rows[i]->workflow_id, errors[i])));
		AcWorkerCommit();
	}
	PG_CATCH();
	{
		FreeStarts(rows, n);
		PG_RE_THROW();
	}
	PG_END_TRY();
	FreeStarts(rows, n);
}

/*
 * Start the workflows of due ac_start_outbox rows; returns how many.  A row
 * whose request cannot be built is a permanent failure of that row.
 */
int
AcDrainStarts(const char *schema, int limit)
{
	const char *q = quote_identifier(schema);
	StartRow  **rows;
	int			n;
	int			ret;
	MemoryContext cxt = CurrentMemoryContext;

	AcWorkerBegin();
	ret = SPI_execute(psprintf("SELECT id, workflow_id, workflow_type, task_queue, argument, "
							   "  activity_id::text, attempts, created_at FROM %s.ac_start_outbox "
							   "WHERE NOT error_permanent AND (next_attempt_at IS NULL "
							   "  OR next_attempt_at <= pg_catalog.now()) ORDER BY id LIMIT %d",
							   q, limit), true, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read the start outbox: %s", SPI_result_code_string(ret));
	n = (int) SPI_processed;
	rows = MemoryContextAllocZero(cxt, sizeof(StartRow *) * Max(n, 1));
	{
		SPITupleTable *tuptable = SPI_tuptable;
		MemoryContext old = MemoryContextSwitchTo(cxt);

		for (int i = 0; i < n; i++)
		{
			StartRead	sr;
			StartRow   *r = palloc0(sizeof(StartRow));

			sr.tup = tuptable->vals[i];
			sr.desc = tuptable->tupdesc;
			sr.r = r;
			/* id and workflow_id are a bigint and a NOT NULL text */
			r->id = pg_strtoint64(SPI_getvalue(sr.tup, sr.desc, 1));
			r->workflow_id = pstrdup(SPI_getvalue(sr.tup, sr.desc, 2));
			{
				bool		isnull;

				r->created_at = DatumGetTimestampTz(SPI_getbinval(sr.tup, sr.desc, 8, &isnull));
			}
			r->refused = AcTryInSubxact(BuildStart, &sr);
			if (r->refused)
				AcRequestFree(&r->req);
			rows[i] = r;
		}
		MemoryContextSwitchTo(old);
	}
	AcWorkerCommit();
	MemoryContextSwitchTo(cxt);
	if (n == 0)
		return 0;

	RunStarts(q, rows, n);
	MemoryContextSwitchTo(cxt);
	return n;
}
