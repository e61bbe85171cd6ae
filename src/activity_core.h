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
extern int	ac_router_batch_size;
extern int	ac_router_concurrency;
extern int	ac_router_max_deliveries;
extern int	ac_router_refresh_interval_s;
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

typedef struct AcShared
{
	slock_t		mutex;			/* protects router_error, publisher_error */
	char		router_error[256];
	pg_atomic_uint32 router_state;
	char		publisher_error[256];
	pg_atomic_uint32 publisher_state;	/* the dispatcher's NATS connection */
	pg_atomic_uint32 dispatcher_procno;
	pg_atomic_uint64 event_generation;	/* bumped when event definitions change */
	pg_atomic_uint64 nats_max_payload;	/* the server's max_payload, 0 = unknown */
	pg_atomic_uint64 counters[AC_NUM_COUNTERS];
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
extern void AcBumpEventGeneration(void);
extern int64 AcNatsMaxPayload(void);
extern void AcSetNatsMaxPayload(int64 max_payload);

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

/* Time zone names (timezone.c) */
extern const char *AcCanonicalTimezone(const char *name);

#endif							/* ACTIVITY_CORE_H */
