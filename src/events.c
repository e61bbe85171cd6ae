/*-------------------------------------------------------------------------
 *
 * events.c
 *	  Event envelopes and the in-memory index of event definitions.
 *
 * An envelope is a JSON object with event_id, type, payload (object,
 * default {} when absent; null or any other non-object is poison, and so
 * is a payload nested deeper than AC_MAX_EVENT_DEPTH) and optional
 * occurred_at and source; a CloudEvents JSON event
 * (specversion, id, type, data) is read as the same thing.  Anything else
 * is poison, with a reason.
 *
 * The index holds the enabled event definitions keyed by event type.  A
 * definition matches an envelope when the type is equal and payload @>
 * filters; the containment test is PostgreSQL's own jsonb_contains, so the
 * answer is exactly the one SQL's @> gives.  The router never queries the
 * table per event: it rebuilds the index when a relcache invalidation of
 * ac_activity_definitions reaches it.  The statement trigger
 * ac_definitions_invalidate() queues one for every INSERT, UPDATE, DELETE
 * and TRUNCATE, and PostgreSQL sends it when the change commits, also at
 * COMMIT PREPARED and from another backend than the one that prepared.
 * ac_explain_match() runs the same index and matcher from SQL.
 *
 * IDENTIFICATION
 *	  src/events.c
 *
 *-------------------------------------------------------------------------
 */
#include "activity_core.h"

#include "access/genam.h"
#include "access/table.h"
#include "catalog/indexing.h"
#include "catalog/pg_extension.h"
#include "commands/extension.h"
#include "commands/trigger.h"
#include "common/jsonapi.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "portability/instr_time.h"
#include "access/htup_details.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/tuplestore.h"
#include "utils/uuid.h"

#include "events.h"

PG_FUNCTION_INFO_V1(ac_explain_match);
PG_FUNCTION_INFO_V1(ac_definitions_invalidate);

#define TYPE_KEY_SIZE 256

/* longest event_id that still fits a Temporal workflow id */
#define MAX_EVENT_ID 900

typedef struct IndexEntry
{
	char		key[TYPE_KEY_SIZE];
	List	   *defs;			/* AcEventDef * */
} IndexEntry;

struct AcEventIndex
{
	MemoryContext cxt;
	HTAB	   *types;
	int			ndefs;
	List	   *disabled;		/* for ac_explain_match */
};

/* Find a string member of a jsonb object; NULL when absent. */
static JsonbValue *
GetKey(Jsonb *obj, const char *key)
{
	return getKeyJsonValueFromContainer(&obj->root, key, strlen(key), NULL);
}

/* Read a required string member, or set the poison reason. */
static char *
RequiredString(Jsonb *obj, const char *key, const char *label, AcEnvelope *env)
{
	JsonbValue *v = GetKey(obj, key);

	if (v == NULL)
	{
		env->reason = psprintf("missing %s", label);
		return NULL;
	}
	if (v->type != jbvString)
	{
		env->reason = psprintf("%s is %s, not a string", label, AcJsonTypeName(v));
		return NULL;
	}
	if (v->val.string.len == 0)
	{
		env->reason = psprintf("%s is empty", label);
		return NULL;
	}
	return pnstrdup(v->val.string.val, v->val.string.len);
}

/* Deepest nesting of arrays and objects in valid JSON text. */
static int
NestingDepth(const char *text, int len)
{
	int			depth = 0;
	int			max = 0;
	bool		in_string = false;

	for (int i = 0; i < len; i++)
	{
		char		c = text[i];

		if (in_string)
		{
			if (c == '\\')
				i++;
			else if (c == '"')
				in_string = false;
		}
		else if (c == '"')
			in_string = true;
		else if (c == '{' || c == '[')
		{
			depth++;
			max = Max(max, depth);
		}
		else if (c == '}' || c == ']')
			depth--;
	}
	return max;
}

/*
 * Parse the bytes of a message into an envelope.  Returns false, with
 * env->reason set, for poison.
 */
bool
AcParseEnvelope(const char *data, int len, int max_bytes, AcEnvelope *env)
{
	JsonLexContext *lex;
	JsonParseErrorType jerr;
	char	   *text;
	Jsonb	   *volatile root = NULL;
	MemoryContext cxt = CurrentMemoryContext;
	JsonbValue *payload;
	bool		cloudevent;

	memset(env, 0, sizeof(*env));
	if (len > max_bytes)
	{
		env->reason = psprintf("oversize: %d bytes, the limit is %d", len, max_bytes);
		return false;
	}
	if (memchr(data, '\0', len) != NULL)
	{
		env->reason = "invalid JSON: contains a NUL byte";
		return false;
	}
	if (!pg_verify_mbstr(PG_UTF8, data, len, true))
	{
		env->reason = "invalid UTF-8";
		return false;
	}
	text = pnstrdup(data, len);
	/* before parsing, which recurses per level: the envelope is one level */
	if (NestingDepth(text, len) > AC_MAX_EVENT_DEPTH + 1)
	{
		env->reason = psprintf("the payload is nested deeper than %d levels (AC_MAX_EVENT_DEPTH)",
							   AC_MAX_EVENT_DEPTH);
		return false;
	}
	lex = AcMakeJsonLexContext(text, len);
	jerr = pg_parse_json(lex, &nullSemAction);
	if (jerr != JSON_SUCCESS)
	{
		env->reason = psprintf("invalid JSON: %s", json_errdetail(jerr, lex));
		return false;
	}

	/* valid JSON; jsonb_in can still refuse e.g. an out-of-range number */
	PG_TRY();
	{
		root = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(text)));
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		env->reason = psprintf("invalid JSON: %s", edata->message);
		return false;
	}
	PG_END_TRY();

	if (!JB_ROOT_IS_OBJECT(root) || JB_ROOT_IS_SCALAR(root))
	{
		env->reason = "the envelope is not a JSON object";
		return false;
	}
	cloudevent = GetKey(root, "specversion") != NULL;
	env->event_id = RequiredString(root, cloudevent ? "id" : "event_id",
								   cloudevent ? "id" : "event_id", env);
	if (env->event_id == NULL)
		return false;
	if (strchr(env->event_id, '/') != NULL)
	{
		env->reason = "event_id contains \"/\", which Temporal's HTTP API cannot carry in a workflow id";
		return false;
	}
	if (strlen(env->event_id) > MAX_EVENT_ID)
	{
		env->reason = psprintf("event_id is longer than %d bytes", MAX_EVENT_ID);
		return false;
	}
	env->type = RequiredString(root, "type", "type", env);
	if (env->type == NULL)
		return false;
	payload = GetKey(root, cloudevent ? "data" : "payload");
	/* absent is {}; null, like any other non-object, is poison */
	if (payload == NULL)
		env->payload = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum("{}")));
	else if (payload->type == jbvBinary && JsonContainerIsObject(payload->val.binary.data))
		env->payload = JsonbValueToJsonb(payload);
	else
	{
		env->reason = psprintf("%s is %s, not a JSON object",
							   cloudevent ? "data" : "payload", AcJsonTypeName(payload));
		return false;
	}
	env->envelope = root;
	env->text = text;
	return true;
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

/* Does payload @> filters, exactly as SQL decides it? */
static bool
Contains(Jsonb *payload, Jsonb *filters)
{
	return DatumGetBool(DirectFunctionCall2(jsonb_contains,
											JsonbPGetDatum(payload),
											JsonbPGetDatum(filters)));
}

/* Copy one definition row of the current SPI result. */
static AcEventDef *
ReadDef(HeapTuple tup, TupleDesc desc)
{
	AcEventDef *d = palloc0(sizeof(AcEventDef));
	bool		isnull;
	Datum		filters;

	d->id = pstrdup(SPI_getvalue(tup, desc, 1));
	d->name = pstrdup(SPI_getvalue(tup, desc, 2));
	d->workflow_type = pstrdup(SPI_getvalue(tup, desc, 3));
	d->task_queue = pstrdup(SPI_getvalue(tup, desc, 4));
	d->input = pstrdup(SPI_getvalue(tup, desc, 5));
	d->event_type = pstrdup(SPI_getvalue(tup, desc, 6));
	filters = SPI_getbinval(tup, desc, 7, &isnull);
	if (isnull)
		d->filters = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum("{}")));
	else
		d->filters = DatumGetJsonbPCopy(filters);
	d->match_all = JB_ROOT_COUNT(d->filters) == 0;
	d->enabled = SPI_getvalue(tup, desc, 8)[0] == 't';
	return d;
}

/* Fill an index from the table; SPI must be connected. */
static void
FillEventIndex(AcEventIndex *idx, const char *schema)
{
	int			ret;

	ret = SPI_execute(psprintf("SELECT id::text, name, workflow_type, task_queue, input::text, "
							   "  trigger_config->>'event_type', trigger_config->'filters', enabled "
							   "FROM %s.ac_activity_definitions WHERE trigger_type = 'event' "
							   "ORDER BY id", quote_identifier(schema)), true, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read the event definitions: %s", SPI_result_code_string(ret));
	MemoryContextSwitchTo(idx->cxt);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		AcEventDef *d;
		IndexEntry *e;
		bool		found;
		char		key[TYPE_KEY_SIZE];

		/* a row written without the validation trigger may lack its keys */
		if (SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 6) == NULL)
			continue;
		d = ReadDef(SPI_tuptable->vals[i], SPI_tuptable->tupdesc);

		if (!d->enabled)
		{
			idx->disabled = lappend(idx->disabled, d);
			continue;
		}
		strlcpy(key, d->event_type, sizeof(key));
		e = hash_search(idx->types, key, HASH_ENTER, &found);
		if (!found)
			e->defs = NIL;
		e->defs = lappend(e->defs, d);
		idx->ndefs++;
	}
}

/*
 * Build the index of event definitions; SPI must be connected.  The index
 * lives in its own memory context under parent, which is deleted again
 * when the build fails (the table is gone, a row cannot be read).
 */
AcEventIndex *
AcBuildEventIndex(const char *schema, MemoryContext parent)
{
	MemoryContext cxt = AllocSetContextCreate(parent, "activity_core event index",
											  ALLOCSET_DEFAULT_SIZES);
	MemoryContext old = MemoryContextSwitchTo(cxt);
	AcEventIndex *idx;
	HASHCTL		ctl;

	PG_TRY();
	{
		idx = palloc0(sizeof(AcEventIndex));
		idx->cxt = cxt;
		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = TYPE_KEY_SIZE;
		ctl.entrysize = sizeof(IndexEntry);
		ctl.hcxt = cxt;
		idx->types = hash_create("activity_core event types", 1024, &ctl,
								 HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
		FillEventIndex(idx, schema);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(old);
		MemoryContextDelete(cxt);
		PG_RE_THROW();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(old);
	return idx;
}

/* Free an index. */
void
AcFreeEventIndex(AcEventIndex *idx)
{
	if (idx)
		MemoryContextDelete(idx->cxt);
}

/* Number of enabled definitions in the index. */
int
AcEventIndexSize(AcEventIndex *idx)
{
	return idx ? idx->ndefs : 0;
}

/* The enabled definitions that match an envelope (a List of AcEventDef). */
List *
AcMatchEvent(AcEventIndex *idx, const char *type, Jsonb *payload)
{
	char		key[TYPE_KEY_SIZE];
	IndexEntry *e;
	List	   *out = NIL;
	ListCell   *lc;

	strlcpy(key, type, sizeof(key));
	e = hash_search(idx->types, key, HASH_FIND, NULL);
	if (e == NULL)
		return NIL;
	foreach(lc, e->defs)
	{
		AcEventDef *d = (AcEventDef *) lfirst(lc);

		if (strcmp(d->event_type, type) != 0)
			continue;
		if (d->match_all || Contains(payload, d->filters))
			out = lappend(out, d);
	}
	return out;
}

/* Explain why a definition does not match: the first filter key that fails. */
static char *
FailingKey(AcEventDef *d, Jsonb *payload)
{
	JsonbIterator *it = JsonbIteratorInit(&d->filters->root);
	JsonbIteratorToken tok;
	JsonbValue	v;

	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		char	   *key;
		JsonbValue	val;
		JsonbParseState *st = NULL;
		Jsonb	   *one;

		if (tok != WJB_KEY)
			continue;
		key = pnstrdup(v.val.string.val, v.val.string.len);
		tok = JsonbIteratorNext(&it, &val, true);
		pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
		pushJsonbValue(&st, WJB_KEY, &v);
		pushJsonbValue(&st, WJB_VALUE, &val);
		one = JsonbValueToJsonb(pushJsonbValue(&st, WJB_END_OBJECT, NULL));
		if (!Contains(payload, one))
			return psprintf("filters key \"%s\" does not match the payload", key);
	}
	return pstrdup("filters do not match the payload");
}

/*
 * ac_explain_match(envelope jsonb) returns setof (activity_id, name,
 * matches, reason): the router's own decision for every event definition.
 */
Datum
ac_explain_match(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Jsonb	   *envelope = PG_GETARG_JSONB_P(0);
	char	   *text = JsonbToCString(NULL, &envelope->root, VARSIZE(envelope));
	AcEnvelope	env;
	AcEventIndex *idx;
	char	   *schema;
	HASH_SEQ_STATUS seq;
	IndexEntry *e;
	List	   *matched;
	ListCell   *lc;

	InitMaterializedSRF(fcinfo, 0);
	if (!AcParseEnvelope(text, strlen(text), MaxAllocSize, &env))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the router would dead-letter this envelope: %s", env.reason)));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	schema = AcExtensionSchema();
	idx = AcBuildEventIndex(schema, CurrentMemoryContext);
	matched = AcMatchEvent(idx, env.type, env.payload);

	hash_seq_init(&seq, idx->types);
	while ((e = hash_seq_search(&seq)) != NULL)
	{
		foreach(lc, e->defs)
		{
			AcEventDef *d = (AcEventDef *) lfirst(lc);
			Datum		values[4];
			bool		nulls[4] = {false, false, false, false};
			bool		m = list_member_ptr(matched, d);

			values[0] = DirectFunctionCall1(uuid_in, CStringGetDatum(d->id));
			values[1] = CStringGetTextDatum(d->name);
			values[2] = BoolGetDatum(m);
			if (m)
				values[3] = CStringGetTextDatum("matches");
			else if (strcmp(d->event_type, env.type) != 0)
				values[3] = CStringGetTextDatum(psprintf("event_type is \"%s\", not \"%s\"",
														 d->event_type, env.type));
			else
				values[3] = CStringGetTextDatum(FailingKey(d, env.payload));
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		}
	}
	foreach(lc, idx->disabled)
	{
		AcEventDef *d = (AcEventDef *) lfirst(lc);
		Datum		values[4];
		bool		nulls[4] = {false, false, false, false};

		values[0] = DirectFunctionCall1(uuid_in, CStringGetDatum(d->id));
		values[1] = CStringGetTextDatum(d->name);
		values[2] = BoolGetDatum(false);
		values[3] = CStringGetTextDatum("disabled");
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	SPI_finish();
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(ac_router_bench);

/*
 * ac_router_bench(envelope jsonb, iterations int) returns (definitions,
 * parse_us, match_us, matches): the router's cost per event, measured in
 * this backend on the current definitions with the router's own code.
 */
Datum
ac_router_bench(PG_FUNCTION_ARGS)
{
	Jsonb	   *envelope = PG_GETARG_JSONB_P(0);
	int			iterations = PG_GETARG_INT32(1);
	char	   *text = JsonbToCString(NULL, &envelope->root, VARSIZE(envelope));
	int			len = strlen(text);
	AcEnvelope	env;
	AcEventIndex *idx;
	instr_time	t0;
	instr_time	t1;
	double		parse_us;
	double		match_us;
	int			matches = 0;
	TupleDesc	desc;
	Datum		values[4];
	bool		nulls[4] = {false, false, false, false};
	MemoryContext loop = AllocSetContextCreate(CurrentMemoryContext, "bench",
											   ALLOCSET_DEFAULT_SIZES);
	MemoryContext old;

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	iterations = Max(1, Min(iterations, 10000000));
	old = CurrentMemoryContext;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	/* the index must outlive SPI's own memory */
	idx = AcBuildEventIndex(AcExtensionSchema(), old);
	SPI_finish();

	old = MemoryContextSwitchTo(loop);
	INSTR_TIME_SET_CURRENT(t0);
	for (int i = 0; i < iterations; i++)
	{
		CHECK_FOR_INTERRUPTS();
		if (!AcParseEnvelope(text, len, MaxAllocSize, &env))
			ereport(ERROR, (errmsg("poison envelope: %s", env.reason)));
		MemoryContextReset(loop);
	}
	INSTR_TIME_SET_CURRENT(t1);
	INSTR_TIME_SUBTRACT(t1, t0);
	parse_us = INSTR_TIME_GET_DOUBLE(t1) * 1e6 / iterations;

	(void) AcParseEnvelope(text, len, MaxAllocSize, &env);
	MemoryContextSwitchTo(old);
	INSTR_TIME_SET_CURRENT(t0);
	for (int i = 0; i < iterations; i++)
	{
		List	   *m;

		CHECK_FOR_INTERRUPTS();
		m = AcMatchEvent(idx, env.type, env.payload);
		matches = list_length(m);
		list_free(m);
	}
	INSTR_TIME_SET_CURRENT(t1);
	INSTR_TIME_SUBTRACT(t1, t0);
	match_us = INSTR_TIME_GET_DOUBLE(t1) * 1e6 / iterations;

	values[0] = Int32GetDatum(AcEventIndexSize(idx));
	values[1] = Float8GetDatum(parse_us);
	values[2] = Float8GetDatum(match_us);
	values[3] = Int32GetDatum(matches);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}
