/*-------------------------------------------------------------------------
 *
 * bench.c
 *	  ac_router_bench(): a benchmark of the router's parse and match cost,
 *	  for bench/ only.
 *
 * The function is not part of the default install: bench/setup.sql creates
 * it for the benchmarks.  The symbol stays in the library because the
 * 0.1.0 install script creates the function too.
 *
 * IDENTIFICATION
 *	  src/bench.c
 *
 *-------------------------------------------------------------------------
 */
#include "activity_core.h"

#include "access/htup_details.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "portability/instr_time.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"

#include "events.h"

PG_FUNCTION_INFO_V1(ac_router_bench);

/*
 * ac_router_bench(envelope jsonb, iterations int) returns (definitions,
 * parse_us, match_us, matches): the router's cost per event, measured in
 * this backend on the current definitions with the router's own code.
 */
Datum
ac_router_bench(PG_FUNCTION_ARGS)
{
	Jsonb	   *envelope = PG_GETARG_JSONB_P(0);
	int			iterations = PG_GETARG_INT32(1);
	char	   *text = JsonbToCString(NULL, &envelope->root, VARSIZE(envelope));
	int			len = strlen(text);
	AcEnvelope	env;
	AcEventIndex *idx;
	instr_time	t0;
	instr_time	t1;
	double		parse_us;
	double		match_us;
	int			matches = 0;
	TupleDesc	desc;
	Datum		values[4];
	bool		nulls[4] = {false, false, false, false};
	MemoryContext loop = AllocSetContextCreate(CurrentMemoryContext, "bench",
											   ALLOCSET_DEFAULT_SIZES);
	MemoryContext old;
	MemoryContext match_cxt;

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	iterations = Max(1, Min(iterations, 10000000));
	old = CurrentMemoryContext;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	/* the index must outlive SPI's own memory */
	idx = AcBuildEventIndex(AcExtensionSchema(), old);
	SPI_finish();

	old = MemoryContextSwitchTo(loop);
	INSTR_TIME_SET_CURRENT(t0);
	for (int i = 0; i < iterations; i++)
	{
		CHECK_FOR_INTERRUPTS();
		if (!AcParseEnvelope(text, len, MaxAllocSize, &env))
			ereport(ERROR, (errmsg("poison envelope: %s", env.reason)));
		MemoryContextReset(loop);
	}
	INSTR_TIME_SET_CURRENT(t1);
	INSTR_TIME_SUBTRACT(t1, t0);
	parse_us = INSTR_TIME_GET_DOUBLE(t1) * 1e6 / iterations;

	(void) AcParseEnvelope(text, len, MaxAllocSize, &env);
	MemoryContextSwitchTo(old);
	match_cxt = AllocSetContextCreate(CurrentMemoryContext, "bench match", ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(match_cxt);
	INSTR_TIME_SET_CURRENT(t0);
	for (int i = 0; i < iterations; i++)
	{
		List	   *m;

		CHECK_FOR_INTERRUPTS();
		/* the payload's jsonb, when a definition needs it, is part of matching */
		env.payload = NULL;
		m = AcMatchEvent(idx, &env);
		matches = list_length(m);
		MemoryContextReset(match_cxt);
	}
	INSTR_TIME_SET_CURRENT(t1);
	INSTR_TIME_SUBTRACT(t1, t0);
	match_us = INSTR_TIME_GET_DOUBLE(t1) * 1e6 / iterations;
	MemoryContextSwitchTo(old);

	values[0] = Int32GetDatum(AcEventIndexSize(idx));
	values[1] = Float8GetDatum(parse_us);
	values[2] = Float8GetDatum(match_us);
	values[3] = Int32GetDatum(matches);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}
