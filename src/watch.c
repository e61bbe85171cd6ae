/*-------------------------------------------------------------------------
 *
 * watch.c
 *	  Table watches: committed row changes of a user's table become events.
 *
 * ac_watch(tbl, event_type, operations, columns) installs the AFTER ROW
 * trigger ac_watch on the table, running ac_watch_trigger() with the event
 * type and the watched columns as its arguments; the operations are the
 * trigger's events.  Everything a watch is lives in that one pg_trigger row,
 * so it is dumped and restored with the table, dropped with it, and keeps
 * its event type across ALTER TABLE ... RENAME.  ac_watches lists them
 * (ac_watch_list()); ac_unwatch(tbl) drops the trigger.
 *
 * The trigger writes each row change to ac_outbox, in the user's
 * transaction, as ac_publish() does: a rolled-back transaction or
 * savepoint takes its rows with it, and the dispatcher publishes committed
 * rows with Msg-Id = event id.  The event id is a fresh UUID drawn when the
 * change is written, stored with the outbox entry, so it is unique per row
 * change and the same on every redelivery of that entry.
 *
 * Privileges: only the table's owner (or a superuser) may watch or unwatch
 * it, and ac_watch_trigger() is not executable by PUBLIC, so no one can
 * attach it to a table with CREATE TRIGGER and publish events of a type of
 * their choosing.  ac_watch creates the trigger as the extension's owner
 * (who may use ac_watch_trigger()) under search_path pg_catalog, pg_temp,
 * every name qualified.  The trigger converts rows with to_jsonb as the user
 * who changed them (a cast to json of a user's type runs with that user's
 * rights, never the owner's), and only the INSERT into ac_outbox runs as the
 * extension's owner, so writers of a watched table need no rights on the
 * outbox.
 *
 * IDENTIFICATION
 *	  src/watch.c
 *
 *-------------------------------------------------------------------------
 */
#include "activity_core.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/catalog.h"
#include "catalog/dependency.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_trigger.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parse_func.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(ac_watch);
PG_FUNCTION_INFO_V1(ac_unwatch);
PG_FUNCTION_INFO_V1(ac_watch_trigger);
PG_FUNCTION_INFO_V1(ac_watch_list);

#define WATCH_TRIGGER "ac_watch"

/* What the trigger keeps for the rest of its statement (fn_extra). */
typedef struct WatchCache
{
	Oid			relid;
	Oid			outbox_owner;
	char	   *table;			/* schema.table, unquoted */
	FmgrInfo	to_jsonb;		/* to_jsonb(<the table's row type>) */
} WatchCache;

/* The prepared INSERT into ac_outbox, for the extension's schema. */
static SPIPlanPtr outbox_plan = NULL;
static Oid	outbox_plan_nsp = InvalidOid;

/* The OID of ac_watch_trigger() in the extension's schema. */
static Oid
WatchTriggerFunction(Oid nsp)
{
	List	   *name = list_make2(makeString(get_namespace_name(nsp)),
								  makeString("ac_watch_trigger"));

	return LookupFuncName(name, 0, NULL, false);
}

/* Refuse a table the caller may not watch, or that cannot be watched. */
static Relation
OpenWatchable(Oid relid)
{
	Relation	rel;
	char		kind;

	/* the owner check comes before the lock a non-owner must not take */
	if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(relid)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid)));
	if (!AcRelationOwnerCheck(relid, GetUserId()))
		aclcheck_error(ACLCHECK_NOT_OWNER, get_relkind_objtype(get_rel_relkind(relid)),
					   get_rel_name(relid));
	rel = table_open(relid, ShareRowExclusiveLock);
	kind = rel->rd_rel->relkind;

	if (kind != RELKIND_RELATION && kind != RELKIND_PARTITIONED_TABLE)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("tbl \"%s\" is not a table", RelationGetRelationName(rel)),
				 errhint("ac_watch watches ordinary and partitioned tables.")));
	if (rel->rd_rel->relpersistence == RELPERSISTENCE_TEMP)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("tbl \"%s\" is a temporary table, which cannot be watched",
						RelationGetRelationName(rel)),
				 errhint("Watch a permanent or unlogged table.")));
	if (IsCatalogRelation(rel) ||
		OidIsValid(getExtensionOfObject(RelationRelationId, relid)))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("tbl \"%s\" belongs to an extension or the system catalogs, and cannot be watched",
						RelationGetRelationName(rel)),
				 errhint("Watch tables of your own; the extension's own tables (ac_outbox above all) are not.")));
	return rel;
}

/* The text elements of an array argument (no NULLs); NIL for NULL. */
static List *
TextElements(ArrayType *arr, const char *argname)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	List	   *out = NIL;

	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	for (int i = 0; i < n; i++)
	{
		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("%s must not contain NULL", argname)));
		out = lappend(out, TextDatumGetCString(elems[i]));
	}
	return out;
}

/* Run a utility statement through SPI; SPI must be connected. */
static void
RunUtility(const char *sql)
{
	int			ret = SPI_execute(sql, false, 0);

	if (ret != SPI_OK_UTILITY)
		elog(ERROR, "could not run \"%s\": %s", sql, SPI_result_code_string(ret));
}

/*
 * Pin search_path to pg_catalog, pg_temp until the matching
 * AtEOXact_GUC(): every name is qualified anyway.
 */
static int
PinSearchPath(void)
{
	int			level = NewGUCNestLevel();

	(void) set_config_option("search_path", "pg_catalog, pg_temp", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	return level;
}

/* Drop the watch triggers of a table; returns how many. SPI connected. */
static int
DropWatchTriggers(Relation rel, Oid funcoid)
{
	char	   *qrel = quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
												  RelationGetRelationName(rel));
	int			dropped = 0;
	TriggerDesc *td = rel->trigdesc;
	List	   *names = NIL;
	ListCell   *lc;

	for (int i = 0; td && i < td->numtriggers; i++)
		if (td->triggers[i].tgfoid == funcoid && !td->triggers[i].tgisclone)
			names = lappend(names, pstrdup(td->triggers[i].tgname));
	foreach(lc, names)
	{
		RunUtility(psprintf("DROP TRIGGER %s ON %s", quote_identifier(lfirst(lc)), qrel));
		dropped++;
	}
	return dropped;
}

/*
 * ac_watch(tbl regclass, event_type text DEFAULT NULL, operations text[]
 * DEFAULT '{insert,update,delete}', columns text[] DEFAULT NULL) returns
 * the event type: installs (or replaces) the table's watch.
 */
Datum
ac_watch(PG_FUNCTION_ARGS)
{
	Oid			relid;
	Oid			nsp = AcExtensionNamespace();
	Oid			funcoid;
	Relation	rel;
	char	   *schema;
	char	   *type;
	char	   *problem;
	List	   *ops = NIL;
	List	   *cols = NIL;
	bool		ins = false,
				upd = false,
				del = false;
	StringInfoData sql;
	StringInfoData events;
	ListCell   *lc;
	Oid			owner;
	Oid			save_userid;
	int			save_sec;
	int			level;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("tbl must not be null")));
	if (!OidIsValid(nsp))
		elog(ERROR, "activity_core is not installed in this database");
	relid = PG_GETARG_OID(0);
	funcoid = WatchTriggerFunction(nsp);
	rel = OpenWatchable(relid);
	schema = get_namespace_name(RelationGetNamespace(rel));

	type = PG_ARGISNULL(1) ? psprintf("row.%s.%s", schema, RelationGetRelationName(rel)) :
		text_to_cstring(PG_GETARG_TEXT_PP(1));
	problem = AcEventTypeProblem(type);
	if (problem)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("event_type %s %s", AcShortValue(type), problem),
				 errhint("%s", PG_ARGISNULL(1) ?
						 "The default row.<schema>.<table> is not a valid event type for this table: pass event_type." :
						 "Use dot-separated tokens without spaces, control characters, \"*\" or \">\".")));

	ops = PG_ARGISNULL(2) ? list_make3("insert", "update", "delete") :
		TextElements(PG_GETARG_ARRAYTYPE_P(2), "operations");
	foreach(lc, ops)
	{
		char	   *op = lfirst(lc);

		if (strcmp(op, "insert") == 0)
			ins = true;
		else if (strcmp(op, "update") == 0)
			upd = true;
		else if (strcmp(op, "delete") == 0)
			del = true;
		else
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unknown operation %s in operations", AcShortValue(op)),
					 errhint("operations is a non-empty subset of {insert,update,delete}.")));
	}
	if (!ins && !upd && !del)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("operations must not be empty"),
				 errhint("operations is a non-empty subset of {insert,update,delete}; ac_unwatch() removes a watch.")));

	if (!PG_ARGISNULL(3))
	{
		cols = TextElements(PG_GETARG_ARRAYTYPE_P(3), "columns");
		if (cols == NIL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("columns must not be empty"),
					 errhint("Pass NULL to publish every column.")));
		foreach(lc, cols)
		{
			AttrNumber	att = get_attnum(relid, lfirst(lc));

			if (att <= 0)
				ereport(ERROR,
						(errcode(ERRCODE_UNDEFINED_COLUMN),
						 errmsg("column %s in columns does not exist in table \"%s\"",
								AcShortValue(lfirst(lc)), RelationGetRelationName(rel)),
						 errhint("Name columns of the table as they are spelled in it.")));
		}
	}

	initStringInfo(&events);
	if (ins)
		appendStringInfoString(&events, "INSERT");
	if (upd)
		appendStringInfo(&events, "%sUPDATE", events.len ? " OR " : "");
	if (del)
		appendStringInfo(&events, "%sDELETE", events.len ? " OR " : "");
	initStringInfo(&sql);
	appendStringInfo(&sql, "CREATE TRIGGER %s AFTER %s ON %s FOR EACH ROW EXECUTE FUNCTION %s.ac_watch_trigger(%s",
					 WATCH_TRIGGER, events.data,
					 quote_qualified_identifier(schema, RelationGetRelationName(rel)),
					 quote_identifier(get_namespace_name(nsp)), quote_literal_cstr(type));
	foreach(lc, cols)
		appendStringInfo(&sql, ", %s", quote_literal_cstr(lfirst(lc)));
	appendStringInfoChar(&sql, ')');

	/* as the extension's owner, who may attach ac_watch_trigger() */
	{
		HeapTuple	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(get_relname_relid("ac_outbox", nsp)));

		if (!HeapTupleIsValid(tup))
			elog(ERROR, "ac_outbox is missing in schema %s", get_namespace_name(nsp));
		owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
		ReleaseSysCache(tup);
	}
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	level = PinSearchPath();
	GetUserIdAndSecContext(&save_userid, &save_sec);
	SetUserIdAndSecContext(owner, save_sec | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	(void) DropWatchTriggers(rel, funcoid);
	RunUtility(sql.data);
	SetUserIdAndSecContext(save_userid, save_sec);
	AtEOXact_GUC(true, level);
	SPI_finish();
	table_close(rel, NoLock);
	PG_RETURN_TEXT_P(cstring_to_text(type));
}

/* ac_unwatch(tbl regclass) returns boolean: removes the table's watch. */
Datum
ac_unwatch(PG_FUNCTION_ARGS)
{
	Oid			nsp = AcExtensionNamespace();
	Relation	rel;
	int			dropped;
	int			level;

	if (!OidIsValid(nsp))
		elog(ERROR, "activity_core is not installed in this database");
	rel = OpenWatchable(PG_GETARG_OID(0));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	level = PinSearchPath();
	dropped = DropWatchTriggers(rel, WatchTriggerFunction(nsp));
	AtEOXact_GUC(true, level);
	SPI_finish();
	table_close(rel, NoLock);
	PG_RETURN_BOOL(dropped > 0);
}

/* The trigger's cache for this statement: row type conversion, names, owner. */
static WatchCache *
GetCache(FunctionCallInfo fcinfo, Relation rel)
{
	WatchCache *c = (WatchCache *) fcinfo->flinfo->fn_extra;

	if (c == NULL || c->relid != RelationGetRelid(rel))
	{
		MemoryContext old = MemoryContextSwitchTo(fcinfo->flinfo->fn_mcxt);
		Oid			nsp = get_func_namespace(fcinfo->flinfo->fn_oid);
		Oid			outbox = get_relname_relid("ac_outbox", nsp);
		HeapTuple	tup;
		FuncExpr   *expr;

		if (!OidIsValid(outbox))
			elog(ERROR, "ac_outbox is missing in schema %s", get_namespace_name(nsp));
		c = palloc0(sizeof(WatchCache));
		c->relid = RelationGetRelid(rel);
		c->table = psprintf("%s.%s", get_namespace_name(RelationGetNamespace(rel)),
							RelationGetRelationName(rel));
		tup = SearchSysCache1(RELOID, ObjectIdGetDatum(outbox));
		if (!HeapTupleIsValid(tup))
			elog(ERROR, "cache lookup failed for relation %u", outbox);
		c->outbox_owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
		ReleaseSysCache(tup);
		/* to_jsonb(anyelement) learns its argument's type from the call */
		fmgr_info_cxt(F_TO_JSONB, &c->to_jsonb, fcinfo->flinfo->fn_mcxt);
		expr = makeFuncExpr(F_TO_JSONB, JSONBOID,
							list_make1(makeNullConst(rel->rd_rel->reltype, -1, InvalidOid)),
							InvalidOid, InvalidOid, COERCE_EXPLICIT_CALL);
		c->to_jsonb.fn_expr = (Node *) expr;
		fcinfo->flinfo->fn_extra = c;
		if (outbox_plan_nsp != nsp)
		{
			SPIPlanPtr	plan;
			Oid			types[3] = {TEXTOID, TEXTOID, BYTEAOID};
			Oid			save_userid;
			int			save_sec;

			/* as the owner: the writer may lack USAGE on the schema */
			GetUserIdAndSecContext(&save_userid, &save_sec);
			SetUserIdAndSecContext(c->outbox_owner, save_sec | SECURITY_LOCAL_USERID_CHANGE |
								   SECURITY_RESTRICTED_OPERATION);
			plan = SPI_prepare(psprintf("INSERT INTO %s.ac_outbox (subject, msg_id, data) VALUES ($1, $2, $3)",
										quote_identifier(get_namespace_name(nsp))), 3, types);
			if (plan == NULL)
				elog(ERROR, "could not prepare the outbox insert: %s", SPI_result_code_string(SPI_result));
			SetUserIdAndSecContext(save_userid, save_sec);
			if (SPI_keepplan(plan) != 0)
				elog(ERROR, "could not keep the outbox insert");
			if (outbox_plan)
				SPI_freeplan(outbox_plan);
			outbox_plan = plan;
			outbox_plan_nsp = nsp;
		}
		MemoryContextSwitchTo(old);
	}
	return c;
}

/* A row as to_jsonb gives it, restricted to the watched columns if any. */
static Jsonb *
RowJson(WatchCache *c, Trigger *tg, HeapTuple tuple, TupleDesc desc)
{
	Datum		row = heap_copy_tuple_as_datum(tuple, desc);
	Jsonb	   *full = DatumGetJsonbP(FunctionCall1(&c->to_jsonb, row));
	JsonbParseState *st = NULL;
	JsonbIterator *it;
	JsonbIteratorToken tok;
	JsonbValue	k;
	JsonbValue	v;

	if (tg->tgnargs <= 1)
		return full;
	pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
	it = JsonbIteratorInit(&full->root);
	while ((tok = JsonbIteratorNext(&it, &k, true)) != WJB_DONE)
	{
		bool		wanted = false;

		if (tok != WJB_KEY)
			continue;
		tok = JsonbIteratorNext(&it, &v, true);
		for (int i = 1; i < tg->tgnargs && !wanted; i++)
			wanted = strlen(tg->tgargs[i]) == (size_t) k.val.string.len &&
				memcmp(tg->tgargs[i], k.val.string.val, k.val.string.len) == 0;
		if (!wanted)
			continue;
		pushJsonbValue(&st, WJB_KEY, &k);
		pushJsonbValue(&st, WJB_VALUE, &v);
	}
	return JsonbValueToJsonb(pushJsonbValue(&st, WJB_END_OBJECT, NULL));
}

/* Push "key": <string> into an object being built. */
static void
PushString(JsonbParseState **st, const char *key, const char *value)
{
	JsonbValue	k;
	JsonbValue	v;

	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	v.type = jbvString;
	v.val.string.val = (char *) value;
	v.val.string.len = strlen(value);
	pushJsonbValue(st, WJB_KEY, &k);
	pushJsonbValue(st, WJB_VALUE, &v);
}

/* Push "key": <jsonb object> into an object being built. */
static void
PushJsonb(JsonbParseState **st, const char *key, Jsonb *value)
{
	JsonbValue	k;
	JsonbValue	v;

	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	v.type = jbvBinary;
	v.val.binary.data = &value->root;
	v.val.binary.len = VARSIZE(value) - VARHDRSZ;
	pushJsonbValue(st, WJB_KEY, &k);
	pushJsonbValue(st, WJB_VALUE, &v);
}

/*
 * ac_watch_trigger(event_type, [column, ...]): the AFTER ROW trigger of a
 * watch.  Writes the row change to ac_outbox as the envelope ac_publish()
 * writes: {"event_id", "type", "payload": {"op", "table", "new", "old"},
 * "occurred_at", "source"}.
 */
Datum
ac_watch_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	Trigger    *tg;
	Relation	rel;
	TupleDesc	desc;
	WatchCache *c;
	const char *op;
	Jsonb	   *newj = NULL;
	Jsonb	   *oldj = NULL;
	JsonbParseState *st = NULL;
	Jsonb	   *payload;
	Jsonb	   *envelope;
	char	   *id;
	char	   *text;
	int			len;
	bytea	   *data;
	Datum		values[3];
	Oid			save_userid;
	int			save_sec;
	int			ret;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("ac_watch_trigger can only be called as a trigger")));
	if (!TRIGGER_FIRED_AFTER(td->tg_event) || !TRIGGER_FIRED_FOR_ROW(td->tg_event) ||
		td->tg_trigger->tgnargs < 1)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("ac_watch_trigger must be installed by ac_watch()")));
	tg = td->tg_trigger;
	rel = td->tg_relation;
	desc = RelationGetDescr(rel);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	c = GetCache(fcinfo, rel);

	if (TRIGGER_FIRED_BY_INSERT(td->tg_event))
	{
		op = "insert";
		newj = RowJson(c, tg, td->tg_trigtuple, desc);
	}
	else if (TRIGGER_FIRED_BY_UPDATE(td->tg_event))
	{
		op = "update";
		oldj = RowJson(c, tg, td->tg_trigtuple, desc);
		newj = RowJson(c, tg, td->tg_newtuple, desc);
		/* with columns, an update that changes none of them is no event */
		if (tg->tgnargs > 1 &&
			DatumGetBool(DirectFunctionCall2(jsonb_eq, JsonbPGetDatum(oldj), JsonbPGetDatum(newj))))
		{
			SPI_finish();
			return PointerGetDatum(NULL);
		}
	}
	else if (TRIGGER_FIRED_BY_DELETE(td->tg_event))
	{
		op = "delete";
		oldj = RowJson(c, tg, td->tg_trigtuple, desc);
	}
	else
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("ac_watch_trigger fires for INSERT, UPDATE and DELETE only")));

	pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
	PushString(&st, "op", op);
	PushString(&st, "table", c->table);
	if (newj)
		PushJsonb(&st, "new", newj);
	if (oldj)
		PushJsonb(&st, "old", oldj);
	payload = JsonbValueToJsonb(pushJsonbValue(&st, WJB_END_OBJECT, NULL));
	if (AcJsonbDepth(&payload->root, AC_MAX_EVENT_DEPTH) > AC_MAX_EVENT_DEPTH)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("the row change of table %s is nested more than %d levels deep", c->table,
						AC_MAX_EVENT_DEPTH),
				 errhint("The router would dead-letter it; restrict the watch's columns with ac_watch(..., columns => ...).")));

	id = AcNewUuid();
	st = NULL;
	pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
	PushString(&st, "event_id", id);
	PushString(&st, "type", tg->tgargs[0]);
	PushJsonb(&st, "payload", payload);
	PushString(&st, "occurred_at",
			   JsonEncodeDateTime(NULL, TimestampTzGetDatum(GetCurrentTransactionStartTimestamp()),
								  TIMESTAMPTZOID, NULL));
	PushString(&st, "source", "activity_core");
	envelope = JsonbValueToJsonb(pushJsonbValue(&st, WJB_END_OBJECT, NULL));
	text = JsonbToCString(NULL, &envelope->root, VARSIZE(envelope));
	len = strlen(text);
	AcCheckEventBytes(id, len);

	data = palloc(VARHDRSZ + len);
	SET_VARSIZE(data, VARHDRSZ + len);
	memcpy(VARDATA(data), text, len);
	values[0] = CStringGetTextDatum(psprintf("%s.%s", ac_subject_prefix, tg->tgargs[0]));
	values[1] = CStringGetTextDatum(id);
	values[2] = PointerGetDatum(data);

	/* only the outbox insert runs as the extension's owner */
	GetUserIdAndSecContext(&save_userid, &save_sec);
	SetUserIdAndSecContext(c->outbox_owner, save_sec | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	ret = SPI_execute_plan(outbox_plan, values, NULL, false, 0);
	SetUserIdAndSecContext(save_userid, save_sec);
	if (ret != SPI_OK_INSERT)
		elog(ERROR, "could not write the row change to ac_outbox: %s", SPI_result_code_string(ret));
	SPI_finish();
	AcWakeDispatcherAtCommit();
	return PointerGetDatum(NULL);
}

/*
 * ac_watch_list() returns setof (tbl regclass, event_type text, operations
 * text[], columns text[], enabled boolean): the watches of this database,
 * from pg_trigger (which every role may read).
 */
Datum
ac_watch_list(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Oid			nsp = AcExtensionNamespace();
	Oid			funcoid;
	Oid			argtypes[1] = {OIDOID};
	Datum		args[1];
	int			ret;

	InitMaterializedSRF(fcinfo, 0);
	if (!OidIsValid(nsp))
		return (Datum) 0;
	funcoid = WatchTriggerFunction(nsp);
	args[0] = ObjectIdGetDatum(funcoid);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	ret = SPI_execute_with_args("SELECT tgrelid, tgtype, tgenabled <> 'D', tgnargs, tgargs "
								"FROM pg_catalog.pg_trigger WHERE tgfoid = $1 AND tgparentid = 0 "
								"ORDER BY tgrelid", 1, argtypes, args, NULL, true, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read pg_trigger: %s", SPI_result_code_string(ret));
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		int16		tgtype = DatumGetInt16(SPI_getbinval(tup, desc, 2, &isnull));
		int			nargs = DatumGetInt16(SPI_getbinval(tup, desc, 4, &isnull));
		bytea	   *argbytes = DatumGetByteaPP(SPI_getbinval(tup, desc, 5, &isnull));
		char	   *p = VARDATA_ANY(argbytes);
		Datum		ops[3];
		int			nops = 0;
		Datum	   *cols = palloc(sizeof(Datum) * Max(nargs, 1));
		Datum		values[5];
		bool		nulls[5] = {false, false, false, false, false};

		if (TRIGGER_FOR_INSERT(tgtype))
			ops[nops++] = CStringGetTextDatum("insert");
		if (TRIGGER_FOR_UPDATE(tgtype))
			ops[nops++] = CStringGetTextDatum("update");
		if (TRIGGER_FOR_DELETE(tgtype))
			ops[nops++] = CStringGetTextDatum("delete");
		values[0] = SPI_getbinval(tup, desc, 1, &isnull);
		values[1] = CStringGetTextDatum(nargs > 0 ? p : "");
		values[2] = PointerGetDatum(construct_array(ops, nops, TEXTOID, -1, false, TYPALIGN_INT));
		for (int i = 0; i < nargs; i++)
		{
			if (i > 0)
				cols[i - 1] = CStringGetTextDatum(p);
			p += strlen(p) + 1;
		}
		if (nargs > 1)
			values[3] = PointerGetDatum(construct_array(cols, nargs - 1, TEXTOID, -1, false, TYPALIGN_INT));
		else
			nulls[3] = true;
		values[4] = SPI_getbinval(tup, desc, 3, &isnull);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	SPI_finish();
	return (Datum) 0;
}
