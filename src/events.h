/*-------------------------------------------------------------------------
 *
 * events.h
 *	  Event envelopes (envelope.c) and the in-memory index of event
 *	  definitions (event_index.c).
 *
 * IDENTIFICATION
 *	  src/events.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef AC_EVENTS_H
#define AC_EVENTS_H

#include "nodes/pg_list.h"
#include "utils/jsonb.h"

/* A parsed envelope; reason is set when the message is poison. */
typedef struct AcEnvelope
{
	char	   *event_id;
	char	   *type;
	Jsonb	   *payload;		/* NULL until AcEnvelopePayload() makes it */
	const char *payload_text;	/* the payload's JSON text in text, or NULL */
	int			payload_len;
	char	   *text;			/* the envelope as received */
	const char *reason;
} AcEnvelope;

/* An event definition as the router keeps it. */
typedef struct AcEventDef
{
	char	   *id;
	char	   *name;
	char	   *workflow_type;
	char	   *task_queue;
	char	   *input;			/* JSON text */
	char	   *event_type;
	Jsonb	   *filters;
	bool		match_all;		/* empty filters */
	bool		enabled;
} AcEventDef;

typedef struct AcEventIndex AcEventIndex;

/* Envelopes (envelope.c) */
extern bool AcParseEnvelope(const char *data, int len, int max_bytes, AcEnvelope *env);
extern Jsonb *AcEnvelopePayload(AcEnvelope *env);

/* ac_publish()'s checks; returns the payload as JSON text (publish_check.c) */
extern char *AcCheckPublish(const char *type, Jsonb *payload, const char *id);

/* The index of event definitions (event_index.c) */
extern AcEventIndex *AcBuildEventIndex(const char *schema, MemoryContext parent);
extern void AcFreeEventIndex(AcEventIndex *idx);
extern int	AcEventIndexSize(AcEventIndex *idx);
extern bool AcDefinitionNeedsPayload(const AcEventDef *d);
extern List *AcMatchEvent(AcEventIndex *idx, AcEnvelope *env);

#endif							/* AC_EVENTS_H */
