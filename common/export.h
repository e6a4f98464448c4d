/* export.h - the exported-model file: the inference network of a trained model and nothing else.
 *
 * The file holds what `auxps eval MODEL` needs to classify images on its own: the model spec,
 * the input normalisation, the stem, the quantized layers as packed k-bit integer codes with
 * their per-tensor decode constants, every full-precision tensor of the inference network, the
 * batch norms' running statistics, and a CRC-32. The auxiliary module and the latent
 * full-precision copies of quantized weights are not stored. docs/EXPORT.md is the byte-level
 * specification; this module mirrors it one-to-one. All integers and floats are little-endian.
 *
 * An exported file is input from outside: export_load checks every field against the limits of
 * docs/EXPORT.md and the layout of the model rebuilt from the stored spec, and a bad file yields
 * an error code and a message naming it, never a crash. */
#ifndef AUXPS_EXPORT_H
#define AUXPS_EXPORT_H

#include <stdio.h>

#include "error.h"
#include "model.h"

#define EXPORT_MAGIC "AUXPSMDL"        /* 8 bytes, no terminator in the file */
#define EXPORT_VERSION 1
#define EXPORT_HEADER_BYTES 84         /* magic, version, file size, spec, normalisation, count */
#define EXPORT_RECORD_BYTES 24         /* per-tensor record header, before its payload */
#define EXPORT_MAX_BYTES (1u << 30)    /* no file larger than 1 GiB is written or read */

/* Writes the inference part of model m plus the normalisation (mean, std: finite, std > 0) to
 * path, atomically: the bytes go to "<path>.tmp", which is flushed, fsync'ed and renamed over
 * path, so a reader sees the old file or the complete new one. The quantized weights are the
 * ones the forward pass uses (model_weight_q) after model_quantize_weights(m), which this
 * function calls; it is a no-op on a frozen (loaded) model, so a loaded model exports to the
 * same bytes. m is not otherwise changed. Returns 0, or a negative code with err->msg naming
 * the file:
 *   AUXPS_EINVAL  a NULL argument, a bad mean/std, or quantized weights that are not k-bit
 *                 values (a model whose weight buffer was written by hand);
 *   AUXPS_ERANGE  the file would exceed EXPORT_MAX_BYTES;
 *   AUXPS_ENOMEM  no memory for the file image;
 *   AUXPS_EIO     the temporary file cannot be written, synced or renamed (strerror in the
 *                 message); the temporary file is removed and path is untouched. */
int export_save(model_t *m, float mean, float std, const char *path, auxps_error_t *err);

/* Reads path and rebuilds its model for batches of up to max_batch (1..65536) images. Checks, in
 * this order: magic, version, the stored file size against the real one, the CRC-32, the spec,
 * that the file is large enough for the model the spec describes (before allocating it), then
 * every record against model_new(spec with aux = 0, max_batch). On success *out is a
 * new frozen model (model_set_frozen(*out, 1)) owned by the caller (model_destroy): its
 * model_qweights hold the decoded k-bit weights, bit-identical to the ones the exporting
 * model's forward pass used; its params hold the full-precision tensors, with the latent
 * entries of quantized tensors left 0 (they are not in the file); its stats hold the running
 * statistics. *mean and *std receive the normalisation. On failure *out is NULL and *mean,
 * *std are untouched. Returns 0, or a negative code with err->msg naming the file:
 *   AUXPS_EIO        the file cannot be opened or read, or is not a regular file (strerror);
 *   AUXPS_EFORMAT    bad magic, a file shorter or longer than its header says, larger than
 *                    EXPORT_MAX_BYTES, or any field outside its limits or inconsistent with the
 *                    model the spec describes;
 *   AUXPS_EVERSION   a format version other than EXPORT_VERSION;
 *   AUXPS_ECHECKSUM  the CRC-32 does not match the bytes before it;
 *   AUXPS_ENOMEM     no memory for the file or the model;
 *   AUXPS_EINVAL     a NULL argument or max_batch out of range.
 * No length read from the file is used before it is checked against the bytes that remain. */
int export_load(const char *path, int max_batch, model_t **out, float *mean, float *std,
                auxps_error_t *err);

/* As export_load, from the len bytes of a file image at buf (the caller keeps it); name stands
 * for the file in messages. Same checks, results and errors, except that nothing is opened or
 * read: AUXPS_EIO never comes back. */
int export_load_mem(const void *buf, size_t len, const char *name, int max_batch, model_t **out,
                    float *mean, float *std, auxps_error_t *err);

/* Loads path (as export_load) and prints to f, as "key: value" lines: the spec, the
 * normalisation, one "tensor:" line per tensor (name, shape, bits, bytes in the file including
 * its record header), the file size, the size of the FP32 equivalent (all inference parameters
 * and statistics as float32) and their ratio. Returns 0 or an export_load error; AUXPS_EIO if
 * writing to f fails. */
int export_info(const char *path, FILE *f, auxps_error_t *err);

#endif
