/*-------------------------------------------------------------------------
 *
 * compat.h
 *	  The differences between the PostgreSQL majors activity_core builds on
 *	  (14 to 18), in one place: each is a macro or inline function named
 *	  after what the code needs, defined once per range of majors.
 *
 * IDENTIFICATION
 *	  src/compat.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef AC_COMPAT_H
#define AC_COMPAT_H

#include "postgres.h"

#if PG_VERSION_NUM < 140000 || PG_VERSION_NUM >= 190000
#error "activity_core supports PostgreSQL 14 to 18"
#endif

/* 15 reserves a GUC prefix; 14 only warns about unknown placeholders */
#if PG_VERSION_NUM < 150000
#define MarkGUCPrefixReserved(prefix) EmitWarningsOnPlaceholders(prefix)
#endif

/* a set-returning function that materialises its rows (InitMaterializedSRF) */
#if PG_VERSION_NUM < 150000
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/tuplestore.h"

/* 14 has neither InitMaterializedSRF (16) nor SetSingleFuncCall (15) */
static inline void
InitMaterializedSRF(FunctionCallInfo fcinfo, bits32 flags)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	MemoryContext old;
	TupleDesc	desc;

	if (rsinfo == NULL || !IsA(rsinfo, ReturnSetInfo) ||
		(rsinfo->allowedModes & SFRM_Materialize) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("set-valued function called in context that cannot accept a set")));
	old = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	rsinfo->returnMode = SFRM_Materialize;
	rsinfo->setResult = tuplestore_begin_heap(true, false, work_mem);
	rsinfo->setDesc = desc;
	MemoryContextSwitchTo(old);
}
#elif PG_VERSION_NUM < 160000
#define InitMaterializedSRF(fcinfo, flags) SetSingleFuncCall(fcinfo, flags)
#endif

/* text to int64, throwing on bad input: pg_strtoint64 since 15 */
#if PG_VERSION_NUM < 150000
#include "utils/int8.h"

/* 14's scanint8 under 15's name */
static inline int64
pg_strtoint64(const char *s)
{
	int64		result;

	(void) scanint8(s, false, &result);
	return result;
}
#endif

/* this process's number among PGPROCs: MyProcNumber since 17 */
#if PG_VERSION_NUM >= 170000
#define AcMyProcNumber() ((uint32) MyProcNumber)
#else
#define AcMyProcNumber() ((uint32) MyProc->pgprocno)
#endif

/* a JSON lexer over a string: 17 takes the context to fill (NULL: allocate) */
#if PG_VERSION_NUM >= 170000
#define AcMakeJsonLexContext(json, len) \
	makeJsonLexContextCstringLen(NULL, (json), (len), PG_UTF8, true)
#else
#define AcMakeJsonLexContext(json, len) \
	makeJsonLexContextCstringLen((json), (len), PG_UTF8, true)
#endif

/* JSON semantic actions return an error code since 16 */
#if PG_VERSION_NUM >= 160000
#define AC_JSON_ACTION JsonParseErrorType
#define AC_JSON_DONE return JSON_SUCCESS
#else
#define AC_JSON_ACTION void
#define AC_JSON_DONE return
#endif

/* a wait event set: 17 ties it to a resource owner, not a memory context */
#if PG_VERSION_NUM >= 170000
#define AcCreateWaitEventSet(nevents) CreateWaitEventSet(NULL, (nevents))
#else
#define AcCreateWaitEventSet(nevents) CreateWaitEventSet(CurrentMemoryContext, (nevents))
#endif

/* does a role own a relation (or is it a superuser)? object_ownercheck since 16 */
#if PG_VERSION_NUM >= 160000
#define AcRelationOwnerCheck(relid, roleid) object_ownercheck(RelationRelationId, (relid), (roleid))
#else
#define AcRelationOwnerCheck(relid, roleid) pg_class_ownercheck((relid), (roleid))
#endif

#endif							/* AC_COMPAT_H */
