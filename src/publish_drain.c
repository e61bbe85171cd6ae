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
#include "utils/array.h"
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

/* acknowledgements in flight at a time (nats_publish.c) */
#define PUBLISH_WINDOW 256
/* outbox rows per batch */
#define PUBLISH_BATCH 4000

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
	if (n != NULL && !AcNatsEnsureStream(n, true, &error))
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

/*
 * Delete the rows JetStream acknowledged, in one statement: they are
 * published, with their Msg-Id, and a later copy would be a duplicate.
 */
static void
DeletePublished(const char *q, OutboxRow *rows, int n, int published)
{
	Datum	   *ids = palloc(sizeof(Datum) * published);
	int			k = 0;
	Oid			types[1] = {INT8ARRAYOID};
	Datum		values[1];
	int			ret;

	for (int i = 0; i < n; i++)
		if (rows[i].error == NULL && !rows[i].untried)
			ids[k++] = Int64GetDatum(rows[i].id);
	Assert(k == published);
	values[0] = PointerGetDatum(construct_array(ids, k, INT8OID, sizeof(int64), true, TYPALIGN_DOUBLE));
	ret = SPI_execute_with_args(psprintf("DELETE FROM %s.ac_outbox WHERE id OPERATOR(pg_catalog.=) ANY ($1)", q),
								1, types, values, NULL, false, 0);
	if (ret != SPI_OK_DELETE)
		elog(ERROR, "could not delete the published outbox entries: %s", SPI_result_code_string(ret));
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
 * Read up to limit due outbox rows into rows[from..]: fresh ones (never
 * tried) in id order, which the primary key serves without reading the
 * whole backlog; or those tried before, fewest attempts first.  Returns
 * from + how many were read.
 */
static int
ReadOutbox(const char *q, bool fresh, int limit, OutboxRow *rows, int from, MemoryContext cxt)
{
	/*
	 * Fresh rows after this id: while the backlog fills whole batches, the
	 * next one starts after the last, not at the head of the key, which
	 * holds the entries of rows already deleted until VACUUM.  A short
	 * batch starts from the head again, so that a row committed late with
	 * a lower id waits no longer than the backlog does.
	 */
	static int64 fresh_after = 0;
	int			ret;
	int			n;

	/*
	 * The planner thinks few rows are due and would read the whole table
	 * and sort it; in id order through the key, a batch costs its own rows.
	 */
	if (fresh && SPI_execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off", false, 0) < 0)
		elog(ERROR, "could not set the plan of the outbox read");
	ret = SPI_execute(psprintf("SELECT id, subject, msg_id, data, attempts, created_at FROM %s.ac_outbox "
							   "WHERE NOT error_permanent AND %s AND id OPERATOR(pg_catalog.>) " INT64_FORMAT " "
							   "  AND (next_attempt_at IS NULL OR next_attempt_at OPERATOR(pg_catalog.<=) pg_catalog.now()) "
							   "ORDER BY %s LIMIT %d", q,
							   fresh ? "attempts OPERATOR(pg_catalog.=) 0" : "attempts OPERATOR(pg_catalog.>) 0",
							   fresh ? fresh_after : (int64) 0,
							   fresh ? "id" : "attempts, id", limit), true, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read the outbox: %s", SPI_result_code_string(ret));
	n = (int) SPI_processed;
	for (int i = 0; i < n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		OutboxRow  *r = &rows[from + i];
		bool		isnull;
		MemoryContext old = MemoryContextSwitchTo(cxt);

		r->id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		r->subject = pstrdup(SPI_getvalue(tup, desc, 2));
		r->msg_id = pstrdup(SPI_getvalue(tup, desc, 3));
		r->data = DatumGetByteaPCopy(SPI_getbinval(tup, desc, 4, &isnull));
		r->attempts = DatumGetInt32(SPI_getbinval(tup, desc, 5, &isnull));
		r->created_at = DatumGetTimestampTz(SPI_getbinval(tup, desc, 6, &isnull));
		MemoryContextSwitchTo(old);
	}
	SPI_freetuptable(SPI_tuptable);
	if (fresh)
		fresh_after = n == limit ? rows[from + n - 1].id : 0;
	if (fresh && SPI_execute("RESET enable_seqscan; RESET enable_bitmapscan", false, 0) < 0)
		elog(ERROR, "could not reset the plan of the outbox read");
	return from + n;
}

/*
 * Publish a batch of due outbox rows; returns how many were handled.  The
 * batch goes out asynchronously, PUBLISH_WINDOW acknowledgements in flight
 * (nats_publish.c); the rows JetStream acknowledged are deleted in one
 * statement, the others recorded one by one.  A row NATS refuses for good (larger than the server's max_payload, or a
 * control line the server closes the connection over) is marked
 * error_permanent and skipped from then on.  When the connection fails
 * under the batch, its first unacknowledged row alone counts an attempt
 * and backs off; the other unacknowledged rows go on the next pass, on a fresh connection.  Rows tried before
 * come after fresh ones, so a failing row holds back nothing.
 */
int
AcDrainOutbox(const char *schema, int limit)
{
	const char *q = quote_identifier(schema);
	OutboxRow  *rows;
	int			n;
	char	   *conn_error;
	bool		lost = false;
	bool		lost_permanent = false;
	AcPubItem  *items;
	int		   *row_of;
	int			nitems = 0;
	int			published = 0;
	char	   *lost_error = NULL;
	int64		max_payload = 0;
	MemoryContext cxt = CurrentMemoryContext;

	/* larger batches than the other drains: each ends waiting for its last acks */
	limit = Max(limit, PUBLISH_BATCH);
	AcWorkerBegin();
	rows = MemoryContextAllocZero(cxt, sizeof(OutboxRow) * Max(limit, 1));
	n = ReadOutbox(q, true, limit, rows, 0, cxt);
	if (n < limit)
		n = ReadOutbox(q, false, limit - n, rows, n, cxt);
	AcWorkerCommit();
	MemoryContextSwitchTo(cxt);
	if (n == 0)
		return 0;

	conn_error = EnsureConnection();
	if (pub_nats)
		max_payload = natsConnection_GetMaxPayload(pub_nats->nc);
	items = palloc0(sizeof(AcPubItem) * n);
	row_of = palloc(sizeof(int) * n);
	for (int i = 0; i < n; i++)
	{
		OutboxRow  *r = &rows[i];
		int64		size = AcNatsMessageSize(r->msg_id, VARSIZE_ANY_EXHDR(r->data));

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
		items[nitems].subject = r->subject;
		items[nitems].msg_id = r->msg_id;
		items[nitems].data = VARDATA_ANY(r->data);
		items[nitems].len = VARSIZE_ANY_EXHDR(r->data);
		row_of[nitems++] = i;
	}
	if (nitems > 0)
	{
		AcPubBatchResult res;
		int			culprit = -1;
		TimestampTz now;

		CHECK_FOR_INTERRUPTS();
		AcNatsPublishBatch(pub_nats, items, nitems, PUBLISH_WINDOW, &res);
		now = GetCurrentTimestamp();
		for (int j = 0; j < nitems; j++)
		{
			AcPubItem  *it = &items[j];
			OutboxRow  *r = &rows[row_of[j]];
			natsStatus	st = it->sent ? it->status : res.send_status;

			if (it->sent && st == NATS_OK)
			{
				published++;
				AcObserveOutboxAge(AC_OUTBOX_PUBLISH,
								   (double) (now - r->created_at) / 1e6);
				continue;
			}
			/* JetStream refused this message itself: its own failure */
			if (it->sent && it->jerr != 0)
			{
				r->permanent = it->jerr == JSStreamMessageExceedsMaximumErr;
				r->error = psprintf("%s (JetStream error %d)", it->error, (int) it->jerr);
				AcCountFailure(AC_OP_PUBLISH, r->permanent ? AC_FAIL_PERMANENT : AC_FAIL_TRANSIENT);
				continue;
			}
			if (!it->sent && j > res.first_unsent)
			{
				/* never handed over: it goes again */
				r->untried = true;
				lost = true;
				continue;
			}
			if (culprit < 0)
			{
				/* the first message the connection failed under */
				culprit = j;
				lost = true;
				r->permanent = st == NATS_MAX_PAYLOAD ||
					(res.closed && res.close_status != NATS_OK && AcNatsRefusesMessage(res.close_error));
				if (r->permanent && res.closed && res.close_error[0])
					r->error = psprintf("NATS closed the connection: %s", res.close_error);
				else
					r->error = psprintf("%s (%s)", it->sent ? it->error : res.send_error,
										natsStatus_GetText(st));
				lost_permanent = r->permanent;
				lost_error = r->error;
				AcCountFailure(AC_OP_PUBLISH, r->permanent ? AC_FAIL_PERMANENT :
							   st == NATS_TIMEOUT ? AC_FAIL_TIMEOUT : AC_FAIL_TRANSIENT);
			}
			else
				r->untried = true;
		}
		/* the rows that went again because the connection failed */
		for (int j = 0; j < nitems; j++)
		{
			OutboxRow  *r = &rows[row_of[j]];

			if (r->untried && !lost_permanent)
				r->error = psprintf("not tried, NATS did not answer: %s", lost_error ? lost_error : res.send_error);
		}
		if (published > 0)
		{
			AcCount(AC_STAT_EVENTS_PUBLISHED, published);
			AcSetPublisherState(AC_ROUTER_CONNECTED, NULL);
		}
		if (lost && !lost_permanent)
			AcSetPublisherState(AC_ROUTER_FAILING, lost_error ? lost_error : res.send_error);
	}
	/* a closed connection is opened afresh next time */
	if (pub_nats && natsConnection_IsClosed(pub_nats->nc))
	{
		AcNatsClose(pub_nats);
		pub_nats = NULL;
	}

	AcWorkerBegin();
	if (published > 0)
		DeletePublished(q, rows, n, published);
	{
		OutboxRow  *failed = palloc(sizeof(OutboxRow) * n);
		int			nfailed = 0;
		OutboxBatch b = {q, failed};
		char	  **errors;

		/* each failure on its own, so that one that cannot be recorded holds back none */
		for (int i = 0; i < n; i++)
			if (rows[i].error != NULL || rows[i].untried)
				failed[nfailed++] = rows[i];
		errors = AcEachRowIsolated(nfailed, RecordOutboxRow, &b);
		for (int i = 0; i < nfailed; i++)
			if (errors[i])
				ereport(WARNING,
						(errmsg("activity_core: could not record the outcome of outbox entry " INT64_FORMAT ": %s",
								failed[i].id, errors[i])));
	}
	AcWorkerCommit();
	MemoryContextSwitchTo(cxt);
	return n;
}
