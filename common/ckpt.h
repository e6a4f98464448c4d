/* ckpt.h - checkpoint files of parameter-server nodes and the coordinator: framing, atomic
 * writes, rotation, and finding the newest checkpoint that verifies.
 *
 * The payload is an opaque byte string chosen by the caller; this module never looks inside it.
 * A checkpoint is the file <dir>/<prefix>-<step>.ckpt, step written as 20 zero-padded decimal
 * digits so that names sort by step. Its layout is a 40-byte header (magic, version, kind,
 * step, wall-clock time, payload size), the payload, and a CRC-32 of everything before it; all
 * integers are little-endian. docs/CHECKPOINT.md is the byte-level specification and states the
 * atomicity, retention and recovery rules; this module mirrors it one-to-one.
 *
 * One writer per (dir, prefix): two processes writing the same prefix into the same directory
 * would remove each other's temporary files. Readers may run beside the writer.
 *
 * A checkpoint file is input from outside: ckpt_load_newest checks every field against the
 * bytes actually present before believing it, and a bad file is reported and skipped, never a
 * crash. No function keeps state between calls. */
#ifndef AUXPS_CKPT_H
#define AUXPS_CKPT_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

#define CKPT_MAGIC "AUXPSCKP"          /* 8 bytes, no terminator in the file */
#define CKPT_VERSION 1
#define CKPT_HEADER_BYTES 40           /* magic, version, kind, step, time_ms, payload size */
#define CKPT_TRAILER_BYTES 4           /* the CRC-32 after the payload */
#define CKPT_MAX_PAYLOAD (1u << 30)    /* no payload larger than 1 GiB is written or read */
#define CKPT_MAX_KEEP 1000             /* the most checkpoints of one prefix that rotation keeps */
#define CKPT_PREFIX_MAX 63             /* bytes of a prefix */
#define CKPT_PATH_MAX 4096             /* bytes of a checkpoint's path, terminator included */

/* The positive result of ckpt_load_newest when the prefix has no checkpoint at all (a fresh
 * start), as opposed to a negative code (checkpoints exist but none loads, or I/O failed). */
#define CKPT_NONE 1

/* Example kinds; the caller may use any value, and a file loads only under its own kind. */
enum { CKPT_KIND_NODE = 1, CKPT_KIND_COORD = 2 };

/* A loaded checkpoint. Plain data owned by whoever holds it; ckpt_release frees payload. */
typedef struct {
    uint64_t step;
    uint64_t time_ms;            /* Unix time in milliseconds when it was written */
    void *payload;               /* malloc'ed, size bytes; non-NULL after a load, even if size is 0 */
    size_t size;
    char path[CKPT_PATH_MAX];    /* the file it came from */
} ckpt_t;

/* Called by ckpt_load_newest once for every checkpoint it rejects, newest first: path is the
 * file and reason a sentence without the path (it starts with the kind of failure, for example
 * "checksum mismatch: ..." or "truncated: ..."). Both strings live only during the call. */
typedef void (*ckpt_report_fn)(void *data, const char *path, const char *reason);

/* Writes a checkpoint of step with kind and payload (size bytes; payload may be NULL only when
 * size is 0) as <dir>/<prefix>-<step>.ckpt, then rotates the prefix. prefix is 1..63 bytes of
 * [A-Za-z0-9._-]. dir is created with its missing parents (mode 0755) if missing.
 *
 * The bytes go to <dir>/<prefix>-<step>.ckpt.tmp, which is written, fsync'ed and renamed onto
 * the final name; then the directory is fsync'ed. The rename is the commit point: a reader sees
 * the old files or the complete new one. A failure before it removes the temporary file and
 * leaves every existing checkpoint untouched (a checkpoint of the same step is replaced only by
 * the rename).
 *
 * Rotation then removes, among files named exactly like the prefix's checkpoints: every
 * checkpoint with a step above this one (written by a run that was abandoned, so the file
 * just written is always the newest), the oldest ones so that at most keep (1..CKPT_MAX_KEEP)
 * remain, and every leftover temporary file of the prefix. Other files are never touched.
 *
 * Returns 0, or a negative code with err->msg naming the file and, for a system error, strerror:
 *   AUXPS_EINVAL  a NULL or empty dir, a bad prefix, keep out of range, NULL payload with
 *                 size > 0, or a path longer than CKPT_PATH_MAX - 1 bytes;
 *   AUXPS_ERANGE  size > CKPT_MAX_PAYLOAD;
 *   AUXPS_EIO     the directory cannot be created, or the temporary file cannot be written,
 *                 synced or renamed (nothing changed); or, after the commit point, the directory
 *                 cannot be synced or rotation cannot list or remove a file: then the message
 *                 says that the new checkpoint was written. */
int ckpt_write(const char *dir, const char *prefix, uint32_t kind, uint64_t step,
               const void *payload, size_t size, int keep, auxps_error_t *err);

/* Loads the newest checkpoint of prefix in dir that verifies, into *out (caller releases it
 * with ckpt_release). Checkpoints are tried by step, newest first; each is checked, in this
 * order: a regular file of 44 .. 44 + CKPT_MAX_PAYLOAD bytes, magic, version, a payload size
 * equal to the real size minus 44, the CRC-32, kind equal to kind, and a step equal to the one
 * in its name. A file that fails is passed to report (which may be NULL) with data, and the
 * next older one is tried; a file that vanishes meanwhile (a concurrent writer's rotation) is
 * skipped silently. Temporary files and files of other prefixes are ignored.
 * Returns:
 *   0            *out holds the checkpoint;
 *   CKPT_NONE    dir is missing or holds no checkpoint of prefix: a fresh start;
 *   < 0          with *out zeroed and err->msg set:
 *     AUXPS_EFORMAT, AUXPS_EVERSION, AUXPS_ECHECKSUM  every checkpoint was rejected; the code is
 *                  the newest one's reason, and the message gives the count and that reason;
 *     AUXPS_EIO      dir cannot be listed, or a checkpoint cannot be opened or read for a reason
 *                    other than its content (then no older one is tried: that file may be fine,
 *                    and an older one would silently lose progress);
 *     AUXPS_ENOMEM   no memory for a payload or the listing;
 *     AUXPS_EINVAL   a NULL dir or out, or a bad prefix.
 * No length read from a file is used before it is checked against the file's real size. */
int ckpt_load_newest(const char *dir, const char *prefix, uint32_t kind, ckpt_t *out,
                     ckpt_report_fn report, void *data, auxps_error_t *err);

/* Little-endian u64 fields of a payload (callers lay out their payloads with these). */
void ckpt_put_u64(unsigned char *p, uint64_t v);
uint64_t ckpt_get_u64(const unsigned char *p);

/* Frees ck->payload and zeroes *ck; safe twice and on a zeroed ckpt_t. */
void ckpt_release(ckpt_t *ck);

/* Lists the steps of the prefix's checkpoint files in dir, newest first, by name only (contents
 * are not verified): writes the first min(count, max) into steps (which may be NULL if max is 0)
 * and returns the count, 0 if dir is missing; or a negative code (AUXPS_EINVAL bad argument,
 * AUXPS_EIO dir cannot be listed, AUXPS_ENOMEM) with err->msg set. */
int ckpt_list(const char *dir, const char *prefix, uint64_t *steps, int max, auxps_error_t *err);

#endif
