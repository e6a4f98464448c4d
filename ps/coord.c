/* coord.c - the coordinator of a distributed run: registration, the shard map, chunk leases,
 * progress, evaluations and the final export (docs/CLUSTER.md, docs/PROTOCOL.md). */
#include "coord.h"

#include "clock.h"
#include "data.h"
#include "export.h"
#include "model.h"
#include "optim.h"
#include "peer.h"
#include "trainer.h"
#include "wire.h"

#include <cblas.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum {
    PEER_HELD = 0,    /* said HELLO, waits for WELCOME (nodes: for the others; workers: for nodes) */
    PEER_WELCOMED,    /* got WELCOME */
    PEER_READY,       /* node: NODE_READY matched its shard */
    PEER_DONE,        /* got DONE: expected to say BYE and leave */
    PEER_GONE         /* said BYE */
};

/* The run's phases, in order. */
enum { P_NODES = 0, P_NODES_READY, P_TRAIN, P_EVAL, P_DRAIN, P_PULL, P_BYE, P_END };

#define MAX_BAD_PER_SENDER 16 /* PROTOCOL.md section 7: ignore a sender after this many */
#define STRANGERS 64          /* unregistered senders whose bad messages are counted */
#define LEASE_TTL_TIMEOUTS 6  /* a lease lasts this many peer timeouts (see CLUSTER.md) */

typedef struct {
    int active;
    uint32_t chunk, epoch, first, count;
    int batches;
    uint32_t rid;             /* of the LEASE_REQ it answered: a repeated request gets it again */
    double expires;
} lease_t;

typedef struct {
    unsigned char route[WIRE_MAX_ROUTE];
    size_t route_size;
    int role;                 /* WIRE_ROLE_WORKER or WIRE_ROLE_NODE */
    uint32_t id;
    int state;                /* PEER_* */
    char name[WIRE_MAX_NAME + 1];
    char endpoint[WIRE_MAX_ENDPOINT + 1];
    uint32_t hello_rid;
    double last_recv, last_sent;
    int bad;                  /* bad messages from this peer */
    /* workers */
    lease_t lease;
    int epoch_batches;        /* batches leased in the current epoch (ssp, bsp) */
    uint64_t clock;           /* batches pushed, from PROGRESS and CHUNK_DONE */
    int eval_pending;
    uint32_t eval_count;
} peer_t;

typedef struct {
    unsigned char route[WIRE_MAX_ROUTE];
    size_t route_size;
    int bad;
} stranger_t;

/* One PULL of the final parameters, in flight to a node. */
typedef struct {
    uint32_t rid, shard, vec;
    uint64_t offset, length;
    int done;
} pull_t;

struct coord {
    auxps_config_t cfg;
    coord_options_t opt;
    char bind[WIRE_MAX_ENDPOINT + 1];
    char endpoint[WIRE_MAX_ENDPOINT + 1];
    char dump_path[512];
    void *ctx, *router;
    void *dealers[WIRE_MAX_SHARDS];
    wire_in_t in;
    FILE *out;

    int ntrain;
    dataset_t test;
    model_t *model;           /* the layout (shard map) and, at the end, the exported model */
    size_t nparams, nstats;
    float *params, *stats;    /* the final vectors, pulled from the nodes */
    wire_shard_t shards[WIRE_MAX_SHARDS];
    char *config_text;        /* config_write of cfg: WELCOME.config */
    optim_t optim;            /* the nodes' schedule, for the lr column */
    double heartbeat_s, timeout_s;

    peer_t *nodes, *workers;
    int nnodes, nworkers;     /* registered so far */
    int nready;               /* nodes whose NODE_READY matched */
    stranger_t strangers[STRANGERS];
    int next_stranger;

    int phase;
    double phase_since;       /* start of the phase, or the last registration in it */
    uint32_t rid;             /* one-way messages (HEARTBEAT, DONE, EVAL_REQ) */
    int stopping;             /* 1 after the stop flag was seen, 2 after a second one */
    int aborted;              /* DONE says aborted */

    /* The plan: see plan_epoch. */
    long total_steps, planned_steps, step;
    int epoch;                /* current epoch, 0-based */
    int epochs_done;
    uint32_t next_chunk, next_pos, epoch_end;
    long epoch_batches_left;  /* async: batches not yet leased this epoch */
    int per_worker;           /* ssp, bsp: batches every worker trains this epoch */
    int chunks_out, chunks_done;
    double t_epoch, train_time;

    /* Progress since the last progress line. */
    double log_t, log_loss, log_loss_low;
    long log_samples, logged_step;

    /* Evaluation of the current epoch. */
    uint32_t eval_id;
    int evals_pending;
    double t_eval;            /* when the epoch's training ended */
    double last_progress;     /* last lease, PROGRESS, CHUNK_DONE or EVAL_REP: the stall watchdog */
    double eval_deadline;
    long eval_samples, eval_correct, eval_correct_aux;
    int test_correct, test_total, test_correct_aux;

    /* The final pulls. */
    pull_t *pulls;
    int npulls, pulls_left;
    double pull_deadline;

    /* Counters for the closing status line. */
    long leases, waits, progress_msgs, bad_messages, errors_received;

    int failed;
    auxps_error_t err;
};

static volatile sig_atomic_t g_coord_stop; /* set by SIGINT/SIGTERM; the only global, as signals need */

static const char *cons_name(int c) { return c == CONS_SSP ? "ssp" : c == CONS_BSP ? "bsp" : "async"; }

static void logf_(coord_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Operational messages go to stderr; the run's record (trainer format) to c->out. */
static void logf_(coord_t *c, const char *fmt, ...) {
    (void)c;
    va_list ap;
    va_start(ap, fmt);
    fputs("coord: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    fflush(stderr);
}

static void outf(coord_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void outf(coord_t *c, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfprintf(c->out, fmt, ap);
    va_end(ap);
    fflush(c->out);
}

/* Ends the run with an error: the first failure wins. */
static void fail(coord_t *c, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fail(coord_t *c, int code, const char *fmt, ...) {
    if (c->failed) return;
    c->failed = 1;
    c->err.code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err.msg, sizeof c->err.msg, fmt, ap);
    va_end(ap);
}

static const char *peer_kind(const peer_t *p) { return p->role == WIRE_ROLE_NODE ? "node" : "worker"; }

/* ---- sending ----------------------------------------------------------------------------- */

/* Sends m to a peer on the ROUTER. A peer that is gone (EHOSTUNREACH) is not an error here:
 * silence is what the timeouts judge. Returns 0 or -1. */
static int send_to(coord_t *c, const unsigned char *route, size_t route_size, wire_msg_t *m) {
    auxps_error_t e = {0};
    if (wire_send(c->router, route, route_size, m, NULL, NULL, 0, &e) != 0) {
        if (errno != EHOSTUNREACH && errno != EAGAIN)
            logf_(c, "cannot send %s: %s", wire_type_name(m->type), e.msg);
        return -1;
    }
    return 0;
}

static int send_peer(coord_t *c, peer_t *p, wire_msg_t *m) {
    p->last_sent = clock_now_s();
    return send_to(c, p->route, p->route_size, m);
}

static void send_error_to(coord_t *c, const unsigned char *route, size_t route_size, uint32_t rid,
                          uint32_t code, const char *text) {
    auxps_error_t e = {0};
    if (wire_send_error(c->router, route, route_size, rid, code, text, &e) != 0 && errno != EHOSTUNREACH)
        logf_(c, "cannot send ERROR: %s", e.msg);
}

static void send_heartbeat(coord_t *c, peer_t *p) {
    wire_msg_t m;
    memset(&m, 0, sizeof m);
    m.type = WIRE_HEARTBEAT;
    m.rid = c->rid++;
    m.heartbeat = (wire_heartbeat_t){WIRE_ROLE_COORD, WIRE_ID_COORD};
    send_peer(c, p, &m);
}

static void send_done(coord_t *c, peer_t *p) {
    wire_msg_t m;
    memset(&m, 0, sizeof m);
    m.type = WIRE_DONE;
    m.rid = c->rid++;
    m.done = (wire_done_t){c->aborted ? WIRE_DONE_ABORTED : WIRE_DONE_FINISHED, (uint32_t)c->epochs_done,
                           (uint64_t)c->step};
    send_peer(c, p, &m);
    p->state = PEER_DONE;
    p->lease.active = 0; /* an interrupted chunk is simply dropped */
}

/* The seed of a peer's own random stream. Worker 0's is the trainer's augmentation seed, so
 * that one worker draws the trainer's augmentation sequence (CLUSTER.md). */
static uint64_t stream_seed(const coord_t *c, int role, uint32_t id) {
    const uint64_t golden = 0x9E3779B97F4A7C15ull;
    if (role == WIRE_ROLE_WORKER) return (c->cfg.train.seed ^ 0xA5A5A5A5ull) ^ ((uint64_t)id * golden);
    return (c->cfg.train.seed ^ 0x5A5A5A5Aull) ^ ((uint64_t)(id + 1) * golden);
}

static void send_welcome(coord_t *c, peer_t *p) {
    wire_msg_t m;
    memset(&m, 0, sizeof m);
    m.type = WIRE_WELCOME;
    m.rid = p->hello_rid;
    const auxps_config_t *cf = &c->cfg;
    m.welcome = (wire_welcome_t){
        .role = (uint32_t)p->role,
        .id = p->id,
        .consistency = (uint32_t)cf->cluster.consistency,
        .staleness = cf->cluster.consistency == CONS_SSP ? (uint32_t)cf->cluster.staleness : 0,
        .num_workers = (uint32_t)c->opt.workers,
        .num_params = c->nparams,
        .num_stats = c->nstats,
        .seed = cf->train.seed,
        .stream_seed = stream_seed(c, p->role, p->id),
        .heartbeat_ms = (uint32_t)cf->cluster.heartbeat_ms,
        .timeout_ms = (uint32_t)cf->cluster.timeout_ms,
        .shards = c->shards,
        .nshards = (uint32_t)c->opt.nodes,
        .config = c->config_text,
    };
    send_peer(c, p, &m); /* a failed send shows as silence */
    if (p->state == PEER_HELD) p->state = PEER_WELCOMED;
}

/* ---- peers and bad messages -------------------------------------------------------------- */

static int same_route(const unsigned char *a, size_t an, const unsigned char *b, size_t bn) {
    return an == bn && memcmp(a, b, an) == 0;
}

static peer_t *find_peer(coord_t *c, const unsigned char *route, size_t n) {
    for (int i = 0; i < c->nnodes; i++)
        if (same_route(c->nodes[i].route, c->nodes[i].route_size, route, n)) return &c->nodes[i];
    for (int i = 0; i < c->nworkers; i++)
        if (same_route(c->workers[i].route, c->workers[i].route_size, route, n)) return &c->workers[i];
    return NULL;
}

/* Counts a bad message and answers it with ERROR, unless the sender has sent too many. */
static void bad_message(coord_t *c, peer_t *p, uint32_t rid, uint32_t code, const char *why) {
    c->bad_messages++;
    int *count = NULL;
    if (p != NULL) count = &p->bad;
    else {
        for (int i = 0; i < STRANGERS && count == NULL; i++)
            if (same_route(c->strangers[i].route, c->strangers[i].route_size, c->in.route, c->in.route_size))
                count = &c->strangers[i].bad;
        if (count == NULL) {
            stranger_t *s = &c->strangers[c->next_stranger];
            c->next_stranger = (c->next_stranger + 1) % STRANGERS;
            memcpy(s->route, c->in.route, c->in.route_size);
            s->route_size = c->in.route_size;
            s->bad = 0;
            count = &s->bad;
        }
    }
    if (++*count > MAX_BAD_PER_SENDER) return;
    if (p != NULL)
        logf_(c, "bad message from %s %u (%s): %s", peer_kind(p), p->id, p->name, why);
    else
        logf_(c, "bad message from an unregistered sender: %s", why);
    if (*count == MAX_BAD_PER_SENDER) logf_(c, "ignoring that sender's bad messages from now on");
    send_error_to(c, c->in.route, c->in.route_size, rid, code, why);
}

/* ---- the shard map ----------------------------------------------------------------------- */

/* An exact partition by dynamic programming: T and S are small. */
int coord_shard_map(const model_t *m, int S, wire_shard_t *out, auxps_error_t *err) {
    const int T = model_num_tensors(m);
    if (S < 1 || S > (int)WIRE_MAX_SHARDS)
        return auxps_error_set(err, AUXPS_EINVAL, "--nodes %d: 1..%d nodes", S, (int)WIRE_MAX_SHARDS);
    if (T < S)
        return auxps_error_set(err, AUXPS_EINVAL, "--nodes %d: the model has only %d tensors, and a tensor "
                               "is never split between nodes", S, T);
    size_t *pre = calloc((size_t)T + 1, sizeof *pre);
    size_t *best = calloc((size_t)(S + 1) * (T + 1), sizeof *best);
    int *cut = calloc((size_t)(S + 1) * (T + 1), sizeof *cut);
    int rc = 0;
    if (pre == NULL || best == NULL || cut == NULL) {
        rc = auxps_error_set(err, AUXPS_ENOMEM, "out of memory");
        goto done;
    }
    for (int i = 0; i < T; i++) pre[i + 1] = pre[i] + model_tensor(m, i)->size;
#define B(k, j) best[(size_t)(k) * (T + 1) + (j)]
#define CUT(k, j) cut[(size_t)(k) * (T + 1) + (j)]
    /* B(k, j): the smallest largest group when the first j tensors go to k nodes. */
    for (int j = 0; j <= T; j++) B(1, j) = pre[j];
    for (int k = 2; k <= S; k++)
        for (int j = k; j <= T; j++) {
            B(k, j) = SIZE_MAX;
            for (int i = k - 1; i < j; i++) {
                size_t v = B(k - 1, i), g = pre[j] - pre[i];
                if (g > v) v = g;
                if (v < B(k, j)) B(k, j) = v, CUT(k, j) = i;
            }
        }
    int ends[WIRE_MAX_SHARDS + 1];
    ends[S] = T;
    for (int k = S; k >= 2; k--) ends[k - 1] = CUT(k, ends[k]);
    ends[0] = 0;
#undef B
#undef CUT
    /* The i-th batch norm owns the i-th gamma tensor (MODEL.md: stats follow the parameter order). */
    const int nbns = model_num_bns(m);
    int bn = 0;
    size_t stat_end = 0;
    for (int k = 0; k < S; k++) {
        wire_shard_t *s = &out[k];
        memset(s, 0, sizeof *s);
        s->id = (uint32_t)k;
        s->offset = pre[ends[k]];
        s->length = pre[ends[k + 1]] - pre[ends[k]];
        s->stats_offset = stat_end;
        for (int i = ends[k]; i < ends[k + 1]; i++) {
            const model_tensor_t *t = model_tensor(m, i);
            if (t->kind != MODEL_T_BN_GAMMA) continue;
            size_t off;
            int ch;
            if (bn >= nbns) break;
            model_bn_info(m, bn++, &off, &ch);
            if (off != stat_end || (size_t)ch != t->size) {
                rc = auxps_error_set(err, AUXPS_EINVAL, "internal: batch norm %d does not follow the "
                                     "parameter order", bn - 1);
                goto done;
            }
            stat_end += 2 * (size_t)ch;
        }
        s->stats_length = stat_end - s->stats_offset;
    }
    if (bn != nbns || stat_end != model_num_stats(m))
        rc = auxps_error_set(err, AUXPS_EINVAL, "internal: %d of %d batch norms, %zu of %zu statistics mapped",
                             bn, nbns, stat_end, model_num_stats(m));
done:
    free(pre);
    free(best);
    free(cut);
    return rc;
}

/* The shard map of the run: the partition of its model, with the nodes' endpoints. */
static int make_shards(coord_t *c) {
    int rc = coord_shard_map(c->model, c->opt.nodes, c->shards, &c->err);
    if (rc != 0) return rc;
    for (int k = 0; k < c->opt.nodes; k++)
        snprintf(c->shards[k].endpoint, sizeof c->shards[k].endpoint, "%s", c->nodes[k].endpoint);
    return 0;
}

/* ---- the plan ---------------------------------------------------------------------------- */

/* An epoch is the trainer's batches of its sample order, leased as chunks of chunk_batches.
 * async: every batch, to whoever asks. ssp and bsp: every worker trains the same number of
 * batches per epoch (floor(batches / workers)), since a node gates on the slowest clock and a
 * worker without batches would stall the others; the few batches left over (fewer than the
 * workers, the partial batch first) are skipped that epoch. With one worker nothing is
 * skipped. Returns 1 if an epoch was planned, 0 if the run is over. */
static int plan_epoch(coord_t *c) {
    const auxps_config_t *cf = &c->cfg;
    const long b = cf->train.batch_size, bt = (c->ntrain + b - 1) / b, budget = c->total_steps - c->planned_steps;
    if (c->epoch >= cf->train.epochs || budget <= 0) return 0;
    long batches;
    if (cf->cluster.consistency == CONS_ASYNC) {
        batches = bt < budget ? bt : budget;
        c->epoch_batches_left = batches;
    } else {
        long k = bt / c->opt.workers, kb = budget / c->opt.workers;
        if (kb < k) k = kb;
        c->per_worker = (int)k;
        batches = k * c->opt.workers;
    }
    if (batches <= 0) return 0;
    c->planned_steps += batches;
    c->epoch_end = (uint32_t)(batches * b < c->ntrain ? batches * b : c->ntrain);
    c->next_pos = 0;
    c->chunks_out = c->chunks_done = 0;
    for (int i = 0; i < c->nworkers; i++) c->workers[i].epoch_batches = 0;
    c->t_epoch = c->log_t = c->last_progress = clock_now_s();
    c->phase = P_TRAIN;
    return 1;
}

/* The next chunk for worker w, or 0 if there is none now (LEASE wait). */
static int next_chunk(coord_t *c, peer_t *w, lease_t *l) {
    if (c->phase != P_TRAIN || c->stopping || c->next_pos >= c->epoch_end) return 0;
    const long b = c->cfg.train.batch_size, cb = c->cfg.cluster.chunk_batches;
    long batches = c->cfg.cluster.consistency == CONS_ASYNC ? c->epoch_batches_left
                                                            : c->per_worker - w->epoch_batches;
    if (batches > cb) batches = cb;
    if (batches <= 0) return 0;
    uint32_t left = c->epoch_end - c->next_pos;
    if (c->chunks_out == 0) c->t_epoch = c->log_t = clock_now_s(); /* the epoch's clock starts with its work */
    memset(l, 0, sizeof *l);
    l->active = 1;
    l->chunk = c->next_chunk++;
    l->epoch = (uint32_t)c->epoch;
    l->first = c->next_pos;
    l->count = (uint32_t)(batches * b) < left ? (uint32_t)(batches * b) : left;
    l->batches = (int)batches;
    l->expires = clock_now_s() + LEASE_TTL_TIMEOUTS * c->timeout_s;
    c->next_pos += l->count;
    if (c->cfg.cluster.consistency == CONS_ASYNC) c->epoch_batches_left -= batches;
    w->epoch_batches += (int)batches;
    c->chunks_out++;
    return 1;
}

/* ---- progress lines ---------------------------------------------------------------------- */

static void fmt_duration(char *buf, size_t len, double s) {
    long v = (long)(s + 0.5);
    if (v >= 3600) snprintf(buf, len, "%ldh%02ldm", v / 3600, v / 60 % 60);
    else snprintf(buf, len, "%ldm%02lds", v / 60, v % 60);
}

static void update_step(coord_t *c) {
    long s = 0;
    for (int i = 0; i < c->nworkers; i++) s += (long)c->workers[i].clock;
    c->step = s;
}

/* Prints the trainer's progress line for the reports since the last one. */
static void print_progress(coord_t *c) {
    if (c->log_samples == 0) return;
    const auxps_config_t *cf = &c->cfg;
    double now = clock_now_s(), dt = now - c->log_t, ips = dt > 0 ? c->log_samples / dt : 0.0;
    double low = c->log_loss_low / c->log_samples, aux = 0.0;
    if (cf->model.aux && cf->model.aux_lambda > 0)
        aux = (c->log_loss - c->log_loss_low) / cf->model.aux_lambda / c->log_samples;
    char eta[32];
    fmt_duration(eta, sizeof eta, ips > 0 ? (double)(c->total_steps - c->step) * cf->train.batch_size / ips : 0.0);
    outf(c, "epoch %d/%d step %ld/%ld | %.0f img/s | loss_low %.4f loss_aux %.4f | lr %.5f | eta %s\n",
         c->epoch + 1, cf->train.epochs, c->step, c->total_steps, ips, low, aux,
         optim_lr(&c->optim, c->step > 0 ? c->step - 1 : 0), eta);
    c->log_t = now;
    c->log_samples = 0;
    c->log_loss = c->log_loss_low = 0.0;
    c->logged_step = c->step;
}

static void maybe_progress(coord_t *c) {
    const long li = c->cfg.train.log_interval;
    if (c->step / li > c->logged_step / li) print_progress(c);
}

/* ---- evaluation and the end -------------------------------------------------------------- */

static void start_finish(coord_t *c);

/* Splits the test set into one range per worker and sends EVAL_REQ. */
static void start_eval(coord_t *c) {
    print_progress(c);
    c->train_time += clock_now_s() - c->t_epoch;
    c->phase = P_EVAL;
    c->t_eval = clock_now_s();
    c->eval_id++;
    c->eval_samples = c->eval_correct = c->eval_correct_aux = 0;
    c->evals_pending = 0;
    c->eval_deadline = clock_now_s() + LEASE_TTL_TIMEOUTS * c->timeout_s;
    const int n = c->test.n, w = c->nworkers < n ? c->nworkers : n;
    for (int i = 0; i < w; i++) {
        peer_t *p = &c->workers[i];
        uint32_t first = (uint32_t)((long)n * i / w), end = (uint32_t)((long)n * (i + 1) / w);
        wire_msg_t m;
        memset(&m, 0, sizeof m);
        m.type = WIRE_EVAL_REQ;
        m.rid = c->rid++;
        m.eval_req = (wire_eval_req_t){c->eval_id, (uint32_t)c->epoch, WIRE_SPLIT_TEST, first, end - first};
        p->eval_pending = 1;
        p->eval_count = end - first;
        c->evals_pending++;
        send_peer(c, p, &m);
    }
}

static void finish_eval(coord_t *c) {
    const auxps_config_t *cf = &c->cfg;
    c->test_correct = (int)c->eval_correct;
    c->test_correct_aux = (int)c->eval_correct_aux;
    c->test_total = (int)c->eval_samples;
    c->epochs_done = c->epoch + 1;
    double acc = c->test_total > 0 ? (double)c->test_correct / c->test_total : 0.0;
    outf(c, "epoch %d/%d done in %.1f s | test_accuracy %.4f (%d/%d, low-precision)", c->epoch + 1,
         cf->train.epochs, c->t_eval - c->t_epoch, acc, c->test_correct, c->test_total);
    if (cf->model.aux)
        outf(c, " | aux head %.4f", c->test_total > 0 ? (double)c->test_correct_aux / c->test_total : 0.0);
    outf(c, "\n");
    c->epoch++;
    if (c->stopping || !plan_epoch(c)) start_finish(c);
}

static void check_epoch_done(coord_t *c) {
    if (c->phase == P_TRAIN && c->next_pos >= c->epoch_end && c->chunks_done == c->chunks_out) start_eval(c);
}

static void finish_pull(coord_t *c);

/* PULL of every shard's parameters and statistics from a DEALER per node, as WIRE_ID_COORD. */
static void start_pull(coord_t *c) {
    if (c->stopping >= 2) { /* interrupted twice: no export, so nothing to pull */
        finish_pull(c);
        return;
    }
    c->phase = P_PULL;
    c->phase_since = clock_now_s();
    c->pull_deadline = c->phase_since + c->timeout_s;
    const int S = c->opt.nodes;
    int n = 0;
    for (int k = 0; k < S; k++)
        n += (int)((c->shards[k].length + WIRE_MAX_FLOATS - 1) / WIRE_MAX_FLOATS) +
             (int)((c->shards[k].stats_length + WIRE_MAX_FLOATS - 1) / WIRE_MAX_FLOATS);
    c->pulls = calloc((size_t)n, sizeof *c->pulls);
    if (c->pulls == NULL) {
        fail(c, AUXPS_ENOMEM, "out of memory");
        return;
    }
    const int linger = 0;
    for (int k = 0; k < S; k++) {
        void *d = zmq_socket(c->ctx, ZMQ_DEALER);
        if (d == NULL || wire_socket_limits(d) != 0 || zmq_setsockopt(d, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
            zmq_connect(d, c->shards[k].endpoint) != 0) {
            if (d != NULL) zmq_close(d);
            fail(c, AUXPS_EIO, "cannot connect to node %d at %s: %s", k, c->shards[k].endpoint,
                 zmq_strerror(zmq_errno()));
            return;
        }
        c->dealers[k] = d;
        for (int vec = 0; vec < 2; vec++) {
            uint64_t off = vec ? c->shards[k].stats_offset : c->shards[k].offset;
            uint64_t len = vec ? c->shards[k].stats_length : c->shards[k].length;
            for (uint64_t at = 0; at < len; at += WIRE_MAX_FLOATS) {
                pull_t *pl = &c->pulls[c->npulls++];
                *pl = (pull_t){c->rid++, (uint32_t)k, (uint32_t)vec, off + at,
                               len - at < WIRE_MAX_FLOATS ? len - at : WIRE_MAX_FLOATS, 0};
                wire_msg_t m;
                memset(&m, 0, sizeof m);
                m.type = WIRE_PULL;
                m.rid = pl->rid;
                m.pull = (wire_pull_t){WIRE_ID_COORD, pl->shard, pl->vec, pl->offset, pl->length, 0, WIRE_ENC_F32};
                auxps_error_t e = {0};
                if (wire_send(d, NULL, 0, &m, NULL, NULL, 0, &e) != 0) {
                    fail(c, AUXPS_EIO, "cannot send PULL to node %d: %s", k, e.msg);
                    return;
                }
            }
        }
    }
    c->pulls_left = c->npulls;
}

/* DONE to the workers (ERROR SHUTTING_DOWN to those still waiting for WELCOME); the final pull
 * starts when they have all said BYE, or T later, so that a batch in flight still finds its
 * nodes (PROTOCOL.md section 4, step 5). */
static void start_finish(coord_t *c) {
    int waiting = 0;
    for (int i = 0; i < c->nworkers; i++) {
        peer_t *p = &c->workers[i];
        if (p->state == PEER_WELCOMED) send_done(c, p), waiting++;
        else if (p->state == PEER_HELD) {
            send_error_to(c, p->route, p->route_size, p->hello_rid, WIRE_ERR_SHUTTING_DOWN, "training is over");
            p->state = PEER_GONE;
        }
    }
    c->phase = P_DRAIN;
    c->phase_since = clock_now_s();
    if (waiting == 0) start_pull(c);
}

static int write_dump(coord_t *c) {
    FILE *f = fopen(c->dump_path, "wb");
    if (f == NULL) return auxps_error_set(&c->err, AUXPS_EIO, "%s: %s", c->dump_path, strerror(errno));
    size_t n = fwrite(c->params, sizeof(float), c->nparams, f);
    int bad = fclose(f) != 0 || n != c->nparams;
    if (bad) return auxps_error_set(&c->err, AUXPS_EIO, "%s: write failed", c->dump_path);
    return 0;
}

/* Every pull is in: export, dump, DONE to the nodes. */
static void finish_pull(coord_t *c) {
    if (c->stopping < 2) {
        memcpy(model_params(c->model), c->params, c->nparams * sizeof(float));
        memcpy(model_stats(c->model), c->stats, c->nstats * sizeof(float));
        int rc = export_save(c->model, c->cfg.data.mean, c->cfg.data.std, c->cfg.train.output, &c->err);
        if (rc == 0 && c->dump_path[0]) rc = write_dump(c);
        if (rc != 0) {
            c->failed = 1;
            return;
        }
    }
    for (int k = 0; k < c->nnodes; k++)
        if (c->nodes[k].state != PEER_GONE) send_done(c, &c->nodes[k]);
    c->phase = P_BYE;
    c->phase_since = clock_now_s();
}

static void on_pull_reply(coord_t *c, int k) {
    auxps_error_t e = {0};
    wire_msg_t m;
    memset(&m, 0, sizeof m);
    int rc = wire_recv(c->dealers[k], 0, &c->in, ZMQ_DONTWAIT, &e);
    if (rc == AUXPS_EIO && errno == EAGAIN) return;
    if (rc == 0) rc = wire_decode_in(&c->in, &m, &e);
    if (rc != 0) {
        fail(c, AUXPS_EIO, "node %d answered the final PULL with a bad message: %s", k, e.msg);
        goto done;
    }
    if (m.type == WIRE_HEARTBEAT) goto done;
    if (m.type == WIRE_ERROR) {
        fail(c, AUXPS_EIO, "node %d refused the final PULL: %s %s", k, wire_err_name(m.error.code), m.error.text);
        goto done;
    }
    pull_t *pl = NULL;
    for (int i = 0; i < c->npulls; i++)
        if (c->pulls[i].rid == m.rid && c->pulls[i].shard == (uint32_t)k) pl = &c->pulls[i];
    if (m.type != WIRE_PULL_REP || pl == NULL || pl->done || m.pull_rep.shard != pl->shard ||
        m.pull_rep.vec != pl->vec || m.pull_rep.offset != pl->offset || m.pull_rep.length != pl->length) {
        logf_(c, "node %d: unexpected %s (rid %" PRIu32 ") on the data link, ignored", k, wire_type_name(m.type), m.rid);
        goto done;
    }
    float *dst = (pl->vec ? c->stats : c->params) + pl->offset;
    if (wire_payload_f32(&m, dst, &e) != 0) {
        fail(c, AUXPS_EIO, "node %d: bad PULL_REP payload: %s", k, e.msg);
        goto done;
    }
    pl->done = 1;
    if (--c->pulls_left == 0) finish_pull(c);
done:
    wire_msg_clear(&m);
    wire_in_close(&c->in);
}

/* ---- message handlers -------------------------------------------------------------------- */

static void welcome_nodes(coord_t *c) {
    int rc = make_shards(c);
    if (rc != 0) {
        c->failed = 1;
        return;
    }
    for (int k = 0; k < c->nnodes; k++) send_welcome(c, &c->nodes[k]);
    c->phase = P_NODES_READY;
    c->phase_since = clock_now_s();
}

static void on_hello(coord_t *c, peer_t *p, const wire_msg_t *m) {
    const wire_hello_t *h = &m->hello;
    if (p != NULL) { /* a resend gets the same answer */
        if ((uint32_t)p->role != h->role) {
            bad_message(c, p, m->rid, WIRE_ERR_BAD_MESSAGE, "HELLO with another role from a registered sender");
            return;
        }
        p->hello_rid = m->rid;
        if (p->state == PEER_WELCOMED || p->state == PEER_READY) send_welcome(c, p);
        return;
    }
    if (c->phase >= P_DRAIN || c->stopping) {
        send_error_to(c, c->in.route, c->in.route_size, m->rid, WIRE_ERR_SHUTTING_DOWN, "training is over");
        return;
    }
    int node = h->role == WIRE_ROLE_NODE;
    int have = node ? c->nnodes : c->nworkers, want = node ? c->opt.nodes : c->opt.workers;
    if (have >= want) {
        char why[128];
        snprintf(why, sizeof why, "the run has its %d %s%s", want, node ? "node" : "worker", want == 1 ? "" : "s");
        send_error_to(c, c->in.route, c->in.route_size, m->rid, WIRE_ERR_FULL, why);
        return;
    }
    p = node ? &c->nodes[c->nnodes++] : &c->workers[c->nworkers++];
    memset(p, 0, sizeof *p);
    memcpy(p->route, c->in.route, c->in.route_size);
    p->route_size = c->in.route_size;
    p->role = (int)h->role;
    p->id = (uint32_t)have;
    p->state = PEER_HELD;
    p->hello_rid = m->rid;
    p->last_recv = p->last_sent = clock_now_s();
    snprintf(p->name, sizeof p->name, "%s", h->name);
    snprintf(p->endpoint, sizeof p->endpoint, "%s", h->endpoint);
    logf_(c, "%s %u registered: %s%s%s", peer_kind(p), p->id, p->name, node ? " at " : "", node ? p->endpoint : "");
    if (node) {
        c->phase_since = clock_now_s();
        if (c->nnodes == c->opt.nodes) welcome_nodes(c);
    } else if (c->phase >= P_TRAIN) {
        c->phase_since = clock_now_s();
        send_welcome(c, p);
    }
}

static void on_node_ready(coord_t *c, peer_t *p, const wire_msg_t *m) {
    const wire_node_ready_t *r = &m->node_ready;
    if (p->role != WIRE_ROLE_NODE || p->state == PEER_HELD) {
        bad_message(c, p, m->rid, WIRE_ERR_BAD_MESSAGE, "NODE_READY from a peer that is not a welcomed node");
        return;
    }
    const wire_shard_t *s = &c->shards[p->id];
    if (r->node != p->id || r->offset != s->offset || r->length != s->length || r->stats_offset != s->stats_offset ||
        r->stats_length != s->stats_length) {
        char why[256];
        snprintf(why, sizeof why, "NODE_READY says node %" PRIu32 " params %" PRIu64 "+%" PRIu64 " stats %" PRIu64
                 "+%" PRIu64 ", the map node %" PRIu32 " params %" PRIu64 "+%" PRIu64 " stats %" PRIu64 "+%" PRIu64,
                 r->node, r->offset, r->length, r->stats_offset, r->stats_length, s->id, s->offset, s->length,
                 s->stats_offset, s->stats_length);
        send_error_to(c, p->route, p->route_size, m->rid, WIRE_ERR_OUT_OF_RANGE, why);
        fail(c, AUXPS_EIO, "node %u (%s): %s", p->id, p->name, why);
        return;
    }
    if (p->state != PEER_WELCOMED) return; /* a repeat */
    p->state = PEER_READY;
    if (++c->nready < c->opt.nodes) return;
    for (int k = 0; k < c->opt.nodes; k++) {
        const wire_shard_t *sh = &c->shards[k];
        outf(c, "shard %u: %s params %" PRIu64 "+%" PRIu64 " stats %" PRIu64 "+%" PRIu64 " (node %s)\n", sh->id,
             sh->endpoint, sh->offset, sh->length, sh->stats_offset, sh->stats_length, c->nodes[k].name);
    }
    if (!plan_epoch(c)) {
        start_finish(c);
        return;
    }
    c->phase_since = clock_now_s(); /* the registration of workers starts now */
    for (int i = 0; i < c->nworkers; i++)
        if (c->workers[i].state == PEER_HELD) send_welcome(c, &c->workers[i]);
}

static int worker_id_ok(coord_t *c, peer_t *p, const wire_msg_t *m, uint32_t claimed) {
    if (p->role != WIRE_ROLE_WORKER || p->state == PEER_HELD) {
        char why[96];
        snprintf(why, sizeof why, "%s from a peer that is not a welcomed worker", wire_type_name(m->type));
        bad_message(c, p, m->rid, p->role != WIRE_ROLE_WORKER ? WIRE_ERR_BAD_MESSAGE : WIRE_ERR_NOT_REGISTERED, why);
        return 0;
    }
    if (claimed != p->id) {
        char why[96];
        snprintf(why, sizeof why, "%s.worker = %" PRIu32 ": this sender is worker %" PRIu32, wire_type_name(m->type),
                 claimed, p->id);
        bad_message(c, p, m->rid, WIRE_ERR_OUT_OF_RANGE, why);
        return 0;
    }
    return 1;
}

static void send_lease(coord_t *c, peer_t *p, uint32_t rid, const lease_t *l) {
    wire_msg_t m;
    memset(&m, 0, sizeof m);
    m.type = WIRE_LEASE;
    m.rid = rid;
    uint32_t ttl = (uint32_t)(LEASE_TTL_TIMEOUTS * c->timeout_s * 1000);
    if (l != NULL) {
        m.lease = (wire_lease_t){p->id, l->chunk, l->epoch, WIRE_LEASE_RANGE, l->first, l->count,
                                 ttl < 3600000 ? ttl : 3600000};
    } else { /* wait: ask again soon */
        uint32_t wait = (uint32_t)(c->heartbeat_s * 100); /* a tenth of H, in ms */
        m.lease = (wire_lease_t){p->id, 0, (uint32_t)c->epoch, WIRE_LEASE_WAIT, 0, 0,
                                 wait < 10 ? 10 : wait > 100 ? 100 : wait};
        c->waits++;
    }
    send_peer(c, p, &m);
}

static void on_lease_req(coord_t *c, peer_t *p, const wire_msg_t *m) {
    if (!worker_id_ok(c, p, m, m->lease_req.worker)) return;
    if (c->phase >= P_DRAIN) {
        send_error_to(c, p->route, p->route_size, m->rid, WIRE_ERR_SHUTTING_DOWN, "training is over");
        return;
    }
    if (p->lease.active) { /* a repeated request: the same chunk */
        p->lease.rid = m->rid;
        send_lease(c, p, m->rid, &p->lease);
        return;
    }
    if (next_chunk(c, p, &p->lease)) {
        p->lease.rid = m->rid;
        c->leases++;
        c->last_progress = clock_now_s();
        send_lease(c, p, m->rid, &p->lease);
    } else {
        send_lease(c, p, m->rid, NULL);
    }
}

static void on_chunk_done(coord_t *c, peer_t *p, const wire_msg_t *m) {
    const wire_chunk_done_t *d = &m->chunk_done;
    if (!worker_id_ok(c, p, m, d->worker)) return;
    if (!p->lease.active || p->lease.chunk != d->chunk || p->lease.epoch != d->epoch) {
        char why[128];
        snprintf(why, sizeof why, "chunk %" PRIu32 " of epoch %" PRIu32 " is not leased to worker %" PRIu32, d->chunk,
                 d->epoch, p->id);
        c->bad_messages++;
        send_error_to(c, p->route, p->route_size, m->rid, WIRE_ERR_STALE, why);
        return;
    }
    if (d->samples != p->lease.count)
        logf_(c, "worker %u trained %" PRIu32 " of the %" PRIu32 " samples of chunk %" PRIu32, p->id, d->samples,
              p->lease.count, d->chunk);
    p->lease.active = 0;
    c->last_progress = clock_now_s();
    if (d->clock > p->clock) p->clock = d->clock;
    c->chunks_done++;
    update_step(c);
    maybe_progress(c);
    check_epoch_done(c);
}

static void on_progress(coord_t *c, peer_t *p, const wire_msg_t *m) {
    const wire_progress_t *r = &m->progress;
    if (!worker_id_ok(c, p, m, r->worker)) return;
    c->progress_msgs++;
    c->last_progress = clock_now_s();
    if (p->lease.active && p->lease.chunk == r->chunk)
        p->lease.expires = clock_now_s() + LEASE_TTL_TIMEOUTS * c->timeout_s;
    if (r->clock > p->clock) p->clock = r->clock;
    c->log_samples += r->samples;
    c->log_loss += r->loss_sum;
    c->log_loss_low += r->loss_low_sum;
    update_step(c);
    maybe_progress(c);
}

static void on_eval_rep(coord_t *c, peer_t *p, const wire_msg_t *m) {
    const wire_eval_rep_t *r = &m->eval_rep;
    if (!worker_id_ok(c, p, m, r->worker)) return;
    if (c->phase != P_EVAL || r->eval != c->eval_id || !p->eval_pending) {
        c->bad_messages++;
        send_error_to(c, p->route, p->route_size, m->rid, WIRE_ERR_STALE, "no evaluation of that id is pending");
        return;
    }
    if (r->samples != p->eval_count)
        logf_(c, "worker %u evaluated %" PRIu32 " of the %" PRIu32 " samples asked", p->id, r->samples, p->eval_count);
    p->eval_pending = 0;
    c->last_progress = clock_now_s();
    c->eval_samples += r->samples;
    c->eval_correct += r->correct_low;
    c->eval_correct_aux += r->correct_aux;
    if (--c->evals_pending == 0) finish_eval(c);
}

static void on_bye(coord_t *c, peer_t *p, const wire_msg_t *m) {
    int expected = p->state == PEER_DONE;
    p->state = PEER_GONE;
    if (!expected && !c->failed)
        fail(c, AUXPS_EIO, "%s %u (%s) left the run (BYE %s): membership is fixed, aborting", peer_kind(p), p->id,
             p->name, m->bye.reason ? wire_err_name(m->bye.reason) : "normal");
}

static void on_error(coord_t *c, peer_t *p, const wire_msg_t *m) {
    c->errors_received++;
    if (p == NULL) {
        logf_(c, "ERROR %s from an unregistered sender: %s", wire_err_name(m->error.code), m->error.text);
        return;
    }
    logf_(c, "%s %u (%s) refused a message: %s: %s", peer_kind(p), p->id, p->name, wire_err_name(m->error.code),
          m->error.text);
    /* Everything the coordinator sends a peer matters to the run: a refusal ends it, unless the
     * peer was already told that the run is over. */
    if (p->state != PEER_DONE && p->state != PEER_GONE) {
        if (m->error.code == WIRE_ERR_CONFIG || m->error.code == WIRE_ERR_VERSION) p->state = PEER_GONE; /* it exits */
        fail(c, AUXPS_EIO, "%s %u (%s) refused the coordinator's message (%s: %s): aborting", peer_kind(p), p->id,
             p->name, wire_err_name(m->error.code), m->error.text);
    }
}

/* Reads and handles one message from the ROUTER. Returns 0 if there was none. */
static int on_router(coord_t *c) {
    auxps_error_t e = {0};
    wire_msg_t m;
    memset(&m, 0, sizeof m);
    int rc = wire_recv(c->router, 1, &c->in, ZMQ_DONTWAIT, &e);
    if (rc == AUXPS_EIO) {
        if (errno != EAGAIN && errno != EINTR) fail(c, AUXPS_EIO, "receive failed: %s", e.msg);
        return 0;
    }
    peer_t *p = find_peer(c, c->in.route, c->in.route_size);
    if (p != NULL) p->last_recv = clock_now_s();
    if (rc != 0) { /* frame limits broken */
        if (c->in.route_size > 0) bad_message(c, p, 0, wire_error_code(rc), e.msg);
        goto done;
    }
    rc = wire_decode_in(&c->in, &m, &e);
    if (rc != 0) {
        if (m.type != WIRE_ERROR) bad_message(c, p, m.rid, wire_error_code(rc), e.msg);
        goto done;
    }
    if (p != NULL && p->bad > MAX_BAD_PER_SENDER && m.type != WIRE_BYE) goto done; /* ignored sender */
    switch (m.type) {
    case WIRE_HELLO: on_hello(c, p, &m); goto done;
    case WIRE_ERROR: on_error(c, p, &m); goto done;
    default: break;
    }
    if (p == NULL) {
        if (m.type == WIRE_BYE) goto done; /* nothing to answer */
        char why[96];
        snprintf(why, sizeof why, "%s from a sender that did not say HELLO", wire_type_name(m.type));
        bad_message(c, NULL, m.rid, WIRE_ERR_NOT_REGISTERED, why);
        goto done;
    }
    if (p->state == PEER_DONE && m.type != WIRE_BYE && m.type != WIRE_HEARTBEAT) {
        /* Told that the run is over: its last requests crossed the DONE. No bad message. */
        if (m.type == WIRE_LEASE_REQ || m.type == WIRE_CHUNK_DONE)
            send_error_to(c, p->route, p->route_size, m.rid, WIRE_ERR_SHUTTING_DOWN, "training is over");
        goto done;
    }
    switch (m.type) {
    case WIRE_NODE_READY: on_node_ready(c, p, &m); break;
    case WIRE_LEASE_REQ: on_lease_req(c, p, &m); break;
    case WIRE_CHUNK_DONE: on_chunk_done(c, p, &m); break;
    case WIRE_PROGRESS: on_progress(c, p, &m); break;
    case WIRE_EVAL_REP: on_eval_rep(c, p, &m); break;
    case WIRE_BYE: on_bye(c, p, &m); break;
    case WIRE_HEARTBEAT: break; /* its arrival is the point */
    default: {
        char why[96];
        snprintf(why, sizeof why, "%s is not a message for the coordinator", wire_type_name(m.type));
        bad_message(c, p, m.rid, WIRE_ERR_BAD_MESSAGE, why);
    }
    }
done:
    wire_msg_clear(&m);
    wire_in_close(&c->in);
    return 1;
}

/* ---- housekeeping ------------------------------------------------------------------------ */

/* The periodic timer. Jobs: see the stop flag; send HEARTBEAT on every coordinator link that
 * has been quiet for H (the default H before WELCOME); declare a peer that has been silent for T
 * dead (the default T before WELCOME), which aborts the run since membership is fixed; enforce
 * the deadlines of the phases (registration, NODE_READY, leases, evaluation, final pulls, BYEs). */
static void cron(coord_t *c, volatile sig_atomic_t *stop) {
    const double now = clock_now_s();
    if (stop != NULL && *stop && c->stopping < 2) {
        *stop = 0;
        if (c->stopping++ == 0) {
            logf_(c, "interrupted: DONE (aborted) to everyone%s", c->nready == c->opt.nodes ? ", after the export" : "");
            c->aborted = 1;
            if (c->phase < P_TRAIN) {
                c->stopping = 2;
                fail(c, 0, "interrupted before the nodes were ready");
                return;
            }
            if (c->phase < P_DRAIN) start_finish(c);
        } else {
            logf_(c, "interrupted again: no export");
            if (c->phase == P_DRAIN || c->phase == P_PULL) finish_pull(c);
        }
    }
    const double dh = WIRE_DEFAULT_HEARTBEAT_MS / 1000.0, dt = WIRE_DEFAULT_TIMEOUT_MS / 1000.0;
    for (int r = 0; r < 2 && !c->failed; r++) {
        peer_t *ps = r ? c->workers : c->nodes;
        int n = r ? c->nworkers : c->nnodes;
        for (int i = 0; i < n && !c->failed; i++) {
            peer_t *p = &ps[i];
            if (p->state == PEER_GONE || p->state == PEER_DONE) continue; /* the phases bound the BYE waits */
            double h = p->state == PEER_HELD ? dh : c->heartbeat_s, t = p->state == PEER_HELD ? dt : c->timeout_s;
            if (now - p->last_recv > t) {
                p->state = PEER_GONE;
                fail(c, AUXPS_EIO, "%s %u (%s) silent for %.1f s: aborting the run", peer_kind(p), p->id, p->name,
                     now - p->last_recv);
                return;
            }
            if (now - p->last_sent >= h) send_heartbeat(c, p);
            if (p->lease.active && now > p->lease.expires) {
                fail(c, AUXPS_EIO, "worker %u (%s): lease of chunk %" PRIu32 " expired with no PROGRESS for %.1f s: "
                     "aborting the run", p->id, p->name, p->lease.chunk, LEASE_TTL_TIMEOUTS * c->timeout_s);
                return;
            }
        }
    }
    const double since = now - c->phase_since;
    switch (c->phase) {
    case P_NODES:
        if (since > c->timeout_s)
            fail(c, AUXPS_EIO, "%d of %d nodes registered within %.1f s: aborting", c->nnodes, c->opt.nodes,
                 c->timeout_s);
        break;
    case P_NODES_READY:
        if (since > c->timeout_s)
            fail(c, AUXPS_EIO, "%d of %d nodes ready within %.1f s of WELCOME: aborting", c->nready, c->opt.nodes,
                 c->timeout_s);
        break;
    case P_TRAIN:
    case P_EVAL:
        if (c->nworkers < c->opt.workers && since > c->timeout_s)
            fail(c, AUXPS_EIO, "%d of %d workers registered within %.1f s: aborting", c->nworkers, c->opt.workers,
                 c->timeout_s);
        else if (c->phase == P_EVAL && now > c->eval_deadline)
            fail(c, AUXPS_EIO, "%d workers did not answer EVAL_REQ within %.1f s: aborting", c->evals_pending,
                 LEASE_TTL_TIMEOUTS * c->timeout_s);
        else if (c->nworkers == c->opt.workers && now - c->last_progress > LEASE_TTL_TIMEOUTS * c->timeout_s)
            fail(c, AUXPS_EIO, "no lease, PROGRESS, CHUNK_DONE or EVAL_REP for %.1f s although every worker is alive: "
                 "the run is stuck, aborting", now - c->last_progress);
        break;
    case P_DRAIN: {
        int left = 0;
        for (int i = 0; i < c->nworkers; i++) left += c->workers[i].state == PEER_DONE;
        if (left > 0 && since <= c->timeout_s) break;
        for (int i = 0; i < c->nworkers; i++)
            if (c->workers[i].state == PEER_DONE)
                logf_(c, "worker %u (%s) did not say BYE within %.1f s of DONE", c->workers[i].id, c->workers[i].name,
                      c->timeout_s);
        start_pull(c);
        break;
    }
    case P_PULL:
        if (now > c->pull_deadline)
            fail(c, AUXPS_EIO, "%d final PULLs unanswered after %.1f s: aborting", c->pulls_left, c->timeout_s);
        break;
    case P_BYE: {
        int left = 0;
        for (int i = 0; i < c->nnodes; i++) left += c->nodes[i].state == PEER_DONE;
        if (left > 0 && since <= c->timeout_s) break;
        for (int i = 0; i < c->nnodes; i++)
            if (c->nodes[i].state == PEER_DONE)
                logf_(c, "node %u (%s) did not say BYE within %.1f s of DONE", c->nodes[i].id, c->nodes[i].name,
                      c->timeout_s);
        c->phase = P_END;
        break;
    }
    default: break;
    }
}

/* DONE (aborted) to every welcomed peer, ERROR SHUTTING_DOWN to every waiting one. */
static void abort_all(coord_t *c) {
    c->aborted = 1;
    for (int r = 0; r < 2; r++) {
        peer_t *ps = r ? c->workers : c->nodes;
        int n = r ? c->nworkers : c->nnodes;
        for (int i = 0; i < n; i++) {
            peer_t *p = &ps[i];
            if (p->state == PEER_HELD)
                send_error_to(c, p->route, p->route_size, p->hello_rid, WIRE_ERR_SHUTTING_DOWN, "the run was aborted");
            else if (p->state == PEER_WELCOMED || p->state == PEER_READY)
                send_done(c, p);
        }
    }
}

/* ---- lifecycle --------------------------------------------------------------------------- */

static int make_config_text(coord_t *c, auxps_error_t *err) {
    size_t size = 0;
    FILE *f = open_memstream(&c->config_text, &size);
    if (f == NULL) return auxps_error_set(err, AUXPS_ENOMEM, "out of memory");
    int rc = config_write(&c->cfg, f);
    if (fclose(f) != 0 || rc != 0) return auxps_error_set(err, AUXPS_ENOMEM, "cannot write the config text");
    if (size < 1 || size > WIRE_MAX_CONFIG)
        return auxps_error_set(err, AUXPS_EINVAL, "the config is %zu bytes as text: WELCOME carries 1..%u", size,
                               WIRE_MAX_CONFIG);
    return 0;
}

coord_t *coord_new(const auxps_config_t *cfg, const coord_options_t *opt, auxps_error_t *err) {
    coord_t *c = calloc(1, sizeof *c);
    if (c == NULL) {
        auxps_error_set(err, AUXPS_ENOMEM, "out of memory");
        return NULL;
    }
    c->cfg = *cfg;
    c->opt = *opt;
    snprintf(c->bind, sizeof c->bind, "%s", opt->bind ? opt->bind : COORD_DEFAULT_BIND);
    snprintf(c->dump_path, sizeof c->dump_path, "%s", opt->dump_params ? opt->dump_params : "");
    c->opt.bind = c->bind;
    c->opt.dump_params = c->dump_path[0] ? c->dump_path : NULL;
    const auxps_config_t *cf = &c->cfg;
    const model_spec_t *sp = &cf->model;
    dataset_t train = {0};

    if (opt->nodes < 1 || opt->nodes > (int)WIRE_MAX_SHARDS || opt->workers < 1 || opt->workers > (int)WIRE_MAX_WORKERS) {
        auxps_error_set(err, AUXPS_EINVAL, "--nodes %d --workers %d: expected 1..%u nodes and 1..%u workers",
                        opt->nodes, opt->workers, WIRE_MAX_SHARDS, WIRE_MAX_WORKERS);
        goto fail;
    }
    if (cf->cluster.timeout_ms < 3 * cf->cluster.heartbeat_ms) {
        auxps_error_set(err, AUXPS_EINVAL, "cluster.timeout_ms = %d must be at least 3 * cluster.heartbeat_ms = %d",
                        cf->cluster.timeout_ms, 3 * cf->cluster.heartbeat_ms);
        goto fail;
    }
    c->heartbeat_s = cf->cluster.heartbeat_ms / 1000.0;
    c->timeout_s = cf->cluster.timeout_ms / 1000.0;
    if (config_check_output(cf->train.output, err) != 0) goto fail;
    if (dataset_load(&train, cf->data.dir, 1, cf->data.train_limit, err) != 0) goto fail;
    if (dataset_load(&c->test, cf->data.dir, 0, cf->data.test_limit, err) != 0) goto fail;
    c->ntrain = train.n;
    if (train.c != sp->in_c || train.h != sp->in_h || train.w != sp->in_w || c->test.c != sp->in_c ||
        c->test.h != sp->in_h || c->test.w != sp->in_w || train.classes > sp->classes ||
        c->test.classes > sp->classes) {
        auxps_error_set(err, AUXPS_ECONFIG, "data in %s (%dx%dx%d, %d classes) does not fit the model (%dx%dx%d, %d "
                        "classes)", cf->data.dir, train.c, train.h, train.w,
                        train.classes > c->test.classes ? train.classes : c->test.classes, sp->in_c, sp->in_h,
                        sp->in_w, sp->classes);
        goto fail;
    }
    dataset_free(&train);
    c->model = model_new(sp, cf->train.batch_size);
    if (c->model == NULL) {
        auxps_error_set(err, AUXPS_ENOMEM, "cannot allocate the model for batch %d", cf->train.batch_size);
        goto fail;
    }
    c->nparams = model_num_params(c->model);
    c->nstats = model_num_stats(c->model);
    if (c->nparams > WIRE_MAX_VECTOR || c->nstats > WIRE_MAX_VECTOR) {
        auxps_error_set(err, AUXPS_EINVAL, "the model has %zu parameters and %zu statistics: at most %u each",
                        c->nparams, c->nstats, WIRE_MAX_VECTOR);
        goto fail;
    }
    if (model_num_tensors(c->model) < opt->nodes) {
        auxps_error_set(err, AUXPS_EINVAL, "--nodes %d: the model has only %d tensors, and a tensor is never split "
                        "between nodes", opt->nodes, model_num_tensors(c->model));
        goto fail;
    }
    c->params = calloc(c->nparams, sizeof(float));
    c->stats = calloc(c->nstats ? c->nstats : 1, sizeof(float));
    c->nodes = calloc((size_t)opt->nodes, sizeof *c->nodes);
    c->workers = calloc((size_t)opt->workers, sizeof *c->workers);
    if (!c->params || !c->stats || !c->nodes || !c->workers) {
        auxps_error_set(err, AUXPS_ENOMEM, "out of memory");
        goto fail;
    }
    if (make_config_text(c, err) != 0) goto fail;

    /* The plan's length and the nodes' schedule (CLUSTER.md "Steps and the lr schedule"). */
    const long b = cf->train.batch_size, bt = (c->ntrain + b - 1) / b;
    long total = bt * cf->train.epochs;
    if (cf->train.max_steps > 0 && cf->train.max_steps < total) total = cf->train.max_steps;
    c->optim = (optim_t){cf->train.lr, cf->train.momentum, cf->train.weight_decay, cf->train.nesterov,
                         cf->train.schedule, cf->train.step_epochs, cf->train.step_gamma, bt, total};
    if (cf->cluster.consistency != CONS_ASYNC) {
        long k = bt / opt->workers;
        if (k == 0) {
            auxps_error_set(err, AUXPS_EINVAL, "%s with %d workers needs at least one batch per worker per epoch: %d "
                            "training images in batches of %ld are %ld batches", cons_name(cf->cluster.consistency),
                            opt->workers, c->ntrain, b, bt);
            goto fail;
        }
        long per_epoch = k * opt->workers, t = per_epoch * cf->train.epochs;
        if (cf->train.max_steps > 0) {
            long cap = cf->train.max_steps / opt->workers * opt->workers;
            if (cap < t) t = cap;
        }
        if (t <= 0) {
            auxps_error_set(err, AUXPS_EINVAL, "train.max_steps = %d is fewer than one batch per worker",
                            cf->train.max_steps);
            goto fail;
        }
        /* t counts the epochs' batches after plan_epoch's rounding down. */
        total = t;
    }
    c->total_steps = total;

    c->ctx = zmq_ctx_new();
    if (c->ctx == NULL) {
        auxps_error_set(err, AUXPS_EIO, "zmq_ctx_new: %s", zmq_strerror(zmq_errno()));
        goto fail;
    }
    c->router = zmq_socket(c->ctx, ZMQ_ROUTER);
    const int one = 1, linger = 1000, sndtimeo = cf->cluster.timeout_ms;
    if (c->router == NULL || wire_socket_limits(c->router) != 0 ||
        zmq_setsockopt(c->router, ZMQ_ROUTER_MANDATORY, &one, sizeof one) != 0 ||
        zmq_setsockopt(c->router, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
        zmq_setsockopt(c->router, ZMQ_SNDTIMEO, &sndtimeo, sizeof sndtimeo) != 0) {
        auxps_error_set(err, AUXPS_EIO, "cannot create the ROUTER socket: %s", zmq_strerror(zmq_errno()));
        goto fail;
    }
    if (zmq_bind(c->router, c->bind) != 0) {
        auxps_error_set(err, AUXPS_EIO, "cannot bind %s: %s", c->bind, zmq_strerror(zmq_errno()));
        goto fail;
    }
    size_t len = sizeof c->endpoint;
    if (zmq_getsockopt(c->router, ZMQ_LAST_ENDPOINT, c->endpoint, &len) != 0)
        snprintf(c->endpoint, sizeof c->endpoint, "%s", c->bind);
    return c;
fail:
    dataset_free(&train);
    coord_destroy(&c);
    return NULL;
}

void coord_destroy(coord_t **cp) {
    if (cp == NULL || *cp == NULL) return;
    coord_t *c = *cp;
    wire_in_close(&c->in);
    for (int k = 0; k < (int)WIRE_MAX_SHARDS; k++)
        if (c->dealers[k] != NULL) zmq_close(c->dealers[k]);
    if (c->router != NULL) zmq_close(c->router);
    if (c->ctx != NULL) zmq_ctx_term(c->ctx);
    dataset_free(&c->test);
    model_destroy(&c->model);
    free(c->params);
    free(c->stats);
    free(c->nodes);
    free(c->workers);
    free(c->pulls);
    free(c->config_text);
    free(c);
    *cp = NULL;
}

const char *coord_endpoint(const coord_t *c) { return c->endpoint; }

/* Evaluates the exported file alone, as `auxps eval` would. Returns the count or -1. */
static int eval_file(coord_t *c, auxps_error_t *err) {
    model_t *m = NULL;
    float mean, std;
    const int b = c->cfg.train.batch_size;
    const model_spec_t *sp = &c->cfg.model;
    if (export_load(c->cfg.train.output, b, &m, &mean, &std, err) != 0) return -1;
    float *x = malloc(sizeof(float) * (size_t)sp->in_c * sp->in_h * sp->in_w * b);
    int *y = malloc(sizeof(int) * b), correct = -1;
    if (x != NULL && y != NULL) {
        data_transform_t tf = {mean, std, 0, 0};
        correct = trainer_evaluate(m, &c->test, &tf, b, x, y, NULL);
    } else {
        auxps_error_set(err, AUXPS_ENOMEM, "out of memory");
    }
    free(x);
    free(y);
    model_destroy(&m);
    return correct;
}

int coord_run(coord_t *c, FILE *out, volatile sig_atomic_t *stop, coord_result_t *res, auxps_error_t *err) {
    const auxps_config_t *cf = &c->cfg;
    const model_spec_t *sp = &cf->model;
    c->out = out;
    memset(res, 0, sizeof *res);
    char cons[32];
    if (cf->cluster.consistency == CONS_SSP) snprintf(cons, sizeof cons, "ssp (staleness %d)", cf->cluster.staleness);
    else snprintf(cons, sizeof cons, "%s", cons_name(cf->cluster.consistency));
    outf(c, "auxps: %s, %s W%dA%d%s, %zu parameters (%zu at inference), %d train / %d test images, batch %d, "
            "%d epochs, %ld steps, %d nodes, %d workers, %s, chunks of %d batches\n",
         cf->path[0] ? cf->path : "(defaults)", sp->arch == ARCH_RESNET ? "resnet" : "mlp", sp->wbits, sp->abits,
         sp->aux ? " + auxiliary module" : "", c->nparams, model_num_inference_params(c->model), c->ntrain, c->test.n,
         cf->train.batch_size, cf->train.epochs, c->total_steps, c->opt.nodes, c->opt.workers, cons,
         cf->cluster.chunk_batches);
    logf_(c, "listening on %s for %d nodes and %d workers", c->endpoint, c->opt.nodes, c->opt.workers);
    c->phase = P_NODES;
    c->phase_since = clock_now_s();
    const double t0 = clock_now_s();

    while (c->phase != P_END && !c->failed) {
        zmq_pollitem_t items[1 + WIRE_MAX_SHARDS];
        int n = 0;
        items[n++] = (zmq_pollitem_t){c->router, 0, ZMQ_POLLIN, 0};
        if (c->phase == P_PULL)
            for (int k = 0; k < c->opt.nodes; k++) items[n++] = (zmq_pollitem_t){c->dealers[k], 0, ZMQ_POLLIN, 0};
        long wait = (long)(c->heartbeat_s * 1000 / 4);
        if (zmq_poll(items, n, wait < 50 ? wait : 50) < 0 && zmq_errno() != EINTR) {
            fail(c, AUXPS_EIO, "zmq_poll: %s", zmq_strerror(zmq_errno()));
            break;
        }
        /* Bounded batches, so that the timer runs even under a flood. */
        for (int i = 0; i < 256 && !c->failed && on_router(c); i++) {}
        if (c->phase == P_PULL)
            for (int k = 0; k < c->opt.nodes && c->phase == P_PULL && !c->failed; k++)
                if (items[1 + k].revents & ZMQ_POLLIN)
                    for (int i = 0; i < 64 && c->phase == P_PULL && !c->failed; i++) {
                        zmq_pollitem_t one = {c->dealers[k], 0, ZMQ_POLLIN, 0};
                        if (zmq_poll(&one, 1, 0) <= 0) break;
                        on_pull_reply(c, k);
                    }
        if (!c->failed) cron(c, stop);
    }
    res->epochs_done = c->epochs_done;
    res->steps = c->step;
    res->test_correct = c->test_correct;
    res->test_total = c->test_total;
    res->bad_messages = c->bad_messages;
    res->interrupted = c->stopping > 0;
    if (c->failed) {
        abort_all(c);
        outf(c, "coord: %ld leases, %ld waits, %ld progress reports, %ld bad messages, %ld errors received\n",
             c->leases, c->waits, c->progress_msgs, c->bad_messages, c->errors_received);
        if (c->err.code == 0) return 0; /* interrupted before anything could be exported */
        *err = c->err;
        return err->code;
    }
    double elapsed = clock_now_s() - t0, ips = c->train_time > 0 ? (double)c->step * cf->train.batch_size / c->train_time : 0;
    int correct = c->test_correct, total = c->test_total;
    if (c->stopping < 2) {
        auxps_error_t e = {0};
        int fc = eval_file(c, &e);
        if (fc < 0) {
            *err = e;
            return e.code;
        }
        if (c->stopping || total == 0) correct = fc, total = c->test.n; /* interrupted: the model as it is */
        outf(c, "done: %ld steps in %.1f s, %.0f img/s | test_accuracy %.4f (%d/%d) | model written to %s\n", c->step,
             elapsed, ips, total ? (double)correct / total : 0.0, correct, total, cf->train.output);
        outf(c, "exported model %s: test_accuracy %.4f (%d/%d) from the file alone\n", cf->train.output,
             (double)fc / c->test.n, fc, c->test.n);
        if (fc != correct || total != c->test.n)
            logf_(c, "warning: the exported model scores %d/%d, the workers' evaluation %d/%d", fc, c->test.n, correct,
                  total);
        res->test_correct = correct;
        res->test_total = total;
    } else {
        outf(c, "done: %ld steps in %.1f s, interrupted twice: no model written\n", c->step, elapsed);
    }
    outf(c, "coord: %ld leases, %ld waits, %ld progress reports, %ld bad messages, %ld errors received\n", c->leases,
         c->waits, c->progress_msgs, c->bad_messages, c->errors_received);
    return 0;
}

/* ---- the command ------------------------------------------------------------------------- */

static void on_signal(int sig) {
    (void)sig;
    g_coord_stop = 1;
}

static int parse_count(const char *opt, const char *s, long hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < 1 || v > hi) {
        fprintf(stderr, "auxps coord: %s '%s': expected an integer in 1..%ld\n", opt, s, hi);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static void coord_usage(FILE *f) {
    fprintf(f, "usage: auxps coord CONFIG --nodes S [--workers N] [--bind ENDPOINT] [--dump-params FILE] "
               "[--set section.key=value ...]\n");
}

int coord_main(int argc, char **argv) {
    if (argc < 1 || argv[0][0] == '-') {
        coord_usage(stderr);
        return 2;
    }
    auxps_config_t cfg;
    auxps_error_t err = {0};
    coord_options_t opt = {0, 1, NULL, NULL};
    if (config_load(&cfg, argv[0], &err) != 0) {
        fprintf(stderr, "auxps coord: %s\n", err.msg);
        return 1;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--nodes") == 0 && v) {
            if (parse_count("--nodes", v, WIRE_MAX_SHARDS, &opt.nodes) != 0) return 2;
            i++;
        } else if (strcmp(a, "--workers") == 0 && v) {
            if (parse_count("--workers", v, WIRE_MAX_WORKERS, &opt.workers) != 0) return 2;
            i++;
        } else if (strcmp(a, "--bind") == 0 && v) {
            opt.bind = v, i++;
        } else if (strcmp(a, "--dump-params") == 0 && v) {
            opt.dump_params = v, i++;
        } else if ((strcmp(a, "--set") == 0 && v) || strncmp(a, "--set=", 6) == 0) {
            const char *as = a[5] == '=' ? a + 6 : argv[++i];
            if (config_set(&cfg, as, &err) != 0) {
                fprintf(stderr, "auxps coord: %s\n", err.msg);
                return 1;
            }
        } else {
            fprintf(stderr, "auxps coord: unknown or incomplete argument '%s'\n", a);
            coord_usage(stderr);
            return 2;
        }
    }
    if (opt.nodes == 0) {
        fprintf(stderr, "auxps coord: --nodes S is required\n");
        coord_usage(stderr);
        return 2;
    }
    if (config_check(&cfg, &err) != 0) {
        fprintf(stderr, "auxps coord: %s\n", err.msg);
        return 1;
    }
    peer_catch_signals(on_signal);
    int threads = cfg.train.threads > 0 ? cfg.train.threads : 1; /* the file check only */
    openblas_set_num_threads(threads);

    coord_t *c = coord_new(&cfg, &opt, &err);
    if (c == NULL) {
        fprintf(stderr, "auxps coord: %s\n", err.msg);
        return 1;
    }
    coord_result_t res;
    int rc = coord_run(c, stdout, &g_coord_stop, &res, &err);
    coord_destroy(&c);
    if (rc != 0) {
        fprintf(stderr, "auxps coord: %s\n", err.msg);
        return 1;
    }
    return res.interrupted ? 130 : 0;
}
