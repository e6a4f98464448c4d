/* test_data.c - the IDX loader against small files written here (gzip and plain, valid and
 * broken), the batch builder's normalisation and augmentation, and the real Fashion-MNIST. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include "data.h"
#include "util.h"

#if defined(__SANITIZE_ADDRESS__)
#define HAVE_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HAVE_ASAN 1
#endif
#endif

#ifdef HAVE_ASAN
#include <sanitizer/lsan_interface.h>
/* Makes ASan refuse allocations over 2 GiB with NULL instead of aborting, so the lying-header
 * test can tell a loader that trusts the header (ENOMEM) from one that reads first. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) {
    return "allocator_may_return_null=1:max_allocation_size_mb=2048";
}
#endif

/* Criterion ignores LeakSanitizer's report at process exit, so tests of error paths ask for a
 * leak check while they can still fail. */
static void assert_no_leaks(void) {
#ifdef HAVE_ASAN
    cr_assert_eq(__lsan_do_recoverable_leak_check(), 0, "memory leaked (report above)");
#endif
}

/* Each test runs in its own process, so this per-test temp dir needs no locking. */
static char tmp_dir[64];

static void make_tmp_dir(void) { util_tmpdir_make(tmp_dir, "data"); }

static void remove_tmp_dir(void) { util_tmpdir_remove(tmp_dir); }

TestSuite(data, .init = make_tmp_dir, .fini = remove_tmp_dir);

/* ---- helpers that write IDX files ---- */

static const char *tpath(char buf[256], const char *name) {
    snprintf(buf, 256, "%s/%s", tmp_dir, name);
    return buf;
}

static void write_bytes(const char *path, const void *data, size_t len, int gz) {
    if (gz) {
        gzFile f = gzopen(path, "wb");
        cr_assert_not_null(f);
        cr_assert_eq(gzwrite(f, data, (unsigned)len), (int)len);
        cr_assert_eq(gzclose(f), Z_OK);
    } else {
        FILE *f = fopen(path, "wb");
        cr_assert_not_null(f);
        cr_assert_eq(fwrite(data, 1, len, f), len);
        cr_assert_eq(fclose(f), 0);
    }
}

/* Writes an IDX file: big-endian magic, rank dims, then body. */
static void write_idx(const char *path, int gz, uint32_t magic, int rank, const uint32_t *dims,
                      const uint8_t *body, size_t body_len) {
    size_t head = 4 + 4 * (size_t)rank;
    uint8_t *buf = malloc(head + body_len + 1);
    cr_assert_not_null(buf);
    uint32_t words[5] = {magic};
    memcpy(words + 1, dims, 4 * (size_t)rank);
    for (int i = 0; i <= rank; i++)
        for (int b = 0; b < 4; b++) buf[4 * i + b] = (uint8_t)(words[i] >> (24 - 8 * b));
    if (body_len > 0) memcpy(buf + head, body, body_len);
    write_bytes(path, buf, head + body_len, gz);
    free(buf);
}

/* The small fixture: 3 images of 2x3 with pixel k of image i = 10 i + k, labels 2, 0, 5. */
enum { FIX_N = 3, FIX_H = 2, FIX_W = 3 };
static const uint8_t fix_labels[FIX_N] = {2, 0, 5};

static void fix_pixels(uint8_t *px) {
    for (int i = 0; i < FIX_N; i++)
        for (int k = 0; k < FIX_H * FIX_W; k++) px[i * FIX_H * FIX_W + k] = (uint8_t)(10 * i + k);
}

static void write_fixture(const char *images, const char *labels, int gz) {
    uint8_t px[FIX_N * FIX_H * FIX_W];
    fix_pixels(px);
    write_idx(images, gz, 0x803, 3, (uint32_t[]){FIX_N, FIX_H, FIX_W}, px, sizeof px);
    write_idx(labels, gz, 0x801, 1, (uint32_t[]){FIX_N}, fix_labels, FIX_N);
}

static void assert_fixture(const dataset_t *ds) {
    uint8_t px[FIX_N * FIX_H * FIX_W];
    fix_pixels(px);
    cr_assert_eq(ds->n, FIX_N);
    cr_assert_eq(ds->c, 1);
    cr_assert_eq(ds->h, FIX_H);
    cr_assert_eq(ds->w, FIX_W);
    cr_assert_eq(ds->classes, 6);
    cr_assert_arr_eq(ds->images, px, sizeof px);
    cr_assert_arr_eq(ds->labels, fix_labels, FIX_N);
}

static size_t file_size(const char *path) {
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fclose(f);
    return (size_t)len;
}

/* A gzip image file of 50 random 28x28 images: big enough that cutting it lands mid-stream. */
static void write_random_gz_fixture(const char *images, const char *labels) {
    enum { N = 50, PX = 28 * 28 };
    static uint8_t px[N * PX];
    uint8_t lb[N] = {0};
    rng_t r;
    rng_seed(&r, 7);
    for (size_t i = 0; i < sizeof px; i++) px[i] = (uint8_t)rng_below(&r, 256);
    write_idx(images, 1, 0x803, 3, (uint32_t[]){N, 28, 28}, px, sizeof px);
    write_idx(labels, 1, 0x801, 1, (uint32_t[]){N}, lb, N);
}

/* Loads and checks that it fails with code, a message naming `names` and saying `says`,
 * and a zeroed dataset (ds starts dirty to prove the loader cleared it). */
static void expect_load_error(const char *images, const char *labels, int code,
                              const char *names, const char *says) {
    dataset_t ds = {.n = 99, .images = (uint8_t *)1};
    auxps_error_t err = {0};
    int rc = dataset_load_idx(&ds, images, labels, &err);
    cr_assert_eq(rc, code, "rc %d (%s), want %d", rc, err.msg, code);
    cr_assert_eq(err.code, code);
    cr_assert_not_null(strstr(err.msg, names), "message \"%s\" does not name %s", err.msg, names);
    cr_assert_not_null(strstr(err.msg, says), "message \"%s\" does not say %s", err.msg, says);
    cr_assert_eq(ds.n, 0);
    cr_assert_null(ds.images);
    cr_assert_null(ds.labels);
    assert_no_leaks();
}

/* ---- loading valid files ---- */

Test(data, load_plain_files_round_trips_values_and_shape) {
    char im[256], lb[256];
    write_fixture(tpath(im, "im"), tpath(lb, "lb"), 0);
    dataset_t ds;
    auxps_error_t err = {0};
    cr_assert_eq(dataset_load_idx(&ds, im, lb, &err), 0, "%s", err.msg);
    assert_fixture(&ds);
    dataset_free(&ds);
    assert_no_leaks();
}

Test(data, load_gzip_files_round_trips_values_and_shape) {
    char im[256], lb[256];
    write_fixture(tpath(im, "im.gz"), tpath(lb, "lb.gz"), 1);
    dataset_t ds;
    auxps_error_t err = {0};
    cr_assert_eq(dataset_load_idx(&ds, im, lb, &err), 0, "%s", err.msg);
    assert_fixture(&ds);
    dataset_free(&ds);
    assert_no_leaks();
}

Test(data, load_rank4_images_keeps_channels) {
    char im[256], lb[256];
    uint8_t px[2 * 3 * 4 * 5], labels[2] = {1, 1};
    for (size_t i = 0; i < sizeof px; i++) px[i] = (uint8_t)(i * 7);
    write_idx(tpath(im, "im"), 1, 0x804, 4, (uint32_t[]){2, 3, 4, 5}, px, sizeof px);
    write_idx(tpath(lb, "lb"), 0, 0x801, 1, (uint32_t[]){2}, labels, 2);
    dataset_t ds;
    auxps_error_t err = {0};
    cr_assert_eq(dataset_load_idx(&ds, im, lb, &err), 0, "%s", err.msg);
    cr_assert(ds.n == 2 && ds.c == 3 && ds.h == 4 && ds.w == 5);
    cr_assert_eq(ds.classes, 2);
    cr_assert_arr_eq(ds.images, px, sizeof px);
    dataset_free(&ds);
}

Test(data, load_dir_prefers_gz_and_falls_back_to_plain) {
    char im[256], lb[256];
    write_fixture(tpath(im, "train-images-idx3-ubyte.gz"),
                  tpath(lb, "train-labels-idx1-ubyte.gz"), 1);
    /* Plain twins with different content show which one was read. */
    uint8_t one[4] = {200, 201, 202, 203}, label = 1;
    write_idx(tpath(im, "train-images-idx3-ubyte"), 0, 0x803, 3, (uint32_t[]){1, 2, 2}, one, 4);
    write_idx(tpath(lb, "train-labels-idx1-ubyte"), 0, 0x801, 1, (uint32_t[]){1}, &label, 1);

    dataset_t ds;
    auxps_error_t err = {0};
    cr_assert_eq(dataset_load(&ds, tmp_dir, 1, 0, &err), 0, "%s", err.msg);
    assert_fixture(&ds);
    dataset_free(&ds);

    unlink(tpath(im, "train-images-idx3-ubyte.gz"));
    unlink(tpath(lb, "train-labels-idx1-ubyte.gz"));
    cr_assert_eq(dataset_load(&ds, tmp_dir, 1, 0, &err), 0, "%s", err.msg);
    cr_assert(ds.n == 1 && ds.h == 2 && ds.w == 2 && ds.images[3] == 203 && ds.labels[0] == 1);
    dataset_free(&ds);
}

Test(data, load_dir_test_split_reads_t10k_files) {
    char im[256], lb[256];
    write_fixture(tpath(im, "t10k-images-idx3-ubyte"), tpath(lb, "t10k-labels-idx1-ubyte"), 0);
    dataset_t ds;
    auxps_error_t err = {0};
    cr_assert_eq(dataset_load(&ds, tmp_dir, 0, 0, &err), 0, "%s", err.msg);
    assert_fixture(&ds);
    dataset_free(&ds);
    assert_no_leaks();
}

Test(data, load_dir_limit_keeps_first_samples_and_all_classes) {
    char im[256], lb[256];
    write_fixture(tpath(im, "train-images-idx3-ubyte.gz"),
                  tpath(lb, "train-labels-idx1-ubyte.gz"), 1);
    dataset_t ds;
    auxps_error_t err = {0};
    cr_assert_eq(dataset_load(&ds, tmp_dir, 1, 2, &err), 0, "%s", err.msg);
    uint8_t px[FIX_N * FIX_H * FIX_W];
    fix_pixels(px);
    cr_assert_eq(ds.n, 2);
    cr_assert_arr_eq(ds.images, px, 2 * FIX_H * FIX_W);
    cr_assert_arr_eq(ds.labels, fix_labels, 2);
    cr_assert_eq(ds.classes, 6, "label 5 is beyond the limit but still sets classes");
    dataset_free(&ds);
}

/* dataset_count: the n that dataset_load gives, limits included, from the headers alone: a body
 * cut short still counts (dataset_load refuses it), a header that dataset_load refuses is refused
 * with the same error. */
Test(data, count_gives_load_n_from_the_headers_alone) {
    char im[256], lb[256];
    write_fixture(tpath(im, "train-images-idx3-ubyte.gz"), tpath(lb, "train-labels-idx1-ubyte.gz"), 1);
    auxps_error_t err = {0};
    int n = -1;
    cr_assert_eq(dataset_count(tmp_dir, 1, 0, &n, &err), 0, "%s", err.msg);
    cr_assert_eq(n, FIX_N);
    cr_assert_eq(dataset_count(tmp_dir, 1, 2, &n, &err), 0, "%s", err.msg);
    cr_assert_eq(n, 2);
    cr_assert_eq(dataset_count(tmp_dir, 1, FIX_N + 5, &n, &err), 0, "%s", err.msg);
    cr_assert_eq(n, FIX_N);

    unlink(im); /* the plain twins are read from here on, the images cut short */
    write_fixture(tpath(im, "train-images-idx3-ubyte"), tpath(lb, "train-labels-idx1-ubyte"), 0);
    cr_assert_eq(truncate(im, (off_t)file_size(im) - 1), 0);
    dataset_t ds;
    cr_assert_eq(dataset_load(&ds, tmp_dir, 1, 0, &err), AUXPS_EFORMAT, "the body is cut short");
    n = -1;
    cr_assert_eq(dataset_count(tmp_dir, 1, 0, &n, &err), 0, "%s", err.msg);
    cr_assert_eq(n, FIX_N);

    write_idx(tpath(lb, "train-labels-idx1-ubyte.gz"), 1, 0x801, 1, (uint32_t[]){2}, fix_labels, 2);
    n = -1;
    cr_assert_eq(dataset_count(tmp_dir, 1, 0, &n, &err), AUXPS_EFORMAT);
    cr_assert_not_null(strstr(err.msg, "3 images"), "%s", err.msg);
    cr_assert_not_null(strstr(err.msg, "2 labels"), "%s", err.msg);
    cr_assert_eq(n, -1, "no count on failure");
    write_idx(tpath(lb, "train-labels-idx1-ubyte.gz"), 1, 0x803, 1, (uint32_t[]){3}, fix_labels, 3);
    cr_assert_eq(dataset_count(tmp_dir, 1, 0, &n, &err), AUXPS_EFORMAT);
    cr_assert_not_null(strstr(err.msg, "bad magic 0x00000803"), "%s", err.msg);
    cr_assert_eq(dataset_count(tmp_dir, 0, 0, &n, &err), AUXPS_EIO, "no t10k files here");
    cr_assert_not_null(strstr(err.msg, "t10k-images-idx3-ubyte"), "%s", err.msg);
    cr_assert_eq(dataset_count(NULL, 1, 0, &n, &err), AUXPS_EINVAL);
    cr_assert_eq(dataset_count(tmp_dir, 1, 0, NULL, &err), AUXPS_EINVAL);
    assert_no_leaks();
}

Test(data, free_is_safe_on_zeroed_and_freed_datasets) {
    dataset_t ds = {0};
    dataset_free(&ds);
    dataset_free(NULL);
    char im[256], lb[256];
    write_fixture(tpath(im, "im"), tpath(lb, "lb"), 0);
    cr_assert_eq(dataset_load_idx(&ds, im, lb, NULL), 0);
    dataset_free(&ds);
    cr_assert(ds.n == 0 && ds.images == NULL && ds.labels == NULL);
    dataset_free(&ds);
    assert_no_leaks();
}

/* ---- loading broken files ---- */

Test(data, missing_image_file_is_eio_naming_it) {
    char im[256], lb[256];
    write_fixture(tpath(im, "im"), tpath(lb, "lb"), 0);
    expect_load_error(tpath(im, "nope"), lb, AUXPS_EIO, im, strerror(ENOENT));
}

Test(data, missing_label_file_is_eio_naming_it) {
    char im[256], lb[256];
    write_fixture(tpath(im, "im"), tpath(lb, "lb"), 0);
    expect_load_error(im, tpath(lb, "nope"), AUXPS_EIO, lb, strerror(ENOENT));
}

Test(data, missing_dir_is_eio_naming_the_file) {
    dataset_t ds;
    auxps_error_t err = {0};
    cr_assert_eq(dataset_load(&ds, "/nonexistent/auxps", 1, 0, &err), AUXPS_EIO);
    cr_assert_not_null(strstr(err.msg, "/nonexistent/auxps/train-images-idx3-ubyte"), "%s",
                       err.msg);
}

Test(data, unreadable_file_is_eio) {
    char im[256], lb[256];
    write_fixture(tpath(im, "im"), tpath(lb, "lb"), 0);
    cr_assert_eq(mkdir(tpath(lb, "a_dir"), 0700), 0);
    expect_load_error(im, lb, AUXPS_EIO, lb, "cannot read");
}

Test(data, bad_image_magic_is_eformat) {
    char im[256], lb[256];
    write_fixture(tpath(im, "im"), tpath(lb, "lb"), 0);
    uint8_t px[6] = {0};
    write_idx(im, 0, 0x802, 3, (uint32_t[]){1, 2, 3}, px, 6); /* wrong element type */
    expect_load_error(im, lb, AUXPS_EFORMAT, im, "bad magic 0x00000802");
}

Test(data, label_magic_in_image_file_is_eformat) {
    char im[256], lb[256];
    write_fixture(tpath(im, "im"), tpath(lb, "lb"), 0);
    expect_load_error(lb, lb, AUXPS_EFORMAT, lb, "bad magic 0x00000801");
}

Test(data, image_magic_in_label_file_is_eformat) {
    char im[256], lb[256];
    write_fixture(tpath(im, "im"), tpath(lb, "lb"), 0);
    expect_load_error(im, im, AUXPS_EFORMAT, im, "bad magic 0x00000803");
}

Test(data, truncated_image_body_is_eformat) {
    char im[256], lb[256];
    write_fixture(tpath(im, "im"), tpath(lb, "lb"), 0);
    cr_assert_eq(truncate(im, (off_t)file_size(im) - 1), 0);
    expect_load_error(im, lb, AUXPS_EFORMAT, im, "truncated");
}

Test(data, truncated_header_is_eformat) {
    char im[256], lb[256];
    write_fixture(tpath(im, "im"), tpath(lb, "lb"), 0);
    cr_assert_eq(truncate(im, 10), 0); /* magic and n, half of h */
    expect_load_error(im, lb, AUXPS_EFORMAT, im, "header");
}

Test(data, empty_file_is_eformat) {
    char im[256], lb[256];
    write_fixture(tpath(im, "im"), tpath(lb, "lb"), 0);
    cr_assert_eq(truncate(lb, 0), 0);
    expect_load_error(im, lb, AUXPS_EFORMAT, lb, "truncated");
}

Test(data, gzip_stream_cut_midway_is_eformat) {
    char im[256], lb[256];
    write_random_gz_fixture(tpath(im, "im.gz"), tpath(lb, "lb.gz"));
    cr_assert_eq(truncate(im, (off_t)file_size(im) / 2), 0);
    expect_load_error(im, lb, AUXPS_EFORMAT, im, "truncated");
}

Test(data, gzip_stream_missing_its_trailer_is_eformat) {
    char im[256], lb[256];
    write_random_gz_fixture(tpath(im, "im.gz"), tpath(lb, "lb.gz"));
    /* Every image byte is still there; only the CRC and length are gone. */
    cr_assert_eq(truncate(im, (off_t)file_size(im) - 8), 0);
    expect_load_error(im, lb, AUXPS_EFORMAT, im, "trailer");
}

Test(data, gzip_stream_with_bad_crc_is_eformat) {
    char im[256], lb[256];
    write_random_gz_fixture(tpath(im, "im.gz"), tpath(lb, "lb.gz"));
    size_t len = file_size(im);
    FILE *f = fopen(im, "r+b");
    cr_assert_not_null(f);
    fseek(f, (long)len - 8, SEEK_SET); /* first byte of the CRC32 */
    int byte = fgetc(f);
    fseek(f, (long)len - 8, SEEK_SET);
    fputc(byte ^ 0xff, f);
    fclose(f);
    expect_load_error(im, lb, AUXPS_EFORMAT, im, "corrupt gzip");
}

Test(data, trailing_bytes_in_plain_file_are_eformat) {
    char im[256], lb[256];
    write_fixture(tpath(im, "im"), tpath(lb, "lb"), 0);
    uint8_t labels[FIX_N + 1] = {2, 0, 5, 9};
    write_idx(lb, 0, 0x801, 1, (uint32_t[]){FIX_N}, labels, sizeof labels);
    expect_load_error(im, lb, AUXPS_EFORMAT, lb, "trailing bytes");
}

Test(data, trailing_bytes_in_gzip_data_are_eformat) {
    char im[256], lb[256];
    write_fixture(tpath(im, "im.gz"), tpath(lb, "lb.gz"), 1);
    uint8_t px[FIX_N * FIX_H * FIX_W + 5] = {0};
    write_idx(im, 1, 0x803, 3, (uint32_t[]){FIX_N, FIX_H, FIX_W}, px, sizeof px);
    expect_load_error(im, lb, AUXPS_EFORMAT, im, "trailing bytes");
}

Test(data, mismatched_counts_are_eformat_naming_both_files) {
    char im[256], lb[256];
    write_fixture(tpath(im, "im"), tpath(lb, "lb"), 0);
    write_idx(lb, 0, 0x801, 1, (uint32_t[]){2}, fix_labels, 2);
    expect_load_error(im, lb, AUXPS_EFORMAT, im, "3 images");
    expect_load_error(im, lb, AUXPS_EFORMAT, lb, "2 labels");
}

Test(data, zero_height_is_eformat) {
    char im[256], lb[256];
    write_fixture(tpath(im, "im"), tpath(lb, "lb"), 0);
    write_idx(im, 0, 0x803, 3, (uint32_t[]){FIX_N, 0, FIX_W}, NULL, 0);
    expect_load_error(im, lb, AUXPS_EFORMAT, im, "height is 0");
}

Test(data, zero_sample_count_is_eformat) {
    char im[256], lb[256];
    write_fixture(tpath(im, "im"), tpath(lb, "lb"), 0);
    write_idx(lb, 0, 0x801, 1, (uint32_t[]){0}, NULL, 0);
    expect_load_error(im, lb, AUXPS_EFORMAT, lb, "label count is 0");
}

Test(data, width_over_limit_is_eformat) {
    char im[256], lb[256];
    write_fixture(tpath(im, "im"), tpath(lb, "lb"), 0);
    write_idx(im, 1, 0x803, 3, (uint32_t[]){FIX_N, 2, DATA_MAX_DIM + 1}, NULL, 0);
    expect_load_error(im, lb, AUXPS_EFORMAT, im, "width is 4097");
}

Test(data, sample_count_over_limit_is_eformat) {
    char im[256], lb[256];
    write_fixture(tpath(im, "im"), tpath(lb, "lb"), 0);
    write_idx(im, 0, 0x803, 3, (uint32_t[]){DATA_MAX_SAMPLES + 1, 28, 28}, NULL, 0);
    expect_load_error(im, lb, AUXPS_EFORMAT, im, "image count is 10000001");
}

Test(data, sample_bytes_over_limit_is_eformat) {
    char im[256], lb[256];
    write_fixture(tpath(im, "im"), tpath(lb, "lb"), 0);
    write_idx(im, 0, 0x804, 4, (uint32_t[]){1, 2, 4096, 4096}, NULL, 0);
    expect_load_error(im, lb, AUXPS_EFORMAT, im, "limit");
}

Test(data, header_claiming_more_than_the_file_holds_is_truncated) {
    /* 10M 28x28 images claimed, 100 bytes present: the loader must report truncation rather
     * than first allocating the 7.8 GB the header asks for, which allocations over 2 GiB
     * failing (ASan options above, or an address-space limit) would turn into ENOMEM. */
#ifndef HAVE_ASAN
    struct rlimit lim;
    cr_assert_eq(getrlimit(RLIMIT_AS, &lim), 0);
    lim.rlim_cur = (rlim_t)2 << 30;
    cr_assert_eq(setrlimit(RLIMIT_AS, &lim), 0); /* this test's own process only */
#endif
    char im[256], lb[256];
    uint8_t some[100] = {0};
    write_idx(tpath(im, "im.gz"), 1, 0x803, 3, (uint32_t[]){DATA_MAX_SAMPLES, 28, 28}, some,
              sizeof some);
    write_idx(tpath(lb, "lb.gz"), 1, 0x801, 1, (uint32_t[]){DATA_MAX_SAMPLES}, some,
              sizeof some);
    expect_load_error(im, lb, AUXPS_EFORMAT, im, "truncated");
}

Test(data, null_arguments_are_einval) {
    dataset_t ds;
    auxps_error_t err = {0};
    cr_assert_eq(dataset_load_idx(&ds, NULL, "x", &err), AUXPS_EINVAL);
    cr_assert_eq(dataset_load_idx(NULL, "x", "x", &err), AUXPS_EINVAL);
    cr_assert_eq(dataset_load(&ds, NULL, 1, 0, &err), AUXPS_EINVAL);
}

/* ---- batches ---- */

/* An in-memory dataset of n images, c x h x w, pixel k of image i = first + i * h * w * c + k. */
static dataset_t make_ds(int n, int c, int h, int w, int first) {
    dataset_t ds = {.n = n, .c = c, .h = h, .w = w, .classes = n};
    size_t sample = (size_t)c * h * w;
    ds.images = malloc((size_t)n * sample);
    ds.labels = malloc((size_t)n);
    cr_assert(ds.images && ds.labels);
    for (size_t k = 0; k < (size_t)n * sample; k++) ds.images[k] = (uint8_t)(first + k);
    for (int i = 0; i < n; i++) ds.labels[i] = (uint8_t)(n - 1 - i);
    return ds;
}

static float norm(const data_transform_t *t, int p) {
    return ((float)p / 255.0f - t->mean) / t->std;
}

/* Checks x (h, w) against the expected bytes, 0 meaning a padding pixel. */
static void assert_plane(const float *x, const uint8_t *want, int h, int w,
                         const data_transform_t *t) {
    for (int i = 0; i < h * w; i++)
        cr_assert_float_eq(x[i], norm(t, want[i]), 1e-6, "pixel (%d, %d): %f, want byte %d",
                           i / w, i % w, (double)x[i], want[i]);
}

/* Returns a seed whose first draws, in dataset_batch's documented order, are the given crop
 * offsets (in [-pad, pad]; none drawn when pad is 0) and flip. */
static uint64_t seed_drawing(int pad, int dy, int dx, int flip) {
    for (uint64_t seed = 1; seed < 100000; seed++) {
        rng_t r;
        rng_seed(&r, seed);
        uint32_t span = 2u * (uint32_t)pad + 1u;
        int got_dy = pad > 0 ? (int)rng_below(&r, span) - pad : 0;
        int got_dx = pad > 0 ? (int)rng_below(&r, span) - pad : 0;
        int got_flip = rng_below(&r, 2) == 1;
        if (got_dy == dy && got_dx == dx && got_flip == flip) return seed;
    }
    cr_assert_fail("no seed draws dy %d dx %d flip %d", dy, dx, flip);
    return 0;
}

Test(data, batch_normalises_every_byte_by_the_formula) {
    dataset_t ds = make_ds(1, 1, 16, 16, 0); /* bytes 0..255 */
    data_transform_t t = {.mean = 0.2860f, .std = 0.3530f};
    float x[256];
    int y;
    dataset_batch(&ds, (int[]){0}, 1, &t, NULL, x, &y);
    for (int p = 0; p < 256; p++)
        cr_assert_float_eq(x[p], (p / 255.0f - 0.2860f) / 0.3530f, 1e-6, "byte %d", p);
    cr_assert_float_eq(x[255], (1.0f - 0.2860f) / 0.3530f, 1e-6);
    dataset_free(&ds);
}

Test(data, batch_gathers_samples_and_labels_in_idx_order) {
    dataset_t ds = make_ds(3, 2, 2, 2, 0);
    data_transform_t t = {.mean = 0.0f, .std = 1.0f};
    float x[2 * 8];
    int y[2];
    dataset_batch(&ds, (int[]){2, 0}, 2, &t, NULL, x, y);
    assert_plane(x, ds.images + 16, 2, 4, &t); /* both channels of sample 2 */
    assert_plane(x + 8, ds.images, 2, 4, &t);
    cr_assert(y[0] == 0 && y[1] == 2);
    dataset_free(&ds);
}

Test(data, batch_without_rng_does_not_augment) {
    dataset_t ds = make_ds(2, 1, 4, 4, 1);
    data_transform_t plain = {.mean = 0.5f, .std = 0.25f};
    data_transform_t aug = {.mean = 0.5f, .std = 0.25f, .crop_pad = 2, .flip = 1};
    float want[32], got[32];
    int y[2];
    dataset_batch(&ds, (int[]){0, 1}, 2, &plain, NULL, want, y);
    dataset_batch(&ds, (int[]){0, 1}, 2, &aug, NULL, got, y);
    cr_assert_arr_eq(got, want, sizeof want);
    assert_plane(got, ds.images, 4, 8, &plain);
    dataset_free(&ds);
}

Test(data, crop_moves_pixels_by_the_drawn_offset_and_pads_with_zero) {
    dataset_t ds = make_ds(1, 1, 4, 4, 1); /* 1..16, so a 0 can only be padding */
    data_transform_t t = {.mean = 0.1f, .std = 0.3f, .crop_pad = 1};
    rng_t r;
    rng_seed(&r, seed_drawing(1, +1, -1, 0));
    float x[16];
    int y;
    dataset_batch(&ds, (int[]){0}, 1, &t, &r, x, &y);
    /* Output (i, j) = source (i + 1, j - 1): content moves up one row and right one column. */
    static const uint8_t want[16] = {
        0, 5, 6, 7,
        0, 9, 10, 11,
        0, 13, 14, 15,
        0, 0, 0, 0,
    };
    assert_plane(x, want, 4, 4, &t);
    dataset_free(&ds);
}

Test(data, flip_when_drawn_mirrors_each_row) {
    dataset_t ds = make_ds(1, 2, 2, 3, 1);
    data_transform_t t = {.mean = 0.1f, .std = 0.3f, .flip = 1};
    rng_t r;
    rng_seed(&r, seed_drawing(0, 0, 0, 1));
    float x[12];
    int y;
    dataset_batch(&ds, (int[]){0}, 1, &t, &r, x, &y);
    static const uint8_t want[12] = {3, 2, 1, 6, 5, 4, 9, 8, 7, 12, 11, 10};
    assert_plane(x, want, 4, 3, &t); /* both channels, row by row */
    dataset_free(&ds);
}

Test(data, crop_then_flip_compose_in_documented_order) {
    dataset_t ds = make_ds(1, 1, 4, 4, 1);
    data_transform_t t = {.mean = 0.0f, .std = 1.0f, .crop_pad = 1, .flip = 1};
    rng_t r;
    rng_seed(&r, seed_drawing(1, -1, +1, 1));
    float x[16];
    int y;
    dataset_batch(&ds, (int[]){0}, 1, &t, &r, x, &y);
    /* Output (i, j) = source (i - 1, (3 - j) + 1). */
    static const uint8_t want[16] = {
        0, 0, 0, 0,
        0, 4, 3, 2,
        0, 8, 7, 6,
        0, 12, 11, 10,
    };
    assert_plane(x, want, 4, 4, &t);
    dataset_free(&ds);
}

Test(data, flip_happens_about_half_the_time) {
    enum { N = 2000 };
    dataset_t ds = make_ds(1, 1, 1, 2, 10); /* one row: 10, 11 */
    data_transform_t t = {.mean = 0.0f, .std = 1.0f, .flip = 1};
    static int idx[N];
    static float x[2 * N];
    static int y[N];
    rng_t r;
    rng_seed(&r, 42);
    dataset_batch(&ds, idx, N, &t, &r, x, y);
    int flipped = 0;
    for (int s = 0; s < N; s++) {
        int f = x[2 * s] == norm(&t, 11);
        cr_assert_eq(x[2 * s + 1], norm(&t, f ? 10 : 11));
        flipped += f;
    }
    cr_assert(flipped > 900 && flipped < 1100, "%d of %d flipped", flipped, N);
    dataset_free(&ds);
}

/* ---- the real data set ---- */

static void check_real_split(int train, int n, int first_label, int first_image_sum) {
    char probe[256];
    snprintf(probe, sizeof probe, "%s/%s-labels-idx1-ubyte.gz", DATA_DEFAULT_DIR,
             train ? "train" : "t10k");
    if (access(probe, R_OK) != 0) cr_skip_test("%s not installed", DATA_DEFAULT_DIR);
    dataset_t ds;
    auxps_error_t err = {0};
    cr_assert_eq(dataset_load(&ds, DATA_DEFAULT_DIR, train, 0, &err), 0, "%s", err.msg);
    cr_assert(ds.n == n && ds.c == 1 && ds.h == 28 && ds.w == 28);
    cr_assert_eq(ds.classes, 10);
    /* Reference values from Python's gzip module on the same files: the classes are balanced,
     * and the first label and first image's pixel sum pin the byte order of the bodies. */
    int per_class[10] = {0};
    for (int i = 0; i < ds.n; i++) per_class[ds.labels[i]]++;
    for (int k = 0; k < 10; k++) cr_assert_eq(per_class[k], n / 10, "class %d", k);
    cr_assert_eq(ds.labels[0], first_label);
    int sum = 0;
    for (int k = 0; k < 28 * 28; k++) sum += ds.images[k];
    cr_assert_eq(sum, first_image_sum);
    dataset_free(&ds);
}

Test(data, real_fashion_mnist_train_is_60000_balanced_28x28, .timeout = 60) {
    check_real_split(1, 60000, 9, 76247);
    int n = 0;
    auxps_error_t err = {0};
    cr_assert_eq(dataset_count(DATA_DEFAULT_DIR, 1, 0, &n, &err), 0, "%s", err.msg);
    cr_assert_eq(n, 60000);
    cr_assert_eq(dataset_count(DATA_DEFAULT_DIR, 0, 1000, &n, &err), 0, "%s", err.msg);
    cr_assert_eq(n, 1000);
}

Test(data, real_fashion_mnist_test_is_10000_balanced_28x28, .timeout = 60) {
    check_real_split(0, 10000, 9, 33456);
}

/* ---- an opened dataset: images in a cache file, read with pread ---- */

/* The cache directory of a test, and the names in it. */
static const char *cache_dir(char buf[256]) {
    tpath(buf, "cache");
    mkdir(buf, 0700);
    return buf;
}

/* How many entries of dir start with prefix; the last one's path goes to path. */
static int count_files(const char *dir, const char *prefix, char path[512]) {
    DIR *d = opendir(dir);
    cr_assert_not_null(d);
    int count = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (strncmp(e->d_name, prefix, strlen(prefix)) != 0) continue;
        count++;
        if (path != NULL) snprintf(path, 512, "%s/%s", dir, e->d_name);
    }
    closedir(d);
    return count;
}

/* Every sample of the in-memory and the opened dataset, augmented with the same draws, is the
 * same bits. */
static void assert_same_batches(const dataset_t *mem, const dataset_t *opened) {
    cr_assert(mem->n == opened->n && mem->c == opened->c && mem->h == opened->h && mem->w == opened->w);
    cr_assert_eq(mem->classes, opened->classes);
    cr_assert_null(opened->images);
    const size_t sample = (size_t)mem->c * mem->h * mem->w;
    int *idx = malloc(sizeof(int) * (size_t)mem->n), *y1 = malloc(sizeof(int) * (size_t)mem->n);
    int *y2 = malloc(sizeof(int) * (size_t)mem->n);
    float *x1 = malloc(sizeof(float) * sample * mem->n), *x2 = malloc(sizeof(float) * sample * mem->n);
    for (int i = 0; i < mem->n; i++) idx[i] = mem->n - 1 - i;
    const data_transform_t t = {0.25f, 0.5f, 2, 1};
    rng_t r1, r2;
    rng_seed(&r1, 5);
    rng_seed(&r2, 5);
    auxps_error_t err = {0};
    dataset_batch(mem, idx, mem->n, &t, &r1, x1, y1);
    cr_assert_eq(dataset_read(opened, idx, mem->n, &t, &r2, x2, y2, &err), 0, "%s", err.msg);
    cr_assert(memcmp(x1, x2, sizeof(float) * sample * mem->n) == 0, "images differ");
    cr_assert(memcmp(y1, y2, sizeof(int) * mem->n) == 0, "labels differ");
    free(idx); free(y1); free(y2); free(x1); free(x2);
}

static void open_fixture_and_compare(const char *cache) {
    dataset_t mem, opened;
    auxps_error_t err = {0};
    cr_assert_eq(dataset_load(&mem, tmp_dir, 1, 0, &err), 0, "%s", err.msg);
    cr_assert_eq(dataset_open(&opened, tmp_dir, 1, 0, cache, &err), 0, "%s", err.msg);
    assert_same_batches(&mem, &opened);
    dataset_free(&mem);
    dataset_free(&opened);
    cr_assert_null(opened.file);
}

Test(data, open_reads_the_same_batches_as_load_from_a_cache_it_writes_once) {
    char im[256], lb[256], cd[256], cache[512];
    write_random_gz_fixture(tpath(im, "train-images-idx3-ubyte.gz"), tpath(lb, "train-labels-idx1-ubyte.gz"));
    open_fixture_and_compare(cache_dir(cd));
    cr_assert_eq(count_files(cd, "auxps-train-images-idx3-ubyte-", cache), 1, "one cache, no temporary file left");
    cr_assert_eq(file_size(cache), 64 + 50 * 28 * 28, "a 64-byte header and the bodies");
    struct stat before, after;
    cr_assert_eq(stat(cache, &before), 0);
    open_fixture_and_compare(cd);
    cr_assert_eq(stat(cache, &after), 0);
    cr_assert(before.st_ino == after.st_ino && before.st_mtim.tv_nsec == after.st_mtim.tv_nsec,
              "a valid cache is used as it is");
    cr_assert_eq(count_files(cd, "auxps-", NULL), 1);
    assert_no_leaks();
}

Test(data, open_of_plain_files_and_the_test_split_with_a_limit) {
    char im[256], lb[256], cd[256];
    write_fixture(tpath(im, "t10k-images-idx3-ubyte"), tpath(lb, "t10k-labels-idx1-ubyte"), 0);
    dataset_t ds;
    auxps_error_t err = {0};
    cr_assert_eq(dataset_open(&ds, tmp_dir, 0, 2, cache_dir(cd), &err), 0, "%s", err.msg);
    cr_assert(ds.n == 2 && ds.h == FIX_H && ds.w == FIX_W && ds.classes == 6);
    float x[FIX_H * FIX_W];
    int y, i = 1;
    const data_transform_t t = {0.0f, 1.0f / 255.0f, 0, 0};
    cr_assert_eq(dataset_read(&ds, &i, 1, &t, NULL, x, &y, &err), 0, "%s", err.msg);
    for (int k = 0; k < FIX_H * FIX_W; k++) cr_assert_float_eq(x[k], (float)(10 + k), 1e-3);
    cr_assert_eq(y, 0);
    i = 2; /* beyond the limit */
    cr_assert_eq(dataset_read(&ds, &i, 1, &t, NULL, x, &y, &err), AUXPS_ERANGE);
    i = -1;
    cr_assert_eq(dataset_read(&ds, &i, 1, &t, NULL, x, &y, &err), AUXPS_ERANGE);
    cr_assert_eq(count_files(cd, "auxps-t10k-images-idx3-ubyte-", NULL), 1);
    dataset_free(&ds);
    assert_no_leaks();
}

/* A cache cut short, or with a byte changed, no longer matches: it is replaced. */
static void damaged_cache_is_replaced(int cut) {
    char im[256], lb[256], cd[256], cache[512];
    write_random_gz_fixture(tpath(im, "train-images-idx3-ubyte.gz"), tpath(lb, "train-labels-idx1-ubyte.gz"));
    open_fixture_and_compare(cache_dir(cd));
    cr_assert_eq(count_files(cd, "auxps-", cache), 1);
    const size_t size = file_size(cache);
    if (cut) {
        cr_assert_eq(truncate(cache, (off_t)(size - 100)), 0);
    } else {
        FILE *f = fopen(cache, "r+b");
        cr_assert_not_null(f);
        fseek(f, 64 + 1000, SEEK_SET);
        int c = fgetc(f);
        fseek(f, 64 + 1000, SEEK_SET);
        fputc(c ^ 0x10, f);
        fclose(f);
    }
    open_fixture_and_compare(cd);
    cr_assert_eq(file_size(cache), size);
    cr_assert_eq(count_files(cd, "auxps-", NULL), 1);
    assert_no_leaks();
}

Test(data, open_replaces_a_truncated_cache) { damaged_cache_is_replaced(1); }

Test(data, open_replaces_a_cache_whose_body_fails_its_checksum) { damaged_cache_is_replaced(0); }

Test(data, open_of_a_changed_source_writes_a_new_cache) {
    char im[256], lb[256], cd[256];
    write_fixture(tpath(im, "train-images-idx3-ubyte.gz"), tpath(lb, "train-labels-idx1-ubyte.gz"), 1);
    open_fixture_and_compare(cache_dir(cd));
    write_random_gz_fixture(im, lb);
    open_fixture_and_compare(cd);
    cr_assert_eq(count_files(cd, "auxps-train-images-idx3-ubyte-", NULL), 2, "the old cache is not reused");
}

/* A broken source fails as dataset_load does, and leaves neither a cache nor a temporary file. */
static void expect_open_error(const char *cd, int code, const char *names, const char *says) {
    dataset_t ds = {.n = 99};
    auxps_error_t err = {0};
    const int rc = dataset_open(&ds, tmp_dir, 1, 0, cd, &err);
    cr_assert_eq(rc, code, "rc %d (%s), want %d", rc, err.msg, code);
    cr_assert_not_null(strstr(err.msg, names), "message \"%s\" does not name %s", err.msg, names);
    cr_assert_not_null(strstr(err.msg, says), "message \"%s\" does not say %s", err.msg, says);
    cr_assert(ds.n == 0 && ds.labels == NULL && ds.file == NULL);
    assert_no_leaks();
}

Test(data, open_of_a_truncated_gzip_source_is_eformat_and_leaves_no_cache) {
    char im[256], lb[256], cd[256];
    write_random_gz_fixture(tpath(im, "train-images-idx3-ubyte.gz"), tpath(lb, "train-labels-idx1-ubyte.gz"));
    cr_assert_eq(truncate(im, (off_t)(file_size(im) / 2)), 0);
    expect_open_error(cache_dir(cd), AUXPS_EFORMAT, im, "truncated");
    cr_assert_eq(count_files(cd, "auxps-", NULL), 0);
}

Test(data, open_of_a_source_with_a_bad_magic_is_eformat) {
    char im[256], lb[256], cd[256];
    write_fixture(tpath(im, "train-images-idx3-ubyte"), tpath(lb, "train-labels-idx1-ubyte"), 0);
    write_idx(im, 0, 0x801, 1, (uint32_t[]){FIX_N}, fix_labels, FIX_N);
    expect_open_error(cache_dir(cd), AUXPS_EFORMAT, im, "bad magic");
    cr_assert_eq(count_files(cd, "auxps-", NULL), 0);
}

Test(data, open_into_a_missing_cache_dir_is_eio_naming_it) {
    char im[256], lb[256], cd[256];
    write_fixture(tpath(im, "train-images-idx3-ubyte"), tpath(lb, "train-labels-idx1-ubyte"), 0);
    expect_open_error(tpath(cd, "no/such/dir"), AUXPS_EIO, cd, "cannot create the image cache");
}

/* A cache that shrinks under an open dataset makes the read fail with a message, not a crash
 * (reads are pread, not a mapping that would fault). */
Test(data, a_cache_cut_short_after_open_fails_the_read_with_eformat) {
    char im[256], lb[256], cd[256], cache[512];
    write_random_gz_fixture(tpath(im, "train-images-idx3-ubyte.gz"), tpath(lb, "train-labels-idx1-ubyte.gz"));
    dataset_t ds;
    auxps_error_t err = {0};
    cr_assert_eq(dataset_open(&ds, tmp_dir, 1, 0, cache_dir(cd), &err), 0, "%s", err.msg);
    cr_assert_eq(count_files(cd, "auxps-", cache), 1);
    cr_assert_eq(truncate(cache, 64 + 10 * 28 * 28), 0);
    float x[2 * 28 * 28];
    int y[2], idx[2] = {3, 40};
    const data_transform_t t = {0.0f, 1.0f, 0, 0};
    cr_assert_eq(dataset_read(&ds, idx, 2, &t, NULL, x, y, &err), AUXPS_EFORMAT);
    cr_assert_not_null(strstr(err.msg, cache), "message \"%s\" does not name the cache", err.msg);
    cr_assert_not_null(strstr(err.msg, "image 40"), "message \"%s\"", err.msg);
    dataset_free(&ds);
    assert_no_leaks();
}

Test(data, open_and_read_refuse_null_arguments) {
    dataset_t ds;
    auxps_error_t err = {0};
    cr_assert_eq(dataset_open(NULL, tmp_dir, 1, 0, NULL, &err), AUXPS_EINVAL);
    cr_assert_eq(dataset_open(&ds, NULL, 1, 0, NULL, &err), AUXPS_EINVAL);
    dataset_t empty = {0};
    float x[1];
    int y[1], i = 0;
    const data_transform_t t = {0.0f, 1.0f, 0, 0};
    cr_assert_eq(dataset_read(&empty, &i, 1, &t, NULL, x, y, &err), AUXPS_EINVAL);
}

/* Two processes that open the same split at once each get a whole cache: the file is written
 * under a temporary name and renamed into place. */
Test(data, concurrent_opens_of_one_split_each_get_a_whole_cache, .timeout = 60) {
    char im[256], lb[256], cd[256];
    write_random_gz_fixture(tpath(im, "train-images-idx3-ubyte.gz"), tpath(lb, "train-labels-idx1-ubyte.gz"));
    cache_dir(cd);
    enum { KIDS = 4 };
    pid_t kids[KIDS];
    for (int k = 0; k < KIDS; k++) {
        kids[k] = fork();
        cr_assert_neq(kids[k], -1);
        if (kids[k] == 0) {
            int bad = 0;
            for (int round = 0; round < 5 && !bad; round++) {
                dataset_t mem, ds;
                if (dataset_load(&mem, tmp_dir, 1, 0, NULL) != 0 || dataset_open(&ds, tmp_dir, 1, 0, cd, NULL) != 0) {
                    bad = 1;
                    break;
                }
                float x[28 * 28], xm[28 * 28];
                int y, ym;
                const data_transform_t t = {0.0f, 1.0f, 0, 0};
                for (int i = 0; i < mem.n && !bad; i++) {
                    dataset_batch(&mem, &i, 1, &t, NULL, xm, &ym);
                    bad = dataset_read(&ds, &i, 1, &t, NULL, x, &y, NULL) != 0 || memcmp(x, xm, sizeof x) != 0 ||
                          y != ym;
                }
                dataset_free(&mem);
                dataset_free(&ds);
            }
            _exit(bad);
        }
    }
    for (int k = 0; k < KIDS; k++) {
        int status = 0;
        cr_assert_eq(waitpid(kids[k], &status, 0), kids[k]);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child %d failed", k);
    }
    cr_assert_eq(count_files(cd, "auxps-", NULL), 1, "one cache, no temporary file left");
}
