/*-------------------------------------------------------------------------
 *
 * publish_check.c
 *	  ac_publish()'s checks: what NATS or the router would refuse later is
 *	  refused at the call, with the limit named.
 *
 * An event that passed ac_publish() must be publishable and routable: its
 * subject a valid NATS subject of bounded length (limits.c), its payload an
 * object no deeper than the router accepts, its id usable in a workflow id
 * and a NATS header, and the message, with its envelope and headers, within
 * both activity_core.max_event_size and the NATS server's max_payload (as
 * the dispatcher read it when it connected; before that, only the setting
 * is known).  Otherwise the outbox row would fail for good in the
 * dispatcher, after the caller's transaction committed.
 *
 * IDENTIFICATION
 *	  src/publish_check.c
 *
 *-------------------------------------------------------------------------
 */
#include "activity_core.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "events.h"
#include "nats_client.h"

PG_FUNCTION_INFO_V1(ac_check_publish);

/* the longest event_id: with "activity-<uuid>:" it stays a valid workflow id */
#define MAX_EVENT_ID_BYTES 900

/*
 * Bytes the envelope adds around the payload, event id and type:
 * {"type": , "source": "activity_core", "payload": , "event_id": ,
 * "occurred_at": "<timestamp>"} with its quotes, and some slack.
 */
#define ENVELOPE_OVERHEAD 200

/* Refuse an event_id that cannot become part of a workflow id or a header. */
static void
CheckEventId(const char *id)
{
	size_t		len = strlen(id);
	const char *problem = NULL;

	for (size_t i = 0; i < len; i++)
		if ((unsigned char) id[i] < 0x20 || id[i] == 0x7f)
			problem = "contains a control character";
	if (strchr(id, '/') != NULL)
		problem = "contains \"/\"";
	if (len > MAX_EVENT_ID_BYTES)
		problem = psprintf("is %zu bytes long, over the limit of %d bytes", len, MAX_EVENT_ID_BYTES);
	if (len == 0)
		problem = "must not be empty";
	if (problem)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid event_id %s: %s", AcShortValue(id), problem),
				 errhint("An event_id is non-empty, at most %d bytes and has no \"/\" or control character "
						 "(it becomes part of a workflow id and of a NATS header).",
						 MAX_EVENT_ID_BYTES)));
}

/*
 * Raise the error ac_publish() must give for these arguments, if any, and
 * return the payload as JSON text (palloc'd), which the envelope carries.
 */
char *
AcCheckPublish(const char *type, Jsonb *payload, const char *id)
{
	char	   *problem = type ? AcEventTypeProblem(type) : "it is null";
	char	   *text;
	int			depth;
	int64		bytes;

	if (problem)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid event_type %s: %s", AcShortValue(type ? type : ""), problem),
				 errhint("Events are published to %s.<event_type>: dot-separated tokens without spaces, \"*\" or \">\".",
						 ac_subject_prefix)));
	if (payload == NULL || !JB_ROOT_IS_OBJECT(payload) || JB_ROOT_IS_SCALAR(payload))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("payload must be a JSON object")));
	depth = AcJsonbDepth(&payload->root, AC_MAX_EVENT_DEPTH);
	if (depth > AC_MAX_EVENT_DEPTH)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("the payload is nested more than %d levels deep", AC_MAX_EVENT_DEPTH),
				 errhint("The workers of Temporal's SDKs cannot decode deeper JSON; the router would dead-letter it.")));
	if (id == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("event_id must not be null here")));
	CheckEventId(id);

	text = JsonbToCString(NULL, &payload->root, VARSIZE(payload));
	bytes = (int64) strlen(text) + strlen(id) + strlen(type) + ENVELOPE_OVERHEAD;
	AcCheckEventBytes(id, bytes);
	return text;
}

/*
 * Refuse an event of about bytes bytes (its envelope) that the router would
 * dead-letter or NATS refuse; AcCheckPublish() and the table watch trigger
 * (watch.c) call it.
 */
void
AcCheckEventBytes(const char *id, int64 bytes)
{
	int64		max_payload;

	if (bytes > ac_max_event_bytes)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("the event is larger than activity_core.max_event_size (%d bytes)", ac_max_event_bytes),
				 errhint("The router would dead-letter it; keep payloads small and pass references to large data.")));
	max_payload = AcNatsMaxPayload();
	if (max_payload > 0 && AcNatsMessageSize(id, (int) bytes) > max_payload)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("the event is about %lld bytes with its envelope and headers, over the NATS server's max_payload of %lld bytes",
						(long long) AcNatsMessageSize(id, (int) bytes), (long long) max_payload),
				 errhint("Raise max_payload in nats-server's configuration, or keep payloads small and pass references to large data.")));
}

/*
 * ac_check_publish(event_type text, payload jsonb, event_id text): raise the
 * error ac_publish() must give for these arguments, if any.
 */
Datum
ac_check_publish(PG_FUNCTION_ARGS)
{
	AcCheckPublish(PG_ARGISNULL(0) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(0)),
				   PG_ARGISNULL(1) ? NULL : PG_GETARG_JSONB_P(1),
				   PG_ARGISNULL(2) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(2)));
	PG_RETURN_VOID();
}
