/*-------------------------------------------------------------------------
 *
 * publish.c
 *	  ac_publish(): queue an event in ac_outbox, in the caller's
 *	  transaction, for the dispatcher to publish once it commits.
 *
 * This is the path of every application event, so it does in C what a
 * PL/pgSQL body did with several queries: the checks of publish_check.c
 * (which also render the payload as JSON text, once), a random event id
 * from a buffer of strong random bytes refilled every 64 ids, the envelope
 * written straight into a buffer in the key order jsonb prints, and one
 * INSERT through a plan prepared once per backend and schema.  The row's
 * other columns (id, created_at, origin) take their defaults.  At commit
 * the dispatcher's latch is set (wakeup.c), once per transaction.
 *
 * The function is SECURITY DEFINER with a pinned search_path, so that a
 * role granted EXECUTE needs no rights on ac_outbox; its statement names
 * only schema-qualified objects.
 *
 * IDENTIFICATION
 *	  src/publish.c
 *
 *-------------------------------------------------------------------------
 */
#include "activity_core.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

#include "events.h"

PG_FUNCTION_INFO_V1(ac_publish);

/* ids handed out per refill of the random buffer */
#define IDS_PER_REFILL 64

/* Return a new random (version 4) UUID as text, palloc'd. */
static char *
NewEventId(void)
{
	static unsigned char pool[16 * IDS_PER_REFILL];
	static int	used = IDS_PER_REFILL;
	static int	pool_pid = 0;
	unsigned char *b;

	/* a forked process must never hand out its parent's ids */
	if (used >= IDS_PER_REFILL || pool_pid != MyProcPid)
	{
		if (!pg_strong_random(pool, sizeof(pool)))
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("could not generate a random event_id")));
		used = 0;
		pool_pid = MyProcPid;
	}
	b = &pool[16 * used++];
	b[6] = (b[6] & 0x0f) | 0x40;
	b[8] = (b[8] & 0x3f) | 0x80;
	return psprintf("%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
					b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9],
					b[10], b[11], b[12], b[13], b[14], b[15]);
}

/* The INSERT into ac_outbox, prepared once per extension schema. */
static SPIPlanPtr
OutboxInsertPlan(Oid nsp)
{
	static SPIPlanPtr plan = NULL;
	static Oid	plan_nsp = InvalidOid;
	Oid			types[3] = {TEXTOID, TEXTOID, BYTEAOID};
	SPIPlanPtr	p;

	if (plan != NULL && plan_nsp == nsp)
		return plan;
	p = SPI_prepare(psprintf("INSERT INTO %s.ac_outbox (subject, msg_id, data) VALUES ($1, $2, $3)",
							 quote_identifier(get_namespace_name(nsp))),
					3, types);
	if (p == NULL)
		elog(ERROR, "could not prepare the outbox insert: %s",
			 SPI_result_code_string(SPI_result));
	SPI_keepplan(p);
	if (plan)
		SPI_freeplan(plan);
	plan = p;
	plan_nsp = nsp;
	return plan;
}

/*
 * The envelope as bytea: the same text jsonb_build_object('event_id', ...,
 * 'type', ..., 'payload', ..., 'occurred_at', now(), 'source',
 * 'activity_core')::text gives, keys in jsonb's order.
 */
static bytea *
BuildEnvelope(const char *id, const char *type, const char *payload)
{
	StringInfoData buf;
	char		ts[MAXDATELEN + 1];

	initStringInfo(&buf);
	appendBinaryStringInfo(&buf, "    ", VARHDRSZ);
	appendStringInfoString(&buf, "{\"type\": ");
	escape_json(&buf, type);
	appendStringInfoString(&buf, ", \"source\": \"activity_core\", \"payload\": ");
	appendStringInfoString(&buf, payload);
	appendStringInfoString(&buf, ", \"event_id\": ");
	escape_json(&buf, id);
	appendStringInfoString(&buf, ", \"occurred_at\": \"");
	appendStringInfoString(&buf, JsonEncodeDateTime(ts, TimestampTzGetDatum(GetCurrentTransactionStartTimestamp()),
													TIMESTAMPTZOID, NULL));
	appendStringInfoString(&buf, "\"}");
	SET_VARSIZE(buf.data, buf.len);
	return (bytea *) buf.data;
}

/*
 * ac_publish(event_type text, payload jsonb, event_id text default null)
 * returns text: queue the event for publishing to <prefix>.<event_type>
 * once the transaction commits (Msg-Id = event_id); returns the event id.
 */
Datum
ac_publish(PG_FUNCTION_ARGS)
{
	char	   *type = PG_ARGISNULL(0) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(0));
	Jsonb	   *payload = PG_ARGISNULL(1) ? NULL : PG_GETARG_JSONB_P(1);
	char	   *id = PG_ARGISNULL(2) ? NewEventId() : text_to_cstring(PG_GETARG_TEXT_PP(2));
	char	   *text = AcCheckPublish(type, payload, id);
	Oid			nsp = get_func_namespace(fcinfo->flinfo->fn_oid);
	Datum		values[3];
	int			ret;

	values[0] = CStringGetTextDatum(psprintf("%s.%s", ac_subject_prefix, type));
	values[1] = CStringGetTextDatum(id);
	values[2] = PointerGetDatum(BuildEnvelope(id, type, text));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	ret = SPI_execute_plan(OutboxInsertPlan(nsp), values, NULL, false, 0);
	if (ret != SPI_OK_INSERT)
		elog(ERROR, "could not queue the event in ac_outbox: %s", SPI_result_code_string(ret));
	SPI_finish();
	AcWakeDispatcherAtCommit();
	PG_RETURN_TEXT_P(cstring_to_text(id));
}
