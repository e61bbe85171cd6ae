/*-------------------------------------------------------------------------
 *
 * limits.c
 *	  Identifier limits of Temporal and NATS, checked at the statement.
 *
 * A definition names a task queue and a workflow type that Temporal
 * validates only when the dispatcher creates the schedule or starts the
 * workflow, and an event type that becomes part of a NATS subject.  The
 * checks here apply the same rules up front, so that a value the services
 * would refuse later is refused by the INSERT or UPDATE that wrote it:
 *
 *	task_queue		Temporal's tqid.Validate and the per-namespace check of
 *					primitives.CheckInternalPerNsTaskQueueAllowed: non-empty,
 *					at most limit.maxIDLength bytes (default 1000), not
 *					starting with the reserved partition prefix "/_sys/", not
 *					the internal queue "temporal-sys-per-ns-tq".
 *	workflow_type	non-empty, at most limit.maxIDLength bytes.
 *	event_type		a NATS subject suffix: dot-separated non-empty tokens of
 *					at most AC_MAX_EVENT_TYPE_BYTES bytes in all, without
 *					wildcards, spaces, control or white-space characters.
 *	name			at most AC_MAX_NAME_BYTES bytes: it goes into the memo of
 *					the schedule and into every workflow argument.
 *	stream_name, consumer_name	JetStream names (AcNatsNameProblem), and
 *	subject_prefix	subject tokens like event_type: checked when set.
 *	argument		the workflow argument (name, input, and the event for
 *					events) within Temporal's payload limit,
 *					limit.blobSize.error (2 MiB by default).
 *
 * Each check returns NULL when the value is fine, else a palloc'd reason
 * that reads after the field name ("task_queue is 1200 bytes long, ...").
 * Temporal accepts any other character in task queue and workflow type
 * names, spaces and control characters included, and so do we.
 *
 * IDENTIFICATION
 *	  src/limits.c
 *
 *-------------------------------------------------------------------------
 */
#include "activity_core.h"

#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

PG_FUNCTION_INFO_V1(ac_check_event_type);

/* Is the string valid UTF-8 (the encoding both services speak)? */
static bool
IsUtf8(const char *s, size_t len)
{
	return pg_verify_mbstr(PG_UTF8, s, (int) len, true);
}

/* Reason for a Temporal identifier over limit.maxIDLength, or NULL. */
static char *
TemporalIdProblem(const char *s, size_t len)
{
	if (len == 0)
		return pstrdup("must not be empty");
	if (len > AC_TEMPORAL_MAX_ID_BYTES)
		return psprintf("is %zu bytes long, over Temporal's limit of %d bytes (limit.maxIDLength)",
						len, AC_TEMPORAL_MAX_ID_BYTES);
	if (!IsUtf8(s, len))
		return pstrdup("is not valid UTF-8");
	return NULL;
}

/* NULL when Temporal accepts task_queue as a task queue name, else why not */
char *
AcTaskQueueProblem(const char *task_queue)
{
	char	   *problem = TemporalIdProblem(task_queue, strlen(task_queue));

	if (problem)
		return problem;
	if (strncmp(task_queue, "/_sys/", 6) == 0)
		return pstrdup("starts with \"/_sys/\", the prefix Temporal reserves for task queue partitions");
	if (strcmp(task_queue, "temporal-sys-per-ns-tq") == 0)
		return pstrdup("is Temporal's internal per-namespace task queue");
	return NULL;
}

/* NULL when name can name a definition, else why not */
char *
AcNameProblem(const char *name)
{
	size_t		len = strlen(name);

	if (len == 0)
		return pstrdup("must not be empty");
	if (len > AC_MAX_NAME_BYTES)
		return psprintf("is %zu bytes long, over the limit of %d bytes (it goes into the memo of the schedule and into every workflow argument)",
						len, AC_MAX_NAME_BYTES);
	return NULL;
}

/*
 * NULL when a workflow argument of this many bytes fits Temporal's payload
 * limit, else why not; what names the part that makes it large.
 */
char *
AcArgumentProblem(const char *what, int64 bytes)
{
	if (bytes <= AC_TEMPORAL_MAX_BLOB_BYTES)
		return NULL;
	return psprintf("makes the workflow argument " INT64_FORMAT " bytes long (%s), over Temporal's payload limit of %d bytes (limit.blobSize.error)",
					bytes, what, AC_TEMPORAL_MAX_BLOB_BYTES);
}

/*
 * A value for an error message: quoted whole when short, else its first
 * bytes (cut at a character boundary) and its length, so that a megabyte of
 * input does not make a megabyte of message.
 */
char *
AcShortValue(const char *value)
{
	int			len = strlen(value);

	if (len <= 64)
		return psprintf("\"%s\"", value);
	return psprintf("\"%.*s...\" (%d bytes)",
					pg_mbcliplen(value, len, 48), value, len);
}

/*
 * The nesting depth of a jsonb container (1 for an object of scalars), or
 * any value over limit once it is known to be over it.
 */
int
AcJsonbDepth(JsonbContainer *c, int limit)
{
	JsonbIterator *it = JsonbIteratorInit(c);
	JsonbValue	v;
	JsonbIteratorToken tok;
	int			deepest = 0;

	check_stack_depth();
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if ((tok == WJB_VALUE || tok == WJB_ELEM) && v.type == jbvBinary)
		{
			int			child = AcJsonbDepth(v.val.binary.data, limit - 1);

			deepest = Max(deepest, child);
			if (deepest >= limit)
				break;
		}
	}
	return deepest + 1;
}

/* NULL when Temporal accepts workflow_type as a workflow type name, else why not */
char *
AcWorkflowTypeProblem(const char *workflow_type)
{
	return TemporalIdProblem(workflow_type, strlen(workflow_type));
}

/*
 * Decode the UTF-8 character at p (already verified) into its code point;
 * *len is set to its byte length.
 */
static uint32
DecodeUtf8(const unsigned char *p, int *len)
{
	if (p[0] < 0x80)
	{
		*len = 1;
		return p[0];
	}
	if ((p[0] & 0xE0) == 0xC0)
	{
		*len = 2;
		return ((uint32) (p[0] & 0x1F) << 6) | (p[1] & 0x3F);
	}
	if ((p[0] & 0xF0) == 0xE0)
	{
		*len = 3;
		return ((uint32) (p[0] & 0x0F) << 12) | ((uint32) (p[1] & 0x3F) << 6) |
			(p[2] & 0x3F);
	}
	*len = 4;
	return ((uint32) (p[0] & 0x07) << 18) | ((uint32) (p[1] & 0x3F) << 12) |
		((uint32) (p[2] & 0x3F) << 6) | (p[3] & 0x3F);
}

/* Is this code point Unicode white space (or the byte-order mark)? */
static bool
IsUnicodeSpace(uint32 c)
{
	return c == 0x00A0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
		c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
		c == 0x3000 || c == 0xFEFF;
}

/* NULL when event_type can be a NATS subject suffix, else why not (palloc'd) */
char *
AcEventTypeProblem(const char *event_type)
{
	size_t		len = strlen(event_type);
	const unsigned char *p = (const unsigned char *) event_type;
	const unsigned char *end = p + len;
	bool		token_start = true;

	if (len == 0)
		return pstrdup("must not be empty");
	if (len > AC_MAX_EVENT_TYPE_BYTES)
		return psprintf("is %zu bytes long, over the limit of %d bytes",
						len, AC_MAX_EVENT_TYPE_BYTES);
	if (!IsUtf8(event_type, len))
		return pstrdup("is not valid UTF-8");
	while (p < end)
	{
		int			clen;
		uint32		c = DecodeUtf8(p, &clen);

		if (c == '.')
		{
			if (token_start)
				return pstrdup("has an empty token (a leading, trailing or doubled \".\")");
			token_start = true;
		}
		else
		{
			if (c == '*' || c == '>')
				return psprintf("contains \"%c\", a NATS wildcard", (char) c);
			if (c == ' ')
				return pstrdup("contains a space");
			if (c < 0x20 || (c >= 0x7F && c <= 0x9F))
				return psprintf("contains the control character U+%04X", c);
			if (IsUnicodeSpace(c))
				return psprintf("contains the white-space character U+%04X", c);
			token_start = false;
		}
		p += clen;
	}
	if (token_start)
		return pstrdup("has an empty token (a leading, trailing or doubled \".\")");
	return NULL;
}

/*
 * NULL when name can name a JetStream stream or durable consumer, else why
 * not: nats-server refuses names with white space, ".", "*", ">", path
 * separators or control characters, and names over 255 bytes.
 */
char *
AcNatsNameProblem(const char *name)
{
	size_t		len = strlen(name);

	if (len == 0)
		return pstrdup("must not be empty");
	if (len > AC_MAX_NATS_NAME_BYTES)
		return psprintf("is %zu bytes long, over NATS's limit of %d bytes",
						len, AC_MAX_NATS_NAME_BYTES);
	for (const unsigned char *p = (const unsigned char *) name; *p; p++)
	{
		if (*p == '.' || *p == '*' || *p == '>' || *p == '/' || *p == '\\')
			return psprintf("contains \"%c\", which NATS does not allow in stream and consumer names", *p);
		if (*p <= ' ' || *p == 0x7f)
			return pstrdup("contains a space or a control character, which NATS does not allow in stream and consumer names");
	}
	return NULL;
}

/*
 * ac_check_event_type(event_type text) returns text: NULL when the event
 * type can follow "<prefix>." in a NATS subject, otherwise the reason.
 */
Datum
ac_check_event_type(PG_FUNCTION_ARGS)
{
	char	   *problem = AcEventTypeProblem(text_to_cstring(PG_GETARG_TEXT_PP(0)));

	if (problem == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(problem));
}
