/* test_hostile.c - hostile peers and the limits, against real processes: `auxps coord`, one
 * `auxps ps` and a real `auxps worker` training while fake peers (ZeroMQ DEALERs of this test,
 * tests/util.h) send everything docs/PROTOCOL.md says a receiver must survive.
 *
 * What is counted: every hostile message gets the ERROR the document names (or, over the
 * frame size limit, no answer at all: ZeroMQ drops the connection); the node and the
 * coordinator count each refusal by kind, and the counts reach /status and /metrics (the
 * node's through NODE_STATS) and the closing lines; the node applies exactly the pushes the
 * real worker had acknowledged, none of the hostile ones, and the final parameters are finite.
 * The coordinator refuses a 1025th worker with ERROR FULL.
 *
 * Every process a test starts is recorded; the suite's .fini kills and reaps what a failed
 * assertion left. Every wait has a deadline. */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "util.h"
#include "wire.h"

enum { CHILD_TIMEOUT_S = 150, REPLY_MS = 5000 };

#define CONFIG "configs/fmnist-resnet8-w2a2-aux.ini"

static char tmp_dir[64];

static void setup(void) { util_tmpdir_make(tmp_dir, "hostile"); }

static void teardown(void) {
    util_proc_kill_all();
    util_tmpdir_remove(tmp_dir);
}

TestSuite(hostile, .init = setup, .fini = teardown, .timeout = 300);

static const char *line_starting(const char *text, const char *prefix) {
    for (const char *l = text; l != NULL && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
        if (strncmp(l, prefix, strlen(prefix)) == 0) return l;
    return NULL;
}

/* Counts the occurrences of needle in text. */
static int occurrences(const char *text, const char *needle) {
    int n = 0;
    for (const char *p = strstr(text, needle); p != NULL; p = strstr(p + 1, needle)) n++;
    return n;
}

/* The counts "malformed A, bad_version B, ..." that follow `after` in text. */
static void parse_kinds(const char *text, const char *after, uint64_t kinds[WIRE_REJECT_COUNT]) {
    const char *p = strstr(text, after);
    cr_assert_not_null(p, "no '%s' in:\n%s", after, text);
    p += strlen(after);
    for (int k = 0; k < WIRE_REJECT_COUNT; k++) {
        char want[32];
        snprintf(want, sizeof want, "%s ", wire_reject_name((uint32_t)k));
        const char *q = strstr(p, want);
        cr_assert_not_null(q, "no count of %s after '%s': %.300s", want, after, p);
        kinds[k] = strtoull(q + strlen(want), NULL, 10);
    }
}

static void expect_kinds(const char *who, const uint64_t *got, const uint64_t *want) {
    for (int k = 0; k < WIRE_REJECT_COUNT; k++)
        cr_assert_eq(got[k], want[k], "%s counted %" PRIu64 " %s, expected %" PRIu64, who, got[k],
                     wire_reject_name((uint32_t)k), want[k]);
}

/* Sends m on p and returns the ERROR code it gets (m must be refused). */
static uint32_t refused_with(util_peer_t *p, wire_msg_t *m, const char *what) {
    auxps_error_t e = {0};
    cr_assert_eq(wire_send(p->sock, NULL, 0, m, NULL, NULL, 0, &e), 0, "%s: %s", what, e.msg);
    uint32_t rid, code = util_peer_expect_error(p, what, &rid, REPLY_MS);
    cr_assert_eq(rid, m->rid, "%s: the ERROR answers rid %u, not %u", what, rid, m->rid);
    return code;
}

static wire_msg_t push_of(uint32_t rid, uint32_t worker, uint32_t shard, uint64_t off, uint64_t len, const float *g) {
    wire_msg_t m;
    memset(&m, 0, sizeof m);
    m.type = WIRE_PUSH;
    m.rid = rid;
    m.push = (wire_push_t){.worker = worker, .shard = shard, .offset = off, .length = len, .clock = 0,
                           .version = 0, .samples = 32, .encoding = WIRE_ENC_F32};
    m.payload = g;
    m.payload_size = len * sizeof(float);
    return m;
}

static wire_msg_t pull_of(uint32_t rid, uint32_t worker, uint32_t shard, uint64_t off, uint64_t len) {
    wire_msg_t m;
    memset(&m, 0, sizeof m);
    m.type = WIRE_PULL;
    m.rid = rid;
    m.pull = (wire_pull_t){worker, shard, WIRE_VEC_PARAMS, off, len, 0, WIRE_ENC_F32};
    return m;
}

/* Sends m until the node takes the sender's id (it may not have had the coordinator's
 * MEMBERSHIP yet: ERROR NOT_REGISTERED, counted in *unregistered) and returns the final code. */
static uint32_t refused_once_known(util_peer_t *p, wire_msg_t *m, const char *what, uint64_t *unregistered) {
    for (int i = 0; i < 50; i++) {
        uint32_t code = refused_with(p, m, what);
        if (code != WIRE_ERR_NOT_REGISTERED) return code;
        (*unregistered)++;
        zmq_poll(NULL, 0, 100);
        m->rid++;
    }
    cr_assert_fail("%s: the node never took the worker id", what);
    return 0;
}

/* Registers a fake worker with the coordinator through p: HELLO, then WELCOME (HEARTBEATs
 * skipped). Returns its id. */
static uint32_t register_worker(util_peer_t *p) {
    wire_msg_t m;
    memset(&m, 0, sizeof m);
    m.type = WIRE_HELLO;
    m.rid = 1;
    m.hello = (wire_hello_t){.role = WIRE_ROLE_WORKER, .encodings = 1u << WIRE_ENC_F32};
    snprintf(m.hello.name, sizeof m.hello.name, "hostile:1");
    auxps_error_t e = {0};
    cr_assert_eq(wire_send(p->sock, NULL, 0, &m, NULL, NULL, 0, &e), 0, "%s", e.msg);
    const double deadline = util_now_s() + 10;
    while (util_now_s() < deadline) {
        wire_in_t in = {0};
        wire_msg_t r;
        if (util_recv_within(p->sock, 0, &in, &r, 1000) != 0) continue;
        uint32_t type = r.type, id = r.welcome.id;
        wire_msg_clear(&r);
        wire_in_close(&in);
        if (type == WIRE_WELCOME) return id;
        cr_assert_eq(type, WIRE_HEARTBEAT, "the coordinator answered HELLO with %s", wire_type_name(type));
    }
    cr_assert_fail("no WELCOME for the fake worker");
    return 0;
}

static uint64_t json_count(const char *json, const char *key) {
    const char *p = strstr(json, key);
    return p ? strtoull(p + strlen(key), NULL, 10) : UINT64_MAX;
}

/* The "rejected" object that follows `anchor` in a /status document, read key by key. */
static void status_kinds(const char *doc, const char *anchor, uint64_t kinds[WIRE_REJECT_COUNT]) {
    const char *p = strstr(doc, anchor);
    const char *r = p ? strstr(p, "\"rejected\": {") : NULL;
    for (int k = 0; k < WIRE_REJECT_COUNT; k++) {
        char key[48];
        snprintf(key, sizeof key, "\"%s\": ", wire_reject_name((uint32_t)k));
        kinds[k] = r ? json_count(r, key) : UINT64_MAX;
    }
}

static int same_kinds(const uint64_t *a, const uint64_t *b) {
    return memcmp(a, b, WIRE_REJECT_COUNT * sizeof *a) == 0;
}

Test(hostile, every_hostile_kind_is_refused_counted_by_kind_and_shown_while_a_worker_trains) {
    const int sport = util_free_port();
    char ep[64], port_set[64], out_set[320], dump[256];
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", util_free_port());
    snprintf(port_set, sizeof port_set, "status.port=%d", sport);
    snprintf(out_set, sizeof out_set, "train.output=%s/m.bin", tmp_dir);
    snprintf(dump, sizeof dump, "%s/params.f32", tmp_dir);
    /* A run far longer than the checks on any machine (a fixed length was once too short, 2.4 s
     * for 6 epochs, and once too long under sanitizers, 24 epochs past the deadline): the
     * hostile traffic and the status checks happen while the worker trains, then SIGINT ends
     * the run, which still exports and counts. */
    util_proc_t coord, node, worker;
    util_proc_start(&coord, (const char *const[]){"coord", CONFIG, "--nodes", "1", "--bind", ep, "--dump-params", dump,
                                                   "--set", "model.widths=4,8,8", "--set", "data.train_limit=3200",
                                                   "--set", "data.test_limit=256", "--set", "train.epochs=1000", "--set",
                                                   "train.batch_size=32", "--set", "cluster.chunk_batches=4", "--set",
                                                   "train.threads=1", "--set", "train.log_interval=50", "--set",
                                                   "cluster.heartbeat_ms=200", "--set", "cluster.timeout_ms=5000",
                                                   "--set", port_set, "--set", out_set, NULL});
    util_proc_start(&node, (const char *const[]){"ps", "--coordinator", ep, NULL});
    util_proc_t *cn[2] = {&coord, &node};
    const double deadline = util_now_s() + CHILD_TIMEOUT_S;
    cr_assert(util_proc_pump(cn, 2, deadline, "shard 0: ", 1), "no shard map:\n%s\n%s", coord.out.buf, coord.err.buf);
    char node_ep[128];
    uint64_t off, len;
    const char *l = line_starting(coord.out.buf, "shard 0: ");
    cr_assert_eq(sscanf(l, "shard 0: %127s params %" SCNu64 "+%" SCNu64, node_ep, &off, &len), 3, "%.200s", l);
    util_proc_start(&worker, (const char *const[]){"worker", "--coordinator", ep, "--threads", "1", NULL});
    util_proc_t *all[3] = {&coord, &node, &worker};
    cr_assert(util_proc_pump(all, 3, deadline, "worker 0 registered", 2), "the worker never registered:\n%s",
              coord.err.buf);

    uint64_t want_node[WIRE_REJECT_COUNT] = {0}, want_coord[WIRE_REJECT_COUNT] = {0};
    float *g = calloc(len, sizeof *g);
    cr_assert_not_null(g);

    /* Malformed, another version, too large, out of range, NaN in a header: to both. */
    util_peer_t pc, pn;
    util_peer_open(&pc, ep);
    util_peer_open(&pn, node_ep);
    util_send_malformed(&pc, "coordinator", want_coord);
    util_send_malformed(&pn, "node", want_node);

    /* A shard, an offset or a range that is not the node's: OUT_OF_RANGE. */
    util_peer_t pr;
    util_peer_open(&pr, node_ep);
    wire_msg_t m = push_of(501, 900, 0, off + 1, len - 1, g);
    cr_assert_eq(refused_with(&pr, &m, "node: PUSH of part of the shard"), WIRE_ERR_OUT_OF_RANGE);
    m = pull_of(502, 900, 0, off + len - 1, 2);
    cr_assert_eq(refused_with(&pr, &m, "node: PULL past the shard"), WIRE_ERR_OUT_OF_RANGE);
    m = pull_of(503, 900, 5, off, 1);
    cr_assert_eq(refused_with(&pr, &m, "node: PULL of another shard"), WIRE_ERR_OUT_OF_RANGE);
    want_node[WIRE_REJECT_OUT_OF_RANGE] += 3;
    /* Pushes and pulls from ids the coordinator never announced: NOT_REGISTERED. */
    m = push_of(504, 900, 0, off, len, g);
    cr_assert_eq(refused_with(&pr, &m, "node: PUSH from an unregistered worker"), WIRE_ERR_NOT_REGISTERED);
    m = pull_of(505, 901, 0, off, 1);
    cr_assert_eq(refused_with(&pr, &m, "node: PULL from an unregistered worker"), WIRE_ERR_NOT_REGISTERED);
    want_node[WIRE_REJECT_UNREGISTERED] += 2;
    memset(&m, 0, sizeof m);
    m.type = WIRE_LEASE_REQ;
    m.rid = 506;
    m.lease_req.worker = 3;
    cr_assert_eq(refused_with(&pc, &m, "coordinator: LEASE_REQ without HELLO"), WIRE_ERR_NOT_REGISTERED);
    memset(&m, 0, sizeof m);
    m.type = WIRE_PROGRESS;
    m.rid = 507;
    cr_assert_eq(refused_with(&pc, &m, "coordinator: PROGRESS without HELLO"), WIRE_ERR_NOT_REGISTERED);
    want_coord[WIRE_REJECT_UNREGISTERED] += 2;

    /* A registered worker whose gradients and statistics hold NaN or Inf: NON_FINITE, and the
     * node applies nothing of them. */
    util_peer_t ph, pd;
    util_peer_open(&ph, ep);
    util_peer_open(&pd, node_ep);
    const uint32_t id = register_worker(&ph);
    for (size_t i = 0; i < len; i++) g[i] = 1e-3f * (float)(i % 17);
    g[len - 1] = NAN;
    m = push_of(600, id, 0, off, len, g);
    cr_assert_eq(refused_once_known(&pd, &m, "node: PUSH with a NaN", &want_node[WIRE_REJECT_UNREGISTERED]),
                 WIRE_ERR_NON_FINITE);
    g[len - 1] = 0.0f;
    g[0] = -INFINITY;
    m = push_of(700, id, 0, off, len, g);
    cr_assert_eq(refused_with(&pd, &m, "node: PUSH with -Inf"), WIRE_ERR_NON_FINITE);
    g[0] = 0.0f;
    uint64_t soff = 0, slen = 0;
    l = line_starting(coord.out.buf, "shard 0: ");
    const char *st = strstr(l, " stats ");
    cr_assert(st != NULL && sscanf(st, " stats %" SCNu64 "+%" SCNu64, &soff, &slen) == 2, "%.200s", l);
    cr_assert_gt(slen, 0);
    float *sv = calloc(slen, sizeof *sv);
    cr_assert_not_null(sv);
    sv[slen / 2] = NAN;
    memset(&m, 0, sizeof m);
    m.type = WIRE_STATS_PUSH;
    m.rid = 701;
    m.stats_push = (wire_stats_push_t){id, 0, soff, slen, 0, WIRE_STATS_AVERAGE, 32};
    m.payload = sv;
    m.payload_size = slen * sizeof(float);
    cr_assert_eq(refused_with(&pd, &m, "node: STATS_PUSH with a NaN"), WIRE_ERR_NON_FINITE);
    want_node[WIRE_REJECT_NON_FINITE] += 3;
    free(sv);
    memset(&m, 0, sizeof m);
    m.type = WIRE_BYE; /* the fake worker leaves: the run need not wait for it */
    m.rid = 2;
    m.bye = (wire_bye_t){WIRE_ROLE_WORKER, id, 0};
    auxps_error_t e = {0};
    cr_assert_eq(wire_send(ph.sock, NULL, 0, &m, NULL, NULL, 0, &e), 0, "%s", e.msg);

    /* A frame over the maximum message size: ZeroMQ drops the connection before the node or
     * the coordinator sees anything, so there is no answer and no count. */
    const size_t over = WIRE_MAX_PAYLOAD + 1;
    unsigned char *huge = calloc(1, over);
    cr_assert_not_null(huge);
    util_peer_t pbn, pbc;
    util_peer_open(&pbn, node_ep);
    util_peer_open(&pbc, ep);
    m = push_of(800, 902, 0, off, len, NULL);
    unsigned char hdr[256];
    size_t hn = sizeof hdr;
    m.payload = g;
    util_encode(&m, hdr, &hn);
    util_peer_send(&pbn, hdr, hn, huge, over);
    util_peer_send(&pbc, huge, over, NULL, 0);
    free(huge);
    cr_assert(util_peer_silent(&pbn, 1500), "the node answered a frame of %zu bytes", over);
    cr_assert(util_peer_silent(&pbc, 500), "the coordinator answered a frame of %zu bytes", over);
    /* The node still serves: a PULL on a fresh connection (as the coordinator's id, which
     * needs no membership) is answered. */
    util_peer_t pp;
    util_peer_open(&pp, node_ep);
    m = pull_of(801, WIRE_ID_COORD, 0, off, len);
    cr_assert_eq(wire_send(pp.sock, NULL, 0, &m, NULL, NULL, 0, &e), 0, "%s", e.msg);
    wire_in_t in = {0};
    wire_msg_t r;
    cr_assert_eq(util_recv_within(pp.sock, 0, &in, &r, REPLY_MS), 0, "the node stopped serving");
    cr_assert_eq(r.type, WIRE_PULL_REP);
    wire_msg_clear(&r);
    wire_in_close(&in);
    util_peer_t *peers[] = {&pc, &pn, &pr, &ph, &pd, &pbn, &pbc, &pp};
    for (size_t i = 0; i < sizeof peers / sizeof peers[0]; i++) util_peer_close(peers[i]);
    free(g);

    /* The counts reach /status (the node's through NODE_STATS) and /metrics while the run
     * goes on. The real worker's own NOT_REGISTERED retries (a race the protocol allows) are
     * the node's too. */
    uint64_t got_node[WIRE_REJECT_COUNT], got_coord[WIRE_REJECT_COUNT];
    int shown = 0;
    char *doc = NULL;
    while (!shown && util_now_s() < deadline) {
        util_proc_pump(all, 3, util_now_s() + 0.2, NULL, 1);
        all[0]->timed_out = all[1]->timed_out = all[2]->timed_out = 0;
        free(doc);
        doc = NULL;
        if (util_http_get(sport, "/status", &doc) != 200) continue;
        uint64_t w = want_node[WIRE_REJECT_UNREGISTERED];
        want_node[WIRE_REJECT_UNREGISTERED] += (uint64_t)occurrences(worker.err.buf, "does not know this worker yet");
        status_kinds(doc, "\"shards\"", got_node);
        status_kinds(doc, "\"checkpoint\"", got_coord);
        shown = same_kinds(got_node, want_node) && same_kinds(got_coord, want_coord);
        want_node[WIRE_REJECT_UNREGISTERED] = w;
    }
    cr_assert(shown, "/status never showed the expected counts (coordinator malformed %" PRIu64 ", node non_finite %"
              PRIu64 "):\n%s", got_coord[0], got_node[WIRE_REJECT_NON_FINITE], doc ? doc : "(none)");
    free(doc);
    char *metrics = NULL;
    cr_assert_eq(util_http_get(sport, "/metrics", &metrics), 200);
    for (int k = 0; k < WIRE_REJECT_COUNT; k++) {
        char line[160];
        snprintf(line, sizeof line, "auxps_rejected_messages_total{kind=\"%s\"} %" PRIu64 "\n",
                 wire_reject_name((uint32_t)k), want_coord[k]);
        cr_assert_not_null(strstr(metrics, line), "no '%s' in /metrics", line);
        snprintf(line, sizeof line, "auxps_shard_rejected_messages_total{shard=\"0\",kind=\"%s\"} %" PRIu64 "\n",
                 wire_reject_name((uint32_t)k), got_node[k]);
        cr_assert_not_null(strstr(metrics, line), "no '%s' in /metrics", line);
    }
    free(metrics);

    /* Interrupted, the run ends with the export; the node applied exactly what the worker had
     * acknowledged. */
    cr_assert_eq(kill(coord.pid, SIGINT), 0);
    util_proc_finish(all, 3, deadline);
    util_expect_exit(&coord, 130);
    util_expect_exit(&node, 0);
    util_expect_exit(&worker, 0);
    want_node[WIRE_REJECT_UNREGISTERED] += (uint64_t)occurrences(worker.err.buf, "does not know this worker yet");
    uint64_t applied, pushed;
    const char *nl = strstr(node.out.buf, "node 0: applied ");
    const char *wl = strstr(worker.out.buf, "worker 0: pushed ");
    cr_assert(nl != NULL && sscanf(nl, "node 0: applied %" SCNu64, &applied) == 1, "%s", node.out.buf);
    cr_assert(wl != NULL && sscanf(wl, "worker 0: pushed %" SCNu64, &pushed) == 1, "%s", worker.out.buf);
    cr_assert_eq(applied, pushed, "the node applied %" PRIu64 " pushes, the worker had %" PRIu64 " acknowledged",
                 applied, pushed);
    cr_assert_gt(applied, 0, "the worker trained while the hostile peers sent");
    uint64_t kinds[WIRE_REJECT_COUNT];
    parse_kinds(node.err.buf, "messages (", kinds);
    expect_kinds("the node (exit line)", kinds, want_node);
    parse_kinds(coord.out.buf, "(rejected:", kinds);
    expect_kinds("the coordinator (closing line)", kinds, want_coord);

    FILE *f = fopen(dump, "rb");
    cr_assert_not_null(f, "%s", dump);
    float v;
    size_t n = 0, bad = 0;
    while (fread(&v, sizeof v, 1, f) == 1) n++, bad += !isfinite(v);
    fclose(f);
    cr_assert_geq(n, off + len);
    cr_assert_eq(bad, 0, "%zu of %zu final parameters are not finite", bad, n);
    cr_log_info("node refused: malformed %" PRIu64 ", bad_version %" PRIu64 ", too_large %" PRIu64 ", out_of_range %"
                PRIu64 ", unregistered %" PRIu64 ", non_finite %" PRIu64, want_node[0], want_node[1], want_node[2],
                want_node[3], want_node[4], want_node[5]);
    util_proc_free(&coord);
    util_proc_free(&node);
    util_proc_free(&worker);
}

/* The coordinator has 1024 worker slots (ids 0..1023); the 1025th HELLO gets ERROR FULL. */
Test(hostile, a_1025th_worker_gets_error_full) {
    char ep[64];
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", util_free_port());
    util_proc_t coord;
    util_proc_start(&coord, (const char *const[]){"coord", CONFIG, "--nodes", "1", "--bind", ep, "--set",
                                                   "status.enabled=false", "--set", "cluster.timeout_ms=60000",
                                                   NULL});
    util_proc_t *cp[1] = {&coord};
    const double deadline = util_now_s() + 120;
    cr_assert(util_proc_pump(cp, 1, deadline, "listening on ", 2), "%s", coord.err.buf);
    void *ctx = zmq_ctx_new();
    cr_assert_not_null(ctx);
    cr_assert_eq(zmq_ctx_set(ctx, ZMQ_MAX_SOCKETS, 2 * (int)WIRE_MAX_WORKERS + 16), 0);
    enum { N = WIRE_MAX_WORKERS + 1 };
    void **socks = calloc(N, sizeof *socks);
    cr_assert_not_null(socks);
    wire_msg_t m;
    memset(&m, 0, sizeof m);
    m.type = WIRE_HELLO;
    m.hello = (wire_hello_t){.role = WIRE_ROLE_WORKER, .encodings = 1u << WIRE_ENC_F32};
    for (int i = 0; i < N; i++) {
        socks[i] = zmq_socket(ctx, ZMQ_DEALER);
        cr_assert_not_null(socks[i], "socket %d: %s", i, zmq_strerror(zmq_errno()));
        int zero = 0;
        zmq_setsockopt(socks[i], ZMQ_LINGER, &zero, sizeof zero);
        cr_assert_eq(zmq_connect(socks[i], ep), 0);
        if (i == N - 1) /* the last one only once the 1024 others hold their slots */
            cr_assert(util_proc_pump(cp, 1, deadline, "worker 1023 registered", 2), "1024 workers did not register:\n"
                      "%.2000s", coord.err.buf + (coord.err.len > 2000 ? coord.err.len - 2000 : 0));
        snprintf(m.hello.name, sizeof m.hello.name, "fake:%d", i);
        m.rid = (uint32_t)i;
        auxps_error_t e = {0};
        cr_assert_eq(wire_send(socks[i], NULL, 0, &m, NULL, NULL, 0, &e), 0, "%s", e.msg);
    }
    /* The 1025th gets ERROR FULL for its HELLO (HEARTBEATs of a held peer may come first). */
    uint32_t code = 0;
    char text[WIRE_MAX_TEXT + 1] = "";
    while (code == 0 && util_now_s() < deadline) {
        wire_in_t in = {0};
        wire_msg_t r;
        if (util_recv_within(socks[N - 1], 0, &in, &r, 1000) != 0) continue;
        if (r.type == WIRE_ERROR) {
            code = r.error.code;
            snprintf(text, sizeof text, "%s", r.error.text);
            cr_assert_eq(r.rid, (uint32_t)(N - 1));
        } else {
            cr_assert_eq(r.type, WIRE_HEARTBEAT, "the 1025th worker got %s", wire_type_name(r.type));
        }
        wire_msg_clear(&r);
        wire_in_close(&in);
    }
    cr_assert_eq(code, WIRE_ERR_FULL, "the 1025th worker got ERROR %s: %s", wire_err_name(code), text);
    cr_assert_not_null(strstr(text, "1024"), "the refusal does not name the limit: %s", text);
    cr_assert_eq(occurrences(coord.err.buf, " registered: fake:"), (int)WIRE_MAX_WORKERS);
    for (int i = 0; i < N; i++) zmq_close(socks[i]);
    free(socks);
    zmq_ctx_term(ctx);
    kill(coord.pid, SIGTERM);
    util_proc_finish(cp, 1, util_now_s() + 30);
    util_proc_free(&coord);
}
