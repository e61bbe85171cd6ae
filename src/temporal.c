/*-------------------------------------------------------------------------
 *
 * temporal.c
 *	  Client for Temporal's HTTP API: libcurl multi for many requests in
 *	  flight at once.
 *
 * One curl multi handle lives for the whole process, so connections to the
 * frontend are kept and reused across batches.  Requests run on the calling
 * thread only, driven by curl_multi_socket_action(): curl tells us which
 * sockets to watch (SocketChanged) and when its next timeout is
 * (TimerChanged), an epoll set of the process watches them, and each
 * wake-up hands curl only the socket that is ready, so the cost of an
 * answer does not grow with the number of requests in flight.  The loop
 * waits at most 100 ms in epoll_wait() and then calls
 * CHECK_FOR_INTERRUPTS(), so SIGTERM, query cancel and statement_timeout
 * stop a batch within a fraction of a second.  Curl
 * callbacks never call into PostgreSQL (no palloc, no ereport); they only
 * append to malloc'd buffers.  If an error is raised while a batch runs,
 * every easy handle and buffer of the batch is released before it
 * propagates.
 *
 * Errors are classified from the body (see AcParseError), not from the
 * HTTP status alone.
 *
 * IDENTIFICATION
 *	  src/temporal.c
 *
 *-------------------------------------------------------------------------
 */
#include "activity_core.h"

#include <curl/curl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <time.h>

#include "common/hashfn.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"

#include "temporal.h"

/* a response larger than this is cut off and treated as a transport error */
StaticAssertDecl(sizeof(((AcRequest *) 0)->transport_error) >= CURL_ERROR_SIZE,
				 "transport_error holds curl's error buffer");
#define MAX_RESPONSE (64 * 1024 * 1024)

/* the most sockets one epoll_wait() reports */
#define MAX_EVENTS 64
/* the longest wait between two CHECK_FOR_INTERRUPTS() of a batch */
#define MAX_WAIT_MS 100

static CURLM *multi = NULL;
/* the sockets curl watches; -1 until the multi handle exists */
static int	epoll_fd = -1;
/* when curl wants its timeout action, in ms of the monotonic clock; -1: never */
static int64 timer_at = -1;

/* Milliseconds of the monotonic clock. */
static int64
NowMs(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * curl's socket callback: watch s for what curl waits for, or stop.  Called
 * on our thread from inside curl; plain C only.
 */
static int
SocketChanged(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
	struct epoll_event ev;

	if (what == CURL_POLL_REMOVE)
	{
		/* the socket may already be closed, which removed it: ignore */
		(void) epoll_ctl(epoll_fd, EPOLL_CTL_DEL, s, NULL);
		return 0;
	}
	memset(&ev, 0, sizeof(ev));
	ev.data.fd = s;
	ev.events = ((what & CURL_POLL_IN) ? EPOLLIN : 0) | ((what & CURL_POLL_OUT) ? EPOLLOUT : 0);
	if (epoll_ctl(epoll_fd, EPOLL_CTL_MOD, s, &ev) != 0 &&
		epoll_ctl(epoll_fd, EPOLL_CTL_ADD, s, &ev) != 0)
		return -1;				/* curl fails the transfers of this socket */
	return 0;
}

/* curl's timer callback: remember when it wants its timeout action. */
static int
TimerChanged(CURLM *m, long timeout_ms, void *userp)
{
	timer_at = timeout_ms < 0 ? -1 : NowMs() + timeout_ms;
	return 0;
}

/* Create the process-wide multi handle and its epoll set on first use. */
static CURLM *
GetMulti(void)
{
	if (multi == NULL)
	{
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
			ereport(ERROR,
					(errcode(ERRCODE_SYSTEM_ERROR),
					 errmsg("could not initialise libcurl")));
		if (epoll_fd < 0)
			epoll_fd = epoll_create1(EPOLL_CLOEXEC);
		if (epoll_fd < 0)
			ereport(ERROR,
					(errcode(ERRCODE_SYSTEM_ERROR),
					 errmsg("could not create an epoll set for the Temporal client: %m")));
		multi = curl_multi_init();
		if (multi == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("could not create a curl multi handle")));
		curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, SocketChanged);
		curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, TimerChanged);
	}
	return multi;
}

/*
 * Hand curl what is ready: each of the sockets epoll reported, then its
 * timeout action when that is due.  Signals stay blocked meanwhile, so
 * that curl's resolver threads are born with them blocked.
 */
static void
DriveCurl(CURLM *m, struct epoll_event *evs, int nevs)
{
	sigset_t	all;
	sigset_t	old;
	int			running;

	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	for (int i = 0; i < nevs; i++)
	{
		int			mask = 0;

		if (evs[i].events & EPOLLIN)
			mask |= CURL_CSELECT_IN;
		if (evs[i].events & EPOLLOUT)
			mask |= CURL_CSELECT_OUT;
		if (evs[i].events & (EPOLLERR | EPOLLHUP))
			mask |= CURL_CSELECT_ERR;
		curl_multi_socket_action(m, evs[i].data.fd, mask, &running);
	}
	if (timer_at >= 0 && NowMs() >= timer_at)
	{
		timer_at = -1;
		curl_multi_socket_action(m, CURL_SOCKET_TIMEOUT, 0, &running);
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* Escape one path segment or query value; result is palloc'd. */
char *
AcTemporalEscape(const char *segment)
{
	char	   *esc = curl_easy_escape(NULL, segment, 0);
	char	   *out;

	if (esc == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	out = pstrdup(esc);
	curl_free(esc);
	return out;
}

/*
 * Build "<temporal_url>/namespaces/<namespace><suffix>"; the suffix is
 * formatted from fmt, whose arguments the caller has escaped already.
 */
char *
AcTemporalUrl(const char *fmt,...)
{
	StringInfoData buf;
	const char *base = ac_temporal_url;
	int			blen = strlen(base);
	va_list		ap;

	while (blen > 0 && base[blen - 1] == '/')
		blen--;
	initStringInfo(&buf);
	appendBinaryStringInfo(&buf, base, blen);
	appendStringInfo(&buf, "/namespaces/%s", AcTemporalEscape(ac_temporal_namespace));
	for (;;)
	{
		int			needed;

		va_start(ap, fmt);
		needed = appendStringInfoVA(&buf, fmt, ap);
		va_end(ap);
		if (needed == 0)
			break;
		enlargeStringInfo(&buf, needed);
	}
	return buf.data;
}

/* Set what a request sends; url and body are palloc'd by the caller. */
void
AcRequestSet(AcRequest *req, const char *method, char *url, char *body)
{
	AcRequestReset(req);
	strlcpy(req->method, method, sizeof(req->method));
	req->url = url;
	req->body = body;
}

/* Forget the outcome of the last request. */
void
AcRequestReset(AcRequest *req)
{
	if (req->response)
		free(req->response);
	req->response = NULL;
	req->response_len = 0;
	req->response_cap = 0;
	req->overflow = false;
	req->http_status = 0;
	req->grpc_code = 0;
	req->status = AC_T_OK;
	req->error[0] = '\0';
}

/* Release the malloc'd parts of a request. */
void
AcRequestFree(AcRequest *req)
{
	if (req->easy)
	{
		if (multi)
			curl_multi_remove_handle(multi, (CURL *) req->easy);
		curl_easy_cleanup((CURL *) req->easy);
		req->easy = NULL;
	}
	if (req->headers)
	{
		curl_slist_free_all((struct curl_slist *) req->headers);
		req->headers = NULL;
	}
	if (req->response)
		free(req->response);
	req->response = NULL;
}

/* curl write callback: append to the malloc'd response buffer. */
static size_t
WriteBody(char *data, size_t size, size_t nmemb, void *userdata)
{
	AcRequest  *req = (AcRequest *) userdata;
	size_t		n = size * nmemb;

	if (req->response_len + n + 1 > MAX_RESPONSE)
	{
		req->overflow = true;
		return 0;
	}
	if (req->response_len + n + 1 > req->response_cap)
	{
		size_t		cap = req->response_cap ? req->response_cap : 4096;
		char	   *p;

		while (cap < req->response_len + n + 1)
			cap *= 2;
		p = realloc(req->response, cap);
		if (p == NULL)
			return 0;
		req->response = p;
		req->response_cap = cap;
	}
	memcpy(req->response + req->response_len, data, n);
	req->response_len += n;
	req->response[req->response_len] = '\0';
	return n;
}

/* called between two waits of AcTemporalRun, on this thread (NULL: none) */
static AcTemporalTick run_tick = NULL;
static void *run_tick_arg = NULL;

/*
 * Have tick(arg) called on the calling thread about every 100 ms while
 * AcTemporalRun waits for its requests; NULL stops it.
 */
void
AcTemporalSetTick(AcTemporalTick tick, void *arg)
{
	run_tick = tick;
	run_tick_arg = arg;
}

/* the API key of the requests of the current AcTemporalRun, or NULL */
static const char *run_api_key = NULL;

/* Create the easy handle of a request. */
static void
StartRequest(AcRequest *req)
{
	CURL	   *easy = curl_easy_init();
	struct curl_slist *h = NULL;

	if (easy == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not create a curl handle")));
	req->easy = easy;
	h = curl_slist_append(h, "Content-Type: application/json");
	h = curl_slist_append(h, "Accept: application/json");
	if (run_api_key)
	{
		/* any length: a key cut short would only be refused */
		char	   *auth = psprintf("Authorization: Bearer %s", run_api_key);

		h = curl_slist_append(h, auth);
		explicit_bzero(auth, strlen(auth));
		pfree(auth);
	}
	req->headers = h;
	req->transport_error[0] = '\0';

	curl_easy_setopt(easy, CURLOPT_URL, req->url);
	curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(easy, CURLOPT_PRIVATE, req);
	curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, req->transport_error);
	curl_easy_setopt(easy, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, WriteBody);
	curl_easy_setopt(easy, CURLOPT_WRITEDATA, req);
	curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, (long) ac_temporal_connect_timeout_ms);
	curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, (long) ac_temporal_request_timeout_ms);
	curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
	if (ac_temporal_tls_ca_file && ac_temporal_tls_ca_file[0])
		curl_easy_setopt(easy, CURLOPT_CAINFO, ac_temporal_tls_ca_file);
	if (ac_temporal_tls_cert_file && ac_temporal_tls_cert_file[0])
		curl_easy_setopt(easy, CURLOPT_SSLCERT, ac_temporal_tls_cert_file);
	if (ac_temporal_tls_key_file && ac_temporal_tls_key_file[0])
		curl_easy_setopt(easy, CURLOPT_SSLKEY, ac_temporal_tls_key_file);
	if (strcmp(req->method, "POST") == 0)
		curl_easy_setopt(easy, CURLOPT_POSTFIELDS, req->body ? req->body : "{}");
	else if (strcmp(req->method, "GET") != 0)
		curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, req->method);
	if (curl_multi_add_handle(GetMulti(), easy) != CURLM_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not add a curl handle")));
}

/*
 * Which operation a request is, from its method and the path after
 * /namespaces/<ns> (the labels of the latency histogram and the failure
 * counters).
 */
static AcOperation
OperationOf(const AcRequest *req)
{
	const char *path = req->url ? strstr(req->url, "/namespaces/") : NULL;
	const char *rest;
	bool		get = strcmp(req->method, "GET") == 0;

	if (path == NULL || strstr(req->url, "/cluster/") != NULL)
		return req->url && (strstr(req->url, "/system-info") || strstr(req->url, "/cluster/")) ?
			AC_OP_HEALTH : AC_OP_OTHER;
	rest = strchr(path + strlen("/namespaces/"), '/');
	if (rest == NULL)
		return AC_OP_OTHER;
	if (strncmp(rest, "/workflows", 10) == 0)
		return get ? AC_OP_WORKFLOW_LIST : AC_OP_START;
	if (strncmp(rest, "/schedules", 10) != 0)
		return AC_OP_OTHER;
	rest += 10;
	if (*rest == '\0' || *rest == '?')
		return AC_OP_SCHEDULE_LIST;
	if (strcmp(req->method, "DELETE") == 0)
		return AC_OP_SCHEDULE_DELETE;
	if (strstr(rest, "/matching-times") != NULL)
		return AC_OP_SCHEDULE_MATCHING_TIMES;
	if (strstr(rest, "/patch") != NULL)
		return AC_OP_SCHEDULE_BACKFILL;
	if (strstr(rest, "/update") != NULL)
		return AC_OP_SCHEDULE_UPDATE;
	return get ? AC_OP_SCHEDULE_DESCRIBE : AC_OP_SCHEDULE_CREATE;
}

/*
 * Record a finished request in shared memory: its latency when Temporal
 * answered, and its failure class when it failed.  "Already exists" and
 * "not found" are answers the callers act on, not failures.
 */
static void
ObserveRequest(AcRequest *req, CURLcode rc)
{
	AcOperation op = OperationOf(req);
	curl_off_t	us = 0;

	if (rc == CURLE_OK &&
		curl_easy_getinfo((CURL *) req->easy, CURLINFO_TOTAL_TIME_T, &us) == CURLE_OK)
		AcObserveLatency(op, (double) us / 1e6);
	if (rc == CURLE_OPERATION_TIMEDOUT || req->grpc_code == 4)
		AcCountFailure(op, AC_FAIL_TIMEOUT);
	else if (AcTemporalIsTransient(req->status))
		AcCountFailure(op, AC_FAIL_TRANSIENT);
	else if (req->status == AC_T_INVALID)
		AcCountFailure(op, AC_FAIL_PERMANENT);
}

/* Classify a finished request from its transport result and body. */
static void
ClassifyRequest(AcRequest *req, CURLcode rc)
{
	curl_easy_getinfo((CURL *) req->easy, CURLINFO_RESPONSE_CODE, &req->http_status);
	if (rc != CURLE_OK)
	{
		req->status = AC_T_UNAVAILABLE;
		if (req->overflow)
			snprintf(req->error, sizeof(req->error), "response too large");
		else if (req->transport_error[0])
			/* the detail: "SSL certificate problem: certificate has expired" */
			snprintf(req->error, sizeof(req->error), "%s (%s)",
					 req->transport_error, curl_easy_strerror(rc));
		else
			snprintf(req->error, sizeof(req->error), "%s", curl_easy_strerror(rc));
	}
	else if (req->http_status == 200)
		req->status = AC_T_OK;
	else
		AcParseError(req);
	ObserveRequest(req, rc);
}

/* Release every handle and buffer of a batch (error path). */
static void
CleanupBatch(AcRequest **reqs, int nreqs)
{
	for (int i = 0; i < nreqs; i++)
		AcRequestFree(reqs[i]);
}

/*
 * Run a batch of requests with at most `concurrency` in flight, calling
 * done() for each finished request on this thread.
 */
void
AcTemporalRun(AcRequest **reqs, int nreqs, int concurrency,
			  AcRequestDone done, void *arg)
{
	CURLM	   *m = GetMulti();
	int			next = 0;
	int			in_flight = 0;

	char	   *key_error;

	run_api_key = AcTemporalApiKey(&key_error);
	if (key_error)
	{
		/* nothing can be sent: every request fails, to be retried later */
		for (int i = 0; i < nreqs; i++)
		{
			reqs[i]->status = AC_T_UNAUTHORIZED;
			reqs[i]->http_status = 0;
			strlcpy(reqs[i]->error, key_error, sizeof(reqs[i]->error));
			AcCountFailure(OperationOf(reqs[i]), AC_FAIL_TRANSIENT);
			(void) done(reqs[i], arg);
		}
		return;
	}
	curl_multi_setopt(m, CURLMOPT_MAX_HOST_CONNECTIONS, (long) concurrency);
	PG_TRY();
	{
		while (next < nreqs || in_flight > 0)
		{
			struct epoll_event evs[MAX_EVENTS];
			int			nevs = 0;
			CURLMsg    *msg;
			int			left;

			while (in_flight < concurrency && next < nreqs)
			{
				StartRequest(reqs[next++]);
				in_flight++;
			}
			/* wait for a socket or curl's next timeout, at most 100 ms */
			if (timer_at < 0 || timer_at > NowMs())
			{
				int64		wait = timer_at < 0 ? MAX_WAIT_MS :
					Min(timer_at - NowMs(), MAX_WAIT_MS);

				nevs = epoll_wait(epoll_fd, evs, MAX_EVENTS, (int) Max(wait, 0));
				if (nevs < 0)
					nevs = 0;	/* a signal: CHECK_FOR_INTERRUPTS below */
			}
			DriveCurl(m, evs, nevs);
			while ((msg = curl_multi_info_read(m, &left)) != NULL)
			{
				AcRequest  *req;

				if (msg->msg != CURLMSG_DONE)
					continue;
				curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &req);
				ClassifyRequest(req, msg->data.result);
				curl_multi_remove_handle(m, msg->easy_handle);
				curl_easy_cleanup(msg->easy_handle);
				req->easy = NULL;
				curl_slist_free_all((struct curl_slist *) req->headers);
				req->headers = NULL;
				in_flight--;
				if (done(req, arg))
				{
					StartRequest(req);
					in_flight++;
				}
			}
			CHECK_FOR_INTERRUPTS();
			if (run_tick)
				run_tick(run_tick_arg);
		}
	}
	PG_CATCH();
	{
		CleanupBatch(reqs, nreqs);
		PG_RE_THROW();
	}
	PG_END_TRY();
}

/* Should a request that ended this way be tried again later? */
bool
AcTemporalIsTransient(AcTemporalStatus status)
{
	return status == AC_T_UNAVAILABLE || status == AC_T_UNAUTHORIZED;
}

/* A short name for a status, for logs and views. */
const char *
AcTemporalStatusName(AcTemporalStatus status)
{
	switch (status)
	{
		case AC_T_OK:
			return "ok";
		case AC_T_ALREADY_EXISTS:
			return "already exists";
		case AC_T_NOT_FOUND:
			return "not found";
		case AC_T_INVALID:
			return "invalid argument";
		case AC_T_UNAUTHORIZED:
			return "unauthorized";
		case AC_T_UNAVAILABLE:
			return "unavailable";
	}
	return "unknown";
}
