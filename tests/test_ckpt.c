/* test_ckpt.c - checkpoint files: round trips, the byte layout of docs/CHECKPOINT.md, keep-K
 * rotation, fallback past corrupt, truncated, mislabelled and hostile files (counting the
 * reports), the "no checkpoint" result, crash leftovers, and argument checks. */
#include <criterion/criterion.h>
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "ckpt.h"
#include "util.h"

/* Offsets and sizes from docs/CHECKPOINT.md, written out here so that the test checks the
 * document, not ckpt.c's own constants. */
enum { O_VERSION = 8, O_KIND = 12, O_STEP = 16, O_TIME = 24, O_SIZE = 32, O_PAYLOAD = 40, OVERHEAD = 44 };

enum { KIND = CKPT_KIND_NODE, PAYLOAD = 1000 };

static const char *const PREFIX = "node-0";

/* Each test runs in its own process, so this per-test temp dir needs no locking. */
static char tmp_dir[64];

static void make_tmp_dir(void) { util_tmpdir_make(tmp_dir, "ckpt"); }

static void remove_tmp_dir(void) { util_tmpdir_remove(tmp_dir); }

TestSuite(ckpt, .init = make_tmp_dir, .fini = remove_tmp_dir);

/* ---- helpers ---- */

static const char *ckpt_path(char buf[512], const char *prefix, uint64_t step) {
    snprintf(buf, 512, "%s/%s-%020" PRIu64 ".ckpt", tmp_dir, prefix, step);
    return buf;
}

static int exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

/* Payload bytes that differ from step to step, so a fallback is visible in the contents. */
static void fill_payload(uint8_t *p, size_t n, uint64_t step) {
    util_rng_t r = {step * 7919 + 1};
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)util_rng_next(&r);
}

static void write_step(const char *prefix, uint64_t step, int keep) {
    uint8_t p[PAYLOAD];
    fill_payload(p, sizeof p, step);
    auxps_error_t err = {0};
    int rc = ckpt_write(tmp_dir, prefix, KIND, step, p, sizeof p, keep, &err);
    cr_assert_eq(rc, 0, "ckpt_write step %" PRIu64 ": %s", step, err.msg);
}

static void expect_payload_of(const ckpt_t *ck, uint64_t step) {
    uint8_t p[PAYLOAD];
    fill_payload(p, sizeof p, step);
    cr_assert_eq(ck->step, step);
    cr_assert_eq(ck->size, sizeof p);
    cr_assert_eq(memcmp(ck->payload, p, sizeof p), 0, "payload of step %" PRIu64 " differs", step);
}

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
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
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

static uint32_t crc_of(const uint8_t *buf, size_t len) {
    return (uint32_t)crc32(crc32(0L, Z_NULL, 0), buf, (uInt)len);
}

/* Recomputes the trailing CRC-32 so that a tampered file passes the checksum. */
static void fix_crc(uint8_t *buf, size_t len) { set32(buf + len - 4, crc_of(buf, len - 4)); }

static void flip_byte(const char *path, size_t off) {
    size_t len;
    uint8_t *b = read_all(path, &len);
    cr_assert_lt(off, len);
    b[off] ^= 0x5a;
    write_all(path, b, len);
    free(b);
}

static uint64_t now_ms(void) {
    struct timespec ts;
    cr_assert_eq(clock_gettime(CLOCK_REALTIME, &ts), 0);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* What the report callback saw. */
typedef struct {
    int calls;
    char path[512], reason[256];
} seen_t;

static void record(void *data, const char *path, const char *reason) {
    seen_t *s = data;
    s->calls++;
    snprintf(s->path, sizeof s->path, "%s", path);
    snprintf(s->reason, sizeof s->reason, "%s", reason);
}

static int load(ckpt_t *ck, uint32_t kind, seen_t *seen, auxps_error_t *err) {
    return ckpt_load_newest(tmp_dir, PREFIX, kind, ck, record, seen, err);
}

/* ---- round trips ---- */

Test(ckpt, write_then_load_returns_the_same_bytes_step_and_time) {
    uint8_t p[PAYLOAD];
    fill_payload(p, sizeof p, 42);
    auxps_error_t err = {0};
    const uint64_t before = now_ms();
    cr_assert_eq(ckpt_write(tmp_dir, PREFIX, KIND, 42, p, sizeof p, 3, &err), 0, "%s", err.msg);
    const uint64_t after = now_ms();

    ckpt_t ck;
    seen_t seen = {0};
    cr_assert_eq(load(&ck, KIND, &seen, &err), 0, "%s", err.msg);
    expect_payload_of(&ck, 42);
    cr_assert(ck.time_ms >= before && ck.time_ms <= after, "time %" PRIu64 " not in [%" PRIu64 ", %" PRIu64 "]",
              ck.time_ms, before, after);
    char want[512];
    cr_assert_str_eq(ck.path, ckpt_path(want, PREFIX, 42));
    cr_assert_eq(seen.calls, 0);
    ckpt_release(&ck);
    cr_assert_null(ck.payload);
    ckpt_release(&ck); /* safe twice */
}

Test(ckpt, zero_size_payload_round_trips) {
    auxps_error_t err = {0};
    cr_assert_eq(ckpt_write(tmp_dir, PREFIX, KIND, 7, NULL, 0, 1, &err), 0, "%s", err.msg);
    char path[512];
    size_t len;
    uint8_t *b = read_all(ckpt_path(path, PREFIX, 7), &len);
    cr_assert_eq(len, OVERHEAD);
    cr_assert_eq(le32(b + OVERHEAD - 4), crc_of(b, OVERHEAD - 4), "the CRC of an empty payload is wrong");
    free(b);

    ckpt_t ck;
    cr_assert_eq(load(&ck, KIND, NULL, &err), 0, "%s", err.msg);
    cr_assert_eq(ck.step, 7);
    cr_assert_eq(ck.size, 0);
    cr_assert_not_null(ck.payload);
    ckpt_release(&ck);
}

Test(ckpt, file_bytes_follow_the_documented_layout) {
    const uint8_t p[5] = {1, 2, 3, 4, 5};
    auxps_error_t err = {0};
    const uint64_t step = 0x0102030405060708ull;
    cr_assert_eq(ckpt_write(tmp_dir, PREFIX, 0xA1B2C3D4u, step, p, sizeof p, 1, &err), 0, "%s", err.msg);
    char path[512];
    size_t len;
    uint8_t *b = read_all(ckpt_path(path, PREFIX, step), &len);
    cr_assert_eq(len, OVERHEAD + sizeof p);
    cr_assert_eq(memcmp(b, "AUXPSCKP", 8), 0);
    cr_assert_eq(le32(b + O_VERSION), 1);
    cr_assert_eq(le32(b + O_KIND), 0xA1B2C3D4u);
    cr_assert_eq(le64(b + O_STEP), step);
    cr_assert_gt(le64(b + O_TIME), 0);
    cr_assert_eq(le64(b + O_SIZE), sizeof p);
    cr_assert_eq(memcmp(b + O_PAYLOAD, p, sizeof p), 0);
    cr_assert_eq(le32(b + len - 4), crc_of(b, len - 4));
    free(b);
}

/* ---- rotation ---- */

Test(ckpt, rotation_keeps_exactly_the_k_newest) {
    for (uint64_t s = 1; s <= 7; s++) write_step(PREFIX, s * 10, 3);
    uint64_t steps[16];
    auxps_error_t err = {0};
    cr_assert_eq(ckpt_list(tmp_dir, PREFIX, steps, 16, &err), 3, "%s", err.msg);
    cr_assert_eq(steps[0], 70);
    cr_assert_eq(steps[1], 60);
    cr_assert_eq(steps[2], 50);
    char path[512];
    cr_assert(!exists(ckpt_path(path, PREFIX, 40)));
}

Test(ckpt, rotation_leaves_other_prefixes_and_foreign_files_alone) {
    const char *const foreign[] = {
        "node-0-1.ckpt",                           /* too few digits */
        "node-0-00000000000000000001.ckpt.bak",    /* another suffix */
        "node-0-99999999999999999999.ckpt",        /* digits beyond UINT64_MAX */
        "xnode-0-00000000000000000001.ckpt",       /* another prefix that contains this one */
        "notes.txt",
    };
    char path[512];
    for (size_t i = 0; i < sizeof foreign / sizeof foreign[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", tmp_dir, foreign[i]);
        write_all(path, (const uint8_t *)"x", 1);
    }
    write_step("node", 1, 1);   /* "node-" is a prefix of "node-0-" as a string */
    write_step("node-1", 1, 1);
    for (uint64_t s = 1; s <= 4; s++) write_step(PREFIX, s, 1);

    cr_assert(exists(ckpt_path(path, "node", 1)));
    cr_assert(exists(ckpt_path(path, "node-1", 1)));
    for (size_t i = 0; i < sizeof foreign / sizeof foreign[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", tmp_dir, foreign[i]);
        cr_assert(exists(path), "rotation removed %s", foreign[i]);
    }
    uint64_t steps[4];
    auxps_error_t err = {0};
    cr_assert_eq(ckpt_list(tmp_dir, PREFIX, steps, 4, &err), 1, "%s", err.msg);
    cr_assert_eq(steps[0], 4);
    cr_assert_eq(ckpt_list(tmp_dir, "node", steps, 4, &err), 1, "%s", err.msg);
}

Test(ckpt, writing_an_older_step_removes_the_newer_ones) {
    for (uint64_t s = 1; s <= 4; s++) write_step(PREFIX, s, 10);
    write_step(PREFIX, 2, 10); /* a run resumed from step 2 abandons steps 3 and 4 */
    uint64_t steps[8];
    auxps_error_t err = {0};
    cr_assert_eq(ckpt_list(tmp_dir, PREFIX, steps, 8, &err), 2, "%s", err.msg);
    cr_assert_eq(steps[0], 2);
    cr_assert_eq(steps[1], 1);
}

Test(ckpt, list_returns_the_count_beyond_max) {
    for (uint64_t s = 1; s <= 5; s++) write_step(PREFIX, s, 10);
    uint64_t steps[2] = {0, 0};
    auxps_error_t err = {0};
    cr_assert_eq(ckpt_list(tmp_dir, PREFIX, steps, 2, &err), 5, "%s", err.msg);
    cr_assert_eq(steps[0], 5);
    cr_assert_eq(steps[1], 4);
    cr_assert_eq(ckpt_list(tmp_dir, PREFIX, NULL, 0, &err), 5);
}

/* ---- fallback ---- */

Test(ckpt, corrupt_newest_falls_back_and_is_reported_once) {
    write_step(PREFIX, 1, 5);
    write_step(PREFIX, 2, 5);
    char path[512];
    flip_byte(ckpt_path(path, PREFIX, 2), O_PAYLOAD + 17);

    ckpt_t ck;
    seen_t seen = {0};
    auxps_error_t err = {0};
    cr_assert_eq(load(&ck, KIND, &seen, &err), 0, "%s", err.msg);
    expect_payload_of(&ck, 1);
    cr_assert_eq(seen.calls, 1);
    cr_assert_str_eq(seen.path, path);
    cr_assert(strncmp(seen.reason, "checksum mismatch", 17) == 0, "reason: %s", seen.reason);
    ckpt_release(&ck);
}

Test(ckpt, truncated_newest_falls_back) {
    write_step(PREFIX, 1, 5);
    write_step(PREFIX, 2, 5);
    char path[512];
    cr_assert_eq(truncate(ckpt_path(path, PREFIX, 2), OVERHEAD + PAYLOAD / 2), 0);

    ckpt_t ck;
    seen_t seen = {0};
    auxps_error_t err = {0};
    cr_assert_eq(load(&ck, KIND, &seen, &err), 0, "%s", err.msg);
    expect_payload_of(&ck, 1);
    cr_assert_eq(seen.calls, 1);
    cr_assert_str_eq(seen.path, path);
    cr_assert(strncmp(seen.reason, "truncated", 9) == 0, "reason: %s", seen.reason);
    ckpt_release(&ck);
}

Test(ckpt, file_shorter_than_a_header_falls_back) {
    write_step(PREFIX, 1, 5);
    char path[512];
    write_all(ckpt_path(path, PREFIX, 2), (const uint8_t *)"AUXPSCKP", 8);

    ckpt_t ck;
    seen_t seen = {0};
    auxps_error_t err = {0};
    cr_assert_eq(load(&ck, KIND, &seen, &err), 0, "%s", err.msg);
    expect_payload_of(&ck, 1);
    cr_assert_eq(seen.calls, 1);
    cr_assert(strncmp(seen.reason, "truncated", 9) == 0, "reason: %s", seen.reason);
    ckpt_release(&ck);
}

/* A size field that claims far more than the file holds, under a valid CRC, must be refused
 * from the real file size alone, before anything is allocated for it. */
Test(ckpt, huge_stated_payload_size_is_rejected_without_trusting_it) {
    write_step(PREFIX, 1, 5);
    write_step(PREFIX, 2, 5);
    char path[512];
    size_t len;
    uint8_t *b = read_all(ckpt_path(path, PREFIX, 2), &len);
    set64(b + O_SIZE, UINT64_MAX - 8);
    fix_crc(b, len);
    write_all(path, b, len);
    free(b);

    ckpt_t ck;
    seen_t seen = {0};
    auxps_error_t err = {0};
    cr_assert_eq(load(&ck, KIND, &seen, &err), 0, "%s", err.msg);
    expect_payload_of(&ck, 1);
    cr_assert_eq(seen.calls, 1);
    cr_assert(strncmp(seen.reason, "truncated", 9) == 0, "reason: %s", seen.reason);
    ckpt_release(&ck);
}

Test(ckpt, all_corrupt_gives_a_negative_error_naming_the_count) {
    for (uint64_t s = 1; s <= 3; s++) write_step(PREFIX, s, 5);
    char path[512];
    for (uint64_t s = 1; s <= 3; s++) flip_byte(ckpt_path(path, PREFIX, s), O_PAYLOAD);

    ckpt_t ck;
    seen_t seen = {0};
    auxps_error_t err = {0};
    cr_assert_eq(load(&ck, KIND, &seen, &err), AUXPS_ECHECKSUM);
    cr_assert_eq(seen.calls, 3);
    cr_assert_str_eq(seen.path, ckpt_path(path, PREFIX, 1), "the oldest is reported last");
    cr_assert_not_null(strstr(err.msg, "all 3 checkpoints"), "%s", err.msg);
    cr_assert_null(ck.payload);
}

Test(ckpt, wrong_kind_is_rejected) {
    write_step(PREFIX, 1, 5);
    ckpt_t ck;
    seen_t seen = {0};
    auxps_error_t err = {0};
    cr_assert_eq(load(&ck, CKPT_KIND_COORD, &seen, &err), AUXPS_EFORMAT);
    cr_assert_eq(seen.calls, 1);
    cr_assert(strncmp(seen.reason, "wrong kind", 10) == 0, "reason: %s", seen.reason);
    cr_assert_null(ck.payload);
}

Test(ckpt, other_version_is_rejected_with_the_version_code) {
    write_step(PREFIX, 1, 5);
    char path[512];
    size_t len;
    uint8_t *b = read_all(ckpt_path(path, PREFIX, 1), &len);
    set32(b + O_VERSION, 2);
    fix_crc(b, len);
    write_all(path, b, len);
    free(b);

    ckpt_t ck;
    seen_t seen = {0};
    auxps_error_t err = {0};
    cr_assert_eq(load(&ck, KIND, &seen, &err), AUXPS_EVERSION, "%s", err.msg);
    cr_assert_eq(seen.calls, 1);
}

/* A file renamed to another step's name holds a valid CRC but lies about where it belongs. */
Test(ckpt, step_in_header_must_match_the_name) {
    write_step(PREFIX, 1, 5);
    write_step(PREFIX, 2, 5);
    char from[512], to[512];
    cr_assert_eq(rename(ckpt_path(from, PREFIX, 1), ckpt_path(to, PREFIX, 3)), 0);

    ckpt_t ck;
    seen_t seen = {0};
    auxps_error_t err = {0};
    cr_assert_eq(load(&ck, KIND, &seen, &err), 0, "%s", err.msg);
    expect_payload_of(&ck, 2);
    cr_assert_eq(seen.calls, 1);
    cr_assert_str_eq(seen.path, to);
    cr_assert(strncmp(seen.reason, "step mismatch", 13) == 0, "reason: %s", seen.reason);
    ckpt_release(&ck);
}

/* ---- no checkpoint ---- */

Test(ckpt, empty_dir_means_no_checkpoint) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s-00000000000000000001.ckpt.tmp", tmp_dir, PREFIX);
    write_all(path, (const uint8_t *)"partial", 7); /* a temporary file is not a checkpoint */
    ckpt_t ck;
    seen_t seen = {0};
    auxps_error_t err = {0};
    cr_assert_eq(load(&ck, KIND, &seen, &err), CKPT_NONE, "%s", err.msg);
    cr_assert_eq(seen.calls, 0);
    cr_assert_null(ck.payload);
}

Test(ckpt, missing_dir_means_no_checkpoint) {
    char dir[256];
    snprintf(dir, sizeof dir, "%s/never-made", tmp_dir);
    ckpt_t ck;
    auxps_error_t err = {0};
    cr_assert_eq(ckpt_load_newest(dir, PREFIX, KIND, &ck, NULL, NULL, &err), CKPT_NONE, "%s", err.msg);
    cr_assert_eq(ckpt_list(dir, PREFIX, NULL, 0, &err), 0);
    cr_assert(!exists(dir), "loading must not create the directory");
}

/* ---- crashes and failures ---- */

Test(ckpt, leftover_temp_file_is_ignored_by_load_and_removed_by_the_next_write) {
    write_step(PREFIX, 1, 5);
    char tmp[512];
    snprintf(tmp, sizeof tmp, "%s/%s-00000000000000000002.ckpt.tmp", tmp_dir, PREFIX);
    write_all(tmp, (const uint8_t *)"AUXPSCKP half a checkpoint", 26); /* a crash mid-write */

    ckpt_t ck;
    seen_t seen = {0};
    auxps_error_t err = {0};
    cr_assert_eq(load(&ck, KIND, &seen, &err), 0, "%s", err.msg);
    expect_payload_of(&ck, 1);
    cr_assert_eq(seen.calls, 0, "a temporary file was looked at: %s", seen.path);
    ckpt_release(&ck);

    write_step(PREFIX, 3, 5);
    cr_assert(!exists(tmp), "the next write left the stale temporary file");
    char path[512];
    cr_assert(exists(ckpt_path(path, PREFIX, 1)));
}

Test(ckpt, failed_write_leaves_previous_checkpoints_untouched) {
    write_step(PREFIX, 1, 1);
    char path[512], tmp[512];
    size_t len0, len1;
    uint8_t *before = read_all(ckpt_path(path, PREFIX, 1), &len0);
    /* A directory where the temporary file goes makes the create fail. */
    snprintf(tmp, sizeof tmp, "%s/%s-00000000000000000002.ckpt.tmp", tmp_dir, PREFIX);
    cr_assert_eq(mkdir(tmp, 0755), 0);

    uint8_t p[PAYLOAD];
    fill_payload(p, sizeof p, 2);
    auxps_error_t err = {0};
    cr_assert_eq(ckpt_write(tmp_dir, PREFIX, KIND, 2, p, sizeof p, 1, &err), AUXPS_EIO);
    cr_assert_not_null(strstr(err.msg, tmp), "the message does not name the file: %s", err.msg);
    cr_assert(!exists(ckpt_path(path, PREFIX, 2)));
    uint8_t *after = read_all(ckpt_path(path, PREFIX, 1), &len1);
    cr_assert(len0 == len1 && memcmp(before, after, len0) == 0, "step 1 changed");
    free(before);
    free(after);
}

Test(ckpt, write_creates_the_directory_and_its_missing_parents) {
    char dir[256], deep[256], file[256], under_file[256];
    snprintf(dir, sizeof dir, "%s/ckpts", tmp_dir);
    snprintf(deep, sizeof deep, "%s/a/b/c/", tmp_dir);
    auxps_error_t err = {0};
    cr_assert_eq(ckpt_write(dir, "coord", CKPT_KIND_COORD, 1, "x", 1, 1, &err), 0, "%s", err.msg);
    struct stat st;
    cr_assert_eq(stat(dir, &st), 0);
    cr_assert(S_ISDIR(st.st_mode));
    cr_assert_eq(st.st_mode & 0777 & ~0755, 0);
    cr_assert_eq(ckpt_write(deep, "coord", CKPT_KIND_COORD, 1, "x", 1, 1, &err), 0, "%s", err.msg);
    cr_assert_eq(ckpt_list(deep, "coord", NULL, 0, &err), 1);
    /* A regular file in the way is an error that names the directory. */
    snprintf(file, sizeof file, "%s/plain", tmp_dir);
    snprintf(under_file, sizeof under_file, "%s/plain/x/y", tmp_dir);
    FILE *f = fopen(file, "w");
    cr_assert_not_null(f);
    fclose(f);
    cr_assert_eq(ckpt_write(under_file, "coord", CKPT_KIND_COORD, 1, "x", 1, 1, &err), AUXPS_EIO);
    cr_assert_not_null(strstr(err.msg, "/plain"), "%s", err.msg);
}

/* ---- arguments ---- */

Test(ckpt, bad_prefix_is_refused) {
    char long_prefix[CKPT_PREFIX_MAX + 2];
    memset(long_prefix, 'a', sizeof long_prefix - 1);
    long_prefix[sizeof long_prefix - 1] = '\0';
    const char *const bad[] = {"", "a/b", "../x", long_prefix, "node 0", NULL};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        auxps_error_t err = {0};
        ckpt_t ck;
        cr_assert_eq(ckpt_write(tmp_dir, bad[i], KIND, 1, "x", 1, 1, &err), AUXPS_EINVAL, "prefix %zu", i);
        cr_assert_eq(ckpt_load_newest(tmp_dir, bad[i], KIND, &ck, NULL, NULL, &err), AUXPS_EINVAL);
        cr_assert_eq(ckpt_list(tmp_dir, bad[i], NULL, 0, &err), AUXPS_EINVAL);
    }
    long_prefix[CKPT_PREFIX_MAX] = '\0'; /* exactly at the limit */
    auxps_error_t err = {0};
    cr_assert_eq(ckpt_write(tmp_dir, long_prefix, KIND, 1, "x", 1, 1, &err), 0, "%s", err.msg);
    cr_assert_eq(ckpt_list(tmp_dir, long_prefix, NULL, 0, &err), 1);
}

Test(ckpt, keep_out_of_range_is_refused) {
    auxps_error_t err = {0};
    cr_assert_eq(ckpt_write(tmp_dir, PREFIX, KIND, 1, "x", 1, 0, &err), AUXPS_EINVAL);
    cr_assert_eq(ckpt_write(tmp_dir, PREFIX, KIND, 1, "x", 1, CKPT_MAX_KEEP + 1, &err), AUXPS_EINVAL);
    cr_assert_eq(ckpt_list(tmp_dir, PREFIX, NULL, 0, &err), 0, "a refused write left a file");
}

/* The size is checked before the payload is read, so a 1-byte buffer is enough to ask. */
Test(ckpt, payload_over_one_gib_is_refused) {
    auxps_error_t err = {0};
    cr_assert_eq(ckpt_write(tmp_dir, PREFIX, KIND, 1, "x", (size_t)CKPT_MAX_PAYLOAD + 1, 1, &err), AUXPS_ERANGE);
    cr_assert_eq(ckpt_write(tmp_dir, PREFIX, KIND, 1, NULL, 1, 1, &err), AUXPS_EINVAL);
    cr_assert_eq(ckpt_list(tmp_dir, PREFIX, NULL, 0, &err), 0, "a refused write left a file");
}
