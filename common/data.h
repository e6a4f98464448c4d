/* data.h - image classification datasets in IDX format (MNIST, Fashion-MNIST) and the batch
 * builder that turns stored bytes into normalised, optionally augmented float tensors.
 *
 * Files are read through zlib, so each may be gzip-compressed or plain. IDX stores every
 * integer big-endian; this module accepts only the unsigned-byte element type (0x08). A data
 * file is input from outside: every header field is checked against the limits below, and a
 * bad file yields an error code and a message naming it, never a crash. */
#ifndef AUXPS_DATA_H
#define AUXPS_DATA_H

#include <stdint.h>

#include "error.h"
#include "rng.h"

/* Debian's dataset-fashion-mnist package installs the four .gz files here. */
#define DATA_DEFAULT_DIR "/usr/share/datasets/fashion-mnist"

#define DATA_MAX_SAMPLES 10000000   /* n */
#define DATA_MAX_DIM 4096           /* each of c, h, w */
#define DATA_MAX_SAMPLE_BYTES (1 << 24) /* c * h * w */

typedef struct {
    int n, c, h, w;      /* sample count and image shape (Fashion-MNIST: c = 1, h = w = 28) */
    int classes;         /* max label + 1, over the whole label file (see dataset_load) */
    uint8_t *images;     /* (n, c, h, w), owned */
    uint8_t *labels;     /* (n), owned */
} dataset_t;

typedef struct {
    float mean, std;     /* normalisation after scaling pixels to [0, 1]: (p/255 - mean) / std; std > 0 */
    int crop_pad;        /* 0: no random crop; else pad by this many zero pixels and crop back at a random offset */
    int flip;            /* 1: random horizontal flip with probability 1/2 */
} data_transform_t;

/* Loads an IDX image file (magic 0x00000803 with dims n, h, w, read as c = 1; or magic
 * 0x00000804 with dims n, c, h, w) and an IDX label file (magic 0x00000801, dim n).
 * ds is overwritten: on success it owns both buffers; on failure it is zeroed and nothing is
 * allocated, so dataset_free is optional either way.
 * Returns 0, or a negative code with err->msg naming the file:
 *   AUXPS_EIO      a file cannot be opened or read (message carries strerror);
 *   AUXPS_EFORMAT  bad magic, truncated header or body, corrupt gzip stream, bytes after the
 *                  body, image and label counts that differ, or a dimension outside the limits
 *                  (1 <= n <= DATA_MAX_SAMPLES, 1 <= c, h, w <= DATA_MAX_DIM,
 *                  c * h * w <= DATA_MAX_SAMPLE_BYTES);
 *   AUXPS_ENOMEM   no memory for the body;
 *   AUXPS_EINVAL   a NULL argument.
 * Memory grows with the bytes actually read, so a header that claims more than the file holds
 * fails as truncated without a huge allocation first. Known weakness: zlib ignores raw bytes
 * after the end of a gzip stream, so only trailing bytes inside the compressed data (or in a
 * plain file) are caught. */
int dataset_load_idx(dataset_t *ds, const char *images_path, const char *labels_path,
                     auxps_error_t *err);

/* Loads an MNIST-format split from dir: train = 1 reads train-images-idx3-ubyte[.gz] and
 * train-labels-idx1-ubyte[.gz], train = 0 reads t10k-*. For each file the .gz name is used if
 * it exists, else the plain name. limit > 0 keeps only the first limit samples; classes still
 * comes from the whole label file, so a small limit does not shrink the model's output layer.
 * Errors as dataset_load_idx; a path longer than PATH_MAX is AUXPS_EINVAL. */
int dataset_load(dataset_t *ds, const char *dir, int train, int limit, auxps_error_t *err);

/* Frees both buffers and zeroes ds. Safe on a zeroed or already freed dataset, and on NULL. */
void dataset_free(dataset_t *ds);

/* The sample order of one epoch: order (n) becomes a permutation of 0..n-1 drawn from seed and
 * epoch alone, so that the trainer, the coordinator and every worker derive the same order. */
void data_epoch_order(int *order, int n, uint64_t seed, int epoch);

/* Writes samples idx[0..count) (each in [0, ds->n)) as x (count, c, h, w), normalised per t,
 * and their labels to y (count). rng == NULL disables augmentation (evaluation). Otherwise,
 * per sample and in this order, the crop offsets dy then dx are drawn as
 * rng_below(rng, 2 * crop_pad + 1) (if crop_pad > 0) and the flip as rng_below(rng, 2) == 1
 * (if flip), so a run is reproducible from its seed. Output pixel (i, j) is the source pixel
 * (i + dy - crop_pad, j' + dx - crop_pad), where j' = w - 1 - j when flipped and j otherwise,
 * or a zero pixel when that lies outside the image: the crop happens first, then the flip.
 * Never allocates. */
void dataset_batch(const dataset_t *ds, const int *idx, int count, const data_transform_t *t,
                   rng_t *rng, float *x, int *y);

#endif
