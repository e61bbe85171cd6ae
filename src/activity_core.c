/*-------------------------------------------------------------------------
 *
 * activity_core.c
 *	  Module entry point of the activity_core extension.
 *
 * _PG_init runs in the postmaster when the library is preloaded, and in
 * each backend that loads it otherwise.  It defines settings, and when
 * preloaded reserves shared memory and registers the workers.  No thread,
 * no network client and no library with threads of its own is started
 * here, because every backend is forked from the postmaster.
 *
 * IDENTIFICATION
 *	  src/activity_core.c
 *
 *-------------------------------------------------------------------------
 */
#include "activity_core.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "utils/builtins.h"

PG_MODULE_MAGIC;

PG_FUNCTION_INFO_V1(ac_version);

void		_PG_init(void);

/*
 * Register one background worker: started once recovery is over, restarted
 * 5 s after it exits with an error or crashes.
 */
static void
RegisterWorker(const char *role, const char *function, bool database)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS |
		(database ? BGWORKER_BACKEND_DATABASE_CONNECTION : 0);
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 5;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "activity_core");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "%s", function);
	snprintf(worker.bgw_name, BGW_MAXLEN, "activity_core %s", role);
	snprintf(worker.bgw_type, BGW_MAXLEN, "activity_core %s", role);
	RegisterBackgroundWorker(&worker);
}

/*
 * Define the settings; when preloaded, also reserve shared memory and
 * register the background workers.
 */
void
_PG_init(void)
{
	AcDefineGucs();
	AcInstallSecretRedaction();
	if (!process_shared_preload_libraries_in_progress || IsBinaryUpgrade)
		return;
	AcShmemInit();
	RegisterWorker("dispatcher", "ac_dispatcher_main", true);
	RegisterWorker("router", "ac_router_main", true);
	RegisterWorker("metrics", "ac_metrics_main", false);
}

/* ac_version() returns text: the version of the loaded library. */
Datum
ac_version(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(AC_VERSION));
}
