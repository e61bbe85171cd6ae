/*-------------------------------------------------------------------------
 *
 * worker_xact.c
 *	  Transactions of the background workers: the short transaction each
 *	  batch step runs in, and per-row subtransactions that keep one bad row
 *	  from failing the rest of a batch.
 *
 * A worker runs outside any transaction between steps.  A step that reads
 * or records a batch opens a transaction, a snapshot and SPI with
 * AcWorkerBegin() and closes them with AcWorkerCommit(), which also sends
 * the statistics of the transaction (tables read and written) to the
 * cumulative statistics system.  A row that cannot be processed (unparseable, refused by a
 * constraint) is run in its own subtransaction: its error is caught, the
 * subtransaction rolled back, and the message handed to the caller, which
 * records it as that row's permanent failure.
 *
 * IDENTIFICATION
 *	  src/worker_xact.c
 *
 *-------------------------------------------------------------------------
 */
#include "activity_core.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"

/* the memory context AcWorkerCommit() returns to */
static MemoryContext worker_cxt = NULL;

/*
 * Open a worker's short transaction: statement start time, transaction,
 * SPI and a snapshot.  Must be called outside any transaction.
 */
void
AcWorkerBegin(void)
{
	worker_cxt = CurrentMemoryContext;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
}

/*
 * Close it: SPI, snapshot, commit; give the caller back the memory context
 * it had at AcWorkerBegin() (the commit leaves TopMemoryContext current),
 * and report the transaction's statistics, which a background worker
 * otherwise never sends.
 */
void
AcWorkerCommit(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	if (worker_cxt)
		MemoryContextSwitchTo(worker_cxt);
	(void) pgstat_report_stat(false);
}

/*
 * Recover a worker's loop from an error: log it, end any transaction, and
 * go on in the memory context cxt.
 */
void
AcWorkerRecover(MemoryContext cxt)
{
	MemoryContextSwitchTo(cxt);
	HOLD_INTERRUPTS();
	EmitErrorReport();
	AbortOutOfAnyTransaction();
	FlushErrorState();
	RESUME_INTERRUPTS();
	pgstat_report_activity(STATE_IDLE, NULL);
}

/*
 * Run fn(arg) in a subtransaction of the current transaction.  Returns NULL
 * when it succeeded, else its error message (palloc'd in the caller's
 * memory context), with everything it did rolled back.
 */
char *
AcTryInSubxact(AcRowFn fn, void *arg)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	char	   *volatile error = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		fn(arg);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		error = pstrdup(edata->message ? edata->message : "unknown error");
		FreeErrorData(edata);
	}
	PG_END_TRY();
	return error;
}

/* Run one row of AcEachRowIsolated. */
typedef struct EachRow
{
	AcEachRowFn fn;
	void	   *arg;
	int			i;
	int			n;
} EachRow;

/* Subtransaction body: rows [i, n) of a batch. */
static void
RunRows(void *arg)
{
	EachRow    *e = (EachRow *) arg;

	for (int i = e->i; i < e->n; i++)
		e->fn(i, e->arg);
}

/*
 * Call fn(i, arg) for every i in [0, n): all of them in one subtransaction
 * when none fails, else each in its own, so that a failing row is rolled
 * back alone.  Returns an array of n error messages (NULL where the row
 * succeeded).
 */
char	  **
AcEachRowIsolated(int n, AcEachRowFn fn, void *arg)
{
	char	  **errors = palloc0(sizeof(char *) * Max(n, 1));
	EachRow		e;

	e.fn = fn;
	e.arg = arg;
	e.i = 0;
	e.n = n;
	if (n == 0 || AcTryInSubxact(RunRows, &e) == NULL)
		return errors;
	/* one row failed: do them again one by one */
	for (int i = 0; i < n; i++)
	{
		CHECK_FOR_INTERRUPTS();
		e.i = i;
		e.n = i + 1;
		errors[i] = AcTryInSubxact(RunRows, &e);
	}
	return errors;
}
