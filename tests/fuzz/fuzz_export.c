/* fuzz_export.c - libFuzzer harness of the exported-model reader (common/export.c): the input
 * is one exported-model file image, read with export_load_mem.
 *
 * It is read twice: as it is, and with its stated file size and trailing CRC-32 made to match
 * the bytes, so that mutations get past the envelope to the spec and the tensor records. A model
 * that loads must keep export.h's promises: it classifies an image (a forward pass, for inputs
 * of at most FORWARD_MAX values), and it exports back to exactly the bytes it was loaded from. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "export.h"
#include "fuzz_util.h"

enum { FORWARD_MAX = 4096, ENVELOPE = EXPORT_HEADER_BYTES + 8 + 4 };

static void die(const char *what, const char *detail) {
    fprintf(stderr, "fuzz_export: %s: %s\n", what, detail);
    abort();
}

static void check_loaded(model_t *m, float mean, float std, const uint8_t *file, size_t size) {
    const model_spec_t *sp = model_spec(m);
    const size_t in = (size_t)sp->in_c * sp->in_h * sp->in_w;
    if (in <= FORWARD_MAX) {
        static float x[FORWARD_MAX];
        for (size_t i = 0; i < in; i++) x[i] = (float)(i % 7) - 3.0f;
        model_result_t res;
        model_forward(m, x, NULL, 1, 0, &res);
    }
    char path[4096];
    fz_write(path, "model.bin", "", 0);
    auxps_error_t e = {0};
    if (export_save(m, mean, std, path, &e) != 0) die("a loaded model does not export", e.msg);
    FILE *f = fopen(path, "rb");
    uint8_t *back = malloc(size + 1);
    if (f == NULL || back == NULL) die("reading back", path);
    const size_t got = fread(back, 1, size + 1, f);
    fclose(f);
    if (got != size || memcmp(back, file, size) != 0) die("a loaded model exports to other bytes", path);
    free(back);
}

static void load(const uint8_t *file, size_t size) {
    model_t *m = NULL;
    float mean = 0.0f, std = 1.0f;
    auxps_error_t e = {0};
    if (export_load_mem(file, size, "fuzz.bin", 1, &m, &mean, &std, &e) == 0) check_loaded(m, mean, std, file, size);
    model_destroy(&m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    load(data, size);
    if (size >= ENVELOPE) {
        uint8_t *fixed = malloc(size);
        if (fixed == NULL) return 0;
        memcpy(fixed, data, size);
        fz_put_u32(fixed + 12, (uint32_t)size); /* the u64 file size; the high half is 0 */
        fz_put_u32(fixed + 16, 0);
        const size_t n = size - 4;
        fz_put_u32(fixed + n, (uint32_t)crc32(crc32(0L, Z_NULL, 0), fixed, (uInt)n));
        load(fixed, size);
        free(fixed);
    }
    return 0;
}
