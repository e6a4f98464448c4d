/* test_node.c - the parameter-server node, run in a thread of the test process with real
 * ZeroMQ sockets over tcp://127.0.0.1: the test plays the coordinator (a ROUTER the node
 * registers with) and one or more workers (DEALERs connected to the node's data endpoint).
 * Covers registration, pulls of the initial slice (against model_init on the same seed), pushes
 * applied exactly as optim_sgd would, the bsp sum and the ssp gate with its heartbeats, the
 * statistics average, refusals of malformed and unexpected messages (the node keeps serving),
 * the routing-id binding and range of worker ids, the coordinator's timeout, and DONE -> BYE with the
 * counters line. The training data (for the schedule's sample count) is Fashion-MNIST. */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "config.h"
#include "model.h"
#include "node.h"
#include "optim.h"
#include "quant.h"
#include "util.h"
#include "wire.h"

#define TRAIN_LIMIT 512
#define BATCH 64
#define SEED 7
#define RECV_MS 15000 /* the longest a reply may take (NODE_READY waits for the data to load) */

typedef struct {
    /* the node under test, in its thread */
    node_t *node;
    pthread_t thread;
    int running;
    volatile sig_atomic_t stop;
    int rc;
    auxps_error_t err;
    char *log, *out;
    size_t log_len, out_len;
    FILE *logf, *outf;
    /* the test's sockets */
    void *ctx, *coord, *w[3];
    unsigned char route[WIRE_MAX_ROUTE]; /* the node's routing id at the coordinator */
    size_t route_size;
    uint32_t rid;
    /* the run */
    auxps_config_t cfg;
    char *config;
    size_t nparams, nstats;
    wire_shard_t shards[2];
    uint32_t id;                         /* the node's shard: 1 */
    size_t split;                        /* where shard 1 starts in params; 0: the middle */
    float *init, *init_stats;            /* model_init(SEED): the whole vectors */
    optim_t optim;
} fx_t;

static fx_t fx;

static void *node_thread(void *arg) {
    fx_t *f = arg;
    f->rc = node_run(f->node, &f->stop, f->logf, f->outf, &f->err);
    return NULL;
}

static void setup(void) {
    memset(&fx, 0, sizeof fx);
    auxps_error_t e = {0};
    config_defaults(&fx.cfg);
    const char *sets[] = {"model.widths=4,8,8", "data.train_limit=512", "train.batch_size=64",
                          "train.epochs=2", "train.seed=7"};
    for (size_t i = 0; i < sizeof sets / sizeof *sets; i++)
        cr_assert_eq(config_set(&fx.cfg, sets[i], &e), 0, "%s", e.msg);
    cr_assert_eq(config_check(&fx.cfg, &e), 0, "%s", e.msg);
    size_t len = 0;
    FILE *f = open_memstream(&fx.config, &len);
    cr_assert_eq(config_write(&fx.cfg, f), 0);
    fclose(f);

    model_t *m = model_new(&fx.cfg.model, 1);
    cr_assert_not_null(m);
    model_init(m, SEED);
    fx.nparams = model_num_params(m);
    fx.nstats = model_num_stats(m);
    fx.init = malloc(fx.nparams * sizeof(float));
    fx.init_stats = malloc(fx.nstats * sizeof(float));
    memcpy(fx.init, model_params(m), fx.nparams * sizeof(float));
    memcpy(fx.init_stats, model_stats(m), fx.nstats * sizeof(float));
    model_destroy(&m);
    const long spe = (TRAIN_LIMIT + BATCH - 1) / BATCH;
    const auxps_config_t *c = &fx.cfg;
    fx.optim = (optim_t){c->train.lr, c->train.momentum, c->train.weight_decay, c->train.nesterov,
                         c->train.schedule, c->train.step_epochs, c->train.step_gamma, spe, spe * 2};

    fx.logf = open_memstream(&fx.log, &fx.log_len);
    fx.outf = open_memstream(&fx.out, &fx.out_len);
    fx.ctx = zmq_ctx_new();
    fx.coord = zmq_socket(fx.ctx, ZMQ_ROUTER);
    int linger = 0;
    zmq_setsockopt(fx.coord, ZMQ_LINGER, &linger, sizeof linger);
    cr_assert_eq(zmq_bind(fx.coord, "tcp://127.0.0.1:*"), 0);
}

static void join_node(void) {
    if (!fx.running) return;
    fx.stop = 2;
    pthread_join(fx.thread, NULL);
    fx.running = 0;
}

static void teardown(void) {
    join_node();
    for (int i = 0; i < 3; i++)
        if (fx.w[i]) zmq_close(fx.w[i]);
    if (fx.coord) zmq_close(fx.coord);
    if (fx.ctx) zmq_ctx_term(fx.ctx);
    node_destroy(&fx.node);
    node_destroy(&fx.node);
    if (fx.logf) fclose(fx.logf);
    if (fx.outf) fclose(fx.outf);
    free(fx.log);
    free(fx.out);
    free(fx.config);
    free(fx.init);
    free(fx.init_stats);
}

TestSuite(node, .init = setup, .fini = teardown, .timeout = 60);

/* ---- messages ---- */

/* The next message of type `type` on sock, skipping HEARTBEATs and NODE_STATS (a node's
 * heartbeat). */
static void expect(void *sock, int router, uint32_t type, wire_in_t *in, wire_msg_t *m) {
    for (;;) {
        cr_assert_eq(util_recv_within(sock, router, in, m, RECV_MS), 0, "no %s within %d ms",
                     wire_type_name(type), RECV_MS);
        if (m->type == type) return;
        cr_assert(m->type == WIRE_HEARTBEAT || m->type == WIRE_NODE_STATS, "expected %s, got %s",
                  wire_type_name(type), wire_type_name(m->type));
        wire_msg_clear(m);
    }
}

static void send_to(void *sock, const void *route, size_t route_size, wire_msg_t *m) {
    auxps_error_t e = {0};
    cr_assert_eq(wire_send(sock, route, route_size, m, NULL, NULL, 0, &e), 0, "%s", e.msg);
}

static void coord_send(wire_msg_t *m) { send_to(fx.coord, fx.route, fx.route_size, m); }

static void *new_worker_socket(void) {
    void *s = zmq_socket(fx.ctx, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    cr_assert_eq(zmq_connect(s, node_endpoint(fx.node)), 0);
    return s;
}

/* Starts the node as shard 1 of 2 and plays the coordinator through NODE_READY. */
static void start_node(uint32_t consistency, uint32_t staleness, uint32_t workers, uint32_t hb_ms,
                       uint32_t timeout_ms) {
    char ep[256];
    size_t len = sizeof ep;
    cr_assert_eq(zmq_getsockopt(fx.coord, ZMQ_LAST_ENDPOINT, ep, &len), 0);
    auxps_error_t e = {0};
    fx.node = node_new(ep, NULL, &e);
    cr_assert_not_null(fx.node, "%s", e.msg);
    cr_assert_eq(pthread_create(&fx.thread, NULL, node_thread, &fx), 0);
    fx.running = 1;

    wire_in_t in = {0};
    wire_msg_t m;
    expect(fx.coord, 1, WIRE_HELLO, &in, &m);
    cr_assert_eq(m.hello.role, WIRE_ROLE_NODE);
    cr_assert_str_eq(m.hello.endpoint, node_endpoint(fx.node));
    cr_assert(m.hello.encodings & 1);
    cr_assert(strncmp(m.hello.endpoint, "tcp://127.0.0.1:", 16) == 0, "%s", m.hello.endpoint);
    memcpy(fx.route, in.route, in.route_size);
    fx.route_size = in.route_size;
    uint32_t hello_rid = m.rid;
    wire_msg_clear(&m);

    const uint64_t half = fx.split ? fx.split : fx.nparams / 2, shalf = fx.nstats / 2;
    fx.shards[0] = (wire_shard_t){.id = 0, .offset = 0, .length = half, .stats_offset = 0, .stats_length = shalf};
    fx.shards[1] = (wire_shard_t){.id = 1, .offset = half, .length = fx.nparams - half,
                                  .stats_offset = shalf, .stats_length = fx.nstats - shalf};
    strcpy(fx.shards[0].endpoint, "tcp://127.0.0.1:1");
    strcpy(fx.shards[1].endpoint, node_endpoint(fx.node));
    fx.id = 1;
    memset(&m, 0, sizeof m);
    m.type = WIRE_WELCOME;
    m.rid = hello_rid;
    m.welcome = (wire_welcome_t){.role = WIRE_ROLE_NODE, .id = fx.id, .consistency = consistency,
                                 .staleness = staleness,
                                 /* as the coordinator: async ids are announced by MEMBERSHIP */
                                 .num_workers = consistency == WIRE_CONS_ASYNC ? WIRE_MAX_WORKERS : workers,
                                 .num_params = fx.nparams, .num_stats = fx.nstats, .seed = SEED,
                                 .stream_seed = 99, .heartbeat_ms = hb_ms, .timeout_ms = timeout_ms,
                                 .shards = fx.shards, .nshards = 2, .config = fx.config};
    coord_send(&m);
    expect(fx.coord, 1, WIRE_NODE_READY, &in, &m);
    cr_assert_eq(m.node_ready.node, 1);
    cr_assert_eq(m.node_ready.offset, half);
    cr_assert_eq(m.node_ready.length, fx.nparams - half);
    cr_assert_eq(m.node_ready.stats_offset, shalf);
    cr_assert_eq(m.node_ready.stats_length, fx.nstats - shalf);
    cr_assert_eq(m.node_ready.version, 0);
    wire_msg_clear(&m);
    wire_in_close(&in);
    if (consistency == WIRE_CONS_ASYNC) { /* elastic membership: the workers are announced */
        for (uint32_t i = 0; i < workers && i < 3; i++) {
            memset(&m, 0, sizeof m);
            m.type = WIRE_MEMBERSHIP;
            m.rid = 500 + i;
            m.membership = (wire_membership_t){i, 1, 0};
            coord_send(&m);
        }
        node_counters_t c = {0};
        for (int t = 0; t < 400 && c.joined < (workers < 3 ? workers : 3); t++) {
            usleep(5000);
            node_get_counters(fx.node, &c);
        }
        cr_assert_eq(c.joined, workers < 3 ? workers : 3, "the node took in the workers");
    }
    for (int i = 0; i < 3; i++) fx.w[i] = new_worker_socket();
}

static const wire_shard_t *my(void) { return &fx.shards[fx.id]; }

/* PULL of the whole shard's vec; values to out (may be NULL). Returns the PULL_REP version. */
static uint64_t pull(void *sock, uint32_t worker, uint32_t vec, uint64_t clock, float *out) {
    wire_msg_t m;
    memset(&m, 0, sizeof m);
    m.type = WIRE_PULL;
    m.rid = ++fx.rid;
    uint64_t off = vec ? my()->stats_offset : my()->offset, len = vec ? my()->stats_length : my()->length;
    m.pull = (wire_pull_t){worker, fx.id, vec, off, len, clock, WIRE_ENC_F32};
    send_to(sock, NULL, 0, &m);
    wire_in_t in = {0};
    expect(sock, 0, WIRE_PULL_REP, &in, &m);
    cr_assert_eq(m.rid, fx.rid);
    cr_assert_eq(m.pull_rep.shard, fx.id);
    cr_assert_eq(m.pull_rep.offset, off);
    cr_assert_eq(m.pull_rep.length, len);
    auxps_error_t e = {0};
    if (out) cr_assert_eq(wire_payload_f32(&m, out, &e), 0, "%s", e.msg);
    uint64_t v = m.pull_rep.version;
    wire_msg_clear(&m);
    wire_in_close(&in);
    return v;
}

static wire_msg_t push_msg(uint32_t worker, uint64_t clock, uint64_t version, uint32_t samples, const float *g) {
    wire_msg_t m;
    memset(&m, 0, sizeof m);
    m.type = WIRE_PUSH;
    m.rid = ++fx.rid;
    m.push = (wire_push_t){worker, fx.id, my()->offset, my()->length, clock, version, samples, WIRE_ENC_F32, NULL, 0};
    m.payload = g;
    m.payload_size = my()->length * sizeof(float);
    return m;
}

/* PUSH of a whole-shard gradient; returns the PUSH_ACK version. */
static uint64_t push(void *sock, uint32_t worker, uint64_t clock, uint64_t version, uint32_t samples, const float *g) {
    wire_msg_t m = push_msg(worker, clock, version, samples, g);
    send_to(sock, NULL, 0, &m);
    wire_in_t in = {0};
    expect(sock, 0, WIRE_PUSH_ACK, &in, &m);
    cr_assert_eq(m.rid, fx.rid);
    cr_assert_eq(m.push_ack.vec, WIRE_VEC_PARAMS);
    uint64_t v = m.push_ack.version;
    wire_msg_clear(&m);
    wire_in_close(&in);
    return v;
}

static void stats_push(void *sock, uint32_t worker, uint32_t samples, uint32_t mode, const float *s) {
    wire_msg_t m;
    memset(&m, 0, sizeof m);
    m.type = WIRE_STATS_PUSH;
    m.rid = ++fx.rid;
    m.stats_push = (wire_stats_push_t){worker, fx.id, my()->stats_offset, my()->stats_length, 0, mode, samples};
    m.payload = s;
    m.payload_size = my()->stats_length * sizeof(float);
    send_to(sock, NULL, 0, &m);
    wire_in_t in = {0};
    expect(sock, 0, WIRE_PUSH_ACK, &in, &m);
    cr_assert_eq(m.push_ack.vec, WIRE_VEC_STATS);
    wire_msg_clear(&m);
    wire_in_close(&in);
}

/* Sends m (or, with raw, the frames as given) and expects ERROR code; returns its text. */
static void expect_error(void *sock, wire_msg_t *m, uint32_t code) {
    if (m) send_to(sock, NULL, 0, m);
    wire_in_t in = {0};
    wire_msg_t r;
    expect(sock, 0, WIRE_ERROR, &in, &r);
    cr_assert_eq(r.error.code, code, "expected ERROR %s, got %s: %s", wire_err_name(code),
                 wire_err_name(r.error.code), r.error.text);
    if (m) cr_assert_eq(r.rid, m->rid);
    wire_msg_clear(&r);
    wire_in_close(&in);
}

static void gradient(float *g, size_t n, float scale, int phase) {
    for (size_t i = 0; i < n; i++) g[i] = scale * sinf((float)(i + (size_t)phase * 7919) * 0.37f);
}

/* DONE from the coordinator; the node answers BYE and its thread ends with rc 0. */
static void finish(void) {
    wire_msg_t m;
    memset(&m, 0, sizeof m);
    m.type = WIRE_DONE;
    m.rid = ++fx.rid;
    m.done = (wire_done_t){WIRE_DONE_FINISHED, 2, 16};
    coord_send(&m);
    wire_in_t in = {0};
    expect(fx.coord, 1, WIRE_BYE, &in, &m);
    cr_assert_eq(m.bye.role, WIRE_ROLE_NODE);
    cr_assert_eq(m.bye.id, fx.id);
    cr_assert_eq(m.bye.reason, 0);
    wire_in_close(&in);
    pthread_join(fx.thread, NULL);
    fx.running = 0;
    cr_assert_eq(fx.rc, 0, "%s", fx.err.msg);
    fflush(fx.outf);
    fflush(fx.logf);
}

/* ---- tests ---- */

Test(node, registers_and_serves_the_initial_slice_of_model_init) {
    start_node(WIRE_CONS_ASYNC, 0, 1, 1000, 60000);
    const size_t len = my()->length, slen = my()->stats_length;
    float *p = malloc(len * sizeof(float)), *s = malloc(slen * sizeof(float));
    cr_assert_eq(pull(fx.w[0], 0, WIRE_VEC_PARAMS, 0, p), 0);
    cr_assert(memcmp(p, fx.init + my()->offset, len * sizeof(float)) == 0, "params differ from model_init");
    cr_assert_eq(pull(fx.w[0], 0, WIRE_VEC_STATS, 0, s), 0);
    cr_assert(memcmp(s, fx.init_stats + my()->stats_offset, slen * sizeof(float)) == 0);
    /* A sub-range is served too, from the same snapshot. */
    wire_msg_t m;
    memset(&m, 0, sizeof m);
    m.type = WIRE_PULL;
    m.rid = 4242;
    m.pull = (wire_pull_t){WIRE_ID_COORD, fx.id, WIRE_VEC_PARAMS, my()->offset + 10, 5, 0, WIRE_ENC_F32};
    send_to(fx.w[1], NULL, 0, &m);
    wire_in_t in = {0};
    expect(fx.w[1], 0, WIRE_PULL_REP, &in, &m);
    float five[5];
    auxps_error_t e = {0};
    cr_assert_eq(wire_payload_f32(&m, five, &e), 0);
    cr_assert(memcmp(five, fx.init + my()->offset + 10, sizeof five) == 0);
    wire_msg_clear(&m);
    wire_in_close(&in);
    finish();
    cr_assert_str_eq(fx.out, "node 1: applied 0 pushes, 0 stats pushes, version 0, max staleness 0\n");
    free(p);
    free(s);
}

Test(node, a_push_changes_the_slice_exactly_as_optim_sgd) {
    start_node(WIRE_CONS_ASYNC, 0, 1, 1000, 60000);
    const size_t len = my()->length;
    float *g = malloc(len * sizeof(float)), *want = malloc(len * sizeof(float)),
          *buf = calloc(len, sizeof(float)), *got = malloc(len * sizeof(float));
    memcpy(want, fx.init + my()->offset, len * sizeof(float));
    for (int k = 0; k < 3; k++) {
        gradient(g, len, 0.01f * (float)(k + 1), k);
        cr_assert_eq(push(fx.w[0], 0, (uint64_t)k, (uint64_t)k, BATCH, g), (uint64_t)k + 1);
        optim_sgd(&fx.optim, optim_lr(&fx.optim, k), want, g, buf, len);
        cr_assert_eq(pull(fx.w[0], 0, WIRE_VEC_PARAMS, (uint64_t)k + 1, got), (uint64_t)k + 1);
        cr_assert(memcmp(got, want, len * sizeof(float)) == 0, "push %d: params differ from optim_sgd", k);
    }
    cr_assert(optim_lr(&fx.optim, 2) < optim_lr(&fx.optim, 0), "the schedule moved");
    finish();
    cr_assert_str_eq(fx.out, "node 1: applied 3 pushes, 0 stats pushes, version 3, max staleness 0\n");
    free(g);
    free(want);
    free(buf);
    free(got);
}

/* A PULL and a PUSH sent back to back: the node answers the PULL with its params buffer
 * itself and applies the PUSH while ZeroMQ may still be sending that buffer, so the update goes
 * to a fresh one (counted). Every PULL_REP holds exactly the params of the version it names. */
Test(node, a_pull_reply_in_flight_keeps_its_version_while_the_next_push_is_applied) {
    start_node(WIRE_CONS_ASYNC, 0, 1, 1000, 60000);
    const size_t len = my()->length;
    enum { ROUNDS = 40 };
    float *g = malloc(len * sizeof(float)), *buf = calloc(len, sizeof(float)), *got = malloc(len * sizeof(float));
    float *want = malloc((ROUNDS + 1) * len * sizeof(float)); /* the params at every version */
    memcpy(want, fx.init + my()->offset, len * sizeof(float));
    wire_msg_t m;
    wire_in_t in = {0};
    auxps_error_t e = {0};
    for (int k = 0; k < ROUNDS; k++) {
        gradient(g, len, 0.01f, k);
        memcpy(want + (size_t)(k + 1) * len, want + (size_t)k * len, len * sizeof(float));
        optim_sgd(&fx.optim, optim_lr(&fx.optim, k), want + (size_t)(k + 1) * len, g, buf, len);
        memset(&m, 0, sizeof m);
        m.type = WIRE_PULL;
        m.rid = ++fx.rid;
        m.pull = (wire_pull_t){0, fx.id, WIRE_VEC_PARAMS, my()->offset, len, (uint64_t)k, WIRE_ENC_F32};
        send_to(fx.w[0], NULL, 0, &m);
        const uint32_t pull_rid = fx.rid;
        m = push_msg(0, (uint64_t)k, (uint64_t)k, BATCH, g);
        send_to(fx.w[0], NULL, 0, &m);
        expect(fx.w[0], 0, WIRE_PULL_REP, &in, &m);
        cr_assert_eq(m.rid, pull_rid);
        const uint64_t v = m.pull_rep.version;
        cr_assert_eq(v, (uint64_t)k, "the PULL came before the PUSH");
        cr_assert_eq(wire_payload_f32(&m, got, &e), 0, "%s", e.msg);
        cr_assert(memcmp(got, want + v * len, len * sizeof(float)) == 0, "round %d: the reply of version %" PRIu64
                  " holds other params", k, v);
        wire_msg_clear(&m);
        wire_in_close(&in);
        expect(fx.w[0], 0, WIRE_PUSH_ACK, &in, &m);
        cr_assert_eq(m.push_ack.version, (uint64_t)k + 1);
        wire_msg_clear(&m);
        wire_in_close(&in);
    }
    cr_assert_eq(pull(fx.w[0], 0, WIRE_VEC_PARAMS, ROUNDS, got), ROUNDS);
    cr_assert(memcmp(got, want + (size_t)ROUNDS * len, len * sizeof(float)) == 0, "the final params differ");
    node_counters_t c;
    node_get_counters(fx.node, &c);
    cr_log_info("%" PRIu64 " of %d updates went to a fresh buffer", c.fresh_buffers, ROUNDS);
    cr_assert_gt(c.fresh_buffers, 0, "no update found its buffer still being sent");
    finish();
    free(g);
    free(buf);
    free(got);
    free(want);
}

/* Restarts the fixture's run as a kbit run (cluster.pull = kbit; CLUSTER.md "Bytes per step")
 * whose shard 1 starts at the first tensor boundary past the middle. */
static void kbit_run(model_t **m) {
    auxps_error_t e = {0};
    cr_assert_eq(config_set(&fx.cfg, "cluster.pull=kbit", &e), 0, "%s", e.msg);
    free(fx.config);
    size_t n = 0;
    FILE *f = open_memstream(&fx.config, &n);
    cr_assert_eq(config_write(&fx.cfg, f), 0);
    fclose(f);
    *m = model_new(&fx.cfg.model, 1);
    cr_assert_not_null(*m);
    for (int i = 0; i < model_num_tensors(*m) && fx.split == 0; i++)
        if (model_tensor(*m, i)->offset >= fx.nparams / 2) fx.split = model_tensor(*m, i)->offset;
}

/* A kbit PULL_REP m of the shard [off, off + len) of md: every quantized tensor in the codes
 * quant_weight_forward makes of the latent weights w, every other one in w's own floats.
 * *qn and *fpn receive the number of values of each kind. */
static void check_kbit_reply(const model_t *md, const wire_msg_t *m, size_t off, size_t len, int k, const float *w,
                             int step, size_t *qn, size_t *fpn) {
    float *vals = malloc(len * sizeof(float)), *wq = malloc(len * sizeof(float));
    uint8_t *codes = malloc(len), *want = malloc(len);
    cr_assert(vals && wq && codes && want);
    auxps_error_t e = {0};
    cr_assert_eq(wire_payload_codes(m, vals, codes, &e), 0, "%s", e.msg);
    *qn = *fpn = 0;
    for (int i = 0; i < model_num_tensors(md); i++) {
        const model_tensor_t *t = model_tensor(md, i);
        if (t->offset < off) continue;
        const size_t o = t->offset - off;
        if (t->quantized) {
            quant_weight_forward(wq, want + o, w + o, t->size, k);
            cr_assert(memcmp(codes + o, want + o, t->size) == 0, "step %d: codes of %s", step, t->name);
            *qn += t->size;
        } else {
            cr_assert(memcmp(vals + o, w + o, t->size * sizeof(float)) == 0, "step %d: %s", step, t->name);
            *fpn += t->size;
        }
    }
    free(vals), free(wq), free(codes), free(want);
}

/* dw: the gradient a node applies for the pushed dL/dwq g of the shard at off (len values) with
 * latent weights w: the quantizer's backward for the quantized tensors, g itself elsewhere. */
static void kbit_grad(const model_t *md, size_t off, size_t len, int k, const float *w, const float *g, float *dw) {
    memcpy(dw, g, len * sizeof(float));
    for (int i = 0; i < model_num_tensors(md); i++) {
        const model_tensor_t *t = model_tensor(md, i);
        if (t->offset < off || !t->quantized) continue;
        const size_t o = t->offset - off;
        memset(dw + o, 0, t->size * sizeof(float));
        quant_weight_backward(dw + o, g + o, w + o, t->size, k);
    }
}

/* A kbit run's node sends each quantized tensor of its shard as the DoReFa codes of its latent
 * weights (the quantizer's own, bit for bit) and the rest as float32, in a quarter of the bytes
 * or less for the codes; it applies a push as dL/dwq through the quantizer's backward with its
 * current weights, then the optimizer; and it takes a q8 push as its decoded values. */
Test(node, a_kbit_run_serves_k_bit_codes_and_applies_the_quantizers_backward) {
    model_t *md;
    kbit_run(&md);
    start_node(WIRE_CONS_ASYNC, 0, 1, 1000, 60000);
    const size_t len = my()->length, off = my()->offset;
    const int k = fx.cfg.model.wbits;
    float *w = malloc(len * sizeof(float)), *g = malloc(len * sizeof(float)), *dw = malloc(len * sizeof(float)),
          *mom = calloc(len, sizeof(float));
    uint8_t *codes = malloc(len);
    memcpy(w, fx.init + off, len * sizeof(float));
    for (int step = 0; step < 3; step++) {
        /* the pull: codes of every quantized tensor, float32 for the rest */
        wire_msg_t m;
        memset(&m, 0, sizeof m);
        m.type = WIRE_PULL;
        m.rid = ++fx.rid;
        m.pull = (wire_pull_t){0, fx.id, WIRE_VEC_PARAMS, off, len, (uint64_t)step, WIRE_ENC_KBIT};
        send_to(fx.w[0], NULL, 0, &m);
        wire_in_t in = {0};
        expect(fx.w[0], 0, WIRE_PULL_REP, &in, &m);
        cr_assert_eq(m.pull_rep.encoding, WIRE_ENC_KBIT);
        cr_assert_eq(m.pull_rep.version, (uint64_t)step);
        size_t qn, fpn;
        check_kbit_reply(md, &m, off, len, k, w, step, &qn, &fpn);
        cr_assert_eq(qn + fpn, len);
        cr_assert_gt(qn, 0);
        cr_assert_leq(m.payload_size, 4 * fpn + (qn * (size_t)k + 7) / 8 + m.pull_rep.nsegs,
                      "%zu bytes for %zu codes and %zu floats", m.payload_size, qn, fpn);
        wire_msg_clear(&m);
        wire_in_close(&in);
        /* the push: dL/dwq, taken through the quantizer's backward by the node; q8 at step 2 */
        gradient(g, len, 0.01f * (float)(step + 1), step);
        wire_seg_t segs[1];
        auxps_error_t e = {0};
        if (step == 2) {
            cr_assert_eq(wire_q8_encode(g, NULL, (uint32_t)len, &segs[0], codes, &e), 0, "%s", e.msg);
            for (size_t i = 0; i < len; i++) g[i] = wire_dequant(segs[0].lo, segs[0].step, codes[i]);
        }
        kbit_grad(md, off, len, k, w, g, dw);
        m = push_msg(0, (uint64_t)step, (uint64_t)step, BATCH, g);
        if (step == 2) {
            m.push.encoding = WIRE_ENC_Q8;
            m.push.segs = segs;
            m.push.nsegs = 1;
            m.payload = codes;
            m.payload_size = len;
        }
        send_to(fx.w[0], NULL, 0, &m);
        expect(fx.w[0], 0, WIRE_PUSH_ACK, &in, &m);
        cr_assert_eq(m.push_ack.version, (uint64_t)step + 1);
        wire_msg_clear(&m);
        wire_in_close(&in);
        optim_sgd(&fx.optim, optim_lr(&fx.optim, step), w, dw, mom, len);
    }
    /* the coordinator's f32 pull sees the latent weights, exactly as optim_sgd made them */
    float *got = malloc(len * sizeof(float));
    cr_assert_eq(pull(fx.w[0], WIRE_ID_COORD, WIRE_VEC_PARAMS, 3, got), 3);
    cr_assert(memcmp(got, w, len * sizeof(float)) == 0, "params differ from optim_sgd of the quantizer's backward");
    finish();
    cr_assert_str_eq(fx.out, "node 1: applied 3 pushes, 0 stats pushes, version 3, max staleness 0\n");
    model_destroy(&md);
    free(w), free(g), free(dw), free(mom), free(codes), free(got);
}

/* In an async run a node acknowledges a push before it computes the update (PROTOCOL.md,
 * PUSH_ACK) and reads no other message until the update is done: a PULL sent right behind a
 * PUSH, without waiting for its ACK, is answered with the codes of the weights the push made.
 * A kbit run, where the node also yields after the ACK. */
Test(node, a_pull_sent_right_behind_an_async_push_gets_the_pushed_version) {
    model_t *md;
    kbit_run(&md);
    start_node(WIRE_CONS_ASYNC, 0, 1, 1000, 60000);
    const size_t len = my()->length, off = my()->offset;
    const int k = fx.cfg.model.wbits;
    enum { STEPS = 5 };
    float *w = malloc(len * sizeof(float)), *g = malloc(len * sizeof(float)), *dw = malloc(len * sizeof(float)),
          *mom = calloc(len, sizeof(float));
    memcpy(w, fx.init + off, len * sizeof(float));
    for (int step = 0; step < STEPS; step++) {
        gradient(g, len, 0.01f * (float)(step + 1), step);
        kbit_grad(md, off, len, k, w, g, dw);
        optim_sgd(&fx.optim, optim_lr(&fx.optim, step), w, dw, mom, len);
        wire_msg_t m = push_msg(0, (uint64_t)step, (uint64_t)step, BATCH, g);
        send_to(fx.w[0], NULL, 0, &m);
        memset(&m, 0, sizeof m);
        m.type = WIRE_PULL;
        m.rid = ++fx.rid;
        m.pull = (wire_pull_t){0, fx.id, WIRE_VEC_PARAMS, off, len, (uint64_t)step + 1, WIRE_ENC_KBIT};
        send_to(fx.w[0], NULL, 0, &m);
        wire_in_t in = {0};
        expect(fx.w[0], 0, WIRE_PUSH_ACK, &in, &m);
        cr_assert_eq(m.push_ack.version, (uint64_t)step + 1);
        wire_msg_clear(&m);
        wire_in_close(&in);
        expect(fx.w[0], 0, WIRE_PULL_REP, &in, &m);
        cr_assert_eq(m.pull_rep.version, (uint64_t)step + 1, "step %d: the PULL behind the PUSH", step);
        size_t qn, fpn;
        check_kbit_reply(md, &m, off, len, k, w, step, &qn, &fpn);
        wire_msg_clear(&m);
        wire_in_close(&in);
    }
    finish();
    cr_assert_str_eq(fx.out, "node 1: applied 5 pushes, 0 stats pushes, version 5, max staleness 0\n");
    model_destroy(&md);
    free(w), free(g), free(dw), free(mom);
}

Test(node, async_measures_staleness_per_push) {
    start_node(WIRE_CONS_ASYNC, 0, 2, 1000, 60000);
    const size_t len = my()->length;
    float *g = calloc(len, sizeof(float));
    cr_assert_eq(push(fx.w[0], 0, 0, 0, BATCH, g), 1);
    cr_assert_eq(push(fx.w[1], 1, 0, 0, BATCH, g), 2); /* computed on version 0, applied at 1 */
    cr_assert_eq(push(fx.w[1], 1, 1, 0, BATCH, g), 3); /* staleness 2 */
    finish();
    cr_assert_str_eq(fx.out, "node 1: applied 3 pushes, 0 stats pushes, version 3, max staleness 2\n");
    free(g);
}

/* Elastic membership (async): only ids the coordinator announced push; an id that left is
 * refused until it joins again, and then serves a new connection. */
static void membership(uint32_t id, uint32_t joined) {
    wire_msg_t m;
    memset(&m, 0, sizeof m);
    m.type = WIRE_MEMBERSHIP;
    m.rid = ++fx.rid;
    m.membership = (wire_membership_t){id, joined, 0};
    coord_send(&m);
}

/* Waits until the node's counter *field reaches want (the coordinator link is asynchronous). */
static void wait_counter(const uint64_t *field, uint64_t want, node_counters_t *c) {
    for (int t = 0; t < 400; t++) {
        node_get_counters(fx.node, c);
        if (*field >= want) return;
        usleep(5000);
    }
    cr_assert_fail("a node counter stayed at %llu, expected %llu", (unsigned long long)*field,
                   (unsigned long long)want);
}

Test(node, async_takes_pushes_only_from_workers_the_coordinator_announced) {
    start_node(WIRE_CONS_ASYNC, 0, 1, 1000, 60000); /* announces worker 0 */
    const size_t len = my()->length;
    float *g = calloc(len, sizeof(float));
    wire_msg_t m = push_msg(1, 0, 0, BATCH, g);
    expect_error(fx.w[1], &m, WIRE_ERR_NOT_REGISTERED); /* never announced */
    cr_assert_eq(push(fx.w[0], 0, 0, 0, BATCH, g), 1);
    node_counters_t c;
    membership(0, 0); /* worker 0 leaves */
    wait_counter(&c.left, 1, &c);
    m = push_msg(0, 1, 1, BATCH, g);
    expect_error(fx.w[0], &m, WIRE_ERR_NOT_REGISTERED);
    membership(0, 1); /* the id goes to a new worker, on another connection, from clock 0 */
    wait_counter(&c.joined, 2, &c);
    cr_assert_eq(push(fx.w[2], 0, 0, 1, BATCH, g), 2);
    finish();
    cr_assert_str_eq(fx.out, "node 1: applied 2 pushes, 0 stats pushes, version 2, max staleness 0\n");
    free(g);
}

Test(node, async_acks_a_resent_push_without_applying_it_twice) {
    start_node(WIRE_CONS_ASYNC, 0, 1, 1000, 60000);
    const size_t len = my()->length;
    float *g = calloc(len, sizeof(float));
    cr_assert_eq(push(fx.w[0], 0, 0, 0, BATCH, g), 1);
    cr_assert_eq(push(fx.w[0], 0, 1, 1, BATCH, g), 2);
    cr_assert_eq(push(fx.w[0], 0, 1, 1, BATCH, g), 2, "clock 1 again: acknowledged, version unchanged");
    cr_assert_eq(push(fx.w[0], 0, 2, 2, BATCH, g), 3);
    node_counters_t c;
    node_get_counters(fx.node, &c);
    cr_assert_eq(c.duplicates, 1);
    finish();
    cr_assert_str_eq(fx.out, "node 1: applied 3 pushes, 0 stats pushes, version 3, max staleness 0\n");
    free(g);
}

Test(node, bsp_applies_the_sample_weighted_mean_once_all_workers_pushed) {
    start_node(WIRE_CONS_BSP, 0, 2, 50, 60000);
    const size_t len = my()->length;
    float *g1 = malloc(len * sizeof(float)), *g2 = malloc(len * sizeof(float)), *mean = malloc(len * sizeof(float));
    float *want = malloc(len * sizeof(float)), *buf = calloc(len, sizeof(float)), *got = malloc(len * sizeof(float));
    gradient(g1, len, 0.02f, 1);
    gradient(g2, len, -0.03f, 2);
    for (size_t i = 0; i < len; i++) mean[i] = (float)((10.0 * g1[i] + 30.0 * g2[i]) / 40.0);
    memcpy(want, fx.init + my()->offset, len * sizeof(float));
    optim_sgd(&fx.optim, optim_lr(&fx.optim, 0), want, mean, buf, len);

    cr_assert_eq(push(fx.w[0], 0, 0, 0, 10, g1), 0, "held in the sum: not applied yet");
    /* Worker 0's next pull waits for worker 1, with heartbeats meanwhile. */
    wire_msg_t m;
    memset(&m, 0, sizeof m);
    m.type = WIRE_PULL;
    m.rid = 777;
    m.pull = (wire_pull_t){0, fx.id, WIRE_VEC_PARAMS, my()->offset, len, 1, WIRE_ENC_F32};
    send_to(fx.w[0], NULL, 0, &m);
    wire_in_t in = {0};
    int heartbeats = 0;
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(util_recv_within(fx.w[0], 0, &in, &m, 500), 0, "the waiting worker gets HEARTBEATs");
        cr_assert_eq(m.type, WIRE_HEARTBEAT, "got %s while worker 1 has not pushed", wire_type_name(m.type));
        cr_assert_eq(m.heartbeat.role, WIRE_ROLE_NODE);
        heartbeats++;
        wire_msg_clear(&m);
    }
    cr_assert_eq(heartbeats, 3);
    /* A second push of the same clock from worker 0 is refused; its pull still waits. */
    wire_msg_t dup = push_msg(0, 0, 0, 10, g1);
    expect_error(fx.w[0], &dup, WIRE_ERR_BAD_MESSAGE);
    cr_assert_eq(push(fx.w[1], 1, 0, 0, 30, g2), 1, "the second push completes the sum");
    expect(fx.w[0], 0, WIRE_PULL_REP, &in, &m);
    cr_assert_eq(m.rid, 777);
    cr_assert_eq(m.pull_rep.version, 1);
    cr_assert_eq(m.pull_rep.min_clock, 1);
    auxps_error_t e = {0};
    cr_assert_eq(wire_payload_f32(&m, got, &e), 0);
    cr_assert(memcmp(got, want, len * sizeof(float)) == 0, "bsp update differs from optim_sgd of the mean");
    wire_msg_clear(&m);
    wire_in_close(&in);
    /* The aggregate counted two batches on the schedule: the next update uses lr(2). */
    cr_assert_eq(push(fx.w[0], 0, 1, 1, 10, g1), 1);
    cr_assert_eq(push(fx.w[1], 1, 1, 1, 30, g1), 2);
    optim_sgd(&fx.optim, optim_lr(&fx.optim, 2), want, g1, buf, len);
    cr_assert_eq(pull(fx.w[0], 0, WIRE_VEC_PARAMS, 2, got), 2);
    cr_assert(memcmp(got, want, len * sizeof(float)) == 0, "second bsp step");
    finish();
    cr_assert_str_eq(fx.out, "node 1: applied 4 pushes, 0 stats pushes, version 2, max staleness 0\n");
    free(g1);
    free(g2);
    free(mean);
    free(want);
    free(buf);
    free(got);
}

Test(node, ssp_holds_a_pull_more_than_staleness_clocks_ahead_of_the_slowest_worker) {
    start_node(WIRE_CONS_SSP, 1, 2, 50, 60000);
    const size_t len = my()->length;
    float *g = calloc(len, sizeof(float));
    /* Worker 0 runs ahead: clocks 0 and 1 pass (slowest clock 0, s = 1). */
    cr_assert_eq(pull(fx.w[0], 0, WIRE_VEC_PARAMS, 0, NULL), 0);
    cr_assert_eq(push(fx.w[0], 0, 0, 0, BATCH, g), 1);
    cr_assert_eq(pull(fx.w[0], 0, WIRE_VEC_PARAMS, 1, NULL), 1);
    cr_assert_eq(push(fx.w[0], 0, 1, 1, BATCH, g), 2);
    /* Clock 2 waits for worker 1's first push. */
    wire_msg_t m;
    memset(&m, 0, sizeof m);
    m.type = WIRE_PULL;
    m.rid = 555;
    m.pull = (wire_pull_t){0, fx.id, WIRE_VEC_PARAMS, my()->offset, len, 2, WIRE_ENC_F32};
    send_to(fx.w[0], NULL, 0, &m);
    wire_in_t in = {0};
    cr_assert_eq(util_recv_within(fx.w[0], 0, &in, &m, 500), 0);
    cr_assert_eq(m.type, WIRE_HEARTBEAT, "got %s instead of waiting", wire_type_name(m.type));
    wire_msg_clear(&m);
    /* Statistics are never gated. */
    cr_assert_eq(pull(fx.w[1], 1, WIRE_VEC_STATS, 5, NULL), 2);
    /* Worker ids beyond num_workers would train ungated: refused. */
    wire_msg_t far = push_msg(2, 0, 0, BATCH, g);
    expect_error(fx.w[2], &far, WIRE_ERR_OUT_OF_RANGE);
    cr_assert_eq(push(fx.w[1], 1, 0, 0, BATCH, g), 3); /* staleness 2 */
    expect(fx.w[0], 0, WIRE_PULL_REP, &in, &m);
    cr_assert_eq(m.rid, 555);
    cr_assert_eq(m.pull_rep.version, 3);
    cr_assert_eq(m.pull_rep.min_clock, 1);
    wire_msg_clear(&m);
    wire_in_close(&in);
    finish();
    cr_assert_str_eq(fx.out, "node 1: applied 3 pushes, 0 stats pushes, version 3, max staleness 2\n");
    node_counters_t c;
    node_get_counters(fx.node, &c);
    cr_assert_eq(c.deferred, 1);
    cr_assert_eq(c.refused, 1);
    free(g);
}

Test(node, stats_average_is_sample_weighted_and_replace_wins) {
    start_node(WIRE_CONS_ASYNC, 0, 2, 1000, 60000);
    const size_t slen = my()->stats_length;
    float *a = malloc(slen * sizeof(float)), *b = malloc(slen * sizeof(float)), *got = malloc(slen * sizeof(float));
    for (size_t i = 0; i < slen; i++) {
        a[i] = 0.1f * (float)i + 1.0f;
        b[i] = -0.3f * (float)i + 0.5f;
    }
    stats_push(fx.w[0], 0, 100, WIRE_STATS_AVERAGE, a);
    pull(fx.w[0], 0, WIRE_VEC_STATS, 0, got);
    cr_assert(memcmp(got, a, slen * sizeof(float)) == 0, "one worker's statistics come back bit for bit");
    stats_push(fx.w[1], 1, 300, WIRE_STATS_AVERAGE, b);
    pull(fx.w[0], 0, WIRE_VEC_STATS, 0, got);
    for (size_t i = 0; i < slen; i++)
        cr_assert_eq(got[i], (float)((100.0 * a[i] + 300.0 * b[i]) / 400.0), "stat %zu", i);
    stats_push(fx.w[0], 0, 5, WIRE_STATS_AVERAGE, b); /* worker 0's latest replaces its own */
    pull(fx.w[0], 0, WIRE_VEC_STATS, 0, got);
    for (size_t i = 0; i < slen; i++) cr_assert_eq(got[i], (float)((5.0 * b[i] + 300.0 * b[i]) / 305.0));
    stats_push(fx.w[1], 1, 1, WIRE_STATS_REPLACE, a);
    pull(fx.w[0], 0, WIRE_VEC_STATS, 0, got);
    cr_assert(memcmp(got, a, slen * sizeof(float)) == 0, "replace: last writer wins");
    finish();
    cr_assert_str_eq(fx.out, "node 1: applied 0 pushes, 4 stats pushes, version 0, max staleness 0\n");
    free(a);
    free(b);
    free(got);
}

/* Sends raw frames on a DEALER. */
static void send_raw(void *sock, const void *const *frames, const size_t *sizes, int n) {
    for (int i = 0; i < n; i++)
        cr_assert(zmq_send(sock, frames[i], sizes[i], i + 1 < n ? ZMQ_SNDMORE : 0) >= 0);
}

Test(node, malformed_and_unexpected_messages_get_error_and_the_node_keeps_serving) {
    start_node(WIRE_CONS_ASYNC, 0, 1, 1000, 60000);
    void *s = fx.w[0];
    const size_t len = my()->length;
    float *g = calloc(len, sizeof(float));
    int refused = 0;

    const char junk[] = "not messagepack at all";
    send_raw(s, (const void *[]){junk}, (size_t[]){sizeof junk}, 1);
    expect_error(s, NULL, WIRE_ERR_BAD_MESSAGE), refused++;
    send_raw(s, (const void *[]){""}, (size_t[]){0}, 1);
    expect_error(s, NULL, WIRE_ERR_BAD_MESSAGE), refused++;

    wire_msg_t m;
    memset(&m, 0, sizeof m);
    m.type = WIRE_PULL;
    m.rid = 11;
    m.pull = (wire_pull_t){0, 0, WIRE_VEC_PARAMS, 0, 10, 0, WIRE_ENC_F32};
    expect_error(s, &m, WIRE_ERR_OUT_OF_RANGE), refused++; /* shard 0 is another node's */
    m.pull = (wire_pull_t){0, fx.id, WIRE_VEC_PARAMS, my()->offset - 1, 10, 0, WIRE_ENC_F32};
    expect_error(s, &m, WIRE_ERR_OUT_OF_RANGE), refused++; /* starts before the shard */
    m.pull = (wire_pull_t){0, fx.id, WIRE_VEC_PARAMS, my()->offset + len - 5, 10, 0, WIRE_ENC_F32};
    expect_error(s, &m, WIRE_ERR_OUT_OF_RANGE), refused++; /* runs past it */
    m.pull = (wire_pull_t){0, fx.id, WIRE_VEC_STATS, my()->stats_offset, my()->stats_length + 1, 0, WIRE_ENC_F32};
    expect_error(s, &m, WIRE_ERR_OUT_OF_RANGE), refused++;
    m.pull = (wire_pull_t){0, fx.id, WIRE_VEC_PARAMS, my()->offset, len, 0, WIRE_ENC_KBIT};
    send_to(s, NULL, 0, &m); /* not a kbit run: answered in f32, as PROTOCOL.md allows */
    wire_in_t rin = {0};
    wire_msg_t r;
    expect(s, 0, WIRE_PULL_REP, &rin, &r);
    cr_assert_eq(r.pull_rep.encoding, WIRE_ENC_F32);
    cr_assert_eq(r.rid, m.rid);
    wire_msg_clear(&r);
    wire_in_close(&rin);

    m = push_msg(0, 0, 0, BATCH, g);
    m.push.length = len - 1;
    m.payload_size = (len - 1) * sizeof(float);
    expect_error(s, &m, WIRE_ERR_OUT_OF_RANGE), refused++; /* a push covers the whole shard */
    m = push_msg(0, 0, 5, BATCH, g);
    expect_error(s, &m, WIRE_ERR_BAD_MESSAGE), refused++;  /* version ahead of the shard's */

    memset(&m, 0, sizeof m);
    m.type = WIRE_LEASE_REQ;
    m.rid = 12;
    expect_error(s, &m, WIRE_ERR_BAD_MESSAGE), refused++; /* not a node's message */

    /* Another protocol version: refused with ERROR VERSION. */
    memset(&m, 0, sizeof m);
    m.type = WIRE_HEARTBEAT;
    m.rid = 13;
    m.heartbeat = (wire_heartbeat_t){WIRE_ROLE_WORKER, 0};
    void *hdr;
    size_t hsize;
    auxps_error_t e = {0};
    cr_assert_eq(wire_encode(&m, &hdr, &hsize, &e), 0);
    cr_assert_eq(((uint8_t *)hdr)[6], WIRE_VERSION, "version sits after the 5-byte magic");
    ((uint8_t *)hdr)[6] = WIRE_VERSION + 1;
    send_raw(s, (const void *[]){hdr}, &hsize, 1);
    free(hdr);
    expect_error(s, NULL, WIRE_ERR_VERSION), refused++;

    /* A PULL with a payload frame it must not have. */
    memset(&m, 0, sizeof m);
    m.type = WIRE_PULL;
    m.pull = (wire_pull_t){0, fx.id, WIRE_VEC_PARAMS, my()->offset, 4, 0, WIRE_ENC_F32};
    cr_assert_eq(wire_encode(&m, &hdr, &hsize, &e), 0);
    send_raw(s, (const void *[]){hdr, "abcd"}, (size_t[]){hsize, 4}, 2);
    free(hdr);
    expect_error(s, NULL, WIRE_ERR_BAD_MESSAGE), refused++;

    /* An ERROR is never answered, but counted. */
    memset(&m, 0, sizeof m);
    m.type = WIRE_ERROR;
    m.error.code = WIRE_ERR_INTERNAL;
    strcpy(m.error.text, "a worker's complaint");
    send_to(s, NULL, 0, &m), refused++;

    /* Through all of it the node kept serving, and nothing was applied. */
    float *p = malloc(len * sizeof(float));
    cr_assert_eq(pull(s, 0, WIRE_VEC_PARAMS, 0, p), 0);
    cr_assert(memcmp(p, fx.init + my()->offset, len * sizeof(float)) == 0);
    cr_assert_eq(push(s, 0, 0, 0, BATCH, g), 1);
    finish();
    node_counters_t c;
    node_get_counters(fx.node, &c);
    cr_assert_eq(c.refused, (uint64_t)refused);
    /* By kind: junk, an empty header, a version ahead, LEASE_REQ, a stray payload and the ERROR
     * are malformed; 4 PULLs and the short PUSH out of range; one another version. */
    const uint64_t want[WIRE_REJECT_COUNT] = {[WIRE_REJECT_MALFORMED] = 6, [WIRE_REJECT_BAD_VERSION] = 1,
                                              [WIRE_REJECT_OUT_OF_RANGE] = 5};
    for (int k = 0; k < WIRE_REJECT_COUNT; k++)
        cr_assert_eq(c.rejected[k], want[k], "%s: %" PRIu64 ", expected %" PRIu64, wire_reject_name(k),
                     c.rejected[k], want[k]);
    cr_assert_eq(c.pushes, 1);
    cr_assert_str_eq(fx.out, "node 1: applied 1 pushes, 0 stats pushes, version 1, max staleness 0\n");
    free(g);
    free(p);
}

Test(node, a_push_or_stats_push_with_nan_or_inf_is_refused_whole_and_counted) {
    start_node(WIRE_CONS_ASYNC, 0, 1, 1000, 60000);
    void *s = fx.w[0];
    const size_t len = my()->length, slen = my()->stats_length;
    cr_assert_gt(slen, 0);
    float *g = malloc(len * sizeof(float)), *p = malloc(len * sizeof(float));
    float *st = malloc(slen * sizeof(float)), *st0 = malloc(slen * sizeof(float)), *st1 = malloc(slen * sizeof(float));
    cr_assert_eq(pull(s, 0, WIRE_VEC_STATS, 0, st0), 0);
    const float bad[] = {NAN, INFINITY, -INFINITY};
    const size_t at[] = {len - 1, 0, len / 2}; /* the last value too: no partial check */
    for (int i = 0; i < 3; i++) {
        gradient(g, len, 0.5f, i);
        g[at[i]] = bad[i];
        wire_msg_t m = push_msg(0, (uint64_t)i, 0, BATCH, g);
        expect_error(s, &m, WIRE_ERR_NON_FINITE);
    }
    for (size_t i = 0; i < slen; i++) st[i] = 1.0f + (float)i;
    st[slen - 1] = NAN;
    wire_msg_t m;
    memset(&m, 0, sizeof m);
    m.type = WIRE_STATS_PUSH;
    m.rid = ++fx.rid;
    m.stats_push = (wire_stats_push_t){0, fx.id, my()->stats_offset, slen, 0, WIRE_STATS_REPLACE, BATCH};
    m.payload = st;
    m.payload_size = slen * sizeof(float);
    expect_error(s, &m, WIRE_ERR_NON_FINITE);

    /* Nothing of them was applied: the shard, its version and the statistics are the initial. */
    cr_assert_eq(pull(s, 0, WIRE_VEC_PARAMS, 0, p), 0);
    cr_assert(memcmp(p, fx.init + my()->offset, len * sizeof(float)) == 0);
    cr_assert_eq(pull(s, 0, WIRE_VEC_STATS, 0, st1), 0);
    cr_assert(memcmp(st0, st1, slen * sizeof(float)) == 0);
    gradient(g, len, 0.5f, 0);
    cr_assert_eq(push(s, 0, 0, 0, BATCH, g), 1, "a finite push from the same worker still counts");
    finish();
    node_counters_t c;
    node_get_counters(fx.node, &c);
    cr_assert_eq(c.rejected[WIRE_REJECT_NON_FINITE], 4);
    cr_assert_eq(c.refused, 4);
    cr_assert_eq(c.pushes, 1);
    cr_assert_eq(c.stats_pushes, 0);
    cr_assert(strstr(fx.log, "non_finite 4") != NULL, "%s", fx.log);
    free(g), free(p), free(st), free(st0), free(st1);
}

/* A q8 push is checked by its segments' extreme codes when those are finite; when they are not,
 * by its values: a huge step is fine while every code sent stays in range, and refused whole
 * once one code decodes past the float range. */
Test(node, a_q8_push_is_refused_only_if_a_code_it_sends_decodes_to_infinity) {
    start_node(WIRE_CONS_ASYNC, 0, 1, 1000, 60000);
    void *s = fx.w[0];
    const size_t len = my()->length;
    uint8_t *codes = calloc(len, 1);
    float *p = malloc(len * sizeof(float));
    wire_seg_t seg = {(uint32_t)len, 8, -1.0f, 1e37f}; /* code 255 is 2.55e39: infinite */
    for (int i = 0; i < 3; i++) {
        for (size_t j = 0; j < len; j++) codes[j] = (uint8_t)(j % 2);
        if (i == 1) codes[len - 1] = 255;
        if (i == 2) seg.step = 1e-3f, codes[len / 2] = 255; /* every code finite: no scan */
        wire_msg_t m = push_msg(0, (uint64_t)i, 0, BATCH, NULL);
        m.push.encoding = WIRE_ENC_Q8;
        m.push.segs = &seg;
        m.push.nsegs = 1;
        m.payload = codes;
        m.payload_size = len;
        if (i == 1) {
            expect_error(s, &m, WIRE_ERR_NON_FINITE);
            continue;
        }
        send_to(s, NULL, 0, &m);
        wire_in_t in = {0};
        expect(s, 0, WIRE_PUSH_ACK, &in, &m);
        wire_msg_clear(&m);
        wire_in_close(&in);
    }
    cr_assert_eq(pull(s, 0, WIRE_VEC_PARAMS, 2, p), 2, "two pushes applied");
    for (size_t j = 0; j < len; j++) cr_assert(isfinite(p[j]), "param %zu is %g", j, (double)p[j]);
    finish();
    node_counters_t c;
    node_get_counters(fx.node, &c);
    cr_assert_eq(c.rejected[WIRE_REJECT_NON_FINITE], 1);
    cr_assert_eq(c.pushes, 2);
    free(codes), free(p);
}

Test(node, a_worker_id_is_bound_to_its_first_connection_and_must_be_below_num_workers) {
    start_node(WIRE_CONS_ASYNC, 0, 2, 1000, 60000);
    cr_assert_eq(pull(fx.w[0], 1, WIRE_VEC_PARAMS, 0, NULL), 0);
    wire_msg_t m;
    memset(&m, 0, sizeof m);
    m.type = WIRE_PULL;
    m.rid = 21;
    m.pull = (wire_pull_t){1, fx.id, WIRE_VEC_PARAMS, my()->offset, 1, 0, WIRE_ENC_F32};
    expect_error(fx.w[1], &m, WIRE_ERR_NOT_REGISTERED);
    m.rid = 22;
    m.pull.worker = 2; /* not one of the run's 2 announced workers */
    expect_error(fx.w[2], &m, WIRE_ERR_NOT_REGISTERED);
    cr_assert_eq(pull(fx.w[0], 1, WIRE_VEC_PARAMS, 0, NULL), 0, "the owner is still served");
    cr_assert_eq(pull(fx.w[1], WIRE_ID_COORD, WIRE_VEC_PARAMS, 0, NULL), 0, "the coordinator id is never bound");
    cr_assert_eq(pull(fx.w[2], WIRE_ID_COORD, WIRE_VEC_PARAMS, 0, NULL), 0);
    finish();
}

Test(node, a_sender_is_ignored_after_16_refusals_and_others_are_still_served) {
    start_node(WIRE_CONS_ASYNC, 0, 1, 1000, 60000);
    wire_msg_t m;
    memset(&m, 0, sizeof m);
    m.type = WIRE_LEASE_REQ;
    for (int i = 0; i < NODE_MAX_BAD; i++) {
        m.rid = (uint32_t)i;
        expect_error(fx.w[1], &m, WIRE_ERR_BAD_MESSAGE);
    }
    send_to(fx.w[1], NULL, 0, &m);
    memset(&m, 0, sizeof m);
    m.type = WIRE_PULL;
    m.pull = (wire_pull_t){1, fx.id, WIRE_VEC_PARAMS, my()->offset, 1, 0, WIRE_ENC_F32};
    send_to(fx.w[1], NULL, 0, &m);
    cr_assert_eq(pull(fx.w[0], 0, WIRE_VEC_PARAMS, 0, NULL), 0);
    wire_in_t in = {0};
    cr_assert_eq(util_recv_within(fx.w[1], 0, &in, &m, 300), -1, "an ignored sender gets no answer");
    wire_in_close(&in);
    finish();
    node_counters_t c;
    node_get_counters(fx.node, &c);
    cr_assert_eq(c.refused, NODE_MAX_BAD);
    cr_assert(strstr(fx.log, "ignoring this sender") != NULL, "%s", fx.log);
}

Test(node, a_silent_coordinator_ends_the_node_with_an_error_after_the_timeout) {
    start_node(WIRE_CONS_ASYNC, 0, 1, 50, 400);
    /* The node heartbeats the coordinator meanwhile, with its counters (NODE_STATS). */
    wire_in_t in = {0};
    wire_msg_t m;
    cr_assert_eq(util_recv_within(fx.coord, 1, &in, &m, 1000), 0);
    cr_assert_eq(m.type, WIRE_NODE_STATS);
    cr_assert_eq(m.node_stats.node, fx.id);
    wire_in_close(&in);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pthread_join(fx.thread, NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    fx.running = 0;
    cr_assert_eq(fx.rc, AUXPS_EIO);
    cr_assert(strstr(fx.err.msg, "silent") != NULL, "%s", fx.err.msg);
    cr_assert_lt(t1.tv_sec - t0.tv_sec, 3);
}

Test(node, a_welcome_that_disagrees_with_its_config_gets_error_config) {
    char ep[256];
    size_t len = sizeof ep;
    cr_assert_eq(zmq_getsockopt(fx.coord, ZMQ_LAST_ENDPOINT, ep, &len), 0);
    auxps_error_t e = {0};
    fx.node = node_new(ep, NULL, &e);
    cr_assert_not_null(fx.node, "%s", e.msg);
    cr_assert_eq(pthread_create(&fx.thread, NULL, node_thread, &fx), 0);
    fx.running = 1;
    wire_in_t in = {0};
    wire_msg_t m;
    expect(fx.coord, 1, WIRE_HELLO, &in, &m);
    memcpy(fx.route, in.route, in.route_size);
    fx.route_size = in.route_size;
    wire_shard_t sh = {.id = 0, .offset = 0, .length = fx.nparams + 1, .stats_offset = 0, .stats_length = fx.nstats};
    strcpy(sh.endpoint, node_endpoint(fx.node));
    uint32_t rid = m.rid;
    memset(&m, 0, sizeof m);
    m.type = WIRE_WELCOME;
    m.rid = rid;
    m.welcome = (wire_welcome_t){.role = WIRE_ROLE_NODE, .id = 0, .num_workers = 1,
                                 .num_params = fx.nparams + 1, .num_stats = fx.nstats, .seed = SEED,
                                 .heartbeat_ms = 1000, .timeout_ms = 10000, .shards = &sh,
                                 .nshards = 1, .config = fx.config};
    coord_send(&m);
    expect(fx.coord, 1, WIRE_ERROR, &in, &m);
    cr_assert_eq(m.error.code, WIRE_ERR_CONFIG);
    cr_assert_eq(m.rid, rid);
    wire_in_close(&in);
    pthread_join(fx.thread, NULL);
    fx.running = 0;
    cr_assert_eq(fx.rc, AUXPS_ECONFIG, "%s", fx.err.msg);
}

Test(node, a_stop_request_still_waits_for_done_so_the_model_can_be_pulled) {
    start_node(WIRE_CONS_ASYNC, 0, 1, 50, 60000);
    fx.stop = 1;
    nanosleep(&(struct timespec){0, 200 * 1000000}, NULL);
    cr_assert_eq(pull(fx.w[0], WIRE_ID_COORD, WIRE_VEC_PARAMS, 0, NULL), 0, "still serving after a stop");
    finish();
}
