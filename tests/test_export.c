/* test_export.c - the exported-model file: round trips of small trained models (bit-identical
 * eval logits, no auxiliary module, k-bit storage), the size against FP32, and hostile files
 * (corrupt, truncated, inconsistent with a valid CRC) that must fail with the right code. */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "export.h"
#include "model.h"
#include "rng.h"
#include "util.h"

enum { BATCH = 6 };

/* Header offsets from docs/EXPORT.md, written out here so that the test checks the document,
 * not export.c's own constants. */
enum { O_VERSION = 8, O_FILE_BYTES = 12, O_ARCH = 20, O_WIDTH0 = 40, O_BLOCKS = 52, O_HIDDEN = 56,
       O_WBITS = 60, O_AUX = 68, O_STD = 76, O_TENSORS = 80 };

/* Each test runs in its own process, so this per-test temp dir needs no locking. */
static char tmp_dir[64];

static void make_tmp_dir(void) { util_tmpdir_make(tmp_dir, "export"); }

static void remove_tmp_dir(void) { util_tmpdir_remove(tmp_dir); }

TestSuite(export, .init = make_tmp_dir, .fini = remove_tmp_dir);

static const char *tpath(char buf[256], const char *name) {
    snprintf(buf, 256, "%s/%s", tmp_dir, name);
    return buf;
}

/* ---- file bytes ---- */

static uint8_t *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    cr_assert_eq(fseek(f, 0, SEEK_END), 0);
    long n = ftell(f);
    cr_assert_geq(n, 0);
    rewind(f);
    uint8_t *buf = malloc((size_t)n + 1);
    cr_assert_not_null(buf);
    cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static void write_all(const char *path, const uint8_t *buf, size_t len) {
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(buf, 1, len, f), len);
    cr_assert_eq(fclose(f), 0);
}

static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p) { return le32(p) | (uint64_t)le32(p + 4) << 32; }

static void set32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void set64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* Recomputes the trailing CRC-32 so that a tampered file passes the envelope. */
static void fix_crc(uint8_t *buf, size_t len) {
    set32(buf + len - 4, (uint32_t)crc32(crc32(0L, Z_NULL, 0), buf, (uInt)(len - 4)));
}

/* Offset of tensor record i, walking the records as docs/EXPORT.md describes them. */
static size_t record_offset(const uint8_t *buf, int i) {
    size_t pos = EXPORT_HEADER_BYTES;
    for (int j = 0; j < i; j++) {
        const uint32_t bits = le32(buf + pos + 4);
        const uint64_t count = le64(buf + pos + 8);
        pos += EXPORT_RECORD_BYTES + (size_t)(bits ? (count * bits + 7) / 8 : 4 * count);
    }
    return pos;
}

/* ---- models ---- */

static model_spec_t small_resnet(int wbits, int abits) {
    model_spec_t sp;
    model_spec_default(&sp);
    sp.in_c = 1;
    sp.in_h = sp.in_w = 12;
    sp.widths[0] = 4;
    sp.widths[1] = 8;
    sp.widths[2] = 8;
    sp.wbits = wbits;
    sp.abits = abits;
    sp.aux = 1;
    return sp;
}

static model_spec_t small_mlp(int hidden) {
    model_spec_t sp;
    model_spec_default(&sp);
    sp.arch = ARCH_MLP;
    sp.in_c = 1;
    sp.in_h = sp.in_w = 12;
    sp.hidden = hidden;
    sp.aux = 0;
    return sp;
}

static void random_batch(rng_t *r, const model_spec_t *sp, float *x, int *y) {
    const size_t d = (size_t)sp->in_c * sp->in_h * sp->in_w;
    for (size_t i = 0; i < BATCH * d; i++) x[i] = rng_normal(r);
    for (int i = 0; i < BATCH; i++) y[i] = (int)rng_below(r, (uint32_t)sp->classes);
}

/* An initialised model after two training-mode forward passes, so that its running statistics
 * are no longer the initial 0 / 1. */
static model_t *trained_model(const model_spec_t *sp, uint64_t seed) {
    model_t *m = model_new(sp, BATCH);
    cr_assert_not_null(m);
    model_init(m, seed);
    rng_t r;
    rng_seed(&r, seed + 1);
    float *x = malloc(sizeof(float) * BATCH * sp->in_c * sp->in_h * sp->in_w);
    int y[BATCH];
    cr_assert_not_null(x);
    for (int step = 0; step < 2; step++) {
        random_batch(&r, sp, x, y);
        model_forward(m, x, y, BATCH, 1, NULL);
    }
    free(x);
    return m;
}

/* Saves a trained model of spec sp to path; returns it (the caller destroys it). */
static model_t *save_model(const model_spec_t *sp, const char *path) {
    model_t *m = trained_model(sp, 7);
    auxps_error_t err = {0};
    int rc = export_save(m, 0.286f, 0.353f, path, &err);
    cr_assert_eq(rc, 0, "export_save: %s", err.msg);
    return m;
}

/* ---- round trips ---- */

/* Saves, loads and compares: eval logits bit for bit, the inference layout, the decoded weights
 * and the statistics; then re-exports the loaded (frozen) model, which must give the same bytes.
 * Returns the file size; *fp32 receives the size of the FP32 equivalent. */
static size_t roundtrip(const model_spec_t *sp, int want_quantized, size_t *fp32) {
    char path[256], path2[256];
    tpath(path, "m.auxps");
    tpath(path2, "again.auxps");
    model_t *m = save_model(sp, path);

    rng_t r;
    rng_seed(&r, 99);
    const size_t d = (size_t)sp->in_c * sp->in_h * sp->in_w;
    float *x = malloc(sizeof(float) * BATCH * d), *want = malloc(sizeof(float) * BATCH * sp->classes);
    int y[BATCH];
    cr_assert(x && want);
    random_batch(&r, sp, x, y);
    model_forward(m, x, NULL, BATCH, 0, NULL);
    memcpy(want, model_logits(m), sizeof(float) * BATCH * sp->classes);

    model_t *l = NULL;
    float mean = 0, std = 0;
    auxps_error_t err = {0};
    int rc = export_load(path, BATCH, &l, &mean, &std, &err);
    cr_assert_eq(rc, 0, "export_load: %s", err.msg);
    cr_assert_not_null(l);
    cr_assert_eq(mean, 0.286f);
    cr_assert_eq(std, 0.353f);

    /* (a) the same eval logits, bit for bit */
    model_forward(l, x, NULL, BATCH, 0, NULL);
    cr_assert_eq(memcmp(model_logits(l), want, sizeof(float) * BATCH * sp->classes), 0,
                 "eval logits differ after the round trip");

    /* (b) the inference network only */
    const model_spec_t *ls = model_spec(l);
    cr_assert_eq(ls->aux, 0);
    cr_assert_null(model_logits_aux(l));
    cr_assert_eq(model_num_params(l), model_num_inference_params(m));
    cr_assert_eq(model_num_stats(l), model_num_inference_stats(m));
    cr_assert_eq(ls->wbits, sp->wbits);
    cr_assert_eq(ls->abits, sp->abits);
    int quantized = 0;
    for (int i = 0; i < model_num_tensors(l); i++) {
        const model_tensor_t *t = model_tensor(l, i), *o = model_tensor(m, i);
        cr_assert_eq(t->aux, 0, "%s is auxiliary", t->name);
        cr_assert_str_eq(t->name, o->name);
        cr_assert_eq(t->offset, o->offset);
        cr_assert_eq(memcmp(model_weight_q(l, i), model_weight_q(m, i), t->size * sizeof(float)), 0,
                     "%s differs", t->name);
        if (t->quantized) {
            quantized++;
            /* the latent weights are not in the file */
            for (size_t j = 0; j < t->size; j++) cr_assert_eq(model_params(l)[t->offset + j], 0.0f);
        }
    }
    cr_assert_eq(quantized, want_quantized);
    /* the file stops exactly where the original's auxiliary module starts */
    const model_tensor_t *next = model_tensor(m, model_num_tensors(l));
    cr_assert_eq(next != NULL && next->aux, sp->aux != 0);
    cr_assert_eq(memcmp(model_stats(l), model_stats(m), model_num_stats(l) * sizeof(float)), 0);

    /* a loaded model exports to the same bytes */
    rc = export_save(l, mean, std, path2, &err);
    cr_assert_eq(rc, 0, "re-export: %s", err.msg);
    size_t n1, n2;
    uint8_t *b1 = read_all(path, &n1), *b2 = read_all(path2, &n2);
    cr_assert_eq(n1, n2);
    cr_assert_eq(memcmp(b1, b2, n1), 0, "a reloaded model exports to different bytes");
    cr_assert_eq(le64(b1 + O_FILE_BYTES), n1);

    *fp32 = 4 * (model_num_inference_params(m) + model_num_inference_stats(m));
    free(b1);
    free(b2);
    free(x);
    free(want);
    model_destroy(&l);
    model_destroy(&m);
    cr_assert_null(m);
    return n1;
}

/* ResNet 4/8/8: conv1 and conv2 in every block, plus the shortcuts of stages 1 and 2. */
enum { SMALL_RESNET_QTENSORS = 8 };

Test(export, resnet_w2a2_roundtrip_is_bit_identical_and_smaller_than_fp32) {
    model_spec_t sp = small_resnet(2, 2);
    size_t fp32, n = roundtrip(&sp, SMALL_RESNET_QTENSORS, &fp32);
    cr_assert_lt(n, fp32, "W2A2 file %zu bytes, FP32 %zu", n, fp32);
}

Test(export, resnet_w1a2_roundtrip_is_bit_identical) {
    model_spec_t sp = small_resnet(1, 2);
    size_t fp32, n = roundtrip(&sp, SMALL_RESNET_QTENSORS, &fp32);
    cr_assert_lt(n, fp32);
}

Test(export, resnet_w4a4_roundtrip_is_bit_identical) {
    model_spec_t sp = small_resnet(4, 4);
    size_t fp32, n = roundtrip(&sp, SMALL_RESNET_QTENSORS, &fp32);
    cr_assert_lt(n, fp32);
}

Test(export, resnet_fp32_roundtrip_is_bit_identical) {
    model_spec_t sp = small_resnet(32, 32);
    size_t fp32, n = roundtrip(&sp, 0, &fp32);
    /* FP32 pays only the header, the record headers and the checksum */
    cr_assert_gt(n, fp32);
    cr_assert_lt(n, fp32 + 2048);
}

Test(export, resnet_two_blocks_per_stage_roundtrip) {
    model_spec_t sp = small_resnet(2, 2);
    sp.blocks = 2;
    size_t fp32;
    roundtrip(&sp, SMALL_RESNET_QTENSORS + 6, &fp32);
}

Test(export, mlp_roundtrip_is_bit_identical) {
    model_spec_t sp = small_mlp(16);
    size_t fp32;
    roundtrip(&sp, 1, &fp32);
}

/* hidden 5: 25 two-bit codes = 50 bits, so the packed payload ends in 6 padding bits */
Test(export, mlp_with_padding_bits_roundtrip) {
    model_spec_t sp = small_mlp(5);
    size_t fp32;
    roundtrip(&sp, 1, &fp32);
}

Test(export, resnet8_w2a2_file_is_a_fraction_of_fp32) {
    model_spec_t sp;
    model_spec_default(&sp); /* ResNet-8, 16/32/64, 1x28x28, W2A2, aux on */
    model_t *m = model_new(&sp, 1);
    cr_assert_not_null(m);
    model_init(m, 1);
    char path[256];
    auxps_error_t err = {0};
    cr_assert_eq(export_save(m, 0.286f, 0.353f, tpath(path, "r8.auxps"), &err), 0, "%s", err.msg);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    const size_t fp32 = 4 * (model_num_inference_params(m) + model_num_inference_stats(m));
    cr_assert_eq(model_num_inference_params(m), 77754);
    const double ratio = (double)st.st_size / (double)fp32;
    cr_log_info("ResNet-8 W2A2 export: %lld bytes, FP32 equivalent %zu bytes, ratio %.4f (%.2fx smaller)",
                (long long)st.st_size, fp32, ratio, 1.0 / ratio);
    /* 76,288 two-bit weights plus 1,466 FP parameters and 672 statistics as float32 */
    cr_assert_lt(ratio, 0.1);
    model_destroy(&m);
}

/* ---- saving ---- */

Test(export, save_replaces_the_file_and_leaves_no_temporary) {
    char path[256], tmp[256];
    tpath(path, "m.auxps");
    tpath(tmp, "m.auxps.tmp");
    write_all(path, (const uint8_t *)"old", 3);
    model_spec_t sp = small_resnet(2, 2);
    model_t *m = save_model(&sp, path);
    size_t n;
    uint8_t *b = read_all(path, &n);
    cr_assert_eq(memcmp(b, EXPORT_MAGIC, 8), 0);
    cr_assert_eq(access(tmp, F_OK), -1, "the temporary file is left behind");
    free(b);
    model_destroy(&m);
}

Test(export, save_rejects_bad_normalisation_and_unwritable_paths) {
    model_spec_t sp = small_resnet(2, 2);
    model_t *m = trained_model(&sp, 3);
    char path[256];
    auxps_error_t err = {0};
    cr_assert_eq(export_save(m, 0.5f, 0.0f, tpath(path, "m.auxps"), &err), AUXPS_EINVAL);
    cr_assert_eq(export_save(m, 0.5f, -1.0f, path, &err), AUXPS_EINVAL);
    cr_assert_eq(access(path, F_OK), -1);
    cr_assert_eq(export_save(m, 0.5f, 1.0f, tpath(path, "no/such/dir/m.auxps"), &err), AUXPS_EIO);
    cr_assert(strstr(err.msg, "no/such/dir") != NULL, "%s", err.msg);
    cr_assert_eq(export_save(NULL, 0.5f, 1.0f, path, &err), AUXPS_EINVAL);
    model_destroy(&m);
}

/* A hand-written quantized buffer that is not k-bit values cannot be stored as codes. */
Test(export, save_rejects_a_frozen_model_with_non_k_bit_weights) {
    model_spec_t sp = small_resnet(2, 2);
    char path[256];
    model_t *m = save_model(&sp, tpath(path, "m.auxps")), *l = NULL;
    float mean, std;
    auxps_error_t err = {0};
    cr_assert_eq(export_load(path, 1, &l, &mean, &std, &err), 0, "%s", err.msg);
    int q = 0;
    while (!model_tensor(l, q)->quantized) q++;
    model_qweights(l)[model_tensor(l, q)->offset] = 0.25f;
    cr_assert_eq(export_save(l, mean, std, tpath(path, "bad.auxps"), &err), AUXPS_EINVAL);
    cr_assert(strstr(err.msg, model_tensor(l, q)->name) != NULL, "%s", err.msg);
    cr_assert_eq(access(path, F_OK), -1);
    model_destroy(&l);
    model_destroy(&m);
}

/* ---- hostile files ---- */

/* Loads path, which must fail with code and a message that names the file. */
static void expect_fail(const char *path, int code) {
    model_t *l = NULL;
    float mean = 123.0f, std = 456.0f;
    auxps_error_t err = {0};
    int rc = export_load(path, 4, &l, &mean, &std, &err);
    cr_assert_eq(rc, code, "expected %s, got %d (%s): %s", auxps_strerror(code), rc, auxps_strerror(rc),
                 err.msg);
    cr_assert_eq(err.code, code);
    cr_assert_null(l);
    cr_assert_eq(mean, 123.0f, "mean written on failure");
    cr_assert_eq(std, 456.0f);
    cr_assert(strstr(err.msg, path) != NULL, "message does not name the file: %s", err.msg);
}

/* A valid W2A2 file at path, its bytes in *buf. */
static size_t valid_file(const char *path, uint8_t **buf) {
    model_spec_t sp = small_resnet(2, 2);
    model_t *m = save_model(&sp, path);
    model_destroy(&m);
    size_t n;
    *buf = read_all(path, &n);
    return n;
}

Test(export, flipped_byte_is_a_checksum_error) {
    char path[256];
    uint8_t *b;
    size_t n = valid_file(tpath(path, "m.auxps"), &b);
    b[n / 2] ^= 0x40;
    write_all(path, b, n);
    expect_fail(path, AUXPS_ECHECKSUM);
    b[n / 2] ^= 0x40;
    b[n - 1] ^= 0x01; /* the checksum itself */
    write_all(path, b, n);
    expect_fail(path, AUXPS_ECHECKSUM);
    free(b);
}

Test(export, truncated_file_is_a_format_error) {
    char path[256];
    uint8_t *b;
    size_t n = valid_file(tpath(path, "m.auxps"), &b);
    const size_t lens[] = {0, 7, 8, 11, EXPORT_HEADER_BYTES - 1, EXPORT_HEADER_BYTES, n / 2, n - 4, n - 1};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        write_all(path, b, lens[i]);
        expect_fail(path, AUXPS_EFORMAT);
    }
    free(b);
}

/* Every length, with and without a recomputed checksum: an error, never a crash. */
Test(export, every_truncation_fails_cleanly) {
    char path[256];
    uint8_t *b;
    size_t n = valid_file(tpath(path, "m.auxps"), &b);
    uint8_t *c = malloc(n);
    cr_assert_not_null(c);
    int fails = 0;
    for (size_t len = 0; len < n; len++) {
        memcpy(c, b, len);
        if (len >= 20) set64(c + O_FILE_BYTES, len);
        if (len >= EXPORT_HEADER_BYTES + 12) fix_crc(c, len);
        write_all(path, c, len);
        model_t *l = NULL;
        float mean, std;
        auxps_error_t err = {0};
        int rc = export_load(path, 2, &l, &mean, &std, &err);
        cr_assert(rc == AUXPS_EFORMAT || rc == AUXPS_ECHECKSUM, "length %zu: %d %s", len, rc, err.msg);
        cr_assert_null(l);
        fails++;
    }
    cr_assert_eq((size_t)fails, n);
    free(c);
    free(b);
}

Test(export, trailing_bytes_are_a_format_error) {
    char path[256];
    uint8_t *b;
    size_t n = valid_file(tpath(path, "m.auxps"), &b);
    uint8_t *c = calloc(n + 4, 1);
    cr_assert_not_null(c);
    memcpy(c, b, n);
    write_all(path, c, n + 1); /* one byte after the checksum */
    expect_fail(path, AUXPS_EFORMAT);
    /* four bytes between the statistics and a valid checksum, with the size field updated */
    set64(c + O_FILE_BYTES, n + 4);
    fix_crc(c, n + 4);
    write_all(path, c, n + 4);
    expect_fail(path, AUXPS_EFORMAT);
    free(c);
    free(b);
}

Test(export, wrong_magic_is_a_format_error) {
    char path[256];
    uint8_t *b;
    size_t n = valid_file(tpath(path, "m.auxps"), &b);
    memcpy(b, "AUXPSCKP", 8);
    fix_crc(b, n);
    write_all(path, b, n);
    expect_fail(path, AUXPS_EFORMAT);
    free(b);
}

Test(export, other_version_is_a_version_error) {
    char path[256];
    uint8_t *b;
    size_t n = valid_file(tpath(path, "m.auxps"), &b);
    set32(b + O_VERSION, 99);
    fix_crc(b, n);
    write_all(path, b, n);
    expect_fail(path, AUXPS_EVERSION);
    set32(b + O_VERSION, 0);
    write_all(path, b, n); /* stale checksum: the version is still read first */
    expect_fail(path, AUXPS_EVERSION);
    free(b);
}

Test(export, missing_file_or_directory_is_an_io_error) {
    char path[256];
    expect_fail(tpath(path, "nothing-here.auxps"), AUXPS_EIO);
    expect_fail(tmp_dir, AUXPS_EIO);
    model_t *l = (model_t *)&l;
    float mean, std;
    auxps_error_t err = {0};
    cr_assert_eq(export_load(path, 0, &l, &mean, &std, &err), AUXPS_EINVAL);
    cr_assert_null(l);
}

/* Tampers with one header u32 of a valid file, recomputes the CRC and expects EFORMAT. */
static void expect_header_rejected(size_t off, uint32_t value) {
    char path[256];
    uint8_t *b;
    size_t n = valid_file(tpath(path, "m.auxps"), &b);
    set32(b + off, value);
    fix_crc(b, n);
    write_all(path, b, n);
    expect_fail(path, AUXPS_EFORMAT);
    free(b);
}

Test(export, spec_inconsistent_with_the_records_is_a_format_error) {
    expect_header_rejected(O_BLOCKS, 2);                 /* more tensors than stored */
    expect_header_rejected(O_WIDTH0, 5);                 /* other element counts */
    expect_header_rejected(O_WBITS, 4);                  /* other bits per record */
    expect_header_rejected(O_WBITS, 32);
    expect_header_rejected(O_ARCH, ARCH_MLP);            /* widths must then be 0 */
    expect_header_rejected(O_TENSORS, 13);
    expect_header_rejected(O_TENSORS, UINT32_MAX);
}

Test(export, invalid_spec_fields_are_a_format_error) {
    expect_header_rejected(O_AUX, 1);                    /* never stored */
    expect_header_rejected(O_HIDDEN, 256);               /* unused by a ResNet: must be 0 */
    expect_header_rejected(O_WIDTH0, 0);                 /* model_spec_check */
    expect_header_rejected(O_BLOCKS, MODEL_MAX_BLOCKS + 1);
    expect_header_rejected(O_BLOCKS, UINT32_MAX);
    expect_header_rejected(O_ARCH, 7);
    expect_header_rejected(O_STD, 0xbf800000u);          /* std = -1 */
    expect_header_rejected(O_STD, 0x7fc00000u);          /* std = NaN */
}

/* The spec sizes the model's buffers, so a small file that claims a huge model must be refused
 * from its size before they are allocated (once the reader asked for gigabytes, and a spec with
 * 16 blocks per stage overran the model's tensor table). */
Test(export, a_spec_larger_than_the_file_is_refused_before_the_model_is_built) {
    char path[256];
    uint8_t *b;
    size_t n = valid_file(tpath(path, "m.auxps"), &b);
    for (int i = 0; i < 3; i++) set32(b + O_WIDTH0 + 4 * (size_t)i, 1024);
    set32(b + O_BLOCKS, MODEL_MAX_BLOCKS);
    fix_crc(b, n);
    write_all(path, b, n);
    expect_fail(path, AUXPS_EFORMAT);
    model_t *l = NULL;
    float mean, std;
    auxps_error_t err = {0};
    cr_expect_eq(export_load(path, 4, &l, &mean, &std, &err), AUXPS_EFORMAT);
    cr_expect(strstr(err.msg, "truncated") && strstr(err.msg, "needs at least"), "%s", err.msg);
    free(b);
}

/* Tampers with a field of record i (offset within it), fixes the CRC, expects EFORMAT. */
static void expect_record_rejected(int tensor, size_t field, int width, uint64_t value) {
    char path[256];
    uint8_t *b;
    size_t n = valid_file(tpath(path, "m.auxps"), &b);
    const size_t at = record_offset(b, tensor) + field;
    if (width == 4) set32(b + at, (uint32_t)value);
    else set64(b + at, value);
    fix_crc(b, n);
    write_all(path, b, n);
    expect_fail(path, AUXPS_EFORMAT);
    free(b);
}

Test(export, inconsistent_records_are_a_format_error) {
    /* tensor 0 is stem.conv.w (FP), tensor 3 is s0.b0.conv1.w (2-bit) */
    expect_record_rejected(0, 0, 4, 1);                   /* kind */
    expect_record_rejected(0, 4, 4, 2);                   /* bits on an FP tensor */
    expect_record_rejected(3, 4, 4, 0);                   /* FP on a quantized tensor */
    expect_record_rejected(3, 4, 4, 3);
    expect_record_rejected(0, 8, 8, UINT64_MAX);          /* count */
    expect_record_rejected(0, 8, 8, 35);
    expect_record_rejected(3, 8, 8, (uint64_t)1 << 40);
    expect_record_rejected(0, 16, 4, 0x3f800000u);        /* scale on an FP tensor */
    expect_record_rejected(3, 16, 4, 0x3f800000u);        /* scale 1 instead of 2/3 */
    expect_record_rejected(3, 20, 4, 0x00000000u);        /* offset 0 instead of -1 */
}

Test(export, w1_record_with_a_negative_scale_is_a_format_error) {
    char path[256];
    model_spec_t sp = small_resnet(1, 2);
    model_t *m = save_model(&sp, tpath(path, "m.auxps"));
    model_destroy(&m);
    size_t n;
    uint8_t *b = read_all(path, &n);
    const size_t at = record_offset(b, 3);
    float e;
    uint32_t u = le32(b + at + 20) ^ 0x80000000u; /* offset = +e: e would be negative */
    memcpy(&e, &u, 4);
    cr_assert_gt(e, 0.0f);
    set32(b + at + 20, u);
    fix_crc(b, n);
    write_all(path, b, n);
    expect_fail(path, AUXPS_EFORMAT);
    free(b);
}

Test(export, nonzero_padding_bits_are_a_format_error) {
    char path[256];
    model_spec_t sp = small_mlp(5);
    model_t *m = save_model(&sp, tpath(path, "m.auxps"));
    model_destroy(&m);
    size_t n;
    uint8_t *b = read_all(path, &n);
    /* MLP tensors: fc_in.w, fc_in.b, bn1.gamma, bn1.beta, fc_mid.w (25 codes, 7 bytes) */
    const size_t at = record_offset(b, 4);
    cr_assert_eq(le32(b + at + 4), 2);
    cr_assert_eq(le64(b + at + 8), 25);
    cr_assert_eq(b[at + EXPORT_RECORD_BYTES + 6] >> 2, 0, "the writer leaves padding bits 0");
    b[at + EXPORT_RECORD_BYTES + 6] |= 0x80;
    fix_crc(b, n);
    write_all(path, b, n);
    expect_fail(path, AUXPS_EFORMAT);
    free(b);
}

Test(export, wrong_statistics_count_is_a_format_error) {
    char path[256];
    uint8_t *b;
    size_t n = valid_file(tpath(path, "m.auxps"), &b);
    model_spec_t sp = small_resnet(2, 2);
    model_t *m = model_new(&sp, 1);
    const size_t nstats = model_num_inference_stats(m);
    model_destroy(&m);
    const size_t at = n - 4 - 4 * nstats - 8;
    cr_assert_eq(le64(b + at), nstats);
    const uint64_t bad[] = {nstats - 1, nstats + 1, UINT64_MAX, (uint64_t)1 << 62};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        set64(b + at, bad[i]);
        fix_crc(b, n);
        write_all(path, b, n);
        expect_fail(path, AUXPS_EFORMAT);
    }
    free(b);
}

/* Every byte of the header and records inverted, CRC fixed: a clean error or a valid model
 * (a changed float payload is still a valid file), never a crash. */
Test(export, every_corrupted_byte_with_a_valid_crc_fails_cleanly) {
    char path[256];
    uint8_t *b;
    size_t n = valid_file(tpath(path, "m.auxps"), &b);
    int ok = 0, bad = 0;
    for (size_t i = 0; i + 4 < n; i++) {
        b[i] ^= 0xff;
        fix_crc(b, n);
        write_all(path, b, n);
        model_t *l = NULL;
        float mean, std;
        auxps_error_t err = {0};
        int rc = export_load(path, 2, &l, &mean, &std, &err);
        cr_assert(rc == 0 || rc == AUXPS_EFORMAT || rc == AUXPS_EVERSION, "byte %zu: %d %s", i, rc, err.msg);
        if (rc == 0) {
            cr_assert_not_null(l);
            ok++;
        } else {
            cr_assert_null(l);
            bad++;
        }
        model_destroy(&l);
        b[i] ^= 0xff;
    }
    cr_assert_eq((size_t)(ok + bad), n - 4);
    cr_assert_gt(bad, EXPORT_HEADER_BYTES - 8, "most header bytes must be rejected");
    cr_log_info("byte inversions with a valid CRC: %d rejected, %d still valid", bad, ok);
    free(b);
}

/* ---- info ---- */

Test(export, info_lists_the_tensors_and_the_ratio) {
    char path[256];
    model_spec_t sp = small_resnet(2, 2);
    model_t *m = save_model(&sp, tpath(path, "m.auxps"));
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    cr_assert_not_null(f);
    auxps_error_t err = {0};
    int rc = export_info(path, f, &err);
    fclose(f);
    cr_assert_eq(rc, 0, "%s", err.msg);
    int lines = 0;
    for (const char *p = text; (p = strstr(p, "\ntensor: ")) != NULL; p++) lines++;
    int infer = 0;
    while (!model_tensor(m, infer)->aux) infer++;
    cr_assert_eq(lines, infer, "one line per inference tensor");
    cr_assert(strstr(text, "tensor: stem.conv.w shape=4x1x3x3 bits=32 bytes=") != NULL, "%s", text);
    cr_assert(strstr(text, "tensor: s0.b0.conv1.w shape=4x4x3x3 bits=2 bytes=60\n") != NULL, "%s", text);
    cr_assert(strstr(text, "tensor: s2.b0.sc.conv.w") != NULL, "%s", text);
    cr_assert(strstr(text, "tensor: fc1.b") != NULL, "%s", text);
    cr_assert(strstr(text, "aux.") == NULL, "%s", text);
    cr_assert(strstr(text, "widths: 4,8,8\n") != NULL, "%s", text);
    cr_assert(strstr(text, "ratio: 0.") != NULL, "%s", text);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    char want[64];
    snprintf(want, sizeof want, "file_bytes: %lld\n", (long long)st.st_size);
    cr_assert(strstr(text, want) != NULL, "%s", text);
    free(text);

    text = NULL;
    f = open_memstream(&text, &len);
    cr_assert_eq(export_info(tpath(path, "missing.auxps"), f, &err), AUXPS_EIO);
    fclose(f);
    free(text);
    model_destroy(&m);
}
