/* test_elastic.c - elastic membership and fault tolerance of an async run (docs/CLUSTER.md
 * "Elastic membership", "Checkpoints and restarts"), with real processes on loopback: workers
 * killed with SIGKILL, stopped with SIGTERM and added while the run goes on, a parameter-server
 * node killed and restarted from its checkpoint (and from the previous one when the newest is
 * corrupt), and a hundred workers joining and leaving one after another.
 *
 * The runs are small (a 4-8-8 ResNet-8 with the auxiliary module on a few thousand images) but
 * long enough for the events to land mid-epoch. Every event waits for a line of the
 * coordinator's record ("member: ...", progress lines) rather than for a time, and every wait
 * has a deadline. The tests count what the coordinator reports per epoch: chunks total,
 * completed, re-leased and returned, and the samples trained, which must be the epoch's. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

#define CONFIG "configs/fmnist-resnet8-w2a2-aux.ini"
/* Fast heartbeats so that a dead worker is noticed in 3 s. */
#define SMALL "--set", "model.widths=4,8,8", "--set", "data.test_limit=500", "--set", "train.batch_size=32", \
              "--set", "cluster.chunk_batches=2", "--set", "train.threads=1", "--set", "train.log_interval=10", \
              "--set", "cluster.heartbeat_ms=500", "--set", "cluster.timeout_ms=3000"

enum { RUN_TIMEOUT_S = 200 };

static char tmp_dir[64];

static void setup(void) { util_tmpdir_make(tmp_dir, "elastic"); }

static void teardown(void) {
    util_proc_kill_all();
    util_tmpdir_remove(tmp_dir);
}

TestSuite(elastic, .init = setup, .fini = teardown, .timeout = 300);

typedef util_proc_t proc_t;

/* The processes of one run: [0] is the coordinator, whose stdout is the run's record. */
typedef struct {
    proc_t *p[UTIL_MAX_KIDS];
    int n;
    proc_t *done[128];        /* finished ones, freed with the run */
    int ndone;
    char endpoint[64];
} run_t;

static proc_t *start(run_t *r, const char *const args[]) {
    cr_assert_lt(r->n, UTIL_MAX_KIDS);
    proc_t *p = calloc(1, sizeof *p);
    cr_assert_not_null(p);
    util_proc_start(p, args);
    r->p[r->n++] = p;
    return p;
}

static proc_t *start_worker(run_t *r) {
    return start(r, (const char *const[]){"worker", "--coordinator", r->endpoint, "--threads", "1", NULL});
}

static int count(const char *text, const char *needle) {
    int k = 0;
    for (const char *s = strstr(text, needle); s != NULL; s = strstr(s + 1, needle)) k++;
    return k;
}

/* Reads every process's output until the coordinator's stdout holds `want` lines containing
 * needle, or fails the test at the deadline. */
static void wait_for(run_t *r, const char *needle, int want, double timeout_s) {
    const double deadline = util_now_s() + timeout_s;
    for (;;) {
        const char *buf = r->p[0]->out.buf;
        const char *nl = strrchr(buf, '\n');
        if (nl != NULL) {
            char *done = strndup(buf, (size_t)(nl - buf + 1));
            int k = count(done, needle);
            free(done);
            if (k >= want) return;
        }
        cr_assert(util_now_s() < deadline, "no %d lines with '%s' within %.0f s; coordinator:\n%s\nstderr:\n%s", want,
                  needle, timeout_s, r->p[0]->out.buf, r->p[0]->err.buf);
        cr_assert(r->p[0]->out.fd >= 0, "the coordinator ended early; stdout:\n%s\nstderr:\n%s", r->p[0]->out.buf,
                  r->p[0]->err.buf);
        util_proc_pump(r->p, r->n, util_now_s() + 0.1, NULL, 1);
        for (int i = 0; i < r->n; i++) r->p[i]->timed_out = 0; /* a short pump is not a deadline */
    }
}

/* Finishes process p of the run (it must be exiting) and removes it from the run. */
static void finish_one(run_t *r, proc_t *p, double timeout_s) {
    util_proc_finish(&p, 1, util_now_s() + timeout_s);
    for (int i = 0; i < r->n; i++)
        if (r->p[i] == p) r->p[i] = r->p[--r->n];
    cr_assert_lt(r->ndone, 128);
    r->done[r->ndone++] = p;
}

static void finish_all(run_t *r, double timeout_s) { util_proc_finish(r->p, r->n, util_now_s() + timeout_s); }

static void free_run(run_t *r) {
    for (int i = 0; i < r->n; i++) {
        util_proc_free(r->p[i]);
        free(r->p[i]);
    }
    for (int i = 0; i < r->ndone; i++) {
        util_proc_free(r->done[i]);
        free(r->done[i]);
    }
    r->n = r->ndone = 0;
}

/* The epoch lines "epoch E/N chunks: T total, C completed, R re-leased, X returned | S/M
 * samples trained": every chunk completed once and every sample of the epoch trained, in
 * every epoch. Returns the sums of R and X. */
static void check_chunks(const char *record, int epochs, long *released, long *returned) {
    *released = *returned = 0;
    int seen = 0;
    for (const char *l = strstr(record, " chunks: "); l != NULL; l = strstr(l + 1, " chunks: ")) {
        long t, c, rl, rt, s, m;
        cr_assert_eq(sscanf(l, " chunks: %ld total, %ld completed, %ld re-leased, %ld returned | %ld/%ld", &t, &c, &rl,
                            &rt, &s, &m), 6, "cannot parse: %.160s", l);
        cr_assert_eq(c, t, "an epoch completed %ld of its %ld chunks: %.160s", c, t, l);
        cr_assert_eq(s, m, "an epoch trained %ld of its %ld samples: %.160s", s, m, l);
        *released += rl;
        *returned += rt;
        seen++;
    }
    cr_assert_eq(seen, epochs, "%d epoch chunk lines, expected %d:\n%s", seen, epochs, record);
}

/* "exported model FILE: test_accuracy A" from the record. */
static double exported_accuracy(const char *record) {
    const char *l = strstr(record, "exported model ");
    cr_assert_not_null(l, "no exported model line:\n%s", record);
    const char *a = strstr(l, "test_accuracy ");
    double acc;
    cr_assert(a != NULL && sscanf(a, "test_accuracy %lf", &acc) == 1, "%.200s", l);
    return acc;
}

/* A coordinator of the SMALL problem on a free port (on r->endpoint if it is set already: a
 * restart); extra: more "--set" arguments (NULL-ended) or NULL. */
static void start_coord(run_t *r, const char *out, const char *epochs, const char *train_limit, int nodes,
                        const char *ckpt_dir, const char *const *extra) {
    if (r->endpoint[0] == '\0') snprintf(r->endpoint, sizeof r->endpoint, "tcp://127.0.0.1:%d", util_free_port());
    char nodes_s[8], out_set[320], limit_set[64], epochs_set[64], ckpt_set[320];
    snprintf(nodes_s, sizeof nodes_s, "%d", nodes);
    snprintf(out_set, sizeof out_set, "train.output=%s/%s", tmp_dir, out);
    snprintf(limit_set, sizeof limit_set, "data.train_limit=%s", train_limit);
    snprintf(epochs_set, sizeof epochs_set, "train.epochs=%s", epochs);
    snprintf(ckpt_set, sizeof ckpt_set, "checkpoint.dir=%s", ckpt_dir ? ckpt_dir : "");
    const char *args[96] = {"coord", CONFIG, "--nodes", nodes_s, "--workers", "1", "--bind", r->endpoint, SMALL,
                            "--set", out_set, "--set", limit_set, "--set", epochs_set, "--set", ckpt_set,
                            "--set", "checkpoint.every_steps=20"};
    int n = 0;
    while (args[n] != NULL) n++;
    for (int i = 0; extra != NULL && extra[i] != NULL && n < 94; i++) args[n++] = extra[i];
    args[n] = NULL;
    start(r, args);
}

static proc_t *start_node(run_t *r, const char *bind) {
    return start(r, (const char *const[]){"ps", "--coordinator", r->endpoint, "--bind", bind, NULL});
}

/* A node bound to every interface and known to the others by advertise (as in a container). */
static proc_t *start_node_as(run_t *r, const char *bind, const char *advertise) {
    return start(r, (const char *const[]){"ps", "--coordinator", r->endpoint, "--bind", bind, "--advertise", advertise,
                                          NULL});
}

/* The churn test compares accuracies, so it trains a problem whose accuracy is stable from
 * run to run: full-precision weights and activations (the 2-bit network's test accuracy
 * swings by tens of points between early epochs, CLUSTER.md and README "Results"), on 2,000
 * test images. Membership is what is tested, not quantization. Chunks of 8 batches, so that a
 * worker killed or stopped at a random time is almost surely inside one. */
static const char *const STABLE[] = {"--set", "model.weight_bits=32", "--set", "model.act_bits=32", "--set",
                                     "data.test_limit=2000", "--set", "cluster.chunk_batches=8", NULL};

/* An undisturbed run of the churn test's problem with 3 workers: its exported accuracy. */
static double undisturbed_accuracy(void) {
    run_t r = {0};
    start_coord(&r, "calm.bin", "3", "6000", 2, NULL, STABLE);
    start_node(&r, "tcp://127.0.0.1:*");
    start_node(&r, "tcp://127.0.0.1:*");
    for (int i = 0; i < 3; i++) start_worker(&r);
    finish_all(&r, RUN_TIMEOUT_S);
    util_expect_exit(r.p[0], 0);
    long rl, rt;
    check_chunks(r.p[0]->out.buf, 3, &rl, &rt);
    cr_assert_eq(rl + rt, 0, "an undisturbed run gives nothing back:\n%s", r.p[0]->out.buf);
    double acc = exported_accuracy(r.p[0]->out.buf);
    free_run(&r);
    return acc;
}

Test(elastic, churn_kill_join_and_leave_completes_every_chunk_once) {
    run_t r = {0};
    start_coord(&r, "churn.bin", "3", "6000", 2, NULL, STABLE);
    start_node(&r, "tcp://127.0.0.1:*");
    start_node(&r, "tcp://127.0.0.1:*");
    proc_t *w[3];
    for (int i = 0; i < 3; i++) w[i] = start_worker(&r);
    wait_for(&r, "joined; 3 workers", 1, 60);
    wait_for(&r, "epoch 1/3 step", 1, 60);

    /* kill -9 one worker mid-epoch: declared dead after the timeout, its chunk leased again */
    cr_assert_eq(kill(w[1]->pid, SIGKILL), 0);
    finish_one(&r, w[1], 10);
    cr_assert(w[1]->signaled && w[1]->termsig == SIGKILL);
    wait_for(&r, ") died: silent for", 1, 30);

    /* two join while the run goes on */
    start_worker(&r);
    start_worker(&r);
    wait_for(&r, "joined; 4 workers", 1, 60);
    wait_for(&r, "step", 3, 60);

    /* SIGTERM one: it finishes its batch, returns its chunk's rest, says BYE and exits 0 */
    cr_assert_eq(kill(w[2]->pid, SIGTERM), 0);
    finish_one(&r, w[2], 30);
    util_expect_exit(w[2], 0);
    wait_for(&r, ") left: said BYE (normal)", 1, 30);

    finish_all(&r, RUN_TIMEOUT_S);
    for (int i = 0; i < r.n; i++) util_expect_exit(r.p[i], 0);
    const char *rec = r.p[0]->out.buf;
    cr_assert_eq(count(rec, ") joined;"), 5, "%s", rec);
    cr_assert_eq(count(rec, ") died:"), 1, "%s", rec);
    cr_assert_eq(count(rec, ") left:"), 1, "%s", rec);
    long released, returned;
    check_chunks(rec, 3, &released, &returned);
    /* The killed worker's chunk is usually leased again and the stopped one's returned, but a
     * worker killed between a CHUNK_DONE and its next LEASE holds nothing (seen on a loaded
     * machine), so the give-back paths are logged here, not required; the exactly-once check
     * above holds either way. */
    if (released + returned == 0) cr_log_warn("no chunk was given back in this run:\n%s", r.p[0]->err.buf);
    cr_assert(strstr(w[2]->err.buf, "stopping on request") != NULL, "%s", w[2]->err.buf);
    double churn = exported_accuracy(rec);
    double calm = undisturbed_accuracy();
    cr_log_info("churn: %.4f, undisturbed: %.4f; %ld chunks re-leased, %ld returned", churn, calm, released, returned);
    /* Churn must cost no accuracy: at most 5 points below the calm run. The churned run trains
     * every sample once per epoch like the calm one, in another order and with other staleness
     * (and the part of a chunk a killed worker trained but did not report, twice). Measured:
     * churned 71.6, 74.1, 72.9% against undisturbed 70.6, 71.7, 71.3% (differences 1.0 to 2.4
     * points). One-sided: the calm async run's own accuracy moves with timing (once 69.25%
     * against a churned 74.30%), and a churned run that scores higher has lost nothing. */
    cr_assert_geq(churn, calm - 0.05, "churned run %.4f, undisturbed %.4f", churn, calm);
    cr_assert_gt(calm, 0.6);
    cr_assert_gt(churn, 0.6);
    free_run(&r);
}

Test(elastic, workers_joining_after_an_empty_start_find_the_run_waiting) {
    run_t r = {0};
    start_coord(&r, "late.bin", "1", "1000", 1, NULL, NULL);
    start_node(&r, "tcp://127.0.0.1:*");
    /* No worker for several timeouts: the run waits instead of failing. */
    const double t0 = util_now_s();
    while (util_now_s() - t0 < 4.0) {
        util_proc_pump(r.p, r.n, util_now_s() + 0.2, NULL, 1);
        for (int i = 0; i < r.n; i++) r.p[i]->timed_out = 0;
    }
    cr_assert(r.p[0]->out.fd >= 0, "the coordinator gave up without workers:\n%s", r.p[0]->err.buf);
    start_worker(&r);
    wait_for(&r, "joined; 1 workers", 1, 30);
    finish_all(&r, RUN_TIMEOUT_S);
    for (int i = 0; i < r.n; i++) util_expect_exit(r.p[i], 0);
    long rl, rt;
    check_chunks(r.p[0]->out.buf, 1, &rl, &rt);
    free_run(&r);
}

/* How many checkpoints of prefix ("node-K-") dir holds, and the newest one's path ("" if none). */
static int checkpoints(const char *dir, const char *prefix, char *newest, size_t len) {
    DIR *d = opendir(dir);
    int k = 0;
    char best[256] = "";
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL)
        if (strncmp(e->d_name, prefix, strlen(prefix)) == 0 && strstr(e->d_name, ".tmp") == NULL) {
            k++;
            if (strcmp(e->d_name, best) > 0) snprintf(best, sizeof best, "%s", e->d_name);
        }
    if (d != NULL) closedir(d);
    snprintf(newest, len, "%s/%s", dir, best);
    if (best[0] == '\0') newest[0] = '\0';
    return k;
}

/* Kills the node bound at a known endpoint with SIGKILL mid-training and starts it again
 * there; with corrupt set, first flips a byte of its newest checkpoint. */
static void node_restart(int corrupt) {
    char ckpt[128];
    snprintf(ckpt, sizeof ckpt, "%s/ckpt", tmp_dir);
    run_t r = {0};
    start_coord(&r, "restart.bin", "2", "6000", 2, ckpt, NULL);
    char bind1[64], any1[64];
    const int port1 = util_free_port();
    snprintf(bind1, sizeof bind1, "tcp://127.0.0.1:%d", port1);
    snprintf(any1, sizeof any1, "tcp://0.0.0.0:%d", port1);
    start_node(&r, "tcp://127.0.0.1:*");
    proc_t *n1 = start_node_as(&r, any1, bind1);
    start_worker(&r);
    start_worker(&r);
    wait_for(&r, "epoch 1/2 step", 3, 60);
    /* The node at bind1 is shard K: "shard K: ENDPOINT ..." in the record. */
    char key[96], prefix[32], member[48];
    snprintf(key, sizeof key, ": %s params", bind1);
    const char *l = strstr(r.p[0]->out.buf, key);
    cr_assert_not_null(l, "%s", r.p[0]->out.buf);
    while (l > r.p[0]->out.buf && l[-1] != '\n') l--;
    unsigned k;
    cr_assert_eq(sscanf(l, "shard %u:", &k), 1);
    snprintf(prefix, sizeof prefix, "node-%u-", k);
    snprintf(member, sizeof member, "member: node %u (", k);

    char newest[512] = "";
    const double t0 = util_now_s();
    /* two checkpoints, so that a corrupt one has a predecessor */
    while (util_now_s() - t0 < 30 && checkpoints(ckpt, prefix, newest, sizeof newest) < 2) {
        util_proc_pump(r.p, r.n, util_now_s() + 0.1, NULL, 1);
        for (int i = 0; i < r.n; i++) r.p[i]->timed_out = 0;
    }
    cr_assert_eq(kill(n1->pid, SIGKILL), 0);
    finish_one(&r, n1, 10);
    wait_for(&r, member, 1, 30);
    cr_assert_geq(checkpoints(ckpt, prefix, newest, sizeof newest), 1, "node %u wrote no checkpoint in %s", k, ckpt);
    if (corrupt) {
        FILE *f = fopen(newest, "r+b");
        cr_assert_not_null(f);
        fseek(f, 60, SEEK_SET);
        int ch = fgetc(f);
        fseek(f, 60, SEEK_SET);
        fputc(ch ^ 0x5a, f);
        fclose(f);
    }
    proc_t *again = start_node_as(&r, any1, bind1);
    wait_for(&r, "is back at version", 1, 60);
    finish_all(&r, RUN_TIMEOUT_S);
    for (int i = 0; i < r.n; i++) util_expect_exit(r.p[i], 0);
    const char *rec = r.p[0]->out.buf;
    unsigned long long version;
    l = strstr(rec, "is back at version ");
    cr_assert(sscanf(l, "is back at version %llu", &version) == 1 && version > 0, "%s", rec);
    cr_assert(strstr(again->err.buf, "restored checkpoint") != NULL, "%s", again->err.buf);
    if (corrupt) {
        cr_assert(strstr(again->err.buf, "is unusable (checksum mismatch") != NULL, "%s", again->err.buf);
        cr_assert(strstr(again->err.buf, newest) != NULL, "the message names %s:\n%s", newest, again->err.buf);
    }
    /* The node's schedule step resumed from the checkpoint, not from 0: its version went on
     * from the restored one to the end. */
    cr_assert(strstr(rec, "done: ") != NULL, "%s", rec);
    long rl, rt;
    check_chunks(rec, 2, &rl, &rt);
    free_run(&r);
}

Test(elastic, a_killed_node_restarts_from_its_checkpoint_and_the_run_completes) { node_restart(0); }

Test(elastic, a_corrupt_newest_checkpoint_falls_back_to_the_previous_one) { node_restart(1); }

/* VmRSS in kB and the number of open descriptors of pid. */
static void usage_of(pid_t pid, long *rss_kb, int *fds) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    *rss_kb = -1;
    while (fgets(line, sizeof line, f) != NULL)
        if (sscanf(line, "VmRSS: %ld kB", rss_kb) == 1) break;
    fclose(f);
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    cr_assert_not_null(d);
    *fds = 0;
    while (readdir(d) != NULL) (*fds)++;
    closedir(d);
}

Test(elastic, a_hundred_workers_joining_and_leaving_leave_memory_and_descriptors_flat) {
    util_asan_no_quarantine();
    run_t r = {0};
    start_coord(&r, "many.bin", "1000", "6000", 1, NULL, NULL);
    proc_t *node = start_node(&r, "tcp://127.0.0.1:*");
    long rss0 = 0, nrss0 = 0;
    int fd0 = 0, nfd0 = 0;
    char joined[64];
    for (int i = 0; i < 100; i++) {
        proc_t *w = start_worker(&r);
        snprintf(joined, sizeof joined, ") joined; 1 workers");
        wait_for(&r, joined, i + 1, 60);
        cr_assert_eq(kill(w->pid, SIGTERM), 0);
        finish_one(&r, w, 30);
        util_expect_exit(w, 0);
        wait_for(&r, ") left: said BYE", i + 1, 30);
        if (i == 9) {
            usage_of(r.p[0]->pid, &rss0, &fd0);
            usage_of(node->pid, &nrss0, &nfd0);
        }
    }
    long rss1, nrss1;
    int fd1, nfd1;
    usage_of(r.p[0]->pid, &rss1, &fd1);
    usage_of(node->pid, &nrss1, &nfd1);
    cr_log_info("coordinator: %ld -> %ld kB, %d -> %d fds; node: %ld -> %ld kB, %d -> %d fds", rss0, rss1, fd0, fd1,
                nrss0, nrss1, nfd0, nfd1);
    cr_assert_leq(fd1, fd0 + 2, "coordinator descriptors grew from %d to %d", fd0, fd1);
    cr_assert_leq(nfd1, nfd0 + 2, "node descriptors grew from %d to %d", nfd0, nfd1);
    /* Under AddressSanitizer freed blocks wait in its quarantine (up to 256 MB) before reuse, so
     * the resident set creeps up without a leak; there LeakSanitizer checks for leaks instead. */
#if defined(__SANITIZE_ADDRESS__)
    const long slack_kb = 8192;
#else
    const long slack_kb = 2048;
#endif
    cr_assert_leq(rss1, rss0 + slack_kb, "coordinator memory grew from %ld to %ld kB", rss0, rss1);
    cr_assert_leq(nrss1, nrss0 + slack_kb, "node memory grew from %ld to %ld kB", nrss0, nrss1);
    const char *rec = r.p[0]->out.buf;
    cr_assert_eq(count(rec, ") joined;"), 100);
    kill(r.p[0]->pid, SIGINT); /* the run is far from over: end it, exporting what there is */
    finish_all(&r, 60);
    util_expect_exit(r.p[0], 130);
    free_run(&r);
}

/* The sum over the processes' stdout of the numbers after `key` ("applied " for the nodes'
 * applied pushes, "per shard: " for the workers' acknowledged pushes, summed over shards). */
static unsigned long long sum_after(run_t *r, const char *key) {
    unsigned long long total = 0;
    for (int i = 0; i < r->n; i++)
        for (const char *s = strstr(r->p[i]->out.buf, key); s != NULL; s = strstr(s + 1, key)) {
            const char *q = s + strlen(key);
            for (;;) {
                char *end;
                unsigned long long v = strtoull(q, &end, 10);
                if (end == q) break;
                total += v;
                if (*end != ',') break;
                q = end + 1;
            }
        }
    return total;
}

/* kill -9 of the coordinator mid-epoch, and the same command again on the same endpoint: it
 * resumes from its checkpoint, the nodes (which kept serving) and the workers register again,
 * the workers report the chunks they held, and the run completes with every chunk of every
 * epoch completed exactly once and every acknowledged push applied once. */
Test(elastic, a_killed_coordinator_resumes_from_its_checkpoint_and_every_chunk_completes_once) {
    char ckpt[128];
    snprintf(ckpt, sizeof ckpt, "%s/ckpt", tmp_dir);
    run_t r = {0};
    start_coord(&r, "resume.bin", "2", "6000", 2, ckpt, NULL);
    start_node(&r, "tcp://127.0.0.1:*");
    start_node(&r, "tcp://127.0.0.1:*");
    start_worker(&r);
    start_worker(&r);
    wait_for(&r, "epoch 1/2 step", 2, 60);
    proc_t *old = r.p[0];
    cr_assert_eq(kill(old->pid, SIGKILL), 0);
    finish_one(&r, old, 10);
    start_coord(&r, "resume.bin", "2", "6000", 2, ckpt, NULL);
    proc_t *tmp = r.p[0]; /* the new coordinator's record is the one the helpers read */
    r.p[0] = r.p[r.n - 1];
    r.p[r.n - 1] = tmp;
    wait_for(&r, "resumed from ", 1, 60);
    finish_all(&r, RUN_TIMEOUT_S);
    for (int i = 0; i < r.n; i++) util_expect_exit(r.p[i], 0);
    const char *rec = r.p[0]->out.buf;
    cr_assert(strstr(rec, "epoch 1/2, step ") != NULL, "resumed in the first epoch:\n%s", rec);
    cr_assert_eq(count(rec, "is back at version "), 2, "%s", rec);
    long released, returned;
    check_chunks(rec, 2, &released, &returned);
    unsigned long long applied = sum_after(&r, "applied "), acked = sum_after(&r, "per shard: ");
    /* Every acknowledged push was applied once. A push a worker gave up while the coordinator
     * was away (at most one in flight per worker and node) may be applied unacknowledged. */
    cr_assert_gt(applied, 0);
    cr_assert(acked <= applied && applied <= acked + 4, "the nodes applied %llu pushes, the workers had %llu "
              "acknowledged", applied, acked);
    cr_log_info("coordinator restart: %llu pushes applied, %llu acknowledged", applied, acked);
    int rejoined = 0;
    for (int i = 0; i < r.n; i++) rejoined += strstr(r.p[i]->err.buf, "registered again") != NULL;
    cr_assert_eq(rejoined, 4, "both nodes and both workers registered again");
    /* A finished run is not resumed: a coordinator started again on its checkpoints refuses. */
    run_t again = {0};
    start_coord(&again, "again.bin", "2", "6000", 2, ckpt, NULL);
    finish_all(&again, 60);
    util_expect_exit(again.p[0], 1);
    cr_assert(strstr(again.p[0]->err.buf, "is of a run that finished") != NULL, "%s", again.p[0]->err.buf);
    free_run(&again);
    free_run(&r);
}
