/*-------------------------------------------------------------------------
 *
 * envelope.c
 *	  Parse the envelope of an event as the router receives it.
 *
 * An envelope is a JSON object with event_id, type, payload (object,
 * default {} when absent; null or any other non-object is poison, and so
 * is a payload nested deeper than AC_MAX_EVENT_DEPTH) and optional
 * occurred_at and source; a CloudEvents JSON event
 * (specversion, id, type, data) is read as the same thing.  Anything else
 * is poison, with a reason.
 *
 * IDENTIFICATION
 *	  src/envelope.c
 *
 *-------------------------------------------------------------------------
 */
#include "activity_core.h"

#include "common/jsonapi.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "events.h"

/* longest event_id that still fits a Temporal workflow id */
#define MAX_EVENT_ID 900

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
