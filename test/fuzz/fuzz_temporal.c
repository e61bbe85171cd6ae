/*-------------------------------------------------------------------------
 *
 * fuzz_temporal.c
 *	  libFuzzer target: the readers of Temporal's HTTP replies.
 *
 * A Temporal server's reply is input too.  An input is one selector byte
 * and the reply body (the seeds are real replies of the dev server,
 * captured by capture.sh):
 *   D  AcReadSchedule() comparing a DescribeSchedule answer with the
 *      definition below (reconcile's drift check, with the calendar
 *      prediction of the cron expression)
 *   S  AcReadSchedule() without a definition (ac_schedules())
 *   L  AcReadScheduleList() (reconcile's orphan sweep)
 *   R  AcReadRuns() (ac_runs())
 *   B  AcBackfillBody() from ListScheduleMatchingTimes
 *   N  AcNormalSpecText() of a spec object
 *   E  AcParseError() on an error body, with an HTTP status from its size
 * Any other selector is read as D.  Checked: what the readers return is
 * well formed (drift set exactly when readable, counts in range, every
 * listed id has the prefix).
 *
 * IDENTIFICATION
 *	  test/fuzz/fuzz_temporal.c
 *
 *-------------------------------------------------------------------------
 */
#include "activity_core.h"

#include "temporal.h"
#include "fuzz.h"

/* The definition of the captured schedule activity-schedule-...f022 */
static const AcScheduleSpec want = {
	.id = "00000000-0000-4000-8000-00000000f022",
	.name = "fuzz-cron",
	.workflow_type = "FuzzWorkflow",
	.task_queue = "fuzz-tq",
	.cron = "0 9 * * MON-FRI",
	.timezone = "Europe/Berlin",
	.policy = "skip",
	.input = "{\"k\": 1}",
	.enabled = true
};

static const long http_statuses[] = {400, 401, 403, 404, 409, 429, 500, 503};

static char *body_copy;

/* Read one reply. */
int
AcFuzzTemporal(const uint8_t *data, size_t size)
{
	const char *body;
	size_t		len;
	char		sel;

	if (size == 0)
		return 0;
	sel = (char) data[0];

	/*
	 * A malloc'd copy of its own size (palloc'd memory is not poisoned), so
	 * that ASan sees any read past the end; freed on the next input, since
	 * a reader may ereport.
	 */
	len = size - 1;
	free(body_copy);
	body_copy = malloc(len + 1);
	memcpy(body_copy, data + 1, len);
	body_copy[len] = '\0';
	body = body_copy;

	switch (sel)
	{
		case 'S':
		case 'D':
		default:
			{
				AcScheduleInfo info;

				AcReadSchedule(body, len, sel == 'S' ? NULL : &want, &info);
				if (!info.readable && (info.drift || info.future || info.recent))
					AcFuzzFail("temporal", "an unreadable schedule has fields");
				if (info.readable && (info.future == NULL || info.recent == NULL))
					AcFuzzFail("temporal", "a readable schedule without times");
				if (sel != 'S' && info.readable && info.drift == NULL)
					AcFuzzFail("temporal", "a readable schedule without a drift verdict");
				break;
			}
		case 'L':
			{
				char	  **ids = NULL;
				int			nids = 0;
				int			cap = 0;
				char	   *next = NULL;
				const char *prefix = "activity-schedule-";

				AcReadScheduleList(body, len, prefix, &ids, &nids, &cap, &next);
				if (nids < 0 || nids > cap)
					AcFuzzFail("temporal", "list count out of range");
				for (int i = 0; i < nids; i++)
					if (strncmp(ids[i], prefix, strlen(prefix)) != 0)
						AcFuzzFail("temporal", "a listed id without the prefix");
				if (next && next[0] == '\0')
					AcFuzzFail("temporal", "an empty next page token");
				break;
			}
		case 'R':
			{
				AcRunRow   *rows;
				int			n = AcReadRuns(body, len, &rows);

				for (int i = 0; i < n; i++)
					if (!rows[i].workflow_id || !rows[i].run_id ||
						!rows[i].workflow_type || !rows[i].status)
						AcFuzzFail("temporal", "a run row without its fields");
				break;
			}
		case 'B':
			{
				char	   *out = NULL;
				char	   *desc = NULL;

				if (AcBackfillBody(body, len, len % 2 ? "catchup" : "compress",
								   (int) (len % 7), "2026-01-01T00:00:00Z",
								   "2026-01-02T00:00:00Z", "fuzz-request",
								   &out, &desc) &&
					(out == NULL || desc == NULL))
					AcFuzzFail("temporal", "a backfill without a body");
				break;
			}
		case 'N':
			(void) AcNormalSpecText(body);
			break;
		case 'E':
			{
				AcRequest	req;

				memset(&req, 0, sizeof(req));
				req.http_status = http_statuses[len % lengthof(http_statuses)];
				/* a response buffer is malloc'd and NUL-terminated by temporal.c */
				req.response = malloc(len + 1);
				memcpy(req.response, body, len + 1);
				req.response_len = len;
				AcParseError(&req);
				free(req.response);
				if (memchr(req.error, '\0', sizeof(req.error)) == NULL)
					AcFuzzFail("temporal", "error message not terminated");
				if (req.status == AC_T_OK)
					AcFuzzFail("temporal", "an error body classified as OK");
				break;
			}
	}
	return 0;
}
