/*-------------------------------------------------------------------------
 *
 * guc.c
 *	  Configuration parameters under the reserved "activity_core." prefix.
 *
 * Everything that reaches Temporal or NATS is configured here.  URLs and
 * tuning knobs can be changed with a reload (PGC_SIGHUP); the database the
 * workers serve needs a restart.  Secrets (the Temporal API key) are visible
 * to superusers only, never listed by SHOW ALL and never written to the
 * sample file.
 *
 * IDENTIFICATION
 *	  src/guc.c
 *
 *-------------------------------------------------------------------------
 */
#include "activity_core.h"

#include "miscadmin.h"
#include "lib/stringinfo.h"
#include "utils/guc.h"

char	   *ac_database = NULL;
char	   *ac_temporal_url = NULL;
char	   *ac_temporal_namespace = NULL;
char	   *ac_temporal_api_key = NULL;
char	   *ac_temporal_api_key_file = NULL;
char	   *ac_temporal_tls_ca_file = NULL;
char	   *ac_temporal_tls_cert_file = NULL;
char	   *ac_temporal_tls_key_file = NULL;
int			ac_temporal_connect_timeout_ms = 5000;
int			ac_temporal_request_timeout_ms = 30000;
int			ac_temporal_concurrency = 32;
char	   *ac_nats_url = NULL;
char	   *ac_nats_credentials_file = NULL;
char	   *ac_nats_user = NULL;
char	   *ac_nats_password_file = NULL;
char	   *ac_nats_tls_ca_file = NULL;
char	   *ac_nats_tls_cert_file = NULL;
char	   *ac_nats_tls_key_file = NULL;
char	   *ac_stream_name = NULL;
char	   *ac_subject_prefix = NULL;
char	   *ac_consumer_name = NULL;
int			ac_stream_replicas = 1;
bool		ac_manage_schedules = true;
int			ac_router_batch_size = 256;
int			ac_router_concurrency = 64;
int			ac_router_max_deliveries = 10;
int			ac_router_refresh_interval_s = 60;
int			ac_router_ack_wait_ms = 5000;
int			ac_max_event_bytes = 1048576;
int			ac_reconcile_interval_s = 300;
int			ac_reconcile_concurrency = 8;
char	   *ac_metrics_listen = NULL;

#define SECRET_FLAGS (GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE)

/* Define a reloadable string setting. */
static void
DefineString(const char *name, const char *desc, char **var,
			 const char *def, int flags)
{
	DefineCustomStringVariable(name, desc, NULL, var, def, PGC_SIGHUP,
							   flags, NULL, NULL, NULL);
}

/* GUC check hook: the subject prefix must be valid subject tokens. */
static bool
CheckSubjectPrefix(char **newval, void **extra, GucSource source)
{
	char	   *problem = AcEventTypeProblem(*newval);

	if (problem)
	{
		GUC_check_errdetail("The subject prefix %s; events are published to <prefix>.<event_type>.",
							problem);
		return false;
	}
	return true;
}

/* GUC check hook: a JetStream stream or consumer name NATS accepts. */
static bool
CheckNatsName(char **newval, void **extra, GucSource source)
{
	char	   *problem = AcNatsNameProblem(*newval);

	if (problem)
	{
		GUC_check_errdetail("The name %s.", problem);
		return false;
	}
	return true;
}

/* Define a reloadable string setting whose values a check hook vets. */
static void
DefineCheckedString(const char *name, const char *desc, char **var,
					const char *def, GucStringCheckHook check)
{
	DefineCustomStringVariable(name, desc, NULL, var, def, PGC_SIGHUP,
							   0, check, NULL, NULL);
}

/* Define a reloadable integer setting. */
static void
DefineInt(const char *name, const char *desc, int *var, int def,
		  int min, int max, int flags)
{
	DefineCustomIntVariable(name, desc, NULL, var, def, min, max, PGC_SIGHUP,
							flags, NULL, NULL, NULL);
}

/* Define every activity_core.* setting and reserve the prefix. */
void
AcDefineGucs(void)
{
	/* a postmaster-only setting can only be defined while preloading */
	DefineCustomStringVariable("activity_core.database",
							   "Database whose ac_activity_definitions the background workers serve.",
							   NULL, &ac_database, "postgres",
							   process_shared_preload_libraries_in_progress ? PGC_POSTMASTER : PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY, NULL, NULL, NULL);

	DefineString("activity_core.temporal_url",
				 "Base URL of Temporal's HTTP API (frontend http port).",
				 &ac_temporal_url, "http://localhost:7243", 0);
	DefineString("activity_core.temporal_namespace",
				 "Temporal namespace for schedules and workflows.",
				 &ac_temporal_namespace, "default", 0);
	DefineString("activity_core.temporal_api_key",
				 "API key sent to Temporal as \"Authorization: Bearer\"; prefer temporal_api_key_file.",
				 &ac_temporal_api_key, "", SECRET_FLAGS);
	DefineString("activity_core.temporal_api_key_file",
				 "File whose first line is the API key sent to Temporal as \"Authorization: Bearer\".",
				 &ac_temporal_api_key_file, "", GUC_SUPERUSER_ONLY);
	DefineString("activity_core.temporal_tls_ca_file",
				 "CA bundle that verifies Temporal's TLS certificate.",
				 &ac_temporal_tls_ca_file, "", GUC_SUPERUSER_ONLY);
	DefineString("activity_core.temporal_tls_cert_file",
				 "Client certificate for mutual TLS with Temporal.",
				 &ac_temporal_tls_cert_file, "", GUC_SUPERUSER_ONLY);
	DefineString("activity_core.temporal_tls_key_file",
				 "Private key of the client certificate for Temporal.",
				 &ac_temporal_tls_key_file, "", GUC_SUPERUSER_ONLY);
	DefineInt("activity_core.temporal_connect_timeout",
			  "Connect timeout for Temporal requests.",
			  &ac_temporal_connect_timeout_ms, 5000, 100, 600000, GUC_UNIT_MS);
	DefineInt("activity_core.temporal_request_timeout",
			  "Total timeout of one Temporal request.",
			  &ac_temporal_request_timeout_ms, 30000, 100, 3600000, GUC_UNIT_MS);
	DefineInt("activity_core.temporal_concurrency",
			  "Temporal requests the dispatcher keeps in flight at once.",
			  &ac_temporal_concurrency, 32, 1, 1024, 0);

	DefineString("activity_core.nats_url",
				 "NATS server URL, or a comma-separated list of them (may carry credentials).",
				 &ac_nats_url, "nats://localhost:4222", GUC_SUPERUSER_ONLY);
	DefineString("activity_core.nats_credentials_file",
				 "NATS credentials (.creds) file for the router and publisher.",
				 &ac_nats_credentials_file, "", GUC_SUPERUSER_ONLY);
	DefineString("activity_core.nats_user",
				 "NATS user name for the router and publisher; its password is in nats_password_file.",
				 &ac_nats_user, "", GUC_SUPERUSER_ONLY);
	DefineString("activity_core.nats_password_file",
				 "File whose first line is the password of activity_core.nats_user.",
				 &ac_nats_password_file, "", GUC_SUPERUSER_ONLY);
	DefineString("activity_core.nats_tls_ca_file",
				 "CA bundle that verifies the NATS server certificate.",
				 &ac_nats_tls_ca_file, "", GUC_SUPERUSER_ONLY);
	DefineString("activity_core.nats_tls_cert_file",
				 "Client certificate for mutual TLS with NATS.",
				 &ac_nats_tls_cert_file, "", GUC_SUPERUSER_ONLY);
	DefineString("activity_core.nats_tls_key_file",
				 "Private key of the client certificate for NATS.",
				 &ac_nats_tls_key_file, "", GUC_SUPERUSER_ONLY);
	DefineCheckedString("activity_core.stream_name",
						"JetStream stream that carries events.",
						&ac_stream_name, "ACTIVITY_EVENTS", CheckNatsName);
	DefineCheckedString("activity_core.subject_prefix",
						"Subject prefix of events; the stream listens on <prefix>.>.",
						&ac_subject_prefix, "activity", CheckSubjectPrefix);
	DefineCheckedString("activity_core.consumer_name",
						"Durable pull consumer the router reads from.",
						&ac_consumer_name, "activity-core-event-router", CheckNatsName);
	DefineInt("activity_core.stream_replicas",
			  "Replicas of the stream when the router or the dispatcher creates it (a NATS cluster keeps that many copies).",
			  &ac_stream_replicas, 1, 1, 5, 0);
	DefineInt("activity_core.router_batch_size",
			  "Messages the router fetches at once.",
			  &ac_router_batch_size, 256, 1, 10000, 0);
	DefineInt("activity_core.router_concurrency",
			  "Workflow starts the router keeps in flight at once.",
			  &ac_router_concurrency, 64, 1, 1024, 0);

	DefineInt("activity_core.router_max_deliveries",
			  "Deliveries of an event after which a transient failure sends it to the dead letters.",
			  &ac_router_max_deliveries, 10, 1, 1000, 0);
	DefineInt("activity_core.router_ack_wait",
			  "Ack wait of the router's consumer: an event fetched by a router that died is delivered again after this long.",
			  &ac_router_ack_wait_ms, 5000, 1000, 3600000, GUC_UNIT_MS);
	DefineInt("activity_core.router_refresh_interval",
			  "Time after which the router rebuilds its index of event definitions even without a change seen (0 disables).",
			  &ac_router_refresh_interval_s, 60, 0, 86400, GUC_UNIT_S);
	DefineInt("activity_core.max_event_size",
			  "Largest event envelope the router accepts; larger ones are dead letters.",
			  &ac_max_event_bytes, 1048576, 1024, 64 * 1024 * 1024, GUC_UNIT_BYTE);

	DefineInt("activity_core.reconcile_interval",
			  "Time between full reconciles of Temporal against the table (0 disables).",
			  &ac_reconcile_interval_s, 300, 0, 86400 * 7, GUC_UNIT_S);
	DefineInt("activity_core.reconcile_concurrency",
			  "Describe requests a reconcile keeps in flight at once.",
			  &ac_reconcile_concurrency, 8, 1, 1024, 0);
	DefineCustomBoolVariable("activity_core.manage_schedules",
							 "Whether this server syncs and reconciles the Temporal schedules of cron definitions.",
							 NULL, &ac_manage_schedules, true, PGC_SIGHUP, 0,
							 NULL, NULL, NULL);
	DefineString("activity_core.metrics_listen",
				 "host:port of the Prometheus /metrics endpoint; empty disables it.",
				 &ac_metrics_listen, "127.0.0.1:9090", 0);

	MarkGUCPrefixReserved("activity_core");
}

/*
 * A URL, or comma-separated list of URLs, with any user:password@ or
 * token@ part replaced by "***@", for logs and messages.
 */
char *
AcRedactUrl(const char *urls)
{
	StringInfoData buf;
	const char *p = urls;

	initStringInfo(&buf);
	while (*p)
	{
		const char *end = strchr(p, ',');
		const char *stop = end ? end : p + strlen(p);
		const char *scheme = strstr(p, "://");
		const char *at = NULL;

		for (const char *c = p; c < stop; c++)
			if (*c == '@')
				at = c;
		if (scheme && scheme < stop && at && at > scheme)
		{
			appendBinaryStringInfo(&buf, p, scheme + 3 - p);
			appendStringInfoString(&buf, "***");
			appendBinaryStringInfo(&buf, at, stop - at);
		}
		else
			appendBinaryStringInfo(&buf, p, stop - p);
		if (!end)
			break;
		appendStringInfoChar(&buf, ',');
		p = end + 1;
	}
	return buf.data;
}
