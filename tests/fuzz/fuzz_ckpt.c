/* fuzz_ckpt.c - libFuzzer harness of the checkpoint reader (common/ckpt.c): the input is one
 * checkpoint file, which ckpt_load_newest finds in a directory and verifies.
 *
 * The file is named after the step its header states (bytes 16..23, or 0 when it is shorter),
 * so that a consistent file can load. It is read twice: as it is, and with its trailing CRC-32
 * recomputed over the bytes before it, so that mutations get past the checksum to the fields
 * behind it. A load that succeeds must return exactly the bytes between header and CRC, under
 * the step of the name. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "ckpt.h"
#include "fuzz_util.h"

static void load(const uint8_t *file, size_t size, uint64_t step) {
    char name[64], path[4096];
    snprintf(name, sizeof name, "fz-%020" PRIu64 ".ckpt", step);
    fz_clear();
    fz_write(path, name, file, size);
    ckpt_t ck;
    auxps_error_t e = {0};
    const int rc = ckpt_load_newest(fz_dir(), "fz", CKPT_KIND_NODE, &ck, NULL, NULL, &e);
    if (rc == 0) {
        const size_t body = CKPT_HEADER_BYTES + CKPT_TRAILER_BYTES;
        if (size < body || ck.size != size - body || ck.step != step ||
            (ck.size > 0 && memcmp(ck.payload, file + CKPT_HEADER_BYTES, ck.size) != 0)) {
            fprintf(stderr, "fuzz_ckpt: a loaded checkpoint differs from its file\n");
            abort();
        }
    } else if (rc != CKPT_NONE && rc != AUXPS_EFORMAT && rc != AUXPS_EVERSION && rc != AUXPS_ECHECKSUM) {
        fprintf(stderr, "fuzz_ckpt: unexpected result %d: %s\n", rc, e.msg);
        abort();
    }
    ckpt_release(&ck);
    uint64_t steps[2];
    if (ckpt_list(fz_dir(), "fz", steps, 2, &e) != 1 || steps[0] != step) {
        fprintf(stderr, "fuzz_ckpt: ckpt_list does not list the one checkpoint: %s\n", e.msg);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint64_t step = 0;
    if (size >= 24)
        for (int i = 0; i < 8; i++) step |= (uint64_t)data[16 + i] << (8 * i);
    load(data, size, step);
    if (size >= CKPT_HEADER_BYTES + CKPT_TRAILER_BYTES) {
        uint8_t *fixed = malloc(size);
        if (fixed == NULL) return 0;
        memcpy(fixed, data, size);
        const size_t n = size - CKPT_TRAILER_BYTES;
        fz_put_u32(fixed + n, (uint32_t)crc32(crc32(0L, Z_NULL, 0), fixed, (uInt)n));
        load(fixed, size, step);
        free(fixed);
    }
    return 0;
}
