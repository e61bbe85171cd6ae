/*-------------------------------------------------------------------------
 *
 * ids.c
 *	  Ids: random and derived UUIDs for workflow starts and request ids, and
 *	  the id of this installation.
 *
 * A derived id is a function of its key alone, so that a retried request
 * carries the request id of the first try and Temporal answers it once.
 * The installation id (the cluster's system id and the database's oid) is
 * written into each schedule's memo, so that a reconcile tells the
 * schedules this database made from others.
 *
 * IDENTIFICATION
 *	  src/ids.c
 *
 *-------------------------------------------------------------------------
 */
#include "activity_core.h"

#include "access/xlog.h"
#include "common/hashfn.h"
#include "miscadmin.h"

/* Return a new random UUID as text (palloc'd). */
char *
AcNewUuid(void)
{
	unsigned char b[16];

	if (!pg_strong_random(b, sizeof(b)))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate a random request id")));
	b[6] = (b[6] & 0x0f) | 0x40;
	b[8] = (b[8] & 0x3f) | 0x80;
	return psprintf("%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
					b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9],
					b[10], b[11], b[12], b[13], b[14], b[15]);
}

/* A UUID-shaped id derived from a key: two 64-bit hashes of it. */
char *
AcDerivedUuid(const char *key)
{
	int			len = strlen(key);
	uint64		a = DatumGetUInt64(hash_bytes_extended((const unsigned char *) key, len, 0x61637469));
	uint64		b = DatumGetUInt64(hash_bytes_extended((const unsigned char *) key, len, 0x76697479));

	return psprintf("%08x-%04x-%04x-%04x-%012llx",
					(uint32) (a >> 32), (uint32) (a >> 16) & 0xffff,
					((uint32) a & 0x0fff) | 0x5000, ((uint32) (b >> 48) & 0x3fff) | 0x8000,
					(unsigned long long) (b & UINT64CONST(0xffffffffffff)));
}

/* Which installation made a schedule: the cluster's system id and the database. */
char *
AcInstallationId(void)
{
	return psprintf(UINT64_FORMAT ":%u", GetSystemIdentifier(), MyDatabaseId);
}
