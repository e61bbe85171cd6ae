/*-------------------------------------------------------------------------
 *
 * temporal_sql.c
 *	  SQL functions that read Temporal directly: ac_runs() and
 *	  ac_temporal_health().
 *
 * Both run in the calling backend, with the same HTTP client as the
 * workers (temporal.c); a batch stops within a fraction of a second on
 * query cancel or statement_timeout.
 *
 * IDENTIFICATION
 *	  src/temporal_sql.c
 *
 *-------------------------------------------------------------------------
 */
#include "activity_core.h"

#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"
#include "utils/uuid.h"

#include "temporal.h"

PG_FUNCTION_INFO_V1(ac_runs);
PG_FUNCTION_INFO_V1(ac_temporal_health);

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
