/* test_worker.c - the training worker, run in a thread of the test process against two real
 * parameter-server nodes (node_t, in threads) and a scripted coordinator played by the test on
 * a ROUTER over tcp://127.0.0.1. The coordinator leases each epoch's sample order in chunks
 * (the last chunk and the last batch partial), asks for an evaluation after each epoch, then
 * sends DONE, pulls the final vectors from the nodes and ends them.
 *
 * With one worker the run must be the trainer's: parameters and statistics bit for bit equal
 * to trainer_step over the same batches, and every evaluation equal to trainer_evaluate. The
 * counters must show every pushed gradient applied exactly once. Also: a node that never
 * answers ends the worker with an error within the timeout, and a stop request ends it after
 * the current batch with BYE. Data: Fashion-MNIST, 500 training and 256 test images. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "config.h"
#include "data.h"
#include "model.h"
#include "node.h"
#include "optim.h"
#include "trainer.h"
#include "util.h"
#include "wire.h"
#include "worker.h"

#define NODES 2
#define RECV_MS 20000

typedef struct {
    node_t *node;
    pthread_t thread;
    int running, rc;
    volatile sig_atomic_t stop;
    auxps_error_t err;
    char *out;
    size_t out_len;
    FILE *outf;
} node_th_t;

typedef struct {
    worker_t *worker;
    pthread_t thread;
    int running, rc;
    volatile sig_atomic_t stop;
    auxps_error_t err;
    char *out;
    size_t out_len;
    FILE *outf;
} worker_th_t;

typedef struct {
    unsigned char route[WIRE_MAX_ROUTE];
    size_t route_size;
    uint32_t hello_rid;
    char endpoint[WIRE_MAX_ENDPOINT + 1];
} peer_t;

static struct {
    auxps_config_t cfg;
    char *config;
    size_t nparams, nstats;
    void *ctx, *coord, *fake;
    char ep[256];
    node_th_t nodes[NODES];
    worker_th_t wk;
    peer_t npeer[NODES], wpeer;
    wire_shard_t shards[NODES];
    FILE *devnull;
    uint32_t rid;
    uint64_t split;                      /* where shard 1 starts in params; 0: the middle */
} fx;

static void *node_main_th(void *arg) {
    node_th_t *t = arg;
    t->rc = node_run(t->node, &t->stop, fx.devnull, t->outf, &t->err);
    return NULL;
}

static void *worker_main_th(void *arg) {
    worker_th_t *t = arg;
    t->rc = worker_run(t->worker, &t->stop, fx.devnull, t->outf, &t->err);
    return NULL;
}

static void setup(void) {
    memset(&fx, 0, sizeof fx);
    auxps_error_t e = {0};
    config_defaults(&fx.cfg);
    const char *sets[] = {"model.widths=4,8,8", "data.train_limit=500", "data.test_limit=256",
                          "train.batch_size=64", "train.epochs=2", "train.seed=3",
                          "cluster.chunk_batches=3", "cluster.consistency=bsp"};
    for (size_t i = 0; i < sizeof sets / sizeof *sets; i++)
        cr_assert_eq(config_set(&fx.cfg, sets[i], &e), 0, "%s", e.msg);
    cr_assert_eq(config_check(&fx.cfg, &e), 0, "%s", e.msg);
    size_t len;
    FILE *f = open_memstream(&fx.config, &len);
    config_write(&fx.cfg, f);
    fclose(f);
    model_t *m = model_new(&fx.cfg.model, 1);
    fx.nparams = model_num_params(m);
    fx.nstats = model_num_stats(m);
    model_destroy(&m);
    fx.devnull = fopen("/dev/null", "w");
    fx.ctx = zmq_ctx_new();
    fx.coord = zmq_socket(fx.ctx, ZMQ_ROUTER);
    int linger = 0;
    zmq_setsockopt(fx.coord, ZMQ_LINGER, &linger, sizeof linger);
    cr_assert_eq(zmq_bind(fx.coord, "tcp://127.0.0.1:*"), 0);
    len = sizeof fx.ep;
    zmq_getsockopt(fx.coord, ZMQ_LAST_ENDPOINT, fx.ep, &len);
}

static void teardown(void) {
    if (fx.wk.running) {
        fx.wk.stop = 1;
        pthread_join(fx.wk.thread, NULL);
    }
    for (int i = 0; i < NODES; i++)
        if (fx.nodes[i].running) {
            fx.nodes[i].stop = 2;
            pthread_join(fx.nodes[i].thread, NULL);
        }
    worker_destroy(&fx.wk.worker);
    if (fx.wk.outf) fclose(fx.wk.outf);
    free(fx.wk.out);
    for (int i = 0; i < NODES; i++) {
        node_destroy(&fx.nodes[i].node);
        if (fx.nodes[i].outf) fclose(fx.nodes[i].outf);
        free(fx.nodes[i].out);
    }
    if (fx.fake) zmq_close(fx.fake);
    if (fx.coord) zmq_close(fx.coord);
    if (fx.ctx) zmq_ctx_term(fx.ctx);
    if (fx.devnull) fclose(fx.devnull);
    free(fx.config);
}

TestSuite(worker, .init = setup, .fini = teardown, .timeout = 120);

/* ---- the scripted coordinator ---- */

/* The next coordinator message that is not a HEARTBEAT. */
/* The next message to the coordinator that is not a sign of life (HEARTBEAT, or a node's
 * NODE_STATS). */
static void next_msg(wire_in_t *in, wire_msg_t *m) {
    for (;;) {
        cr_assert_eq(util_recv_within(fx.coord, 1, in, m, RECV_MS), 0, "the coordinator heard nothing");
        if (m->type != WIRE_HEARTBEAT && m->type != WIRE_NODE_STATS) return;
        wire_msg_clear(m);
    }
}

static void send_peer(const peer_t *p, wire_msg_t *m) {
    auxps_error_t e = {0};
    cr_assert_eq(wire_send(fx.coord, p->route, p->route_size, m, NULL, NULL, 0, &e), 0, "%s", e.msg);
}

static int same_peer(const peer_t *p, const wire_in_t *in) {
    return p->route_size == in->route_size && memcmp(p->route, in->route, in->route_size) == 0;
}

static void welcome(const peer_t *p, uint32_t role, uint32_t id, uint32_t hb, uint32_t timeout) {
    wire_msg_t m;
    memset(&m, 0, sizeof m);
    m.type = WIRE_WELCOME;
    m.rid = p->hello_rid;
    m.welcome = (wire_welcome_t){.role = role, .id = id, .consistency = (uint32_t)fx.cfg.cluster.consistency,
                                 .staleness = 0, .num_workers = 1, .num_params = fx.nparams,
                                 .num_stats = fx.nstats, .seed = fx.cfg.train.seed,
                                 .stream_seed = fx.cfg.train.seed ^ 0xA5A5A5A5ull, .heartbeat_ms = hb,
                                 .timeout_ms = timeout, .shards = fx.shards, .nshards = NODES,
                                 .config = fx.config};
    send_peer(p, &m);
}

/* Starts the nodes (unless fake_node: then shard 1 is fx.fake, a ROUTER that never answers)
 * and the worker, and registers them all. The worker gets heartbeat hb and timeout; the nodes
 * a long timeout, so that this coordinator need not heartbeat them. */
static void start_cluster(int fake_node, uint32_t hb, uint32_t timeout) {
    auxps_error_t e = {0};
    int real = fake_node ? NODES - 1 : NODES;
    for (int i = 0; i < real; i++) {
        node_th_t *t = &fx.nodes[i];
        t->outf = open_memstream(&t->out, &t->out_len);
        t->node = node_new(fx.ep, NULL, &e);
        cr_assert_not_null(t->node, "%s", e.msg);
        cr_assert_eq(pthread_create(&t->thread, NULL, node_main_th, t), 0);
        t->running = 1;
    }
    wire_in_t in = {0};
    wire_msg_t m;
    for (int i = 0; i < real; i++) {
        next_msg(&in, &m);
        cr_assert_eq(m.type, WIRE_HELLO);
        cr_assert_eq(m.hello.role, WIRE_ROLE_NODE);
        int j = 0; /* shard j is node thread j, whatever order the HELLOs came in */
        while (j < real && strcmp(node_endpoint(fx.nodes[j].node), m.hello.endpoint) != 0) j++;
        cr_assert_lt(j, real, "HELLO from an unknown endpoint %s", m.hello.endpoint);
        peer_t *p = &fx.npeer[j];
        memcpy(p->route, in.route, in.route_size);
        p->route_size = in.route_size;
        p->hello_rid = m.rid;
        strcpy(p->endpoint, m.hello.endpoint);
        wire_msg_clear(&m);
    }
    if (fake_node) {
        fx.fake = zmq_socket(fx.ctx, ZMQ_ROUTER);
        int linger = 0;
        zmq_setsockopt(fx.fake, ZMQ_LINGER, &linger, sizeof linger);
        cr_assert_eq(zmq_bind(fx.fake, "tcp://127.0.0.1:*"), 0);
        size_t len = sizeof fx.npeer[1].endpoint;
        zmq_getsockopt(fx.fake, ZMQ_LAST_ENDPOINT, fx.npeer[1].endpoint, &len);
    }
    uint64_t half = fx.split ? fx.split : fx.nparams / 2, shalf = fx.nstats / 2;
    fx.shards[0] = (wire_shard_t){.id = 0, .offset = 0, .length = half, .stats_offset = 0, .stats_length = shalf};
    fx.shards[1] = (wire_shard_t){.id = 1, .offset = half, .length = fx.nparams - half,
                                  .stats_offset = shalf, .stats_length = fx.nstats - shalf};
    for (int i = 0; i < NODES; i++) strcpy(fx.shards[i].endpoint, fx.npeer[i].endpoint);
    for (int i = 0; i < real; i++) welcome(&fx.npeer[i], WIRE_ROLE_NODE, (uint32_t)i, 1000, 60000);
    for (int i = 0; i < real; i++) {
        next_msg(&in, &m);
        cr_assert_eq(m.type, WIRE_NODE_READY);
        wire_msg_clear(&m);
    }

    worker_th_t *t = &fx.wk;
    t->outf = open_memstream(&t->out, &t->out_len);
    t->worker = worker_new(fx.ep, 1, &e);
    cr_assert_not_null(t->worker, "%s", e.msg);
    cr_assert_eq(pthread_create(&t->thread, NULL, worker_main_th, t), 0);
    t->running = 1;
    next_msg(&in, &m);
    cr_assert_eq(m.type, WIRE_HELLO);
    cr_assert_eq(m.hello.role, WIRE_ROLE_WORKER);
    cr_assert_str_eq(m.hello.endpoint, "");
    memcpy(fx.wpeer.route, in.route, in.route_size);
    fx.wpeer.route_size = in.route_size;
    fx.wpeer.hello_rid = m.rid;
    wire_msg_clear(&m);
    wire_in_close(&in);
    welcome(&fx.wpeer, WIRE_ROLE_WORKER, 0, hb, timeout);
}

typedef struct {
    int evals[16];          /* correct_low per epoch */
    uint64_t eval_versions[16];
    long progress_samples;
    int chunks_done;
} run_t;

/* Plays the coordinator of one worker over cfg's epochs; returns when the worker said BYE. */
static void coordinate(run_t *r) {
    const int n = fx.cfg.data.train_limit, b = fx.cfg.train.batch_size, cb = fx.cfg.cluster.chunk_batches;
    const int test_n = fx.cfg.data.test_limit;
    int epoch = 0, pos = 0, out = 0, done = 0, evaluating = 0, finished = 0;
    uint32_t chunk = 0;
    memset(r, 0, sizeof *r);
    wire_in_t in = {0};
    wire_msg_t m;
    for (;;) {
        next_msg(&in, &m);
        cr_assert(same_peer(&fx.wpeer, &in) || m.type == WIRE_HEARTBEAT, "%s from a node", wire_type_name(m.type));
        uint32_t rid = m.rid, type = m.type;
        wire_msg_t rep;
        memset(&rep, 0, sizeof rep);
        if (type == WIRE_LEASE_REQ) {
            rep.type = WIRE_LEASE; /* may cross DONE on the wire: answered with a wait */
            rep.rid = rid;
            if (!evaluating && !finished && pos < n) {
                uint32_t count = (uint32_t)(n - pos < cb * b ? n - pos : cb * b);
                rep.lease = (wire_lease_t){0, chunk++, (uint32_t)epoch, WIRE_LEASE_RANGE, (uint32_t)pos, count, 60000};
                pos += (int)count;
                out++;
            } else {
                rep.lease = (wire_lease_t){0, 0, (uint32_t)epoch, WIRE_LEASE_WAIT, 0, 0, 20};
            }
            send_peer(&fx.wpeer, &rep);
        } else if (type == WIRE_CHUNK_DONE) {
            cr_assert_eq(m.chunk_done.epoch, (uint32_t)epoch);
            done++;
            r->chunks_done++;
            if (pos >= n && done == out) {
                evaluating = 1;
                rep.type = WIRE_EVAL_REQ;
                rep.rid = ++fx.rid;
                rep.eval_req = (wire_eval_req_t){(uint32_t)epoch, (uint32_t)epoch, WIRE_SPLIT_TEST, 0, (uint32_t)test_n};
                send_peer(&fx.wpeer, &rep);
            }
        } else if (type == WIRE_EVAL_REP) {
            cr_assert_eq(m.eval_rep.eval, (uint32_t)epoch);
            cr_assert_eq(m.eval_rep.samples, (uint32_t)test_n);
            r->evals[epoch] = (int)m.eval_rep.correct_low;
            r->eval_versions[epoch] = m.eval_rep.version;
            epoch++;
            evaluating = 0;
            pos = out = done = 0;
            if (epoch == fx.cfg.train.epochs) {
                finished = 1;
                rep.type = WIRE_DONE;
                rep.rid = ++fx.rid;
                rep.done = (wire_done_t){WIRE_DONE_FINISHED, (uint32_t)epoch, 0};
                send_peer(&fx.wpeer, &rep);
            }
        } else if (type == WIRE_PROGRESS) {
            r->progress_samples += m.progress.samples;
        } else if (type == WIRE_BYE) {
            cr_assert_eq(m.bye.reason, 0);
            wire_msg_clear(&m);
            break;
        } else {
            cr_assert_fail("unexpected %s from the worker", wire_type_name(type));
        }
        wire_msg_clear(&m);
    }
    wire_in_close(&in);
}

/* Pulls vec of every shard as the coordinator (WIRE_ID_COORD) into out. */
static void pull_final(uint32_t vec, float *out) {
    void *s = zmq_socket(fx.ctx, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    for (int i = 0; i < NODES; i++) {
        cr_assert_eq(zmq_connect(s, fx.shards[i].endpoint), 0);
        const wire_shard_t *sh = &fx.shards[i];
        wire_msg_t m;
        memset(&m, 0, sizeof m);
        m.type = WIRE_PULL;
        m.rid = ++fx.rid;
        uint64_t off = vec ? sh->stats_offset : sh->offset, len = vec ? sh->stats_length : sh->length;
        m.pull = (wire_pull_t){WIRE_ID_COORD, (uint32_t)i, vec, off, len, 0, WIRE_ENC_F32};
        auxps_error_t e = {0};
        cr_assert_eq(wire_send(s, NULL, 0, &m, NULL, NULL, 0, &e), 0);
        wire_in_t in = {0};
        cr_assert_eq(util_recv_within(s, 0, &in, &m, RECV_MS), 0);
        cr_assert_eq(m.type, WIRE_PULL_REP);
        cr_assert_eq(wire_payload_f32(&m, out + off, &e), 0, "%s", e.msg);
        wire_msg_clear(&m);
        wire_in_close(&in);
        zmq_disconnect(s, fx.shards[i].endpoint);
    }
    zmq_close(s);
}

static void end_nodes(void) {
    for (int i = 0; i < NODES; i++) {
        if (!fx.nodes[i].running) continue;
        wire_msg_t m;
        memset(&m, 0, sizeof m);
        m.type = WIRE_DONE;
        m.rid = ++fx.rid;
        send_peer(&fx.npeer[i], &m);
    }
    for (int i = 0; i < NODES; i++) {
        if (!fx.nodes[i].running) continue;
        pthread_join(fx.nodes[i].thread, NULL);
        fx.nodes[i].running = 0;
        cr_assert_eq(fx.nodes[i].rc, 0, "%s", fx.nodes[i].err.msg);
        fflush(fx.nodes[i].outf);
    }
}

/* ---- tests ---- */

Test(worker, one_worker_in_bsp_trains_the_trainers_parameters_bit_for_bit) {
    start_cluster(0, 200, 20000);
    run_t r;
    coordinate(&r);
    pthread_join(fx.wk.thread, NULL);
    fx.wk.running = 0;
    cr_assert_eq(fx.wk.rc, 0, "%s", fx.wk.err.msg);
    float *params = malloc(fx.nparams * sizeof(float)), *stats = malloc(fx.nstats * sizeof(float));
    pull_final(WIRE_VEC_PARAMS, params);
    pull_final(WIRE_VEC_STATS, stats);
    end_nodes();

    /* The trainer's run of the same recipe, step by step. */
    auxps_error_t e = {0};
    dataset_t train = {0}, test = {0};
    cr_assert_eq(dataset_load(&train, fx.cfg.data.dir, 1, fx.cfg.data.train_limit, &e), 0, "%s", e.msg);
    cr_assert_eq(dataset_load(&test, fx.cfg.data.dir, 0, fx.cfg.data.test_limit, &e), 0, "%s", e.msg);
    const int b = fx.cfg.train.batch_size, epochs = fx.cfg.train.epochs;
    model_t *m = model_new(&fx.cfg.model, b);
    model_init(m, fx.cfg.train.seed);
    const long spe = (train.n + b - 1) / b;
    const auxps_config_t *c = &fx.cfg;
    optim_t o = {c->train.lr, c->train.momentum, c->train.weight_decay, c->train.nesterov, c->train.schedule,
                 c->train.step_epochs, c->train.step_gamma, spe, spe * epochs};
    float *mom = calloc(fx.nparams, sizeof(float)), *x = malloc(sizeof(float) * 784 * (size_t)b);
    int *y = malloc(sizeof(int) * (size_t)b), *order = malloc(sizeof(int) * (size_t)train.n);
    data_transform_t tf = {c->data.mean, c->data.std, 0, 0};
    long step = 0;
    for (int ep = 0; ep < epochs; ep++) {
        data_epoch_order(order, train.n, c->train.seed, ep);
        for (long s = 0; s < spe; s++, step++) {
            int start = (int)(s * b), nb = train.n - start < b ? train.n - start : b;
            dataset_batch(&train, order + start, nb, &tf, NULL, x, y);
            model_result_t res;
            trainer_step(m, &o, mom, x, y, nb, step, &res);
        }
        int correct = trainer_evaluate(m, &test, &tf, b, x, y, NULL);
        cr_assert_eq(r.evals[ep], correct, "epoch %d: the worker evaluated %d correct, the trainer %d", ep,
                     r.evals[ep], correct);
        cr_assert_eq(r.eval_versions[ep], (uint64_t)spe * (uint64_t)(ep + 1));
    }
    size_t diff = 0;
    for (size_t i = 0; i < fx.nparams; i++) diff += params[i] != model_params(m)[i];
    cr_assert_eq(diff, 0, "%zu of %zu parameters differ from the trainer's", diff, fx.nparams);
    cr_assert(memcmp(stats, model_stats(m), fx.nstats * sizeof(float)) == 0, "statistics differ");

    cr_assert_eq(r.progress_samples, (long)train.n * epochs);
    cr_assert_eq(r.chunks_done, 6);
    fflush(fx.wk.outf);
    cr_assert_str_eq(fx.wk.out, "worker 0: pushed 32 pushes (per shard: 16,16)\n");
    for (int i = 0; i < NODES; i++) {
        char want[128];
        snprintf(want, sizeof want, "node %d: applied 16 pushes, 6 stats pushes, version 16, max staleness 0\n", i);
        cr_assert_str_eq(fx.nodes[i].out, want);
    }
    model_destroy(&m);
    dataset_free(&train);
    dataset_free(&test);
    free(params);
    free(stats);
    free(mom);
    free(x);
    free(y);
    free(order);
}

/* Answers the worker's first LEASE_REQ with chunk 0 of epoch 0: positions [0, count). */
static void lease_first_chunk(wire_in_t *in, uint32_t count) {
    wire_msg_t m;
    next_msg(in, &m);
    cr_assert_eq(m.type, WIRE_LEASE_REQ);
    wire_msg_t rep;
    memset(&rep, 0, sizeof rep);
    rep.type = WIRE_LEASE;
    rep.rid = m.rid;
    rep.lease = (wire_lease_t){0, 0, 0, WIRE_LEASE_RANGE, 0, count, 60000};
    send_peer(&fx.wpeer, &rep);
    wire_msg_clear(&m);
}

Test(worker, a_node_that_does_not_answer_gets_the_request_again_until_done) {
    start_cluster(1, 50, 600);
    /* Lease one chunk, then keep the coordinator link alive with HEARTBEATs while node 1
     * stays mute: the worker sends its request again after 600 ms and 1.2 s more (it may be a
     * node restarting from its checkpoint), heartbeating all along; after DONE it gives up
     * the wait within a timeout and leaves with BYE. */
    wire_in_t in = {0};
    wire_msg_t m;
    lease_first_chunk(&in, 64);
    wire_msg_t rep;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int heartbeats = 0, bye = 0;
    for (int i = 0; i < 200 && !bye; i++) {
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double dt = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
        memset(&rep, 0, sizeof rep);
        if (dt < 2.5) {
            rep.type = WIRE_HEARTBEAT;
            rep.heartbeat = (wire_heartbeat_t){WIRE_ROLE_COORD, WIRE_ID_COORD};
        } else {
            rep.type = WIRE_DONE;
            rep.done = (wire_done_t){WIRE_DONE_ABORTED, 0, 0};
        }
        send_peer(&fx.wpeer, &rep);
        if (util_recv_within(fx.coord, 1, &in, &m, 50) == 0) {
            bye = m.type == WIRE_BYE && same_peer(&fx.wpeer, &in);
            heartbeats += m.type == WIRE_HEARTBEAT && same_peer(&fx.wpeer, &in);
            wire_msg_clear(&m);
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    wire_in_close(&in);
    pthread_join(fx.wk.thread, NULL);
    fx.wk.running = 0;
    cr_assert(bye, "the worker said BYE after DONE");
    cr_assert_eq(fx.wk.rc, 0, "%s", fx.wk.err.msg);
    worker_counters_t c;
    worker_get_counters(fx.wk.worker, &c);
    cr_assert_geq(c.resends, 2, "sent again after 600 ms and after 1.2 s more: %llu", (unsigned long long)c.resends);
    cr_assert_eq(c.pushes, 0, "nothing was acknowledged, so nothing counts");
    cr_assert_geq(heartbeats, 5, "the coordinator heard the worker while it waited");
    cr_assert_lt(t1.tv_sec - t0.tv_sec, 8);
    end_nodes();
}

/* The fake node 1's next message from the worker. Meanwhile the test, as the coordinator,
 * sends the worker HEARTBEAT every 50 ms (its timeout is short here) and reads what it says. */
static void fake_next(wire_in_t *fin, wire_msg_t *m, int ms) {
    wire_in_t in = {0};
    wire_msg_t c;
    for (int waited = 0; waited < ms; waited += 50) {
        wire_msg_t hb;
        memset(&hb, 0, sizeof hb);
        hb.type = WIRE_HEARTBEAT;
        hb.heartbeat = (wire_heartbeat_t){WIRE_ROLE_COORD, WIRE_ID_COORD};
        send_peer(&fx.wpeer, &hb);
        while (util_recv_within(fx.coord, 1, &in, &c, 0) == 0) wire_msg_clear(&c);
        if (util_recv_within(fx.fake, 1, fin, m, 50) == 0) {
            wire_in_close(&in);
            return;
        }
    }
    wire_in_close(&in);
    cr_assert_fail("node 1 heard nothing from the worker in %d ms", ms);
}

/* The fake node 1 answers request q (a PULL from params or stats, or a push) at version. */
static void fake_answer(const wire_in_t *fin, const wire_msg_t *q, uint64_t version, const float *params,
                        const float *stats) {
    wire_msg_t r;
    memset(&r, 0, sizeof r);
    r.rid = q->rid;
    if (q->type == WIRE_PULL) {
        r.type = WIRE_PULL_REP;
        r.pull_rep = (wire_pull_rep_t){1, q->pull.vec, q->pull.offset, q->pull.length, version, 0, WIRE_ENC_F32,
                                       NULL, 0};
        r.payload = (void *)((q->pull.vec == WIRE_VEC_PARAMS ? params : stats) + q->pull.offset);
        r.payload_size = q->pull.length * sizeof(float);
    } else {
        r.type = WIRE_PUSH_ACK;
        r.push_ack = (wire_push_ack_t){1, q->type == WIRE_PUSH ? WIRE_VEC_PARAMS : WIRE_VEC_STATS, version, 0};
    }
    auxps_error_t e = {0};
    cr_assert_eq(wire_send(fx.fake, fin->route, fin->route_size, &r, NULL, NULL, 0, &e), 0, "%s", e.msg);
}

/* Within a chunk the next batch's PULL goes right behind the batch's PUSH, before the ACK; a
 * node silent for the timeout gets both again, in their order, with new rids; the batch
 * trains from the version that PULL brought; the chunk's last PUSH has no PULL behind it. */
Test(worker, the_next_batchs_pull_goes_behind_the_push_and_both_go_again_in_order) {
    start_cluster(1, 50, 600);
    model_t *md = model_new(&fx.cfg.model, 1);
    model_init(md, fx.cfg.train.seed);
    const float *params = model_params(md), *stats = model_stats(md);
    wire_in_t in = {0}, fin = {0};
    wire_msg_t m, q;
    lease_first_chunk(&in, 128); /* two batches of 64 */
    fake_next(&fin, &m, 5000);
    cr_assert(m.type == WIRE_PULL && m.pull.vec == WIRE_VEC_STATS, "%s first", wire_type_name(m.type));
    fake_answer(&fin, &m, 0, params, stats);
    wire_msg_clear(&m);
    fake_next(&fin, &m, 5000);
    cr_assert(m.type == WIRE_PULL && m.pull.vec == WIRE_VEC_PARAMS && m.pull.clock == 0);
    fake_answer(&fin, &m, 0, params, stats);
    wire_msg_clear(&m);
    uint32_t rids[4];
    memset(&q, 0, sizeof q); /* the second PUSH's type and rid, answered after the PULL behind it came */
    for (int k = 0; k < 4; k++) { /* PUSH, PULL; after 600 ms of silence, PUSH, PULL again */
        fake_next(&fin, &m, 5000);
        if (k % 2 == 0) {
            cr_assert_eq(m.type, WIRE_PUSH, "message %d: %s", k, wire_type_name(m.type));
            cr_assert(m.push.clock == 0 && m.push.version == 0);
        } else {
            cr_assert_eq(m.type, WIRE_PULL, "message %d: %s, not the next batch's PULL", k, wire_type_name(m.type));
            cr_assert(m.pull.vec == WIRE_VEC_PARAMS && m.pull.clock == 1, "the next batch's pull, clock 1");
        }
        rids[k] = m.rid;
        if (k >= 2) { /* the second copies are answered: the ACK first, as a node does */
            cr_assert_neq(rids[k], rids[k - 2], "sent again with a new rid");
            if (k == 2) q.type = m.type, q.rid = m.rid;
            else fake_answer(&fin, &q, 1, params, stats), fake_answer(&fin, &m, 1, params, stats);
        }
        wire_msg_clear(&m);
    }
    fake_next(&fin, &m, 5000);
    cr_assert_eq(m.type, WIRE_PUSH, "%s", wire_type_name(m.type));
    cr_assert(m.push.clock == 1 && m.push.version == 1, "trained from version %llu, the pipelined pull's",
              (unsigned long long)m.push.version);
    cr_assert_neq(util_recv_within(fx.fake, 1, &fin, &q, 300), 0, "%s behind the chunk's last push",
                  wire_type_name(q.type));
    fake_answer(&fin, &m, 2, params, stats);
    wire_msg_clear(&m);
    fake_next(&fin, &m, 5000);
    cr_assert_eq(m.type, WIRE_STATS_PUSH, "%s", wire_type_name(m.type));
    fake_answer(&fin, &m, 2, params, stats);
    wire_msg_clear(&m);
    wire_msg_t done;
    memset(&done, 0, sizeof done);
    done.type = WIRE_DONE;
    done.done = (wire_done_t){WIRE_DONE_FINISHED, 1, 0};
    int bye = 0, chunk_done = 0;
    for (int i = 0; i < 100 && !bye; i++) {
        send_peer(&fx.wpeer, &done);
        if (util_recv_within(fx.coord, 1, &in, &m, 50) != 0) continue;
        bye = m.type == WIRE_BYE;
        chunk_done += m.type == WIRE_CHUNK_DONE;
        wire_msg_clear(&m);
    }
    cr_assert(bye, "the worker said BYE after DONE");
    pthread_join(fx.wk.thread, NULL);
    fx.wk.running = 0;
    cr_assert_eq(fx.wk.rc, 0, "%s", fx.wk.err.msg);
    worker_counters_t c;
    worker_get_counters(fx.wk.worker, &c);
    cr_assert_eq(c.clock, 2);
    cr_assert_eq(c.pushes, 4, "2 batches to 2 shards, each acknowledged once: %llu", (unsigned long long)c.pushes);
    cr_assert_eq(c.resends, 2, "the PUSH and the PULL behind it, once each: %llu", (unsigned long long)c.resends);
    wire_in_close(&in);
    wire_in_close(&fin);
    model_destroy(&md);
    end_nodes();
}

Test(worker, a_stop_request_ends_the_worker_after_the_current_batch_with_bye) {
    start_cluster(0, 200, 20000);
    wire_in_t in = {0};
    wire_msg_t m;
    int progress = 0;
    uint32_t returned = 0;
    for (;;) {
        next_msg(&in, &m);
        uint32_t type = m.type, rid = m.rid;
        if (type == WIRE_LEASE_REQ) {
            wire_msg_t rep;
            memset(&rep, 0, sizeof rep);
            rep.type = WIRE_LEASE;
            rep.rid = rid;
            rep.lease = (wire_lease_t){0, 0, 0, WIRE_LEASE_RANGE, 0, 448, 60000};
            send_peer(&fx.wpeer, &rep);
        } else if (type == WIRE_PROGRESS) {
            if (++progress == 2) fx.wk.stop = 1;
        } else if (type == WIRE_CHUNK_DONE) {
            returned = m.chunk_done.samples; /* the trained part; the coordinator leases the rest */
            cr_assert(returned > 0 && returned < 448, "a partial return, not %u samples", returned);
        } else if (type == WIRE_BYE) {
            wire_msg_clear(&m);
            break;
        } else {
            cr_assert_fail("unexpected %s", wire_type_name(type));
        }
        wire_msg_clear(&m);
    }
    wire_in_close(&in);
    pthread_join(fx.wk.thread, NULL);
    fx.wk.running = 0;
    cr_assert_eq(fx.wk.rc, 0, "%s", fx.wk.err.msg);
    worker_counters_t c;
    worker_get_counters(fx.wk.worker, &c);
    cr_assert(c.clock >= 2 && c.clock < 7, "stopped after %llu of 7 batches", (unsigned long long)c.clock);
    cr_assert_eq(c.chunks, 1, "the chunk was returned in part");
    cr_assert_eq(returned, c.samples, "CHUNK_DONE says what it trained");
    cr_assert_eq(c.pushes, c.clock * NODES, "every batch it pushed was acknowledged");
    end_nodes();
}

/* cluster.pull = kbit: a node whose PULL_REP sends a quantized tensor as float32 instead of
 * its k-bit codes is a broken node; the worker stops with an error that names the tensor, and
 * pushes nothing computed on such weights. */
Test(worker, a_kbit_reply_without_the_codes_of_a_quantized_tensor_ends_the_worker_with_an_error) {
    auxps_error_t e = {0};
    cr_assert_eq(config_set(&fx.cfg, "cluster.pull=kbit", &e), 0, "%s", e.msg);
    free(fx.config);
    size_t len;
    FILE *f = open_memstream(&fx.config, &len);
    config_write(&fx.cfg, f);
    fclose(f);
    model_t *md = model_new(&fx.cfg.model, 1);
    for (int i = 0; i < model_num_tensors(md) && fx.split == 0; i++) /* a shard map of whole tensors */
        if (model_tensor(md, i)->offset >= fx.nparams / 2) fx.split = model_tensor(md, i)->offset;
    start_cluster(1, 200, 20000);
    wire_in_t in = {0};
    wire_msg_t m;
    lease_first_chunk(&in, 64);
    /* The fake node 1 answers the stats pull in f32, then the params pull in "kbit" whose only
     * segment is float32: valid on the wire, wrong for a kbit run. */
    float *vals = calloc(fx.nparams, sizeof(float));
    int answered_params = 0;
    for (int i = 0; i < 100 && !answered_params; i++) {
        wire_in_t fin = {0};
        if (util_recv_within(fx.fake, 1, &fin, &m, 200) != 0) continue;
        if (m.type == WIRE_PULL) {
            wire_msg_t r;
            memset(&r, 0, sizeof r);
            r.type = WIRE_PULL_REP;
            r.rid = m.rid;
            wire_seg_t seg = {(uint32_t)m.pull.length, 32, 0.0f, 0.0f};
            r.pull_rep = (wire_pull_rep_t){1, m.pull.vec, m.pull.offset, m.pull.length, 0, 0, WIRE_ENC_F32, NULL, 0};
            if (m.pull.vec == WIRE_VEC_PARAMS) {
                cr_assert_eq(m.pull.encoding, WIRE_ENC_KBIT, "a kbit run's worker asks for k-bit weights");
                r.pull_rep.encoding = WIRE_ENC_KBIT, r.pull_rep.segs = &seg, r.pull_rep.nsegs = 1;
                answered_params = 1;
            }
            r.payload = vals;
            r.payload_size = m.pull.length * sizeof(float);
            cr_assert_eq(wire_send(fx.fake, fin.route, fin.route_size, &r, NULL, NULL, 0, &e), 0, "%s", e.msg);
        }
        wire_msg_clear(&m);
        wire_in_close(&fin);
    }
    cr_assert(answered_params, "the worker never pulled its params from node 1");
    pthread_join(fx.wk.thread, NULL);
    fx.wk.running = 0;
    cr_assert_neq(fx.wk.rc, 0, "the worker went on with weights it could not decode");
    cr_assert_not_null(strstr(fx.wk.err.msg, "node 1"), "%s", fx.wk.err.msg);
    cr_assert_not_null(strstr(fx.wk.err.msg, "sent as 32-bit codes"), "%s", fx.wk.err.msg);
    worker_counters_t c;
    worker_get_counters(fx.wk.worker, &c);
    cr_assert_eq(c.pushes, 0, "nothing was pushed");
    wire_in_close(&in);
    free(vals);
    model_destroy(&md);
    end_nodes();
}
