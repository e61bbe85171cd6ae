/*-------------------------------------------------------------------------
 *
 * outbox.c
 *	  AFTER row trigger on ac_activity_definitions that records schedule
 *	  intents, and the commit hook that wakes the dispatcher.
 *
 * Nothing here talks to Temporal.  A change that matters to a schedule
 * (the row is or was a cron definition, and a column the schedule is built
 * from changed) upserts the definition's row in ac_schedule_intents with a
 * fresh revision from ac_revision_seq, inside the user's transaction: a
 * rollback leaves nothing behind, a commit makes the intent durable, and
 * several changes to one row collapse into its latest revision.  At commit
 * the dispatcher's latch is set; nothing else happens at commit time.
 *
 * IDENTIFICATION
 *	  src/outbox.c
 *
 *-------------------------------------------------------------------------
 */
#include "activity_core.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

PG_FUNCTION_INFO_V1(ac_definitions_changed);

/* columns a schedule is built from */
static const char *const schedule_columns[] = {
	"name", "enabled", "trigger_type", "trigger_config", "workflow_type",
	"task_queue", "input"
};

static bool wake_at_commit = false;
static bool events_changed = false;
static bool xact_callback_registered = false;
static SPIPlanPtr intent_plan = NULL;
static Oid	intent_plan_nsp = InvalidOid;

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
static void
EventsChangedAtCommit(void)
{
	RegisterCommitHook();
	events_changed = true;
}

/* Return the schema the extension lives in (palloc'd), or NULL. */
char *
AcExtensionSchema(void)
{
	char	   *result = NULL;
	int			ret;

	ret = SPI_execute("SELECT n.nspname FROM pg_catalog.pg_extension e "
					  "JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace "
					  "WHERE e.extname = 'activity_core'", true, 1);
	if (ret == SPI_OK_SELECT && SPI_processed == 1)
	{
		char	   *v = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

		result = MemoryContextStrdup(TopTransactionContext, v);
	}
	return result;
}

/*
 * For a worker outside any transaction: the extension's schema as a
 * TopMemoryContext string, or NULL while it is not installed.
 */
char *
AcWorkerSchema(void)
{
	char	   *schema;
	MemoryContext caller = CurrentMemoryContext;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	schema = AcExtensionSchema();
	if (schema)
		schema = MemoryContextStrdup(TopMemoryContext, schema);
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	/* the commit leaves TopMemoryContext current: give the caller its own back */
	MemoryContextSwitchTo(caller);
	return schema;
}

/* Does any column a schedule depends on differ between two row versions? */
static bool
ScheduleColumnsChanged(TupleDesc desc, HeapTuple oldt, HeapTuple newt)
{
	for (int i = 0; i < (int) lengthof(schedule_columns); i++)
	{
		int			att = SPI_fnumber(desc, schedule_columns[i]);
		Form_pg_attribute attr;
		bool		oldnull;
		bool		newnull;
		Datum		o;
		Datum		n;

		if (att <= 0)
			continue;
		attr = TupleDescAttr(desc, att - 1);
		o = heap_getattr(oldt, att, desc, &oldnull);
		n = heap_getattr(newt, att, desc, &newnull);
		if (oldnull != newnull)
			return true;
		if (!oldnull && !datumIsEqual(o, n, attr->attbyval, attr->attlen))
			return true;
	}
	return false;
}

/* Is this row version of the given trigger type? */
static bool
IsType(TupleDesc desc, HeapTuple tuple, const char *type)
{
	bool		isnull;
	Datum		d = heap_getattr(tuple, SPI_fnumber(desc, "trigger_type"), desc, &isnull);

	return !isnull && strcmp(TextDatumGetCString(d), type) == 0;
}

/* Is this row version a cron definition? */
static bool
IsCron(TupleDesc desc, HeapTuple tuple)
{
	return IsType(desc, tuple, "cron");
}

/* Record a new revision for one definition. */
static void
RecordIntent(Relation rel, Datum id)
{
	Oid			nsp = RelationGetNamespace(rel);
	Datum		values[1] = {id};
	int			ret;

	if (intent_plan == NULL || intent_plan_nsp != nsp)
	{
		const char *schema = quote_identifier(get_namespace_name(nsp));
		char	   *seq = quote_literal_cstr(psprintf("%s.ac_revision_seq", schema));
		char	   *sql = psprintf("INSERT INTO %s.ac_schedule_intents AS i (activity_id, revision, changed_at) "
								   "VALUES ($1, pg_catalog.nextval(%s::pg_catalog.regclass), pg_catalog.now()) "
								   "ON CONFLICT (activity_id) DO UPDATE "
								   "SET revision = excluded.revision, changed_at = excluded.changed_at",
								   schema, seq);
		Oid			argtypes[1] = {UUIDOID};
		SPIPlanPtr	plan = SPI_prepare(sql, 1, argtypes);

		if (plan == NULL)
			elog(ERROR, "could not prepare the schedule intent statement: %s",
				 SPI_result_code_string(SPI_result));
		if (intent_plan)
			SPI_freeplan(intent_plan);
		SPI_keepplan(plan);
		intent_plan = plan;
		intent_plan_nsp = nsp;
	}
	ret = SPI_execute_plan(intent_plan, values, NULL, false, 0);
	if (ret != SPI_OK_INSERT)
		elog(ERROR, "could not record a schedule intent: %s",
			 SPI_result_code_string(ret));
	AcCount(AC_STAT_SCHEDULE_CHANGES, 1);
}

/*
 * Trigger function: record that a definition's schedule must be brought in
 * line with the table, and wake the dispatcher at commit.
 */
Datum
ac_definitions_changed(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	TupleDesc	desc;
	HeapTuple	oldt = NULL;
	HeapTuple	newt = NULL;
	bool		isnull;
	int			id_att;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(td->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("ac_definitions_changed must be an AFTER row trigger")));

	desc = td->tg_relation->rd_att;
	if (TRIGGER_FIRED_BY_INSERT(td->tg_event))
		newt = td->tg_trigtuple;
	else if (TRIGGER_FIRED_BY_UPDATE(td->tg_event))
	{
		oldt = td->tg_trigtuple;
		newt = td->tg_newtuple;
	}
	else if (TRIGGER_FIRED_BY_DELETE(td->tg_event))
		oldt = td->tg_trigtuple;
	else
		return PointerGetDatum(NULL);

	/* event definitions live in the router's memory: rebuild it at commit */
	if ((oldt && IsType(desc, oldt, "event")) || (newt && IsType(desc, newt, "event")))
		EventsChangedAtCommit();

	if (!(oldt && IsCron(desc, oldt)) && !(newt && IsCron(desc, newt)))
		return PointerGetDatum(NULL);
	if (oldt && newt && !ScheduleColumnsChanged(desc, oldt, newt) &&
		datumIsEqual(heap_getattr(oldt, SPI_fnumber(desc, "id"), desc, &isnull),
					 heap_getattr(newt, SPI_fnumber(desc, "id"), desc, &isnull),
					 false, 16))
		return PointerGetDatum(NULL);

	id_att = SPI_fnumber(desc, "id");
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (oldt && IsCron(desc, oldt))
		RecordIntent(td->tg_relation, heap_getattr(oldt, id_att, desc, &isnull));
	if (newt && (!oldt || !datumIsEqual(heap_getattr(oldt, id_att, desc, &isnull),
										heap_getattr(newt, id_att, desc, &isnull),
										false, 16) || !IsCron(desc, oldt)))
		RecordIntent(td->tg_relation, heap_getattr(newt, id_att, desc, &isnull));
	SPI_finish();

	AcWakeDispatcherAtCommit();
	return PointerGetDatum(NULL);
}
