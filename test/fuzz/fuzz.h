/*-------------------------------------------------------------------------
 *
 * fuzz.h
 *	  The libFuzzer targets run inside a backend (fuzz_driver.c).
 *
 * IDENTIFICATION
 *	  test/fuzz/fuzz.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef AC_FUZZ_H
#define AC_FUZZ_H

#include <stddef.h>
#include <stdint.h>

/* One input; it may ereport(ERROR), which counts as refused. */
typedef int (*AcFuzzTarget) (const uint8_t *data, size_t size);

extern int	AcFuzzEnvelope(const uint8_t *data, size_t size);
extern int	AcFuzzValidate(const uint8_t *data, size_t size);
extern int	AcFuzzTemporal(const uint8_t *data, size_t size);

/* Report a broken invariant of a target and abort: libFuzzer's crash */
extern void AcFuzzFail(const char *target, const char *what) __attribute__((noreturn));

#endif							/* AC_FUZZ_H */
