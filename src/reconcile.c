/*-------------------------------------------------------------------------
 *
 * reconcile.c
 *	  Full reconcile of Temporal against ac_activity_definitions:
 *	  ac_sync_schedules(), ac_schedules(), and the dispatcher's periodic run.
 *
 * The table is the desired state.  Every cron definition's schedule is
 * described (the list endpoint is eventually consistent, describe is not)
 * and compared field by field with what the definition asks for: spec and
 * time zone, overlap policy, catch-up window, paused state, and the start
 * action (workflow type, task queue, workflow id, argument, search
 * attribute).  A missing schedule is created, a drifted one updated (which
 * also pauses or resumes it).  Schedules named activity-schedule-* that the
 * list shows but whose definition is gone or no longer cron are deleted,
 * after a fresh look at the table so that a definition created meanwhile
 * is never touched.  Schedules without that prefix are never touched.
 *
 * Only plain reads touch the table, so a reconcile never blocks writes to
 * it.  Requests run with at most activity_core.reconcile_concurrency in
 * flight (describes are heavy for the server: too many at once slow it
 * down).
 *
 * IDENTIFICATION
 *	  src/reconcile.c
 *
 *-------------------------------------------------------------------------
 */
#include "activity_core.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/tuplestore.h"
#include "utils/uuid.h"

#include "temporal.h"

PG_FUNCTION_INFO_V1(ac_sync_schedules);
PG_FUNCTION_INFO_V1(ac_schedules);

#define SCHEDULE_PREFIX "activity-schedule-"

typedef enum RecStep
{
	REC_DESCRIBE,
	REC_CREATE,
	REC_UPDATE,
	REC_DELETE,
	REC_LIST
} RecStep;

/* One schedule under reconcile. */
typedef struct RecItem
{
	AcRequest	req;			/* first member */
	char	   *schedule_id;
	char	   *activity_id;	/* NULL when the suffix is not a uuid */
	bool		has_def;		/* a cron definition wants this schedule */
	AcScheduleSpec want;
	AcScheduleInfo info;
	bool		found;
	const char *action;			/* what was done, NULL for nothing */
	char	   *detail;
	int			retries;
	int64		revision;		/* of its intent when the table was read */
	bool		foreign;		/* made by another installation */
	bool		drifted;		/* missing, changed or orphaned when described */
} RecItem;

typedef struct RecRun
{
	bool		apply;			/* repair, or only look */
	bool		in_worker;		/* the dispatcher's own transaction */
	int			repairs;
	const char *q;				/* quoted schema */
	/* schedule listing */
	char	  **ids;
	int			nids;
	int			cap;
	char	   *token;
} RecRun;

/* Escaped path of a schedule. */
static char *
SchedulePath(RecItem *it, const char *suffix)
{
	return AcTemporalUrl("/schedules/%s%s", AcTemporalEscape(it->schedule_id), suffix);
}

#define REC_RETRIES 2

/*
 * Finish an item with an error from its last request, unless the error is
 * transient and the request may be sent once more.
 */
static bool
RecFail(RecItem *it)
{
	if (AcTemporalIsTransient(it->req.status) && it->retries < REC_RETRIES)
	{
		char		method[8];

		it->retries++;
		strlcpy(method, it->req.method, sizeof(method));
		AcRequestSet(&it->req, method, it->req.url, it->req.body);
		return true;
	}
	it->action = "error";
	it->detail = psprintf("%s: %s", AcTemporalStatusName(it->req.status), it->req.error);
	return false;
}

/*
 * Is the definition still as the reconcile read it?  A change committed
 * since (the dispatcher applies it) must not be undone with the older view.
 */
static bool
StillCurrent(RecRun *run, RecItem *it)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(it->activity_id)};
	int			ret;

	/* in the dispatcher no snapshot is held between requests: take a fresh one */
	if (run->in_worker)
		PushActiveSnapshot(GetTransactionSnapshot());
	ret = SPI_execute_with_args(psprintf("SELECT coalesce((SELECT revision FROM %s.ac_schedule_intents "
										 "WHERE activity_id = $1::uuid), 0)", run->q),
								1, types, values, NULL, false, 1);
	if (run->in_worker)
		PopActiveSnapshot();
	if (ret != SPI_OK_SELECT || SPI_processed != 1)
		return false;
	if (pg_strtoint64(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1)) == it->revision)
		return true;
	it->action = NULL;
	it->detail = "changed meanwhile; left to the dispatcher";
	return false;
}

/* Request-finished callback of the reconcile. */
static bool
RecDone(AcRequest *req, void *arg)
{
	RecItem    *it = (RecItem *) req;
	RecRun	   *run = (RecRun *) arg;

	AcCount(AC_STAT_TEMPORAL_REQUESTS, 1);
	switch ((RecStep) req->step)
	{
		case REC_LIST:
			if (req->status != AC_T_OK)
				return RecFail(it);
			AcReadScheduleList(req->response, req->response_len, SCHEDULE_PREFIX,
							   &run->ids, &run->nids, &run->cap, &run->token);
			if (run->token == NULL)
				return false;
			AcRequestSet(req, "GET",
						 AcTemporalUrl("/schedules?maximumPageSize=1000&nextPageToken=%s",
									   AcTemporalEscape(run->token)), NULL);
			return true;
		case REC_DESCRIBE:
			if (req->status == AC_T_NOT_FOUND)
			{
				it->found = false;
				if (!it->has_def)
					return false;
				it->drifted = true;
				it->detail = "missing";
				if (!run->apply || !StillCurrent(run, it))
					return false;
				it->action = "created";
				req->step = REC_CREATE;
				AcRequestSet(req, "POST", SchedulePath(it, ""), AcScheduleBody(&it->want, true));
				return true;
			}
			if (req->status != AC_T_OK)
				return RecFail(it);
			it->found = true;
			AcReadSchedule(req->response, req->response_len,
						   it->has_def ? &it->want : NULL, &it->info);
			if (!it->has_def)
			{
				/* another database with the extension may share the namespace */
				if (it->info.installation &&
					strcmp(it->info.installation, AcInstallationId()) != 0)
				{
					it->detail = "made by another installation";
					it->foreign = true;
					return false;
				}
				it->detail = it->activity_id ? "no cron definition" : "not a definition id";
				it->drifted = true;
				if (!run->apply)
					return false;
				it->action = "deleted";
				req->step = REC_DELETE;
				AcRequestSet(req, "DELETE", SchedulePath(it, "?identity=activity_core"), NULL);
				return true;
			}
			if (it->info.drift == NULL || it->info.drift[0] == '\0')
				return false;
			it->drifted = true;
			it->detail = it->info.drift;
			if (!run->apply || !StillCurrent(run, it))
				return false;
			if (strcmp(it->info.drift, "paused") == 0)
				it->action = it->want.enabled ? "resumed" : "paused";
			else
				it->action = "updated";
			req->step = REC_UPDATE;
			AcRequestSet(req, "POST", SchedulePath(it, "/update"), AcScheduleBody(&it->want, false));
			return true;
		case REC_CREATE:
		case REC_UPDATE:
			if (req->status != AC_T_OK)
				return RecFail(it);
			run->repairs++;
			return false;
		case REC_DELETE:
			if (req->status != AC_T_OK && req->status != AC_T_NOT_FOUND)
				return RecFail(it);
			run->repairs++;
			return false;
	}
	return false;
}

/* Copy a text column of the current SPI tuple. */
static char *
Col(HeapTuple tup, TupleDesc desc, int col)
{
	char	   *v = SPI_getvalue(tup, desc, col);

	return v ? pstrdup(v) : NULL;
}

/* Is this text a uuid? */
static bool
LooksLikeUuid(const char *s)
{
	if (strlen(s) != 36)
		return false;
	for (int i = 0; i < 36; i++)
	{
		if (i == 8 || i == 13 || i == 18 || i == 23)
		{
			if (s[i] != '-')
				return false;
		}
		else if (!isxdigit((unsigned char) s[i]))
			return false;
	}
	return true;
}

/* Compare items by schedule id, for the binary search of listed ids. */
static int
CompareItems(const void *a, const void *b)
{
	return strcmp((*(RecItem *const *) a)->schedule_id,
				  (*(RecItem *const *) b)->schedule_id);
}

/*
 * Run a batch of the reconcile's requests.  In the dispatcher's own
 * transaction no snapshot is held meanwhile (a reconcile of thousands of
 * schedules takes a minute, and a snapshot would hold back vacuum all that
 * time): the reconcile writes nothing, and the reads made while Temporal
 * answers (StillCurrent, the fresh look before deleting) take snapshots of
 * their own.
 */
static void
RunRequests(RecRun *run, AcRequest **reqs, int n, int concurrency)
{
	if (run->in_worker)
	{
		PopActiveSnapshot();
		InvalidateCatalogSnapshot();
	}
	AcTemporalRun(reqs, n, concurrency, RecDone, run);
	if (run->in_worker)
		PushActiveSnapshot(GetTransactionSnapshot());
}

/*
 * Reconcile; must run inside a transaction with SPI connected and a
 * snapshot pushed.  Returns the items (each with its action and detail) in
 * *items.
 */
static int
Reconcile(const char *schema, bool apply, bool in_worker, RecItem ***items_out, int *repairs)
{
	const char *q = quote_identifier(schema);
	RecRun		run;
	RecItem   **items;
	int			n;
	int			ndefs;
	int			ret;
	RecItem    *lister;
	AcRequest  *one[1];

	memset(&run, 0, sizeof(run));
	run.apply = apply;
	run.in_worker = in_worker;
	run.q = q;

	/* 1. what the table asks for */
	ret = SPI_execute(psprintf("SELECT d.id::text, d.name, d.enabled, d.workflow_type, d.task_queue, "
							   "  d.trigger_config->>'cron_expression', d.trigger_config->>'timezone', "
							   "  d.trigger_config->>'misfire_policy', d.input::text, "
							   "  coalesce(i.revision, 0) "
							   "FROM %s.ac_activity_definitions d "
							   "LEFT JOIN %s.ac_schedule_intents i ON i.activity_id = d.id "
							   "WHERE d.trigger_type = 'cron' AND d.trigger_config ? 'cron_expression' "
							   "ORDER BY d.id", q, q), true, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read the definitions: %s", SPI_result_code_string(ret));
	ndefs = (int) SPI_processed;

	/* 2. what Temporal has under our prefix */
	lister = palloc0(sizeof(RecItem));
	lister->req.step = REC_LIST;
	AcRequestSet(&lister->req, "GET", AcTemporalUrl("/schedules?maximumPageSize=1000"), NULL);
	one[0] = &lister->req;
	RunRequests(&run, one, 1, 1);
	AcRequestFree(&lister->req);
	if (lister->action)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("could not list the schedules in Temporal: %s", lister->detail)));

	items = palloc(sizeof(RecItem *) * (ndefs + run.nids + 1));
	n = 0;
	for (int i = 0; i < ndefs; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		RecItem    *it = palloc0(sizeof(RecItem));

		it->activity_id = Col(tup, desc, 1);
		it->schedule_id = psprintf(SCHEDULE_PREFIX "%s", it->activity_id);
		it->has_def = true;
		it->want.id = it->activity_id;
		it->want.name = Col(tup, desc, 2);
		it->want.enabled = SPI_getvalue(tup, desc, 3)[0] == 't';
		it->want.workflow_type = Col(tup, desc, 4);
		it->want.task_queue = Col(tup, desc, 5);
		it->want.cron = Col(tup, desc, 6);
		it->want.timezone = Col(tup, desc, 7);
		it->want.policy = Col(tup, desc, 8);
		it->want.input = Col(tup, desc, 9);
		it->revision = pg_strtoint64(SPI_getvalue(tup, desc, 10));
		if (it->want.timezone == NULL)
			it->want.timezone = "UTC";
		if (it->want.policy == NULL)
			it->want.policy = "skip";
		items[n++] = it;
	}
	qsort(items, n, sizeof(RecItem *), CompareItems);

	/* 3. listed schedules without a cron definition in our snapshot */
	{
		int			nd = n;
		List	   *orphans = NIL;

		for (int i = 0; i < run.nids; i++)
		{
			RecItem		key;
			RecItem    *kp = &key;

			key.schedule_id = run.ids[i];
			if (bsearch(&kp, items, nd, sizeof(RecItem *), CompareItems) != NULL)
				continue;
			orphans = lappend(orphans, run.ids[i]);
		}
		if (orphans != NIL)
		{
			ListCell   *lc;
			StringInfoData ids;

			/* a fresh look: a definition created since must not lose its schedule */
			initStringInfo(&ids);
			foreach(lc, orphans)
			{
				const char *sid = (const char *) lfirst(lc);
				const char *suffix = sid + strlen(SCHEDULE_PREFIX);

				if (LooksLikeUuid(suffix))
					appendStringInfo(&ids, "%s%s", ids.len ? "," : "", suffix);
			}
			if (ids.len > 0)
			{
				ret = SPI_execute(psprintf("SELECT id::text FROM %s.ac_activity_definitions "
										   "WHERE trigger_type = 'cron' AND id = ANY('{%s}'::uuid[])",
										   q, ids.data), false, 0);
				if (ret != SPI_OK_SELECT)
					elog(ERROR, "could not read the definitions: %s", SPI_result_code_string(ret));
			}
			foreach(lc, orphans)
			{
				const char *sid = (const char *) lfirst(lc);
				const char *suffix = sid + strlen(SCHEDULE_PREFIX);
				bool		now_cron = false;
				RecItem    *it;

				if (ids.len > 0)
					for (uint64 r = 0; r < SPI_processed; r++)
						if (strcmp(SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1), suffix) == 0)
							now_cron = true;
				if (now_cron)
					continue;
				it = palloc0(sizeof(RecItem));
				it->schedule_id = pstrdup(sid);
				it->activity_id = LooksLikeUuid(suffix) ? pstrdup(suffix) : NULL;
				it->has_def = false;
				items[n++] = it;
			}
		}
	}

	/* 4. describe every one, repairing as we go */
	for (int i = 0; i < n; i++)
	{
		/* standard payload form, so the argument's bytes can be compared */
		items[i]->req.step = REC_DESCRIBE;
		AcRequestSet(&items[i]->req, "GET", SchedulePath(items[i], "?noPayloadShorthand=true"), NULL);
	}
	RunRequests(&run, (AcRequest **) items, n, ac_reconcile_concurrency);
	for (int i = 0; i < n; i++)
	{
		AcRequestFree(&items[i]->req);
		if (items[i]->action && strcmp(items[i]->action, "error") != 0)
		{
			AcCount(AC_STAT_RECONCILE_REPAIRS, 1);
			elog(LOG, "activity_core: reconcile %s schedule %s (%s)",
				 items[i]->action, items[i]->schedule_id, items[i]->detail);
		}
		else if (items[i]->action)
			elog(LOG, "activity_core: reconcile could not repair schedule %s: %s",
				 items[i]->schedule_id, items[i]->detail);
	}
	AcCount(AC_STAT_RECONCILE_RUNS, 1);
	if (apply)
	{
		int			drifted = 0;

		for (int i = 0; i < n; i++)
			drifted += items[i]->drifted ? 1 : 0;
		AcReconcileSucceeded(drifted);
	}
	*items_out = items;
	*repairs = run.repairs;
	return n;
}

/* Connect SPI and find the schema, for the SQL functions. */
static char *
SqlSchema(void)
{
	char	   *schema;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	schema = AcExtensionSchema();
	if (schema == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("extension activity_core is not installed in this database")));
	return schema;
}

/* A uuid Datum from text, or NULL. */
static Datum
UuidOrNull(const char *id, bool *isnull)
{
	*isnull = (id == NULL);
	return id ? DirectFunctionCall1(uuid_in, CStringGetDatum(id)) : (Datum) 0;
}

/*
 * ac_sync_schedules() returns setof (activity_id, schedule_id, action,
 * detail): one row per action taken.
 */
Datum
ac_sync_schedules(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	RecItem   **items;
	int			n;
	int			repairs;
	char	   *schema;

	/*
	 * Before deleting a schedule whose definition seems gone, the reconcile
	 * looks at the table again; under one snapshot for the transaction that
	 * second look would miss definitions committed since it began.
	 */
	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("ac_sync_schedules needs READ COMMITTED isolation"),
				 errhint("Under REPEATABLE READ or SERIALIZABLE it could delete the schedules of definitions created meanwhile.")));
	if (!ac_manage_schedules)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("activity_core.manage_schedules is off on this server"),
				 errdetail("Another server owns the Temporal schedules of these definitions."),
				 errhint("Run ac_sync_schedules() on the server that owns the schedules, or set activity_core.manage_schedules = on here once no other server manages them.")));
	InitMaterializedSRF(fcinfo, 0);
	schema = SqlSchema();
	n = Reconcile(schema, true, false, &items, &repairs);
	for (int i = 0; i < n; i++)
	{
		Datum		values[4];
		bool		nulls[4] = {false, false, false, false};

		if (items[i]->action == NULL)
			continue;
		values[0] = UuidOrNull(items[i]->activity_id, &nulls[0]);
		values[1] = CStringGetTextDatum(items[i]->schedule_id);
		values[2] = CStringGetTextDatum(items[i]->action);
		values[3] = CStringGetTextDatum(items[i]->detail ? items[i]->detail : "");
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	SPI_finish();
	return (Datum) 0;
}

/*
 * ac_schedules() returns setof (schedule_id, activity_id, paused, notes,
 * next_fire_times, recent_actions, in_sync, drift): the live state of this
 * extension's schedules.
 */
Datum
ac_schedules(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	RecItem   **items;
	int			n;
	int			repairs;
	char	   *schema;

	InitMaterializedSRF(fcinfo, 0);
	schema = SqlSchema();
	n = Reconcile(schema, false, false, &items, &repairs);
	for (int i = 0; i < n; i++)
	{
		RecItem    *it = items[i];
		Datum		values[8];
		bool		nulls[8] = {false, false, false, false, false, false, false, false};
		bool		in_sync;

		if (it->foreign)
			continue;

		if (it->action && strcmp(it->action, "error") == 0 && !it->found)
		{
			/* could not describe: say so rather than guess */
			memset(nulls, true, sizeof(nulls));
			nulls[0] = false;
			nulls[1] = it->activity_id == NULL;
			nulls[6] = false;
			nulls[7] = false;
			values[0] = CStringGetTextDatum(it->schedule_id);
			values[1] = UuidOrNull(it->activity_id, &nulls[1]);
			values[6] = BoolGetDatum(false);
			values[7] = CStringGetTextDatum(it->detail);
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
			continue;
		}
		in_sync = it->has_def && it->found && it->info.drift && it->info.drift[0] == '\0';
		values[0] = CStringGetTextDatum(it->schedule_id);
		values[1] = UuidOrNull(it->activity_id, &nulls[1]);
		values[2] = BoolGetDatum(it->info.paused);
		nulls[2] = !it->found;
		values[3] = it->info.notes ? CStringGetTextDatum(it->info.notes) : (Datum) 0;
		nulls[3] = it->info.notes == NULL;
		if (it->found)
		{
			values[4] = DirectFunctionCall1(jsonb_in, CStringGetDatum(it->info.future));
			values[5] = DirectFunctionCall1(jsonb_in, CStringGetDatum(it->info.recent));
		}
		nulls[4] = nulls[5] = !it->found;
		values[6] = BoolGetDatum(in_sync);
		values[7] = CStringGetTextDatum(!it->has_def ? "orphan" :
										!it->found ? "missing" :
										it->info.drift ? it->info.drift : "unreadable");
		nulls[7] = in_sync;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	SPI_finish();
	return (Datum) 0;
}

/*
 * The dispatcher's periodic reconcile: run it in a transaction of its own
 * and log what it did.
 */
void
AcReconcileInWorker(const char *schema)
{
	RecItem   **items;
	int			n;
	int			repairs;
	MemoryContext caller = CurrentMemoryContext;

	AcWorkerBegin();
	n = Reconcile(schema, true, true, &items, &repairs);
	AcWorkerCommit();
	MemoryContextSwitchTo(caller);
	elog(repairs > 0 ? LOG : DEBUG1,
		 "activity_core: reconcile checked %d schedules, repaired %d", n, repairs);
}
