/*
 * bare_consumer: the baseline of the router's intake benchmark.  A plain
 * nats.c pull consumer that only fetches and acks: it drains N messages
 * from its own durable consumer on the stream and prints the rate.
 *
 *   bare_consumer <nats url> <stream> <durable> <filter subject> <count> <batch>
 */
#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* Seconds from a monotonic clock. */
static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Drain the durable and print messages per second. */
int
main(int argc, char **argv)
{
	natsConnection *nc = NULL;
	jsCtx	   *js = NULL;
	natsSubscription *sub = NULL;
	jsSubOptions so;
	jsErrCode	jerr = 0;
	long		want;
	int			batch;
	long		got = 0;
	double		t0 = 0;

	if (argc != 7)
	{
		fprintf(stderr, "usage: %s url stream durable filter count batch\n", argv[0]);
		return 2;
	}
	want = atol(argv[5]);
	batch = atoi(argv[6]);
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
	natsConnection_Flush(nc);
	printf("%ld %.3f\n", got, now_s() - t0);
	natsSubscription_Destroy(sub);
	jsCtx_Destroy(js);
	natsConnection_Destroy(nc);
	nats_Close();
	return 0;
}
