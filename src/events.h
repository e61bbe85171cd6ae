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
	Jsonb	   *payload;
	Jsonb	   *envelope;
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

/* The index of event definitions (event_index.c) */
extern AcEventIndex *AcBuildEventIndex(const char *schema, MemoryContext parent);
extern void AcFreeEventIndex(AcEventIndex *idx);
extern int	AcEventIndexSize(AcEventIndex *idx);
extern List *AcMatchEvent(AcEventIndex *idx, const char *type, Jsonb *payload);

#endif							/* AC_EVENTS_H */
