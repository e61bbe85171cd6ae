/*
 * bare_consumer: the baseline of the router's intake benchmark.  A plain
 * nats.c pull consumer that only fetches and acks: it drains N messages
 * from its own durable consumer on the stream and prints the rate.
 *
 *   bare_consumer <nats url> <stream> <durable> <filter subject> <count> <batch> [simple]
 *
 * By default it is pipelined, the best a plain consumer does: one thread
 * fetches the next batch while the main thread acks the current one (acks
 * are fire-and-forget, written by the connection's flusher), so a fetch's
 * round trip is never waited for while there is work.  "simple" fetches
 * and acks strictly one after the other, as the first version did.
 */
#include <nats/nats.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define QUEUE 4

/* Batches fetched and not yet acked, handed from the fetcher to main. */
typedef struct Queue
{
	pthread_mutex_t mu;
	pthread_cond_t cv;
	natsMsgList lists[QUEUE];
	int			head;
	int			count;
	int			failed;
	int			stop;
} Queue;

static natsSubscription *sub;
static int	batch;
static Queue queue = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER};

/* Seconds from a monotonic clock. */
static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The fetcher thread: keep up to QUEUE batches ready for main. */
static void *
fetcher(void *arg)
{
	for (;;)
	{
		natsMsgList list = {0};
		jsErrCode	jerr = 0;
		natsStatus	s;

		pthread_mutex_lock(&queue.mu);
		while (queue.count == QUEUE && !queue.stop)
			pthread_cond_wait(&queue.cv, &queue.mu);
		if (queue.stop)
		{
			pthread_mutex_unlock(&queue.mu);
			return NULL;
		}
		pthread_mutex_unlock(&queue.mu);
		s = natsSubscription_Fetch(&list, sub, batch, 1000, &jerr);
		if (s == NATS_TIMEOUT)
			continue;
		pthread_mutex_lock(&queue.mu);
		if (s != NATS_OK)
			queue.failed = s;
		else
		{
			queue.lists[(queue.head + queue.count) % QUEUE] = list;
			queue.count++;
		}
		pthread_cond_broadcast(&queue.cv);
		pthread_mutex_unlock(&queue.mu);
		if (s != NATS_OK)
			return NULL;
	}
}

/* Drain the durable and print messages per second. */
int
main(int argc, char **argv)
{
	natsConnection *nc = NULL;
	jsCtx	   *js = NULL;
	jsSubOptions so;
	jsErrCode	jerr = 0;
	long		want;
	long		got = 0;
	double		t0 = 0;
	int			simple;
	pthread_t	th;

	if (argc != 7 && argc != 8)
	{
		fprintf(stderr, "usage: %s url stream durable filter count batch [simple]\n", argv[0]);
		return 2;
	}
	want = atol(argv[5]);
	batch = atoi(argv[6]);
	simple = argc == 8 && strcmp(argv[7], "simple") == 0;
	if (natsConnection_ConnectTo(&nc, argv[1]) != NATS_OK ||
		natsConnection_JetStream(&js, nc, NULL) != NATS_OK)
	{
		fprintf(stderr, "connect failed: %s\n", nats_GetLastError(NULL));
		return 1;
	}
	jsSubOptions_Init(&so);
	so.Stream = argv[2];
	so.Consumer = argv[3];
	if (js_PullSubscribe(&sub, js, argv[4], NULL, NULL, &so, &jerr) != NATS_OK)
	{
		fprintf(stderr, "subscribe failed: %s\n", nats_GetLastError(NULL));
		return 1;
	}
	if (simple)
	{
		while (got < want)
		{
			natsMsgList list = {0};
			natsStatus	s = natsSubscription_Fetch(&list, sub, batch, 1000, &jerr);

			if (s == NATS_TIMEOUT)
				continue;
			if (s != NATS_OK)
			{
				fprintf(stderr, "fetch failed: %s\n", natsStatus_GetText(s));
				return 1;
			}
			if (got == 0)
				t0 = now_s();
			for (int i = 0; i < list.Count; i++)
				natsMsg_Ack(list.Msgs[i], NULL);
			got += list.Count;
			natsMsgList_Destroy(&list);
		}
	}
	else
	{
		pthread_create(&th, NULL, fetcher, NULL);
		while (got < want)
		{
			natsMsgList list;

			pthread_mutex_lock(&queue.mu);
			while (queue.count == 0 && !queue.failed)
				pthread_cond_wait(&queue.cv, &queue.mu);
			if (queue.count == 0)
			{
				fprintf(stderr, "fetch failed: %s\n", natsStatus_GetText(queue.failed));
				return 1;
			}
			list = queue.lists[queue.head];
			queue.head = (queue.head + 1) % QUEUE;
			queue.count--;
			pthread_cond_broadcast(&queue.cv);
			pthread_mutex_unlock(&queue.mu);
			if (got == 0)
				t0 = now_s();
			for (int i = 0; i < list.Count; i++)
				natsMsg_Ack(list.Msgs[i], NULL);
			got += list.Count;
			natsMsgList_Destroy(&list);
		}
		pthread_mutex_lock(&queue.mu);
		queue.stop = 1;
		pthread_cond_broadcast(&queue.cv);
		pthread_mutex_unlock(&queue.mu);
		pthread_join(th, NULL);
		while (queue.count > 0)
		{
			natsMsgList_Destroy(&queue.lists[queue.head]);
			queue.head = (queue.head + 1) % QUEUE;
			queue.count--;
		}
	}
	natsConnection_Flush(nc);
	printf("%ld %.3f\n", got, now_s() - t0);
	natsSubscription_Destroy(sub);
	jsCtx_Destroy(js);
	natsConnection_Destroy(nc);
	nats_Close();
	return 0;
}
