/*-------------------------------------------------------------------------
 *
 * nats_publish.c
 *	  Publish a batch of messages to JetStream asynchronously, with a
 *	  window of acknowledgements in flight, and report each one's outcome.
 *
 * AcNatsPublishStart() creates every message of a batch, then hands them
 * to js_PublishMsgAsync() (which keeps at most `window` unacknowledged)
 * and returns; the caller may do its database work while the answers come
 * back, and AcNatsPublishFinish() waits, bounded, for the rest.  The
 * library answers each message on its own thread through AckHandler: that
 * callback only finds the message's slot (a binary search over an array
 * made before the first send), writes its outcome there and destroys the
 * message; it never calls PostgreSQL code.  A mutex and an `active` flag
 * keep a late answer from writing into a batch that is over, or that
 * AcNatsPublishAbandon() gave up (an error between start and finish: the
 * caller's memory goes, the answers no longer matter).  Messages still
 * unanswered when the wait ends are taken back
 * (js_PublishAsyncGetPendingList) and reported as not acknowledged.  One
 * batch is in flight at a time.
 *
 * Signals are blocked around every library call (the library starts its
 * reply thread on the first asynchronous publish, which must not take
 * PostgreSQL's signals); every wait is bounded: the stall wait is 1 s,
 * and the completion wait goes on in 1 s slices only while answers keep
 * coming, with interrupts checked between slices.  Nothing done with
 * signals blocked allocates with palloc or reports with elog.
 *
 * IDENTIFICATION
 *	  src/nats_publish.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <pthread.h>

#include "miscadmin.h"

#include "nats_client.h"

/*
 * how long a send waits for room in the window, and one slice of the
 * wait for a batch's acknowledgements
 */
#define STALL_WAIT_MS 1000
#define COMPLETE_WAIT_MS 1000
/* the wait for a batch's acknowledgements ends after this many slices */
#define COMPLETE_MAX_SLICES 30

/* A message of the batch and the slot of its outcome. */
typedef struct PubSlot
{
	natsMsg    *msg;
	int			i;
} PubSlot;

/* The batch being published: what AckHandler writes into. */
typedef struct PubState
{
	pthread_mutex_t mutex;
	bool		active;
	AcPubItem  *items;
	PubSlot    *slots;			/* sorted by msg */
	int			nslots;
	int			answered;
} PubState;

static PubState pub_state = {PTHREAD_MUTEX_INITIALIZER, false, NULL, NULL, 0, 0};

/* Order slots by message address. */
static int
CompareSlots(const void *a, const void *b)
{
	uintptr_t	x = (uintptr_t) ((const PubSlot *) a)->msg;
	uintptr_t	y = (uintptr_t) ((const PubSlot *) b)->msg;

	return x < y ? -1 : x > y ? 1 : 0;
}

/* The slot of a message of the current batch, or NULL (no allocation). */
static PubSlot *
FindSlot(natsMsg *msg)
{
	PubSlot		key;

	key.msg = msg;
	return bsearch(&key, pub_state.slots, pub_state.nslots, sizeof(PubSlot), CompareSlots);
}

/*
 * The library's answer for one message, on its thread: record it in the
 * message's slot and destroy the message.  Only plain C here.
 */
static void
AckHandler(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
	PubState   *st = (PubState *) closure;

	pthread_mutex_lock(&st->mutex);
	if (st->active)
	{
		PubSlot    *slot = FindSlot(msg);

		if (slot != NULL && !st->items[slot->i].done)
		{
			AcPubItem  *it = &st->items[slot->i];

			it->done = true;
			if (pae == NULL)
				it->status = NATS_OK;
			else
			{
				it->status = pae->Err == NATS_OK ? NATS_ERR : pae->Err;
				it->jerr = pae->ErrCode;
				strlcpy(it->error, pae->ErrText ? pae->ErrText : natsStatus_GetText(it->status),
						sizeof(it->error));
			}
			st->answered++;
		}
	}
	pthread_mutex_unlock(&st->mutex);
	natsMsg_Destroy(msg);
}

/* The asynchronous publishing context on n's connection; NATS_OK when ready. */
static natsStatus
EnsurePubContext(AcNats *n, int window)
{
	jsOptions	jo;

	if (n->pub_js)
		return NATS_OK;
	jsOptions_Init(&jo);
	jo.Wait = 1000;
	jo.PublishAsync.MaxPending = window;
	jo.PublishAsync.StallWait = STALL_WAIT_MS;
	jo.PublishAsync.AckHandler = AckHandler;
	jo.PublishAsync.AckHandlerClosure = &pub_state;
	return natsConnection_JetStream(&n->pub_js, n->nc, &jo);
}

/* Copy the thread's last nats.c error text, without its "(file:line): " prefix. */
static void
LastError(natsStatus s, char *buf, size_t size)
{
	const char *last = nats_GetLastError(NULL);

	if (last && last[0] == '(' && strstr(last, "): ") != NULL)
		last = strstr(last, "): ") + 3;
	strlcpy(buf, last && last[0] ? last : natsStatus_GetText(s), size);
}

/* Make the batch over: no answer writes into it from now on. */
static void
Deactivate(void)
{
	pthread_mutex_lock(&pub_state.mutex);
	pub_state.active = false;
	pub_state.items = NULL;
	pub_state.slots = NULL;
	pub_state.nslots = 0;
	pthread_mutex_unlock(&pub_state.mutex);
}

/*
 * Give up the batch in flight, if any, on an error path: its answers are
 * dropped when they come, and the caller's memory may go.  Its rows were
 * not recorded, so they go again (their Msg-Ids make that harmless).
 */
void
AcNatsPublishAbandon(void)
{
	Deactivate();
}

/* How many of the batch's messages were answered so far. */
static int
Answered(void)
{
	int			a;

	pthread_mutex_lock(&pub_state.mutex);
	a = pub_state.answered;
	pthread_mutex_unlock(&pub_state.mutex);
	return a;
}

/*
 * Hand items[0..count) to the library with their Msg-Ids, at most
 * `window` of them unacknowledged at a time, and return without waiting
 * for the last answers: b is the batch in flight, for
 * AcNatsPublishFinish().  b->res says where sending stopped.  Returns
 * false when not even the context could be made (nothing sent, nothing
 * to finish).  Call with signals unblocked: this blocks them itself.
 */
bool
AcNatsPublishStart(AcNats *n, AcPubBatch *b, AcPubItem *items, int count, int window)
{
	PubSlot    *slots = palloc0(sizeof(PubSlot) * Max(count, 1));
	natsMsg   **msgs = palloc0(sizeof(natsMsg *) * Max(count, 1));
	AcPubBatchResult *res = &b->res;
	sigset_t	old;
	natsStatus	s;
	natsStatus	create_status = NATS_OK;
	int			made = 0;
	int			sent = 0;

	b->n = n;
	b->items = items;
	b->sent = 0;
	b->slots = slots;
	memset(res, 0, sizeof(*res));
	res->first_unsent = count;

	/* from here to AcNatsRestoreSignals: nats.c and plain C only */
	AcNatsBlockSignals(&old);
	s = EnsurePubContext(n, window);
	if (s != NATS_OK)
	{
		res->first_unsent = 0;
		res->send_status = s;
		LastError(s, res->send_error, sizeof(res->send_error));
		AcNatsRestoreSignals(&old);
		pfree(msgs);
		return false;
	}
	for (made = 0; made < count; made++)
	{
		create_status = natsMsg_Create(&msgs[made], items[made].subject, NULL,
									   items[made].data, items[made].len);
		if (create_status != NATS_OK)
			break;
		slots[made].msg = msgs[made];
		slots[made].i = made;
	}
	qsort(slots, made, sizeof(PubSlot), CompareSlots);
	pthread_mutex_lock(&pub_state.mutex);
	pub_state.items = items;
	pub_state.slots = slots;
	pub_state.nslots = made;
	pub_state.answered = 0;
	pub_state.active = true;
	pthread_mutex_unlock(&pub_state.mutex);

	for (sent = 0; sent < made; sent++)
	{
		jsPubOptions po;
		natsMsg    *m = msgs[sent];

		jsPubOptions_Init(&po);
		po.MsgId = items[sent].msg_id;
		items[sent].sent = true;
		s = js_PublishMsgAsync(n->pub_js, &m, &po);
		if (s != NATS_OK)
		{
			/* still ours: the library did not take it */
			items[sent].sent = false;
			natsMsg_Destroy(m);
			break;
		}
	}
	if (sent == made && made < count)
		s = create_status;
	if (sent < count)
	{
		res->first_unsent = sent;
		res->send_status = s;
		LastError(s, res->send_error, sizeof(res->send_error));
	}
	/* the messages made but never handed over are still ours */
	for (int i = sent + 1; i < made; i++)
		natsMsg_Destroy(msgs[i]);
	AcNatsRestoreSignals(&old);
	b->sent = sent;
	pfree(msgs);
	return true;
}

/*
 * Wait for the answers of the batch AcNatsPublishStart() handed over, in
 * slices of at most 1 s, for as long as answers keep coming (at most
 * COMPLETE_MAX_SLICES), then report every item: done and its status, or
 * not acknowledged.  b->res also says whether the connection is closed.
 */
void
AcNatsPublishFinish(AcPubBatch *b)
{
	AcPubItem  *items = b->items;
	AcPubBatchResult *res = &b->res;
	sigset_t	old;
	natsStatus	s = NATS_OK;
	int			sent = b->sent;
	int			taken_back = 0;

	if (sent > 0)
	{
		int			before = -1;
		jsPubOptions po;

		for (int slice = 0; slice < COMPLETE_MAX_SLICES; slice++)
		{
			int			now;

			AcNatsBlockSignals(&old);
			jsPubOptions_Init(&po);
			po.MaxWait = COMPLETE_WAIT_MS;
			s = js_PublishAsyncComplete(b->n->pub_js, &po);
			AcNatsRestoreSignals(&old);
			now = Answered();
			if (s == NATS_OK || now == before || natsConnection_IsClosed(b->n->nc))
				break;
			before = now;
			if (InterruptPending && (ProcDiePending || QueryCancelPending))
			{
				/* a shutdown or a cancel: the rows go again */
				Deactivate();
			}
			CHECK_FOR_INTERRUPTS();
		}
	}

	AcNatsBlockSignals(&old);
	if (sent > 0 && s != NATS_OK)
	{
		natsMsgList pending = {0};

		if (js_PublishAsyncGetPendingList(&pending, b->n->pub_js) == NATS_OK)
		{
			pthread_mutex_lock(&pub_state.mutex);
			for (int j = 0; j < pending.Count; j++)
			{
				PubSlot    *slot = FindSlot(pending.Msgs[j]);

				if (slot != NULL && !items[slot->i].done)
				{
					items[slot->i].done = true;
					items[slot->i].status = NATS_TIMEOUT;
					strlcpy(items[slot->i].error, "no acknowledgement from JetStream in time",
							sizeof(items[slot->i].error));
					taken_back++;
				}
			}
			pthread_mutex_unlock(&pub_state.mutex);
			natsMsgList_Destroy(&pending);
		}
	}
	/* an answer the library took off its list may still be on its way */
	for (int waited = 0; sent > 0 && waited < 1000; waited++)
	{
		if (Answered() + taken_back >= sent)
			break;
		pg_usleep(1000L);
	}
	Deactivate();

	res->closed = natsConnection_IsClosed(b->n->nc);
	if (res->closed)
	{
		const char *t = NULL;

		res->close_status = natsConnection_GetLastError(b->n->nc, &t);
		if (t)
			strlcpy(res->close_error, t, sizeof(res->close_error));
	}
	AcNatsRestoreSignals(&old);

	/* unanswered after all: not acknowledged */
	for (int i = 0; i < sent; i++)
		if (!items[i].done)
		{
			items[i].done = true;
			items[i].status = NATS_TIMEOUT;
			strlcpy(items[i].error, "no acknowledgement from JetStream in time",
					sizeof(items[i].error));
		}
	pfree(b->slots);
	b->slots = NULL;
}
