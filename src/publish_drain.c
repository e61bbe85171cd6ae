/*-------------------------------------------------------------------------
 *
 * publish_drain.c
 *	  Drain ac_outbox to JetStream: the dispatcher's half of ac_publish().
 *
 * ac_publish() and ac_replay_dead_letter() only insert into ac_outbox, in
 * the caller's transaction, and ask for the dispatcher to be woken at
 * commit (wakeup.c): a rolled-back transaction publishes nothing.  The
 * dispatcher publishes committed rows with their Msg-Id (JetStream drops a
 * duplicate within the stream's window, so a retry after a lost
 * acknowledgement publishes once) and deletes each row once JetStream
 * acknowledged it.  Failures are retried with backoff; a message NATS
 * refuses for good is marked error_permanent.  The NATS connection is
 * opened on first use, after the fork, with signals blocked (nats_client.c).
 *
 * IDENTIFICATION
 *	  src/publish_drain.c
 *
 *-------------------------------------------------------------------------
 */
#include "activity_core.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "nats_client.h"

typedef struct OutboxRow
{
	int64		id;
	char	   *subject;
	char	   *msg_id;
	bytea	   *data;
	int			attempts;
	TimestampTz created_at;
	char	   *error;
	bool		permanent;		/* NATS refuses this message for good */
	bool		untried;		/* not sent: the connection failed before it */
} OutboxRow;

static AcNats *pub_nats = NULL;
static bool exit_hook = false;

/* Close the publishing connection when the process exits. */
static void
PublishExit(int code, Datum arg)
{
	if (pub_nats)
	{
		AcNatsClose(pub_nats);
		pub_nats = NULL;
		AcNatsShutdown();
	}
}

/*
 * After a reload: when a NATS setting changed, close the publishing
 * connection, so that ac_health() no longer reports the old one; the next
 * outbox entry connects with the new settings.
 */
void
AcPublisherReloaded(void)
{
	if (pub_nats && AcNatsSettingsChanged(pub_nats))
	{
		elog(LOG, "activity_core dispatcher: the NATS settings changed; the next publish connects with them");
		AcNatsClose(pub_nats);
		pfree(pub_nats);
		pub_nats = NULL;
		AcSetPublisherState(AC_ROUTER_UNKNOWN, NULL);
	}
}

/* Open the publishing connection if needed; NULL error when ready. */
static char *
EnsureConnection(void)
{
	char	   *error = NULL;
	AcNats	   *n;

	/* a reload that changes a NATS setting closes it (AcPublisherReloaded) */
	if (pub_nats)
		return NULL;
	if (!exit_hook)
	{
		before_shmem_exit(PublishExit, (Datum) 0);
		exit_hook = true;
	}
	n = AcNatsConnect("activity_core dispatcher", &error);
	if (n != NULL && !AcNatsEnsureStream(n, &error))
	{
		AcNatsClose(n);
		n = NULL;
	}
	if (n == NULL)
	{
		AcSetPublisherState(AC_ROUTER_FAILING, error);
		return error;
	}
	pub_nats = MemoryContextAlloc(TopMemoryContext, sizeof(AcNats));
	*pub_nats = *n;
	AcSetPublisherState(AC_ROUTER_CONNECTED, NULL);
	elog(LOG, "activity_core dispatcher: publishing to %s", AcRedactUrl(ac_nats_url));
	/* what ac_publish checks events against */
	AcSetNatsMaxPayload(natsConnection_GetMaxPayload(pub_nats->nc));
	return NULL;
}

/* The batch of outbox rows whose outcomes are recorded. */
typedef struct OutboxBatch
{
	const char *q;
	OutboxRow  *rows;
} OutboxBatch;

/* Record the outcome of outbox row i. */
static void
RecordOutboxRow(int i, void *arg)
{
	OutboxBatch *b = (OutboxBatch *) arg;
	OutboxRow  *r = &b->rows[i];
	const char *q = b->q;
	Oid			types[4] = {INT8OID, TEXTOID, INT4OID, BOOLOID};
	Datum		values[4];
	int			ret;

	values[0] = Int64GetDatum(r->id);
	if (r->untried && r->error == NULL)
		return;
	if (r->untried)
	{
		/* not its failure: no attempt counted, tried again in a second */
		values[1] = CStringGetTextDatum(r->error);
		ret = SPI_execute_with_args(psprintf("UPDATE %s.ac_outbox SET last_error = $2, "
											 "next_attempt_at = pg_catalog.now() + interval '1 second' "
											 "WHERE id = $1", q),
									2, types, values, NULL, false, 0);
	}
	else if (r->error == NULL)
		ret = SPI_execute_with_args(psprintf("DELETE FROM %s.ac_outbox WHERE id = $1", q),
									1, types, values, NULL, false, 0);
	else
	{
		int			backoff = Min(300, 1 << Min(r->attempts, 8));

		values[1] = CStringGetTextDatum(r->error);
		values[2] = Int32GetDatum(backoff);
		values[3] = BoolGetDatum(r->permanent);
		ret = SPI_execute_with_args(psprintf("UPDATE %s.ac_outbox SET attempts = attempts + 1, "
											 "last_error = $2, error_permanent = $4, "
											 "next_attempt_at = CASE WHEN NOT $4 THEN pg_catalog.now() "
											 "+ pg_catalog.make_interval(secs => $3) END WHERE id = $1", q),
									4, types, values, NULL, false, 0);
		if (r->permanent)
			ereport(WARNING,
					(errmsg("activity_core: NATS refuses outbox entry " INT64_FORMAT " (subject %.80s%s): %s",
							r->id, r->subject, strlen(r->subject) > 80 ? "..." : "", r->error),
					 errhint("The entry is not published; see ac_outbox.last_error.")));
		else
			elog(LOG, "activity_core: publishing outbox entry " INT64_FORMAT " failed, retry in %d s: %s",
				 r->id, backoff, r->error);
	}
	if (ret < 0)
		elog(ERROR, "could not record an outbox outcome: %s", SPI_result_code_string(ret));
}

/*
 * Publish a batch of due outbox rows; returns how many were handled.  A
 * row NATS refuses for good (larger than the server's max_payload, or a
 * control line the server closes the connection over) is marked
 * error_permanent and skipped from then on.  When the connection fails
 * under one row, that row alone counts an attempt and backs off; the rows
 * after it go on the next pass, on a fresh connection.  Rows tried before
 * come after fresh ones, so a failing row holds back nothing.
 */
int
AcDrainOutbox(const char *schema, int limit)
{
	const char *q = quote_identifier(schema);
	OutboxRow  *rows;
	int			n;
	int			ret;
	char	   *conn_error;
	bool		lost = false;
	bool		permanent = false;
	bool		lost_permanent = false;
	char	   *lost_error = NULL;
	int64		max_payload = 0;
	MemoryContext cxt = CurrentMemoryContext;

	AcWorkerBegin();
	ret = SPI_execute(psprintf("SELECT id, subject, msg_id, data, attempts, created_at FROM %s.ac_outbox "
							   "WHERE NOT error_permanent "
							   "  AND (next_attempt_at IS NULL OR next_attempt_at <= pg_catalog.now()) "
							   "ORDER BY attempts, id LIMIT %d", q, limit), true, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read the outbox: %s", SPI_result_code_string(ret));
	n = (int) SPI_processed;
	rows = MemoryContextAllocZero(cxt, sizeof(OutboxRow) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		MemoryContext old = MemoryContextSwitchTo(cxt);

		rows[i].id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		rows[i].subject = pstrdup(SPI_getvalue(tup, desc, 2));
		rows[i].msg_id = pstrdup(SPI_getvalue(tup, desc, 3));
		rows[i].data = DatumGetByteaPCopy(SPI_getbinval(tup, desc, 4, &isnull));
		rows[i].attempts = DatumGetInt32(SPI_getbinval(tup, desc, 5, &isnull));
		rows[i].created_at = DatumGetTimestampTz(SPI_getbinval(tup, desc, 6, &isnull));
		MemoryContextSwitchTo(old);
	}
	AcWorkerCommit();
	MemoryContextSwitchTo(cxt);
	if (n == 0)
		return 0;

	conn_error = EnsureConnection();
	if (pub_nats)
		max_payload = natsConnection_GetMaxPayload(pub_nats->nc);
	for (int i = 0; i < n; i++)
	{
		OutboxRow  *r = &rows[i];
		int64		size = AcNatsMessageSize(r->msg_id, VARSIZE_ANY_EXHDR(r->data));

		/* each publish may wait up to 2 s: stay responsive to SIGTERM */
		CHECK_FOR_INTERRUPTS();
		if (lost)
		{
			/*
			 * The connection failed under an earlier row.  When NATS refused
			 * that row for good, the rest goes on the next pass, on a fresh
			 * connection; else it waits a second, as NATS may be down.
			 */
			r->untried = true;
			if (!lost_permanent)
				r->error = psprintf("not tried, NATS did not answer: %s", lost_error);
			continue;
		}
		if (conn_error)
		{
			r->error = conn_error;
			AcCountFailure(AC_OP_PUBLISH, AC_FAIL_TRANSIENT);
			continue;
		}
		if (max_payload > 0 && size > max_payload)
		{
			r->permanent = true;
			r->error = psprintf("the message is %lld bytes with its headers, over the NATS server's max_payload of %lld bytes",
								(long long) size, (long long) max_payload);
			AcCountFailure(AC_OP_PUBLISH, AC_FAIL_PERMANENT);
			continue;
		}
		r->error = AcNatsPublish(pub_nats, r->subject, r->msg_id,
								 VARDATA_ANY(r->data), VARSIZE_ANY_EXHDR(r->data),
								 &lost, &permanent);
		r->permanent = r->error != NULL && permanent;
		if (r->error == NULL)
		{
			AcCount(AC_STAT_EVENTS_PUBLISHED, 1);
			AcObserveOutboxAge(AC_OUTBOX_PUBLISH,
							   (double) (GetCurrentTimestamp() - r->created_at) / 1e6);
			if (i == 0)
				AcSetPublisherState(AC_ROUTER_CONNECTED, NULL);
		}
		else if (lost)
		{
			lost_permanent = r->permanent;
			lost_error = r->error;
			if (!r->permanent)
				AcSetPublisherState(AC_ROUTER_FAILING, r->error);
		}
	}
	/* a closed connection is opened afresh next time */
	if (pub_nats && natsConnection_IsClosed(pub_nats->nc))
	{
		AcNatsClose(pub_nats);
		pub_nats = NULL;
	}

	AcWorkerBegin();
	{
		OutboxBatch b = {q, rows};
		char	  **errors = AcEachRowIsolated(n, RecordOutboxRow, &b);

		for (int i = 0; i < n; i++)
			if (errors[i])
				ereport(WARNING,
						(errmsg("activity_core: could not record the outcome of outbox entry " INT64_FORMAT ": %s",
								rows[i].id, errors[i])));
	}
	AcWorkerCommit();
	MemoryContextSwitchTo(cxt);
	return n;
}
