/*-------------------------------------------------------------------------
 *
 * temporal_json.c
 *	  The JSON Temporal's HTTP API reads and writes (jansson).
 *
 * Request bodies for schedules and backfills, and the classification of
 * error bodies (google.rpc.Status: a numeric gRPC "code", a "message" and
 * details[0]["@type"]).  Kept apart from the files that use PostgreSQL's
 * function manager headers, whose json_* declarations clash with
 * jansson's.  Everything here is plain jansson plus palloc; jansson's own
 * allocations never outlive a function.
 *
 * Schedule layout (one per cron definition):
 *   id          activity-schedule-{id}
 *   spec        cronString [cron_expression], timezoneName
 *   action      startWorkflow: workflowId activity-{id}:schedule,
 *               workflow_type on task_queue, one argument
 *               {"activity_id","activity_name","trigger":"cron","input"},
 *               search attribute activity_id
 *   policies    overlap and catch-up window from the misfire policy
 *   state       paused with a note when the definition is disabled
 *   schedule    search attribute activity_id; memo (on create only,
 *               Temporal refuses memo updates) managed_by, activity_name
 *
 * IDENTIFICATION
 *	  src/temporal_json.c
 *
 *-------------------------------------------------------------------------
 */
#include "activity_core.h"

#include <jansson.h>

#include "temporal.h"

/* Dump a jansson value to a palloc'd string and release it. */
static char *
JsonToText(json_t *j)
{
	char	   *s;
	char	   *out;

	if (j == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not build a request for Temporal")));
	s = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	if (s == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	out = pstrdup(s);
	free(s);
	return out;
}

/* Parse JSON text that PostgreSQL produced (jsonb output). */
static json_t *
ParseJson(const char *text)
{
	json_error_t err;
	json_t	   *j = json_loads(text, JSON_DECODE_ANY, &err);

	if (j == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("could not parse JSON for Temporal: %s", err.text)));
	return j;
}

/* The overlap policy of a misfire policy. */
const char *
AcOverlapPolicy(const char *policy)
{
	if (strcmp(policy, "catchup") == 0)
		return "SCHEDULE_OVERLAP_POLICY_BUFFER_ALL";
	if (strcmp(policy, "compress") == 0)
		return "SCHEDULE_OVERLAP_POLICY_BUFFER_ONE";
	return "SCHEDULE_OVERLAP_POLICY_SKIP";
}

/* The catch-up window of a misfire policy. */
const char *
AcCatchupWindow(const char *policy)
{
	if (strcmp(policy, "skip") == 0)
		return "60s";
	return "31536000s";
}

/* Build {"indexedFields": {"activity_id": id}}. */
static json_t *
SearchAttributes(const char *id)
{
	return json_pack("{s:{s:s}}", "indexedFields", "activity_id", id);
}

/* Build the body of CreateSchedule (create) or UpdateSchedule. */
char *
AcScheduleBody(const AcScheduleSpec *spec, bool create)
{
	json_t	   *arg;
	json_t	   *sched;
	json_t	   *body;

	arg = json_pack("{s:s, s:s, s:s, s:o}",
					"activity_id", spec->id,
					"activity_name", spec->name,
					"trigger", "cron",
					"input", ParseJson(spec->input));
	sched = json_pack("{s:{s:[s], s:s}, s:{s:{s:s, s:{s:s}, s:{s:s}, s:[o], s:o}}, s:{s:s, s:s}, s:{s:b, s:s}}",
					  "spec",
					  "cronString", spec->cron,
					  "timezoneName", spec->timezone,
					  "action", "startWorkflow",
					  "workflowId", psprintf("activity-%s:schedule", spec->id),
					  "workflowType", "name", spec->workflow_type,
					  "taskQueue", "name", spec->task_queue,
					  "input", arg,
					  "searchAttributes", SearchAttributes(spec->id),
					  "policies",
					  "overlapPolicy", AcOverlapPolicy(spec->policy),
					  "catchupWindow", AcCatchupWindow(spec->policy),
					  "state",
					  "paused", !spec->enabled,
					  "notes", spec->enabled ? "enabled in ac_activity_definitions" :
					  "disabled in ac_activity_definitions");
	if (sched == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not build the schedule of activity %s", spec->id)));
	body = json_pack("{s:s, s:s, s:o, s:o}",
					 "requestId", AcNewUuid(),
					 "identity", "activity_core",
					 "schedule", sched,
					 "searchAttributes", SearchAttributes(spec->id));
	if (body && create)
		json_object_set_new(body, "memo",
							json_pack("{s:{s:s, s:s}}", "fields",
									  "managed_by", "activity_core",
									  "activity_name", spec->name));
	return JsonToText(body);
}

/*
 * From a ListScheduleMatchingTimes answer for the span a schedule was
 * paused, build the PatchSchedule body of its backfill: the last max_runs
 * missed fire times (catchup) or only the last one (compress).  Returns
 * false when no fire time was missed.
 */
bool
AcBackfillBody(const char *matching, size_t len, const char *policy,
			   int max_runs, const char *from, const char *to,
			   char **body, char **description)
{
	json_error_t err;
	json_t	   *root = matching ? json_loadb(matching, len, 0, &err) : NULL;
	json_t	   *times = root ? json_object_get(root, "startTime") : NULL;
	size_t		n = json_is_array(times) ? json_array_size(times) : 0;
	size_t		runs;
	const char *first;
	const char *last;

	if (n == 0)
	{
		if (root)
			json_decref(root);
		return false;
	}
	runs = strcmp(policy, "compress") == 0 ? 1 : Min(n, (size_t) Max(max_runs, 1));
	first = json_string_value(json_array_get(times, n - runs));
	last = json_string_value(json_array_get(times, n - 1));
	if (first == NULL || last == NULL)
	{
		json_decref(root);
		return false;
	}
	*body = JsonToText(json_pack("{s:s, s:{s:[{s:s, s:s, s:s}]}}",
								 "requestId", AcNewUuid(),
								 "patch", "backfillRequest",
								 "startTime", first,
								 "endTime", last,
								 "overlapPolicy", AcOverlapPolicy(policy)));
	*description = JsonToText(json_pack("{s:s, s:s, s:I, s:I, s:s, s:s}",
										"missed_from", from,
										"missed_to", to,
										"missed", (json_int_t) n,
										"runs", (json_int_t) runs,
										"first", first,
										"last", last));
	json_decref(root);
	return true;
}

/* Classify a failed request from its error body. */
void
AcParseError(AcRequest *req)
{
	json_error_t jerr;
	json_t	   *root;

	req->status = AC_T_UNAVAILABLE;
	snprintf(req->error, sizeof(req->error), "HTTP %ld", req->http_status);
	root = req->response ? json_loadb(req->response, req->response_len, 0, &jerr) : NULL;
	if (root && json_is_object(root))
	{
		json_t	   *code = json_object_get(root, "code");
		json_t	   *msg = json_object_get(root, "message");
		json_t	   *details = json_object_get(root, "details");
		const char *type = "";

		if (json_is_array(details) && json_array_size(details) > 0)
		{
			json_t	   *t = json_object_get(json_array_get(details, 0), "@type");

			if (json_is_string(t))
			{
				const char *dot = strrchr(json_string_value(t), '.');

				type = dot ? dot + 1 : json_string_value(t);
			}
		}
		if (json_is_string(msg))
			snprintf(req->error, sizeof(req->error), "%s", json_string_value(msg));
		req->grpc_code = json_is_integer(code) ? (int) json_integer_value(code) : 0;
		switch (req->grpc_code)
		{
			case 6:				/* ALREADY_EXISTS */
				req->status = AC_T_ALREADY_EXISTS;
				break;
			case 5:				/* NOT_FOUND: a route or namespace error unless
								 * the detail says the object is missing */
				if (strcmp(type, "NotFoundFailure") == 0)
					req->status = AC_T_NOT_FOUND;
				break;
			case 3:				/* INVALID_ARGUMENT */
			case 9:				/* FAILED_PRECONDITION */
			case 11:			/* OUT_OF_RANGE */
				req->status = AC_T_INVALID;
				break;
			case 7:				/* PERMISSION_DENIED */
			case 16:			/* UNAUTHENTICATED */
				req->status = AC_T_UNAUTHORIZED;
				break;
			default:
				break;
		}
	}
	else if (req->http_status == 401 || req->http_status == 403)
		req->status = AC_T_UNAUTHORIZED;
	if (root)
		json_decref(root);
}
