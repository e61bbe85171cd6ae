/*-------------------------------------------------------------------------
 *
 * trigger.c
 *	  ac_trigger(): on-demand starts, the SQL side.
 *
 * ac_trigger() checks the definition, builds the workflow argument and
 * records the start in ac_start_outbox in the caller's transaction, then
 * asks for the dispatcher to be woken at commit: a rolled-back transaction
 * starts nothing, a committed one starts the workflow once (start_drain.c).
 * The workflow id is activity-{id}:{key}; with REJECT_DUPLICATE and a
 * request id derived from it, calling ac_trigger twice with the same
 * idempotency key starts one workflow, and retries after a lost answer are
 * harmless.
 *
 * IDENTIFICATION
 *	  src/trigger.c
 *
 *-------------------------------------------------------------------------
 */
#include "activity_core.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/uuid.h"

#include "temporal.h"

PG_FUNCTION_INFO_V1(ac_trigger);

#define MAX_KEY 900

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
					 errmsg("invalid idempotency_key %s", AcShortValue(key)),
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
		char	   *problem = AcArgumentProblem(psprintf("input is %zu bytes", strlen(input)),
												(int64) strlen(arg));

		if (problem)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("input %s", problem),
					 errhint("Temporal would refuse the start; pass references to large data instead.")));
	}

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
