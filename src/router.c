/*-------------------------------------------------------------------------
 *
 * router.c
 *	  The router background worker: NATS JetStream events start Temporal
 *	  workflows, exactly once, nothing lost.
 *
 * The worker connects to NATS after the fork (signals blocked while nats.c
 * starts its threads), ensures the stream and the durable pull consumer,
 * and loops on its main thread: fetch a batch (waiting at most one second,
 * so SIGTERM and SIGHUP act promptly), parse each envelope, match it
 * against the in-memory index of enabled event definitions, and start the
 * workflow activity-{id}:{event_id} for every match, all starts of the
 * batch in flight together.  A start that Temporal reports as already
 * started counts as done, so redeliveries start nothing twice.
 *
 * Copies of one event id in a batch: only the first delivered (lowest
 * stream sequence) routes; the others start nothing and are acked when it
 * is done, nak'd when it is not.  A message without JetStream metadata
 * gets its delivery count from the router's own table.
 *
 * Per message: every start done -> ack; a start failed for a transient
 * reason -> nak with a growing delay, until activity_core.router_max_deliveries
 * deliveries, then dead letter; Temporal refused a start, or the message
 * is poison -> a row in ac_dead_letters (committed first), then term.
 *
 * The consumer's ack wait is activity_core.router_ack_wait (short, so that
 * the batch of a router that died is delivered again within seconds);
 * while a batch's starts run, the router sends in-progress acks every
 * third of it from this main thread (a tick of AcTemporalRun), so a slow
 * Temporal does not get a batch delivered twice.
 *
 * The index is rebuilt when a relcache invalidation of the definitions
 * table arrives (taken in with AcceptInvalidationMessages() before each
 * batch is routed, as pg_cron does), and at least every
 * activity_core.router_refresh_interval, for changes that send none.
 *
 * No PostgreSQL function is ever called from a nats.c thread: no callback
 * is registered, and every nats.c call is made from this main thread.
 *
 * IDENTIFICATION
 *	  src/router.c
 *
 *-------------------------------------------------------------------------
 */
#include "activity_core.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/pmsignal.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "events.h"
#include "nats_client.h"
#include "temporal.h"

PGDLLEXPORT void ac_router_main(Datum arg);

/* One message of a batch. */
typedef struct RouterMsg
{
	natsMsg    *msg;
	uint64		stream_seq;
	uint64		delivered;
	int64		stored_ns;		/* when JetStream stored it, 0 if unknown */
	AcEnvelope	env;
	bool		poison;
	int			starts;
	int			failed_transient;
	int			failed_permanent;
	char	   *error;
	int			index;			/* position in the fetched batch */
	bool		counted;		/* delivered is our own count (no metadata) */
	struct RouterMsg *dup_of;	/* the first copy of its event id, if later */
} RouterMsg;

/* Deliveries the router counted for a message without metadata. */
typedef struct DeliveryCount
{
	uint64		key;
	uint64		count;
} DeliveryCount;

#define MAX_COUNTED 10000

/* One workflow start. */
typedef struct StartItem
{
	AcRequest	req;			/* first member */
	RouterMsg  *m;
	AcEventDef *def;
} StartItem;

static AcNats *nats = NULL;
static natsMsgList fetched = {0};	/* the batch being routed, if any */
static AcEventIndex *event_index = NULL;
static uint64 index_generation = 0;
static TimestampTz index_built_at = 0;
static volatile bool index_valid = false;
static Oid	definitions_relid = InvalidOid;
static HTAB *delivery_counts = NULL;
static int	consumer_ack_wait_ms = 0;	/* the ack wait the consumer was given */

/* memory the batch context keeps between batches */
#define BATCH_KEPT_BYTES (4 * 1024 * 1024)

/* A batch kept alive with in-progress acks while its starts run. */
typedef struct BatchProgress
{
	natsMsgList *list;
	TimestampTz last;			/* fetch, or the last in-progress acks */
} BatchProgress;


/* Release the fetched batch (safe to call twice). */
static void
DropFetched(void)
{
	natsMsgList_Destroy(&fetched);
	memset(&fetched, 0, sizeof(fetched));
}

/*
 * Hand the fetched batch back after a failure: each message not acked yet
 * is redelivered in a second, when the router has recovered, instead of
 * after the consumer's ack wait (activity_core.router_ack_wait).  nats.c
 * skips messages acked already.
 */
static void
NakFetched(void)
{
	for (int i = 0; i < fetched.Count; i++)
		if (fetched.Msgs[i])
			natsMsg_NakWithDelay(fetched.Msgs[i], 1000, NULL);
}

/*
 * Tick of AcTemporalRun (main thread): every third of the ack wait, tell
 * JetStream that the batch is still being worked on (+WPI), so that a slow
 * Temporal does not make it deliver the batch again while its starts are
 * still running; a router that dies sends no more, and its batch is
 * delivered again one ack wait later.
 */
static void
KeepBatchAlive(void *arg)
{
	BatchProgress *p = (BatchProgress *) arg;
	TimestampTz now = GetCurrentTimestamp();

	if (!TimestampDifferenceExceeds(p->last, now, Max(ac_router_ack_wait_ms / 3, 100)))
		return;
	for (int i = 0; i < p->list->Count; i++)
		if (p->list->Msgs[i])
			(void) natsMsg_InProgress(p->list->Msgs[i], NULL);
	p->last = now;
}

/*
 * Close NATS and wait for its threads when the process exits; a batch held
 * at that moment (SIGTERM, a shutdown) is handed back first, so that the
 * next router gets it in a second rather than one ack wait later.
 */
static void
RouterExit(int code, Datum arg)
{
	if (nats)
	{
		NakFetched();
		AcNatsClose(nats);
	}
	nats = NULL;
	AcNatsShutdown();
}

/*
 * Request id of a start, derived from the workflow id and the delivery (the
 * stream sequence and delivery count).  A repeated request within one
 * delivery is deduplicated by Temporal; a new delivery gets "already
 * started", which is how the router tells new workflows from repeats.
 */
static char *
RequestIdFor(const char *workflow_id, uint64 stream_seq, uint64 delivered)
{
	return AcDerivedUuid(psprintf("%s|" UINT64_FORMAT "|" UINT64_FORMAT, workflow_id,
								  stream_seq, delivered));
}

/* Request-finished callback: count the outcome against its message. */
static bool
StartDone(AcRequest *req, void *arg)
{
	StartItem  *it = (StartItem *) req;

	AcCountStart(req->status);
	if (req->status == AC_T_OK || req->status == AC_T_ALREADY_EXISTS)
		AcObserveEventAge(it->m->stored_ns);
	else
	{
		if (AcTemporalIsTransient(req->status))
			it->m->failed_transient++;
		else
			it->m->failed_permanent++;
		if (it->m->error == NULL)
			it->m->error = psprintf("start of activity %s: %s: %s", it->def->id,
									AcTemporalStatusName(req->status), req->error);
	}
	return false;
}

/*
 * Relcache callback: a committed change to ac_activity_definitions (or a
 * reset of the whole cache) makes the index stale.  Only sets a flag.
 */
static void
DefinitionsInvalidated(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == definitions_relid)
		index_valid = false;
}

/*
 * Rebuild the index when it is stale: a relcache invalidation of the
 * definitions table arrived, the generation a committing backend bumps
 * changed, or activity_core.router_refresh_interval passed (which covers
 * changes made with triggers disabled and logical replication apply).
 */
static void
RefreshIndex(const char *schema)
{
	uint64		gen;
	TimestampTz now;
	MemoryContext caller = CurrentMemoryContext;

	/* deliver invalidations committed so far to DefinitionsInvalidated */
	AcceptInvalidationMessages();
	gen = AcEventGeneration();
	now = GetCurrentTimestamp();
	if (event_index && index_valid && gen == index_generation &&
		(ac_router_refresh_interval_s == 0 ||
		 now < TimestampTzPlusMilliseconds(index_built_at,
										   (int64) ac_router_refresh_interval_s * 1000)))
		return;

	/* an invalidation arriving from here on makes this build stale again */
	index_valid = true;
	PG_TRY();
	{
		AcWorkerBegin();
		{
			AcEventIndex *fresh = AcBuildEventIndex(schema, TopMemoryContext);

			AcFreeEventIndex(event_index);
			event_index = fresh;
		}
		definitions_relid = AcDefinitionsRelid();
		AcWorkerCommit();
	}
	PG_CATCH();
	{
		index_valid = false;
		PG_RE_THROW();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(caller);
	index_generation = gen;
	index_built_at = now;
	elog(DEBUG1, "activity_core router: index of %d event definitions built",
		 AcEventIndexSize(event_index));
}

/*
 * Write the dead letters of a batch, in one transaction.  A message whose
 * dead letter is already there (same stream sequence, subject and bytes:
 * the router wrote it on an earlier delivery and stopped before the term
 * reached NATS) gets no second one; it is terminated all the same.
 */
static void
WriteDeadLetters(const char *schema, RouterMsg *msgs, int n)
{
	bool		any = false;
	char	   *sql = psprintf("INSERT INTO %s.ac_dead_letters (subject, stream_seq, deliveries, reason, "
							   "event_id, event_type, raw) SELECT $1, $2, $3, $4, $5, $6, $7 "
							   "WHERE NOT EXISTS (SELECT 1 FROM %s.ac_dead_letters d "
							   "WHERE d.stream_seq = $2 AND d.subject = $1 AND d.raw = $7)",
							   quote_identifier(schema), quote_identifier(schema));
	Oid			types[7] = {TEXTOID, INT8OID, INT4OID, TEXTOID, TEXTOID, TEXTOID, BYTEAOID};
	MemoryContext caller = CurrentMemoryContext;

	for (int i = 0; i < n && !any; i++)
		any = msgs[i].poison;
	if (!any)
		return;
	AcWorkerBegin();
	for (int i = 0; i < n; i++)
	{
		RouterMsg  *m = &msgs[i];
		Datum		values[7];
		char		nulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};
		int			len = natsMsg_GetDataLength(m->msg);
		bytea	   *raw = palloc(VARHDRSZ + len);

		if (!m->poison)
			continue;
		SET_VARSIZE(raw, VARHDRSZ + len);
		memcpy(VARDATA(raw), natsMsg_GetData(m->msg), len);
		values[0] = CStringGetTextDatum(natsMsg_GetSubject(m->msg));
		values[1] = Int64GetDatum((int64) m->stream_seq);
		values[2] = Int32GetDatum((int32) m->delivered);
		values[3] = CStringGetTextDatum(m->error);
		values[4] = m->env.event_id ? CStringGetTextDatum(m->env.event_id) : (Datum) 0;
		nulls[4] = m->env.event_id ? ' ' : 'n';
		values[5] = m->env.type ? CStringGetTextDatum(m->env.type) : (Datum) 0;
		nulls[5] = m->env.type ? ' ' : 'n';
		values[6] = PointerGetDatum(raw);
		if (SPI_execute_with_args(sql, 7, types, values, nulls, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not write a dead letter");
		if (SPI_processed == 0)
		{
			elog(LOG, "activity_core router: dead letter for stream sequence " UINT64_FORMAT " already written by an earlier delivery; terminating it",
				 m->stream_seq);
			continue;
		}
		AcCount(AC_STAT_EVENTS_DEAD, 1);
		elog(LOG, "activity_core router: dead letter for stream sequence " UINT64_FORMAT ": %s",
			 m->stream_seq, m->error);
	}
	AcWorkerCommit();
	MemoryContextSwitchTo(caller);
}

/* The starts of a batch (heap memory: safe to read after a longjmp). */
typedef struct StartList
{
	StartItem **items;
	int			n;
	int			cap;
} StartList;

/* Parse one message; false (and poison with a reason) when it is poison. */
static bool
ParseMessage(RouterMsg *m)
{
	if (AcParseEnvelope(natsMsg_GetData(m->msg), natsMsg_GetDataLength(m->msg),
						ac_max_event_bytes, &m->env))
		return true;
	m->poison = true;
	m->error = pstrdup(m->env.reason);
	return false;
}

/* Prepare a start for every definition matching a parsed message. */
static void
RouteMessage(RouterMsg *m, StartList *sl)
{
	List	   *matches;
	ListCell   *lc;

	matches = AcMatchEvent(event_index, &m->env);
	if (matches == NIL)
		AcCount(AC_STAT_EVENTS_UNMATCHED, 1);
	foreach(lc, matches)
	{
		AcEventDef *d = (AcEventDef *) lfirst(lc);
		StartItem  *it = palloc0(sizeof(StartItem));
		char	   *wid = psprintf("activity-%s:%s", d->id, m->env.event_id);

		it->m = m;
		it->def = d;
		AcRequestSet(&it->req, "POST",
					 AcTemporalUrl("/workflows/%s", AcTemporalEscape(wid)),
					 AcStartWorkflowBody(d->id, d->name, d->workflow_type, d->task_queue,
										 d->input, m->env.text,
										 RequestIdFor(wid, m->stream_seq, m->delivered)));
		if (sl->n == sl->cap)
		{
			sl->cap = Max(sl->cap * 2, 64);
			sl->items = sl->items ? repalloc(sl->items, sizeof(StartItem *) * sl->cap) :
				palloc(sizeof(StartItem *) * sl->cap);
		}
		sl->items[sl->n++] = it;
		m->starts++;
	}
}

/*
 * Parse a message (sl NULL) or prepare its starts; an error makes it a
 * dead letter, not a jam.
 */
static void
TryRoute(RouterMsg *m, StartList *sl, MemoryContext cxt)
{
	PG_TRY();
	{
		if (sl == NULL)
			(void) ParseMessage(m);
		else
			RouteMessage(m, sl);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		/* a cancel or out of memory is the router's, not the message's */
		if (geterrcode() == ERRCODE_QUERY_CANCELED ||
			ERRCODE_TO_CATEGORY(geterrcode()) == ERRCODE_INSUFFICIENT_RESOURCES)
			PG_RE_THROW();
		edata = CopyErrorData();
		FlushErrorState();
		m->poison = true;
		m->error = psprintf("could not route: %s", edata->message);
		/* drop the starts already prepared for it */
		while (sl && sl->n > 0 && sl->items[sl->n - 1]->m == m)
			AcRequestFree(&sl->items[--sl->n]->req);
	}
	PG_END_TRY();
}

/* Order messages by event id, then stream sequence, then fetch order. */
static int
CompareByEvent(const void *a, const void *b)
{
	const RouterMsg *x = *(RouterMsg *const *) a;
	const RouterMsg *y = *(RouterMsg *const *) b;
	int			c = strcmp(x->env.event_id, y->env.event_id);

	if (c != 0)
		return c;
	if (x->stream_seq != y->stream_seq)
		return x->stream_seq < y->stream_seq ? -1 : 1;
	return x->index < y->index ? -1 : (x->index > y->index ? 1 : 0);
}

/*
 * Mark every later copy of an event id in the batch as a duplicate of the
 * first one delivered (lowest stream sequence): only that one routes, so
 * which payload wins does not depend on the order of concurrent starts.
 */
static void
MarkDuplicates(RouterMsg *msgs, int n)
{
	RouterMsg **parsed = palloc(sizeof(RouterMsg *) * Max(n, 1));
	int			np = 0;

	for (int i = 0; i < n; i++)
		if (!msgs[i].poison)
			parsed[np++] = &msgs[i];
	qsort(parsed, np, sizeof(RouterMsg *), CompareByEvent);
	for (int i = 1; i < np; i++)
	{
		RouterMsg  *first = parsed[i - 1]->dup_of ? parsed[i - 1]->dup_of : parsed[i - 1];

		if (strcmp(parsed[i]->env.event_id, first->env.event_id) == 0)
			parsed[i]->dup_of = first;
	}
	pfree(parsed);
}

/* A key for a message that came without JetStream metadata. */
static uint64
MessageKey(natsMsg *msg)
{
	const char *subject = natsMsg_GetSubject(msg);
	uint64		a = DatumGetUInt64(hash_bytes_extended((const unsigned char *) subject,
													   strlen(subject), 0));

	return DatumGetUInt64(hash_bytes_extended((const unsigned char *) natsMsg_GetData(msg),
											  natsMsg_GetDataLength(msg), a));
}

/*
 * Count a delivery of a message without metadata (NumDelivered unknown),
 * so that router_max_deliveries still ends its retries.  The table is
 * bounded: when full it starts afresh, which only allows more retries.
 */
static uint64
CountDelivery(natsMsg *msg)
{
	uint64		key = MessageKey(msg);
	DeliveryCount *e;
	bool		found;

	if (delivery_counts && hash_get_num_entries(delivery_counts) >= MAX_COUNTED)
	{
		hash_destroy(delivery_counts);
		delivery_counts = NULL;
	}
	if (delivery_counts == NULL)
	{
		HASHCTL		ctl;

		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = sizeof(uint64);
		ctl.entrysize = sizeof(DeliveryCount);
		ctl.hcxt = TopMemoryContext;
		delivery_counts = hash_create("activity_core router deliveries", 256, &ctl,
									  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	e = hash_search(delivery_counts, &key, HASH_ENTER, &found);
	if (!found)
		e->count = 0;
	return ++e->count;
}

/* Forget the deliveries counted for a message that is done. */
static void
ForgetDelivery(RouterMsg *m)
{
	uint64		key;

	if (!m->counted || delivery_counts == NULL)
		return;
	key = MessageKey(m->msg);
	hash_search(delivery_counts, &key, HASH_REMOVE, NULL);
}

/*
 * Send the starts of a batch, keeping the batch alive with in-progress
 * acks while they run.
 */
static void
RunStarts(StartList *sl, natsMsgList *list, TimestampTz fetched_at)
{
	BatchProgress *progress = palloc0(sizeof(BatchProgress));

	progress->list = list;
	progress->last = fetched_at;
	AcTemporalSetTick(KeepBatchAlive, progress);
	PG_TRY();
	{
		AcTemporalRun((AcRequest **) sl->items, sl->n, ac_router_concurrency,
					  StartDone, NULL);
	}
	PG_FINALLY();
	{
		AcTemporalSetTick(NULL, NULL);
	}
	PG_END_TRY();
}

/* Route one fetched batch (fetched at fetched_at). */
static void
ProcessBatch(const char *schema, natsMsgList *list, TimestampTz fetched_at)
{
	int			n = list->Count;
	RouterMsg  *msgs = palloc0(sizeof(RouterMsg) * n);
	StartList  *sl = palloc0(sizeof(StartList));
	MemoryContext cxt = CurrentMemoryContext;

	AcCount(AC_STAT_EVENTS_RECEIVED, n);

	/* 1. parse every message (an error makes it a dead letter, not a jam) */
	for (int i = 0; i < n; i++)
	{
		RouterMsg  *m = &msgs[i];
		jsMsgMetaData *md = NULL;

		m->msg = list->Msgs[i];
		m->index = i;
		if (natsMsg_GetMetaData(&md, m->msg) == NATS_OK)
		{
			m->stream_seq = md->Sequence.Stream;
			m->delivered = md->NumDelivered;
			m->stored_ns = md->Timestamp;
			jsMsgMetaData_Destroy(md);
		}
		if (m->delivered == 0)
		{
			/* no delivery count from JetStream: keep our own */
			m->counted = true;
			m->delivered = CountDelivery(m->msg);
		}
		TryRoute(m, NULL, cxt);
	}

	/* 2. one event id, one route: the first delivered copy */
	MarkDuplicates(msgs, n);

	/* 3. match and prepare the starts */
	for (int i = 0; i < n; i++)
	{
		RouterMsg  *m = &msgs[i];

		if (m->poison || m->dup_of)
			continue;
		TryRoute(m, sl, cxt);
	}

	if (sl->n > 0)
		RunStarts(sl, list, fetched_at);
	for (int i = 0; i < sl->n; i++)
		AcRequestFree(&sl->items[i]->req);

	/* 4. decide each message: dead letter, retry later, or done */
	for (int i = 0; i < n; i++)
	{
		RouterMsg  *m = &msgs[i];

		if (m->poison || m->dup_of)
			continue;
		if (m->failed_permanent > 0)
		{
			m->poison = true;
			m->error = psprintf("Temporal refused: %s", m->error);
		}
		else if (m->failed_transient > 0 &&
				 m->delivered >= (uint64) ac_router_max_deliveries)
		{
			m->poison = true;
			m->error = psprintf("gave up after " UINT64_FORMAT " deliveries: %s",
								m->delivered, m->error);
		}
	}
	WriteDeadLetters(schema, msgs, n);
	for (int i = 0; i < n; i++)
	{
		RouterMsg  *m = &msgs[i];
		RouterMsg  *first = m->dup_of;
		bool		retry;

		if (m->poison)
		{
			natsMsg_Term(m->msg, NULL);
			ForgetDelivery(m);
			continue;
		}
		/* a duplicate follows the copy that routed: done only when it is */
		retry = first ? (first->poison || first->failed_transient > 0) :
			m->failed_transient > 0;
		if (retry)
		{
			/* delivered is at least 1 here: the shift is 0 to 6 */
			int			shift = (int) Min(Max(m->delivered, 1) - 1, 6);
			int64		delay = Min(INT64CONST(1000) << shift, 60000);

			natsMsg_NakWithDelay(m->msg, delay, NULL);
			AcCount(AC_STAT_EVENTS_RETRIED, 1);
			elog(LOG, "activity_core router: event %s retried in " INT64_FORMAT " ms (delivery " UINT64_FORMAT "): %s",
				 m->env.event_id, delay, m->delivered,
				 first ? "the first copy in its batch was not done" : m->error);
		}
		else
		{
			natsMsg_Ack(m->msg, NULL);
			ForgetDelivery(m);
			AcCount(AC_STAT_EVENTS_ACKED, 1);
		}
	}
}

/* Connect to NATS, ensure the stream and consumer, and subscribe. */
static bool
RouterConnect(char **error)
{
	AcNats	   *n = AcNatsConnect("activity_core router", error);

	if (n == NULL)
		return false;
	if (!AcNatsEnsureStream(n, false, error) || !AcNatsEnsureConsumer(n, error) ||
		!AcNatsSubscribe(n, error))
	{
		AcNatsClose(n);
		return false;
	}
	consumer_ack_wait_ms = ac_router_ack_wait_ms;
	nats = MemoryContextAlloc(TopMemoryContext, sizeof(AcNats));
	*nats = *n;
	AcSetRouterState(AC_ROUTER_CONNECTED, NULL);
	elog(LOG, "activity_core router: consuming %s/%s from %s",
		 ac_stream_name, ac_consumer_name, AcRedactUrl(ac_nats_url));
	return true;
}

/* Main entry point of the router worker. */
void
ac_router_main(Datum arg)
{
	MemoryContext batch_cxt;
	char	   *volatile schema = NULL;
	volatile int failures = 0;
	char	   *volatile last_error = NULL;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(ac_database, NULL, 0);
	pgstat_report_appname("activity_core router");
	before_shmem_exit(RouterExit, (Datum) 0);
	CacheRegisterRelcacheCallback(DefinitionsInvalidated, (Datum) 0);

	/*
	 * The first block is kept across resets: a batch of ordinary events fits
	 * in it, so routing one does not return memory to the C library and
	 * fault it in again for the next.
	 */
	batch_cxt = AllocSetContextCreate(TopMemoryContext, "activity_core router batch",
									  BATCH_KEPT_BYTES, ALLOCSET_DEFAULT_INITSIZE,
									  ALLOCSET_DEFAULT_MAXSIZE);
	for (;;)
	{
		volatile long sleep_ms = 0;

		CHECK_FOR_INTERRUPTS();

		/*
		 * A busy loop does not wait on the latch, which is where a dead
		 * postmaster is noticed otherwise: without this check a worker
		 * orphaned by a killed postmaster would go on starting workflows
		 * and publishing.
		 */
		if (!PostmasterIsAlive())
			proc_exit(1);
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			/* another URL, credentials, TLS files, stream or consumer */
			if (nats && AcNatsSettingsChanged(nats))
			{
				elog(LOG, "activity_core router: the NATS settings changed; connecting again");
				AcNatsClose(nats);
				pfree(nats);
				nats = NULL;
			}
			failures = 0;
		}
		MemoryContextSwitchTo(batch_cxt);
		PG_TRY();
		{
			char	   *error = NULL;

			if (schema == NULL)
			{
				schema = AcWorkerSchema();
				/* a new schema may hold other definitions */
				index_valid = false;
			}
			if (schema == NULL)
				sleep_ms = 5000;
			else if (nats == NULL && !RouterConnect(&error))
			{
				failures++;
				sleep_ms = Min(1000 << Min(failures, 5), 30000);
				AcSetRouterState(AC_ROUTER_FAILING, error);
				if (last_error == NULL || strcmp(last_error, error) != 0 || failures % 10 == 1)
					ereport(WARNING,
							(errmsg("activity_core router: NATS not ready, retrying in %ld ms: %s",
									sleep_ms, error)));
				if (last_error)
					pfree(last_error);
				last_error = MemoryContextStrdup(TopMemoryContext, error);
			}
			else
			{
				jsErrCode	jerr = 0;
				natsStatus	s;

				failures = 0;
				/* a reload changed activity_core.router_ack_wait */
				if (consumer_ack_wait_ms != ac_router_ack_wait_ms)
				{
					if (AcNatsEnsureConsumer(nats, &error))
						consumer_ack_wait_ms = ac_router_ack_wait_ms;
					else
					{
						ereport(WARNING,
								(errmsg("activity_core router: could not change the ack wait: %s",
										error)));
						consumer_ack_wait_ms = ac_router_ack_wait_ms;
					}
				}
				RefreshIndex(schema);
				s = natsSubscription_Fetch(&fetched, nats->sub, ac_router_batch_size, 1000, &jerr);
				if ((s == NATS_OK || s == NATS_TIMEOUT) &&
					natsConnection_Status(nats->nc) == NATS_CONN_STATUS_CONNECTED)
					AcSetRouterState(AC_ROUTER_CONNECTED, NULL);
				else if (s == NATS_TIMEOUT)
					AcSetRouterState(AC_ROUTER_FAILING, "the connection to NATS is lost; reconnecting");
				/* the consumer's lag for /metrics, at most once a second */
				AcNatsMeasureConsumer(nats);
				if (s == NATS_OK)
				{
					/*
					 * A definition committed while we waited must apply to
					 * these messages: take in the invalidations again.
					 */
					TimestampTz fetched_at = GetCurrentTimestamp();

					RefreshIndex(schema);
					pgstat_report_activity(STATE_RUNNING, "routing events");
					ProcessBatch(schema, &fetched, fetched_at);
					DropFetched();
					pgstat_report_activity(STATE_IDLE, NULL);
				}
				else if (s != NATS_TIMEOUT)
				{
					char	   *why = AcNatsError(s);

					DropFetched();
					ereport(WARNING,
							(errmsg("activity_core router: fetch failed: %s", why)));
					AcSetRouterState(AC_ROUTER_FAILING, why);

					/*
					 * A closed connection, or a consumer that is gone (the
					 * server says "Consumer Deleted" once, when the consumer
					 * or its stream is deleted, and the subscription never
					 * delivers again; a fetch that starts after the deletion
					 * hears "stream not found" instead): connect afresh,
					 * which creates the stream and the consumer when they
					 * are missing.
					 */
					if (s == NATS_CONNECTION_CLOSED || s == NATS_NOT_FOUND ||
						jerr == JSStreamNotFoundErr || jerr == JSConsumerNotFoundErr ||
						strstr(why, "Consumer Deleted") != NULL ||
						strstr(why, "stream not found") != NULL ||
						natsConnection_Status(nats->nc) == NATS_CONN_STATUS_CLOSED)
					{
						AcNatsClose(nats);
						pfree(nats);
						nats = NULL;
					}
					sleep_ms = 1000;
				}
			}
		}
		PG_CATCH();
		{
			AcWorkerRecover(batch_cxt);
			/* the batch comes back in a second; free our copy */
			NakFetched();
			DropFetched();
			/* the extension may have moved (dropped, created elsewhere): look again */
			if (schema)
				pfree(schema);
			schema = NULL;
			index_valid = false;
			sleep_ms = 1000;
		}
		PG_END_TRY();
		MemoryContextSwitchTo(TopMemoryContext);
		MemoryContextReset(batch_cxt);
		if (sleep_ms > 0)
		{
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 sleep_ms, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
		}
	}
}
