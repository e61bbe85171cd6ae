/*
 * async_publisher: the baseline of the outbox drain benchmark.  A plain
 * nats.c JetStream publisher that sends N envelopes with js_PublishAsync,
 * each with its Msg-Id, at most `window` acknowledgements pending, waits
 * for the last acknowledgement and prints the rate.  The envelopes have the
 * shape ac_publish() writes: type, source, payload, event_id, occurred_at.
 *
 *   async_publisher <nats url> <subject> <type> <payload json> <id prefix> <count> <window>
 */
#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static long failed = 0;

/* Seconds from a monotonic clock. */
static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Count the messages JetStream refused. */
static void
on_error(jsCtx *js, jsPubAckErr *pae, void *closure)
{
	failed++;
}

/* Publish the envelopes and print count, seconds and failures. */
int
main(int argc, char **argv)
{
	natsConnection *nc = NULL;
	jsCtx	   *js = NULL;
	jsOptions	jo;
	jsPubOptions po;
	long		count;
	double		t0;
	char		buf[65536];
	char		id[256];

	if (argc != 8)
	{
		fprintf(stderr, "usage: %s url subject type payload id-prefix count window\n", argv[0]);
		return 2;
	}
	count = atol(argv[6]);
	jsOptions_Init(&jo);
	jo.PublishAsync.MaxPending = atoi(argv[7]);
	jo.PublishAsync.ErrHandler = on_error;
	/* on a busy machine the window can stay full for a while: wait, do not fail */
	jo.PublishAsync.StallWait = 10000;
	if (natsConnection_ConnectTo(&nc, argv[1]) != NATS_OK ||
		natsConnection_JetStream(&js, nc, &jo) != NATS_OK)
	{
		fprintf(stderr, "connect failed: %s\n", nats_GetLastError(NULL));
		return 1;
	}
	t0 = now_s();
	for (long i = 0; i < count; i++)
	{
		int			len;
		natsStatus	s;

		snprintf(id, sizeof(id), "%s-%ld", argv[5], i);
		len = snprintf(buf, sizeof(buf),
					   "{\"type\": \"%s\", \"source\": \"activity_core\", \"payload\": %s, "
					   "\"event_id\": \"%s\", \"occurred_at\": \"2026-12-01T00:00:00.000000+00:00\"}",
					   argv[3], argv[4], id);
		jsPubOptions_Init(&po);
		po.MsgId = id;
		while ((s = js_PublishAsync(js, argv[2], buf, len, &po)) == NATS_TIMEOUT)
			;
		if (s != NATS_OK)
		{
			fprintf(stderr, "publish failed: %s\n", nats_GetLastError(NULL));
			return 1;
		}
	}
	jsPubOptions_Init(&po);
	po.MaxWait = 60000;
	if (js_PublishAsyncComplete(js, &po) != NATS_OK)
	{
		fprintf(stderr, "not all acknowledged: %s\n", nats_GetLastError(NULL));
		return 1;
	}
	printf("%ld %.3f %ld\n", count, now_s() - t0, failed);
	jsCtx_Destroy(js);
	natsConnection_Destroy(nc);
	nats_Close();
	return 0;
}
