/*-------------------------------------------------------------------------
 *
 * publish.c
 *	  Drain ac_outbox to JetStream: the dispatcher's half of ac_publish().
 *
 * ac_publish() and ac_replay_dead_letter() only insert into ac_outbox, in
 * the caller's transaction, and ask for the dispatcher to be woken at
 * commit: a rolled-back transaction publishes nothing.  The dispatcher
 * publishes committed rows with their Msg-Id (JetStream drops a duplicate
 * within the stream's window, so a retry after a lost acknowledgement
 * publishes once) and deletes each row once JetStream acknowledged it.
 * Failures are retried with backoff.  The NATS connection is opened on
 * first use, after the fork, with signals blocked (nats_client.c).
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
#include "miscadmin.h"
#include "storage/ipc.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "nats_client.h"

PG_FUNCTION_INFO_V1(ac_outbox_wake);

typedef struct OutboxRow
{
	int64		id;
	char	   *subject;
	char	   *msg_id;
	bytea	   *data;
	int			attempts;
	char	   *error;
} OutboxRow;

static AcNats *pub_nats = NULL;
static bool exit_hook = false;

/* ac_outbox_wake(): wake the dispatcher when this transaction commits. */
Datum
ac_outbox_wake(PG_FUNCTION_ARGS)
{
	AcWakeDispatcherAtCommit();
	PG_RETURN_VOID();
}

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

/* Open the publishing connection if needed; NULL error when ready. */
static char *
EnsureConnection(void)
{
	char	   *error = NULL;
	AcNats	   *n;

	if (pub_nats)
		return NULL;
	if (!exit_hook)
	{
		before_shmem_exit(PublishExit, (Datum) 0);
		exit_hook = true;
	}
	n = AcNatsConnect("activity_core dispatcher", &error);
	if (n == NULL)
		return error;
	if (!AcNatsEnsureStream(n, &error))
	{
		AcNatsClose(n);
		return error;
	}
	pub_nats = MemoryContextAlloc(TopMemoryContext, sizeof(AcNats));
	*pub_nats = *n;
	return NULL;
}

/* Publish a batch of due outbox rows; returns how many were handled. */
int
AcDrainOutbox(const char *schema, int limit)
{
	const char *q = quote_identifier(schema);
	OutboxRow  *rows;
	int			n;
	int			ret;
	char	   *conn_error;
	bool		lost = false;
	MemoryContext cxt = CurrentMemoryContext;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	ret = SPI_execute(psprintf("SELECT id, subject, msg_id, data, attempts FROM %s.ac_outbox "
							   "WHERE next_attempt_at IS NULL OR next_attempt_at <= pg_catalog.now() "
							   "ORDER BY id LIMIT %d", q, limit), true, 0);
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
		MemoryContextSwitchTo(old);
	}
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(cxt);
	if (n == 0)
		return 0;

	conn_error = EnsureConnection();
	for (int i = 0; i < n; i++)
	{
		/* each publish may wait up to 2 s: stay responsive to SIGTERM */
		CHECK_FOR_INTERRUPTS();
		if (conn_error)
		{
			rows[i].error = conn_error;
			continue;
		}
		rows[i].error = AcNatsPublish(pub_nats, rows[i].subject, rows[i].msg_id,
									  VARDATA_ANY(rows[i].data), VARSIZE_ANY_EXHDR(rows[i].data),
									  &lost);
		if (rows[i].error == NULL)
			AcCount(AC_STAT_EVENTS_PUBLISHED, 1);
		else if (lost)
		{
			/* NATS is not answering: the rest of the batch waits its turn */
			conn_error = psprintf("not tried, NATS did not answer: %s", rows[i].error);
		}
	}
	/* a closed connection is opened afresh next time */
	if (pub_nats && natsConnection_IsClosed(pub_nats->nc))
	{
		AcNatsClose(pub_nats);
		pub_nats = NULL;
	}

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	for (int i = 0; i < n; i++)
	{
		Oid			types[3] = {INT8OID, TEXTOID, INT4OID};
		Datum		values[3];

		values[0] = Int64GetDatum(rows[i].id);
		if (rows[i].error == NULL)
			ret = SPI_execute_with_args(psprintf("DELETE FROM %s.ac_outbox WHERE id = $1", q),
										1, types, values, NULL, false, 0);
		else
		{
			int			backoff = Min(300, 1 << Min(rows[i].attempts, 8));

			values[1] = CStringGetTextDatum(rows[i].error);
			values[2] = Int32GetDatum(backoff);
			ret = SPI_execute_with_args(psprintf("UPDATE %s.ac_outbox SET attempts = attempts + 1, "
												 "last_error = $2, next_attempt_at = pg_catalog.now() "
												 "+ pg_catalog.make_interval(secs => $3) WHERE id = $1", q),
										3, types, values, NULL, false, 0);
			elog(LOG, "activity_core: publishing outbox entry " INT64_FORMAT " failed, retry in %d s: %s",
				 rows[i].id, backoff, rows[i].error);
		}
		if (ret < 0)
			elog(ERROR, "could not record an outbox outcome: %s", SPI_result_code_string(ret));
	}
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(cxt);
	return n;
}
