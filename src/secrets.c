/*-------------------------------------------------------------------------
 *
 * secrets.c
 *	  The credentials of Temporal and NATS: read from files named by
 *	  settings, and kept out of the server log.
 *
 * PostgreSQL logs "parameter X changed to V" with the new value whenever a
 * reload changes a setting, whatever the setting's flags.  A secret given
 * inline (activity_core.temporal_api_key, a password inside
 * activity_core.nats_url) would land in the log that way, so the documented
 * way is a file named by a setting (temporal_api_key_file,
 * nats_password_file): only its path is a setting, and the file is read by
 * the process that needs the secret, when it needs it.  For the inline
 * settings, which stay for compatibility, an emit_log_hook rewrites those
 * log lines before they are written, in every process that loaded the
 * library (the postmaster among them, which is the one that logs them).
 *
 * A secret file holds the secret on its first line; trailing white space
 * and the line end are dropped.  It is read again when its path, size or
 * modification time changes, so rotating a key needs no restart.
 *
 * IDENTIFICATION
 *	  src/secrets.c
 *
 *-------------------------------------------------------------------------
 */
#include "activity_core.h"

#include <sys/stat.h>

#include "utils/elog.h"
#include "utils/memutils.h"

/* A secret read from a file, with what it was read from. */
typedef struct SecretFile
{
	char	   *path;			/* TopMemoryContext */
	off_t		size;
	struct timespec mtime;
	char	   *value;			/* TopMemoryContext; NULL when empty */
} SecretFile;

static SecretFile temporal_key_file;
static SecretFile nats_password_file;
static emit_log_hook_type prev_emit_log_hook = NULL;

/* The settings whose values the log must never show. */
static const char *const secret_settings[] = {
	"activity_core.temporal_api_key",
	"activity_core.nats_url",
	"activity_core.temporal_url",	/* may carry user:password@ too */
};

/* Forget a cached secret, wiping it first. */
static void
ForgetSecret(SecretFile *sf)
{
	if (sf->value)
	{
		explicit_bzero(sf->value, strlen(sf->value));
		pfree(sf->value);
	}
	if (sf->path)
		pfree(sf->path);
	memset(sf, 0, sizeof(*sf));
}

/*
 * The secret in the file at path (setting names the setting, for errors),
 * read again only when the file changed; NULL when path is empty or the
 * file holds nothing.  When the file cannot be read, NULL with *error set
 * (it names the path, never the content).
 */
static const char *
SecretFromFile(SecretFile *sf, const char *path, const char *setting, char **error)
{
	struct stat st;
	FILE	   *f;
	char		buf[8192];
	size_t		len;

	*error = NULL;
	if (path == NULL || path[0] == '\0')
	{
		ForgetSecret(sf);
		return NULL;
	}
	*error = NULL;
	if (stat(path, &st) != 0)
	{
		*error = psprintf("could not read %s \"%s\": %m", setting, path);
		return NULL;
	}
	if (sf->path && strcmp(sf->path, path) == 0 && sf->size == st.st_size &&
		sf->mtime.tv_sec == st.st_mtim.tv_sec && sf->mtime.tv_nsec == st.st_mtim.tv_nsec)
		return sf->value;

	ForgetSecret(sf);
	f = fopen(path, "r");
	if (f == NULL)
	{
		*error = psprintf("could not read %s \"%s\": %m", setting, path);
		return NULL;
	}
	len = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[len] = '\0';
	len = strcspn(buf, "\r\n");
	while (len > 0 && (buf[len - 1] == ' ' || buf[len - 1] == '\t'))
		len--;
	buf[len] = '\0';
	sf->path = MemoryContextStrdup(TopMemoryContext, path);
	sf->size = st.st_size;
	sf->mtime = st.st_mtim;
	sf->value = len > 0 ? MemoryContextStrdup(TopMemoryContext, buf) : NULL;
	explicit_bzero(buf, sizeof(buf));
	return sf->value;
}

/*
 * The Temporal API key to send as a bearer token, or NULL for none: from
 * activity_core.temporal_api_key_file when set, else the inline setting.
 * NULL with *error set when the file cannot be read.
 */
const char *
AcTemporalApiKey(char **error)
{
	const char *key;
	const char *setting = "activity_core.temporal_api_key_file";

	*error = NULL;
	if (ac_temporal_api_key_file && ac_temporal_api_key_file[0])
		key = SecretFromFile(&temporal_key_file, ac_temporal_api_key_file,
							 setting, error);
	else
	{
		ForgetSecret(&temporal_key_file);
		setting = "activity_core.temporal_api_key";
		key = (ac_temporal_api_key && ac_temporal_api_key[0]) ? ac_temporal_api_key : NULL;
	}
	/* a control character would end the header or smuggle another one in */
	for (const char *c = key; c && *c; c++)
		if ((unsigned char) *c < 0x20 || *c == 0x7f)
		{
			*error = psprintf("%s holds a control character, which an HTTP header cannot carry", setting);
			return NULL;
		}
	return key;
}

/*
 * The NATS password of activity_core.nats_user, from
 * activity_core.nats_password_file, or NULL; NULL with *error set when the
 * file cannot be read.
 */
const char *
AcNatsPassword(char **error)
{
	return SecretFromFile(&nats_password_file, ac_nats_password_file,
						  "activity_core.nats_password_file", error);
}

/*
 * emit_log_hook: hide the value in "parameter X changed to V" when X is a
 * setting that may hold a secret.
 */
static void
RedactSecretSettings(ErrorData *edata)
{
	if (edata->message_id != NULL &&
		strcmp(edata->message_id, "parameter \"%s\" changed to \"%s\"") == 0 &&
		edata->message != NULL)
	{
		for (int i = 0; i < (int) lengthof(secret_settings); i++)
		{
			char	   *quoted = psprintf("\"%s\"", secret_settings[i]);

			if (strstr(edata->message, quoted) != NULL)
			{
				edata->message = psprintf("parameter %s changed (value not shown: it may hold a secret)",
										  quoted);
				break;
			}
		}
	}
	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
}

/* Install the log hook that keeps secrets out of the server log. */
void
AcInstallSecretRedaction(void)
{
	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = RedactSecretSettings;
}
