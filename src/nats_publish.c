/*-------------------------------------------------------------------------
 *
 * nats_publish.c
 *	  Publish a batch of messages to JetStream asynchronously, with a
 *	  window of acknowledgements in flight, and report each one's outcome.
 *
 * The dispatcher used to wait for each publish's acknowledgement before it
 * sent the next, so its rate was one round trip per message.  Here every
 * message of a batch is created first, then handed to js_PublishMsgAsync()
 * (which keeps at most `window` unacknowledged), and
 * js_PublishAsyncComplete() waits, bounded, for the rest.  The library
 * answers each message on its own thread through AckHandler: that
 * callback only finds the message's slot (a binary search over an array
 * made before the first send), writes its outcome there and destroys the
 * message; it never calls PostgreSQL code.  A mutex and an `active` flag
 * keep a late answer from writing into a batch that is over.  Messages
 * still unanswered when the wait ends are taken back
 * (js_PublishAsyncGetPendingList) and reported as not acknowledged.
 *
 * Signals stay blocked from the first library call to the last (the
 * library starts its reply thread on the first asynchronous publish);
 * every wait in between is bounded (the stall wait and the completion
 * wait are 1 s each), and nothing in between allocates with palloc or
 * reports with elog.
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

/* how long a send waits for room in the window, and the batch for its acks */
#define STALL_WAIT_MS 1000
#define COMPLETE_WAIT_MS 1000

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

/*
 * Publish items[0..count) with their Msg-Ids, at most `window` of them
 * unacknowledged at a time.  Every item gets sent/done/status; res says
 * where sending stopped and whether the connection is closed.  Returns
 * false when not even the context could be made (nothing sent).  Call
 * with signals unblocked: this blocks them itself.
 */
bool
AcNatsPublishBatch(AcNats *n, AcPubItem *items, int count, int window,
				   AcPubBatchResult *res)
{
	PubSlot    *slots = palloc0(sizeof(PubSlot) * Max(count, 1));
	natsMsg   **msgs = palloc0(sizeof(natsMsg *) * Max(count, 1));
	sigset_t	old;
	natsStatus	s;
	natsStatus	create_status = NATS_OK;
	int			made = 0;
	int			sent = 0;
	int			taken_back = 0;

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

	if (sent > 0)
	{
		jsPubOptions po;
		natsMsgList pending = {0};

		jsPubOptions_Init(&po);
		po.MaxWait = COMPLETE_WAIT_MS;
		s = js_PublishAsyncComplete(n->pub_js, &po);
		if (s != NATS_OK && js_PublishAsyncGetPendingList(&pending, n->pub_js) == NATS_OK)
		{
			pthread_mutex_lock(&pub_state.mutex);
			for (int j = 0; j < pending.Count; j++)
			{
				PubSlot    *slot = FindSlot(pending.Msgs[j]);

				if (slot != NULL && !items[slot->i].done)
				{
					items[slot->i].done = true;
					items[slot->i].status = NATS_TIMEOUT;
					strlcpy(items[slot->i].error, "no acknowledgement from JetStream within 1 s",
							sizeof(items[slot->i].error));
					taken_back++;
				}
			}
			pthread_mutex_unlock(&pub_state.mutex);
			natsMsgList_Destroy(&pending);
		}
		/* an answer the library took off its list may still be on its way */
		for (int waited = 0; waited < 1000; waited++)
		{
			bool		all;

			pthread_mutex_lock(&pub_state.mutex);
			all = pub_state.answered + taken_back >= sent;
			pthread_mutex_unlock(&pub_state.mutex);
			if (all)
				break;
			pg_usleep(1000L);
		}
	}
	pthread_mutex_lock(&pub_state.mutex);
	pub_state.active = false;
	pub_state.items = NULL;
	pub_state.slots = NULL;
	pub_state.nslots = 0;
	pthread_mutex_unlock(&pub_state.mutex);

	res->closed = natsConnection_IsClosed(n->nc);
	if (res->closed)
	{
		const char *t = NULL;

		res->close_status = natsConnection_GetLastError(n->nc, &t);
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
			strlcpy(items[i].error, "no acknowledgement from JetStream within 1 s",
					sizeof(items[i].error));
		}
	pfree(slots);
	pfree(msgs);
	return true;
}
