/* seeds.c - writes the binary seed corpora of the fuzz harnesses (tests/fuzz/corpus/<target>/)
 * with the project's own writers: wire messages from wire_encode and wire_pack_codes, IDX files
 * (plain and gzip), a checkpoint from ckpt_write and exported models from export_save, plus a
 * few edge cases each. The config corpus is copied from configs/ by the Makefile.
 *
 * Usage: seeds CORPUS_DIR. Deterministic: the same build writes the same bytes (the checkpoint's
 * time field is zeroed and its CRC recomputed), so regenerating changes nothing that is
 * committed unless a format changed. Exits 1 with a message on any failure. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "ckpt.h"
#include "export.h"
#include "model.h"
#include "wire.h"

static const char *root;

static void fail(const char *what, const char *detail) {
    fprintf(stderr, "seeds: %s: %s\n", what, detail);
    exit(1);
}

static void put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void put_be32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (24 - 8 * i));
}

static void save(const char *target, const char *name, const void *data, size_t size) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", root, target);
    if (mkdir(path, 0755) != 0 && errno != EEXIST) fail(path, strerror(errno));
    snprintf(path, sizeof path, "%s/%s/%s", root, target, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0) fail(path, strerror(errno));
}

static uint8_t *slurp(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) fail(path, strerror(errno));
    uint8_t *buf = malloc(1 << 20);
    if (buf == NULL) fail(path, "no memory");
    *size = fread(buf, 1, 1 << 20, f);
    fclose(f);
    return buf;
}

/* ---- wire: [flags] then frames, each [u32 length][bytes] (fuzz_wire.c) ---- */

typedef struct {
    uint8_t buf[8192];
    size_t n;
} frames_t;

static void frame(frames_t *f, const void *data, size_t size) {
    if (f->n + 4 + size > sizeof f->buf) fail("wire", "seed too large");
    put_u32(f->buf + f->n, (uint32_t)size);
    memcpy(f->buf + f->n + 4, data, size);
    f->n += 4 + size;
}

/* Encodes m as [route] header [payload] and saves it. */
static void wire_seed(const char *name, const wire_msg_t *m, const char *route) {
    frames_t f = {.buf = {route ? 1 : 0}, .n = 1};
    void *hdr;
    size_t size;
    auxps_error_t e = {0};
    if (wire_encode(m, &hdr, &size, &e) != 0) fail(name, e.msg);
    if (route) frame(&f, route, strlen(route));
    frame(&f, hdr, size);
    if (wire_has_payload(m)) frame(&f, m->payload, m->payload_size);
    free(hdr);
    save("wire", name, f.buf, f.n);
}

static void wire_seeds(void) {
    wire_msg_t m;
    float values[64];
    uint8_t codes[64], packed[256];
    uint32_t idx[4] = {7, 3, 11, 0};
    for (int i = 0; i < 64; i++) values[i] = (float)i * 0.5f - 8.0f, codes[i] = (uint8_t)(i % 2);
    wire_shard_t shards[2] = {{0, "tcp://127.0.0.1:5601", 0, 600, 0, 40},
                              {1, "tcp://127.0.0.1:5602", 600, 400, 40, 0}};
    wire_seg_t segs[3] = {{20, 2, -1.0f, 2.0f / 3.0f}, {4, 32, 0.0f, 0.0f}, {9, 1, -0.5f, 1.0f}};
    auxps_error_t e = {0};
    const char *route = "\x00\x6b\x8b\x45\x67";

    memset(&m, 0, sizeof m);
    m.type = WIRE_HELLO;
    m.hello = (wire_hello_t){.role = WIRE_ROLE_NODE, .encodings = 7};
    strcpy(m.hello.name, "node:4242");
    strcpy(m.hello.endpoint, "tcp://127.0.0.1:5601");
    wire_seed("hello-node", &m, route);
    m.hello.role = WIRE_ROLE_WORKER, m.hello.endpoint[0] = '\0', m.hello.encodings = 1;
    wire_seed("hello-worker", &m, NULL);

    memset(&m, 0, sizeof m);
    m.type = WIRE_WELCOME;
    m.rid = 1;
    m.welcome = (wire_welcome_t){.role = WIRE_ROLE_NODE, .id = 1, .consistency = WIRE_CONS_SSP,
                                 .staleness = 2, .num_workers = 2, .num_params = 1000, .num_stats = 40,
                                 .seed = 1, .stream_seed = 99, .heartbeat_ms = 1000, .timeout_ms = 10000,
                                 .shards = shards, .nshards = 2,
                                 .config = "[model]\narch = mlp\naux = false\n[train]\nepochs = 1\n"};
    wire_seed("welcome", &m, NULL);

#define SIMPLE(nm, T, field, ...)                 \
    memset(&m, 0, sizeof m);                      \
    m.type = T;                                   \
    m.rid = 7;                                    \
    m.field = __VA_ARGS__;                        \
    wire_seed(nm, &m, NULL);
    SIMPLE("node-ready", WIRE_NODE_READY, node_ready, (wire_node_ready_t){1, 600, 400, 40, 0, 3});
    SIMPLE("lease-req", WIRE_LEASE_REQ, lease_req, (wire_lease_req_t){2});
    SIMPLE("lease-range", WIRE_LEASE, lease, (wire_lease_t){2, 5, 0, WIRE_LEASE_RANGE, 640, 128, 30000});
    SIMPLE("lease-wait", WIRE_LEASE, lease, (wire_lease_t){2, 0, 0, WIRE_LEASE_WAIT, 0, 0, 500});
    SIMPLE("chunk-done", WIRE_CHUNK_DONE, chunk_done, (wire_chunk_done_t){2, 5, 0, 128, 40});
    SIMPLE("pull-kbit", WIRE_PULL, pull, (wire_pull_t){2, 0, WIRE_VEC_PARAMS, 0, 600, 4, WIRE_ENC_KBIT});
    SIMPLE("pull-stats", WIRE_PULL, pull, (wire_pull_t){WIRE_ID_COORD, 0, WIRE_VEC_STATS, 0, 40, 0, WIRE_ENC_F32});
    SIMPLE("push-ack", WIRE_PUSH_ACK, push_ack, (wire_push_ack_t){0, WIRE_VEC_PARAMS, 12, 3});
    SIMPLE("progress", WIRE_PROGRESS, progress, (wire_progress_t){2, 5, 0, 40, 128, 290.5, 301.25, 40, 44, 1});
    SIMPLE("heartbeat-node", WIRE_HEARTBEAT, heartbeat, (wire_heartbeat_t){WIRE_ROLE_NODE, 1});
    SIMPLE("bye", WIRE_BYE, bye, (wire_bye_t){WIRE_ROLE_WORKER, 2, WIRE_ERR_SHUTTING_DOWN});
    SIMPLE("eval-req", WIRE_EVAL_REQ, eval_req, (wire_eval_req_t){1, 0, WIRE_SPLIT_TEST, 0, 500});
    SIMPLE("eval-rep", WIRE_EVAL_REP, eval_rep, (wire_eval_rep_t){1, 2, 500, 400.5, 300, 310, 12});
    SIMPLE("done", WIRE_DONE, done, (wire_done_t){WIRE_DONE_FINISHED, 1, 470});
    SIMPLE("membership", WIRE_MEMBERSHIP, membership, (wire_membership_t){2, 1, 33});
    SIMPLE("node-stats", WIRE_NODE_STATS, node_stats, (wire_node_stats_t){1, 10, 10, 20, 4096, 8192, 1, 2, 8, 1795000000000ull});
#undef SIMPLE
    m = wire_heartbeat(WIRE_ROLE_COORD, WIRE_ID_COORD);
    wire_seed("heartbeat-coord", &m, route);

    memset(&m, 0, sizeof m);
    m.type = WIRE_ERROR;
    m.rid = 9;
    m.error.code = WIRE_ERR_OUT_OF_RANGE;
    strcpy(m.error.text, "PULL.offset 900 is outside shard 1 [600, 1000)");
    wire_seed("error", &m, route);

    memset(&m, 0, sizeof m);
    m.type = WIRE_LEASE;
    m.lease = (wire_lease_t){2, 6, 1, WIRE_LEASE_LIST, 0, 4, 30000};
    m.payload = idx, m.payload_size = sizeof idx;
    wire_seed("lease-list", &m, NULL);

    memset(&m, 0, sizeof m);
    m.type = WIRE_PULL_REP;
    size_t bytes = wire_segs_bytes(segs, 3);
    if (wire_pack_codes(segs, 3, codes, values, packed, bytes, &e) != 0) fail("pack", e.msg);
    m.pull_rep = (wire_pull_rep_t){.shard = 0, .vec = WIRE_VEC_PARAMS, .offset = 100, .length = 33,
                                   .version = 12, .min_clock = 3, .encoding = WIRE_ENC_KBIT,
                                   .segs = segs, .nsegs = 3};
    m.payload = packed, m.payload_size = bytes;
    wire_seed("pull-rep-kbit", &m, route);
    m.pull_rep.encoding = WIRE_ENC_F32, m.pull_rep.segs = NULL, m.pull_rep.nsegs = 0;
    m.pull_rep.length = 16, m.payload = values, m.payload_size = 64;
    wire_seed("pull-rep-f32", &m, NULL);

    memset(&m, 0, sizeof m);
    m.type = WIRE_PUSH;
    m.push = (wire_push_t){.worker = 2, .shard = 0, .offset = 0, .length = 16, .clock = 4, .version = 11,
                           .samples = 64, .encoding = WIRE_ENC_F32};
    m.payload = values, m.payload_size = 64;
    wire_seed("push-f32", &m, route);
    wire_seg_t q8[2] = {{10, 8, -2.0f, 0.015625f}, {6, 32, 0.0f, 0.0f}};
    bytes = wire_segs_bytes(q8, 2);
    if (wire_pack_codes(q8, 2, codes, values, packed, bytes, &e) != 0) fail("pack", e.msg);
    m.push.encoding = WIRE_ENC_Q8, m.push.segs = q8, m.push.nsegs = 2;
    m.payload = packed, m.payload_size = bytes;
    wire_seed("push-q8", &m, NULL);

    memset(&m, 0, sizeof m);
    m.type = WIRE_STATS_PUSH;
    m.stats_push = (wire_stats_push_t){2, 0, 8, 8, 4, WIRE_STATS_AVERAGE, 64};
    m.payload = values, m.payload_size = 32;
    wire_seed("stats-push", &m, NULL);

    /* Edge cases: no header, an extra frame, a routing id too long, a foreign header. */
    frames_t f = {.buf = {0}, .n = 1};
    frame(&f, "", 0);
    save("wire", "edge-empty-header", f.buf, f.n);
    f.n = 1;
    m = wire_heartbeat(WIRE_ROLE_WORKER, 3);
    void *hdr;
    if (wire_encode(&m, &hdr, &bytes, &e) != 0) fail("heartbeat", e.msg);
    frame(&f, hdr, bytes);
    frame(&f, "x", 1);
    frame(&f, "y", 1);
    save("wire", "edge-extra-frames", f.buf, f.n);
    char long_route[300];
    memset(long_route, 'r', sizeof long_route);
    f = (frames_t){.buf = {1}, .n = 1};
    frame(&f, long_route, sizeof long_route);
    frame(&f, hdr, bytes);
    save("wire", "edge-long-route", f.buf, f.n);
    free(hdr);
    static const uint8_t foreign[] = {0x94, 0xa4, 'A', 'X', 'P', 'Z', 0x02, 0x0d, 0x00};
    f = (frames_t){.buf = {0}, .n = 1};
    frame(&f, foreign, sizeof foreign);
    save("wire", "edge-bad-magic", f.buf, f.n);
}

/* ---- idx: [limit][u32 image bytes][images][labels] (fuzz_idx.c) ---- */

static size_t gzip_bytes(const uint8_t *in, size_t n, uint8_t *out, size_t cap) {
    z_stream z = {0};
    if (deflateInit2(&z, 9, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) fail("gzip", "init");
    z.next_in = (Bytef *)in, z.avail_in = (uInt)n;
    z.next_out = out, z.avail_out = (uInt)cap;
    if (deflate(&z, Z_FINISH) != Z_STREAM_END) fail("gzip", "deflate");
    size_t len = z.total_out;
    deflateEnd(&z);
    return len;
}

/* An IDX image file of n samples of c x h x w (rank 3 when c = 0) and its label file. */
static size_t idx_images(uint8_t *p, int n, int c, int h, int w) {
    size_t k = 0;
    put_be32(p, c ? 0x804 : 0x803), k += 4;
    put_be32(p + k, (uint32_t)n), k += 4;
    if (c) put_be32(p + k, (uint32_t)c), k += 4;
    put_be32(p + k, (uint32_t)h), k += 4;
    put_be32(p + k, (uint32_t)w), k += 4;
    for (int i = 0; i < n * (c ? c : 1) * h * w; i++) p[k++] = (uint8_t)(i * 37);
    return k;
}

static size_t idx_labels(uint8_t *p, int n, int classes) {
    put_be32(p, 0x801);
    put_be32(p + 4, (uint32_t)n);
    for (int i = 0; i < n; i++) p[8 + i] = (uint8_t)(i % classes);
    return 8 + (size_t)n;
}

static void idx_seed(const char *name, int limit, const uint8_t *im, size_t imn, const uint8_t *lb, size_t lbn,
                     int gz_images, int gz_labels) {
    static uint8_t out[16384], zi[4096], zl[4096];
    if (gz_images) imn = gzip_bytes(im, imn, zi, sizeof zi), im = zi;
    if (gz_labels) lbn = gzip_bytes(lb, lbn, zl, sizeof zl), lb = zl;
    out[0] = (uint8_t)limit;
    put_u32(out + 1, (uint32_t)imn);
    memcpy(out + 5, im, imn);
    memcpy(out + 5 + imn, lb, lbn);
    save("idx", name, out, 5 + imn + lbn);
}

static void idx_seeds(void) {
    uint8_t im[2048], lb[256];
    size_t imn = idx_images(im, 5, 0, 6, 6), lbn = idx_labels(lb, 5, 3);
    idx_seed("raw-rank3", 0, im, imn, lb, lbn, 0, 0);
    idx_seed("gz-rank3-limit2", 2, im, imn, lb, lbn, 1, 1);
    idx_seed("gz-images-raw-labels", 0, im, imn, lb, lbn, 1, 0);
    idx_seed("edge-truncated-body", 0, im, imn - 3, lb, lbn, 0, 0);
    idx_seed("edge-trailing-byte", 0, im, imn, lb, lbn + 1, 0, 0);
    imn = idx_images(im, 3, 3, 4, 4), lbn = idx_labels(lb, 3, 10);
    idx_seed("raw-rank4", 0, im, imn, lb, lbn, 0, 0);
    idx_seed("gz-rank4", 1, im, imn, lb, lbn, 1, 1);
    lbn = idx_labels(lb, 2, 2);
    idx_seed("edge-count-mismatch", 0, im, imn, lb, lbn, 0, 0);
}

/* ---- ckpt: one checkpoint file (fuzz_ckpt.c) ---- */

static void ckpt_seed(const char *dir, const char *name, uint64_t step, const void *payload, size_t size) {
    auxps_error_t e = {0};
    char path[4096];
    if (ckpt_write(dir, "seed", CKPT_KIND_NODE, step, payload, size, 1, &e) != 0) fail(name, e.msg);
    snprintf(path, sizeof path, "%s/seed-%020llu.ckpt", dir, (unsigned long long)step);
    size_t n;
    uint8_t *b = slurp(path, &n);
    unlink(path);
    memset(b + 24, 0, 8); /* the write time: the seed must not change on every run */
    put_u32(b + n - 4, (uint32_t)crc32(crc32(0L, Z_NULL, 0), b, (uInt)(n - 4)));
    save("ckpt", name, b, n);
    free(b);
}

static void ckpt_seeds(void) {
    char dir[] = "/tmp/auxps-seeds-XXXXXX";
    if (mkdtemp(dir) == NULL) fail("mkdtemp", strerror(errno));
    /* A node's payload (docs/CHECKPOINT.md "Node payload"): nine u64 counters, then the floats. */
    uint8_t payload[72 + 3 * 8 * 4] = {0};
    for (int i = 0; i < 9; i++) payload[8 * i] = (uint8_t)(i + 1);
    for (size_t i = 72; i < sizeof payload; i++) payload[i] = (uint8_t)(i * 13);
    ckpt_seed(dir, "node-step12", 12, payload, sizeof payload);
    ckpt_seed(dir, "empty-payload", 1, NULL, 0);
    size_t n;
    char path[4096];
    (void)ckpt_write(dir, "seed", CKPT_KIND_NODE, 3, "abc", 3, 1, NULL);
    snprintf(path, sizeof path, "%s/seed-%020d.ckpt", dir, 3);
    uint8_t *b = slurp(path, &n);
    unlink(path);
    b[8] = 2; /* another format version */
    save("ckpt", "edge-version2", b, n);
    b[8] = 1;
    b[n - 1] ^= 0xff;
    save("ckpt", "edge-bad-crc", b, n);
    free(b);
    rmdir(dir);
}

/* ---- export: one exported model file (fuzz_export.c) ---- */

static void export_seed(const char *name, const model_spec_t *sp) {
    model_t *m = model_new(sp, 1);
    if (m == NULL) fail(name, "model_new");
    model_init(m, 7);
    float *st = model_stats(m);
    for (size_t i = 0; i < model_num_stats(m); i++) st[i] += 0.125f * (float)(i % 5);
    char path[] = "/tmp/auxps-seed-model-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) fail("mkstemp", strerror(errno));
    close(fd);
    auxps_error_t e = {0};
    if (export_save(m, 0.25f, 0.5f, path, &e) != 0) fail(name, e.msg);
    size_t n;
    uint8_t *b = slurp(path, &n);
    unlink(path);
    save("export", name, b, n);
    free(b);
    model_destroy(&m);
}

static void export_seeds(void) {
    model_spec_t mlp = {.arch = ARCH_MLP, .in_c = 1, .in_h = 2, .in_w = 3, .classes = 2, .hidden = 4,
                        .wbits = 2, .abits = 2};
    export_seed("mlp-w2a2", &mlp);
    mlp.wbits = 32, mlp.abits = 32;
    export_seed("mlp-fp32", &mlp);
    mlp.wbits = 1, mlp.abits = 4, mlp.hidden = 3;
    export_seed("mlp-w1a4", &mlp);
    model_spec_t res = {.arch = ARCH_RESNET, .in_c = 1, .in_h = 4, .in_w = 4, .classes = 3,
                        .widths = {2, 3, 4}, .blocks = 1, .wbits = 2, .abits = 2};
    export_seed("resnet-w2a2", &res);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: seeds CORPUS_DIR\n");
        return 2;
    }
    root = argv[1];
    if (mkdir(root, 0755) != 0 && errno != EEXIST) fail(root, strerror(errno));
    wire_seeds();
    idx_seeds();
    ckpt_seeds();
    export_seeds();
    return 0;
}
