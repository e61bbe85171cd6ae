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

#include "common/base64.h"
#include "lib/stringinfo.h"

#include "cron.h"
#include "temporal.h"

/*
 * A new empty JSON object.  jansson's json_object() must not be called
 * from here: the postgres executable exports a function of the same name
 * (the SQL json_object), and the dynamic linker binds our call to it.
 */
static json_t *
NewObject(void)
{
	return json_pack("{}");
}

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

/* A JSON string literal for a C string (palloc'd). */
static char *
Quote(const char *str)
{
	json_t	   *j = json_string(str);

	if (j == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_CHARACTER_NOT_IN_REPERTOIRE),
				 errmsg("not valid UTF-8: %s", str)));
	{
		char	   *s = json_dumps(j, JSON_ENCODE_ANY);
		char	   *out = pstrdup(s);

		free(s);
		json_decref(j);
		return out;
	}
}

/*
 * The workflow argument as JSON text: {"activity_id", "activity_name",
 * "trigger", "input"[, "event"]}.  input and event are JSON texts that
 * PostgreSQL produced or validated; they are spliced in as they are, so no
 * number is ever rounded or refused on the way.
 */
char *
AcArgumentText(const char *id, const char *name, const char *trigger,
			   const char *input, const char *event)
{
	if (event)
		return psprintf("{\"activity_id\": %s, \"activity_name\": %s, \"trigger\": %s, "
						"\"input\": %s, \"event\": %s}",
						Quote(id), Quote(name), Quote(trigger), input, event);
	return psprintf("{\"activity_id\": %s, \"activity_name\": %s, \"trigger\": %s, "
					"\"input\": %s}",
					Quote(id), Quote(name), Quote(trigger), input);
}

/* Payloads in the standard form: one json/plain payload of these bytes. */
static json_t *
JsonPayloads(const char *text)
{
	int			len = strlen(text);
	int			cap = pg_b64_enc_len(len) + 1;
	char	   *b64 = palloc(cap);
	/* the byte pointers are char * before 18 and uint8 * since: void * suits both */
	int			n = pg_b64_encode((const void *) text, len, b64, cap);

	if (n < 0)
		elog(ERROR, "could not encode a payload");
	b64[n] = '\0';
	return json_pack("{s:[{s:{s:s}, s:s}]}", "payloads", "metadata", "encoding",
					 "anNvbi9wbGFpbg==", "data", b64);
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

	arg = JsonPayloads(AcArgumentText(spec->id, spec->name, "cron", spec->input, NULL));
	sched = json_pack("{s:{s:[s], s:s}, s:{s:{s:s, s:{s:s}, s:{s:s}, s:o, s:o}}, s:{s:s, s:s}, s:{s:b, s:s}}",
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
							json_pack("{s:{s:s, s:s, s:s}}", "fields",
									  "managed_by", "activity_core",
									  "activity_name", spec->name,
									  "installation", AcInstallationId()));
	return JsonToText(body);
}

/*
 * From a ListScheduleMatchingTimes answer for the span a schedule was
 * paused, build the PatchSchedule body of its backfill: the last max_runs
 * missed fire times (catchup) or only the last one (compress), sent with
 * the caller's request id.  Returns false when no fire time was missed.
 */
bool
AcBackfillBody(const char *matching, size_t len, const char *policy,
			   int max_runs, const char *from, const char *to,
			   const char *request_id, char **body, char **description)
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
								 "requestId", request_id,
								 "patch", "backfillRequest",
								 "startTime", first,
								 "endTime", last,
								 "overlapPolicy", AcOverlapPolicy(policy)));
	*description = JsonToText(json_pack("{s:s, s:s, s:s, s:I, s:I, s:s, s:s}",
										"request_id", request_id,
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
	else if (req->http_status != 401 && req->http_status != 403 &&
			 req->response && strstr(req->response, "<title>") != NULL)
	{
		/* an HTML page from a proxy in front of Temporal: its title says why */
		const char *t = strstr(req->response, "<title>") + strlen("<title>");
		int			len = strcspn(t, "<\r\n");

		snprintf(req->error, sizeof(req->error), "HTTP %ld from a proxy in front of Temporal: %.*s",
				 req->http_status, Min(len, 200), t);
	}
	else if (req->http_status == 401 || req->http_status == 403)
	{
		req->status = AC_T_UNAUTHORIZED;
		snprintf(req->error, sizeof(req->error),
				 "HTTP %ld: Temporal refused the credentials (activity_core.temporal_api_key or temporal_api_key_file, or the TLS client certificate)",
				 req->http_status);
	}
	if (root)
		json_decref(root);
}

/*
 * Parse a protobuf JSON duration ("5400s", "0.500s") into nanoseconds;
 * false when it is not one or does not fit.
 */
static bool
DurationNs(json_t *d, int64 *ns)
{
	const char *s;
	char	   *end;
	double		secs;

	if (d == NULL)
	{
		*ns = 0;
		return true;
	}
	if (!json_is_string(d))
		return false;
	s = json_string_value(d);
	secs = strtod(s, &end);
	if (end == s || strcmp(end, "s") != 0)
		return false;

	/*
	 * A protobuf Duration reaches 315576000000 s, more nanoseconds than an
	 * int64 holds (9.2e18, some 292 years): such a value, like "inf" or
	 * "nan", is unreadable here rather than converted out of range.
	 */
	if (!(secs > -9.2e9 && secs < 9.2e9))
		return false;
	*ns = (int64) (secs * 1e9 + (secs >= 0 ? 0.5 : -0.5));
	return true;
}

/* A Range list in normal form: [[start, end, step], ...], zeros filled in. */
static json_t *
NormalRanges(json_t *list)
{
	json_t	   *out = json_array();
	size_t		i;
	json_t	   *r;

	json_array_foreach(list, i, r)
	{
		json_t	   *s = json_object_get(r, "start");
		json_t	   *e = json_object_get(r, "end");
		json_t	   *st = json_object_get(r, "step");

		json_array_append_new(out, json_pack("[I, I, I]",
											 s ? json_integer_value(s) : 0,
											 e ? json_integer_value(e) : 0,
											 st ? json_integer_value(st) : 0));
	}
	return out;
}

/* Bring a DescribeSchedule spec into the normal form of AcExpectedSpec. */
static json_t *
NormalSpec(json_t *spec)
{
	json_t	   *out = NewObject();
	json_t	   *cals = json_object_get(spec, "structuredCalendar");
	json_t	   *ivs = json_object_get(spec, "interval");
	json_t	   *tz = json_object_get(spec, "timezoneName");
	json_t	   *cal_out = json_array();
	json_t	   *iv_out = json_array();
	size_t		i;
	json_t	   *v;

	json_array_foreach(cals, i, v)
	{
		json_t	   *c = NewObject();
		json_t	   *comment = json_object_get(v, "comment");

		for (int f = 0; f < AC_NUM_FIELDS; f++)
			json_object_set_new(c, ac_cron_field_names[f],
								NormalRanges(json_object_get(v, ac_cron_field_names[f])));
		json_object_set_new(c, "comment",
							json_string(json_is_string(comment) ? json_string_value(comment) : ""));
		json_array_append_new(cal_out, c);
	}
	json_array_foreach(ivs, i, v)
	{
		int64		iv = 0;
		int64		ph = 0;

		if (!DurationNs(json_object_get(v, "interval"), &iv) ||
			!DurationNs(json_object_get(v, "phase"), &ph))
			iv = -1;
		json_array_append_new(iv_out, json_pack("[I, I]", (json_int_t) iv, (json_int_t) ph));
	}
	json_object_set_new(out, "calendar", cal_out);
	json_object_set_new(out, "interval", iv_out);
	json_object_set_new(out, "timezone", json_string(json_is_string(tz) ? json_string_value(tz) : ""));
	return out;
}

/*
 * The spec Temporal shows for a cron expression in a time zone, in normal
 * form: {"calendar": [...], "interval": [...], "timezone": ...}.  NULL when
 * the expression is too large to predict.
 */
static json_t *
ExpectedSpec(const char *cron, const char *tz)
{
	AcCronResult res;
	AcCronSpec *spec = palloc(sizeof(AcCronSpec));
	json_t	   *out;
	json_t	   *cals = json_array();
	json_t	   *ivs = json_array();

	if (!ac_cron_compile(cron, &res, spec) || spec->overflow)
	{
		json_decref(cals);
		json_decref(ivs);
		pfree(spec);
		return NULL;
	}
	if (res.kind == AC_CRON_INTERVAL)
		json_array_append_new(ivs, json_pack("[I, I]", (json_int_t) res.interval_ns,
											 (json_int_t) res.phase_ns));
	else
	{
		json_t	   *c = NewObject();

		for (int f = 0; f < AC_NUM_FIELDS; f++)
		{
			json_t	   *list = json_array();

			for (int i = 0; i < spec->nranges[f]; i++)
				json_array_append_new(list, json_pack("[i, i, i]",
													  spec->ranges[f][i].start,
													  spec->ranges[f][i].end,
													  spec->ranges[f][i].step));
			json_object_set_new(c, ac_cron_field_names[f], list);
		}
		json_object_set_new(c, "comment", json_string(spec->has_comment ? spec->comment : ""));
		json_array_append_new(cals, c);
	}
	pfree(spec);
	out = json_pack("{s:o, s:o, s:s}", "calendar", cals, "interval", ivs,
					"timezone", tz);
	return out;
}

/* JSON text of the spec Temporal shows for an expression (normal form). */
char *
AcExpectedSpecText(const char *cron, const char *tz)
{
	json_t	   *j = ExpectedSpec(cron, tz);

	return j ? JsonToText(j) : NULL;
}

/* JSON text of a DescribeSchedule spec in normal form. */
char *
AcNormalSpecText(const char *describe_spec)
{
	json_error_t err;
	json_t	   *spec = json_loads(describe_spec, 0, &err);
	json_t	   *norm;

	if (spec == NULL)
		return NULL;
	norm = NormalSpec(spec);
	json_decref(spec);
	return JsonToText(norm);
}

/* The decoded bytes of a standard-form payload ({metadata, data}), or NULL. */
static char *
PayloadData(json_t *payload)
{
	json_t	   *data = json_object_get(payload, "data");
	const char *b64;
	char	   *raw;
	int			len;

	if (!json_is_string(data))
		return NULL;
	b64 = json_string_value(data);
	raw = palloc(pg_b64_dec_len(strlen(b64)) + 1);
	len = pg_b64_decode(b64, strlen(b64), (void *) raw, pg_b64_dec_len(strlen(b64)));
	if (len < 0)
		return NULL;
	raw[len] = '\0';
	return raw;
}

/* The string value of a payload map entry (search attribute, memo field), in either form. */
static char *
SearchAttributeValue(json_t *indexed, const char *key)
{
	json_t	   *v = json_object_get(indexed, key);
	char	   *raw;
	json_error_t err;
	json_t	   *decoded;
	char	   *out = NULL;

	if (json_is_string(v))
		return pstrdup(json_string_value(v));
	raw = PayloadData(v);
	if (raw == NULL)
		return NULL;
	decoded = json_loads(raw, JSON_DECODE_ANY, &err);
	if (json_is_string(decoded))
		out = pstrdup(json_string_value(decoded));
	if (decoded)
		json_decref(decoded);
	return out;
}

/* The bytes of the only payload of a standard-form Payloads, or NULL. */
static char *
PayloadText(json_t *payloads)
{
	json_t	   *list = json_object_get(payloads, "payloads");

	if (!json_is_array(list) || json_array_size(list) != 1)
		return NULL;
	return PayloadData(json_array_get(list, 0));
}

/*
 * Do two JSON texts say the same thing?  Compared as values (numbers as
 * reals, so 1 and 1.0 agree, as a re-encoding tool may write them), or byte
 * for byte when either cannot be read that way.
 */
static bool
SameJson(const char *a, const char *b)
{
	json_error_t err;
	json_t	   *ja;
	json_t	   *jb;
	bool		same;

	if (a == NULL || b == NULL)
		return false;
	ja = json_loads(a, JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL, &err);
	jb = json_loads(b, JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL, &err);
	if (ja && jb)
		same = json_equal(ja, jb);
	else
		same = strcmp(a, b) == 0;
	if (ja)
		json_decref(ja);
	if (jb)
		json_decref(jb);
	return same;
}

/* Add a drifted field's name to the list. */
static void
AddDrift(StringInfo drift, const char *field)
{
	appendStringInfo(drift, "%s%s", drift->len ? ", " : "", field);
}

/*
 * Read a DescribeSchedule answer: its state for ac_schedules(), and which
 * fields differ from what the definition asks for (NULL drift when the
 * answer could not be read).
 */
void
AcReadSchedule(const char *describe, size_t len, const AcScheduleSpec *want,
			   AcScheduleInfo *info)
{
	json_error_t err;
	json_t	   *root = json_loadb(describe, len, 0, &err);
	json_t	   *sched;
	json_t	   *state;
	json_t	   *pol;
	json_t	   *sw;
	json_t	   *sinfo;
	StringInfoData drift;

	memset(info, 0, sizeof(*info));
	if (root == NULL || !json_is_object(root))
	{
		if (root)
			json_decref(root);
		return;
	}
	sched = json_object_get(root, "schedule");
	state = json_object_get(sched, "state");
	pol = json_object_get(sched, "policies");
	sw = json_object_get(json_object_get(sched, "action"), "startWorkflow");
	sinfo = json_object_get(root, "info");

	info->readable = true;
	info->installation = SearchAttributeValue(json_object_get(json_object_get(root, "memo"), "fields"),
											  "installation");
	info->paused = json_is_true(json_object_get(state, "paused"));
	if (json_is_string(json_object_get(state, "notes")))
		info->notes = pstrdup(json_string_value(json_object_get(state, "notes")));
	{
		json_t	   *future = json_object_get(sinfo, "futureActionTimes");
		json_t	   *recent = json_object_get(sinfo, "recentActions");

		info->future = JsonToText(future ? json_incref(future) : json_array());
		info->recent = JsonToText(recent ? json_incref(recent) : json_array());
	}

	if (want == NULL)
	{
		json_decref(root);
		return;
	}

	initStringInfo(&drift);
	{
		json_t	   *expected = ExpectedSpec(want->cron, want->timezone);
		json_t	   *actual = NormalSpec(json_object_get(sched, "spec"));

		if (expected == NULL)
			AddDrift(&drift, "spec (not comparable)");
		else
		{
			if (!json_equal(json_object_get(expected, "calendar"), json_object_get(actual, "calendar")) ||
				!json_equal(json_object_get(expected, "interval"), json_object_get(actual, "interval")))
				AddDrift(&drift, "spec");
			if (!json_equal(json_object_get(expected, "timezone"), json_object_get(actual, "timezone")))
				AddDrift(&drift, "timezone");
			json_decref(expected);
		}
		json_decref(actual);
	}
	{
		json_t	   *op = json_object_get(pol, "overlapPolicy");
		int64		have = -1;
		int64		wantw = -2;
		json_t	   *ws = json_string(AcCatchupWindow(want->policy));

		if (!json_is_string(op) || strcmp(json_string_value(op), AcOverlapPolicy(want->policy)) != 0)
			AddDrift(&drift, "overlap_policy");
		(void) DurationNs(json_object_get(pol, "catchupWindow"), &have);
		(void) DurationNs(ws, &wantw);
		json_decref(ws);
		if (have != wantw)
			AddDrift(&drift, "catchup_window");
	}
	if (info->paused != !want->enabled)
		AddDrift(&drift, "paused");
	{
		json_t	   *wid = json_object_get(sw, "workflowId");
		json_t	   *wt = json_object_get(json_object_get(sw, "workflowType"), "name");
		json_t	   *tq = json_object_get(json_object_get(sw, "taskQueue"), "name");
		char	   *want_wid = psprintf("activity-%s:schedule", want->id);
		char	   *arg = AcArgumentText(want->id, want->name, "cron", want->input, NULL);
		char	   *have = PayloadText(json_object_get(sw, "input"));
		char	   *sa = SearchAttributeValue(json_object_get(json_object_get(sw, "searchAttributes"),
															 "indexedFields"), "activity_id");

		if (!json_is_string(wt) || strcmp(json_string_value(wt), want->workflow_type) != 0)
			AddDrift(&drift, "workflow_type");
		if (!json_is_string(tq) || strcmp(json_string_value(tq), want->task_queue) != 0)
			AddDrift(&drift, "task_queue");
		if (!json_is_string(wid) || strcmp(json_string_value(wid), want_wid) != 0)
			AddDrift(&drift, "workflow_id");
		if (!SameJson(have, arg))
			AddDrift(&drift, "input");
		if (sa == NULL || strcmp(sa, want->id) != 0)
			AddDrift(&drift, "search_attribute");
	}
	info->drift = drift.data;
	json_decref(root);
}

/*
 * Read one ListSchedules page: the ids that start with prefix (palloc'd
 * strings appended to *ids, *nids grows) and the next page token (NULL on
 * the last page).
 */
void
AcReadScheduleList(const char *page, size_t len, const char *prefix,
				   char ***ids, int *nids, int *capacity, char **next_token)
{
	json_error_t err;
	json_t	   *root = json_loadb(page, len, 0, &err);
	json_t	   *list;
	json_t	   *tok;
	size_t		i;
	json_t	   *v;

	*next_token = NULL;
	if (root == NULL)
		return;
	list = json_object_get(root, "schedules");
	json_array_foreach(list, i, v)
	{
		json_t	   *sid = json_object_get(v, "scheduleId");

		if (!json_is_string(sid) ||
			strncmp(json_string_value(sid), prefix, strlen(prefix)) != 0)
			continue;
		if (*nids == *capacity)
		{
			*capacity = Max(*capacity * 2, 64);
			*ids = *ids ? repalloc(*ids, sizeof(char *) * *capacity) :
				palloc(sizeof(char *) * *capacity);
		}
		(*ids)[(*nids)++] = pstrdup(json_string_value(sid));
	}
	tok = json_object_get(root, "nextPageToken");
	if (json_is_string(tok) && json_string_value(tok)[0])
		*next_token = pstrdup(json_string_value(tok));
	json_decref(root);
}

/*
 * Build a StartWorkflowExecution body: the argument (JSON text) as one
 * json/plain payload, REJECT_DUPLICATE, the given request id and the
 * activity_id search attribute.
 */
char *
AcStartBody(const char *activity_id, const char *workflow_type,
			const char *task_queue, const char *argument,
			const char *request_id, const char *identity)
{
	return JsonToText(json_pack("{s:s, s:s, s:{s:s}, s:{s:s}, s:o, s:s, s:s, s:o}",
								"requestId", request_id,
								"identity", identity,
								"workflowType", "name", workflow_type,
								"taskQueue", "name", task_queue,
								"input", JsonPayloads(argument),
								"workflowIdReusePolicy", "WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE",
								"workflowIdConflictPolicy", "WORKFLOW_ID_CONFLICT_POLICY_FAIL",
								"searchAttributes", SearchAttributes(activity_id)));
}

/* The StartWorkflowExecution body of an event start. */
char *
AcStartWorkflowBody(const char *id, const char *name, const char *workflow_type,
					const char *task_queue, const char *input,
					const char *envelope, const char *request_id)
{
	return AcStartBody(id, workflow_type, task_queue,
					   AcArgumentText(id, name, "event", input, envelope),
					   request_id, "activity_core router");
}

/* A string member of an object, palloc'd, or NULL. */
static char *
StringMember(json_t *obj, const char *key)
{
	json_t	   *v = json_object_get(obj, key);

	return json_is_string(v) ? pstrdup(json_string_value(v)) : NULL;
}

/* Read a ListWorkflowExecutions page into rows; returns their number. */
int
AcReadRuns(const char *page, size_t len, AcRunRow **rows)
{
	json_error_t err;
	json_t	   *root = json_loadb(page, len, 0, &err);
	json_t	   *list = root ? json_object_get(root, "executions") : NULL;
	size_t		i;
	json_t	   *e;
	int			n = 0;

	*rows = palloc0(sizeof(AcRunRow) * (json_is_array(list) ? json_array_size(list) + 1 : 1));
	json_array_foreach(list, i, e)
	{
		json_t	   *ex = json_object_get(e, "execution");
		char	   *status = StringMember(e, "status");
		const char *prefix = "WORKFLOW_EXECUTION_STATUS_";

		(*rows)[n].workflow_id = StringMember(ex, "workflowId");
		(*rows)[n].run_id = StringMember(ex, "runId");
		(*rows)[n].status = status && strncmp(status, prefix, strlen(prefix)) == 0 ?
			pstrdup(status + strlen(prefix)) : (status ? status : pstrdup("UNKNOWN"));
		(*rows)[n].workflow_type = StringMember(json_object_get(e, "type"), "name");
		(*rows)[n].start_time = StringMember(e, "startTime");
		(*rows)[n].close_time = StringMember(e, "closeTime");
		if ((*rows)[n].workflow_id && (*rows)[n].run_id && (*rows)[n].workflow_type)
			n++;
	}
	if (root)
		json_decref(root);
	return n;
}
