/*-------------------------------------------------------------------------
 *
 * activity_core.h
 *	  Declarations shared by the files of the activity_core extension.
 *
 * IDENTIFICATION
 *	  src/activity_core.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef ACTIVITY_CORE_H
#define ACTIVITY_CORE_H

#include "postgres.h"

#include "fmgr.h"

#include "compat.h"

#ifndef AC_VERSION
#define AC_VERSION "unknown"
#endif

/*
 * Deepest nesting of arrays and objects an event payload may have; deeper
 * ones are poison in the router and refused by ac_publish (SDK workers
 * cannot decode very deep JSON).
 */
#define AC_MAX_EVENT_DEPTH 100

/* GUC variables (guc.c) */
extern char *ac_database;
extern char *ac_temporal_url;
extern char *ac_temporal_namespace;
extern char *ac_temporal_api_key;
extern char *ac_temporal_api_key_file;
extern char *ac_temporal_tls_ca_file;
extern char *ac_temporal_tls_cert_file;
extern char *ac_temporal_tls_key_file;
extern int	ac_temporal_connect_timeout_ms;
extern int	ac_temporal_request_timeout_ms;
extern int	ac_temporal_concurrency;
extern char *ac_nats_url;
extern char *ac_nats_credentials_file;
extern char *ac_nats_user;
extern char *ac_nats_password_file;
extern char *ac_nats_tls_ca_file;
extern char *ac_nats_tls_cert_file;
extern char *ac_nats_tls_key_file;
extern char *ac_stream_name;
extern char *ac_subject_prefix;
extern char *ac_consumer_name;
extern int	ac_stream_replicas;
extern bool ac_manage_schedules;
extern int	ac_router_batch_size;
extern int	ac_router_concurrency;
extern int	ac_router_max_deliveries;
extern int	ac_router_refresh_interval_s;
extern int	ac_router_ack_wait_ms;
extern int	ac_max_event_bytes;
extern int	ac_reconcile_interval_s;
extern int	ac_reconcile_concurrency;
extern char *ac_metrics_listen;

extern void AcDefineGucs(void);
extern char *AcRedactUrl(const char *urls);

/* Credentials read from files, and kept out of the log (secrets.c) */
extern const char *AcTemporalApiKey(char **error);
extern const char *AcNatsPassword(char **error);
extern void AcInstallSecretRedaction(void);

/* Shared memory (shmem.c) */
#include "port/atomics.h"
#include "storage/spin.h"

typedef enum AcCounter
{
	AC_STAT_SCHEDULE_CHANGES,	/* intents recorded by the trigger */
	AC_STAT_SCHEDULES_APPLIED,	/* intents applied in Temporal */
	AC_STAT_SCHEDULE_RETRIES,	/* transient failures, retried later */
	AC_STAT_SCHEDULE_FAILURES,	/* permanent failures */
	AC_STAT_BACKFILLS,			/* backfill requests sent */
	AC_STAT_TEMPORAL_REQUESTS,	/* HTTP requests sent to Temporal */
	AC_STAT_TEMPORAL_ERRORS,	/* HTTP requests that failed */
	AC_STAT_RECONCILE_RUNS,		/* full reconciles */
	AC_STAT_RECONCILE_REPAIRS,	/* schedules created, updated or deleted by them */
	AC_STAT_EVENTS_RECEIVED,	/* messages fetched by the router */
	AC_STAT_EVENTS_ACKED,		/* messages done and acked */
	AC_STAT_EVENTS_UNMATCHED,	/* valid events no definition matched */
	AC_STAT_EVENTS_RETRIED,		/* messages nak'd for a later try */
	AC_STAT_EVENTS_DEAD,		/* messages sent to ac_dead_letters */
	AC_STAT_WORKFLOWS_STARTED,	/* workflow starts Temporal accepted */
	AC_STAT_WORKFLOWS_ALREADY_STARTED,	/* starts that found the workflow there */
	AC_STAT_EVENTS_PUBLISHED,	/* outbox events published to JetStream */
	AC_STAT_CONDITION_ERRORS,	/* conditions that raised an error or gave no boolean */
	AC_NUM_COUNTERS
} AcCounter;

/* What the router (or the dispatcher) last reported about NATS, for ac_health(). */
typedef enum AcRouterState
{
	AC_ROUTER_UNKNOWN = 0,
	AC_ROUTER_CONNECTED,
	AC_ROUTER_FAILING
} AcRouterState;

/* The requests whose latency and failures are measured (observe.c). */
typedef enum AcOperation
{
	AC_OP_START,				/* StartWorkflowExecution */
	AC_OP_SCHEDULE_CREATE,
	AC_OP_SCHEDULE_UPDATE,
	AC_OP_SCHEDULE_DELETE,
	AC_OP_SCHEDULE_DESCRIBE,
	AC_OP_SCHEDULE_BACKFILL,	/* PATCH with a backfill request */
	AC_OP_SCHEDULE_MATCHING_TIMES,	/* the fire times a backfill replays */
	AC_OP_SCHEDULE_LIST,
	AC_OP_WORKFLOW_LIST,		/* ac_runs() */
	AC_OP_HEALTH,				/* ac_health()'s system and namespace reads */
	AC_OP_OTHER,
	AC_OP_PUBLISH,				/* NATS JetStream publish (not Temporal) */
	AC_NUM_OPERATIONS
} AcOperation;

#define AC_NUM_TEMPORAL_OPERATIONS AC_OP_PUBLISH

/* Classes of failed requests. */
typedef enum AcFailure
{
	AC_FAIL_TRANSIENT,			/* retried: unreachable, 5xx, auth */
	AC_FAIL_PERMANENT,			/* refused for good: invalid argument */
	AC_FAIL_TIMEOUT,			/* no answer in time */
	AC_NUM_FAILURES
} AcFailure;

/* The outboxes whose backlog is measured. */
typedef enum AcOutbox
{
	AC_OUTBOX_SCHEDULE,			/* ac_schedule_intents */
	AC_OUTBOX_START,			/* ac_start_outbox */
	AC_OUTBOX_PUBLISH,			/* ac_outbox */
	AC_NUM_OUTBOXES
} AcOutbox;

/* Upper bounds (seconds) of the histogram buckets, +Inf not included. */
#define AC_HIST_BUCKETS 16

/* A histogram in shared memory: counts per bucket (not cumulative), sum. */
typedef struct AcHistogram
{
	pg_atomic_uint64 buckets[AC_HIST_BUCKETS + 1];
	pg_atomic_uint64 sum_us;
} AcHistogram;

/* Gauges one process measures and /metrics shows. */
typedef struct AcGauges
{
	pg_atomic_uint64 outbox_pending[AC_NUM_OUTBOXES];
	pg_atomic_uint64 outbox_failed[AC_NUM_OUTBOXES];
	pg_atomic_uint64 outbox_oldest[AC_NUM_OUTBOXES];	/* TimestampTz, 0 = none */
	pg_atomic_uint64 outbox_measured_at;	/* TimestampTz, 0 = never */
	pg_atomic_uint64 consumer_pending;
	pg_atomic_uint64 consumer_ack_pending;
	pg_atomic_uint64 consumer_measured_at;	/* TimestampTz, 0 = never */
	pg_atomic_uint64 last_reconcile;	/* TimestampTz of the last success */
	pg_atomic_uint64 reconcile_drifted;
} AcGauges;

typedef struct AcShared
{
	slock_t		mutex;			/* protects router_error, publisher_error */
	char		router_error[256];
	pg_atomic_uint32 router_state;
	char		publisher_error[256];
	char		stream_note[2][256];	/* the stream differs from the settings:
									 * as the router [0], the dispatcher [1] saw it */
	pg_atomic_uint32 publisher_state;	/* the dispatcher's NATS connection */
	pg_atomic_uint32 dispatcher_procno;
	pg_atomic_uint64 event_generation;	/* bumped when event definitions change */
	pg_atomic_uint64 nats_max_payload;	/* the server's max_payload, 0 = unknown */
	pg_atomic_uint64 counters[AC_NUM_COUNTERS];
	AcHistogram temporal_latency[AC_NUM_TEMPORAL_OPERATIONS];
	AcHistogram event_age;		/* NATS timestamp to Temporal's answer */
	AcHistogram outbox_age[AC_NUM_OUTBOXES];	/* entry age when drained */
	pg_atomic_uint64 failures[AC_NUM_OPERATIONS][AC_NUM_FAILURES];
	AcGauges	gauges;
} AcShared;

extern AcShared *ac_shared;
extern const char *const ac_counter_names[AC_NUM_COUNTERS];

extern void AcShmemInit(void);
extern void AcRegisterDispatcher(void);
extern void AcWakeDispatcher(void);
extern void AcCount(AcCounter counter, uint64 n);
extern uint64 AcEventGeneration(void);
extern void AcSetRouterState(AcRouterState state, const char *error);
extern void AcSetPublisherState(AcRouterState state, const char *error);
extern void AcSetStreamNote(bool publisher, const char *note);
extern void AcBumpEventGeneration(void);
extern int64 AcNatsMaxPayload(void);
extern void AcSetNatsMaxPayload(int64 max_payload);
extern const char *const ac_counter_help[AC_NUM_COUNTERS];

/* Histograms, failure counters and gauges (observe.c) */
extern void AcObserveSeconds(AcHistogram *h, double seconds);
extern void AcObserveLatency(AcOperation op, double seconds);
extern void AcObserveEventAge(int64 nats_timestamp_ns);
extern void AcObserveOutboxAge(AcOutbox outbox, double seconds);
extern void AcCountFailure(AcOperation op, AcFailure failure);
extern void AcSetConsumerPending(uint64 pending, uint64 ack_pending);
extern void AcReconcileSucceeded(int drifted);
extern int	AcRefreshOutboxGauges(const char *schema, int limit);

/* One series of /metrics and of ac_stats. */
typedef struct AcSeries
{
	const char *family;			/* name without "activity_core_" */
	const char *type;			/* counter, gauge or histogram */
	const char *help;
	const char *suffix;			/* "", "_total", "_bucket", "_sum", "_count" */
	bool		first;			/* the first series of its family */
	int			nlabels;
	const char *keys[2];
	const char *values[2];
	double		value;
} AcSeries;

typedef void (*AcSeriesFn) (const AcSeries *s, void *arg);
extern void AcEachSeries(AcSeriesFn fn, void *arg);

/* The extension's own objects, found through its catalog entry (catalog.c) */
extern Oid	AcExtensionNamespace(void);
extern Oid	AcDefinitionsRelid(void);
extern char *AcExtensionSchema(void);
extern char *AcWorkerSchema(void);
extern void AcCheckTriggerTarget(FunctionCallInfo fcinfo, const char *function);
extern void AcRequireSelect(const char *relname);

/* What a committing transaction tells the workers (wakeup.c) */
extern void AcWakeDispatcherAtCommit(void);
extern void AcEventsChangedAtCommit(void);

/* Apply schedule intents to Temporal (schedule.c) */
extern int	AcSyncScheduleBatch(const char *schema, int limit);

/* The dispatcher's periodic full reconcile (reconcile.c) */
extern void AcReconcileInWorker(const char *schema);

/* Drain ac_outbox to JetStream (publish_drain.c) */
extern int	AcDrainOutbox(const char *schema, int limit);
extern void AcPublisherReloaded(void);

/* Drain ac_start_outbox to Temporal (start_drain.c) */
extern int	AcDrainStarts(const char *schema, int limit);

/* Workflow, request and installation ids (ids.c) */
extern char *AcNewUuid(void);
extern char *AcDerivedUuid(const char *key);
extern char *AcInstallationId(void);

/* Worker transactions (worker_xact.c) */
typedef void (*AcRowFn) (void *arg);
typedef void (*AcEachRowFn) (int i, void *arg);
extern void AcWorkerBegin(void);
extern void AcWorkerCommit(void);
extern void AcWorkerRecover(MemoryContext cxt);
extern char *AcTryInSubxact(AcRowFn fn, void *arg);
extern char **AcEachRowIsolated(int n, AcEachRowFn fn, void *arg);

/* JSON value type names for messages; trigger_config checks (validate.c) */
struct JsonbValue;
extern const char *AcJsonTypeName(struct JsonbValue *v);
extern Datum AcNormaliseTriggerConfig(const char *trigger_type, Datum config);

/* Event conditions: the check at the statement (condition.c) */
#define AC_MAX_CONDITION_BYTES 8192
extern char *AcNormaliseCondition(const char *text);

/* Identifier limits of Temporal and NATS (limits.c) */
#define AC_TEMPORAL_MAX_ID_BYTES 1000	/* Temporal's limit.maxIDLength default */
#define AC_MAX_EVENT_TYPE_BYTES 255 /* keeps subjects far below NATS's 4 KB line */
/* NULL when event_type can be a NATS subject suffix, else why not (palloc'd) */
extern char *AcEventTypeProblem(const char *event_type);
extern char *AcTaskQueueProblem(const char *task_queue);
extern char *AcWorkflowTypeProblem(const char *workflow_type);
#define AC_MAX_NAME_BYTES 1000		/* a definition's name, as Temporal's identifiers */
#define AC_TEMPORAL_MAX_BLOB_BYTES (2 * 1024 * 1024)	/* limit.blobSize.error */
extern char *AcNameProblem(const char *name);
extern char *AcArgumentProblem(const char *what, int64 bytes);
extern char *AcShortValue(const char *value);
#define AC_MAX_NATS_NAME_BYTES 255
extern char *AcNatsNameProblem(const char *name);
struct JsonbContainer;
extern int	AcJsonbDepth(struct JsonbContainer *c, int limit);

/* What ac_publish() refuses, for other writers of ac_outbox (publish_check.c) */
extern void AcCheckEventBytes(const char *id, int64 bytes);

/* Time zone names (timezone.c) */
extern const char *AcCanonicalTimezone(const char *name);

#endif							/* ACTIVITY_CORE_H */
