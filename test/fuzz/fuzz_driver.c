/*-------------------------------------------------------------------------
 *
 * fuzz_driver.c
 *	  Run a libFuzzer target inside a PostgreSQL backend.
 *
 * The envelope parser, the trigger_config validator and the Temporal
 * response readers use jsonb, ereport and memory contexts, so their fuzz
 * targets run in a real server: this file, the targets and the extension
 * files they need are built with -fsanitize=fuzzer-no-link,address,undefined
 * into a fuzz-only library (never installed) that also links libFuzzer
 * without its main.  test/fuzz/run.sh starts `postgres --single` on a
 * throwaway cluster with the ASan runtime preloaded and calls
 * ac_fuzz_run(target, args) there; that hands the arguments to
 * LLVMFuzzerRunDriver and does not return (libFuzzer exits the process).
 *
 * Each input runs in a memory context of its own that is reset afterwards;
 * an ereport(ERROR) is the input refused (the error is flushed).  A crash,
 * sanitizer report or leak of malloc'd memory (jansson) ends the run with
 * libFuzzer's report and the input saved as crash-* or leak-*.
 *
 * IDENTIFICATION
 *	  test/fuzz/fuzz_driver.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "fmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#include "fuzz.h"

PG_MODULE_MAGIC;

PG_FUNCTION_INFO_V1(ac_fuzz_run);

extern int	LLVMFuzzerRunDriver(int *argc, char ***argv,
								int (*cb) (const uint8_t *data, size_t size));

static AcFuzzTarget current_target;
static MemoryContext input_cxt;

/* Run one input: errors are refusals, memory is released after each. */
static int
RunOneInput(const uint8_t *data, size_t size)
{
	MemoryContext old = MemoryContextSwitchTo(input_cxt);

	PG_TRY();
	{
		current_target(data, size);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(input_cxt);
		FlushErrorState();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(old);
	MemoryContextReset(input_cxt);
	return 0;
}

/* ac_fuzz_run(target text, args text[]): run libFuzzer on one target. */
Datum
ac_fuzz_run(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	ArrayType  *args = PG_GETARG_ARRAYTYPE_P(1);
	Datum	   *elems;
	bool	   *nulls;
	int			nelems;
	int			argc;
	char	  **argv;

	if (strcmp(name, "envelope") == 0)
		current_target = AcFuzzEnvelope;
	else if (strcmp(name, "validate") == 0)
		current_target = AcFuzzValidate;
	else if (strcmp(name, "temporal") == 0)
		current_target = AcFuzzTemporal;
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown fuzz target \"%s\"", name),
				 errhint("The targets are envelope, validate and temporal.")));

	deconstruct_array_builtin(args, TEXTOID, &elems, &nulls, &nelems);
	argv = palloc0(sizeof(char *) * (nelems + 2));
	argv[0] = psprintf("fuzz_%s", name);
	for (int i = 0; i < nelems; i++)
		argv[i + 1] = nulls[i] ? "" : TextDatumGetCString(elems[i]);
	argc = nelems + 1;

	/* warnings of the code under test are not reports */
	SetConfigOption("client_min_messages", "error", PGC_SUSET, PGC_S_SESSION);
	SetConfigOption("log_min_messages", "fatal", PGC_SUSET, PGC_S_SESSION);

	/*
	 * libFuzzer keeps a signal handler it finds in place: give it back
	 * SIGINT and SIGTERM (stop and report), SIGALRM (-timeout) and SIGFPE
	 * (a crash, not the server's "floating-point exception" ERROR).
	 */
	pqsignal(SIGINT, SIG_DFL);
	pqsignal(SIGTERM, SIG_DFL);
	pqsignal(SIGALRM, SIG_DFL);
	pqsignal(SIGFPE, SIG_DFL);

	input_cxt = AllocSetContextCreate(TopMemoryContext, "fuzz input",
									  ALLOCSET_DEFAULT_SIZES);
	PG_RETURN_INT32(LLVMFuzzerRunDriver(&argc, &argv, RunOneInput));
}

/* Report a broken invariant of a target and abort: libFuzzer's crash. */
void
AcFuzzFail(const char *target, const char *what)
{
	fprintf(stderr, "fuzz_%s: %s\n", target, what);
	abort();
}
