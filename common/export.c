/* export.c - writer and reader of the exported-model file (docs/EXPORT.md).
 *
 * The writer computes the exact file size from the model, fills one buffer field by field with
 * explicit little-endian helpers, and writes it atomically. The reader slurps the file (at most
 * EXPORT_MAX_BYTES), checks the envelope (magic, version, size, CRC) before believing anything
 * else, rebuilds the model from the stored spec, and then requires every record to match that
 * model's layout exactly, so the only lengths it ever uses come from the model, not the file. */
#include "export.h"

#include "quant.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

/* Byte offsets of the header fields (docs/EXPORT.md, "Header"). */
enum {
    H_MAGIC = 0,
    H_VERSION = 8,
    H_FILE_BYTES = 12,
    H_ARCH = 20,
    H_IN_C = 24,
    H_IN_H = 28,
    H_IN_W = 32,
    H_CLASSES = 36,
    H_WIDTHS = 40, /* three u32 */
    H_BLOCKS = 52,
    H_HIDDEN = 56,
    H_WBITS = 60,
    H_ABITS = 64,
    H_AUX = 68,
    H_MEAN = 72,
    H_STD = 76,
    H_TENSORS = 80,
    H_END = 84,
};

/* Byte offsets inside a tensor record, relative to its start (docs/EXPORT.md, "Tensor record"). */
enum { R_KIND = 0, R_BITS = 4, R_COUNT = 8, R_SCALE = 16, R_OFFSET = 20, R_END = 24 };

enum { STATS_HEAD_BYTES = 8, CRC_BYTES = 4 };

_Static_assert(H_END == EXPORT_HEADER_BYTES, "header layout and EXPORT_HEADER_BYTES disagree");
_Static_assert(R_END == EXPORT_RECORD_BYTES, "record layout and EXPORT_RECORD_BYTES disagree");
_Static_assert(sizeof EXPORT_MAGIC - 1 == H_VERSION - H_MAGIC, "the magic is 8 bytes");
_Static_assert(H_WIDTHS + 3 * 4 == H_BLOCKS, "three widths");
_Static_assert(sizeof(float) == 4 && FLT_MANT_DIG == 24 && FLT_MAX_EXP == 128,
               "floats are stored as IEEE binary32");
/* The file stores these enum values directly; a reorder in model.h would silently change the
 * format instead of bumping its version. */
_Static_assert(ARCH_RESNET == 0 && ARCH_MLP == 1, "arch codes are part of the file format");
_Static_assert(MODEL_T_CONV == 0 && MODEL_T_BN_GAMMA == 1 && MODEL_T_BN_BETA == 2 &&
                   MODEL_T_FC_W == 3 && MODEL_T_FC_B == 4,
               "tensor kinds are part of the file format");
_Static_assert(EXPORT_MAX_BYTES <= UINT_MAX, "zlib's crc32 takes the length as uInt");

/* ---- little-endian fields ---- */

static void put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static void put_f32(uint8_t *p, float f) { put_u32(p, f32_bits(f)); }

static uint32_t get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const uint8_t *p) {
    return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

static float get_f32(const uint8_t *p) {
    uint32_t u = get_u32(p);
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* ---- layout shared by writer, reader and info ---- */

/* The inference tensors are the ones before the first auxiliary tensor (docs/MODEL.md puts the
 * auxiliary module after the inference network in the vector). */
static int inference_tensors(const model_t *m) {
    int n = 0;
    for (const model_tensor_t *t; (t = model_tensor(m, n)) != NULL && !t->aux;) n++;
    return n;
}

/* Payload of a record: packed codes at bits per code, or float32 values when bits is 0. */
static uint64_t payload_bytes(uint64_t count, int bits) {
    return bits ? (count * (uint64_t)bits + 7) / 8 : count * 4;
}

static int tensor_bits(const model_t *m, const model_tensor_t *t) {
    return t->quantized ? model_spec(m)->wbits : 0;
}

/* The size of the file that holds the inference part of m. */
static uint64_t file_bytes(const model_t *m) {
    uint64_t total = EXPORT_HEADER_BYTES + STATS_HEAD_BYTES + CRC_BYTES;
    const int nt = inference_tensors(m);
    for (int i = 0; i < nt; i++) {
        const model_tensor_t *t = model_tensor(m, i);
        total += R_END + payload_bytes(t->size, tensor_bits(m, t));
    }
    return total + 4 * (uint64_t)model_num_inference_stats(m);
}

/* Code i occupies bits [i k, i k + k) of an LSB-first bit stream over little-endian bytes; with
 * k <= 8 a code touches at most two bytes. out must be zeroed. */
static void pack_codes(uint8_t *out, const uint8_t *codes, size_t n, int k) {
    for (size_t i = 0; i < n; i++) {
        const uint64_t bit = (uint64_t)i * (uint64_t)k;
        const size_t byte = (size_t)(bit >> 3);
        const unsigned sh = (unsigned)(bit & 7), v = (unsigned)codes[i] << sh;
        out[byte] |= (uint8_t)v;
        if (sh + (unsigned)k > 8) out[byte + 1] |= (uint8_t)(v >> 8);
    }
}

static void unpack_codes(uint8_t *codes, const uint8_t *in, size_t n, int k) {
    const unsigned mask = (1u << k) - 1;
    for (size_t i = 0; i < n; i++) {
        const uint64_t bit = (uint64_t)i * (uint64_t)k;
        const size_t byte = (size_t)(bit >> 3);
        const unsigned sh = (unsigned)(bit & 7);
        unsigned v = (unsigned)in[byte] >> sh;
        if (sh + (unsigned)k > 8) v |= (unsigned)in[byte + 1] << (8 - sh);
        codes[i] = (uint8_t)(v & mask);
    }
}

/* The decode constants a record stores so that a reader can use w = offset + scale * code for
 * every k (docs/EXPORT.md): k = 1 gives -e + 2e code = +-e exactly. */
static void decode_consts(int k, float e, float *scale, float *offset) {
    if (k == 1) {
        *scale = 2.0f * e;
        *offset = -e;
    } else {
        *scale = 2.0f / (float)((1u << k) - 1);
        *offset = -1.0f;
    }
}

/* ---- writer ---- */

/* Recovers the codes (and, for k = 1, e) of a quantized tensor from the weights the forward pass
 * uses. Working from model_weight_q rather than model_weight_codes also covers a frozen (loaded)
 * model, which holds neither codes nor latent weights; for a trained model e = |wq| equals
 * quant_weight_mean of the latent weights. Decoding the result again and comparing bits makes
 * the codes exact or the export fails. dec (n) is scratch. Returns 0 or -1. */
static int recover_codes(uint8_t *codes, float *e, float *dec, const float *wq, size_t n, int k) {
    *e = 0.0f;
    if (k == 1) {
        *e = n ? fabsf(wq[0]) : 0.0f;
        if (!isfinite(*e)) return -1;
        for (size_t i = 0; i < n; i++) codes[i] = !signbit(wq[i]);
    } else {
        const float levels = (float)((1u << k) - 1);
        for (size_t i = 0; i < n; i++) {
            float c = nearbyintf((wq[i] + 1.0f) * 0.5f * levels);
            if (!(c >= 0.0f)) c = 0.0f; /* also NaN; the check below rejects it */
            if (c > levels) c = levels;
            codes[i] = (uint8_t)c;
        }
    }
    quant_weight_decode(dec, codes, n, k, *e);
    return memcmp(dec, wq, n * sizeof(float)) == 0 ? 0 : -1;
}

/* Fills buf (total bytes, zeroed) with the file image of m. */
static int encode(model_t *m, float mean, float std, uint8_t *buf, size_t total, const char *path,
                  auxps_error_t *err) {
    const model_spec_t *sp = model_spec(m);
    const int resnet = sp->arch == ARCH_RESNET, nt = inference_tensors(m), k = sp->wbits;
    const float *params = model_params(m), *stats = model_stats(m);
    const size_t nstats = model_num_inference_stats(m);
    uint8_t *codes = NULL;
    float *dec = NULL;
    int rc = 0;

    size_t maxq = 1;
    for (int i = 0; i < nt; i++)
        if (model_tensor(m, i)->quantized && model_tensor(m, i)->size > maxq)
            maxq = model_tensor(m, i)->size;
    codes = malloc(maxq);
    dec = malloc(maxq * sizeof(float));
    if (codes == NULL || dec == NULL) {
        rc = auxps_error_set(err, AUXPS_ENOMEM, "%s: out of memory for the export scratch", path);
        goto fail;
    }

    /* Unused spec fields are written as 0 so that one model has exactly one encoding. */
    memcpy(buf + H_MAGIC, EXPORT_MAGIC, H_VERSION - H_MAGIC);
    put_u32(buf + H_VERSION, EXPORT_VERSION);
    put_u64(buf + H_FILE_BYTES, total);
    put_u32(buf + H_ARCH, (uint32_t)sp->arch);
    put_u32(buf + H_IN_C, (uint32_t)sp->in_c);
    put_u32(buf + H_IN_H, (uint32_t)sp->in_h);
    put_u32(buf + H_IN_W, (uint32_t)sp->in_w);
    put_u32(buf + H_CLASSES, (uint32_t)sp->classes);
    for (int i = 0; i < 3; i++) put_u32(buf + H_WIDTHS + 4 * i, resnet ? (uint32_t)sp->widths[i] : 0);
    put_u32(buf + H_BLOCKS, resnet ? (uint32_t)sp->blocks : 0);
    put_u32(buf + H_HIDDEN, resnet ? 0 : (uint32_t)sp->hidden);
    put_u32(buf + H_WBITS, (uint32_t)sp->wbits);
    put_u32(buf + H_ABITS, (uint32_t)sp->abits);
    put_u32(buf + H_AUX, 0);
    put_f32(buf + H_MEAN, mean);
    put_f32(buf + H_STD, std);
    put_u32(buf + H_TENSORS, (uint32_t)nt);

    size_t pos = H_END;
    for (int i = 0; i < nt; i++) {
        const model_tensor_t *t = model_tensor(m, i);
        const int bits = tensor_bits(m, t);
        float scale = 0.0f, offset = 0.0f, e;
        uint8_t *rec = buf + pos, *payload = rec + R_END;
        if (bits) {
            if (recover_codes(codes, &e, dec, model_weight_q(m, i), t->size, k) != 0) {
                rc = auxps_error_set(err, AUXPS_EINVAL,
                                     "%s: tensor %s: its quantized weights are not finite %d-bit "
                                     "values, so they cannot be stored as codes",
                                     path, t->name, k);
                goto fail;
            }
            decode_consts(k, e, &scale, &offset);
            pack_codes(payload, codes, t->size, k);
        } else {
            for (size_t j = 0; j < t->size; j++) put_f32(payload + 4 * j, params[t->offset + j]);
        }
        put_u32(rec + R_KIND, (uint32_t)t->kind);
        put_u32(rec + R_BITS, (uint32_t)bits);
        put_u64(rec + R_COUNT, t->size);
        put_f32(rec + R_SCALE, scale);
        put_f32(rec + R_OFFSET, offset);
        pos += R_END + (size_t)payload_bytes(t->size, bits);
    }
    put_u64(buf + pos, nstats);
    pos += STATS_HEAD_BYTES;
    for (size_t j = 0; j < nstats; j++, pos += 4) put_f32(buf + pos, stats[j]);
    assert(pos + CRC_BYTES == total); /* file_bytes and this function describe one layout */
    put_u32(buf + pos, (uint32_t)crc32(crc32(0L, Z_NULL, 0), buf, (uInt)pos));

fail:
    free(codes);
    free(dec);
    return rc;
}

/* Makes the rename durable. Best effort: the file itself is already synced, and a directory
 * that cannot be opened (no read permission) does not make the export fail. */
static void sync_parent_dir(const char *path) {
    const char *slash = strrchr(path, '/');
    char dir[4096];
    if (slash == NULL) snprintf(dir, sizeof dir, ".");
    else if (slash == path) snprintf(dir, sizeof dir, "/");
    else if ((size_t)(slash - path) < sizeof dir) snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    else return;
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return;
    (void)fsync(fd);
    close(fd);
}

int export_save(model_t *m, float mean, float std, const char *path, auxps_error_t *err) {
    uint8_t *buf = NULL;
    char *tmp = NULL;
    FILE *f = NULL;
    int rc = 0, tmp_made = 0;

    if (m == NULL || path == NULL)
        return auxps_error_set(err, AUXPS_EINVAL, "export: NULL model or path");
    if (!isfinite(mean) || !isfinite(std) || !(std > 0.0f))
        return auxps_error_set(err, AUXPS_EINVAL,
                               "%s: normalisation mean %g, std %g: both must be finite and std > 0",
                               path, (double)mean, (double)std);
    model_quantize_weights(m);

    const uint64_t total = file_bytes(m);
    if (total > EXPORT_MAX_BYTES)
        return auxps_error_set(err, AUXPS_ERANGE, "%s: the model needs %llu bytes; the limit is %u",
                               path, (unsigned long long)total, EXPORT_MAX_BYTES);
    buf = calloc((size_t)total, 1);
    tmp = malloc(strlen(path) + sizeof ".tmp");
    if (buf == NULL || tmp == NULL) {
        rc = auxps_error_set(err, AUXPS_ENOMEM, "%s: out of memory for %llu bytes", path,
                             (unsigned long long)total);
        goto fail;
    }
    if ((rc = encode(m, mean, std, buf, (size_t)total, path, err)) != 0) goto fail;

    strcpy(tmp, path);
    strcat(tmp, ".tmp");
    if ((f = fopen(tmp, "wb")) == NULL) {
        rc = auxps_error_set(err, AUXPS_EIO, "%s: cannot create: %s", tmp, strerror(errno));
        goto fail;
    }
    tmp_made = 1;
    if (fwrite(buf, 1, (size_t)total, f) != (size_t)total || fflush(f) != 0 || fsync(fileno(f)) != 0) {
        rc = auxps_error_set(err, AUXPS_EIO, "%s: cannot write: %s", tmp, strerror(errno));
        goto fail;
    }
    int closed = fclose(f);
    f = NULL;
    if (closed != 0) {
        rc = auxps_error_set(err, AUXPS_EIO, "%s: cannot write: %s", tmp, strerror(errno));
        goto fail;
    }
    if (rename(tmp, path) != 0) {
        rc = auxps_error_set(err, AUXPS_EIO, "%s: cannot rename %s over it: %s", path, tmp,
                             strerror(errno));
        goto fail;
    }
    tmp_made = 0;
    sync_parent_dir(path);

fail:
    if (f != NULL) fclose(f);
    if (tmp_made) unlink(tmp);
    free(tmp);
    free(buf);
    return rc;
}

/* ---- reader ---- */

/* A cursor over the bytes between the header and the checksum. */
typedef struct {
    const uint8_t *buf;
    size_t pos, end;
    const char *path;
} reader_t;

/* Every variable-length read goes through here first. */
static int need(const reader_t *r, uint64_t n, const char *what, auxps_error_t *err) {
    if (n > r->end - r->pos)
        return auxps_error_set(err, AUXPS_EFORMAT,
                               "%s: %s needs %llu bytes at offset %zu, but only %zu remain before "
                               "the checksum",
                               r->path, what, (unsigned long long)n, r->pos, r->end - r->pos);
    return 0;
}

/* Reads the whole file; a regular file of at most EXPORT_MAX_BYTES. */
static int slurp(const char *path, uint8_t **out, size_t *len, auxps_error_t *err) {
    uint8_t *buf = NULL;
    struct stat st;
    int rc = 0;
    FILE *f = fopen(path, "rb");
    if (f == NULL) return auxps_error_set(err, AUXPS_EIO, "%s: cannot open: %s", path, strerror(errno));
    if (fstat(fileno(f), &st) != 0) {
        rc = auxps_error_set(err, AUXPS_EIO, "%s: cannot stat: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = auxps_error_set(err, AUXPS_EIO, "%s: cannot read: %s", path,
                             strerror(S_ISDIR(st.st_mode) ? EISDIR : EINVAL));
        goto fail;
    }
    if (st.st_size > (off_t)EXPORT_MAX_BYTES) {
        rc = auxps_error_set(err, AUXPS_EFORMAT, "%s: %lld bytes; an exported model is at most %u",
                             path, (long long)st.st_size, EXPORT_MAX_BYTES);
        goto fail;
    }
    const size_t size = (size_t)st.st_size;
    if ((buf = malloc(size ? size : 1)) == NULL) {
        rc = auxps_error_set(err, AUXPS_ENOMEM, "%s: out of memory for %zu bytes", path, size);
        goto fail;
    }
    if (fread(buf, 1, size, f) != size) {
        rc = auxps_error_set(err, AUXPS_EIO, "%s: cannot read: %s", path,
                             ferror(f) ? strerror(errno) : "the file shrank while being read");
        goto fail;
    }
    fclose(f);
    *out = buf;
    *len = size;
    return 0;

fail:
    fclose(f);
    free(buf);
    return rc;
}

/* Magic, version, size and CRC: nothing else in the file is believed before these pass. The
 * version comes before the CRC because another version may place or compute it differently. */
static int check_envelope(const char *path, const uint8_t *b, size_t len, auxps_error_t *err) {
    if (len < H_VERSION)
        return auxps_error_set(err, AUXPS_EFORMAT, "%s: truncated: %zu bytes, too short for the magic number",
                               path, len);
    if (memcmp(b + H_MAGIC, EXPORT_MAGIC, H_VERSION - H_MAGIC) != 0)
        return auxps_error_set(err, AUXPS_EFORMAT,
                               "%s: bad magic: not an AuxPS exported model (which starts with \"%s\")",
                               path, EXPORT_MAGIC);
    if (len < H_FILE_BYTES)
        return auxps_error_set(err, AUXPS_EFORMAT, "%s: truncated: %zu bytes, too short for the version",
                               path, len);
    const uint32_t version = get_u32(b + H_VERSION);
    if (version != EXPORT_VERSION)
        return auxps_error_set(err, AUXPS_EVERSION, "%s: format version %u; this build reads version %d",
                               path, (unsigned)version, EXPORT_VERSION);
    const size_t min = EXPORT_HEADER_BYTES + STATS_HEAD_BYTES + CRC_BYTES;
    if (len < min)
        return auxps_error_set(err, AUXPS_EFORMAT,
                               "%s: truncated: %zu bytes, shorter than the smallest valid file (%zu)",
                               path, len, min);
    const uint64_t stated = get_u64(b + H_FILE_BYTES);
    if (stated != len)
        return auxps_error_set(err, AUXPS_EFORMAT, "%s: %s: the header says %llu bytes, the file has %zu",
                               path, stated > len ? "truncated" : "unexpected trailing bytes",
                               (unsigned long long)stated, len);
    const uint32_t want = get_u32(b + len - CRC_BYTES);
    const uint32_t got = (uint32_t)crc32(crc32(0L, Z_NULL, 0), b, (uInt)(len - CRC_BYTES));
    if (got != want)
        return auxps_error_set(err, AUXPS_ECHECKSUM,
                               "%s: CRC-32 of the contents is 0x%08x but the file stores 0x%08x: "
                               "the file is corrupt",
                               path, (unsigned)got, (unsigned)want);
    return 0;
}

/* The spec and normalisation from the header, checked field by field. */
static int read_spec(const char *path, const uint8_t *b, model_spec_t *sp, float *mean, float *std,
                     auxps_error_t *err) {
    static const struct {
        const char *name;
        int off;
    } fields[] = {
        {"arch", H_ARCH},        {"in_c", H_IN_C},        {"in_h", H_IN_H},
        {"in_w", H_IN_W},        {"classes", H_CLASSES},  {"widths[0]", H_WIDTHS},
        {"widths[1]", H_WIDTHS + 4}, {"widths[2]", H_WIDTHS + 8}, {"blocks", H_BLOCKS},
        {"hidden", H_HIDDEN},    {"wbits", H_WBITS},      {"abits", H_ABITS},
        {"aux", H_AUX},
    };
    int v[sizeof fields / sizeof fields[0]];
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        const uint32_t u = get_u32(b + fields[i].off);
        /* model_spec_check bounds every used field far below this; it only keeps int sane. */
        if (u > (1u << 30))
            return auxps_error_set(err, AUXPS_EFORMAT, "%s: spec field %s is %u, out of range", path,
                                   fields[i].name, (unsigned)u);
        v[i] = (int)u;
    }
    memset(sp, 0, sizeof *sp);
    sp->arch = v[0];
    sp->in_c = v[1];
    sp->in_h = v[2];
    sp->in_w = v[3];
    sp->classes = v[4];
    for (int i = 0; i < 3; i++) sp->widths[i] = v[5 + i];
    sp->blocks = v[8];
    sp->hidden = v[9];
    sp->wbits = v[10];
    sp->abits = v[11];
    sp->aux = v[12];
    sp->aux_lambda = 0.0f; /* a training setting; the file has no auxiliary module */

    if (sp->aux != 0)
        return auxps_error_set(err, AUXPS_EFORMAT,
                               "%s: spec field aux is %d; an exported model never holds the auxiliary "
                               "module", path, sp->aux);
    if (sp->arch == ARCH_RESNET && sp->hidden != 0)
        return auxps_error_set(err, AUXPS_EFORMAT, "%s: spec field hidden is %d; it must be 0 for a ResNet",
                               path, sp->hidden);
    if (sp->arch == ARCH_MLP && (sp->widths[0] | sp->widths[1] | sp->widths[2] | sp->blocks) != 0)
        return auxps_error_set(err, AUXPS_EFORMAT, "%s: spec fields widths and blocks must be 0 for an MLP",
                               path);
    char msg[256];
    if (model_spec_check(sp, msg, sizeof msg) != 0)
        return auxps_error_set(err, AUXPS_EFORMAT, "%s: invalid model spec: %s", path, msg);

    *mean = get_f32(b + H_MEAN);
    *std = get_f32(b + H_STD);
    if (!isfinite(*mean) || !isfinite(*std) || !(*std > 0.0f))
        return auxps_error_set(err, AUXPS_EFORMAT,
                               "%s: normalisation mean %g, std %g: both must be finite and std > 0",
                               path, (double)*mean, (double)*std);
    return 0;
}

/* Reads one record into m: FP values into params, decoded codes into the qweights. */
static int read_record(reader_t *r, model_t *m, int i, uint8_t *codes, auxps_error_t *err) {
    const model_tensor_t *t = model_tensor(m, i);
    const int want_bits = tensor_bits(m, t);
    int rc;
    if ((rc = need(r, R_END, "a tensor record", err)) != 0) return rc;
    const uint8_t *rec = r->buf + r->pos;
    const uint32_t kind = get_u32(rec + R_KIND), bits = get_u32(rec + R_BITS);
    const uint64_t count = get_u64(rec + R_COUNT);
    const float scale = get_f32(rec + R_SCALE), offset = get_f32(rec + R_OFFSET);
    if (kind != (uint32_t)t->kind)
        return auxps_error_set(err, AUXPS_EFORMAT, "%s: tensor %d (%s) has kind %u; the spec says %d",
                               r->path, i, t->name, (unsigned)kind, t->kind);
    if (bits != (uint32_t)want_bits)
        return auxps_error_set(err, AUXPS_EFORMAT, "%s: tensor %d (%s) has %u bits; the spec says %d",
                               r->path, i, t->name, (unsigned)bits, want_bits);
    if (count != t->size)
        return auxps_error_set(err, AUXPS_EFORMAT,
                               "%s: tensor %d (%s) has %llu elements; the spec says %zu", r->path, i,
                               t->name, (unsigned long long)count, t->size);
    /* The constants are redundant with k (and e), so they must be exactly what the writer
     * derives: anything else means a different decoding than this reader implements. */
    float e = 0.0f, want_scale = 0.0f, want_offset = 0.0f;
    if (bits == 1) e = -offset;
    if (bits) decode_consts((int)bits, e, &want_scale, &want_offset);
    if (!isfinite(e) || signbit(e) || f32_bits(scale) != f32_bits(want_scale) ||
        f32_bits(offset) != f32_bits(want_offset))
        return auxps_error_set(err, AUXPS_EFORMAT,
                               "%s: tensor %d (%s) has decode constants scale %g, offset %g, which "
                               "do not fit %u-bit weights",
                               r->path, i, t->name, (double)scale, (double)offset, (unsigned)bits);
    r->pos += R_END;

    const uint64_t plen = payload_bytes(count, (int)bits);
    if ((rc = need(r, plen, t->name, err)) != 0) return rc;
    const uint8_t *p = r->buf + r->pos;
    if (bits == 0) {
        float *dst = model_params(m) + t->offset;
        for (size_t j = 0; j < t->size; j++) dst[j] = get_f32(p + 4 * j);
    } else {
        const unsigned tail = (unsigned)((count * bits) & 7);
        if (tail != 0 && (p[plen - 1] >> tail) != 0)
            return auxps_error_set(err, AUXPS_EFORMAT,
                                   "%s: tensor %d (%s): the padding bits after the last code are not 0",
                                   r->path, i, t->name);
        unpack_codes(codes, p, t->size, (int)bits);
        quant_weight_decode(model_qweights(m) + t->offset, codes, t->size, (int)bits, e);
    }
    r->pos += (size_t)plen;
    return 0;
}

/* Everything after the envelope: spec, model, records, statistics. */
static int decode(const char *path, const uint8_t *b, size_t len, int max_batch, model_t **out,
                  float *mean, float *std, auxps_error_t *err) {
    model_t *m = NULL;
    uint8_t *codes = NULL;
    model_spec_t sp;
    float mn = 0.0f, sd = 1.0f;
    int rc;

    if ((rc = read_spec(path, b, &sp, &mn, &sd, err)) != 0) goto fail;
    /* The spec sizes the model's buffers, so the file must be able to hold that model before
     * they are allocated: every parameter takes at least wbits bits (32 for a full-precision
     * one), every statistic 4 bytes. Without this a 700-byte file claiming a hidden width of
     * 60000 makes the reader ask for gigabytes. */
    size_t np = 0, ns = 0;
    if ((rc = model_spec_layout(&sp, &np, &ns)) != 0) {
        rc = auxps_error_set(err, rc == AUXPS_ENOMEM ? AUXPS_ENOMEM : AUXPS_EFORMAT,
                             "%s: cannot lay out the model the spec describes", path);
        goto fail;
    }
    const uint64_t least = EXPORT_HEADER_BYTES + STATS_HEAD_BYTES + CRC_BYTES +
                           payload_bytes(np, sp.wbits < 32 ? sp.wbits : 0) + 4 * (uint64_t)ns;
    if (least > len) {
        rc = auxps_error_set(err, AUXPS_EFORMAT,
                             "%s: truncated: %zu bytes, but the model its spec describes (%zu "
                             "parameters, %zu statistics) needs at least %llu",
                             path, len, np, ns, (unsigned long long)least);
        goto fail;
    }
    if ((m = model_new(&sp, max_batch)) == NULL) {
        rc = auxps_error_set(err, AUXPS_ENOMEM, "%s: out of memory for the model", path);
        goto fail;
    }
    const uint32_t nt = get_u32(b + H_TENSORS);
    if (nt != (uint32_t)model_num_tensors(m) || inference_tensors(m) != model_num_tensors(m)) {
        rc = auxps_error_set(err, AUXPS_EFORMAT, "%s: %u tensors; the spec describes %d", path,
                             (unsigned)nt, model_num_tensors(m));
        goto fail;
    }
    size_t maxq = 1;
    for (int i = 0; i < model_num_tensors(m); i++)
        if (model_tensor(m, i)->quantized && model_tensor(m, i)->size > maxq) maxq = model_tensor(m, i)->size;
    if ((codes = malloc(maxq)) == NULL) {
        rc = auxps_error_set(err, AUXPS_ENOMEM, "%s: out of memory for %zu codes", path, maxq);
        goto fail;
    }

    reader_t r = {b, H_END, len - CRC_BYTES, path};
    for (int i = 0; i < model_num_tensors(m); i++)
        if ((rc = read_record(&r, m, i, codes, err)) != 0) goto fail;

    if ((rc = need(&r, STATS_HEAD_BYTES, "the statistics count", err)) != 0) goto fail;
    const uint64_t nstats = get_u64(b + r.pos);
    if (nstats != model_num_stats(m)) {
        rc = auxps_error_set(err, AUXPS_EFORMAT, "%s: %llu statistics; the spec describes %zu", path,
                             (unsigned long long)nstats, model_num_stats(m));
        goto fail;
    }
    r.pos += STATS_HEAD_BYTES;
    if ((rc = need(&r, 4 * nstats, "the statistics", err)) != 0) goto fail;
    float *stats = model_stats(m);
    for (size_t j = 0; j < nstats; j++, r.pos += 4) stats[j] = get_f32(b + r.pos);
    if (r.pos != r.end) {
        rc = auxps_error_set(err, AUXPS_EFORMAT, "%s: %zu unexpected bytes after the statistics", path,
                             r.end - r.pos);
        goto fail;
    }

    model_set_frozen(m, 1);
    *out = m;
    *mean = mn;
    *std = sd;
    free(codes);
    return 0;

fail:
    model_destroy(&m);
    free(codes);
    return rc;
}

/* The argument checks of both entry points; name is the path or the caller's name. */
static int check_load_args(const char *name, int max_batch, model_t **out, float *mean, float *std,
                           auxps_error_t *err) {
    if (out != NULL) *out = NULL;
    if (name == NULL || out == NULL || mean == NULL || std == NULL)
        return auxps_error_set(err, AUXPS_EINVAL, "export: NULL argument to export_load");
    if (max_batch < 1 || max_batch > 65536)
        return auxps_error_set(err, AUXPS_EINVAL, "%s: max_batch %d out of range 1..65536", name, max_batch);
    return 0;
}

int export_load_mem(const void *buf, size_t len, const char *name, int max_batch, model_t **out,
                    float *mean, float *std, auxps_error_t *err) {
    int rc = check_load_args(name, max_batch, out, mean, std, err);
    if (rc != 0) return rc;
    if (buf == NULL && len > 0)
        return auxps_error_set(err, AUXPS_EINVAL, "%s: NULL buffer of %zu bytes", name, len);
    if (len > EXPORT_MAX_BYTES)
        return auxps_error_set(err, AUXPS_EFORMAT, "%s: %zu bytes; an exported model is at most %u",
                               name, len, EXPORT_MAX_BYTES);
    if ((rc = check_envelope(name, buf, len, err)) != 0) return rc;
    return decode(name, buf, len, max_batch, out, mean, std, err);
}

int export_load(const char *path, int max_batch, model_t **out, float *mean, float *std,
                auxps_error_t *err) {
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = check_load_args(path, max_batch, out, mean, std, err);
    if (rc != 0) return rc;
    if ((rc = slurp(path, &buf, &len, err)) != 0) return rc;
    rc = export_load_mem(buf, len, path, max_batch, out, mean, std, err);
    free(buf);
    return rc;
}

/* ---- info ---- */

int export_info(const char *path, FILE *f, auxps_error_t *err) {
    model_t *m = NULL;
    float mean = 0.0f, std = 1.0f;
    int rc;
    if (f == NULL) return auxps_error_set(err, AUXPS_EINVAL, "export: NULL stream for export_info");
    if ((rc = export_load(path, 1, &m, &mean, &std, err)) != 0) return rc;

    const model_spec_t *sp = model_spec(m);
    /* The load checked the file's size against this layout, so it is the file's size. */
    const uint64_t fbytes = file_bytes(m);
    const uint64_t fp32 = 4 * ((uint64_t)model_num_inference_params(m) + model_num_inference_stats(m));
    fprintf(f, "file: %s\n", path);
    fprintf(f, "format: %s version %d\n", EXPORT_MAGIC, EXPORT_VERSION);
    fprintf(f, "arch: %s\n", sp->arch == ARCH_RESNET ? "resnet" : "mlp");
    fprintf(f, "input: %dx%dx%d\n", sp->in_c, sp->in_h, sp->in_w);
    fprintf(f, "classes: %d\n", sp->classes);
    if (sp->arch == ARCH_RESNET) {
        fprintf(f, "widths: %d,%d,%d\n", sp->widths[0], sp->widths[1], sp->widths[2]);
        fprintf(f, "blocks: %d\n", sp->blocks);
    } else {
        fprintf(f, "hidden: %d\n", sp->hidden);
    }
    fprintf(f, "wbits: %d\nabits: %d\n", sp->wbits, sp->abits);
    fprintf(f, "mean: %.9g\nstd: %.9g\n", (double)mean, (double)std);
    fprintf(f, "tensors: %d\n", model_num_tensors(m));
    for (int i = 0; i < model_num_tensors(m); i++) {
        const model_tensor_t *t = model_tensor(m, i);
        const int bits = tensor_bits(m, t);
        char shape[64];
        int n = 0;
        for (int d = 0; d < t->ndim && n < (int)sizeof shape; d++)
            n += snprintf(shape + n, sizeof shape - (size_t)n, d ? "x%d" : "%d", t->shape[d]);
        fprintf(f, "tensor: %s shape=%s bits=%d bytes=%llu\n", t->name, shape, bits ? bits : 32,
                (unsigned long long)(R_END + payload_bytes(t->size, bits)));
    }
    fprintf(f, "stats: %zu floats, %llu bytes\n", model_num_stats(m),
            (unsigned long long)(STATS_HEAD_BYTES + 4 * (uint64_t)model_num_stats(m)));
    fprintf(f, "file_bytes: %llu\n", (unsigned long long)fbytes);
    fprintf(f, "fp32_bytes: %llu\n", (unsigned long long)fp32);
    fprintf(f, "ratio: %.4f (%.2fx smaller)\n", (double)fbytes / (double)fp32, (double)fp32 / (double)fbytes);
    if (fflush(f) != 0 || ferror(f))
        rc = auxps_error_set(err, AUXPS_EIO, "%s: cannot write the description: %s", path, strerror(errno));
    model_destroy(&m);
    return rc;
}
