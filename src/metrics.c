/*-------------------------------------------------------------------------
 *
 * metrics.c
 *	  The metrics background worker: Prometheus text on GET /metrics.
 *
 * A worker of its own, with shared memory but no database connection, so
 * that scrapes are answered while the dispatcher and the router are busy
 * talking to Temporal.  It is single-threaded: the listening socket and the
 * worker's latch sit in one WaitEventSet; each connection is read (one
 * request, at most 8 kB, within 2 s in all), answered from shared memory
 * only (counters, histograms and gauges, see observe.c: no SQL, no lock)
 * and closed.  It binds to activity_core.metrics_listen (host:port, default
 * 127.0.0.1:9090: loopback unless an operator chooses otherwise; empty
 * turns it off) and rebinds when a reload changes it.
 *
 * IDENTIFICATION
 *	  src/metrics.c
 *
 *-------------------------------------------------------------------------
 */
#include "activity_core.h"

#include <math.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

PGDLLEXPORT void ac_metrics_main(Datum arg);


/* Open a listening socket on host:port; -1 (with a WARNING) on failure. */
static int
Listen(const char *listen_on)
{
	char	   *spec = pstrdup(listen_on);
	char	   *colon = strrchr(spec, ':');
	struct addrinfo hints;
	struct addrinfo *res = NULL;
	int			fd;
	int			one = 1;
	int			rc;

	if (colon == NULL)
	{
		ereport(WARNING,
				(errmsg("activity_core.metrics_listen \"%s\" is not host:port", listen_on)));
		return -1;
	}
	*colon = '\0';
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE;
	rc = getaddrinfo(spec[0] ? spec : NULL, colon + 1, &hints, &res);
	if (rc != 0 || res == NULL)
	{
		ereport(WARNING,
				(errmsg("activity_core metrics: cannot resolve \"%s\": %s", listen_on, gai_strerror(rc))));
		return -1;
	}
	fd = socket(res->ai_family, res->ai_socktype, res->ai_protocol);
	if (fd < 0 ||
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
		bind(fd, res->ai_addr, res->ai_addrlen) < 0 ||
		listen(fd, 16) < 0)
	{
		ereport(WARNING,
				(errcode_for_socket_access(),
				 errmsg("activity_core metrics: cannot listen on %s: %m", listen_on)));
		if (fd >= 0)
			close(fd);
		freeaddrinfo(res);
		return -1;
	}
	freeaddrinfo(res);
	elog(LOG, "activity_core metrics: serving /metrics on %s", listen_on);
	return fd;
}

/* Append one series (and its family's HELP and TYPE lines) to the text. */
static void
AppendSeries(const AcSeries *s, void *arg)
{
	StringInfo	buf = (StringInfo) arg;
	bool		counter = strcmp(s->type, "counter") == 0;

	if (s->first)
	{
		appendStringInfo(buf, "# HELP activity_core_%s%s %s\n", s->family,
						 counter ? "_total" : "", s->help);
		appendStringInfo(buf, "# TYPE activity_core_%s%s %s\n", s->family,
						 counter ? "_total" : "", s->type);
	}
	appendStringInfo(buf, "activity_core_%s%s", s->family, s->suffix);
	for (int i = 0; i < s->nlabels; i++)
		appendStringInfo(buf, "%s%s=\"%s\"", i == 0 ? "{" : ",", s->keys[i], s->values[i]);
	if (s->nlabels > 0)
		appendStringInfoChar(buf, '}');
	if (s->value == floor(s->value) && fabs(s->value) < 1e15)
		appendStringInfo(buf, " %.0f\n", s->value);
	else
		appendStringInfo(buf, " %.12g\n", s->value);
}

/*
 * The exposition text: every series of shared memory (observe.c), with a
 * HELP and a TYPE line per family.  Label values come from fixed sets and
 * need no escaping.
 */
static char *
MetricsText(void)
{
	StringInfoData buf;

	initStringInfo(&buf);
	AcEachSeries(AppendSeries, &buf);
	return buf.data;
}

/* Write all of a buffer to a socket, giving up on error. */
static void
WriteAll(int fd, const char *data, size_t len)
{
	while (len > 0)
	{
		ssize_t		n = write(fd, data, len);

		if (n < 0 && errno == EINTR)
			continue;			/* a signal, such as a reload's SIGHUP */
		if (n <= 0)
			return;
		data += n;
		len -= n;
	}
}

/* Answer one connection: read the request line, send the response, close. */
static void
Serve(int fd)
{
	char		req[8192];
	size_t		got = 0;
	struct pollfd pfd = {.fd = fd,.events = POLLIN};
	const char *status;
	char	   *body;
	char	   *head;

	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 2000);

	/* one deadline for the whole request, so a slow client cannot hold us */
	while (got < sizeof(req) - 1 && memmem(req, got, "\r\n\r\n", 4) == NULL)
	{
		ssize_t		n;
		int			ready;
		long		left = (long) ((deadline - GetCurrentTimestamp()) / 1000);

		if (left <= 0)
			break;
		/* a signal (a reload's SIGHUP) interrupts poll and read: go on */
		ready = poll(&pfd, 1, (int) left);
		if (ready < 0 && errno == EINTR)
			continue;
		if (ready <= 0)
			break;
		n = read(fd, req + got, sizeof(req) - 1 - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += n;
	}
	req[got] = '\0';
	if (strncmp(req, "GET /metrics ", 13) == 0 || strncmp(req, "GET /metrics?", 13) == 0)
	{
		status = "200 OK";
		body = MetricsText();
	}
	else
	{
		status = "404 Not Found";
		body = pstrdup("only GET /metrics is served here\n");
	}
	head = psprintf("HTTP/1.1 %s\r\nContent-Type: text/plain; version=0.0.4\r\n"
					"Content-Length: %zu\r\nConnection: close\r\n\r\n", status, strlen(body));
	WriteAll(fd, head, strlen(head));
	WriteAll(fd, body, strlen(body));
	close(fd);
}

/* Main entry point of the metrics worker. */
void
ac_metrics_main(Datum arg)
{
	int			fd = -1;
	char	   *bound = NULL;
	MemoryContext cxt;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	cxt = AllocSetContextCreate(TopMemoryContext, "activity_core metrics", ALLOCSET_SMALL_SIZES);

	for (;;)
	{
		WaitEvent	ev;
		WaitEventSet *set;
		int			n;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		/* (re)bind when the setting changed */
		if (bound == NULL || strcmp(bound, ac_metrics_listen) != 0)
		{
			if (fd >= 0)
				close(fd);
			fd = ac_metrics_listen[0] ? Listen(ac_metrics_listen) : -1;
			if (bound)
				pfree(bound);
			bound = MemoryContextStrdup(TopMemoryContext, ac_metrics_listen);
		}

		MemoryContextSwitchTo(cxt);
		set = AcCreateWaitEventSet(3);
		AddWaitEventToSet(set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
		AddWaitEventToSet(set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
		if (fd >= 0)
			AddWaitEventToSet(set, WL_SOCKET_READABLE, fd, NULL, NULL);
		n = WaitEventSetWait(set, fd >= 0 ? 1000 : 5000, &ev, 1, PG_WAIT_EXTENSION);
		FreeWaitEventSet(set);
		if (n == 1 && (ev.events & WL_LATCH_SET))
			ResetLatch(MyLatch);
		else if (n == 1 && (ev.events & WL_SOCKET_READABLE))
		{
			int			client = accept(fd, NULL, NULL);

			if (client >= 0)
				Serve(client);
		}
		MemoryContextSwitchTo(TopMemoryContext);
		MemoryContextReset(cxt);
	}
}
