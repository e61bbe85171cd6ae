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
#include "utils/builtins.h"

PG_MODULE_MAGIC;

PG_FUNCTION_INFO_V1(ac_version);

void		_PG_init(void);

/*
 * Define the settings; when preloaded, also reserve shared memory and
 * register the background workers.
 */
void
_PG_init(void)
{
	AcDefineGucs();
	if (!process_shared_preload_libraries_in_progress || IsBinaryUpgrade)
		return;
	AcShmemInit();
	AcRegisterDispatcherWorker();
	AcRegisterRouterWorker();
	AcRegisterMetricsWorker();
}

/* ac_version() returns text: the version of the loaded library. */
Datum
ac_version(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(AC_VERSION));
}
