/*-------------------------------------------------------------------------
 *
 * validate.c
 *	  BEFORE INSERT/UPDATE row trigger on ac_activity_definitions.
 *
 * Validates trigger_type and trigger_config, refusing bad input at the
 * statement with SQLSTATE 22023, a message naming the field and a hint, and
 * rewrites trigger_config into its normal form (defaults filled in, the time
 * zone spelled canonically, a CRON_TZ= prefix moved into "timezone").  The
 * task_queue, workflow_type and event_type must also pass the identifier
 * limits of Temporal and NATS (limits.c).  It also keeps updated_at
 * current.  The same cron check is callable from SQL as ac_check_cron()
 * (cron_sql.c).
 *
 * IDENTIFICATION
 *	  src/validate.c
 *
 *-------------------------------------------------------------------------
 */
#include "activity_core.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

#include "cron.h"

PG_FUNCTION_INFO_V1(ac_definitions_validate);

#define CRON_HINT "A Temporal cron expression has 5 fields (minute hour day-of-month month day-of-week), " \
	"6 (the same and year) or 7 (second first, year last), or is @yearly, @monthly, @weekly, @daily, @hourly " \
	"or @every <duration>[/<phase>]."

/* One key of a trigger_config object, as found by the iterator. */
typedef struct ConfigKey
{
	const char *name;
	JsonbValue	value;
	bool		present;
} ConfigKey;

/* Name the JSON type of a value for error messages. */
const char *
AcJsonTypeName(JsonbValue *v)
{
	switch (v->type)
	{
		case jbvNull:
			return "null";
		case jbvString:
			return "a string";
		case jbvNumeric:
			return "a number";
		case jbvBool:
			return "a boolean";
		case jbvBinary:
			return JsonContainerIsArray(v->val.binary.data) ? "an array" : "an object";
		default:
			return "an unexpected value";
	}
}

/* Is this value a JSON object? */
static bool
IsObject(JsonbValue *v)
{
	return v->type == jbvBinary && JsonContainerIsObject(v->val.binary.data);
}

/* Copy a JSON string value into a NUL-terminated C string. */
static char *
StringValue(JsonbValue *v)
{
	return pnstrdup(v->val.string.val, v->val.string.len);
}

/* Build the comma-separated list of allowed keys, for hints. */
static char *
AllowedKeys(ConfigKey *keys, int nkeys)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (int i = 0; i < nkeys; i++)
		appendStringInfo(&buf, "%s%s", i ? ", " : "", keys[i].name);
	return buf.data;
}

/*
 * Walk the top level of trigger_config, filling in the known keys and
 * refusing unknown ones.
 */
static void
ReadConfig(Jsonb *config, const char *trigger_type, ConfigKey *keys,
		   int nkeys, const char *example)
{
	JsonbIterator *it;
	JsonbIteratorToken tok;
	JsonbValue	v;

	if (!JB_ROOT_IS_OBJECT(config) || JB_ROOT_IS_SCALAR(config))
	{
		JsonbValue	root;

		if (JB_ROOT_IS_SCALAR(config))
		{
			JsonbExtractScalar(&config->root, &root);
		}
		else
		{
			root.type = jbvBinary;
			root.val.binary.data = &config->root;
		}
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("trigger_config must be a JSON object, not %s",
						AcJsonTypeName(&root)),
				 errhint("For trigger_type %s use %s.", trigger_type, example)));
	}

	it = JsonbIteratorInit(&config->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		char	   *key;
		int			i;

		if (tok != WJB_KEY)
			continue;
		key = StringValue(&v);
		for (i = 0; i < nkeys; i++)
			if (strcmp(keys[i].name, key) == 0)
				break;
		if (i == nkeys)
		{
			if (nkeys == 0)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("unknown key %s in trigger_config for trigger_type %s",
								AcShortValue(key), trigger_type),
						 errhint("trigger_type %s takes no configuration: use %s.",
								 trigger_type, example)));
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unknown key %s in trigger_config for trigger_type %s",
							AcShortValue(key), trigger_type),
					 errhint("Allowed keys: %s.", AllowedKeys(keys, nkeys))));
		}
		tok = JsonbIteratorNext(&it, &keys[i].value, true);
		Assert(tok == WJB_VALUE);
		keys[i].present = true;
	}
}

/* Require a key to be present and a string. */
static char *
RequireString(ConfigKey *key, const char *trigger_type, const char *example,
			  bool required)
{
	if (!key->present)
	{
		if (!required)
			return NULL;
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("trigger_config.%s is required for trigger_type %s",
						key->name, trigger_type),
				 errhint("Add \"%s\", for example %s.", key->name, example)));
	}
	if (key->value.type != jbvString)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("trigger_config.%s must be a string, not %s",
						key->name, AcJsonTypeName(&key->value)),
				 errhint("For example %s.", example)));
	return StringValue(&key->value);
}

/*
 * Refuse a value that one of the identifier checks of limits.c found a
 * problem with; short values are quoted in the message.
 */
static void
RefuseValue(const char *field, const char *value, const char *problem,
			const char *hint)
{
	if (value[0] == '\0' || strlen(value) > 64)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s %s", field, problem),
				 errhint("%s", hint)));
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("%s \"%s\" %s", field, value, problem),
			 errhint("%s", hint)));
}

/*
 * Read an integer key: any JSON number whose value is an integer from min
 * to max (100, 1e2 and 100.0 alike), else one error naming the key.
 */
static int
ConfigInteger(ConfigKey *key, int min, int max, const char *hint)
{
	JsonbValue *v = &key->value;

	if (v->type == jbvNumeric)
	{
		Datum		num = NumericGetDatum(v->val.numeric);
		Datum		lo = DirectFunctionCall1(int4_numeric, Int32GetDatum(min));
		Datum		hi = DirectFunctionCall1(int4_numeric, Int32GetDatum(max));
		Datum		floor = DirectFunctionCall1(numeric_floor, num);

		if (DatumGetInt32(DirectFunctionCall2(numeric_cmp, num, lo)) >= 0 &&
			DatumGetInt32(DirectFunctionCall2(numeric_cmp, num, hi)) <= 0 &&
			DatumGetInt32(DirectFunctionCall2(numeric_cmp, num, floor)) == 0)
			return DatumGetInt32(DirectFunctionCall1(numeric_int4, num));
	}
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("trigger_config.%s must be an integer from %d to %d",
					key->name, min, max),
			 errhint("%s", hint)));
	return 0;					/* keep the compiler quiet */
}

/* Check a time zone name and return its canonical spelling. */
static const char *
CheckTimezone(const char *name, const char *field)
{
	const char *canon = AcCanonicalTimezone(name);

	if (canon == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown time zone %s in %s", AcShortValue(name), field),
				 errhint("Use a time zone name of the tz database such as \"Europe/Berlin\" or \"UTC\"; "
						 "SELECT name FROM pg_timezone_names lists them.")));
	return canon;
}

/* Append "key": "value" to a JSON object being built. */
static void
AppendPair(StringInfo buf, const char *key, const char *value)
{
	if (buf->len > 1)
		appendStringInfoString(buf, ", ");
	escape_json(buf, key);
	appendStringInfoString(buf, ": ");
	escape_json(buf, value);
}

/* Validate and normalise the configuration of a cron definition. */
static Jsonb *
NormaliseCron(Jsonb *config)
{
	static const char *example = "{\"cron_expression\": \"0 9 * * MON-FRI\", \"timezone\": \"UTC\"}";
	ConfigKey	keys[] = {
		{.name = "cron_expression"},
		{.name = "timezone"},
		{.name = "misfire_policy"},
		{.name = "max_catchup_runs"}
	};
	char	   *expr;
	char	   *body;
	char	   *tz;
	const char *canon_tz = "UTC";
	char	   *policy;
	int			max_catchup = 0;
	AcCronResult res;
	StringInfoData buf;

	ReadConfig(config, "cron", keys, lengthof(keys), example);
	expr = RequireString(&keys[0], "cron", example, true);
	tz = RequireString(&keys[1], "cron", example, false);
	policy = RequireString(&keys[2], "cron", example, false);
	if (keys[3].present)
		max_catchup = ConfigInteger(&keys[3], 1, 1000,
									"It caps how many missed fire times a catchup backfill starts; the default is 100.");

	if (!ac_cron_check(expr, &res))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid trigger_config.cron_expression %s: %s",
						AcShortValue(expr), res.error),
				 errhint(CRON_HINT)));

	if (res.wrapped_step != 0)
		ereport(WARNING,
				(errmsg("step %lld in trigger_config.cron_expression \"%s\" is larger than Temporal keeps",
						(long long) res.wrapped_step, expr),
				 errdetail("Temporal stores a step in 32 bits: it runs this one with step %d.",
						   (int32) (uint32) (uint64) res.wrapped_step == 0 ? 1 :
						   (int32) (uint32) (uint64) res.wrapped_step),
				 errhint("Use a step from 1 to 2147483647.")));

	if (res.sunday_dropped)
		ereport(WARNING,
				(errmsg("Temporal leaves Sunday out of day-of-week \"1-7\" in trigger_config.cron_expression \"%s\"", expr),
				 errdetail("Temporal compiles 1-7 to 1-6, Monday to Saturday."),
				 errhint("Write \"*\" or \"0-6\" for every day of the week.")));

	if (res.comment_glued)
		ereport(WARNING,
				(errmsg("\"#\" starts a comment in trigger_config.cron_expression \"%s\"", expr),
				 errdetail("Temporal ignores everything from \"#\" on; Quartz's \"weekday#n\" is not supported."),
				 errhint("Put a space before \"#\" if a comment is meant.")));

	if (tz != NULL)
		canon_tz = CheckTimezone(tz, "trigger_config.timezone");
	body = expr + res.body_offset;
	if (res.tz_len > 0)
	{
		char	   *prefix_tz = pnstrdup(expr + res.tz_offset, res.tz_len);
		const char *canon_prefix = CheckTimezone(prefix_tz,
												 "the CRON_TZ= prefix of trigger_config.cron_expression");

		if (tz != NULL && strcmp(canon_prefix, canon_tz) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("conflicting time zones: trigger_config.cron_expression names \"%s\" but trigger_config.timezone is \"%s\"",
							prefix_tz, tz),
					 errhint("Give the time zone once, in \"timezone\".")));
		canon_tz = canon_prefix;
	}

	if (policy == NULL)
		policy = "skip";
	else if (strcmp(policy, "skip") != 0 && strcmp(policy, "catchup") != 0 &&
			 strcmp(policy, "compress") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown trigger_config.misfire_policy %s", AcShortValue(policy)),
				 errhint("misfire_policy is one of skip (the default), catchup or compress.")));

	/* the stored expression is the schedule alone, trimmed */
	{
		int			len = strlen(body);

		while (len > 0 && isspace((unsigned char) body[len - 1]))
			len--;
		body = pnstrdup(body, len);
	}

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	AppendPair(&buf, "cron_expression", body);
	AppendPair(&buf, "timezone", canon_tz);
	AppendPair(&buf, "misfire_policy", policy);
	if (max_catchup > 0)
		appendStringInfo(&buf, ", \"max_catchup_runs\": %d", max_catchup);
	appendStringInfoChar(&buf, '}');
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data)));
}

/* Validate and normalise the configuration of an event definition. */
static Jsonb *
NormaliseEvent(Jsonb *config)
{
	static const char *example = "{\"event_type\": \"order.created\", \"filters\": {\"region\": \"eu\"}}";
	ConfigKey	keys[] = {{.name = "event_type"}, {.name = "filters"}, {.name = "condition"}};
	char	   *type;
	char	   *condition;
	StringInfoData buf;

	ReadConfig(config, "event", keys, lengthof(keys), example);
	type = RequireString(&keys[0], "event", example, true);
	{
		char	   *problem = AcEventTypeProblem(type);

		if (problem)
			RefuseValue("trigger_config.event_type", type, problem,
						"Events are published to <subject_prefix>.<event_type>: use at most 255 bytes of "
						"dot-separated tokens without spaces, control characters, \"*\" or \">\", "
						"such as \"order.created\".");
	}

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	AppendPair(&buf, "event_type", type);
	appendStringInfoString(&buf, ", \"filters\": ");
	if (keys[1].present)
	{
		if (!IsObject(&keys[1].value))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("trigger_config.filters must be a JSON object, not %s",
							AcJsonTypeName(&keys[1].value)),
					 errhint("An event matches when payload @> filters, for example {\"filters\": {\"region\": \"eu\"}}.")));
		if (AcJsonbDepth(keys[1].value.val.binary.data, AC_MAX_EVENT_DEPTH) > AC_MAX_EVENT_DEPTH)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("trigger_config.filters is nested more than %d levels deep (AC_MAX_EVENT_DEPTH)",
							AC_MAX_EVENT_DEPTH),
					 errhint("No event can match it: the router dead-letters payloads nested deeper than %d levels.",
							 AC_MAX_EVENT_DEPTH)));
		(void) JsonbToCString(&buf, keys[1].value.val.binary.data,
							  keys[1].value.val.binary.len);
	}
	else
		appendStringInfoString(&buf, "{}");
	/* a jsonpath predicate over the payload, stored as PostgreSQL prints it */
	condition = RequireString(&keys[2], "event", "{\"condition\": \"$.amount > 100\"}", false);
	if (condition)
		AppendPair(&buf, "condition", AcNormaliseCondition(condition));
	appendStringInfoChar(&buf, '}');
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data)));
}

/* Validate the configuration of a manual definition: it must be empty. */
static Jsonb *
NormaliseManual(Jsonb *config)
{
	ReadConfig(config, "manual", NULL, 0, "{}");
	return config;
}

/*
 * Validate a (trigger_type, trigger_config jsonb) pair and return the
 * normal form of trigger_config; ereport(ERROR) when it is refused.  The
 * trigger below calls it for every row, and the fuzz target of
 * trigger_config (test/fuzz/fuzz_validate.c) calls it directly.
 */
Datum
AcNormaliseTriggerConfig(const char *trigger_type, Datum config_datum)
{
	Jsonb	   *config = DatumGetJsonbP(config_datum);

	if (strcmp(trigger_type, "cron") == 0)
		return JsonbPGetDatum(NormaliseCron(config));
	if (strcmp(trigger_type, "event") == 0)
		return JsonbPGetDatum(NormaliseEvent(config));
	if (strcmp(trigger_type, "manual") == 0)
		return JsonbPGetDatum(NormaliseManual(config));
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unknown trigger_type %s", AcShortValue(trigger_type)),
			 errhint("trigger_type is one of cron, event or manual.")));
	return (Datum) 0;			/* keep the compiler quiet */
}

/* Refuse an empty text column. */
static void
RequireNonEmpty(HeapTuple tuple, TupleDesc desc, const char *column)
{
	int			attnum = SPI_fnumber(desc, column);
	bool		isnull;
	Datum		d;

	if (attnum <= 0)
		return;
	d = heap_getattr(tuple, attnum, desc, &isnull);
	if (!isnull && VARSIZE_ANY_EXHDR(DatumGetPointer(d)) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not be empty", column)));
}

/* Refuse a text column that check (from limits.c) finds a problem with. */
static void
CheckColumn(HeapTuple tuple, TupleDesc desc, const char *column,
			char *(*check) (const char *), const char *hint)
{
	int			attnum = SPI_fnumber(desc, column);
	bool		isnull;
	Datum		d;
	char	   *value;
	char	   *problem;

	if (attnum <= 0)
		return;
	d = heap_getattr(tuple, attnum, desc, &isnull);
	if (isnull)
		return;
	value = TextDatumGetCString(d);
	problem = check(value);
	if (problem)
		RefuseValue(column, value, problem, hint);
}

/*
 * Refuse a definition whose workflow argument (name and input, plus the
 * envelope) is over Temporal's payload limit: every start would fail.
 */
static void
CheckArgument(HeapTuple tuple, TupleDesc desc)
{
	int			name_att = SPI_fnumber(desc, "name");
	int			input_att = SPI_fnumber(desc, "input");
	bool		isnull;
	Datum		d;
	int64		bytes = 200;	/* the argument's other members */
	int64		input_bytes = 0;
	char	   *problem;

	if (name_att > 0)
	{
		d = heap_getattr(tuple, name_att, desc, &isnull);
		if (!isnull)
			bytes += VARSIZE_ANY_EXHDR(DatumGetPointer(d));
	}
	if (input_att > 0)
	{
		d = heap_getattr(tuple, input_att, desc, &isnull);
		if (!isnull)
		{
			Jsonb	   *input = DatumGetJsonbP(d);

			input_bytes = strlen(JsonbToCString(NULL, &input->root, VARSIZE(input)));
		}
	}
	bytes += input_bytes;
	problem = AcArgumentProblem(psprintf("input is " INT64_FORMAT " bytes", input_bytes), bytes);
	if (problem)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("input %s", problem),
				 errhint("Every workflow of the definition gets its input; pass references to large data instead.")));
}

/*
 * Trigger function: validate trigger_type and trigger_config, store the
 * normal form of trigger_config and maintain updated_at.
 */
Datum
ac_definitions_validate(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	TupleDesc	desc;
	HeapTuple	tuple;
	int			type_att;
	int			config_att;
	int			updated_att;
	bool		isnull;
	char	   *trigger_type;
	Jsonb	   *config;
	Jsonb	   *normal;
	Datum		values[2];
	bool		nulls[2] = {false, false};
	int			cols[2];
	int			ncols = 0;

	AcCheckTriggerTarget(fcinfo, "ac_definitions_validate");
	if (!TRIGGER_FIRED_BEFORE(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ||
		TRIGGER_FIRED_BY_DELETE(trigdata->tg_event) ||
		TRIGGER_FIRED_BY_TRUNCATE(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("ac_definitions_validate must be a BEFORE INSERT OR UPDATE row trigger")));

	desc = trigdata->tg_relation->rd_att;
	tuple = TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) ?
		trigdata->tg_newtuple : trigdata->tg_trigtuple;

	type_att = SPI_fnumber(desc, "trigger_type");
	config_att = SPI_fnumber(desc, "trigger_config");
	updated_att = SPI_fnumber(desc, "updated_at");
	if (type_att <= 0 || config_att <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("ac_definitions_validate needs columns trigger_type and trigger_config")));

	RequireNonEmpty(tuple, desc, "name");
	CheckColumn(tuple, desc, "name", AcNameProblem,
				"Keep names short; describe the definition elsewhere.");
	CheckArgument(tuple, desc);
	CheckColumn(tuple, desc, "workflow_type", AcWorkflowTypeProblem,
				"Temporal refuses a workflow type name that is empty or longer than "
				"limit.maxIDLength (1000 bytes by default).");
	CheckColumn(tuple, desc, "task_queue", AcTaskQueueProblem,
				"A Temporal task queue name is 1 to 1000 bytes (limit.maxIDLength), does not start with "
				"\"/_sys/\" and is not \"temporal-sys-per-ns-tq\"; workers poll it by this name.");

	{
		Datum		d = heap_getattr(tuple, type_att, desc, &isnull);

		if (isnull)
			ereport(ERROR,
					(errcode(ERRCODE_NOT_NULL_VIOLATION),
					 errmsg("trigger_type must not be null"),
					 errhint("trigger_type is one of cron, event or manual.")));
		trigger_type = TextDatumGetCString(d);
		d = heap_getattr(tuple, config_att, desc, &isnull);
		if (isnull)
			ereport(ERROR,
					(errcode(ERRCODE_NOT_NULL_VIOLATION),
					 errmsg("trigger_config must not be null"),
					 errhint("Use {} for a manual definition.")));
		config = DatumGetJsonbP(d);
	}

	normal = DatumGetJsonbP(AcNormaliseTriggerConfig(trigger_type, JsonbPGetDatum(config)));

	cols[ncols] = config_att;
	values[ncols++] = JsonbPGetDatum(normal);
	if (updated_att > 0 && TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
	{
		cols[ncols] = updated_att;
		values[ncols++] = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
	}
	tuple = heap_modify_tuple_by_cols(tuple, desc, ncols, cols, values, nulls);
	return PointerGetDatum(tuple);
}
