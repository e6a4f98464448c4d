/* test_load.c - load: 32 worker processes push to 2 nodes on loopback (a tiny ResNet-8, async)
 * for LOAD_SECONDS seconds (15 by default; `make test-load` runs 120), then the coordinator is
 * interrupted and everyone stops cleanly.
 *
 * What is counted: no update is lost (for each node, the pushes it applied equal the sum of
 * the pushes the workers report as acknowledged by it, and /status agreed with the nodes while
 * the run went on), and each node's resident memory stays flat (VmRSS of /proc/PID/status after
 * a warm-up and at the end; the bound is a generous 8 MiB, the numbers are logged). No timing
 * is asserted. Every wait is bounded; every process is reaped. */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "util.h"
#include "wire.h"

enum { WORKERS = 32, NODES = 2, RSS_SLACK_KB = 8 * 1024 };

static char tmp_dir[64];

static void setup(void) { util_tmpdir_make(tmp_dir, "load"); }

static void teardown(void) {
    util_proc_kill_all();
    util_tmpdir_remove(tmp_dir);
}

TestSuite(load, .init = setup, .fini = teardown, .timeout = 1800);

/* VmRSS of pid in KiB. */
static long rss_kb(pid_t pid) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "%s", path);
    long kb = -1;
    while (fgets(line, sizeof line, f) != NULL)
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1) break;
    fclose(f);
    cr_assert_gt(kb, 0, "no VmRSS in %s", path);
    return kb;
}

/* Pumps the processes' output for s seconds. */
static void pump_for(util_proc_t **p, int n, double s) {
    const double end = util_now_s() + s;
    while (util_now_s() < end) {
        util_proc_pump(p, n, util_now_s() + 0.1, NULL, 1);
        for (int i = 0; i < n; i++) p[i]->timed_out = 0;
    }
}

/* "updates": N of shard k in a /status document (the k-th occurrence after "shards"). */
static uint64_t status_updates(const char *doc, int k) {
    const char *p = strstr(doc, "\"shards\"");
    for (int i = 0; p != NULL && i <= k; i++) p = strstr(p + 1, "\"updates\": ");
    return p ? strtoull(p + strlen("\"updates\": "), NULL, 10) : 0;
}

Test(load, thirty_two_workers_on_two_nodes_lose_no_update_and_the_nodes_memory_stays_flat) {
    const char *env = getenv("LOAD_SECONDS");
    const double seconds = env != NULL && atof(env) > 0 ? atof(env) : 15.0;
    cr_assert_leq(seconds, 1200.0, "LOAD_SECONDS is at most 1200");
    const double warmup = seconds / 4 < 5 ? seconds / 4 : 5;
    util_asan_no_quarantine(); /* the nodes' memory, not ASan's quarantine */
    const int sport = util_free_port();
    char ep[64], port_set[64], out_set[320];
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", util_free_port());
    snprintf(port_set, sizeof port_set, "status.port=%d", sport);
    snprintf(out_set, sizeof out_set, "train.output=%s/m.bin", tmp_dir);
    util_proc_t coord, node[NODES], worker[WORKERS];
    util_proc_t *all[1 + NODES + WORKERS];
    int n = 0;
    util_proc_start(&coord, (const char *const[]){"coord", "configs/fmnist-resnet8-w2a2-aux.ini", "--nodes", "2",
                                                   "--bind", ep, "--set", "model.widths=4,8,8", "--set",
                                                   "data.train_limit=4096", "--set", "data.test_limit=128", "--set",
                                                   "train.epochs=10000", "--set", "train.batch_size=16", "--set",
                                                   "cluster.chunk_batches=4", "--set", "train.threads=1", "--set",
                                                   "train.log_interval=1000", "--set", "cluster.consistency=async",
                                                   "--set", "cluster.timeout_ms=30000", "--set", port_set, "--set",
                                                   out_set, NULL});
    all[n++] = &coord;
    for (int i = 0; i < NODES; i++) {
        util_proc_start(&node[i], (const char *const[]){"ps", "--coordinator", ep, NULL});
        all[n++] = &node[i];
    }
    for (int i = 0; i < WORKERS; i++) {
        util_proc_start(&worker[i], (const char *const[]){"worker", "--coordinator", ep, "--threads", "1", NULL});
        all[n++] = &worker[i];
    }
    const double deadline = util_now_s() + seconds + 600;
    cr_assert(util_proc_pump(all, n, deadline, "worker 31 registered", 2), "32 workers did not register:\n%s",
              coord.err.buf);

    /* The clock starts once both shards take updates (32 workers load their data first). */
    int training = 0;
    while (!training && util_now_s() < deadline) {
        pump_for(all, n, 0.5);
        char *d = NULL;
        if (util_http_get(sport, "/status", &d) == 200)
            training = strstr(d, "\"state\": \"training\"") != NULL && status_updates(d, 0) > 0 &&
                       status_updates(d, 1) > 0;
        free(d);
    }
    cr_assert(training, "the run never trained:\n%s", coord.err.buf);
    pump_for(all, n, warmup);
    long rss0[NODES], rss1[NODES];
    for (int i = 0; i < NODES; i++) rss0[i] = rss_kb(node[i].pid);
    char *doc = NULL;
    cr_assert_eq(util_http_get(sport, "/status", &doc), 200);
    uint64_t seen0[NODES];
    for (int i = 0; i < NODES; i++) seen0[i] = status_updates(doc, i);
    free(doc);
    pump_for(all, n, seconds - warmup);
    for (int i = 0; i < NODES; i++) rss1[i] = rss_kb(node[i].pid);
    cr_assert_eq(util_http_get(sport, "/status", &doc), 200);
    uint64_t seen1[NODES];
    for (int i = 0; i < NODES; i++) seen1[i] = status_updates(doc, i);
    free(doc);

    /* Stop: DONE (aborted) to the workers, which finish their requests and say BYE; the
     * coordinator pulls and exports the model, then DONE to the nodes. */
    kill(coord.pid, SIGINT);
    util_proc_finish(all, n, util_now_s() + 300);
    util_expect_exit(&coord, 130);
    for (int i = 0; i < NODES; i++) util_expect_exit(&node[i], 0);
    for (int i = 0; i < WORKERS; i++) util_expect_exit(&worker[i], 0);

    uint64_t applied[NODES] = {0}, acked[NODES] = {0};
    for (int i = 0; i < NODES; i++) {
        unsigned id;
        uint64_t a;
        const char *l = strstr(node[i].out.buf, "node ");
        cr_assert(l != NULL && sscanf(l, "node %u: applied %" SCNu64, &id, &a) == 2 && id < NODES, "%s",
                  node[i].out.buf);
        applied[id] = a;
    }
    for (int i = 0; i < WORKERS; i++) {
        unsigned id;
        uint64_t total, s0, s1;
        const char *l = strstr(worker[i].out.buf, "worker ");
        cr_assert(l != NULL && sscanf(l, "worker %u: pushed %" SCNu64 " pushes (per shard: %" SCNu64 ",%" SCNu64,
                                      &id, &total, &s0, &s1) == 4, "%s", worker[i].out.buf);
        cr_assert_eq(s0 + s1, total);
        acked[0] += s0, acked[1] += s1;
    }
    for (int i = 0; i < NODES; i++) {
        cr_log_info("node %d: %" PRIu64 " pushes applied, %" PRIu64 " acknowledged to the workers; /status showed %"
                    PRIu64 " then %" PRIu64 "; VmRSS %ld kB after %.0f s of warm-up, %ld kB after %.0f s (%+ld kB)",
                    i, applied[i], acked[i], seen0[i], seen1[i], rss0[i], warmup, rss1[i], seconds, rss1[i] - rss0[i]);
        printf("load: node %d: %" PRIu64 " pushes applied = %" PRIu64 " acknowledged; VmRSS %ld kB -> %ld kB (%+ld kB) "
               "over %.0f s with %d workers\n", i, applied[i], acked[i], rss0[i], rss1[i], rss1[i] - rss0[i],
               seconds - warmup, WORKERS);
        cr_assert_eq(applied[i], acked[i], "node %d applied %" PRIu64 " pushes, the workers had %" PRIu64
                     " acknowledged", i, applied[i], acked[i]);
        cr_assert_gt(seen1[i], seen0[i], "node %d applied nothing between the two looks at /status", i);
        cr_assert_leq(seen1[i], applied[i], "/status showed more updates than node %d applied", i);
        cr_assert_leq(rss1[i] - rss0[i], RSS_SLACK_KB, "node %d grew by %ld kB", i, rss1[i] - rss0[i]);
    }
    fflush(stdout);
    util_proc_free(&coord);
    for (int i = 0; i < NODES; i++) util_proc_free(&node[i]);
    for (int i = 0; i < WORKERS; i++) util_proc_free(&worker[i]);
}
