/*-------------------------------------------------------------------------
 *
 * event_index.c
 *	  The in-memory index of event definitions, the matcher the router uses,
 *	  and ac_explain_match(), the same matcher called from SQL.
 *
 * The index holds the enabled event definitions keyed by event type.  A
 * definition matches an envelope when the type is equal, payload @>
 * filters, and its condition (if any) holds: the containment test is
 * PostgreSQL's own jsonb_contains and the condition PostgreSQL's own
 * jsonb_path_match (condition.c), so the answer is exactly the one SQL
 * gives.  Conditions are parsed once, when the index is built, and run
 * only for definitions whose type and filters matched.  The router never queries the
 * table per event: it rebuilds the index when a relcache invalidation of
 * ac_activity_definitions reaches it, which the statement trigger
 * ac_definitions_invalidate() queues (wakeup.c).
 *
 * IDENTIFICATION
 *	  src/event_index.c
 *
 *-------------------------------------------------------------------------
 */
#include "activity_core.h"

#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "access/htup_details.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/tuplestore.h"
#include "utils/uuid.h"

#include "events.h"

PG_FUNCTION_INFO_V1(ac_explain_match);

#define TYPE_KEY_SIZE 256

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

/* Does payload @> filters, exactly as SQL decides it? */
static bool
Contains(Jsonb *payload, Jsonb *filters)
{
	return DatumGetBool(DirectFunctionCall2(jsonb_contains,
											JsonbPGetDatum(payload),
											JsonbPGetDatum(filters)));
}

/*
 * Note the members of filters when it is an object of scalars only (the
 * common case), for FlatContains; d->nflat is -1 otherwise.  The values
 * point into d->filters, which lives as long as the definition.
 */
static void
NoteFlatFilters(AcEventDef *d)
{
	JsonbIterator *it;
	JsonbIteratorToken tok;
	JsonbValue	v;
	int			n = 0;

	d->nflat = -1;
	if (!JB_ROOT_IS_OBJECT(d->filters))
		return;
	d->flat_keys = palloc(sizeof(JsonbValue) * Max(JB_ROOT_COUNT(d->filters), 1));
	d->flat_values = palloc(sizeof(JsonbValue) * Max(JB_ROOT_COUNT(d->filters), 1));
	it = JsonbIteratorInit(&d->filters->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
			d->flat_keys[n] = v;
		else if (tok == WJB_VALUE)
		{
			if (!IsAJsonbScalar(&v))
				return;
			d->flat_values[n++] = v;
		}
	}
	d->nflat = n;
}

/*
 * payload @> filters for filters of scalar members only, with the rules of
 * jsonb_contains: the payload is an object, and each member of filters is
 * in it with an equal scalar value (numbers compare as numeric).
 */
static bool
FlatContains(Jsonb *payload, const AcEventDef *d)
{
	if (!JB_ROOT_IS_OBJECT(payload))
		return false;
	for (int i = 0; i < d->nflat; i++)
	{
		const JsonbValue *want = &d->flat_values[i];
		JsonbValue	buf;
		JsonbValue *got = getKeyJsonValueFromContainer(&payload->root,
													   d->flat_keys[i].val.string.val,
													   d->flat_keys[i].val.string.len,
													   &buf);

		if (got == NULL || got->type != want->type)
			return false;
		switch (want->type)
		{
			case jbvNull:
				break;
			case jbvBool:
				if (got->val.boolean != want->val.boolean)
					return false;
				break;
			case jbvString:
				if (got->val.string.len != want->val.string.len ||
					memcmp(got->val.string.val, want->val.string.val, want->val.string.len) != 0)
					return false;
				break;
			case jbvNumeric:
				if (!DatumGetBool(DirectFunctionCall2(numeric_eq,
													  NumericGetDatum(got->val.numeric),
													  NumericGetDatum(want->val.numeric))))
					return false;
				break;
			default:
				return false;
		}
	}
	return true;
}

/* Does payload @> d's filters?  The flat form when it has one. */
static bool
FiltersMatch(Jsonb *payload, const AcEventDef *d)
{
	if (d->nflat >= 0)
		return FlatContains(payload, d);
	return Contains(payload, d->filters);
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
	NoteFlatFilters(d);
	d->enabled = SPI_getvalue(tup, desc, 8)[0] == 't';
	d->condition_text = SPI_getvalue(tup, desc, 9);
	if (d->condition_text)
	{
		d->condition = AcParseCondition(d->condition_text, &d->condition_error);
		if (d->condition == NULL)
			elog(WARNING, "activity_core: the condition of event definition %s does not parse, so it matches nothing: %s",
				 d->id, d->condition_error);
	}
	return d;
}

/* Fill an index from the table; SPI must be connected. */
static void
FillEventIndex(AcEventIndex *idx, const char *schema)
{
	int			ret;

	ret = SPI_execute(psprintf("SELECT id::text, name, workflow_type, task_queue, input::text, "
							   "  trigger_config->>'event_type', trigger_config->'filters', enabled, "
							   "  trigger_config->>'condition' "
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

/*
 * Does the definition's condition hold for the payload?  No condition
 * holds always; one that does not parse, errs or gives no boolean does
 * not (*why says which, for ac_explain_match).
 */
static AcCondResult
ConditionHolds(AcEventDef *d, Jsonb *payload, char **error)
{
	if (d->condition_text == NULL)
		return AC_COND_TRUE;
	if (d->condition == NULL)
	{
		if (error)
			*error = d->condition_error;
		return AC_COND_ERROR;
	}
	return AcEvalCondition(d->condition, payload, error);
}

/*
 * Does deciding whether d matches look into the payload (non-empty
 * filters, or a condition)?  Only then is the payload turned into jsonb
 * (AcEnvelopePayload).
 */
bool
AcDefinitionNeedsPayload(const AcEventDef *d)
{
	return !d->match_all || d->condition_text != NULL;
}

/*
 * The enabled definitions that match an envelope (a List of AcEventDef);
 * with count, a condition that errs or gives no boolean is counted in
 * condition_errors.  The payload becomes jsonb only if a definition of
 * the type needs it.
 */
static List *
MatchList(AcEventIndex *idx, AcEnvelope *env, bool count)
{
	const char *type = env->type;
	char		key[TYPE_KEY_SIZE];
	IndexEntry *e;
	List	   *out = NIL;
	ListCell   *lc;
	Jsonb	   *payload;

	strlcpy(key, type, sizeof(key));
	e = hash_search(idx->types, key, HASH_FIND, NULL);
	if (e == NULL)
		return NIL;
	foreach(lc, e->defs)
	{
		AcEventDef *d = (AcEventDef *) lfirst(lc);

		if (strcmp(d->event_type, type) != 0)
			continue;
		if (!AcDefinitionNeedsPayload(d))
		{
			out = lappend(out, d);
			continue;
		}
		payload = AcEnvelopePayload(env);
		if (d->match_all || FiltersMatch(payload, d))
		{
			AcCondResult c = ConditionHolds(d, payload, NULL);

			if (c == AC_COND_TRUE)
				out = lappend(out, d);
			else if (c != AC_COND_FALSE && count)
				AcCount(AC_STAT_CONDITION_ERRORS, 1);
		}
	}
	return out;
}

/* The router's matcher: the enabled definitions that match an envelope. */
List *
AcMatchEvent(AcEventIndex *idx, AcEnvelope *env)
{
	return MatchList(idx, env, true);
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

/* Explain why a definition whose filters matched does not: its condition. */
static char *
ConditionReason(AcEventDef *d, Jsonb *payload)
{
	char	   *error = NULL;

	switch (ConditionHolds(d, payload, &error))
	{
		case AC_COND_TRUE:
			break;
		case AC_COND_FALSE:
			return psprintf("condition %s is false", d->condition_text);
		case AC_COND_UNKNOWN:
			return psprintf("condition %s gives no boolean (unknown)", d->condition_text);
		case AC_COND_ERROR:
			return psprintf("condition %s failed: %s", d->condition_text, error);
	}
	return pstrdup("the index changed while it was explained");
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
	/* the router's matcher, without counting in the router's statistics */
	matched = MatchList(idx, &env, false);

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
			else if (!d->match_all && !FiltersMatch(AcEnvelopePayload(&env), d))
				values[3] = CStringGetTextDatum(FailingKey(d, AcEnvelopePayload(&env)));
			else
				values[3] = CStringGetTextDatum(ConditionReason(d, AcEnvelopePayload(&env)));
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
