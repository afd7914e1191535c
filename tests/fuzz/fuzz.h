/* fuzz.h - what the libFuzzer targets in tests/fuzz/ share. */
#ifndef TLSFWD_FUZZ_H
#define TLSFWD_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int	LLVMFuzzerInitialize(int *argc, char ***argv);

/*
 * An invariant the target checks itself: a violation is a finding like a
 * sanitizer report, so it aborts, and libFuzzer saves the input.
 */
#define FUZZ_CHECK(cond) do {						\
	if (!(cond)) {							\
		fprintf(stderr, "%s:%d: invariant violated: %s\n",	\
		    __FILE__, __LINE__, #cond);				\
		abort();						\
	}								\
} while (0)

#endif
