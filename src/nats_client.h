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

typedef struct AcNats
{
	natsConnection *nc;
	jsCtx	   *js;
	natsSubscription *sub;
	char	   *settings;		/* TopMemoryContext: the settings it was made
								 * with (AcNatsSettingsChanged) */
} AcNats;

/* The NATS client (nats_client.c) */
extern AcNats *AcNatsConnect(const char *name, char **error);
extern void AcNatsClose(AcNats *n);
extern bool AcNatsSettingsChanged(const AcNats *n);
extern void AcNatsShutdown(void);
extern bool AcNatsEnsureStream(AcNats *n, char **error);
extern bool AcNatsEnsureConsumer(AcNats *n, char **error);
extern bool AcNatsSubscribe(AcNats *n, char **error);
extern void AcNatsMeasureConsumer(AcNats *n);
extern char *AcNatsPublish(AcNats *n, const char *subject, const char *msg_id,
						   const char *data, int len, bool *connection_error,
						   bool *permanent);
extern int64 AcNatsMessageSize(const char *msg_id, int len);
extern char *AcNatsError(natsStatus s);

#endif							/* AC_NATS_CLIENT_H */
