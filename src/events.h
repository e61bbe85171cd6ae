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
#include "utils/jsonpath.h"

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
	int			nflat;			/* filters is an object of nflat scalar
								 * members (keys and values below), or -1 */
	JsonbValue *flat_keys;
	JsonbValue *flat_values;
	bool		enabled;
	char	   *condition_text; /* trigger_config.condition, or NULL */
	JsonPath   *condition;		/* parsed once, when the index is built */
	char	   *condition_error;	/* why a stored condition does not parse */
} AcEventDef;

/* What a condition says about one payload (condition.c) */
typedef enum AcCondResult
{
	AC_COND_TRUE,
	AC_COND_FALSE,
	AC_COND_UNKNOWN,			/* no single boolean: jsonb_path_match gives NULL */
	AC_COND_ERROR				/* the executor raised an error */
} AcCondResult;

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

/* Conditions (condition.c) */
extern JsonPath *AcParseCondition(const char *text, char **error);
extern AcCondResult AcEvalCondition(JsonPath *condition, Jsonb *payload, char **error);

#endif							/* AC_EVENTS_H */
