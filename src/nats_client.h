/*-------------------------------------------------------------------------
 *
 * nats_client.h
 *	  Connection to NATS JetStream for the router and the dispatcher
 *	  (nats_client.c).
 *
 * IDENTIFICATION
 *	  src/nats_client.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef AC_NATS_CLIENT_H
#define AC_NATS_CLIENT_H

#include <nats/nats.h>
#include <signal.h>

typedef struct AcNats
{
	natsConnection *nc;
	jsCtx	   *js;
	natsSubscription *sub;
	jsCtx	   *pub_js;			/* asynchronous publishing (nats_publish.c) */
	char	   *settings;		/* TopMemoryContext: the settings it was made
								 * with (AcNatsSettingsChanged) */
} AcNats;

/* The NATS client (nats_client.c) */
extern AcNats *AcNatsConnect(const char *name, char **error);
extern void AcNatsClose(AcNats *n);
extern bool AcNatsSettingsChanged(const AcNats *n);
extern void AcNatsShutdown(void);
extern bool AcNatsEnsureStream(AcNats *n, bool publisher, char **error);
extern bool AcNatsEnsureConsumer(AcNats *n, char **error);
extern bool AcNatsSubscribe(AcNats *n, char **error);
extern void AcNatsMeasureConsumer(AcNats *n);
extern char *AcNatsPublish(AcNats *n, const char *subject, const char *msg_id,
						   const char *data, int len, bool *connection_error,
						   bool *permanent);
extern int64 AcNatsMessageSize(const char *msg_id, int len);
extern char *AcNatsError(natsStatus s);
extern bool AcNatsRefusesMessage(const char *text);
extern void AcNatsBlockSignals(sigset_t *old);
extern void AcNatsRestoreSignals(sigset_t *old);

/* One message of an asynchronous batch and its outcome (nats_publish.c) */
typedef struct AcPubItem
{
	/* in */
	const char *subject;
	const char *msg_id;
	const char *data;
	int			len;
	/* out */
	bool		sent;			/* handed to the library */
	bool		done;			/* JetStream answered (acked or refused) */
	natsStatus	status;			/* NATS_OK when acked; else why not */
	jsErrCode	jerr;
	char		error[200];		/* the library's or the server's text */
} AcPubItem;

/* What happened to a batch as a whole */
typedef struct AcPubBatchResult
{
	int			first_unsent;	/* index of the first item not sent, or n */
	natsStatus	send_status;	/* why it was not sent */
	char		send_error[200];
	bool		closed;			/* the connection is closed now */
	natsStatus	close_status;	/* its last error when closed */
	char		close_error[256];
} AcPubBatchResult;

/*
 * A batch in flight: handed to the library by AcNatsPublishStart(), its
 * answers collected by AcNatsPublishFinish().  PostgreSQL work may run in
 * between, as long as an error on the way calls AcNatsPublishAbandon().
 */
typedef struct AcPubBatch
{
	AcNats	   *n;
	AcPubItem  *items;
	int			sent;			/* items[0..sent) were handed over */
	void	   *slots;			/* the library's messages, for its answers */
	AcPubBatchResult res;
} AcPubBatch;

extern bool AcNatsPublishStart(AcNats *n, AcPubBatch *b, AcPubItem *items,
							   int count, int window);
extern void AcNatsPublishFinish(AcPubBatch *b);
extern void AcNatsPublishAbandon(void);

#endif							/* AC_NATS_CLIENT_H */
