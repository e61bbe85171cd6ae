/*-------------------------------------------------------------------------
 *
 * wakeup.c
 *	  What a committing transaction tells the background workers: the
 *	  dispatcher's latch, the router's event generation, and the relcache
 *	  invalidation that makes the router rebuild its index.
 *
 * A transaction that queued work for the dispatcher (a schedule intent, an
 * ac_outbox or ac_start_outbox row) asks for its latch to be set at commit;
 * one that changed event definitions asks for the event generation to be
 * bumped.  Nothing happens on abort, and nothing else happens at commit.
 * The statement trigger ac_definitions_invalidate() queues a relcache
 * invalidation of ac_activity_definitions, which PostgreSQL sends to every
 * backend when the change commits, also at COMMIT PREPARED.
 *
 * IDENTIFICATION
 *	  src/wakeup.c
 *
 *-------------------------------------------------------------------------
 */
#include "activity_core.h"

#include "access/xact.h"
#include "commands/trigger.h"
#include "fmgr.h"
#include "utils/inval.h"
#include "utils/rel.h"

PG_FUNCTION_INFO_V1(ac_outbox_wake);
PG_FUNCTION_INFO_V1(ac_definitions_invalidate);

static bool wake_at_commit = false;
static bool events_changed = false;
static bool xact_callback_registered = false;

/* At commit, set the dispatcher's latch if this transaction queued work. */
static void
WakeAtCommit(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (events_changed)
				AcBumpEventGeneration();
			if (wake_at_commit)
				AcWakeDispatcher();
			wake_at_commit = false;
			events_changed = false;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			wake_at_commit = false;
			events_changed = false;
			break;
		default:
			break;
	}
}

/* Make sure the commit hook is registered in this process. */
static void
RegisterCommitHook(void)
{
	if (!xact_callback_registered)
	{
		RegisterXactCallback(WakeAtCommit, NULL);
		xact_callback_registered = true;
	}
}

/* Ask for the dispatcher to be woken when the transaction commits. */
void
AcWakeDispatcherAtCommit(void)
{
	RegisterCommitHook();
	wake_at_commit = true;
}

/* Ask for the router's index to be rebuilt when the transaction commits. */
void
AcEventsChangedAtCommit(void)
{
	RegisterCommitHook();
	events_changed = true;
}

/* ac_outbox_wake(): wake the dispatcher when this transaction commits. */
Datum
ac_outbox_wake(PG_FUNCTION_ARGS)
{
	AcWakeDispatcherAtCommit();
	PG_RETURN_VOID();
}

/*
 * Statement trigger on ac_activity_definitions: queue a relcache
 * invalidation of the table, which PostgreSQL sends to every backend when
 * the change commits; the router rebuilds its index on it.
 */
Datum
ac_definitions_invalidate(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(td->tg_event) ||
		!TRIGGER_FIRED_FOR_STATEMENT(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("ac_definitions_invalidate must be an AFTER statement trigger")));
	if (RelationGetRelid(td->tg_relation) != AcDefinitionsRelid())
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("ac_definitions_invalidate fires only on the extension's ac_activity_definitions, not on \"%s\"",
						RelationGetRelationName(td->tg_relation)),
				 errhint("Do not attach it to other tables.")));
	CacheInvalidateRelcache(td->tg_relation);
	return PointerGetDatum(NULL);
}
