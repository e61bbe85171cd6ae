/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  Shared memory of activity_core: how to wake the dispatcher, and the
 *	  counters behind ac_stats and /metrics.
 *
 * Locking: a spinlock guards the last NATS error texts of the router and
 * of the dispatcher's publisher, and the note on the stream; nothing else
 * needs one.  The dispatcher publishes its PGPROC number with
 * an atomic store when it starts and clears it when it exits; backends
 * read it atomically and set that process's latch.  Counters are 64-bit
 * atomics bumped by whichever process does the work.  The NATS server's
 * max_payload is an atomic the dispatcher stores once connected (0 while
 * unknown), so that ac_publish can refuse what NATS would.  No process-local
 * pointer or file descriptor is ever stored here.
 *
 * IDENTIFICATION
 *	  src/shmem.c
 *
 *-------------------------------------------------------------------------
 */
#include "activity_core.h"

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/tuplestore.h"
#include "access/htup_details.h"

#include "temporal.h"

#define NO_PROC PG_UINT32_MAX

AcShared   *ac_shared = NULL;

PG_FUNCTION_INFO_V1(ac_stats);

/* Names of the counters, as ac_stats and /metrics show them. */
const char *const ac_counter_names[] = {
	"schedule_changes",
	"schedules_applied",
	"schedule_retries",
	"schedule_failures",
	"backfills",
	"temporal_requests",
	"temporal_errors",
	"reconcile_runs",
	"reconcile_repairs",
	"events_received",
	"events_acked",
	"events_unmatched",
	"events_retried",
	"events_dead_lettered",
	"workflows_started",
	"workflows_already_started",
	"events_published",
	"condition_errors"
};

/* What each counter counts, for the HELP lines of /metrics and ac_stats. */
const char *const ac_counter_help[] = {
	"Schedule changes recorded by the definitions trigger.",
	"Schedule changes applied in Temporal.",
	"Schedule changes that failed for a transient reason and are retried.",
	"Schedule changes Temporal refused for good.",
	"Backfill requests sent to Temporal.",
	"HTTP requests sent to Temporal.",
	"HTTP requests to Temporal that failed.",
	"Full reconciles of Temporal against the definitions.",
	"Schedules created, updated or deleted by reconciles.",
	"Messages fetched by the router.",
	"Messages routed and acknowledged.",
	"Valid events that no definition matched.",
	"Messages handed back to NATS for a later try.",
	"Messages written to ac_dead_letters.",
	"Workflow starts Temporal accepted.",
	"Workflow starts that found the workflow already there.",
	"Outbox events published to JetStream.",
	"Event conditions that raised an error or gave no boolean (no match)."
};

/* a counter added to AcCounter without its name or help fails the build */
StaticAssertDecl(lengthof(ac_counter_names) == AC_NUM_COUNTERS,
				 "ac_counter_names must name every counter");
StaticAssertDecl(lengthof(ac_counter_help) == AC_NUM_COUNTERS,
				 "ac_counter_help must describe every counter");

#if PG_VERSION_NUM >= 150000
static shmem_request_hook_type prev_shmem_request_hook = NULL;
#endif
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* Ask for our share of shared memory. */
static void
AcShmemRequest(void)
{
#if PG_VERSION_NUM >= 150000
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
#endif
	RequestAddinShmemSpace(MAXALIGN(sizeof(AcShared)));
}

/* Create or attach to the shared state. */
static void
AcShmemStartup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	ac_shared = ShmemInitStruct("activity_core", sizeof(AcShared), &found);
	if (!found)
	{
		pg_atomic_init_u32(&ac_shared->dispatcher_procno, NO_PROC);
		pg_atomic_init_u32(&ac_shared->router_state, AC_ROUTER_UNKNOWN);
		SpinLockInit(&ac_shared->mutex);
		ac_shared->router_error[0] = '\0';
		pg_atomic_init_u32(&ac_shared->publisher_state, AC_ROUTER_UNKNOWN);
		ac_shared->publisher_error[0] = '\0';
		pg_atomic_init_u64(&ac_shared->event_generation, 1);
		pg_atomic_init_u64(&ac_shared->nats_max_payload, 0);
		for (int i = 0; i < AC_NUM_COUNTERS; i++)
			pg_atomic_init_u64(&ac_shared->counters[i], 0);
		/* histograms, failure counters and gauges: all 64-bit atomics */
		{
			pg_atomic_uint64 *first = (pg_atomic_uint64 *) &ac_shared->temporal_latency[0];
			pg_atomic_uint64 *end = (pg_atomic_uint64 *) (&ac_shared->gauges + 1);

			StaticAssertStmt(offsetof(AcShared, gauges) + sizeof(AcGauges) ==
							 sizeof(AcShared), "the gauges end the shared state");
			for (pg_atomic_uint64 *a = first; a < end; a++)
				pg_atomic_init_u64(a, 0);
		}
	}
	LWLockRelease(AddinShmemInitLock);
}

/* Install the shared memory hooks (preload only). */
void
AcShmemInit(void)
{
#if PG_VERSION_NUM >= 150000
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = AcShmemRequest;
#else
	AcShmemRequest();
#endif
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = AcShmemStartup;
}

/* Forget the dispatcher's latch when it exits. */
static void
AcDispatcherDetach(int code, Datum arg)
{
	if (ac_shared)
		pg_atomic_write_u32(&ac_shared->dispatcher_procno, NO_PROC);
}

/* Publish the calling process as the dispatcher to wake. */
void
AcRegisterDispatcher(void)
{
	if (ac_shared == NULL)
		return;
	pg_atomic_write_u32(&ac_shared->dispatcher_procno, AcMyProcNumber());
	on_shmem_exit(AcDispatcherDetach, (Datum) 0);
}

/* Wake the dispatcher, if there is one. */
void
AcWakeDispatcher(void)
{
	uint32		procno;

	if (ac_shared == NULL)
		return;
	procno = pg_atomic_read_u32(&ac_shared->dispatcher_procno);
	if (procno != NO_PROC && procno < ProcGlobal->allProcCount)
		SetLatch(&ProcGlobal->allProcs[procno].procLatch);
}

/* Add to a shared counter (no-op without shared memory). */
void
AcCount(AcCounter counter, uint64 n)
{
	if (ac_shared)
		pg_atomic_fetch_add_u64(&ac_shared->counters[counter], n);
}

/* Count the outcome of a StartWorkflowExecution request in ac_stats. */
void
AcCountStart(AcTemporalStatus status)
{
	AcCount(AC_STAT_TEMPORAL_REQUESTS, 1);
	if (status == AC_T_OK)
		AcCount(AC_STAT_WORKFLOWS_STARTED, 1);
	else if (status == AC_T_ALREADY_EXISTS)
		AcCount(AC_STAT_WORKFLOWS_ALREADY_STARTED, 1);
	else
		AcCount(AC_STAT_TEMPORAL_ERRORS, 1);
}

/* The generation of the event definitions (0 without shared memory). */
uint64
AcEventGeneration(void)
{
	return ac_shared ? pg_atomic_read_u64(&ac_shared->event_generation) : 0;
}

/* Tell the router that event definitions changed. */
void
AcBumpEventGeneration(void)
{
	if (ac_shared)
		pg_atomic_fetch_add_u64(&ac_shared->event_generation, 1);
}

/* The NATS server's max_payload as the dispatcher last saw it; 0 = unknown. */
int64
AcNatsMaxPayload(void)
{
	return ac_shared ? (int64) pg_atomic_read_u64(&ac_shared->nats_max_payload) : 0;
}

/* Record the NATS server's max_payload (the dispatcher, once connected). */
void
AcSetNatsMaxPayload(int64 max_payload)
{
	if (ac_shared)
		pg_atomic_write_u64(&ac_shared->nats_max_payload, (uint64) Max(max_payload, 0));
}

/* ac_stats() returns setof (name, value): the shared counters. */
Datum
ac_stats(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	AcRequireSelect("ac_stats");
	InitMaterializedSRF(fcinfo, 0);
	if (ac_shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("activity_core must be loaded via shared_preload_libraries to count")));
	for (int i = 0; i < AC_NUM_COUNTERS; i++)
	{
		Datum		values[2];
		bool		nulls[2] = {false, false};

		values[0] = CStringGetTextDatum(ac_counter_names[i]);
		values[1] = Int64GetDatum((int64) pg_atomic_read_u64(&ac_shared->counters[i]));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* Record what the router knows about its NATS connection. */
void
AcSetRouterState(AcRouterState state, const char *error)
{
	if (ac_shared == NULL)
		return;
	SpinLockAcquire(&ac_shared->mutex);
	strlcpy(ac_shared->router_error, error ? error : "", sizeof(ac_shared->router_error));
	SpinLockRelease(&ac_shared->mutex);
	pg_atomic_write_u32(&ac_shared->router_state, (uint32) state);
}

/* Record what the dispatcher knows about its publishing NATS connection. */
void
AcSetPublisherState(AcRouterState state, const char *error)
{
	if (ac_shared == NULL)
		return;
	SpinLockAcquire(&ac_shared->mutex);
	strlcpy(ac_shared->publisher_error, error ? error : "", sizeof(ac_shared->publisher_error));
	SpinLockRelease(&ac_shared->mutex);
	pg_atomic_write_u32(&ac_shared->publisher_state, (uint32) state);
}

/*
 * Record how the stream differs from the settings (its replicas), or clear
 * it with NULL, as the router or the dispatcher (publisher) saw it.  Each
 * has a note of its own, so that one that has not reloaded yet cannot clear
 * what the other found; ac_router_status() and ac_publisher_status() show
 * it as the error of a connected router or publisher.
 */
void
AcSetStreamNote(bool publisher, const char *note)
{
	char	   *slot;

	if (ac_shared == NULL)
		return;
	slot = ac_shared->stream_note[publisher ? 1 : 0];
	SpinLockAcquire(&ac_shared->mutex);
	strlcpy(slot, note ? note : "", sizeof(ac_shared->stream_note[0]));
	SpinLockRelease(&ac_shared->mutex);
}

/*
 * A (state, error) row from one of the NATS states in shared memory; while
 * connected, its error column carries that side's note on the stream, if any.
 */
static Datum
NatsStatusRow(FunctionCallInfo fcinfo, bool publisher)
{
	TupleDesc	desc;
	Datum		values[2];
	bool		nulls[2] = {false, false};
	char		error[256];
	uint32		state;

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	if (ac_shared == NULL)
	{
		values[0] = CStringGetTextDatum("not loaded");
		nulls[1] = true;
		PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
	}
	state = pg_atomic_read_u32(publisher ? &ac_shared->publisher_state : &ac_shared->router_state);
	SpinLockAcquire(&ac_shared->mutex);
	strlcpy(error, publisher ? ac_shared->publisher_error : ac_shared->router_error, sizeof(error));
	if (state == AC_ROUTER_CONNECTED)
		strlcpy(error, ac_shared->stream_note[publisher ? 1 : 0], sizeof(error));
	SpinLockRelease(&ac_shared->mutex);
	values[0] = CStringGetTextDatum(state == AC_ROUTER_CONNECTED ? "connected" :
									state == AC_ROUTER_FAILING ? "failing" : "unknown");
	values[1] = CStringGetTextDatum(error);
	nulls[1] = error[0] == '\0';
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}

PG_FUNCTION_INFO_V1(ac_router_status);

/* ac_router_status() returns (state, error): the router's view of NATS. */
Datum
ac_router_status(PG_FUNCTION_ARGS)
{
	return NatsStatusRow(fcinfo, false);
}

PG_FUNCTION_INFO_V1(ac_publisher_status);

/*
 * ac_publisher_status() returns (state, error): the view of NATS of the
 * dispatcher, which publishes ac_outbox.
 */
Datum
ac_publisher_status(PG_FUNCTION_ARGS)
{
	return NatsStatusRow(fcinfo, true);
}
