/*-------------------------------------------------------------------------
 *
 * temporal.h
 *	  Client for Temporal's HTTP API (libcurl multi, temporal.c) and the
 *	  JSON of its requests and responses (jansson, temporal_json.c).
 *
 * IDENTIFICATION
 *	  src/temporal.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef AC_TEMPORAL_H
#define AC_TEMPORAL_H

#include <stdbool.h>
#include <stddef.h>

/* How a request ended, classified from the transport and the error body. */
typedef enum AcTemporalStatus
{
	AC_T_OK = 0,
	AC_T_ALREADY_EXISTS,		/* gRPC 6: schedule or workflow exists */
	AC_T_NOT_FOUND,				/* gRPC 5 with a NotFoundFailure detail */
	AC_T_INVALID,				/* gRPC 3, 9, 11: Temporal refuses the request */
	AC_T_UNAUTHORIZED,			/* gRPC 7, 16 */
	AC_T_UNAVAILABLE			/* transport error, timeouts, 5xx, rate limits,
								 * unknown routes or namespaces */
} AcTemporalStatus;

typedef struct AcRequest AcRequest;

/*
 * Called on the main thread when a request finished.  It may call
 * AcRequestSet() again on the same request and return true to send the
 * follow-up request; returning false ends the request.
 */
typedef bool (*AcRequestDone) (AcRequest *req, void *arg);

struct AcRequest
{
	/* what to send; set with AcRequestSet */
	char		method[8];
	char	   *url;			/* malloc'd */
	char	   *body;			/* malloc'd JSON text, or NULL */

	/* the caller's own */
	void	   *user;
	int			step;

	/* outcome */
	long		http_status;
	AcTemporalStatus status;
	int			grpc_code;
	char	   *response;		/* malloc'd, NUL-terminated */
	size_t		response_len;
	char		error[512];		/* Temporal's message or the transport error */

	/* private to temporal.c */
	size_t		response_cap;
	bool		overflow;
	void	   *easy;
	void	   *headers;
	char		transport_error[256];	/* curl's own words (CURL_ERROR_SIZE) */
};

/* The HTTP client (temporal.c) */

/* Build "base/namespaces/<ns><suffix>" with each %s argument escaped. */
extern char *AcTemporalUrl(const char *fmt,...) __attribute__((format(printf, 1, 2)));
extern char *AcTemporalEscape(const char *segment);

extern void AcRequestSet(AcRequest *req, const char *method, char *url,
						 char *body);
extern void AcRequestReset(AcRequest *req);
extern void AcRequestFree(AcRequest *req);

extern void AcTemporalRun(AcRequest **reqs, int nreqs, int concurrency,
						  AcRequestDone done, void *arg);

/* Called on the main thread between two waits of AcTemporalRun. */
typedef void (*AcTemporalTick) (void *arg);
extern void AcTemporalSetTick(AcTemporalTick tick, void *arg);

extern bool AcTemporalIsTransient(AcTemporalStatus status);
extern const char *AcTemporalStatusName(AcTemporalStatus status);

/* Count the outcome of a workflow start in ac_stats (shmem.c) */
extern void AcCountStart(AcTemporalStatus status);

/* Request bodies and responses of Temporal's API (temporal_json.c) */

/* What a schedule is built from. */
typedef struct AcScheduleSpec
{
	const char *id;
	const char *name;
	const char *workflow_type;
	const char *task_queue;
	const char *cron;
	const char *timezone;
	const char *policy;			/* skip, catchup or compress */
	const char *input;			/* JSON text of the definition's input */
	bool		enabled;
} AcScheduleSpec;

/* A schedule as DescribeSchedule shows it, and how it differs. */
typedef struct AcScheduleInfo
{
	bool		readable;
	bool		paused;
	char	   *notes;
	char	   *future;			/* JSON array of RFC 3339 times */
	char	   *recent;			/* JSON array of recent actions */
	char	   *drift;			/* "" when in sync; fields that differ */
	char	   *installation;	/* memo: which database made it, if said */
} AcScheduleInfo;

extern void AcReadSchedule(const char *describe, size_t len,
						   const AcScheduleSpec *want, AcScheduleInfo *info);
extern void AcReadScheduleList(const char *page, size_t len, const char *prefix,
							   char ***ids, int *nids, int *capacity,
							   char **next_token);
extern char *AcExpectedSpecText(const char *cron, const char *tz);
extern char *AcNormalSpecText(const char *describe_spec);
extern char *AcArgumentText(const char *id, const char *name, const char *trigger,
							const char *input, const char *event);
/* One execution of ac_runs(). */
typedef struct AcRunRow
{
	char	   *workflow_id;
	char	   *run_id;
	char	   *status;
	char	   *workflow_type;
	char	   *start_time;
	char	   *close_time;
} AcRunRow;

extern int	AcReadRuns(const char *page, size_t len, AcRunRow **rows);
extern char *AcStartBody(const char *activity_id, const char *workflow_type,
						 const char *task_queue, const char *argument,
						 const char *request_id, const char *identity);
extern char *AcStartWorkflowBody(const char *id, const char *name,
								 const char *workflow_type, const char *task_queue,
								 const char *input, const char *envelope,
								 const char *request_id);
extern char *AcScheduleBody(const AcScheduleSpec *spec, bool create);
extern bool AcBackfillBody(const char *matching, size_t len, const char *policy,
						   int max_runs, const char *from, const char *to,
						   const char *request_id, char **body, char **description);
extern const char *AcOverlapPolicy(const char *policy);
extern const char *AcCatchupWindow(const char *policy);
extern void AcParseError(AcRequest *req);

#endif							/* AC_TEMPORAL_H */
