/* test_cluster.c - distributed runs as a user starts them: real processes (`auxps cluster`, or
 * `auxps coord`, `auxps ps` and `auxps worker` one by one) talking over loopback TCP.
 *
 * Every run is the tiny problem below (a 4-8-8 ResNet-8 with the auxiliary module, 768 training
 * and 256 test images, 2 epochs of 24 batches of 32, chunks of 4 batches), so that a run takes
 * seconds. Tests count what happened: the steps of the "done:" line, the pushes every worker
 * made against the pushes every node applied (CLUSTER.md "Counters"), the staleness the nodes
 * measured against the bound the protocol implies, the ERROR replies to hostile messages and
 * the coordinator's count of them.
 *
 * Every process a test starts is recorded; the suite's .fini kills (SIGKILL) and reaps whatever
 * a failed assertion left behind. `auxps cluster` gives its children PR_SET_PDEATHSIG, so killing
 * the launcher kills them too. Every wait has a deadline. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "peer.h"
#include "util.h"
#include "wire.h"

enum { CHILD_TIMEOUT_S = 90, REPLY_TIMEOUT_MS = 5000 };

#define CONFIG "configs/fmnist-resnet8-w2a2-aux.ini"
#define TINY "--set", "model.widths=4,8,8", "--set", "data.train_limit=768", "--set", "data.test_limit=256", \
             "--set", "train.epochs=2", "--set", "train.batch_size=32", "--set", "cluster.chunk_batches=4",   \
             "--set", "train.threads=1", "--set", "train.log_interval=8"
#define TINY_STEPS 48       /* 2 epochs of 768 / 32 batches */
#define TINY_CHUNKS 12      /* 2 epochs of 24 / 4 chunks */

static char tmp_dir[64];

static void setup(void) { util_tmpdir_make(tmp_dir, "cluster"); }

/* Kills (SIGKILL) and reaps whatever a failed assertion left behind. */
static void teardown(void) {
    util_proc_kill_all();
    util_tmpdir_remove(tmp_dir);
}

TestSuite(cluster, .init = setup, .fini = teardown, .timeout = 240);

static const char *tpath(char buf[256], const char *name) {
    snprintf(buf, 256, "%s/%s", tmp_dir, name);
    return buf;
}

/* ---- child processes (tests/util.h) ---- */

typedef util_proc_t proc_t;

/* Runs auxps to completion, killing it after CHILD_TIMEOUT_S. */
#define RUN(p, ...) util_proc_run((p), (const char *const[]){__VA_ARGS__, NULL}, CHILD_TIMEOUT_S)

/* ---- output parsing ---- */

static const char *line_starting(const char *text, const char *prefix) {
    for (const char *l = text; l != NULL && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
        if (strncmp(l, prefix, strlen(prefix)) == 0) return l;
    return NULL;
}

/* "test_accuracy A (C/N" in the line at l. */
static void parse_accuracy(const char *l, int *correct, int *total) {
    cr_assert_not_null(l);
    const char *a = strstr(l, "test_accuracy ");
    double acc;
    cr_assert(a != NULL && sscanf(a, "test_accuracy %lf (%d/%d", &acc, correct, total) == 3, "cannot parse: %.200s", l);
    cr_assert(fabs(acc - (double)*correct / *total) < 1e-4, "%.4f is not %d/%d", acc, *correct, *total);
}

typedef struct {
    int nodes, workers;
    uint64_t applied[8], stats_pushes[8], version[8], max_staleness[8];
    uint64_t pushed[8], per_shard[8][8];
    int seen_node[8], seen_worker[8];
} counters_t;

/* Parses the counter lines of CLUSTER.md ("node N: applied ..." and "worker W: pushed ...")
 * wherever they are in text (the launcher prefixes them), for a run of `nodes` nodes and
 * `workers` workers; text must hold want_nodes node lines and want_workers worker lines. */
static void parse_counters(const char *text, counters_t *c, int nodes, int workers, int want_nodes, int want_workers) {
    memset(c, 0, sizeof *c);
    for (const char *l = text; l != NULL && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        const char *eol = strchr(l, '\n');
        const char *k = strstr(l, "node ");
        unsigned id;
        uint64_t a, s, v, m;
        if (k != NULL && (eol == NULL || k < eol) &&
            sscanf(k, "node %u: applied %" SCNu64 " pushes, %" SCNu64 " stats pushes, version %" SCNu64
                   ", max staleness %" SCNu64, &id, &a, &s, &v, &m) == 5) {
            cr_assert_lt(id, (unsigned)nodes, "node id %u: %.200s", id, l);
            cr_assert(!c->seen_node[id], "two lines for node %u", id);
            c->seen_node[id] = 1;
            c->applied[id] = a, c->stats_pushes[id] = s, c->version[id] = v, c->max_staleness[id] = m;
            c->nodes++;
        }
        k = strstr(l, "worker ");
        int used = 0;
        if (k != NULL && (eol == NULL || k < eol) &&
            sscanf(k, "worker %u: pushed %" SCNu64 " pushes (per shard: %n", &id, &a, &used) == 2 && used > 0) {
            cr_assert_lt(id, (unsigned)workers, "worker id %u: %.200s", id, l);
            cr_assert(!c->seen_worker[id], "two lines for worker %u", id);
            c->seen_worker[id] = 1;
            c->pushed[id] = a;
            const char *q = k + used;
            uint64_t sum = 0;
            for (int sh = 0; sh < nodes; sh++) {
                char *end;
                c->per_shard[id][sh] = strtoull(q, &end, 10);
                cr_assert_neq(end, q, "per-shard counts: %.200s", l);
                sum += c->per_shard[id][sh];
                q = end + (*end == ',');
            }
            cr_assert_eq(sum, a, "worker %u: per-shard pushes sum to %" PRIu64 ", total %" PRIu64, id, sum, a);
            c->workers++;
        }
    }
    cr_assert_eq(c->nodes, want_nodes, "%d node counter lines, expected %d:\n%s", c->nodes, want_nodes, text);
    cr_assert_eq(c->workers, want_workers, "%d worker counter lines, expected %d:\n%s", c->workers, want_workers,
                 text);
}

/* Every pushed gradient was applied exactly once: per shard, the workers' pushes sum to the
 * node's applied count; every batch was pushed to every shard. */
static void check_pushes_applied(const counters_t *c, long steps) {
    for (int sh = 0; sh < c->nodes; sh++) {
        uint64_t sum = 0;
        for (int w = 0; w < c->workers; w++) sum += c->per_shard[w][sh];
        cr_assert_eq(sum, c->applied[sh], "shard %d: workers pushed %" PRIu64 ", the node applied %" PRIu64, sh, sum,
                     c->applied[sh]);
        cr_assert_eq(c->applied[sh], (uint64_t)steps, "shard %d applied %" PRIu64 " pushes for %ld batches", sh,
                     c->applied[sh], steps);
    }
}

static void eval_model(const char *model, int *correct, int *total) {
    proc_t p;
    RUN(&p, "eval", model, "--limit", "256");
    util_expect_exit(&p, 0);
    parse_accuracy(line_starting(p.out.buf, "test_accuracy "), correct, total);
    util_proc_free(&p);
}

/* Checks a finished run's record: the trainer's lines, the step count, and an exported model
 * that `auxps eval` scores as the run's last evaluation did. Returns the steps. */
static long check_run_record(const proc_t *p, const char *model) {
    const char *o = p->out.buf;
    cr_assert_not_null(line_starting(o, "auxps: "), "no header:\n%s", o);
    const char *prog = line_starting(o, "epoch 1/2 step ");
    cr_assert_not_null(prog, "no progress line:\n%s", o);
    cr_assert_not_null(strstr(prog, " img/s | loss_low "), "%.200s", prog);
    cr_assert_not_null(strstr(prog, " loss_aux "), "%.200s", prog);
    cr_assert_not_null(strstr(prog, "| lr "), "%.200s", prog);
    cr_assert_not_null(strstr(prog, "| eta "), "%.200s", prog);
    cr_assert_not_null(line_starting(o, "epoch 1/2 done in "), "no epoch line:\n%s", o);
    const char *ep = line_starting(o, "epoch 2/2 done in ");
    int ec, en;
    parse_accuracy(ep, &ec, &en);
    cr_assert_eq(en, 256);
    const char *done = line_starting(o, "done: ");
    int c, n;
    parse_accuracy(done, &c, &n);
    cr_assert_eq(c, ec, "done: line %d, last epoch %d", c, ec);
    long steps = strtol(done + 6, NULL, 10);
    cr_assert_not_null(strstr(done, model), "done: line lacks %s", model);
    int fc, fn;
    parse_accuracy(line_starting(o, "exported model "), &fc, &fn);
    cr_assert_eq(fc, c, "the exported file scores %d, the workers' evaluation %d", fc, c);
    int xc, xn;
    eval_model(model, &xc, &xn);
    cr_assert_eq(xn, 256);
    cr_assert_eq(xc, c, "auxps eval scores %d/%d, the run %d/%d", xc, xn, c, n);
    return steps;
}

/* ---- (a) two nodes, three workers, each consistency model ---- */

/* Runs it with cluster.pull and cluster.push as given; *text, when text is not NULL, gets a
 * copy of the record and the logs (free it). */
static void run_cluster_2x3_coded(const char *consistency, const char *pull, const char *push, counters_t *cnt,
                                  char **text) {
    char model[256], out[300], cons[64], pl[64], ps[64];
    tpath(model, "m.bin");
    snprintf(out, sizeof out, "train.output=%s", model);
    snprintf(cons, sizeof cons, "cluster.consistency=%s", consistency);
    snprintf(pl, sizeof pl, "cluster.pull=%s", pull);
    snprintf(ps, sizeof ps, "cluster.push=%s", push);
    proc_t p;
    RUN(&p, "cluster", CONFIG, "--ps", "2", "--workers", "3", TINY, "--set", out, "--set", cons, "--set",
        "cluster.staleness=2", "--set", pl, "--set", ps);
    util_expect_exit(&p, 0);
    long steps = check_run_record(&p, model);
    cr_assert_eq(steps, TINY_STEPS);
    parse_counters(p.out.buf, cnt, 2, 3, 2, 3);
    check_pushes_applied(cnt, steps);
    const char *co = line_starting(p.out.buf, "coord: ");
    cr_assert_not_null(co, "no coordinator counters:\n%s", p.out.buf);
    long leases = strtol(co + 7, NULL, 10);
    cr_assert_eq(leases, TINY_CHUNKS, "%.200s", co);
    for (int sh = 0; sh < 2; sh++)
        cr_assert_eq(cnt->stats_pushes[sh], (uint64_t)TINY_CHUNKS, "shard %d: %" PRIu64 " stats pushes for %d chunks",
                     sh, cnt->stats_pushes[sh], TINY_CHUNKS);
    cr_assert_not_null(strstr(co, " 0 bad messages"), "%.200s", co);
    if (text != NULL) { /* the record, then the processes' logs */
        size_t no = strlen(p.out.buf), ne = strlen(p.err.buf);
        cr_assert_not_null(*text = malloc(no + ne + 1));
        memcpy(*text, p.out.buf, no);
        memcpy(*text + no, p.err.buf, ne + 1);
    }
    util_proc_free(&p);
}

static void run_cluster_2x3(const char *consistency, counters_t *cnt) {
    run_cluster_2x3_coded(consistency, "f32", "f32", cnt, NULL);
}

/* The launcher's coordinator port (peer_free_port) comes from below the ephemeral range, where
 * no outgoing connection's source port can take it before the coordinator binds, and is free:
 * each of 20 draws binds, and a port held by a listener is never drawn while it is held. */
Test(cluster, free_ports_are_drawn_below_the_ephemeral_range_and_bind) {
    int lo = 32768, hi;
    FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
    if (f != NULL) {
        cr_assert_eq(fscanf(f, "%d %d", &lo, &hi), 2);
        fclose(f);
    }
    if (lo <= 10000) cr_skip_test("the ephemeral range starts at %d: no room below it", lo);
    int held[20];
    for (int i = 0; i < 20; i++) {
        const int port = peer_free_port();
        cr_assert(port >= 10000 && port < lo, "draw %d: port %d, not in [10000, %d)", i, port, lo);
        held[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        cr_assert_geq(held[i], 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                                .sin_port = htons((uint16_t)port)};
        cr_assert_eq(bind(held[i], (struct sockaddr *)&a, sizeof a), 0, "draw %d: port %d: %s", i, port,
                     strerror(errno));
        cr_assert_eq(listen(held[i], 1), 0);
        for (int j = 0; j < i; j++) {
            struct sockaddr_in b;
            socklen_t len = sizeof b;
            cr_assert_eq(getsockname(held[j], (struct sockaddr *)&b, &len), 0);
            cr_assert_neq(ntohs(b.sin_port), port, "draw %d: port %d is held by draw %d", i, port, j);
        }
    }
    for (int i = 0; i < 20; i++) close(held[i]);
}

Test(cluster, async_2_nodes_3_workers_applies_every_push_once) {
    counters_t c;
    run_cluster_2x3("async", &c);
    for (int sh = 0; sh < 2; sh++)
        cr_assert_eq(c.version[sh], c.applied[sh], "async: one step per push; shard %d version %" PRIu64, sh,
                     c.version[sh]);
}

/* cluster.prefetch: a lone worker's next pull leaves before its push, so every push after the
 * first lands on exactly one newer version (its own last push): max staleness 1, against 0
 * without prefetch; every push is still applied once. Both runs export a model that scores what
 * the workers' evaluation said (check_run_record). */
static void run_prefetch(const char *prefetch, counters_t *c) {
    char model[256], out[300], pf[64];
    tpath(model, "m.bin");
    snprintf(out, sizeof out, "train.output=%s", model);
    snprintf(pf, sizeof pf, "cluster.prefetch=%s", prefetch);
    proc_t p;
    RUN(&p, "cluster", CONFIG, "--ps", "1", "--workers", "1", TINY, "--set", out, "--set", pf);
    util_expect_exit(&p, 0);
    long steps = check_run_record(&p, model);
    cr_assert_eq(steps, TINY_STEPS);
    parse_counters(p.out.buf, c, 1, 1, 1, 1);
    check_pushes_applied(c, steps);
    cr_assert_eq(c->version[0], c->applied[0]);
    util_proc_free(&p);
}

Test(cluster, prefetch_overlaps_the_next_pull_and_costs_one_version_of_staleness) {
    counters_t c;
    run_prefetch("true", &c);
    cr_assert_eq(c.max_staleness[0], 1, "prefetch: max staleness %" PRIu64, c.max_staleness[0]);
    run_prefetch("false", &c);
    cr_assert_eq(c.max_staleness[0], 0, "no prefetch: max staleness %" PRIu64, c.max_staleness[0]);
}

/* "shard K: EP params OFF+LEN stats OFF+LEN" of the coordinator's record: shard k's lengths. */
static void shard_lengths(const char *text, int k, uint64_t *len, uint64_t *slen) {
    char key[32];
    snprintf(key, sizeof key, "shard %d: ", k);
    const char *l = strstr(text, key);
    cr_assert_not_null(l, "no %s line", key);
    const char *pp = strstr(l, " params "), *sp = strstr(l, " stats ");
    cr_assert(pp && sp, "%.200s", l);
    cr_assert_not_null(strchr(pp, '+'));
    cr_assert_not_null(strchr(sp, '+'));
    *len = strtoull(strchr(pp, '+') + 1, NULL, 10);
    *slen = strtoull(strchr(sp, '+') + 1, NULL, 10);
}

/* "node K: payload bytes: I received in pushes, O sent in pull replies" of node k. */
static void node_bytes(const char *text, int k, uint64_t *in, uint64_t *out) {
    char key[48];
    snprintf(key, sizeof key, "node %d: payload bytes: ", k);
    const char *l = strstr(text, key);
    cr_assert_not_null(l, "no %s line:\n%s", key, text);
    cr_assert_eq(sscanf(l + strlen(key), "%" SCNu64 " received in pushes, %" SCNu64 " sent", in, out), 2, "%.200s", l);
}

/* cluster.pull = kbit and cluster.push = q8 (CLUSTER.md "Bytes per step"): the run completes with
 * every push applied once, and each node received exactly one byte per gradient value (plus
 * the float32 statistics). */
Test(cluster, async_with_k_bit_pulls_and_q8_pushes_applies_every_push_once_at_a_byte_per_value) {
    counters_t c;
    char *text;
    run_cluster_2x3_coded("async", "kbit", "q8", &c, &text);
    for (int sh = 0; sh < 2; sh++) {
        uint64_t len, slen, in, out;
        shard_lengths(text, sh, &len, &slen);
        node_bytes(text, sh, &in, &out);
        cr_assert_eq(in, c.applied[sh] * len + c.stats_pushes[sh] * slen * 4, "shard %d: %" PRIu64 " bytes "
                     "received for %" PRIu64 " pushes of %" PRIu64 " values", sh, in, c.applied[sh], len);
    }
    free(text);
}

/* The bound, from PROTOCOL.md's ssp rule. A node answers worker w's PULL of clock c only when
 * every worker's clock (batches applied) is >= c - s, and w's own pushes 0..c-1 are applied
 * (read-your-writes), so the version read is >= (W-1)(c-s) + c. Until w's push of clock c is
 * applied, w's clock at the node is c, so no other worker can have a PULL of a clock above c + s
 * answered, nor pushed more than c + s + 1 batches: at the apply the version is
 * <= (W-1)(c+s+1) + c. Staleness (version at apply - version read) <= (W-1)(2s+1): 10 for W = 3,
 * s = 2. */
Test(cluster, ssp_2_nodes_3_workers_keeps_staleness_within_the_bound) {
    counters_t c;
    run_cluster_2x3("ssp", &c);
    const uint64_t W = 3, s = 2, bound = (W - 1) * (2 * s + 1);
    for (int sh = 0; sh < 2; sh++) {
        cr_assert_leq(c.max_staleness[sh], bound, "shard %d: staleness %" PRIu64 " > (W-1)(2s+1) = %" PRIu64, sh,
                      c.max_staleness[sh], bound);
        cr_assert_eq(c.version[sh], c.applied[sh]);
    }
}

/* bsp: the W pushes of a clock are one step, all computed on the same version. */
Test(cluster, bsp_2_nodes_3_workers_applies_one_step_per_clock) {
    counters_t c;
    run_cluster_2x3("bsp", &c);
    for (int sh = 0; sh < 2; sh++) {
        cr_assert_eq(c.max_staleness[sh], 0, "bsp shard %d: staleness %" PRIu64, sh, c.max_staleness[sh]);
        cr_assert_eq(c.version[sh], (uint64_t)TINY_STEPS / 3, "bsp shard %d: version %" PRIu64, sh, c.version[sh]);
    }
    for (int w = 0; w < 3; w++)
        cr_assert_eq(c.pushed[w], 2 * (uint64_t)TINY_STEPS / 3, "bsp: every worker trains 1/3 of the batches");
}

/* ---- (b) one worker in bsp is the trainer ---- */

static float *read_floats(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    cr_assert(size > 0 && size % 4 == 0, "%s: %ld bytes", path, size);
    float *v = malloc((size_t)size);
    cr_assert_not_null(v);
    cr_assert_eq(fread(v, 1, (size_t)size, f), (size_t)size);
    fclose(f);
    *n = (size_t)size / 4;
    return v;
}

Test(cluster, one_worker_bsp_gives_the_parameters_of_auxps_train) {
    char tm[256], cm[256], td[256], cd[256], tout[300], cout[300];
    snprintf(tout, sizeof tout, "train.output=%s", tpath(tm, "t.bin"));
    snprintf(cout, sizeof cout, "train.output=%s", tpath(cm, "c.bin"));
    tpath(td, "t.f32");
    tpath(cd, "c.f32");
    proc_t t, c;
    RUN(&t, "train", CONFIG, TINY, "--set", tout, "--dump-params", td);
    util_expect_exit(&t, 0);
    RUN(&c, "cluster", CONFIG, "--ps", "2", "--workers", "1", TINY, "--set", cout, "--set", "cluster.consistency=bsp",
        "--dump-params", cd);
    util_expect_exit(&c, 0);
    size_t nt, nc;
    float *a = read_floats(td, &nt), *b = read_floats(cd, &nc);
    cr_assert_eq(nt, nc, "train dumped %zu floats, the cluster %zu", nt, nc);
    double maxd = 0;
    size_t at = 0;
    for (size_t i = 0; i < nt; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= maxd)) maxd = d, at = i; /* a NaN is caught too */
    }
    cr_assert(maxd <= 1e-5, "max |train - cluster| = %g at parameter %zu (%g vs %g)", maxd, at, a[at], b[at]);
    int tc, tn, cc, cn;
    parse_accuracy(line_starting(t.out.buf, "done: "), &tc, &tn);
    parse_accuracy(line_starting(c.out.buf, "done: "), &cc, &cn);
    cr_assert_eq(cc, tc, "the cluster scores %d, the trainer %d", cc, tc);
    free(a);
    free(b);
    util_proc_free(&t);
    util_proc_free(&c);
}

/* k-bit pulls are the same mathematics (CLUSTER.md "Bytes per step"): the worker trains on the
 * decoded k-bit weights and pushes dL/dwq, the node applies the quantizer's backward; with one
 * worker and bsp the parameters are bit for bit those of f32 pulls, and the nodes send far
 * fewer bytes for the same pulls. */
Test(cluster, one_worker_bsp_with_k_bit_pulls_gives_the_parameters_of_f32_pulls_in_fewer_bytes) {
    char fd[256], kd[256], fm[256], km[256], fo[300], ko[300];
    snprintf(fo, sizeof fo, "train.output=%s", tpath(fm, "f.bin"));
    snprintf(ko, sizeof ko, "train.output=%s", tpath(km, "k.bin"));
    tpath(fd, "f.f32");
    tpath(kd, "k.f32");
    proc_t f, k;
    RUN(&f, "cluster", CONFIG, "--ps", "2", "--workers", "1", TINY, "--set", fo, "--set", "cluster.consistency=bsp",
        "--dump-params", fd);
    util_expect_exit(&f, 0);
    RUN(&k, "cluster", CONFIG, "--ps", "2", "--workers", "1", TINY, "--set", ko, "--set", "cluster.consistency=bsp",
        "--set", "cluster.pull=kbit", "--dump-params", kd);
    util_expect_exit(&k, 0);
    size_t nf, nk;
    float *a = read_floats(fd, &nf), *b = read_floats(kd, &nk);
    cr_assert_eq(nf, nk);
    cr_assert(memcmp(a, b, nf * sizeof(float)) == 0, "k-bit pulls changed the parameters");
    uint64_t fsent = 0, ksent = 0;
    for (int sh = 0; sh < 2; sh++) {
        uint64_t fin, fout, kin, kout;
        node_bytes(f.err.buf, sh, &fin, &fout);
        node_bytes(k.err.buf, sh, &kin, &kout);
        cr_assert_eq(kin, fin, "shard %d: pushes are float32 in both", sh);
        fsent += fout, ksent += kout;
    }
    cr_assert_lt(ksent * 2, fsent, "k-bit pulls sent %" PRIu64 " bytes, f32 pulls %" PRIu64, ksent, fsent);
    cr_log_info("pull replies: %" PRIu64 " bytes with k-bit weights, %" PRIu64 " with f32", ksent, fsent);
    free(a);
    free(b);
    util_proc_free(&f);
    util_proc_free(&k);
}

/* ---- (c) hostile messages (the fake peers and the malformed kinds are in tests/util.c) ---- */

/* A well-formed PUSH of the whole shard [offset, offset + length) from a sender that is no
 * registered worker (worker id 1 of a run of one worker; the test's socket). */
static uint32_t send_stray_push(util_peer_t *p, const char *who, uint32_t worker, uint64_t offset, uint64_t length) {
    float *g = calloc(length, sizeof *g);
    cr_assert_not_null(g);
    wire_msg_t m;
    memset(&m, 0, sizeof m);
    m.type = WIRE_PUSH;
    m.rid = 777;
    m.push = (wire_push_t){.worker = worker, .shard = 0, .offset = offset, .length = length, .clock = 0,
                           .version = 0, .samples = 32, .encoding = WIRE_ENC_F32};
    m.payload = g;
    m.payload_size = length * sizeof(float);
    auxps_error_t e = {0};
    cr_assert_eq(wire_send(p->sock, NULL, 0, &m, NULL, NULL, 0, &e), 0, "%s", e.msg);
    free(g);
    char what[128];
    snprintf(what, sizeof what, "%s: PUSH from an unregistered sender", who);
    uint32_t rid, code = util_peer_expect_error(p, what, &rid, REPLY_TIMEOUT_MS);
    cr_assert_eq(rid, 777);
    return code;
}

Test(cluster, malformed_messages_get_error_and_the_run_still_completes) {
    char model[256], out[300];
    snprintf(out, sizeof out, "train.output=%s", tpath(model, "m.bin"));
    proc_t coord, node, worker;
    util_proc_start(&coord, (const char *const[]){"coord", CONFIG, "--nodes", "1", "--workers", "1", "--bind",
                                             "tcp://127.0.0.1:*", TINY, "--set", out, NULL});
    proc_t *cp[1] = {&coord};
    const double deadline = util_now_s() + CHILD_TIMEOUT_S;
    cr_assert(util_proc_pump(cp, 1, deadline, "listening on ", 2), "no endpoint:\n%s", coord.err.buf);
    char endpoint[128];
    const char *l = strstr(coord.err.buf, "listening on ");
    cr_assert_eq(sscanf(l, "listening on %127s", endpoint), 1);

    util_proc_start(&node, (const char *const[]){"ps", "--coordinator", endpoint, NULL});
    proc_t *cn[2] = {&coord, &node};
    cr_assert(util_proc_pump(cn, 2, deadline, "shard 0: ", 1), "no shard map:\nstdout:\n%s\nstderr:\n%s", coord.out.buf,
              coord.err.buf);
    char node_ep[128];
    uint64_t off, len;
    l = line_starting(coord.out.buf, "shard 0: ");
    cr_assert_eq(sscanf(l, "shard 0: %127s params %" SCNu64 "+%" SCNu64, node_ep, &off, &len), 3, "%.200s", l);

    util_peer_t pc, pn;
    uint64_t kinds_coord[WIRE_REJECT_COUNT] = {0}, kinds_node[WIRE_REJECT_COUNT] = {0};
    util_peer_open(&pc, endpoint);
    int to_coord = util_send_malformed(&pc, "coordinator", kinds_coord);
    uint32_t code = send_stray_push(&pc, "coordinator", 0, 0, 16);
    cr_assert_eq(code, WIRE_ERR_NOT_REGISTERED, "coordinator: a stray PUSH gets code %u", code);
    to_coord++;
    util_peer_open(&pn, node_ep);
    int to_node = util_send_malformed(&pn, "node", kinds_node);
    code = send_stray_push(&pn, "node", 1, off, len);
    cr_assert(code == WIRE_ERR_NOT_REGISTERED || code == WIRE_ERR_OUT_OF_RANGE, "node: a stray PUSH gets code %u", code);
    to_node++;
    util_peer_close(&pc);
    util_peer_close(&pn);

    util_proc_start(&worker, (const char *const[]){"worker", "--coordinator", endpoint, "--threads", "1", NULL});
    proc_t *all[3] = {&coord, &node, &worker};
    util_proc_finish(all, 3, deadline);
    util_expect_exit(&coord, 0);
    util_expect_exit(&node, 0);
    util_expect_exit(&worker, 0);
    const char *done = line_starting(coord.out.buf, "done: ");
    cr_assert_not_null(done, "%s", coord.out.buf);
    cr_assert_eq(strtol(done + 6, NULL, 10), TINY_STEPS);
    const char *co = line_starting(coord.out.buf, "coord: ");
    cr_assert_not_null(co);
    char want[64];
    snprintf(want, sizeof want, " %d bad messages", to_coord);
    cr_assert_not_null(strstr(co, want), "the coordinator counted otherwise than %d: %.200s", to_coord, co);
    /* The stray push was not applied: the node applied exactly what the worker pushed. */
    counters_t nc, wc;
    parse_counters(node.out.buf, &nc, 1, 1, 1, 0);
    parse_counters(worker.out.buf, &wc, 1, 1, 0, 1);
    cr_assert_eq(nc.applied[0], wc.per_shard[0][0], "node applied %" PRIu64 ", the worker pushed %" PRIu64,
                 nc.applied[0], wc.per_shard[0][0]);
    cr_assert_eq(nc.applied[0], (uint64_t)TINY_STEPS);
    const char *ref = strstr(node.err.buf, "), refused "); /* "answered P pulls (D waited ...), refused R messages" */
    cr_assert_not_null(ref, "no refusal count from the node:\n%s", node.err.buf);
    long refused = strtol(ref + 11, NULL, 10);
    cr_assert_geq(refused, to_node, "the node refused %ld of the %d bad messages", refused, to_node);
    util_proc_free(&coord);
    util_proc_free(&node);
    util_proc_free(&worker);
}

/* ---- timeouts and signals ---- */

/* The launcher's children, from its "processes: [coord:PID] [ps:PID] ... [worker:PID]" line. */
static int child_pids(const char *text, pid_t *pids, int max) {
    int n = 0;
    for (const char *k = text; (k = strchr(k, '[')) != NULL && n < max; k++) {
        int pid;
        if (sscanf(k, "[ps:%d]", &pid) != 1 && sscanf(k, "[worker:%d]", &pid) != 1 && sscanf(k, "[coord:%d]", &pid) != 1)
            continue;
        int dup = 0;
        for (int i = 0; i < n; i++) dup |= pids[i] == pid;
        if (!dup) pids[n++] = pid;
    }
    return n;
}

/* 1 if pid no longer runs: reaped, or a zombie waiting for its new parent to reap it. */
static int gone(pid_t pid) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL) return 1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *rp = strrchr(buf, ')'); /* "pid (comm) S ..." */
    return rp != NULL && rp[1] == ' ' && (rp[2] == 'Z' || rp[2] == 'X');
}

/* Waits up to 5 s for every pid to be gone. */
static void expect_all_gone(const pid_t *pids, int n) {
    const double deadline = util_now_s() + 5.0;
    for (int i = 0; i < n; i++) {
        while (!gone(pids[i]) && util_now_s() < deadline) usleep(20000);
        cr_assert(gone(pids[i]), "process %d outlived the launcher", (int)pids[i]);
    }
}

Test(cluster, sigint_to_the_launcher_stops_exports_and_leaves_no_process) {
    char model[256], out[300];
    snprintf(out, sizeof out, "train.output=%s", tpath(model, "s.bin"));
    proc_t p;
    util_proc_start(&p, (const char *const[]){"cluster", CONFIG, "--ps", "2", "--workers", "2", TINY, "--set", out, "--set",
                                         "train.epochs=40", NULL});
    proc_t *pp[1] = {&p};
    const double deadline = util_now_s() + CHILD_TIMEOUT_S;
    int seen = util_proc_pump(pp, 1, deadline, " img/s ", 1);
    cr_assert(seen, "no progress line; stdout:\n%s\nstderr:\n%s", p.out.buf, p.err.buf);
    cr_assert_eq(kill(p.pid, SIGINT), 0);
    util_proc_finish(pp, 1, deadline);
    util_expect_exit(&p, 130);
    const char *done = line_starting(p.out.buf, "done: ");
    cr_assert_not_null(done, "no done: line:\n%s\n%s", p.out.buf, p.err.buf);
    cr_assert_lt(strtol(done + 6, NULL, 10), 40 * TINY_STEPS / 2);
    int c, n;
    parse_accuracy(line_starting(p.out.buf, "exported model "), &c, &n);
    int xc, xn;
    eval_model(model, &xc, &xn);
    cr_assert_eq(xc, c);
    pid_t pids[16];
    int np = child_pids(p.err.buf, pids, 16);
    cr_assert_eq(np, 5, "found %d child pids in:\n%s", np, p.err.buf);
    expect_all_gone(pids, np);
    util_proc_free(&p);
}

/* The timeout is generous (5 s) because a worker is silent while it loads the data after its
 * WELCOME, which takes seconds under the sanitizers on a loaded machine. */
/* In ssp (and bsp) membership is fixed: a worker that falls silent stalls the gates, so the run
 * ends. (An async run goes on without it: test_elastic.c.) */
Test(cluster, a_silent_worker_aborts_an_ssp_run_with_exit_1_and_no_hang) {
    char model[256], out[300];
    snprintf(out, sizeof out, "train.output=%s", tpath(model, "x.bin"));
    proc_t p;
    util_proc_start(&p, (const char *const[]){"cluster", CONFIG, "--ps", "1", "--workers", "2", TINY, "--set", out, "--set",
                                         "train.epochs=40", "--set", "cluster.heartbeat_ms=500", "--set",
                                         "cluster.timeout_ms=5000", "--set", "cluster.consistency=ssp", NULL});
    proc_t *pp[1] = {&p};
    const double t0 = util_now_s(), deadline = t0 + CHILD_TIMEOUT_S;
    cr_assert(util_proc_pump(pp, 1, deadline, " img/s ", 1), "no progress; stdout:\n%s\nstderr:\n%s", p.out.buf, p.err.buf);
    pid_t pids[16];
    int np = child_pids(p.err.buf, pids, 16);
    pid_t victim = -1;
    for (const char *k = strstr(p.err.buf, "[worker:"); k != NULL && victim < 0; k = strstr(k + 1, "[worker:"))
        if (sscanf(k, "[worker:%d]", &victim) != 1) victim = -1;
    cr_assert_gt(victim, 0, "no worker pid in:\n%s", p.err.buf);
    cr_assert_eq(kill(victim, SIGSTOP), 0, "SIGSTOP %d: %s", (int)victim, strerror(errno));
    util_proc_finish(pp, 1, deadline);
    util_expect_exit(&p, 1);
    cr_assert_not_null(strstr(p.err.buf, "silent for"), "no message about the silent worker:\n%s", p.err.buf);
    cr_assert_null(line_starting(p.out.buf, "done: "), "an aborted run printed done:\n%s", p.out.buf);
    cr_assert_lt(util_now_s() - t0, 60.0, "the abort took %.1f s", util_now_s() - t0);
    expect_all_gone(pids, np);
    util_proc_free(&p);
}

/* The path no handler sees: the launcher killed outright. Its children die with it
 * (PR_SET_PDEATHSIG). */
Test(cluster, killing_the_launcher_kills_every_child) {
    char model[256], out[300];
    snprintf(out, sizeof out, "train.output=%s", tpath(model, "k.bin"));
    proc_t p;
    util_proc_start(&p, (const char *const[]){"cluster", CONFIG, "--ps", "1", "--workers", "2", TINY, "--set", out, "--set",
                                         "train.epochs=40", NULL});
    proc_t *pp[1] = {&p};
    const double deadline = util_now_s() + CHILD_TIMEOUT_S;
    cr_assert(util_proc_pump(pp, 1, deadline, " img/s ", 1), "no progress; stdout:\n%s\nstderr:\n%s", p.out.buf, p.err.buf);
    pid_t pids[16];
    int np = child_pids(p.err.buf, pids, 16);
    cr_assert_eq(np, 4, "found %d child pids in:\n%s", np, p.err.buf);
    cr_assert_eq(kill(p.pid, SIGKILL), 0);
    util_proc_finish(pp, 1, deadline);
    cr_assert(p.signaled && p.termsig == SIGKILL);
    expect_all_gone(pids, np);
    util_proc_free(&p);
}
