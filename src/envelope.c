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
 * One pass of PostgreSQL's own JSON parser checks the envelope as jsonb_in
 * would (numbers through numeric_in, strings de-escaped) and picks out the
 * top-level members; the payload stays text until a definition of the
 * event's type needs to look into it (AcEnvelopePayload), so an event
 * nobody filters on is never turned into jsonb.
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

/* The top-level members an envelope is read from. */
typedef enum EnvKey
{
	KEY_OTHER,
	KEY_EVENT_ID,
	KEY_ID,
	KEY_TYPE,
	KEY_SPECVERSION,
	KEY_PAYLOAD,
	KEY_DATA,
	NUM_KEYS
} EnvKey;

/* What the parse found of one top-level member (the last one, as jsonb keeps). */
typedef struct EnvMember
{
	bool		present;
	const char *type;			/* "a string", "an object", ... (AcJsonTypeName's words) */
	char	   *string;			/* the de-escaped value, when a string */
	const char *start;			/* the value's text, when an object or array */
	const char *end;
} EnvMember;

/* The state of the parse. */
typedef struct EnvParse
{
	JsonLexContext *lex;
	int			depth;
	bool		root_seen;
	bool		root_object;
	EnvKey		field;			/* the top-level member being read */
	EnvMember	members[NUM_KEYS];
} EnvParse;

/* Which member a top-level key names. */
static EnvKey
KeyOf(const char *name)
{
	static const char *const names[NUM_KEYS] = {
		NULL, "event_id", "id", "type", "specversion", "payload", "data"
	};

	for (int k = 1; k < NUM_KEYS; k++)
		if (strcmp(name, names[k]) == 0)
			return (EnvKey) k;
	return KEY_OTHER;
}

/* An object or array starts. */
static void
ContainerStart(EnvParse *p, bool object)
{
	if (!p->root_seen)
	{
		p->root_seen = true;
		p->root_object = object;
	}
	else if (p->depth == 1 && p->field != KEY_OTHER)
	{
		EnvMember  *m = &p->members[p->field];

		m->present = true;
		m->type = object ? "an object" : "an array";
		m->string = NULL;
		m->start = p->lex->token_start;
		m->end = NULL;
	}
	p->depth++;
}

/* An object or array ends: the lexer has just read its closing bracket. */
static void
ContainerEnd(EnvParse *p)
{
	p->depth--;
	if (p->depth == 1 && p->field != KEY_OTHER)
		p->members[p->field].end = p->lex->prev_token_terminator;
}

/* Semantic action: an object starts. */
static AC_JSON_ACTION
OnObjectStart(void *state)
{
	ContainerStart((EnvParse *) state, true);
	AC_JSON_DONE;
}

/* Semantic action: an array starts. */
static AC_JSON_ACTION
OnArrayStart(void *state)
{
	ContainerStart((EnvParse *) state, false);
	AC_JSON_DONE;
}

/* Semantic action: an object or array ends. */
static AC_JSON_ACTION
OnContainerEnd(void *state)
{
	ContainerEnd((EnvParse *) state);
	AC_JSON_DONE;
}

/* Semantic action: a member's key (de-escaped). */
static AC_JSON_ACTION
OnField(void *state, char *fname, bool isnull)
{
	EnvParse   *p = (EnvParse *) state;

	if (p->depth == 1)
		p->field = KeyOf(fname);
	AC_JSON_DONE;
}

/*
 * Semantic action: a scalar.  A number must be one jsonb can hold (it
 * would refuse 1e1000000), so it goes through numeric_in as in jsonb_in.
 */
static AC_JSON_ACTION
OnScalar(void *state, char *token, JsonTokenType tokentype)
{
	EnvParse   *p = (EnvParse *) state;

	if (tokentype == JSON_TOKEN_NUMBER)
		(void) DirectFunctionCall3(numeric_in, CStringGetDatum(token),
								   ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));
	if (!p->root_seen)
	{
		p->root_seen = true;
		p->root_object = false;
	}
	else if (p->depth == 1 && p->field != KEY_OTHER)
	{
		EnvMember  *m = &p->members[p->field];

		m->present = true;
		m->string = NULL;
		m->start = m->end = NULL;
		switch (tokentype)
		{
			case JSON_TOKEN_STRING:
				m->type = "a string";
				m->string = token;
				break;
			case JSON_TOKEN_NUMBER:
				m->type = "a number";
				break;
			case JSON_TOKEN_TRUE:
			case JSON_TOKEN_FALSE:
				m->type = "a boolean";
				break;
			default:
				m->type = "null";
				break;
		}
	}
	AC_JSON_DONE;
}

/* Read a required string member, or set the poison reason. */
static char *
RequiredString(EnvMember *m, const char *label, AcEnvelope *env)
{
	if (!m->present)
	{
		env->reason = psprintf("missing %s", label);
		return NULL;
	}
	if (m->string == NULL)
	{
		env->reason = psprintf("%s is %s, not a string", label, m->type);
		return NULL;
	}
	if (m->string[0] == '\0')
	{
		env->reason = psprintf("%s is empty", label);
		return NULL;
	}
	return m->string;
}

/*
 * The payload as jsonb, made on first use: only a definition of the
 * event's type that looks into the payload needs it (event_index.c).
 * The text was parsed already, so jsonb_in cannot fail on it.
 */
Jsonb *
AcEnvelopePayload(AcEnvelope *env)
{
	if (env->payload == NULL)
	{
		char	   *text = env->payload_len > 0 ?
			pnstrdup(env->payload_text, env->payload_len) : "{}";

		env->payload = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(text)));
	}
	return env->payload;
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
 * env->reason set, for poison.  One pass of PostgreSQL's JSON parser
 * checks the whole text as jsonb_in would and picks out the top-level
 * members; the payload stays text until AcEnvelopePayload() is asked.
 */
bool
AcParseEnvelope(const char *data, int len, int max_bytes, AcEnvelope *env)
{
	JsonSemAction sem;
	EnvParse	p;
	char	   *text;
	MemoryContext cxt = CurrentMemoryContext;
	EnvMember  *payload;
	bool		cloudevent;
	volatile JsonParseErrorType jerr = JSON_SUCCESS;

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
	memset(&p, 0, sizeof(p));
	memset(&sem, 0, sizeof(sem));
	sem.semstate = &p;
	sem.object_start = OnObjectStart;
	sem.object_end = OnContainerEnd;
	sem.array_start = OnArrayStart;
	sem.array_end = OnContainerEnd;
	sem.object_field_start = OnField;
	sem.scalar = OnScalar;
	p.lex = AcMakeJsonLexContext(text, len);

	/* a number jsonb cannot hold raises an error in OnScalar */
	PG_TRY();
	{
		jerr = pg_parse_json(p.lex, &sem);
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
	if (jerr != JSON_SUCCESS)
	{
		env->reason = psprintf("invalid JSON: %s", json_errdetail(jerr, p.lex));
		return false;
	}

	if (!p.root_object)
	{
		env->reason = "the envelope is not a JSON object";
		return false;
	}
	cloudevent = p.members[KEY_SPECVERSION].present;
	env->event_id = RequiredString(&p.members[cloudevent ? KEY_ID : KEY_EVENT_ID],
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
	env->type = RequiredString(&p.members[KEY_TYPE], "type", env);
	if (env->type == NULL)
		return false;
	payload = &p.members[cloudevent ? KEY_DATA : KEY_PAYLOAD];
	/* absent is {}; null, like any other non-object, is poison */
	if (payload->present && (strcmp(payload->type, "an object") != 0))
	{
		env->reason = psprintf("%s is %s, not a JSON object",
							   cloudevent ? "data" : "payload", payload->type);
		return false;
	}
	if (payload->present)
	{
		env->payload_text = payload->start;
		env->payload_len = payload->end - payload->start;
	}
	env->text = text;
	return true;
}
