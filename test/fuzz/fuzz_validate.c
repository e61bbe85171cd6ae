/*-------------------------------------------------------------------------
 *
 * fuzz_validate.c
 *	  libFuzzer target: the trigger_config validator, all trigger types.
 *
 * An input is "<trigger_type>\n<trigger_config JSON>" (no newline: the
 * whole input is the JSON and the type is cron).  The JSON is read with
 * jsonb_in, as an INSERT does; text jsonb refuses is not our input.  The
 * pair goes to AcNormaliseTriggerConfig(), the code path of the trigger
 * ac_definitions_validate, for cron, event, manual and any other type.
 * Checked: an accepted config's normal form is an object that the
 * validator accepts again and leaves unchanged (normalising is
 * idempotent, so a stored config never changes on the next UPDATE).
 *
 * IDENTIFICATION
 *	  test/fuzz/fuzz_validate.c
 *
 *-------------------------------------------------------------------------
 */
#include "activity_core.h"

#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"

#include "fuzz.h"

/* Validate one (trigger_type, trigger_config) pair. */
int
AcFuzzValidate(const uint8_t *data, size_t size)
{
	const char *nl = memchr(data, '\n', size);
	char	   *type;
	char	   *json;
	volatile Datum config = (Datum) 0;
	Datum		normal;
	volatile Datum again = (Datum) 0;
	volatile bool parsed = false;
	MemoryContext cxt = CurrentMemoryContext;

	if (memchr(data, '\0', size) != NULL)
		return 0;				/* neither a text nor a jsonb value holds NUL */
	if (nl)
	{
		type = pnstrdup((const char *) data, nl - (const char *) data);
		json = pnstrdup(nl + 1, size - (nl + 1 - (const char *) data));
	}
	else
	{
		type = "cron";
		json = pnstrdup((const char *) data, size);
	}

	/* jsonb_in's refusals are not the validator's: count them apart */
	PG_TRY();
	{
		config = DirectFunctionCall1(jsonb_in, CStringGetDatum(json));
		parsed = true;
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		FlushErrorState();
	}
	PG_END_TRY();
	if (!parsed)
		return 0;

	normal = AcNormaliseTriggerConfig(type, config);	/* may ereport */
	{
		Jsonb	   *n = DatumGetJsonbP(normal);

		if (!JB_ROOT_IS_OBJECT(n) || JB_ROOT_IS_SCALAR(n))
			AcFuzzFail("validate", "the normal form is not an object");
	}
	PG_TRY();
	{
		again = AcNormaliseTriggerConfig(type, normal);
	}
	PG_CATCH();
	{
		ErrorData  *e;

		MemoryContextSwitchTo(cxt);
		e = CopyErrorData();

		fprintf(stderr, "fuzz_validate: the normal form %s is refused: %s\n",
				JsonbToCString(NULL, &DatumGetJsonbP(normal)->root, VARSIZE(DatumGetPointer(normal))),
				e->message);
		AcFuzzFail("validate", "normalising is not idempotent");
	}
	PG_END_TRY();
	if (!DatumGetBool(DirectFunctionCall2(jsonb_eq, normal, again)))
	{
		fprintf(stderr, "fuzz_validate: %s became %s\n",
				JsonbToCString(NULL, &DatumGetJsonbP(normal)->root, VARSIZE(DatumGetPointer(normal))),
				JsonbToCString(NULL, &DatumGetJsonbP(again)->root, VARSIZE(DatumGetPointer(again))));
		AcFuzzFail("validate", "normalising is not idempotent");
	}
	return 0;
}
