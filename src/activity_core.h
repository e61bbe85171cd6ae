/*-------------------------------------------------------------------------
 *
 * activity_core.h
 *	  Declarations shared by the files of the activity_core extension.
 *
 * IDENTIFICATION
 *	  src/activity_core.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef ACTIVITY_CORE_H
#define ACTIVITY_CORE_H

#include "postgres.h"

#if PG_VERSION_NUM < 150000
#define MarkGUCPrefixReserved(prefix) EmitWarningsOnPlaceholders(prefix)
#endif

#ifndef AC_VERSION
#define AC_VERSION "unknown"
#endif

/* GUC variables (guc.c) */
extern char *ac_database;
extern char *ac_temporal_url;
extern char *ac_temporal_namespace;
extern char *ac_temporal_api_key;
extern char *ac_temporal_tls_ca_file;
extern char *ac_temporal_tls_cert_file;
extern char *ac_temporal_tls_key_file;
extern int	ac_temporal_connect_timeout_ms;
extern int	ac_temporal_request_timeout_ms;
extern int	ac_temporal_concurrency;
extern char *ac_nats_url;
extern char *ac_nats_credentials_file;
extern char *ac_nats_tls_ca_file;
extern char *ac_nats_tls_cert_file;
extern char *ac_nats_tls_key_file;
extern char *ac_stream_name;
extern char *ac_subject_prefix;
extern char *ac_consumer_name;
extern int	ac_router_batch_size;
extern int	ac_router_concurrency;
extern int	ac_reconcile_interval_s;
extern char *ac_metrics_listen;

extern void AcDefineGucs(void);

/* Time zone names (timezone.c) */
extern const char *AcCanonicalTimezone(const char *name);

#endif							/* ACTIVITY_CORE_H */
