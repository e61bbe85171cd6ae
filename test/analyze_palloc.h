/*
 * analyze_palloc.h
 *	  Forced into every file by test/analyze.sh (gcc -include) in its second
 *	  pass only: declares PostgreSQL's palloc family as allocators whose
 *	  deallocator is pfree, never returning NULL (they raise an error
 *	  instead), so that gcc -fanalyzer checks double pfree, use after pfree
 *	  and pfree of memory that malloc (or a library) returned, and free() of
 *	  palloc'd memory.  Not part of any build.
 */
#include "postgres.h"

extern void pfree(void *pointer);
extern void *palloc(Size size) __attribute__((malloc, malloc(pfree, 1), returns_nonnull));
extern void *palloc0(Size size) __attribute__((malloc, malloc(pfree, 1), returns_nonnull));
extern void *palloc_extended(Size size, int flags) __attribute__((malloc, malloc(pfree, 1)));
extern char *pstrdup(const char *in) __attribute__((malloc, malloc(pfree, 1), returns_nonnull));
extern char *pnstrdup(const char *in, Size len) __attribute__((malloc, malloc(pfree, 1), returns_nonnull));
extern char *psprintf(const char *fmt,...) __attribute__((malloc, malloc(pfree, 1), returns_nonnull));
extern void *repalloc(void *pointer, Size size) __attribute__((malloc(pfree, 1), returns_nonnull));
extern void *MemoryContextAlloc(MemoryContext context, Size size) __attribute__((malloc, malloc(pfree, 1), returns_nonnull));
extern void *MemoryContextAllocZero(MemoryContext context, Size size) __attribute__((malloc, malloc(pfree, 1), returns_nonnull));
extern char *MemoryContextStrdup(MemoryContext context, const char *string) __attribute__((malloc, malloc(pfree, 1), returns_nonnull));
