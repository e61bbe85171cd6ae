/*-------------------------------------------------------------------------
 *
 * cron.h
 *	  Validator for the cron grammar of Temporal Schedules.
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
	char		error[256];
} AcCronResult;

extern bool ac_cron_check(const char *expr, AcCronResult *res);

#endif							/* AC_CRON_H */
