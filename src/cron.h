/*-------------------------------------------------------------------------
 *
 * cron.h
 *	  Validator for the cron grammar of Temporal Schedules (cron.c).
 *
 * IDENTIFICATION
 *	  src/cron.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef AC_CRON_H
#define AC_CRON_H

#include <stdbool.h>
#include <stdint.h>

/* Temporal keeps at most this many bytes of a "# comment" */
#define AC_CRON_MAX_COMMENT 200

typedef enum AcCronKind
{
	AC_CRON_CALENDAR = 1,
	AC_CRON_INTERVAL
} AcCronKind;

/* Fields of a calendar, in the order Temporal's StructuredCalendarSpec names them */
typedef enum AcCronField
{
	AC_FIELD_SECOND,
	AC_FIELD_MINUTE,
	AC_FIELD_HOUR,
	AC_FIELD_DAY_OF_MONTH,
	AC_FIELD_MONTH,
	AC_FIELD_DAY_OF_WEEK,
	AC_FIELD_YEAR,
	AC_NUM_FIELDS
} AcCronField;

typedef struct AcCronRange
{
	int			start;
	int			end;
	int			step;
} AcCronRange;

/*
 * The structured calendar Temporal compiles a cron expression into, range
 * by range, as DescribeSchedule shows it.  Temporal keeps every element of
 * a field (duplicates too), so the ranges live in a buffer owned by cron.c
 * that grows as needed: they stay valid until the next ac_cron_compile().
 */
typedef struct AcCronSpec
{
	int			nranges[AC_NUM_FIELDS];
	AcCronRange *ranges[AC_NUM_FIELDS];
	bool		overflow;		/* out of memory: no prediction */
	bool		has_comment;
	char		comment[AC_CRON_MAX_COMMENT + 1];
} AcCronSpec;

typedef struct AcCronResult
{
	AcCronKind	kind;
	int			nfields;		/* calendar: 5, 6 or 7 */
	int64_t		interval_ns;	/* @every */
	int64_t		phase_ns;
	int			tz_offset;		/* CRON_TZ=/TZ= zone, offset into expr */
	int			tz_len;			/* 0 when there is no prefix */
	int			body_offset;	/* where the schedule starts after a prefix */
	bool		comment_glued;	/* '#' right after a value, as in Quartz 1#2 */
	int64_t		wrapped_step;	/* a step Temporal keeps only 32 bits of, or 0 */
	bool		sunday_dropped; /* day-of-week "1-7": Temporal runs 1-6 */
	char		error[256];
	AcCronSpec *spec;			/* if set by the caller, filled in */
} AcCronResult;

/* The cron validator and compiler (cron.c) */
extern bool ac_cron_check(const char *expr, AcCronResult *res);
extern bool ac_cron_compile(const char *expr, AcCronResult *res, AcCronSpec *spec);
extern const char *const ac_cron_field_names[AC_NUM_FIELDS];

#endif							/* AC_CRON_H */
