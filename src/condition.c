/*-------------------------------------------------------------------------
 *
 * condition.c
 *	  The condition of an event definition: a PostgreSQL SQL/JSON path
 *	  predicate over the payload, checked and normalised at the statement,
 *	  parsed once when the router builds its index, and evaluated per
 *	  event by PostgreSQL's own jsonpath executor.
 *
 * A definition with a condition matches an event when
 * jsonb_path_match(payload, condition, '{}', silent => true) is true: the
 * router calls that very function.  Silent mode turns the errors the SQL
 * standard lets a path suppress (a missing key in strict mode, a type
 * mismatch, a division by zero) into "unknown"; any other error of the
 * executor (a datetime comparison that needs a time zone, say) is caught
 * around the one evaluation.  The executor only computes over its inputs
 * (it takes no locks, pins no buffers, opens no files), so catching its
 * error needs no subtransaction.  Both are "no match" for that event and
 * are counted in condition_errors.  Query cancel, shutdown and out of
 * memory are thrown on: they are not the condition's fault.
 *
 * IDENTIFICATION
 *	  src/condition.c
 *
 *-------------------------------------------------------------------------
 */
#include "activity_core.h"

#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"
#include "utils/jsonpath.h"
#include "utils/memutils.h"
#if PG_VERSION_NUM >= 160000
#include "nodes/miscnodes.h"
#endif

#include "events.h"

#define CONDITION_HINT "A condition is a jsonpath predicate over the payload, such as " \
	"$.amount > 100 && $.currency == \"EUR\" or exists($.tags[*] ? (@ == \"vip\"))."

/*
 * Parse jsonpath text without throwing: the path, or NULL with the
 * parser's message in *error.  The parser only allocates memory, so on
 * majors without soft errors its error is caught and flushed directly.
 */
static JsonPath *
ParsePath(const char *text, char **error)
{
#if PG_VERSION_NUM >= 160000
	ErrorSaveContext escontext;
	Datum		result;

	memset(&escontext, 0, sizeof(escontext));
	escontext.type = T_ErrorSaveContext;
	escontext.details_wanted = true;
	if (DirectInputFunctionCallSafe(jsonpath_in, (char *) text, InvalidOid, -1,
									(Node *) &escontext, &result))
		return DatumGetJsonPathP(result);
	*error = pstrdup(escontext.error_data && escontext.error_data->message ?
					 escontext.error_data->message : "invalid jsonpath");
	return NULL;
#else
	MemoryContext cxt = CurrentMemoryContext;
	JsonPath   *volatile path = NULL;

	PG_TRY();
	{
		path = DatumGetJsonPathP(DirectFunctionCall1(jsonpath_in, CStringGetDatum(text)));
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		*error = pstrdup(edata->message ? edata->message : "invalid jsonpath");
		FreeErrorData(edata);
	}
	PG_END_TRY();
	return path;
#endif
}

/*
 * Where a syntax error is, as a 1-based character position: the parser
 * names the token it stopped at ("at or near \"x\""), and the shortest
 * prefix of the text that fails with the same message ends with that
 * token.  An error at the end of the input is at its end.  0 when unknown.
 */
static int
ErrorPosition(const char *text, const char *message)
{
	const char *near = strstr(message, "at or near \"");
	const char *end;
	int			toklen;
	int			len = strlen(text);

	if (strstr(message, "at end of jsonpath input"))
		return pg_mbstrlen_with_len(text, len) + 1;
	if (near == NULL)
		return 0;
	near += strlen("at or near \"");
	end = strstr(near, "\" of jsonpath input");
	if (end == NULL)
		return 0;
	toklen = end - near;
	for (int k = 1; k <= len; k++)
	{
		char	   *prefix;
		char	   *error = NULL;

		if (k < len && (text[k] & 0xC0) == 0x80)
			continue;			/* not at a character boundary */
		CHECK_FOR_INTERRUPTS();
		prefix = pnstrdup(text, k);
		if (ParsePath(prefix, &error) == NULL && strcmp(error, message) == 0 && k >= toklen)
			return pg_mbstrlen_with_len(text, k - toklen) + 1;
		pfree(prefix);
	}
	return 0;
}

/* Does the path, or any path inside it, name a variable ($name)? */
static bool
UsesVariable(JsonPathItem *v)
{
	JsonPathItem a;
	JsonPathItem b;

	check_stack_depth();
	switch (v->type)
	{
		case jpiVariable:
			return true;
		case jpiAnd:
		case jpiOr:
		case jpiEqual:
		case jpiNotEqual:
		case jpiLess:
		case jpiGreater:
		case jpiLessOrEqual:
		case jpiGreaterOrEqual:
		case jpiAdd:
		case jpiSub:
		case jpiMul:
		case jpiDiv:
		case jpiMod:
		case jpiStartsWith:
			jspGetLeftArg(v, &a);
			jspGetRightArg(v, &b);
			if (UsesVariable(&a) || UsesVariable(&b))
				return true;
			break;
		case jpiNot:
		case jpiIsUnknown:
		case jpiPlus:
		case jpiMinus:
		case jpiFilter:
		case jpiExists:
			jspGetArg(v, &a);
			if (UsesVariable(&a))
				return true;
			break;
		case jpiLikeRegex:
			jspInitByBuffer(&a, v->base, v->content.like_regex.expr);
			if (UsesVariable(&a))
				return true;
			break;
		case jpiIndexArray:
			for (int i = 0; i < v->content.array.nelems; i++)
			{
				bool		range = jspGetArraySubscript(v, &a, &b, i);

				if (UsesVariable(&a) || (range && UsesVariable(&b)))
					return true;
			}
			break;
		default:
			break;
	}
	if (jspGetNext(v, &a))
		return UsesVariable(&a);
	return false;
}

/* Is the top of the path a predicate (a comparison, &&, exists, ...)? */
static bool
IsPredicate(JsonPath *path)
{
	JsonPathItem v;

	jspInit(&v, path);
	if (jspHasNext(&v))
		return false;
	switch (v.type)
	{
		case jpiAnd:
		case jpiOr:
		case jpiNot:
		case jpiIsUnknown:
		case jpiEqual:
		case jpiNotEqual:
		case jpiLess:
		case jpiGreater:
		case jpiLessOrEqual:
		case jpiGreaterOrEqual:
		case jpiExists:
		case jpiStartsWith:
		case jpiLikeRegex:
			return true;
		default:
			return false;
	}
}

/*
 * Check trigger_config.condition and return its normal form: the path as
 * PostgreSQL prints it once parsed.  Refuses (SQLSTATE 22023) a syntax
 * error, naming its position; a path that is not a predicate; a path with
 * variables (the router has none to give); and one over
 * AC_MAX_CONDITION_BYTES.
 */
char *
AcNormaliseCondition(const char *text)
{
	char	   *error = NULL;
	JsonPath   *path;
	JsonPathItem root;

	if (strlen(text) > AC_MAX_CONDITION_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("trigger_config.condition is longer than %d bytes (AC_MAX_CONDITION_BYTES)",
						AC_MAX_CONDITION_BYTES),
				 errhint("Keep conditions short; filters take the exact-match part.")));
	path = ParsePath(text, &error);
	if (path == NULL)
	{
		int			pos = ErrorPosition(text, error);

		if (pos > 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("trigger_config.condition is not a valid jsonpath: %s at character %d",
							error, pos),
					 errdetail("condition: %s", AcShortValue(text)),
					 errhint("%s", CONDITION_HINT)));
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("trigger_config.condition is not a valid jsonpath: %s", error),
				 errdetail("condition: %s", AcShortValue(text)),
				 errhint("%s", CONDITION_HINT)));
	}
	if (!IsPredicate(path))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("trigger_config.condition %s is not a predicate", AcShortValue(text)),
				 errhint("The condition must yield true or false, as jsonb_path_match() requires: compare "
						 "a value ($.amount > 100), test a boolean ($.paid == true) or use exists(...), "
						 "like_regex or starts with.")));
	jspInit(&root, path);
	if (UsesVariable(&root))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("trigger_config.condition %s uses a variable", AcShortValue(text)),
				 errhint("A condition sees only the payload ($); write values as literals.")));
	return DatumGetCString(DirectFunctionCall1(jsonpath_out, PointerGetDatum(path)));
}

/*
 * Parse a stored condition for the router's index, in the current memory
 * context; NULL (and the reason) when it does not parse, which only a row
 * written around the validation trigger can hold.
 */
JsonPath *
AcParseCondition(const char *text, char **error)
{
	return ParsePath(text, error);
}

/* Errors that are not the condition's doing, thrown on. */
static bool
IsOutsideError(int sqlerrcode)
{
	return sqlerrcode == ERRCODE_QUERY_CANCELED ||
		ERRCODE_TO_CATEGORY(sqlerrcode) == ERRCODE_INSUFFICIENT_RESOURCES ||
		ERRCODE_TO_CATEGORY(sqlerrcode) == ERRCODE_OPERATOR_INTERVENTION;
}

/*
 * Evaluate a parsed condition on a payload as
 * jsonb_path_match(payload, condition, '{}', true) does: true, false, or
 * unknown (no single boolean); an error of the executor gives AC_COND_ERROR
 * and its message in *error (in the caller's memory context).  The
 * executor's memory is freed before returning.
 */
AcCondResult
AcEvalCondition(JsonPath *condition, Jsonb *payload, char **error)
{
	static Jsonb *no_vars = NULL;
	static MemoryContext eval_cxt = NULL;
	MemoryContext caller = CurrentMemoryContext;
	volatile AcCondResult result = AC_COND_ERROR;

	if (no_vars == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		eval_cxt = AllocSetContextCreate(TopMemoryContext, "activity_core condition",
										 ALLOCSET_SMALL_SIZES);
		no_vars = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum("{}")));
		MemoryContextSwitchTo(old);
	}
	MemoryContextSwitchTo(eval_cxt);
	PG_TRY();
	{
		LOCAL_FCINFO(fcinfo, 4);
		Datum		r;

		InitFunctionCallInfoData(*fcinfo, NULL, 4, InvalidOid, NULL, NULL);
		fcinfo->args[0].value = JsonbPGetDatum(payload);
		fcinfo->args[0].isnull = false;
		fcinfo->args[1].value = PointerGetDatum(condition);
		fcinfo->args[1].isnull = false;
		fcinfo->args[2].value = JsonbPGetDatum(no_vars);
		fcinfo->args[2].isnull = false;
		fcinfo->args[3].value = BoolGetDatum(true);
		fcinfo->args[3].isnull = false;
		r = jsonb_path_match(fcinfo);
		if (fcinfo->isnull)
			result = AC_COND_UNKNOWN;
		else
			result = DatumGetBool(r) ? AC_COND_TRUE : AC_COND_FALSE;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(caller);
		if (IsOutsideError(geterrcode()))
		{
			MemoryContextReset(eval_cxt);
			PG_RE_THROW();
		}
		edata = CopyErrorData();
		FlushErrorState();
		if (error)
			*error = pstrdup(edata->message ? edata->message : "unknown error");
		FreeErrorData(edata);
		result = AC_COND_ERROR;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(caller);
	MemoryContextReset(eval_cxt);
	return result;
}
