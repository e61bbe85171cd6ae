/*-------------------------------------------------------------------------
 *
 * cron.c
 *	  Validator for the cron grammar that Temporal Schedules accept.
 *
 * Temporal compiles a schedule's cronString on the server; an expression it
 * refuses would only surface later, in the dispatcher.  This file checks the
 * same grammar at INSERT time: an optional "CRON_TZ=zone " or "TZ=zone "
 * prefix, an optional "# comment", "@every <duration>[/<phase>]", the
 * @yearly..@hourly macros, and calendar expressions of 5, 6 or 7 fields made
 * of "*", values, ranges, steps and comma lists, with month and weekday
 * names.  It is plain C with no PostgreSQL calls so that it can be fuzzed
 * and benchmarked on its own.
 *
 * IDENTIFICATION
 *	  src/cron.c
 *
 *-------------------------------------------------------------------------
 */
#include <ctype.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cron.h"

#define NSEC_PER_SEC	INT64_C(1000000000)

typedef enum FieldMode
{
	MODE_INT,
	MODE_MONTH,
	MODE_DOW
} FieldMode;

typedef struct FieldSpec
{
	AcCronField idx;
	const char *name;
	int			min;
	int			max;
	FieldMode	mode;
} FieldSpec;

static const FieldSpec field_second = {AC_FIELD_SECOND, "second", 0, 59, MODE_INT};
static const FieldSpec field_minute = {AC_FIELD_MINUTE, "minute", 0, 59, MODE_INT};
static const FieldSpec field_hour = {AC_FIELD_HOUR, "hour", 0, 23, MODE_INT};
static const FieldSpec field_dom = {AC_FIELD_DAY_OF_MONTH, "day-of-month", 1, 31, MODE_INT};
static const FieldSpec field_month = {AC_FIELD_MONTH, "month", 1, 12, MODE_MONTH};
static const FieldSpec field_dow = {AC_FIELD_DAY_OF_WEEK, "day-of-week", 0, 7, MODE_DOW};
static const FieldSpec field_year = {AC_FIELD_YEAR, "year", 2000, 2100, MODE_INT};

const char *const ac_cron_field_names[AC_NUM_FIELDS] = {
	"second", "minute", "hour", "dayOfMonth", "month", "dayOfWeek", "year"
};

static const char *const month_names[] = {
	"january", "february", "march", "april", "may", "june", "july",
	"august", "september", "october", "november", "december"
};

static const char *const dow_names[] = {
	"sunday", "monday", "tuesday", "wednesday", "thursday", "friday",
	"saturday"
};

static bool cron_fail(AcCronResult *res, const char *fmt,...)
			__attribute__((format(printf, 2, 3)));

/* Format an error message into the result. */
static bool
cron_fail(AcCronResult *res, const char *fmt,...)
{
	va_list		ap;

	va_start(ap, fmt);
	vsnprintf(res->error, sizeof(res->error), fmt, ap);
	va_end(ap);
	return false;
}

/* Return the byte length of the white-space character at p, or 0. */
static int
space_len(const unsigned char *p)
{
	if (*p == ' ' || (*p >= '\t' && *p <= '\r'))
		return 1;
	/* U+0085 and U+00A0 */
	if (p[0] == 0xC2 && (p[1] == 0x85 || p[1] == 0xA0))
		return 2;
	/* U+1680 */
	if (p[0] == 0xE1 && p[1] == 0x9A && p[2] == 0x80)
		return 3;
	/* U+2000..U+200A, U+2028, U+2029, U+202F, U+205F */
	if (p[0] == 0xE2 && p[1] == 0x80 &&
		((p[2] >= 0x80 && p[2] <= 0x8A) || p[2] == 0xA8 || p[2] == 0xA9 ||
		 p[2] == 0xAF))
		return 3;
	if (p[0] == 0xE2 && p[1] == 0x81 && p[2] == 0x9F)
		return 3;
	/* U+3000 */
	if (p[0] == 0xE3 && p[1] == 0x80 && p[2] == 0x80)
		return 3;
	return 0;
}

/*
 * The ranges of the spec being compiled: one buffer for all fields, kept
 * between calls (it only shrinks back after an unusually large expression).
 */
static AcCronRange *range_pool = NULL;
static size_t range_pool_cap = 0;
static int	field_cap[AC_NUM_FIELDS];

#define RANGE_POOL_KEEP 4096

/* Outcome of parse_int. */
typedef enum IntParse
{
	INT_OK,
	INT_NOT_A_NUMBER,
	INT_OUT_OF_RANGE
} IntParse;

/*
 * Parse a whole token as a decimal integer with optional sign, as Go's
 * strconv.Atoi does on a 64-bit platform.
 */
static IntParse
parse_int(const char *s, size_t len, int64_t *out)
{
	size_t		i = 0;
	bool		neg = false;
	bool		overflow = false;
	uint64_t	v = 0;
	uint64_t	limit;

	if (len > 0 && (s[0] == '+' || s[0] == '-'))
	{
		neg = (s[0] == '-');
		i = 1;
	}
	if (i >= len)
		return INT_NOT_A_NUMBER;
	limit = neg ? (uint64_t) INT64_MAX + 1 : (uint64_t) INT64_MAX;
	for (; i < len; i++)
	{
		if (s[i] < '0' || s[i] > '9')
			return INT_NOT_A_NUMBER;
		if (!overflow && v > (limit - (uint64_t) (s[i] - '0')) / 10)
			overflow = true;
		if (!overflow)
			v = v * 10 + (uint64_t) (s[i] - '0');
	}
	if (overflow)
		return INT_OUT_OF_RANGE;
	*out = neg ? (int64_t) (0 - v) : (int64_t) v;
	return INT_OK;
}

/* Match a month or weekday name prefix; returns index or -1. */
static int
match_name(const char *s, size_t len, const char *const *names, int n,
		   size_t minlen)
{
	char		lower[16];

	if (len < minlen || len >= sizeof(lower))
		return -1;
	for (size_t i = 0; i < len; i++)
		lower[i] = (char) tolower((unsigned char) s[i]);
	for (int i = 0; i < n; i++)
	{
		if (strlen(names[i]) >= len && strncmp(names[i], lower, len) == 0)
			return i;
	}
	return -1;
}

/* Parse one value of a field (number or name) within [lo, max]. */
static bool
parse_value(const FieldSpec *f, const char *s, size_t len, int lo,
			int *out, AcCronResult *res)
{
	int64_t		v = -1;
	bool		named = false;
	IntParse	p = INT_OK;

	if (f->mode == MODE_MONTH)
	{
		int			i = match_name(s, len, month_names, 12, 3);

		if (i >= 0)
		{
			v = i + 1;
			named = true;
		}
	}
	else if (f->mode == MODE_DOW)
	{
		int			i = match_name(s, len, dow_names, 7, 2);

		if (i >= 0)
		{
			v = i;
			named = true;
		}
	}
	if (!named)
		p = parse_int(s, len, &v);
	if (p == INT_NOT_A_NUMBER)
	{
		if (f->mode == MODE_MONTH)
			return cron_fail(res, "%s field: \"%.*s\" is not a number or a month name",
							 f->name, (int) len, s);
		if (f->mode == MODE_DOW)
			return cron_fail(res, "%s field: \"%.*s\" is not a number or a weekday name",
							 f->name, (int) len, s);
		return cron_fail(res, "%s field: \"%.*s\" is not a number",
						 f->name, (int) len, s);
	}
	if (p == INT_OUT_OF_RANGE || v < lo || v > f->max)
	{
		if (lo > f->min)
			return cron_fail(res, "%s field: range end \"%.*s\" is before its start or out of range %d-%d",
							 f->name, (int) len, s, f->min, f->max);
		return cron_fail(res, "%s field: %.*s is out of range %d-%d",
						 f->name, (int) len, s, f->min, f->max);
	}
	*out = (int) v;
	return true;
}

/* Return the number of occurrences of c in s[0..len). */
static int
count_char(const char *s, size_t len, char c)
{
	int			n = 0;

	for (size_t i = 0; i < len; i++)
		if (s[i] == c)
			n++;
	return n;
}

/*
 * Give each field of the spec room for up to cap[f] ranges in the shared
 * buffer.  On allocation failure the spec is marked overflow and false
 * returned: the expression is still checked, only not compiled.
 */
static bool
reserve_ranges(AcCronSpec *spec, const size_t *cap)
{
	size_t		total = 0;
	size_t		off = 0;

	for (int f = 0; f < AC_NUM_FIELDS; f++)
	{
		if (cap[f] > (size_t) INT32_MAX || total + cap[f] > SIZE_MAX / sizeof(AcCronRange) / 2)
		{
			spec->overflow = true;
			return false;
		}
		total += cap[f];
	}
	if (total > range_pool_cap ||
		(range_pool_cap > RANGE_POOL_KEEP && total <= RANGE_POOL_KEEP))
	{
		size_t		want = total > RANGE_POOL_KEEP / 4 ? total : RANGE_POOL_KEEP / 4;

		free(range_pool);
		range_pool = malloc(want * sizeof(AcCronRange));
		range_pool_cap = range_pool ? want : 0;
		if (range_pool == NULL)
		{
			spec->overflow = true;
			return false;
		}
	}
	for (int f = 0; f < AC_NUM_FIELDS; f++)
	{
		spec->ranges[f] = range_pool + off;
		spec->nranges[f] = 0;
		field_cap[f] = (int) cap[f];
		off += cap[f];
	}
	return true;
}

/*
 * Append one range to the compiled spec, in the form DescribeSchedule
 * shows: Temporal drops an end equal to the start and a step of 1 and then
 * fills both back in (CleanSpec), so a range always has its end and a step
 * of at least 1.
 */
static void
add_range(AcCronSpec *spec, AcCronField f, int start, int end, int step)
{
	int			n = spec->nranges[f];

	if (spec->overflow || n >= field_cap[f])
	{
		spec->overflow = true;
		return;
	}
	spec->ranges[f][n].start = start;
	spec->ranges[f][n].end = end < start ? start : end;
	spec->ranges[f][n].step = step == 0 ? 1 : step;
	spec->nranges[f] = n + 1;
}

/*
 * Record the range of one element as Temporal compiles it (makeRange in
 * service/worker/scheduler/calendar.go).  Day-of-week 7 is Sunday: when 7
 * is one of the values and the range does not start at 0 or 1 with step 1,
 * Temporal adds a range for Sunday (0) first; either way the range is then
 * capped at 6, and 7 alone becomes just the 0.  (So "1-7" compiles to 1-6,
 * without Sunday: that is what Temporal runs.)  The step is compared as the
 * 64-bit value parsed but stored in 32 bits, as Temporal's int32 Range.step.
 */
static void
compile_part(const FieldSpec *f, AcCronSpec *spec, int start, int end,
			 int64_t step)
{
	if (spec == NULL)
		return;
	if (f->mode == MODE_DOW && end == 7)
	{
		if ((7 - start) % step == 0 && (step > 1 || start > 1))
		{
			add_range(spec, f->idx, 0, 0, 1);
			if (start == 7)
				return;
		}
		end = 6;
	}
	add_range(spec, f->idx, start, end, (int32_t) (uint32_t) (uint64_t) step);
}

/*
 * Parse the step after "/" as Temporal does: a 64-bit integer of at least
 * 1, then stored in 32 bits.  A step whose low 32 bits read as a negative
 * int32 (2147483648 to 4294967295, and so on every 2^32) is refused by
 * Temporal's spec validation; one whose low 32 bits are 0 or positive is
 * accepted and runs with that step (0 meaning 1), which is noted in
 * res->wrapped_step.
 */
static bool
parse_step(const FieldSpec *f, const char *s, size_t len, int64_t *step,
		   AcCronResult *res)
{
	int32_t		stored;

	switch (parse_int(s, len, step))
	{
		case INT_OK:
			break;
		case INT_OUT_OF_RANGE:
			return cron_fail(res, "%s field: step \"%.*s\" is out of range (Temporal parses a step as a 64-bit integer)",
							 f->name, (int) len, s);
		default:
			return cron_fail(res, "%s field: step \"%.*s\" is not a number",
							 f->name, (int) len, s);
	}
	if (*step < 1)
		return cron_fail(res, "%s field: step %lld must be at least 1",
						 f->name, (long long) *step);
	stored = (int32_t) (uint32_t) (uint64_t) *step;
	if (stored < 0)
		return cron_fail(res, "%s field: step %lld is too large (Temporal keeps the low 32 bits of a step, which must be at most 2147483647)",
						 f->name, (long long) *step);
	if (*step > INT32_MAX && res->wrapped_step == 0)
		res->wrapped_step = *step;
	return true;
}

/* Check one comma-separated element: *, x, x-z, with optional /step. */
static bool
check_part(const FieldSpec *f, const char *s, size_t len, AcCronResult *res)
{
	size_t		body = len;
	int			start;
	int			end;
	int64_t		step = 1;
	bool		has_step = false;

	if (count_char(s, len, '/') > 0)
	{
		const char *slash = memchr(s, '/', len);

		if (count_char(s, len, '/') != 1)
			return cron_fail(res, "%s field: \"%.*s\" has more than one \"/\"",
							 f->name, (int) len, s);
		body = (size_t) (slash - s);
		if (!parse_step(f, slash + 1, len - body - 1, &step, res))
			return false;
		has_step = true;
	}
	if (body == 1 && s[0] == '*')
	{
		compile_part(f, res->spec, f->min, f->max, step);
		return true;
	}
	if (count_char(s, body, '-') > 0)
	{
		const char *dash = memchr(s, '-', body);

		if (count_char(s, body, '-') != 1)
			return cron_fail(res, "%s field: \"%.*s\" is not a valid range",
							 f->name, (int) body, s);
		if (!parse_value(f, s, (size_t) (dash - s), f->min, &start, res))
			return false;
		if (!parse_value(f, dash + 1, body - (size_t) (dash - s) - 1, start,
						 &end, res))
			return false;
	}
	else
	{
		if (!parse_value(f, s, body, f->min, &start, res))
			return false;
		end = has_step ? f->max : start;
	}
	/* Temporal's Sunday rule leaves 7 out of "1-7" (see compile_part) */
	if (f->mode == MODE_DOW && start == 1 && end == 7 && step == 1)
		res->sunday_dropped = true;
	compile_part(f, res->spec, start, end, step);
	return true;
}

/* Check one field: a comma list of elements. */
static bool
check_field(const FieldSpec *f, const char *s, size_t len, AcCronResult *res)
{
	size_t		pos = 0;

	/* a year of "*" alone is no range at all (an element "*" is 2000-2100) */
	if (f->idx == AC_FIELD_YEAR && len == 1 && s[0] == '*')
		return true;

	for (;;)
	{
		const char *comma = memchr(s + pos, ',', len - pos);
		size_t		plen = comma ? (size_t) (comma - (s + pos)) : len - pos;

		if (plen == 0)
			return cron_fail(res, "%s field: empty element in \"%.*s\"",
							 f->name, (int) len, s);
		if (!check_part(f, s + pos, plen, res))
			return false;
		if (!comma)
			break;
		pos += plen + 1;
	}
	return true;
}

/*
 * Parse a Go duration with Temporal's extra unit "d" (24 hours) into
 * nanoseconds.  Returns false on a malformed or overflowing duration.
 */
static bool
parse_duration(const char *s, size_t len, int64_t *out)
{
	size_t		i = 0;
	bool		neg = false;
	long double total = 0;

	if (len > 0 && (s[0] == '+' || s[0] == '-'))
	{
		neg = (s[0] == '-');
		i = 1;
	}
	if (len - i == 1 && s[i] == '0')
	{
		*out = 0;
		return true;
	}
	if (i >= len)
		return false;
	while (i < len)
	{
		long double v = 0;
		long double scale = 1;
		bool		digits = false;
		long double unit;
		size_t		u;

		while (i < len && isdigit((unsigned char) s[i]))
		{
			v = v * 10 + (s[i++] - '0');
			digits = true;
		}
		if (i < len && s[i] == '.')
		{
			i++;
			while (i < len && isdigit((unsigned char) s[i]))
			{
				scale /= 10;
				v += (s[i++] - '0') * scale;
				digits = true;
			}
		}
		if (!digits)
			return false;
		u = i;
		while (i < len && !isdigit((unsigned char) s[i]) && s[i] != '.')
			i++;
		if (i - u == 2 && strncmp(s + u, "ns", 2) == 0)
			unit = 1;
		else if ((i - u == 2 && strncmp(s + u, "us", 2) == 0) ||
				 (i - u == 3 && strncmp(s + u, "\xC2\xB5s", 3) == 0) ||
				 (i - u == 3 && strncmp(s + u, "\xCE\xBCs", 3) == 0))
			unit = 1e3;
		else if (i - u == 2 && strncmp(s + u, "ms", 2) == 0)
			unit = 1e6;
		else if (i - u == 1 && s[u] == 's')
			unit = 1e9;
		else if (i - u == 1 && s[u] == 'm')
			unit = 60e9;
		else if (i - u == 1 && s[u] == 'h')
			unit = 3600e9;
		else if (i - u == 1 && s[u] == 'd')
			unit = 86400e9;
		else
			return false;
		total += v * unit;
		if (total > 9223372036854775807.0L)
			return false;
	}
	*out = (int64_t) (neg ? -total : total);
	return true;
}

/* Check "@every <interval>[/<phase>]". */
static bool
check_every(const char *s, size_t len, AcCronResult *res)
{
	const char *sp = memchr(s, ' ', len);
	const char *arg;
	size_t		alen;
	const char *slash;
	int64_t		interval;
	int64_t		phase = 0;

	if (!sp)
		return cron_fail(res, "@every needs an interval, as in \"@every 90m\"");
	arg = sp + 1;
	alen = len - (size_t) (arg - s);
	slash = memchr(arg, '/', alen);
	if (!parse_duration(arg, slash ? (size_t) (slash - arg) : alen, &interval))
		return cron_fail(res, "@every interval \"%.*s\" is not a duration (units: ns, us, ms, s, m, h, d)",
						 (int) (slash ? (size_t) (slash - arg) : alen), arg);
	/* an empty phase ("@every 5m/") means no phase */
	if (slash && alen - (size_t) (slash - arg) - 1 > 0)
	{
		size_t		plen = alen - (size_t) (slash - arg) - 1;

		if (!parse_duration(slash + 1, plen, &phase))
			return cron_fail(res, "@every phase \"%.*s\" is not a duration (units: ns, us, ms, s, m, h, d)",
							 (int) plen, slash + 1);
	}
	if (interval < NSEC_PER_SEC)
		return cron_fail(res, "@every interval must be at least 1s");
	if (phase < 0)
		return cron_fail(res, "@every phase must not be negative");
	if (phase >= interval)
		return cron_fail(res, "@every phase must be shorter than the interval");
	res->kind = AC_CRON_INTERVAL;
	res->interval_ns = interval;
	res->phase_ns = phase;
	return true;
}

/*
 * Parse a cron expression; on failure res->error says which field is wrong
 * and why.  With a spec, also compile it into Temporal's calendar form.
 */
static bool
cron_parse(const char *expr, AcCronResult *res, AcCronSpec *spec)
{
	const char *s = expr;
	size_t		len = strlen(expr);
	const char *hash;
	const char *fields[8];
	size_t		flens[8];
	int			nfields = 0;
	size_t		pos;
	const FieldSpec *order[7];

	memset(res, 0, sizeof(*res));
	res->spec = spec;
	if (spec)
		memset(spec, 0, sizeof(*spec));

	/* the comment runs from the first '#' to the end */
	hash = memchr(s, '#', len);
	if (hash)
	{
		const char *c = hash + 1;
		size_t		clen = len - (size_t) (c - s);

		while (clen > 0 && space_len((const unsigned char *) c) > 0)
		{
			int			l = space_len((const unsigned char *) c);

			c += l;
			clen -= l;
		}
		while (clen > 0 && (c[clen - 1] == ' ' || (c[clen - 1] >= '\t' && c[clen - 1] <= '\r')))
			clen--;
		if (hash > s && space_len((const unsigned char *) hash - 1) == 0)
			res->comment_glued = true;
		if (clen > AC_CRON_MAX_COMMENT)
			return cron_fail(res, "comment is longer than %d bytes",
							 AC_CRON_MAX_COMMENT);
		if (res->spec && clen > 0)
		{
			memcpy(res->spec->comment, c, clen);
			res->spec->comment[clen] = '\0';
			res->spec->has_comment = true;
		}
		len = (size_t) (hash - s);
	}
	/* trailing white space before the comment is not part of the spec */
	while (len > 0 && (s[len - 1] == ' ' || (s[len - 1] >= '\t' && s[len - 1] <= '\r')))
		len--;
	/* leading white space, too */
	while (len > 0 && space_len((const unsigned char *) s) > 0)
	{
		int			l = space_len((const unsigned char *) s);

		s += l;
		len -= l;
	}
	if (len == 0)
		return cron_fail(res, "expression is empty");

	/* optional time zone prefix */
	if ((len > 3 && strncmp(s, "TZ=", 3) == 0) ||
		(len > 8 && strncmp(s, "CRON_TZ=", 8) == 0))
	{
		const char *eq = memchr(s, '=', len);
		const char *sp = memchr(s, ' ', len);

		if (!sp)
			return cron_fail(res, "time zone prefix \"%.*s\" must be followed by a space and a schedule",
							 (int) len, s);
		res->tz_offset = (int) (eq + 1 - expr);
		res->tz_len = (int) (sp - eq - 1);
		len -= (size_t) (sp + 1 - s);
		s = sp + 1;
		/* the schedule starts after all the white space that follows */
		while (len > 0 && space_len((const unsigned char *) s) > 0)
		{
			int			l = space_len((const unsigned char *) s);

			s += l;
			len -= l;
		}
		res->body_offset = (int) (s - expr);
	}
	else
		res->body_offset = (int) (s - expr);

	if (len >= 6 && strncmp(s, "@every", 6) == 0)
		return check_every(s, len, res);

	if (len > 0 && s[0] == '@')
	{
		static const char *const macros[][2] = {
			{"@yearly", "0 0 1 1 *"}, {"@annually", "0 0 1 1 *"},
			{"@monthly", "0 0 1 * *"}, {"@weekly", "0 0 * * 0"},
			{"@daily", "0 0 * * *"}, {"@midnight", "0 0 * * *"},
			{"@hourly", "0 * * * *"}
		};
		int			i;

		for (i = 0; i < 7; i++)
			if (strlen(macros[i][0]) == len && strncmp(s, macros[i][0], len) == 0)
				break;
		if (i == 7)
			return cron_fail(res, "unknown macro \"%.*s\" (known: @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly, @every <duration>)",
							 (int) len, s);
		s = macros[i][1];
		len = strlen(s);
	}

	/* split into fields on white space */
	pos = 0;
	while (pos < len)
	{
		size_t		start;
		int			l;

		while (pos < len && (l = space_len((const unsigned char *) s + pos)) > 0)
			pos += l;
		if (pos >= len)
			break;
		start = pos;
		while (pos < len && space_len((const unsigned char *) s + pos) == 0)
			pos++;
		if (nfields < 8)
		{
			fields[nfields] = s + start;
			flens[nfields] = pos - start;
		}
		nfields++;
	}
	if (nfields < 5 || nfields > 7)
		return cron_fail(res, "expected 5, 6 or 7 fields but found %d", nfields);

	if (nfields == 7)
	{
		order[0] = &field_second;
		order[1] = &field_minute;
		order[2] = &field_hour;
		order[3] = &field_dom;
		order[4] = &field_month;
		order[5] = &field_dow;
		order[6] = &field_year;
	}
	else
	{
		order[0] = &field_minute;
		order[1] = &field_hour;
		order[2] = &field_dom;
		order[3] = &field_month;
		order[4] = &field_dow;
		order[5] = &field_year;
	}
	if (res->spec)
	{
		size_t		cap[AC_NUM_FIELDS] = {0};

		/* one range per element, two for a day-of-week reaching 7 */
		for (int i = 0; i < nfields; i++)
			cap[order[i]->idx] = ((size_t) count_char(fields[i], flens[i], ',') + 1) *
				(order[i]->mode == MODE_DOW ? 2 : 1);
		if (nfields < 7)
			cap[AC_FIELD_SECOND] = 1;
		if (!reserve_ranges(res->spec, cap))
			res->spec = NULL;
	}
	for (int i = 0; i < nfields; i++)
		if (!check_field(order[i], fields[i], flens[i], res))
			return false;
	/* without a seconds field, the second is 0 */
	if (nfields < 7 && res->spec)
		add_range(res->spec, AC_FIELD_SECOND, 0, 0, 1);
	res->kind = AC_CRON_CALENDAR;
	res->nfields = nfields;
	return true;
}

/* Validate a cron expression. */
bool
ac_cron_check(const char *expr, AcCronResult *res)
{
	return cron_parse(expr, res, NULL);
}

/* Validate a cron expression and compile it into Temporal's calendar form. */
bool
ac_cron_compile(const char *expr, AcCronResult *res, AcCronSpec *spec)
{
	return cron_parse(expr, res, spec);
}
