/*-------------------------------------------------------------------------
 *
 * cron_sql.c
 *	  The cron SQL functions: ac_check_cron() and ac_cron_spec().
 *
 * ac_check_cron() runs the same check as the definitions trigger
 * (validate.c, with cron.c's grammar); ac_cron_spec() shows the spec
 * Temporal compiles an expression into, in the normal form a reconcile
 * compares (temporal_json.c).
 *
 * IDENTIFICATION
 *	  src/cron_sql.c
 *
 *-------------------------------------------------------------------------
 */
#include "activity_core.h"

#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "cron.h"
#include "temporal.h"

PG_FUNCTION_INFO_V1(ac_check_cron);
PG_FUNCTION_INFO_V1(ac_cron_spec);

/*
 * ac_check_cron(expression text) returns text: NULL when Temporal accepts
 * the expression, otherwise the reason it does not.
 */
Datum
ac_check_cron(PG_FUNCTION_ARGS)
{
	char	   *expr = text_to_cstring(PG_GETARG_TEXT_PP(0));
	AcCronResult res;

	if (ac_cron_check(expr, &res))
	{
		if (res.tz_len > 0)
		{
			char	   *tz = pnstrdup(expr + res.tz_offset, res.tz_len);

			if (AcCanonicalTimezone(tz) == NULL)
				PG_RETURN_TEXT_P(cstring_to_text(psprintf("unknown time zone \"%s\"", tz)));
		}
		PG_RETURN_NULL();
	}
	PG_RETURN_TEXT_P(cstring_to_text(res.error));
}

/*
 * ac_cron_spec(expression text, timezone text) returns jsonb: the spec
 * Temporal compiles the expression into, in the normal form reconcile
 * compares (NULL for an invalid expression).
 */
Datum
ac_cron_spec(PG_FUNCTION_ARGS)
{
	char	   *expr = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *tz = text_to_cstring(PG_GETARG_TEXT_PP(1));
	char	   *json = AcExpectedSpecText(expr, tz);

	if (json == NULL)
		PG_RETURN_NULL();
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(json)));
}
