/*-------------------------------------------------------------------------
 *
 * intents.c
 *	  AFTER row and BEFORE TRUNCATE trigger on ac_activity_definitions that
 *	  records schedule intents, and ac_session_id().
 *
 * Nothing here talks to Temporal.  A change that matters to a schedule
 * (the row is or was a cron definition, and a column the schedule is built
 * from changed) upserts the definition's row in ac_schedule_intents with a
 * fresh revision from ac_revision_seq, inside the user's transaction: a
 * rollback leaves nothing behind, a commit makes the intent durable, and
 * several changes to one row collapse into its latest revision.  At commit
 * the dispatcher's latch is set (wakeup.c).
 *
 * The trigger function is SECURITY DEFINER, so that roles writing
 * definitions need no rights on the bookkeeping tables.  It therefore
 * checks that it fires on the extension's own table (catalog.c) and
 * writes only to schema-qualified objects of the extension's schema.
 *
 * IDENTIFICATION
 *	  src/intents.c
 *
 *-------------------------------------------------------------------------
 */
#include "activity_core.h"

#include "access/htup_details.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/uuid.h"

PG_FUNCTION_INFO_V1(ac_definitions_changed);

/* columns a schedule is built from */
static const char *const schedule_columns[] = {
	"name", "enabled", "trigger_type", "trigger_config", "workflow_type",
	"task_queue", "input"
};

/* A prepared statement of the trigger, and what it was prepared for. */
typedef struct IntentPlan
{
	SPIPlanPtr	plan;
	Oid			nsp;
	bool		origin;			/* ac_schedule_intents has an origin column */
} IntentPlan;

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

/*
 * Prepare one statement of the intents trigger, once per extension schema:
 * "%1$s" in sql stands for the quoted schema, "%2$s" for the upsert's
 * assignment of origin (empty while the schema is 0.1.0's, which has no
 * origin column: the library may be newer than the installed scripts until
 * ALTER EXTENSION UPDATE runs).  Every name in it is schema-qualified, and
 * the function runs with search_path = pg_catalog, pg_temp, so nothing a
 * caller creates can stand in for the extension's tables.
 */
static SPIPlanPtr
PrepareInSchema(IntentPlan *cache, Oid nsp, const char *sql, int nargs, Oid *argtypes)
{
	SPIPlanPtr	plan;
	Oid			intents = get_relname_relid("ac_schedule_intents", nsp);
	bool		origin = OidIsValid(intents) &&
		get_attnum(intents, "origin") != InvalidAttrNumber;

	if (cache->plan != NULL && cache->nsp == nsp && cache->origin == origin)
		return cache->plan;
	plan = SPI_prepare(psprintf(sql, quote_identifier(get_namespace_name(nsp)),
								origin ? ", origin = excluded.origin" : ""),
					   nargs, argtypes);
	if (plan == NULL)
		elog(ERROR, "could not prepare a schedule intent statement: %s",
			 SPI_result_code_string(SPI_result));
	SPI_keepplan(plan);
	if (cache->plan)
		SPI_freeplan(cache->plan);
	cache->plan = plan;
	cache->nsp = nsp;
	cache->origin = origin;
	return plan;
}

/* The parts of the intent upserts, for PrepareInSchema (%1$s: schema, %2$s: origin) */
#define INTENT_INSERT \
	"INSERT INTO %1$s.ac_schedule_intents AS i (activity_id, revision, changed_at) "
#define NEXT_REVISION "pg_catalog.nextval('%1$s.ac_revision_seq'::pg_catalog.regclass)"
#define INTENT_UPSERT \
	"ON CONFLICT (activity_id) DO UPDATE " \
	"SET revision = excluded.revision, changed_at = excluded.changed_at%2$s"

/* Record a new revision for one definition. */
static void
RecordIntent(Oid nsp, Datum id)
{
	static IntentPlan cache;
	Oid			argtypes[1] = {UUIDOID};
	Datum		values[1] = {id};
	SPIPlanPtr	plan;
	int			ret;

	plan = PrepareInSchema(&cache, nsp,
					INTENT_INSERT
					"VALUES ($1, " NEXT_REVISION ", pg_catalog.now()) "
					INTENT_UPSERT,
					1, argtypes);
	ret = SPI_execute_plan(plan, values, NULL, false, 0);
	if (ret != SPI_OK_INSERT)
		elog(ERROR, "could not record a schedule intent: %s",
			 SPI_result_code_string(ret));
	AcCount(AC_STAT_SCHEDULE_CHANGES, 1);
}

/*
 * Before a TRUNCATE: record a new revision for every cron definition, so
 * that the dispatcher deletes their schedules once it commits, and rebuild
 * the router's index if event definitions go too.
 */
static void
RecordTruncate(Oid nsp)
{
	static IntentPlan cache;
	static IntentPlan events_cache;
	SPIPlanPtr	plan;
	int			ret;

	plan = PrepareInSchema(&cache, nsp,
					INTENT_INSERT
					"SELECT d.id, " NEXT_REVISION ", pg_catalog.now() "
					"FROM %1$s.ac_activity_definitions d "
					"WHERE d.trigger_type OPERATOR(pg_catalog.=) 'cron' "
					INTENT_UPSERT,
					0, NULL);
	ret = SPI_execute_plan(plan, NULL, NULL, false, 0);
	if (ret != SPI_OK_INSERT)
		elog(ERROR, "could not record the schedule intents of a TRUNCATE: %s",
			 SPI_result_code_string(ret));
	if (SPI_processed > 0)
	{
		AcCount(AC_STAT_SCHEDULE_CHANGES, SPI_processed);
		AcWakeDispatcherAtCommit();
	}
	plan = PrepareInSchema(&events_cache, nsp,
					"SELECT 1 FROM %1$s.ac_activity_definitions d "
					"WHERE d.trigger_type OPERATOR(pg_catalog.=) 'event' LIMIT 1",
					0, NULL);
	ret = SPI_execute_plan(plan, NULL, NULL, true, 1);
	if (ret == SPI_OK_SELECT && SPI_processed > 0)
		AcEventsChangedAtCommit();
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
	Datum		old_id = (Datum) 0;
	Datum		new_id = (Datum) 0;
	bool		same_id;
	Oid			nsp;

	/* runs as the extension's owner: only ever on the extension's own table */
	AcCheckTriggerTarget(fcinfo, "ac_definitions_changed");
	nsp = RelationGetNamespace(td->tg_relation);
	if (TRIGGER_FIRED_BY_TRUNCATE(td->tg_event))
	{
		if (!TRIGGER_FIRED_BEFORE(td->tg_event))
			ereport(ERROR,
					(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
					 errmsg("ac_definitions_changed must be a BEFORE TRUNCATE trigger")));
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		RecordTruncate(nsp);
		SPI_finish();
		return PointerGetDatum(NULL);
	}
	if (!TRIGGER_FIRED_AFTER(td->tg_event) || !TRIGGER_FIRED_FOR_ROW(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("ac_definitions_changed must be an AFTER row trigger, or BEFORE TRUNCATE")));

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
		AcEventsChangedAtCommit();

	if (!(oldt && IsCron(desc, oldt)) && !(newt && IsCron(desc, newt)))
		return PointerGetDatum(NULL);
	id_att = SPI_fnumber(desc, "id");
	if (oldt)
		old_id = heap_getattr(oldt, id_att, desc, &isnull);
	if (newt)
		new_id = heap_getattr(newt, id_att, desc, &isnull);
	same_id = oldt && newt && datumIsEqual(old_id, new_id, false, UUID_LEN);
	if (same_id && !ScheduleColumnsChanged(desc, oldt, newt))
		return PointerGetDatum(NULL);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (oldt && IsCron(desc, oldt))
		RecordIntent(nsp, old_id);
	if (newt && (!same_id || !IsCron(desc, oldt)))
		RecordIntent(nsp, new_id);
	SPI_finish();

	AcWakeDispatcherAtCommit();
	return PointerGetDatum(NULL);
}

PG_FUNCTION_INFO_V1(ac_session_id);

/*
 * ac_session_id() returns text: the session's tag, as log_line_prefix's %c
 * prints it (start time and process id in hex).
 */
Datum
ac_session_id(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(psprintf("%lx.%x", (long) MyStartTime, MyProcPid)));
}
