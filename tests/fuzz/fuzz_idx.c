/* fuzz_idx.c - libFuzzer harness of the IDX dataset reader (common/data.c), gzip-compressed or
 * plain: dataset_load reads an image file and a label file from a directory.
 *
 * Input: one byte, the sample limit given to dataset_load (0 = all); a little-endian u32, the
 * size of the image file (a size beyond the input takes what is left); the image file; the rest
 * is the label file. Each file goes under the name dataset_load looks for; zlib reads gzip or
 * plain bytes alike, so the corpus holds both.
 *
 * A load that succeeds must describe buffers that really hold n samples (ASan checks the
 * reads): the harness builds an augmented batch of a few samples from them with dataset_batch,
 * as the trainer would. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data.h"
#include "fuzz_util.h"

enum { BATCH = 4, MAX_BATCH_VALUES = 1 << 16 };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 5) return 0;
    const int limit = data[0];
    size_t im = fz_u32(data + 1);
    data += 5, size -= 5;
    if (im > size) im = size;
    char path[4096];
    fz_write(path, "train-images-idx3-ubyte", data, im);
    fz_write(path, "train-labels-idx1-ubyte", data + im, size - im);

    dataset_t ds;
    auxps_error_t e = {0};
    if (dataset_load(&ds, fz_dir(), 1, limit, &e) == 0) {
        if (ds.n < 1 || ds.classes < 1 || ds.classes > 256 || (limit > 0 && ds.n > limit)) {
            fprintf(stderr, "fuzz_idx: loaded n %d classes %d with limit %d\n", ds.n, ds.classes, limit);
            abort();
        }
        const size_t sample = (size_t)ds.c * ds.h * ds.w;
        if (sample * BATCH <= MAX_BATCH_VALUES) {
            static float x[MAX_BATCH_VALUES];
            int idx[BATCH], y[BATCH];
            for (int i = 0; i < BATCH; i++) idx[i] = (ds.n - 1) * i / (BATCH - 1);
            const data_transform_t t = {.mean = 0.5f, .std = 0.25f, .crop_pad = 2, .flip = 1};
            rng_t r;
            rng_seed(&r, 1);
            dataset_batch(&ds, idx, BATCH, &t, &r, x, y);
            for (int i = 0; i < BATCH; i++)
                if (y[i] < 0 || y[i] >= ds.classes) abort();
        }
        dataset_free(&ds);
    }
    return 0;
}
