/*-------------------------------------------------------------------------
 *
 * timezone.c
 *	  Check time zone names against PostgreSQL's own tz database.
 *
 * Temporal loads a schedule's zone with Go's time.LoadLocation, which only
 * knows names from the tz database, spelled with their exact case.
 * PostgreSQL's pg_tzset() is more lenient: it ignores case and also accepts
 * POSIX rule strings such as "UTC+3" or "EST5EDT,M3.2.0,M11.1.0".  We accept
 * what pg_tzset() accepts, store the canonical spelling, and refuse names
 * that exist only as POSIX rules.
 *
 * IDENTIFICATION
 *	  src/timezone.c
 *
 *-------------------------------------------------------------------------
 */
#include "activity_core.h"

#include "pgtime.h"
#include "utils/memutils.h"

static char **tz_names = NULL;
static int	tz_count = 0;

/* Load the names of all zones of the tz database, once per process. */
static void
LoadZoneNames(void)
{
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
	pg_tzenum  *dir = pg_tzenumerate_start();
	pg_tz	   *tz;
	int			cap = 1024;

	tz_names = palloc(cap * sizeof(char *));
	while ((tz = pg_tzenumerate_next(dir)) != NULL)
	{
		if (tz_count == cap)
		{
			cap *= 2;
			tz_names = repalloc(tz_names, cap * sizeof(char *));
		}
		tz_names[tz_count++] = pstrdup(pg_get_timezone_name(tz));
	}
	pg_tzenumerate_end(dir);
	MemoryContextSwitchTo(old);
}

/* Is this exact name a zone of the tz database? */
static bool
IsZoneName(const char *name)
{
	if (tz_names == NULL)
		LoadZoneNames();
	for (int i = 0; i < tz_count; i++)
		if (strcmp(tz_names[i], name) == 0)
			return true;
	return false;
}

/*
 * Return the canonical spelling of a time zone name, or NULL when the name
 * is not a zone of the tz database.
 */
const char *
AcCanonicalTimezone(const char *name)
{
	pg_tz	   *tz;
	const char *canon;

	if (name[0] == '\0' || strlen(name) > TZ_STRLEN_MAX ||
		name[0] == ':' || strstr(name, "..") != NULL)
		return NULL;
	tz = pg_tzset(name);
	if (tz == NULL)
		return NULL;
	canon = pg_get_timezone_name(tz);

	/*
	 * A POSIX rule needs a digit in its offset; names without digits that
	 * pg_tzset() accepted therefore came from a zone file.  Names with digits
	 * (Etc/GMT+3, EST5EDT) are checked against the list of zones.
	 */
	if (strpbrk(canon, "0123456789,<>") != NULL && !IsZoneName(canon))
		return NULL;
	return pstrdup(canon);
}
