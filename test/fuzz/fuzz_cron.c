/*-------------------------------------------------------------------------
 *
 * fuzz_cron.c
 *	  libFuzzer target: the cron parser and the calendar prediction.
 *
 * cron.c is plain C, so this target links it alone (no server).  Each
 * input is one cron_expression as the validator and reconcile see it (a
 * NUL-terminated string; an embedded NUL ends it, as in a C string from
 * jsonb).  It runs ac_cron_check(), the validator's path, and
 * ac_cron_compile(), the prediction reconcile compares with what
 * DescribeSchedule shows (ExpectedSpec in temporal_json.c), and checks
 * that the two agree and that every compiled range is one Temporal could
 * hold: start <= end within the field's bounds and a step of at least 1
 * (unless the step was one Temporal keeps only 32 bits of).
 * A broken invariant aborts, which libFuzzer reports as a crash.
 *
 * IDENTIFICATION
 *	  test/fuzz/fuzz_cron.c
 *
 *-------------------------------------------------------------------------
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cron.h"

/* Field bounds of the compiled calendar (day-of-week 7 becomes 0). */
static const int field_min[AC_NUM_FIELDS] = {0, 0, 0, 1, 1, 0, 2000};
static const int field_max[AC_NUM_FIELDS] = {59, 59, 23, 31, 12, 6, 2100};

/* Report a broken invariant and abort. */
static void
fail(const char *expr, const char *what)
{
	fprintf(stderr, "fuzz_cron: %s for \"%s\"\n", what, expr);
	abort();
}

/* Run the validator and the compiler on one expression. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	   *expr = malloc(size + 1);
	AcCronResult check;
	AcCronResult comp;
	AcCronSpec	spec;
	bool		ok_check;
	bool		ok_comp;

	memcpy(expr, data, size);
	expr[size] = '\0';

	ok_check = ac_cron_check(expr, &check);
	ok_comp = ac_cron_compile(expr, &comp, &spec);
	if (ok_check != ok_comp)
		fail(expr, "ac_cron_check and ac_cron_compile disagree");
	if (memchr(check.error, '\0', sizeof(check.error)) == NULL)
		fail(expr, "error message not terminated");
	if (!ok_check)
	{
		if (check.error[0] == '\0')
			fail(expr, "refused without a message");
		if (strcmp(check.error, comp.error) != 0)
			fail(expr, "different messages");
		free(expr);
		return 0;
	}
	if (check.kind != comp.kind || check.nfields != comp.nfields ||
		check.body_offset != comp.body_offset || check.tz_len != comp.tz_len)
		fail(expr, "different results");
	if (check.body_offset < 0 || (size_t) check.body_offset > strlen(expr) ||
		check.tz_offset < 0 || check.tz_len < 0 ||
		(size_t) (check.tz_offset + check.tz_len) > strlen(expr))
		fail(expr, "offsets outside the expression");
	if (check.kind == AC_CRON_INTERVAL)
	{
		if (check.interval_ns <= 0 || check.phase_ns < 0)
			fail(expr, "interval not positive or phase negative");
	}
	else if (check.kind != AC_CRON_CALENDAR)
		fail(expr, "unknown kind");
	else if (!spec.overflow)
	{
		if (memchr(spec.comment, '\0', sizeof(spec.comment)) == NULL)
			fail(expr, "comment not terminated");
		for (int f = 0; f < AC_NUM_FIELDS; f++)
		{
			if (spec.nranges[f] < 0)
				fail(expr, "negative range count");
			for (int i = 0; i < spec.nranges[f]; i++)
			{
				AcCronRange *r = &spec.ranges[f][i];

				/* a step wrapped to 32 bits, as Temporal keeps it, may be < 1 */
				if (r->start > r->end || r->step == 0 ||
					(r->step < 1 && check.wrapped_step == 0) ||
					r->start < field_min[f] || r->end > field_max[f])
				{
					fprintf(stderr, "fuzz_cron: field %s range %d-%d/%d\n",
							ac_cron_field_names[f], r->start, r->end, r->step);
					fail(expr, "a compiled range Temporal cannot hold");
				}
			}
		}
	}
	free(expr);
	return 0;
}
