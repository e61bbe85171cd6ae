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
 * refuses for good is marked error_permanent.  While a backlog fills whole
 * batches, the database work overlaps the publishing: the next batch is
 * read while the acknowledgements of one come back, and that one is
 * recorded while the next is in flight.  The NATS connection is
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

/* outbox rows per batch */
#define PUBLISH_BATCH 4000

/*
 * acknowledgements in flight at a time (nats_publish.c): a whole batch, so
 * that handing it over never waits and the database work of the batches
 * beside it runs while JetStream answers
 */
#define PUBLISH_WINDOW PUBLISH_BATCH

/* one call goes on reading batches of a backlog for this long, then returns */
#define PIPELINE_MS 500

/* A batch of outbox rows and its publishing. */
typedef struct DrainBatch
{
	MemoryContext cxt;			/* rows, items, errors */
	OutboxRow  *rows;
	int			n;
	bool		full;			/* its fresh rows filled it: more may follow */
	AcPubItem  *items;
	int		   *row_of;
	int			nitems;
	bool		started;		/* in flight: AcNatsPublishFinish is due */
	AcPubBatch	pub;
	char	   *conn_error;
	int			published;
	bool		lost;			/* the connection failed under it */
} DrainBatch;

/*
 * Fresh rows after this id: while the backlog fills whole batches, the
 * next one starts after the last, not at the head of the key, which holds
 * the entries of rows already deleted until VACUUM.  A short batch starts
 * from the head again, so that a row committed late with a lower id waits
 * no longer than the backlog does; so does a batch that was not recorded.
 */
static int64 fresh_after = 0;

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
 * Read a batch of due outbox rows in a transaction of its own: fresh ones
 * first, then, when they do not fill it, those tried before (fewest
 * attempts first), so that a failing row holds back nothing.
 */
static DrainBatch *
ReadBatch(const char *q, int limit)
{
	MemoryContext parent = CurrentMemoryContext;
	DrainBatch *b = palloc0(sizeof(DrainBatch));

	b->cxt = AllocSetContextCreate(parent, "activity_core outbox batch", ALLOCSET_DEFAULT_SIZES);
	b->rows = MemoryContextAllocZero(b->cxt, sizeof(OutboxRow) * limit);
	AcWorkerBegin();
	b->n = ReadOutbox(q, true, limit, b->rows, 0, b->cxt);
	b->full = b->n == limit;
	if (b->n < limit)
		b->n = ReadOutbox(q, false, limit - b->n, b->rows, b->n, b->cxt);
	AcWorkerCommit();
	MemoryContextSwitchTo(parent);
	return b;
}

/* Drop a batch that was read but not recorded: its rows go on a later pass. */
static void
DropBatch(DrainBatch *b)
{
	fresh_after = 0;
	MemoryContextDelete(b->cxt);
}

/*
 * Hand a batch to NATS: connect if needed, refuse for good what is over
 * the server's max_payload, and start the rest, without waiting for the
 * acknowledgements (nats_publish.c).
 */
static void
SendBatch(DrainBatch *b)
{
	MemoryContext old = MemoryContextSwitchTo(b->cxt);
	int64		max_payload = 0;

	b->conn_error = EnsureConnection();
	if (pub_nats)
		max_payload = natsConnection_GetMaxPayload(pub_nats->nc);
	b->items = palloc0(sizeof(AcPubItem) * b->n);
	b->row_of = palloc(sizeof(int) * b->n);
	for (int i = 0; i < b->n; i++)
	{
		OutboxRow  *r = &b->rows[i];
		int64		size = AcNatsMessageSize(r->msg_id, VARSIZE_ANY_EXHDR(r->data));

		if (b->conn_error)
		{
			r->error = b->conn_error;
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
		b->items[b->nitems].subject = r->subject;
		b->items[b->nitems].msg_id = r->msg_id;
		b->items[b->nitems].data = VARDATA_ANY(r->data);
		b->items[b->nitems].len = VARSIZE_ANY_EXHDR(r->data);
		b->row_of[b->nitems++] = i;
	}
	if (b->nitems > 0)
	{
		CHECK_FOR_INTERRUPTS();
		/* false: not even the context, every item unsent (b->pub.res says why) */
		b->started = AcNatsPublishStart(pub_nats, &b->pub, b->items, b->nitems, PUBLISH_WINDOW);
	}
	MemoryContextSwitchTo(old);
}

/*
 * Wait for a batch's acknowledgements and give each row its outcome:
 * published; refused by JetStream (its own failure); the first the
 * connection failed under (an attempt, and a backoff); or untried (it goes
 * again, no attempt counted).
 */
static void
CollectBatch(DrainBatch *b)
{
	MemoryContext old = MemoryContextSwitchTo(b->cxt);
	AcPubBatchResult *res = &b->pub.res;
	int			culprit = -1;
	bool		lost_permanent = false;
	char	   *lost_error = NULL;
	TimestampTz now;

	if (b->nitems == 0)
	{
		MemoryContextSwitchTo(old);
		return;
	}
	if (b->started)
		AcNatsPublishFinish(&b->pub);
	now = GetCurrentTimestamp();
	for (int j = 0; j < b->nitems; j++)
	{
		AcPubItem  *it = &b->items[j];
		OutboxRow  *r = &b->rows[b->row_of[j]];
		natsStatus	st = it->sent ? it->status : res->send_status;

		if (it->sent && st == NATS_OK)
		{
			b->published++;
			AcObserveOutboxAge(AC_OUTBOX_PUBLISH, (double) (now - r->created_at) / 1e6);
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
		if (!it->sent && j > res->first_unsent)
		{
			/* never handed over: it goes again */
			r->untried = true;
			b->lost = true;
			continue;
		}
		if (culprit < 0)
		{
			/* the first message the connection failed under */
			culprit = j;
			b->lost = true;
			r->permanent = st == NATS_MAX_PAYLOAD ||
				(res->closed && res->close_status != NATS_OK && AcNatsRefusesMessage(res->close_error));
			if (r->permanent && res->closed && res->close_error[0])
				r->error = psprintf("NATS closed the connection: %s", res->close_error);
			else
				r->error = psprintf("%s (%s)", it->sent ? it->error : res->send_error,
									natsStatus_GetText(st));
			lost_permanent = r->permanent;
			lost_error = r->error;
			AcCountFailure(AC_OP_PUBLISH, r->permanent ? AC_FAIL_PERMANENT :
						   st == NATS_TIMEOUT ? AC_FAIL_TIMEOUT : AC_FAIL_TRANSIENT);
		}
		else
			r->untried = true;
	}
	/* the rows that go again because the connection failed */
	for (int j = 0; j < b->nitems; j++)
	{
		OutboxRow  *r = &b->rows[b->row_of[j]];

		if (r->untried && !lost_permanent)
			r->error = psprintf("not tried, NATS did not answer: %s", lost_error ? lost_error : res->send_error);
	}
	if (b->published > 0)
	{
		AcCount(AC_STAT_EVENTS_PUBLISHED, b->published);
		AcSetPublisherState(AC_ROUTER_CONNECTED, NULL);
	}
	if (b->lost && !lost_permanent)
		AcSetPublisherState(AC_ROUTER_FAILING, lost_error ? lost_error : res->send_error);
	/* a closed connection is opened afresh next time */
	if (pub_nats && natsConnection_IsClosed(pub_nats->nc))
	{
		AcNatsClose(pub_nats);
		pub_nats = NULL;
	}
	MemoryContextSwitchTo(old);
}

/*
 * Record a collected batch in a transaction of its own: delete the rows
 * JetStream acknowledged, in one statement, and record each failure on
 * its own, so that one that cannot be recorded holds back none.
 */
static void
RecordBatch(const char *q, DrainBatch *b)
{
	OutboxRow  *failed;
	int			nfailed = 0;
	OutboxBatch ob;
	char	  **errors;

	AcWorkerBegin();
	if (b->published > 0)
		DeletePublished(q, b->rows, b->n, b->published);
	failed = palloc(sizeof(OutboxRow) * b->n);
	for (int i = 0; i < b->n; i++)
		if (b->rows[i].error != NULL || b->rows[i].untried)
			failed[nfailed++] = b->rows[i];
	ob.q = q;
	ob.rows = failed;
	errors = AcEachRowIsolated(nfailed, RecordOutboxRow, &ob);
	for (int i = 0; i < nfailed; i++)
		if (errors[i])
			ereport(WARNING,
					(errmsg("activity_core: could not record the outcome of outbox entry " INT64_FORMAT ": %s",
							failed[i].id, errors[i])));
	AcWorkerCommit();
}

/*
 * The pipeline of one call, from its first batch (read, not yet sent):
 * while a batch is in flight, read the next one; once it is answered, send
 * the next and record this one.  Goes on while batches come full, for at
 * most PIPELINE_MS; returns how many rows were handled.
 */
static int
DrainPipeline(const char *q, int limit, DrainBatch *cur)
{
	TimestampTz until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), PIPELINE_MS);
	int			total = 0;

	SendBatch(cur);
	for (;;)
	{
		DrainBatch *next = NULL;

		if (cur->started && cur->full && GetCurrentTimestamp() < until)
			next = ReadBatch(q, limit);
		CollectBatch(cur);
		if (next != NULL && (next->n == 0 || cur->lost))
		{
			/* nothing more, or the connection failed: not now */
			DropBatch(next);
			next = NULL;
		}
		if (next != NULL)
			SendBatch(next);
		RecordBatch(q, cur);
		total += cur->n;
		MemoryContextDelete(cur->cxt);
		if (next == NULL)
			break;
		cur = next;
	}
	return total;
}

/*
 * Publish the due outbox rows, a batch at a time; returns how many were
 * handled.  Each batch goes out asynchronously, its acknowledgements in
 * flight (nats_publish.c); the rows JetStream acknowledged are deleted in
 * one statement, the others recorded one by one.  A row NATS refuses for
 * good (larger than the server's max_payload, or a control line the
 * server closes the connection over) is marked error_permanent and
 * skipped from then on.  When the connection fails under a batch, its
 * first unacknowledged row alone counts an attempt and backs off; the
 * other unacknowledged rows go on the next pass, on a fresh connection.
 * An error on the way gives up the batch in flight: its rows stay in the
 * outbox and go again, with their Msg-Ids.
 */
int
AcDrainOutbox(const char *schema, int limit)
{
	const char *q = quote_identifier(schema);
	/* larger batches than the other drains: a whole batch is in flight at once */
	int			batch = Max(limit, PUBLISH_BATCH);
	DrainBatch *first = ReadBatch(q, batch);
	volatile int total = 0;

	if (first->n == 0)
	{
		MemoryContextDelete(first->cxt);
		return 0;
	}
	PG_TRY();
	{
		total = DrainPipeline(q, batch, first);
	}
	PG_CATCH();
	{
		/* what was not recorded goes again, from the head of the key */
		AcNatsPublishAbandon();
		fresh_after = 0;
		PG_RE_THROW();
	}
	PG_END_TRY();
	return total;
}
