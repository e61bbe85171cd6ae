/*-------------------------------------------------------------------------
 *
 * manual.c
 *	  On-demand starts: ac_trigger() and the dispatcher's drain of
 *	  ac_start_outbox; ac_runs() and ac_temporal_health(), the reads of
 *	  Temporal that SQL users make directly.
 *
 * ac_trigger() checks the definition, builds the workflow argument and
 * records the start in ac_start_outbox in the caller's transaction, then
 * asks for the dispatcher to be woken at commit: a rolled-back transaction
 * starts nothing, a committed one starts the workflow once.  The workflow
 * id is activity-{id}:{key}; with REJECT_DUPLICATE and a request id derived
 * from it, calling ac_trigger twice with the same idempotency key starts
 * one workflow, and retries after a lost answer are harmless.
 *
 * IDENTIFICATION
 *	  src/manual.c
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
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"
#include "utils/uuid.h"

#include "temporal.h"

PG_FUNCTION_INFO_V1(ac_trigger);
PG_FUNCTION_INFO_V1(ac_runs);

#define MAX_KEY 900

/* One pending start of the outbox. */
typedef struct StartRow
{
	AcRequest	req;			/* first member */
	int64		id;
	char	   *workflow_id;
	int			attempts;
	char	   *refused;		/* why the row cannot be processed, or NULL */
} StartRow;

/*
 * ac_trigger(id uuid, input jsonb, idempotency_key text) returns text: the
 * workflow id that starts once the transaction commits.
 */
Datum
ac_trigger(PG_FUNCTION_ARGS)
{
	Datum		id;
	char	   *key;
	char	   *schema;
	char	   *q;
	Oid			types[1] = {UUIDOID};
	Datum		values[1];
	int			ret;
	char	   *name;
	char	   *wt;
	char	   *tq;
	char	   *input;
	char	   *idtext;
	char	   *wid;
	char	   *arg;
	text	   *result;
	MemoryContext caller = CurrentMemoryContext;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("ac_trigger needs the id of an activity definition")));
	id = PG_GETARG_DATUM(0);
	idtext = DatumGetCString(DirectFunctionCall1(uuid_out, id));
	if (PG_ARGISNULL(2))
		key = psprintf("manual-%s", AcNewUuid());
	else
	{
		key = text_to_cstring(PG_GETARG_TEXT_PP(2));
		if (key[0] == '\0' || strchr(key, '/') != NULL || strlen(key) > MAX_KEY)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid idempotency_key \"%s\"", key),
					 errhint("An idempotency key is non-empty, at most %d bytes and has no \"/\" "
							 "(it becomes part of the workflow id).", MAX_KEY)));
	}

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	schema = AcExtensionSchema();
	q = (char *) quote_identifier(schema);
	values[0] = id;
	ret = SPI_execute_with_args(psprintf("SELECT name, enabled, workflow_type, task_queue, input::text "
										 "FROM %s.ac_activity_definitions WHERE id = $1", q),
								1, types, values, NULL, true, 1);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read the definition: %s", SPI_result_code_string(ret));
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("activity definition %s does not exist", idtext)));
	name = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	if (SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2)[0] != 't')
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("activity definition \"%s\" is disabled", name),
				 errhint("Enable it first: UPDATE ac_activity_definitions SET enabled = true WHERE id = '%s'.",
						 idtext)));
	wt = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3);
	tq = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4);
	input = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 5);
	if (!PG_ARGISNULL(1))
	{
		Jsonb	   *override = PG_GETARG_JSONB_P(1);

		/* input is the workflow's named arguments: an object */
		if (!JB_ROOT_IS_OBJECT(override) || JB_ROOT_IS_SCALAR(override))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("input must be a JSON object"),
					 errhint("Pass the workflow's arguments as an object, e.g. '{\"date\": \"2026-12-01\"}'.")));
		input = JsonbToCString(NULL, &override->root, VARSIZE(override));
	}
	wid = psprintf("activity-%s:%s", idtext, key);
	arg = AcArgumentText(idtext, name, "manual", input, NULL);

	{
		Oid			itypes[5] = {UUIDOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID};
		Datum		ivalues[5];

		ivalues[0] = id;
		ivalues[1] = CStringGetTextDatum(wid);
		ivalues[2] = CStringGetTextDatum(wt);
		ivalues[3] = CStringGetTextDatum(tq);
		ivalues[4] = CStringGetTextDatum(arg);
		ret = SPI_execute_with_args(psprintf("INSERT INTO %s.ac_start_outbox "
											 "(activity_id, workflow_id, workflow_type, task_queue, argument) "
											 "VALUES ($1, $2, $3, $4, $5)", q),
									5, itypes, ivalues, NULL, false, 0);
		if (ret != SPI_OK_INSERT)
			elog(ERROR, "could not record the start: %s", SPI_result_code_string(ret));
	}
	/* SPI_finish frees what was allocated since SPI_connect */
	result = (text *) MemoryContextAlloc(caller, VARHDRSZ + strlen(wid));
	SET_VARSIZE(result, VARHDRSZ + strlen(wid));
	memcpy(VARDATA(result), wid, strlen(wid));
	SPI_finish();
	AcWakeDispatcherAtCommit();
	PG_RETURN_TEXT_P(result);
}

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
		ret = SPI_execute_with_args(psprintf("DELETE FROM %s.ac_start_outbox WHERE id = $1", q),
									1, types, values, NULL, false, 0);
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
							   "  activity_id::text, attempts FROM %s.ac_start_outbox "
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

/* Request-finished callback of ac_runs. */
static bool
RunsDone(AcRequest *req, void *arg)
{
	AcCount(AC_STAT_TEMPORAL_REQUESTS, 1);
	return false;
}

/*
 * ac_runs(id uuid, max int) returns setof (workflow_id, run_id, status,
 * workflow_type, start_time, close_time): the definition's executions,
 * newest first, from Temporal's visibility by activity_id.
 */
Datum
ac_runs(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *idtext = DatumGetCString(DirectFunctionCall1(uuid_out, PG_GETARG_DATUM(0)));
	int			max = PG_GETARG_INT32(1);
	AcRequest  *req = palloc0(sizeof(AcRequest));
	AcRequest  *one[1] = {req};
	AcRunRow   *runs;
	int			n;

	InitMaterializedSRF(fcinfo, 0);
	if (max < 1)
		PG_RETURN_NULL();
	AcRequestSet(req, "GET",
				 AcTemporalUrl("/workflows?pageSize=%d&query=%s", Min(max, 1000),
							   AcTemporalEscape(psprintf("activity_id = '%s'", idtext))),
				 NULL);
	AcTemporalRun(one, 1, 1, RunsDone, NULL);
	if (req->status != AC_T_OK)
	{
		char	   *error = pstrdup(req->error);

		AcRequestFree(req);
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("could not list the runs in Temporal: %s", error)));
	}
	n = AcReadRuns(req->response, req->response_len, &runs);
	AcRequestFree(req);
	for (int i = 0; i < n && i < max; i++)
	{
		Datum		values[6];
		bool		nulls[6] = {false, false, false, false, false, false};

		values[0] = CStringGetTextDatum(runs[i].workflow_id);
		values[1] = CStringGetTextDatum(runs[i].run_id);
		values[2] = CStringGetTextDatum(runs[i].status);
		values[3] = CStringGetTextDatum(runs[i].workflow_type);
		values[4] = runs[i].start_time ?
			DirectFunctionCall3(timestamptz_in, CStringGetDatum(runs[i].start_time),
								ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1)) : (Datum) 0;
		nulls[4] = runs[i].start_time == NULL;
		values[5] = runs[i].close_time ?
			DirectFunctionCall3(timestamptz_in, CStringGetDatum(runs[i].close_time),
								ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1)) : (Datum) 0;
		nulls[5] = runs[i].close_time == NULL;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(ac_temporal_health);

/*
 * ac_temporal_health() returns setof (check, ok, detail): Temporal
 * reachable, namespace present, search attribute activity_id a Keyword.
 */
Datum
ac_temporal_health(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	AcRequest  *reqs[3];
	const char *checks[3] = {"temporal_reachable", "temporal_namespace",
	"search_attribute_activity_id"};
	const char *base = ac_temporal_url;
	int			blen = strlen(base);
	char	   *ns = AcTemporalEscape(ac_temporal_namespace);

	InitMaterializedSRF(fcinfo, 0);
	while (blen > 0 && base[blen - 1] == '/')
		blen--;
	for (int i = 0; i < 3; i++)
		reqs[i] = palloc0(sizeof(AcRequest));
	AcRequestSet(reqs[0], "GET", psprintf("%.*s/system-info", blen, base), NULL);
	AcRequestSet(reqs[1], "GET", psprintf("%.*s/cluster/namespaces/%s", blen, base, ns), NULL);
	AcRequestSet(reqs[2], "GET", psprintf("%.*s/cluster/namespaces/%s/search-attributes", blen, base, ns), NULL);
	AcTemporalRun(reqs, 3, 3, RunsDone, NULL);
	for (int i = 0; i < 3; i++)
	{
		Datum		values[3];
		bool		nulls[3] = {false, false, false};
		bool		ok = reqs[i]->status == AC_T_OK;
		char	   *detail;

		if (ok && i == 2)
		{
			ok = reqs[i]->response &&
				strstr(reqs[i]->response, "\"activity_id\":\"INDEXED_VALUE_TYPE_KEYWORD\"") != NULL;
			detail = ok ? pstrdup("activity_id is a Keyword search attribute") :
				psprintf("search attribute activity_id is not registered as Keyword in namespace %s; "
						 "run: temporal operator search-attribute create --namespace %s --name activity_id --type Keyword",
						 ac_temporal_namespace, ac_temporal_namespace);
		}
		else if (ok)
			detail = i == 0 ? psprintf("%s answers", AcRedactUrl(ac_temporal_url)) :
				psprintf("namespace %s exists", ac_temporal_namespace);
		else
			detail = psprintf("%s: %s (%s)", AcTemporalStatusName(reqs[i]->status),
							  reqs[i]->error, AcRedactUrl(ac_temporal_url));
		values[0] = CStringGetTextDatum(checks[i]);
		values[1] = BoolGetDatum(ok);
		values[2] = CStringGetTextDatum(detail);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		AcRequestFree(reqs[i]);
	}
	return (Datum) 0;
}
