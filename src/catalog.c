/*-------------------------------------------------------------------------
 *
 * catalog.c
 *	  Where the extension's own objects are: its schema and its definitions
 *	  table, found through the extension catalog.
 *
 * Nothing here trusts names as the caller sees them.  The schema is the
 * one pg_extension records for activity_core, and tables are looked up in
 * that schema only, so a caller's search_path or a temporary table of the
 * same name never redirects a lookup.  The trigger functions use
 * AcCheckTriggerTarget() to refuse to run on any table but the extension's
 * own ac_activity_definitions: one of them runs as the extension's owner,
 * and must never be steered into writing where a caller chooses.
 *
 * IDENTIFICATION
 *	  src/catalog.c
 *
 *-------------------------------------------------------------------------
 */
#include "activity_core.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/indexing.h"
#include "catalog/pg_extension.h"
#include "commands/trigger.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"

/* The namespace activity_core is installed in, or InvalidOid. */
Oid
AcExtensionNamespace(void)
{
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tuple;
	Oid			nsp = InvalidOid;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber,
				F_NAMEEQ, CStringGetDatum("activity_core"));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tuple = systable_getnext(scan);
	if (HeapTupleIsValid(tuple))
		nsp = ((Form_pg_extension) GETSTRUCT(tuple))->extnamespace;
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return nsp;
}

/* The OID of the extension's ac_activity_definitions, or InvalidOid. */
Oid
AcDefinitionsRelid(void)
{
	Oid			nsp = AcExtensionNamespace();

	if (!OidIsValid(nsp))
		return InvalidOid;
	return get_relname_relid("ac_activity_definitions", nsp);
}

/*
 * Refuse to go on unless a trigger function fires on the extension's own
 * definitions table: attached to any other table, it could be made to act
 * on objects its caller planted.
 */
void
AcCheckTriggerTarget(FunctionCallInfo fcinfo, const char *function)
{
	TriggerData *td = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("%s can only be called as a trigger", function)));
	if (RelationGetRelid(td->tg_relation) != AcDefinitionsRelid())
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("%s fires only on the extension's own ac_activity_definitions, not on \"%s\"",
						function, RelationGetRelationName(td->tg_relation))));
}

/* The schema the extension lives in, in TopTransactionContext, or NULL. */
char *
AcExtensionSchema(void)
{
	Oid			nsp = AcExtensionNamespace();
	char	   *name;

	if (!OidIsValid(nsp) || (name = get_namespace_name(nsp)) == NULL)
		return NULL;
	return MemoryContextStrdup(TopTransactionContext, name);
}

/*
 * For a worker outside any transaction: the extension's schema as a
 * TopMemoryContext string, or NULL while it is not installed.
 */
char *
AcWorkerSchema(void)
{
	char	   *schema;
	MemoryContext caller = CurrentMemoryContext;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	schema = AcExtensionSchema();
	if (schema)
		schema = MemoryContextStrdup(TopMemoryContext, schema);
	CommitTransactionCommand();
	/* the commit leaves TopMemoryContext current: give the caller its own back */
	MemoryContextSwitchTo(caller);
	return schema;
}

/*
 * Refuse unless the current user may read the extension's relation relname:
 * for functions that serve a view, which lends its rights to no function.
 */
void
AcRequireSelect(const char *relname)
{
	Oid			nsp = AcExtensionNamespace();
	Oid			relid = OidIsValid(nsp) ? get_relname_relid(relname, nsp) : InvalidOid;

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("extension activity_core is not installed in this database")));
	if (pg_class_aclcheck(relid, GetUserId(), ACL_SELECT) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for view %s", relname),
				 errhint("GRANT SELECT ON %s TO the role.", relname)));
}
