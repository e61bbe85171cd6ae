/*-------------------------------------------------------------------------
 *
 * fuzz_envelope.c
 *	  libFuzzer target: the envelope parser of the router.
 *
 * Each input is the bytes of one message, given to AcParseEnvelope() as
 * the router does (native envelopes and CloudEvents alike), with a size
 * limit of 4 kB so that both sides of the oversize check are reached.
 * Checked: poison always has a reason; a parsed envelope has a non-empty
 * event_id without "/" of at most 900 bytes, a non-empty type, the text it
 * was read from, a payload span inside that text, and a payload that
 * AcEnvelopePayload() turns into a jsonb object without an error (the
 * router makes it only when a definition filters on it).
 *
 * IDENTIFICATION
 *	  test/fuzz/fuzz_envelope.c
 *
 *-------------------------------------------------------------------------
 */
#include "activity_core.h"

#include "events.h"
#include "fuzz.h"

#define FUZZ_MAX_EVENT_BYTES 4096

/* Parse one message. */
int
AcFuzzEnvelope(const uint8_t *data, size_t size)
{
	AcEnvelope	env;
	Jsonb	   *payload;

	if (size > INT_MAX)
		return 0;
	if (!AcParseEnvelope((const char *) data, (int) size, FUZZ_MAX_EVENT_BYTES, &env))
	{
		if (env.reason == NULL || env.reason[0] == '\0')
			AcFuzzFail("envelope", "poison without a reason");
		return 0;
	}
	if (size > FUZZ_MAX_EVENT_BYTES)
		AcFuzzFail("envelope", "an oversize message was accepted");
	if (env.event_id == NULL || env.event_id[0] == '\0' ||
		strchr(env.event_id, '/') != NULL || strlen(env.event_id) > 900)
		AcFuzzFail("envelope", "accepted a bad event_id");
	if (env.type == NULL || env.type[0] == '\0')
		AcFuzzFail("envelope", "accepted a bad type");
	if (env.text == NULL || strlen(env.text) != size)
		AcFuzzFail("envelope", "the envelope text is not the message");
	if (env.payload_text != NULL &&
		(env.payload_text < env.text || env.payload_len <= 0 ||
		 env.payload_text + env.payload_len > env.text + size))
		AcFuzzFail("envelope", "the payload is not inside the message");
	payload = AcEnvelopePayload(&env);
	if (payload == NULL || !JB_ROOT_IS_OBJECT(payload) || JB_ROOT_IS_SCALAR(payload))
		AcFuzzFail("envelope", "the payload is not an object");
	return 0;
}
