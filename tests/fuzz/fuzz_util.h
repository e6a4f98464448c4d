/* fuzz_util.h - what the libFuzzer harnesses of tests/fuzz share: a private scratch directory
 * for readers that take a path, and a little-endian u32 reader for length prefixes.
 *
 * Each harness process gets its own directory (under /dev/shm when it exists, so that writing
 * an input costs no disk I/O), removed with everything in it when the process exits. A failure
 * of the harness itself (no directory, a short write) aborts: it is a broken test setup, not a
 * finding, and it must not pass silently. */
#ifndef AUXPS_FUZZ_UTIL_H
#define AUXPS_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* The scratch directory, created on first use under $AUXPS_FUZZ_SCRATCH if set, else under
 * /dev/shm or /tmp. */
const char *fz_dir(void);

/* Writes dir/name (replacing it) with size bytes of data, and puts the path in path (4096
 * bytes). Aborts on failure. */
void fz_write(char path[4096], const char *name, const void *data, size_t size);

/* Removes every file in the scratch directory. */
void fz_clear(void);

/* The little-endian u32 at p. */
uint32_t fz_u32(const uint8_t *p);

/* Writes v little-endian at p. */
void fz_put_u32(uint8_t *p, uint32_t v);

#endif
