/*-------------------------------------------------------------------------
 *
 * dispatcher.c
 *	  The dispatcher background worker: drains committed intents to
 *	  Temporal.
 *
 * The worker connects to activity_core.database and loops: when it starts
 * and every activity_core.reconcile_interval, reconcile Temporal against
 * the table (reconcile.c); otherwise apply a batch of due schedule intents
 * (schedule.c), start the workflows ac_trigger() asked for (start_drain.c)
 * and publish the events ac_publish() queued (publish_drain.c), and when nothing is
 * due, sleep on
 * its latch until a committing transaction sets it, a retry falls due, or
 * a second passes.  It reloads its configuration on SIGHUP, exits on
 * SIGTERM at the next interrupt check (every blocking wait is at most
 * 100 ms to 1 s), and is restarted by the postmaster after a crash.  An
 * error in one batch is logged and the loop goes on after a pause: the
 * intents stay in their table, so nothing is lost.  Each drain has its own
 * error recovery: one that fails is retried a second later while the
 * others go on, and within a drain a row that cannot be processed becomes
 * a permanent failure of that row (see worker_xact.c).  While the
 * extension is not installed in the database the worker idles.  With
 * activity_core.manage_schedules off it neither applies schedule intents
 * nor reconciles (another server owns the schedules); the intents wait, and
 * the first loop after the setting is turned on reconciles.
 *
 * IDENTIFICATION
 *	  src/dispatcher.c
 *
 *-------------------------------------------------------------------------
 */
#include "activity_core.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/pmsignal.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

PGDLLEXPORT void ac_dispatcher_main(Datum arg);

#define BATCH_SIZE 1000
#define RECONCILE_RETRY_MS 30000

/*
 * After a loop that handled only a few rows, pause this long before the
 * next: under a steady stream of small commits, what commits meanwhile goes
 * out in one batch instead of one loop (five short transactions) per event.
 * The first row after a quiet spell goes at once.
 */
#define COALESCE_BELOW 64
#define COALESCE_MS 2


/* When the next reconcile is due (the setting may change at any reload). */
static TimestampTz
ReconcileDue(TimestampTz last, bool failed)
{
	int64		ms = (int64) ac_reconcile_interval_s * 1000;

	if (last == 0)
		return 0;
	if (failed)
		ms = Min(ms, RECONCILE_RETRY_MS);
	return TimestampTzPlusMilliseconds(last, ms);
}

/* One drain of the dispatcher loop. */
typedef struct Drain
{
	const char *what;
	int			(*fn) (const char *schema, int limit);
	bool	   *when;			/* runs only while this is true; NULL: always */
	TimestampTz retry_at;		/* after a failure, not before this */
} Drain;

static Drain drains[] = {
	{"schedule sync", AcSyncScheduleBatch, &ac_manage_schedules, 0},
	{"start drain", AcDrainStarts, NULL, 0},
	{"publish drain", AcDrainOutbox, NULL, 0},
	{"outbox measure", AcRefreshOutboxGauges, NULL, 0},
};

/*
 * Run one drain with its own error recovery, so that a drain that fails
 * holds back neither the others nor itself for longer than a second.
 * Returns how many rows it handled.
 */
static int
RunDrain(Drain *d, const char *schema)
{
	MemoryContext cxt = CurrentMemoryContext;
	volatile int handled = 0;

	if (d->when != NULL && !*d->when)
		return 0;
	if (d->retry_at > 0 && GetCurrentTimestamp() < d->retry_at)
		return 0;
	PG_TRY();
	{
		handled = d->fn(schema, BATCH_SIZE);
		d->retry_at = 0;
	}
	PG_CATCH();
	{
		AcWorkerRecover(cxt);
		elog(LOG, "activity_core dispatcher: %s failed, retrying in 1 s", d->what);
		d->retry_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 1000);
		handled = 0;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	return handled;
}

/* The schema of the extension, copied into the current context, or NULL. */
static char *
LoopSchema(void)
{
	char	   *top = AcWorkerSchema();
	char	   *schema;

	if (top == NULL)
		return NULL;
	schema = pstrdup(top);
	pfree(top);
	return schema;
}

/* Main entry point of the dispatcher worker. */
void
ac_dispatcher_main(Datum arg)
{
	MemoryContext loop_cxt;
	volatile TimestampTz last_reconcile = 0;
	volatile bool reconcile_failed = false;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(ac_database, NULL, 0);
	pgstat_report_appname("activity_core dispatcher");
	AcRegisterDispatcher();
	elog(LOG, "activity_core dispatcher started for database \"%s\", Temporal at %s",
		 ac_database, AcRedactUrl(ac_temporal_url));

	loop_cxt = AllocSetContextCreate(TopMemoryContext, "activity_core dispatcher",
									 ALLOCSET_DEFAULT_SIZES);
	for (;;)
	{
		volatile long sleep_ms = 1000;
		volatile int handled = 0;
		char	   *volatile schema = NULL;
		TimestampTz now;

		CHECK_FOR_INTERRUPTS();

		/*
		 * A busy loop does not wait on the latch, which is where a dead
		 * postmaster is noticed otherwise: without this check a worker
		 * orphaned by a killed postmaster would go on starting workflows
		 * and publishing.
		 */
		if (!PostmasterIsAlive())
			proc_exit(1);
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			AcPublisherReloaded();
		}

		MemoryContextSwitchTo(loop_cxt);
		PG_TRY();
		{
			/* the schema lives in loop_cxt: nothing to free on any path */
			schema = LoopSchema();
			now = GetCurrentTimestamp();
			if (!ac_manage_schedules)
			{
				/* another server owns the schedules: reconcile once it is on */
				last_reconcile = 0;
			}
			if (schema == NULL)
				sleep_ms = 5000;
			else if (ac_manage_schedules && ac_reconcile_interval_s > 0 &&
					 now >= ReconcileDue(last_reconcile, reconcile_failed))
			{
				/* at start and every reconcile_interval; sooner after a failure */
				last_reconcile = now;
				reconcile_failed = true;
				AcReconcileInWorker(schema);
				reconcile_failed = false;
				handled = 1;
			}
		}
		PG_CATCH();
		{
			AcWorkerRecover(loop_cxt);
			sleep_ms = 1000;
			handled = 0;
			schema = NULL;
		}
		PG_END_TRY();

		/* each drain on its own: one failing never blocks the others */
		if (schema != NULL && handled == 0)
			for (int i = 0; i < (int) lengthof(drains); i++)
				handled += RunDrain(&drains[i], schema);

		MemoryContextSwitchTo(TopMemoryContext);
		MemoryContextReset(loop_cxt);

		if (handled > 0)
		{
			if (handled < COALESCE_BELOW)
				(void) WaitLatch(MyLatch, WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
								 COALESCE_MS, PG_WAIT_EXTENSION);
			continue;
		}
		if (ac_reconcile_interval_s > 0 && last_reconcile > 0)
		{
			long		until = (long) ((ReconcileDue(last_reconcile, reconcile_failed) -
										 GetCurrentTimestamp()) / 1000);

			sleep_ms = Max(Min(sleep_ms, until), 10);
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 sleep_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
