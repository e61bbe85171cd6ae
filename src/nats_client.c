/*-------------------------------------------------------------------------
 *
 * nats_client.c
 *	  Connection to NATS JetStream for the router and the dispatcher.
 *
 * Rules kept here (see the design notes on threads): nats.c is never
 * touched in the postmaster, only in a worker after the fork; every call
 * that may start library threads runs with all signals blocked, so those
 * threads never run PostgreSQL's signal handlers, and while they are
 * blocked nothing but nats.c is called (no palloc, no elog: an error
 * thrown there would leave SIGTERM blocked for good); no callback is
 * registered, so no library thread ever calls back into our code.  All
 * calls are made from the worker's main thread, with bounded waits.
 *
 * IDENTIFICATION
 *	  src/nats_client.c
 *
 *-------------------------------------------------------------------------
 */
#include "activity_core.h"

#include <pthread.h>
#include <signal.h>

#include "miscadmin.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "nats_client.h"

/* Block every signal; remember the old mask. */
void
AcNatsBlockSignals(sigset_t *old)
{
	sigset_t	all;

	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, old);
}

/* Restore the signal mask. */
void
AcNatsRestoreSignals(sigset_t *old)
{
	pthread_sigmask(SIG_SETMASK, old, NULL);
}

/*
 * Describe a nats.c failure for people: the thread's last error without the
 * library's "(file.c:line): " prefix, then the status text.
 */
char *
AcNatsError(natsStatus s)
{
	const char *last = nats_GetLastError(NULL);
	const char *status = natsStatus_GetText(s);

	if (last && last[0] == '(' && strstr(last, "): ") != NULL)
		last = strstr(last, "): ") + 3;
	if (last && last[0] && strcmp(last, status) != 0)
		return psprintf("%s (%s)", last, status);
	return pstrdup(status);
}

#define MAX_SERVERS 32

/*
 * Split activity_core.nats_url into a server list (palloc'd, so done
 * before signals are blocked); returns how many.
 */
static int
ServerList(const char **list)
{
	char	   *urls = pstrdup(ac_nats_url);
	int			n = 0;
	char	   *tok;
	char	   *save;

	for (tok = strtok_r(urls, ", ", &save); tok && n < MAX_SERVERS; tok = strtok_r(NULL, ", ", &save))
		list[n++] = tok;
	return n;
}

/* A setting's value, or "" when unset. */
static const char *
Setting(const char *value)
{
	return value ? value : "";
}

/*
 * The settings a connection, its stream and its consumer are made from, as
 * one palloc'd string: when a reload changes it, the connection is remade.
 */
static char *
SettingsKey(void)
{
	return psprintf("%s\n%s\n%s\n%s\n%s\n%s\n%s\n%s\n%s\n%s\n%d",
					Setting(ac_nats_url), Setting(ac_nats_user),
					Setting(ac_nats_password_file), Setting(ac_nats_credentials_file),
					Setting(ac_nats_tls_ca_file), Setting(ac_nats_tls_cert_file),
					Setting(ac_nats_tls_key_file), Setting(ac_stream_name),
					Setting(ac_subject_prefix), Setting(ac_consumer_name),
					ac_stream_replicas);
}

/* Did a reload change a setting connection n was made with? */
bool
AcNatsSettingsChanged(const AcNats *n)
{
	char	   *key = SettingsKey();
	bool		changed = n->settings == NULL || strcmp(n->settings, key) != 0;

	pfree(key);
	return changed;
}

/*
 * Connect to NATS and open a JetStream context.  Returns NULL and sets
 * *error when that fails; never throws for NATS failures.
 */
AcNats *
AcNatsConnect(const char *name, char **error)
{
	sigset_t	old;
	natsOptions *o = NULL;
	natsStatus	s;
	AcNats	   *n = palloc0(sizeof(AcNats));
	jsOptions	jo;
	const char *password = NULL;
	const char *servers[MAX_SERVERS];
	int			nservers;
	char	   *key;

	/* read before signals are blocked */
	if (ac_nats_user && ac_nats_user[0])
	{
		password = AcNatsPassword(error);
		if (*error)
		{
			pfree(n);
			return NULL;
		}
	}
	nservers = ServerList(servers);

	/* from here to AcNatsRestoreSignals only nats.c is called: no palloc, no elog */
	AcNatsBlockSignals(&old);
	s = natsOptions_Create(&o);
	if (s == NATS_OK)
		s = nservers > 0 ? natsOptions_SetServers(o, servers, nservers) : NATS_INVALID_ARG;
	if (s == NATS_OK)
		s = natsOptions_SetName(o, name);
	if (s == NATS_OK)
		s = natsOptions_SetTimeout(o, 1000);
	if (s == NATS_OK)
		s = natsOptions_SetMaxReconnect(o, -1);
	if (s == NATS_OK)
		s = natsOptions_SetReconnectWait(o, 1000);
	if (s == NATS_OK)
		s = natsOptions_SetPingInterval(o, 20000);
	if (s == NATS_OK)
		s = natsOptions_SetFailRequestsOnDisconnect(o, true);
	if (s == NATS_OK && ac_nats_user && ac_nats_user[0])
		s = natsOptions_SetUserInfo(o, ac_nats_user, password);
	if (s == NATS_OK && ac_nats_credentials_file && ac_nats_credentials_file[0])
		s = natsOptions_SetUserCredentialsFromFiles(o, ac_nats_credentials_file, NULL);
	if (s == NATS_OK && ac_nats_tls_ca_file && ac_nats_tls_ca_file[0])
	{
		s = natsOptions_SetSecure(o, true);
		if (s == NATS_OK)
			s = natsOptions_LoadCATrustedCertificates(o, ac_nats_tls_ca_file);
	}
	if (s == NATS_OK && ac_nats_tls_cert_file && ac_nats_tls_cert_file[0])
	{
		s = natsOptions_SetSecure(o, true);
		if (s == NATS_OK)
			s = natsOptions_LoadCertificatesChain(o, ac_nats_tls_cert_file,
												  ac_nats_tls_key_file);
	}
	if (s == NATS_OK)
		s = natsConnection_Connect(&n->nc, o);
	if (s == NATS_OK)
	{
		jsOptions_Init(&jo);
		jo.Wait = 1000;
		s = natsConnection_JetStream(&n->js, n->nc, &jo);
	}
	AcNatsRestoreSignals(&old);
	/* nothing that can throw runs while signals are blocked */
	if (s != NATS_OK)
		*error = AcNatsError(s);

	/*
	 * A server that demands a client certificate and got none drops the
	 * connection after the handshake, which the client sees only as a
	 * protocol error: say what is likely missing.
	 */
	if ((s == NATS_PROTOCOL_ERROR || s == NATS_CONNECTION_CLOSED) &&
		!(ac_nats_tls_cert_file && ac_nats_tls_cert_file[0]) &&
		((ac_nats_tls_ca_file && ac_nats_tls_ca_file[0]) || strstr(ac_nats_url, "tls://") != NULL))
		*error = psprintf("%s: the server closed the TLS connection; it may require a client certificate (activity_core.nats_tls_cert_file and nats_tls_key_file)",
						  *error);
	if (o)
		natsOptions_Destroy(o);
	if (s != NATS_OK)
	{
		AcNatsClose(n);
		return NULL;
	}
	key = SettingsKey();
	n->settings = MemoryContextStrdup(TopMemoryContext, key);
	pfree(key);
	return n;
}

/* Close a connection and its JetStream context. */
void
AcNatsClose(AcNats *n)
{
	if (n == NULL)
		return;
	if (n->sub)
		natsSubscription_Destroy(n->sub);
	if (n->pub_js)
		jsCtx_Destroy(n->pub_js);
	if (n->js)
		jsCtx_Destroy(n->js);
	if (n->nc)
	{
		natsConnection_FlushTimeout(n->nc, 500);
		natsConnection_Destroy(n->nc);
	}
	if (n->settings)
		pfree(n->settings);
	n->sub = NULL;
	n->pub_js = NULL;
	n->js = NULL;
	n->nc = NULL;
	n->settings = NULL;
}

/* Release every library thread before the process exits. */
void
AcNatsShutdown(void)
{
	nats_CloseAndWait(2000);
}

/*
 * Make sure the stream exists; create it with our defaults when absent,
 * with activity_core.stream_replicas replicas.  When it exists with other
 * subjects, warn and leave it alone.  When it exists with another number
 * of replicas, leave it too (other routers may share it, and scaling a
 * stream is the NATS operator's call): warn once per connection and note
 * it in shared memory, as the router or the publisher saw it, which
 * ac_health() shows.
 */
bool
AcNatsEnsureStream(AcNats *n, bool publisher, char **error)
{
	jsStreamInfo *si = NULL;
	jsErrCode	jerr = 0;
	natsStatus	s;
	char	   *subject = psprintf("%s.>", ac_subject_prefix);
	sigset_t	old;
	bool		created = false;
	bool		foreign = false;
	int64		replicas = ac_stream_replicas;

	AcNatsBlockSignals(&old);
	s = js_GetStreamInfo(&si, n->js, ac_stream_name, NULL, &jerr);
	if (s == NATS_NOT_FOUND)
	{
		jsStreamConfig sc;
		const char *subjects[1] = {subject};

		jsStreamConfig_Init(&sc);
		sc.Name = ac_stream_name;
		sc.Subjects = subjects;
		sc.SubjectsLen = 1;
		sc.Storage = js_FileStorage;
		sc.Retention = js_LimitsPolicy;
		sc.MaxAge = INT64CONST(7) * 24 * 3600 * 1000000000;
		sc.Duplicates = INT64CONST(2) * 60 * 1000000000;
		sc.Discard = js_DiscardOld;
		sc.Replicas = ac_stream_replicas;
		s = js_AddStream(&si, n->js, &sc, NULL, &jerr);
		created = s == NATS_OK;
	}
	else if (s == NATS_OK && si && si->Config)
	{
		bool		covers = false;

		/* the server reports 0 for a stream made without a count: one copy */
		replicas = Max(si->Config->Replicas, 1);

		for (int i = 0; i < si->Config->SubjectsLen; i++)
			if (strcmp(si->Config->Subjects[i], subject) == 0)
				covers = true;
		foreign = !covers;
	}
	AcNatsRestoreSignals(&old);
	/* signals are restored: logging is safe again */
	if (created)
		elog(LOG, "activity_core: created stream %s on %s with %d replica(s)",
			 ac_stream_name, subject, ac_stream_replicas);
	if (s == NATS_OK && replicas != ac_stream_replicas)
	{
		char	   *note = psprintf("stream %s has " INT64_FORMAT " replica(s), activity_core.stream_replicas asks for %d; the stream is left as it is",
									ac_stream_name, replicas, ac_stream_replicas);

		ereport(WARNING,
				(errmsg("activity_core: %s", note),
				 errhint("Change the stream's replicas on the NATS side (nats stream edit %s --replicas %d), or set activity_core.stream_replicas to match.",
						 ac_stream_name, ac_stream_replicas)));
		AcSetStreamNote(publisher, note);
	}
	else if (s == NATS_OK)
		AcSetStreamNote(publisher, NULL);
	if (foreign)
		ereport(WARNING,
				(errmsg("activity_core: stream %s exists but does not listen on %s; leaving it alone",
						ac_stream_name, subject)));
	if (si)
		jsStreamInfo_Destroy(si);
	if (s != NATS_OK)
	{
		*error = psprintf("stream %s: %s (JetStream error %d)", ac_stream_name, AcNatsError(s), (int) jerr);
		return false;
	}
	return true;
}

/*
 * Make sure the durable pull consumer exists; create it with our defaults
 * when absent.  When it exists with another configuration, warn and leave
 * it alone (other routers may share it).  An ack wait other than
 * activity_core.router_ack_wait is updated in place (JetStream allows it,
 * and the consumer keeps its position and its pending messages).
 */
bool
AcNatsEnsureConsumer(AcNats *n, char **error)
{
	jsConsumerInfo *ci = NULL;
	jsErrCode	jerr = 0;
	natsStatus	s;
	char	   *subject = psprintf("%s.>", ac_subject_prefix);
	sigset_t	old;
	bool		created = false;
	bool		foreign = false;
	int64		ack_wait = (int64) ac_router_ack_wait_ms * 1000000;
	int64		old_ack_wait = 0;
	bool		updated = false;

	AcNatsBlockSignals(&old);
	s = js_GetConsumerInfo(&ci, n->js, ac_stream_name, ac_consumer_name, NULL, &jerr);
	if (s == NATS_NOT_FOUND)
	{
		jsConsumerConfig cc;

		jsConsumerConfig_Init(&cc);
		cc.Durable = ac_consumer_name;
		cc.AckPolicy = js_AckExplicit;
		cc.DeliverPolicy = js_DeliverAll;
		cc.AckWait = ack_wait;
		cc.MaxDeliver = -1;
		cc.MaxAckPending = 10000;
		cc.FilterSubject = subject;
		s = js_AddConsumer(&ci, n->js, ac_stream_name, &cc, NULL, &jerr);
		created = s == NATS_OK;
	}
	else if (s == NATS_OK && ci && ci->Config)
	{
		jsConsumerConfig *c = ci->Config;

		foreign = c->AckPolicy != js_AckExplicit ||
			(c->FilterSubject && strcmp(c->FilterSubject, subject) != 0);
		if (!foreign && c->AckWait != ack_wait)
		{
			jsConsumerInfo *fresh = NULL;

			/* the consumer's own configuration with only the ack wait changed */
			old_ack_wait = c->AckWait;
			c->AckWait = ack_wait;
			s = js_UpdateConsumer(&fresh, n->js, ac_stream_name, c, NULL, &jerr);
			updated = s == NATS_OK;
			if (fresh)
				jsConsumerInfo_Destroy(fresh);
		}
	}
	AcNatsRestoreSignals(&old);
	/* signals are restored: logging is safe again */
	if (created)
		elog(LOG, "activity_core: created consumer %s on stream %s with ack wait %d ms",
			 ac_consumer_name, ac_stream_name, ac_router_ack_wait_ms);
	if (updated)
		elog(LOG, "activity_core: ack wait of consumer %s changed from " INT64_FORMAT " ms to %d ms",
			 ac_consumer_name, old_ack_wait / 1000000, ac_router_ack_wait_ms);
	if (foreign)
		ereport(WARNING,
				(errmsg("activity_core: consumer %s exists with another configuration; leaving it alone",
						ac_consumer_name),
				 errdetail("Expected explicit acks and filter subject %s.", subject)));
	if (ci)
		jsConsumerInfo_Destroy(ci);
	if (s != NATS_OK)
	{
		*error = psprintf("consumer %s: %s (JetStream error %d)", ac_consumer_name,
						  AcNatsError(s), (int) jerr);
		return false;
	}
	return true;
}

/*
 * Store the durable consumer's pending counts (its lag) in shared memory,
 * from consumer info, at most once a second and only while connected; a
 * failed look leaves the last figures.  The router calls it on its main
 * loop; the wait is bounded by the JetStream context's 1 s.
 */
void
AcNatsMeasureConsumer(AcNats *n)
{
	static TimestampTz last = 0;
	TimestampTz now = GetCurrentTimestamp();
	jsConsumerInfo *ci = NULL;
	jsErrCode	jerr = 0;
	natsStatus	s;
	sigset_t	old;
	uint64		pending = 0;
	uint64		ack_pending = 0;

	if (n == NULL || (last != 0 && now < TimestampTzPlusMilliseconds(last, 1000)) ||
		natsConnection_Status(n->nc) != NATS_CONN_STATUS_CONNECTED)
		return;
	last = now;
	AcNatsBlockSignals(&old);
	s = js_GetConsumerInfo(&ci, n->js, ac_stream_name, ac_consumer_name, NULL, &jerr);
	if (s == NATS_OK && ci)
	{
		pending = ci->NumPending;
		ack_pending = (uint64) Max(ci->NumAckPending, 0);
	}
	if (ci)
		jsConsumerInfo_Destroy(ci);
	AcNatsRestoreSignals(&old);
	if (s == NATS_OK)
		AcSetConsumerPending(pending, ack_pending);
}

/* Bind a pull subscription to the durable consumer. */
bool
AcNatsSubscribe(AcNats *n, char **error)
{
	jsSubOptions so;
	jsErrCode	jerr = 0;
	natsStatus	s;
	sigset_t	old;

	jsSubOptions_Init(&so);
	so.Stream = ac_stream_name;
	so.Consumer = ac_consumer_name;
	AcNatsBlockSignals(&old);
	s = js_PullSubscribe(&n->sub, n->js, NULL, NULL, NULL, &so, &jerr);
	AcNatsRestoreSignals(&old);
	if (s != NATS_OK)
	{
		*error = psprintf("subscribe to %s: %s", ac_consumer_name, AcNatsError(s));
		return false;
	}
	return true;
}

/*
 * Does the error NATS closed the connection with refuse the message itself
 * ("Maximum Control Line Exceeded", "Maximum Payload Violation")?
 */
bool
AcNatsRefusesMessage(const char *text)
{
	char		lower[256];
	int			i;

	for (i = 0; text[i] && i < (int) sizeof(lower) - 1; i++)
		lower[i] = pg_tolower((unsigned char) text[i]);
	lower[i] = '\0';
	return strstr(lower, "control line") != NULL || strstr(lower, "payload") != NULL;
}

/*
 * Bytes a message published with this Msg-Id takes against the server's
 * max_payload: the data plus the header block nats.c sends with it
 * ("NATS/1.0\r\nNats-Msg-Id: <id>\r\n\r\n").
 */
int64
AcNatsMessageSize(const char *msg_id, int len)
{
	return (int64) len + strlen("NATS/1.0\r\n" "Nats-Msg-Id: " "\r\n" "\r\n") + strlen(msg_id);
}

/*
 * Publish one message with a Msg-Id (JetStream drops duplicates of it
 * within the stream's window).  Returns NULL on success, else the reason.
 * *connection_error is set when the connection failed under the publish;
 * *permanent when NATS refused this message itself (too large, or the
 * server closed the connection over its control line), so that sending it
 * again can only fail again.
 */
char *
AcNatsPublish(AcNats *n, const char *subject, const char *msg_id,
			  const char *data, int len, bool *connection_error, bool *permanent)
{
	jsPubOptions po;
	jsPubAck   *pa = NULL;
	jsErrCode	jerr = 0;
	natsStatus	s;
	natsStatus	last = NATS_OK;
	bool		closed = false;
	char		last_text[256] = "";
	sigset_t	old;

	jsPubOptions_Init(&po);
	po.MsgId = msg_id;
	po.MaxWait = 1000;
	AcNatsBlockSignals(&old);
	s = js_Publish(&pa, n->js, subject, data, len, &po, &jerr);
	if (pa)
		jsPubAck_Destroy(pa);
	if (s != NATS_OK)
	{
		const char *t = NULL;

		closed = natsConnection_IsClosed(n->nc);
		last = natsConnection_GetLastError(n->nc, &t);
		if (t)
			strlcpy(last_text, t, sizeof(last_text));
	}
	AcNatsRestoreSignals(&old);
	/* signals are restored: from here on palloc and elog are safe */
	if (s == NATS_TIMEOUT)
		AcCountFailure(AC_OP_PUBLISH, AC_FAIL_TIMEOUT);
	else if (s != NATS_OK)
		AcCountFailure(AC_OP_PUBLISH,
					   s == NATS_MAX_PAYLOAD || jerr == JSStreamMessageExceedsMaximumErr ||
					   (closed && last != NATS_OK && AcNatsRefusesMessage(last_text)) ?
					   AC_FAIL_PERMANENT : AC_FAIL_TRANSIENT);
	*connection_error = (s == NATS_TIMEOUT || s == NATS_CONNECTION_CLOSED ||
						 s == NATS_CONNECTION_DISCONNECTED || s == NATS_NO_SERVER ||
						 s == NATS_NO_RESPONDERS || s == NATS_STALE_CONNECTION ||
						 s == NATS_NOT_YET_CONNECTED);
	*permanent = s == NATS_MAX_PAYLOAD || jerr == JSStreamMessageExceedsMaximumErr ||
		(closed && last != NATS_OK && AcNatsRefusesMessage(last_text));
	if (s == NATS_OK)
		return NULL;
	if (*permanent && closed && last_text[0])
		return psprintf("NATS closed the connection: %s", last_text);
	return psprintf("%s (JetStream error %d)", AcNatsError(s), (int) jerr);
}
