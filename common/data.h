/* data.h - image classification datasets in IDX format (MNIST, Fashion-MNIST) and the batch
 * builder that turns stored bytes into normalised, optionally augmented float tensors.
 *
 * A dataset is either in memory (dataset_load: the trainer, tests) or opened from a cache file
 * (dataset_open: a worker), whose images are read with pread as batches need them, so that the
 * process keeps only the labels resident and the images stay in the page cache.
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

typedef struct dataset_file dataset_file_t;

typedef struct {
    int n, c, h, w;      /* sample count and image shape (Fashion-MNIST: c = 1, h = w = 28) */
    int classes;         /* max label + 1, over the whole label file (see dataset_load) */
    uint8_t *images;     /* (n, c, h, w), owned; NULL for an opened dataset */
    uint8_t *labels;     /* (n), owned */
    dataset_file_t *file; /* an opened dataset's cache file and read buffer, owned; else NULL */
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

/* *n = the number of samples dataset_load would give (dir, train and limit as there), from the
 * two files' headers alone: their magic, dimensions and counts are checked as dataset_load
 * checks them, their bodies are not read. For a process that needs only the count (a node's
 * steps per epoch), without decompressing 47 MB. Errors as dataset_load's header errors. */
int dataset_count(const char *dir, int train, int limit, int *n, auxps_error_t *err);

/* The same split as dataset_load, with the labels in memory and the images left in a cache
 * file: the decompressed image bodies of dir's image file, written once to cache_dir (NULL:
 * $TMPDIR, else /tmp) as auxps-<file name>-<16 hex digits>.cache, the digits a hash of the source's
 * path, device, inode, size and modification time, so that a changed source gets a new cache.
 * The cache (format below) is written to a temporary name and renamed into place, so workers that
 * open the same split at once each get a whole file. A cache that does not match its source or
 * fails its checksums is replaced. Images are then read with pread, one sample at a time.
 * Errors as dataset_load, and:
 *   AUXPS_EIO      the cache cannot be created, written or read (message names it).
 * Cache file, byte order little-endian: "AUXPSIMG", u32 version (1), u32 n, c, h, w, u32 crc32
 * of the body, u64 source size, u64 source mtime in ns, u64 source inode, u32 0, u32 crc32 of
 * the 60 bytes before it; then the n * c * h * w image bytes. */
int dataset_open(dataset_t *ds, const char *dir, int train, int limit, const char *cache_dir,
                 auxps_error_t *err);

/* Frees both buffers (and an opened dataset's file) and zeroes ds. Safe on a zeroed or already
 * freed dataset, and on NULL. */
void dataset_free(dataset_t *ds);

/* The sample order of one epoch: order (n) becomes a permutation of 0..n-1 drawn from seed and
 * epoch alone, so that the trainer, the coordinator and every worker derive the same order. */
void data_epoch_order(int *order, int n, uint64_t seed, int epoch);

/* dataset_batch for either kind of dataset: returns 0, AUXPS_ERANGE (an index outside
 * [0, ds->n)), or for an opened dataset AUXPS_EIO (a failed read) or AUXPS_EFORMAT (the cache
 * file was cut short after it was opened), with err naming the file. x and y are then
 * unspecified. An opened dataset has one read buffer: one call at a time per dataset. */
int dataset_read(const dataset_t *ds, const int *idx, int count, const data_transform_t *t, rng_t *rng,
                 float *x, int *y, auxps_error_t *err);

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
/* (dataset_batch is for an in-memory dataset; on an opened one it is dataset_read with the
 * error dropped.) */

#endif
