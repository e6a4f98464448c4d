/* coord.c - the coordinator of a distributed run: registration, the shard map, chunk leases,
 * progress, evaluations and the final export (docs/CLUSTER.md, docs/PROTOCOL.md). */
#include "coord.h"

#include "ckpt.h"
#include "clock.h"
#include "data.h"
#include "export.h"
#include "httpd.h"
#include "model.h"
#include "optim.h"
#include "peer.h"
#include "trainer.h"
#include "wire.h"

#include <cblas.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
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
#define EVAL_MAX_RANGES 64    /* an evaluation is split into at most this many ranges */

typedef struct {
    int active;
    uint32_t chunk, epoch, first, count;
    int batches;
    uint32_t trained;         /* samples of it reported by PROGRESS: trained and pushed */
    uint32_t rid;             /* of the LEASE_REQ it answered: a repeated request gets it again */
    double expires;
} lease_t;

/* A pending chunk of the epoch: positions [first, first + count) of its sample order. */
typedef struct {
    uint32_t first, count;
} span_t;

/* One range of the test set of an evaluation, and the worker it is given to (-1: none yet). */
typedef struct {
    uint32_t id, first, count;
    int worker;
    int done;
    double deadline;
} evr_t;

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
    int evals;                /* evaluation ranges given to it and not answered */
    uint64_t samples;         /* trained samples it reported since it joined */
    uint64_t staleness;       /* of its last push, from PROGRESS */
    int has_staleness;
    int reserved;             /* an id the previous coordinator had given: reused last (restore_state) */
    double rate, rate_t;      /* its samples/s, and when the rate was last updated */
    uint64_t rate_base;
    /* nodes */
    wire_node_stats_t stats;  /* the latest NODE_STATS */
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
    curve_zap_t *zap;         /* CURVE: the ZAP handler of ctx; NULL = plain */
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

    /* Membership (CLUSTER.md "Elastic membership"): async runs take workers at any time. */
    int elastic;              /* consistency async: join, leave, death and node restarts */
    int live;                 /* welcomed workers that have not left */
    int nodes_down;           /* nodes declared dead and not yet back */
    int started;              /* the first epoch was planned */
    long step_gone;           /* batches of workers that left */
    long joins, departures, deaths;

    /* The plan: see plan_epoch. */
    long total_steps, planned_steps, step;
    int epoch;                /* current epoch, 0-based */
    int epochs_done;
    uint32_t next_chunk, next_pos, epoch_end;
    long epoch_batches_left;  /* async: batches not yet leased this epoch */
    int per_worker;           /* ssp, bsp: batches every worker trains this epoch */
    int chunks_out, chunks_done;
    span_t *queue;            /* async: the epoch's chunks not leased yet, in order */
    int qhead, qlen, qcap;
    int leased;               /* async: leases out now */
    /* The epoch's chunk counters: a chunk returned in part or given back after a failure
     * leaves its untrained rest as a new chunk, so at the epoch's end completed == total. */
    long ep_total, ep_completed, ep_released, ep_returned, ep_samples;
    long released_total;      /* leases given back over the run */
    double t_epoch, train_time;

    /* Progress since the last progress line. */
    double log_t, log_loss, log_loss_low;
    long log_samples, logged_step;

    /* Evaluation of the current epoch. */
    uint32_t eval_id;
    int evals_pending;
    evr_t evr[EVAL_MAX_RANGES];
    int nevr;
    double t_eval;            /* when the epoch's training ended */
    double last_progress;     /* last lease, PROGRESS, CHUNK_DONE or EVAL_REP: the stall watchdog */
    double eval_deadline;
    long eval_samples, eval_correct, eval_correct_aux;
    int test_correct, test_total, test_correct_aux;

    /* The final pulls. */
    pull_t *pulls;
    int npulls, pulls_left;
    double pull_deadline;

    /* The status endpoint (docs/STATUS.md): a snapshot published at most every STATUS_PERIOD
     * and on every change of membership or epoch; a history point per progress line and per
     * evaluation. */
    httpd_t *httpd;
    status_snapshot_t *snap;
    double pub_t, started_unix, rate, rate_t;
    long rate_base, samples_total;
    double last_loss_low, last_loss_aux, last_acc;
    int status_dirty;

    /* Restart (the coordinator's checkpoint, below). */
    int persist;              /* elastic with checkpoint.dir: the state is written at every change */
    int ckpt_dirty;           /* the state changed since it was last written */
    uint64_t ckpt_seq;        /* step of the newest coordinator checkpoint */
    long ckpt_failures;
    int resumed;              /* this coordinator took over a run from its checkpoint */
    int resume_finish;        /* ... whose training was over: only the export is left */
    lease_t *orphans;         /* the previous coordinator's leases, until their workers report */
    int norphans;

    /* Counters for the closing status line. */
    long leases, waits, progress_msgs, bad_messages, errors_received;
    uint64_t rejected[WIRE_REJECT_COUNT]; /* bad messages by kind (STALE answers have none) */

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

static void assign_evals(coord_t *c);
static void send_membership(coord_t *c, peer_t *n, uint32_t id, int joined);

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
    wire_msg_t m = wire_heartbeat(WIRE_ROLE_COORD, WIRE_ID_COORD);
    m.rid = c->rid++;
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
        /* elastic: any id may come; the nodes gate nothing in async */
        .num_workers = c->elastic ? WIRE_MAX_WORKERS : (uint32_t)c->opt.workers,
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
    if (p->state == PEER_HELD && p->role == WIRE_ROLE_WORKER && c->elastic)
        send_membership(c, NULL, p->id, 1); /* before the worker can reach a node */
    send_peer(c, p, &m); /* a failed send shows as silence */
    if (p->state != PEER_HELD) return;
    p->state = PEER_WELCOMED;
    if (p->role != WIRE_ROLE_WORKER) return;
    c->live++;
    c->joins++;
    c->last_progress = clock_now_s(); /* the stall watchdog counts from the newest worker */
    outf(c, "member: worker %u (%s) joined; %d workers\n", p->id, p->name, c->live);
    c->status_dirty = 1;
    assign_evals(c);
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

/* Counts a bad message, in total and as kind (WIRE_REJECT_*), and answers it with ERROR, unless
 * the sender has sent too many. */
static void bad_message_kind(coord_t *c, peer_t *p, uint32_t rid, uint32_t code, uint32_t kind, const char *why) {
    c->bad_messages++;
    if (kind < WIRE_REJECT_COUNT) c->rejected[kind]++;
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

/* A bad message whose kind follows from the ERROR code it gets. */
static void bad_message(coord_t *c, peer_t *p, uint32_t rid, uint32_t code, const char *why) {
    bad_message_kind(c, p, rid, code, wire_reject_of_code(code), why);
}

/* The closing counters line (CLUSTER.md "Counters"). */
static void print_counters(coord_t *c) {
    outf(c, "coord: %ld leases, %ld waits, %ld progress reports, %ld bad messages, %ld errors received (rejected:",
         c->leases, c->waits, c->progress_msgs, c->bad_messages, c->errors_received);
    for (uint32_t k = 0; k < WIRE_REJECT_COUNT; k++)
        outf(c, "%s %s %" PRIu64, k ? "," : "", wire_reject_name(k), c->rejected[k]);
    outf(c, ")\n");
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

/* async: cuts the epoch's first `batches` batches into chunks of chunk_batches, in order. */
static int fill_queue(coord_t *c, long batches) {
    const long b = c->cfg.train.batch_size, cb = c->cfg.cluster.chunk_batches;
    const long samples = batches * b < c->ntrain ? batches * b : c->ntrain;
    const int n = (int)((batches + cb - 1) / cb);
    if (n + (int)WIRE_MAX_WORKERS > c->qcap) { /* room for a returned rest per worker, and more on demand */
        span_t *q = realloc(c->queue, (size_t)(n + (int)WIRE_MAX_WORKERS) * sizeof *q);
        if (q == NULL) {
            fail(c, AUXPS_ENOMEM, "out of memory for the chunk queue");
            return -1;
        }
        c->queue = q;
        c->qcap = n + (int)WIRE_MAX_WORKERS;
    }
    c->qhead = c->qlen = 0;
    for (long pos = 0; pos < samples; pos += cb * b) {
        long count = samples - pos < cb * b ? samples - pos : cb * b;
        c->queue[c->qlen++] = (span_t){(uint32_t)pos, (uint32_t)count};
    }
    return 0;
}

/* Puts the untrained rest of a chunk back at the front of the queue, to be leased next. */
static void requeue(coord_t *c, uint32_t first, uint32_t count) {
    if (count == 0) return;
    if (c->qhead == 0) {
        if (c->qlen == c->qcap) {
            span_t *q = realloc(c->queue, (size_t)(c->qcap * 2 + 1) * sizeof *q);
            if (q == NULL) {
                fail(c, AUXPS_ENOMEM, "out of memory for the chunk queue");
                return;
            }
            c->queue = q;
            c->qcap = c->qcap * 2 + 1;
        }
        memmove(c->queue + 1, c->queue, (size_t)c->qlen * sizeof *c->queue);
        c->qhead = 1;
    }
    c->queue[--c->qhead] = (span_t){first, count};
    c->qlen++;
    c->ep_total++;
}

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
        if (fill_queue(c, batches) != 0) return 0;
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
    c->ep_total = c->elastic ? c->qlen : 0;
    c->ep_completed = c->ep_released = c->ep_returned = c->ep_samples = 0;
    c->started = 1;
    for (int i = 0; i < c->nworkers; i++) c->workers[i].epoch_batches = 0;
    c->t_epoch = c->log_t = c->last_progress = clock_now_s();
    c->phase = P_TRAIN;
    c->ckpt_dirty = 1;
    return 1;
}

/* The next chunk for worker w, or 0 if there is none now (LEASE wait). */
static int next_chunk(coord_t *c, peer_t *w, lease_t *l) {
    if (c->phase != P_TRAIN || c->stopping) return 0;
    if (c->elastic) {
        if (c->qlen == 0) return 0;
        const long b = c->cfg.train.batch_size;
        span_t sp = c->queue[c->qhead++];
        c->qlen--;
        if (c->chunks_out == 0) c->t_epoch = c->log_t = clock_now_s();
        memset(l, 0, sizeof *l);
        l->active = 1;
        l->chunk = c->next_chunk++;
        l->epoch = (uint32_t)c->epoch;
        l->first = sp.first;
        l->count = sp.count;
        l->batches = (int)((sp.count + b - 1) / b);
        l->expires = clock_now_s() + LEASE_TTL_TIMEOUTS * c->timeout_s;
        c->chunks_out++;
        c->leased++;
        return 1;
    }
    if (c->next_pos >= c->epoch_end) return 0;
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
    long s = c->step_gone;
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
    c->last_loss_low = low;
    c->last_loss_aux = cf->model.aux ? aux : NAN;
    if (c->httpd != NULL)
        httpd_history_add(c->httpd, &(status_point_t){clock_unix_s(), (uint64_t)c->step, c->epoch + 1, low,
                                                        c->last_loss_aux, ips, c->last_acc});
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

/* The live worker with the fewest evaluation ranges, or NULL if there is none. */
static peer_t *least_busy(coord_t *c) {
    peer_t *best = NULL;
    for (int i = 0; i < c->nworkers; i++) {
        peer_t *p = &c->workers[i];
        if (p->state == PEER_WELCOMED && (best == NULL || p->evals < best->evals)) best = p;
    }
    return best;
}

/* Gives every range of the evaluation that has no worker to the least busy live worker; with
 * none alive the ranges wait for the next one to join. */
static void assign_evals(coord_t *c) {
    if (c->phase != P_EVAL) return;
    for (int i = 0; i < c->nevr; i++) {
        evr_t *r = &c->evr[i];
        if (r->done || r->worker >= 0) continue;
        peer_t *p = least_busy(c);
        if (p == NULL) return;
        wire_msg_t m;
        memset(&m, 0, sizeof m);
        m.type = WIRE_EVAL_REQ;
        m.rid = c->rid++;
        m.eval_req = (wire_eval_req_t){r->id, (uint32_t)c->epoch, WIRE_SPLIT_TEST, r->first, r->count};
        r->worker = (int)p->id;
        r->deadline = clock_now_s() + LEASE_TTL_TIMEOUTS * c->timeout_s;
        p->evals++;
        send_peer(c, p, &m);
    }
}

/* Takes back worker p's unanswered ranges (it left or died) and gives them to others. */
static void reassign_evals(coord_t *c, peer_t *p) {
    for (int i = 0; i < c->nevr; i++)
        if (!c->evr[i].done && c->evr[i].worker == (int)p->id) c->evr[i].worker = -1;
    p->evals = 0;
    assign_evals(c);
}

/* Splits the test set into one range per live worker (at least one) and hands them out. */
static void start_eval(coord_t *c) {
    print_progress(c);
    c->train_time += clock_now_s() - c->t_epoch;
    c->phase = P_EVAL;
    c->t_eval = clock_now_s();
    c->eval_samples = c->eval_correct = c->eval_correct_aux = 0;
    c->eval_deadline = clock_now_s() + LEASE_TTL_TIMEOUTS * c->timeout_s;
    const int n = c->test.n;
    int r = c->live > 1 ? c->live : 1;
    if (r > n) r = n;
    if (r > EVAL_MAX_RANGES) r = EVAL_MAX_RANGES;
    c->nevr = c->evals_pending = r;
    for (int i = 0; i < r; i++) {
        uint32_t first = (uint32_t)((long)n * i / r), end = (uint32_t)((long)n * (i + 1) / r);
        c->evr[i] = (evr_t){++c->eval_id, first, end - first, -1, 0, 0.0};
    }
    assign_evals(c);
}

static void finish_eval(coord_t *c) {
    const auxps_config_t *cf = &c->cfg;
    c->test_correct = (int)c->eval_correct;
    c->test_correct_aux = (int)c->eval_correct_aux;
    c->test_total = (int)c->eval_samples;
    c->epochs_done = c->epoch + 1;
    double acc = c->test_total > 0 ? (double)c->test_correct / c->test_total : 0.0;
    c->last_acc = acc;
    c->status_dirty = 1;
    if (c->httpd != NULL)
        httpd_history_add(c->httpd, &(status_point_t){clock_unix_s(), (uint64_t)c->step, c->epoch + 1,
                                                        c->last_loss_low, c->last_loss_aux, c->rate, acc});
    outf(c, "epoch %d/%d done in %.1f s | test_accuracy %.4f (%d/%d, low-precision)", c->epoch + 1,
         cf->train.epochs, c->t_eval - c->t_epoch, acc, c->test_correct, c->test_total);
    if (cf->model.aux)
        outf(c, " | aux head %.4f", c->test_total > 0 ? (double)c->test_correct_aux / c->test_total : 0.0);
    outf(c, "\n");
    if (c->elastic)
        outf(c, "epoch %d/%d chunks: %ld total, %ld completed, %ld re-leased, %ld returned | %ld/%u samples trained | "
                "%d workers\n", c->epoch + 1, cf->train.epochs, c->ep_total, c->ep_completed, c->ep_released,
             c->ep_returned, c->ep_samples, c->epoch_end, c->live);
    c->epoch++;
    c->ckpt_dirty = 1;
    if (c->stopping || !plan_epoch(c)) start_finish(c);
}

static void check_epoch_done(coord_t *c) {
    if (c->phase != P_TRAIN) return;
    if (c->elastic ? c->qlen == 0 && c->leased == 0 : c->next_pos >= c->epoch_end && c->chunks_done == c->chunks_out)
        start_eval(c);
}

/* async: worker p gives its lease back untrained past l->trained samples (it left, died, or
 * its lease expired). The trained prefix counts as completed; the rest is leased next. */
static void release_lease(coord_t *c, peer_t *p, const char *why) {
    lease_t *l = &p->lease;
    if (!l->active) return;
    l->active = 0;
    c->leased--;
    c->ep_released++;
    c->released_total++;
    if (l->epoch != (uint32_t)c->epoch || c->phase != P_TRAIN) return; /* cannot happen: epochs wait for leases */
    uint32_t done = l->trained < l->count ? l->trained : l->count;
    if (done > 0) {
        c->ep_completed++;
        c->ep_samples += done;
    } else {
        c->ep_total--; /* the same chunk goes back, not a new one */
    }
    requeue(c, l->first + done, l->count - done);
    c->ckpt_dirty = 1;
    logf_(c, "worker %u (%s): chunk %" PRIu32 " given back (%s): %" PRIu32 " of its %" PRIu32 " samples trained, "
          "the rest is leased again", p->id, p->name, l->chunk, why, done, l->count);
}

/* ---- the coordinator's checkpoint (docs/CHECKPOINT.md "Coordinator payload") -------------- */

/* An async run with checkpoint.dir writes its state at every change of its chunks: a lease
 * given (before the LEASE goes out), a chunk done or given back, an epoch planned. A restarted
 * coordinator loads it, waits for the nodes (which kept their shards), and takes the leases of
 * the previous workers back as they register again (CHUNK_DONE of the old chunk). */
#define COORD_CKPT_PREFIX "coord"
#define COORD_CKPT_FORMAT 1
#define CK_ENDPOINT_BYTES (WIRE_MAX_ENDPOINT + 1)
enum {
    CK_FORMAT, CK_FINISHED, CK_NODES, CK_NPARAMS, CK_NSTATS, CK_NTRAIN, CK_BATCH, CK_CHUNK, CK_EPOCHS, CK_SEED,
    CK_TOTAL_STEPS, CK_EPOCH, CK_EPOCHS_DONE, CK_PLANNED, CK_STEP, CK_EPOCH_END, CK_NEXT_CHUNK, CK_EP_TOTAL,
    CK_EP_COMPLETED, CK_EP_RELEASED, CK_EP_RETURNED, CK_EP_SAMPLES, CK_RELEASED_TOTAL, CK_JOINS, CK_DEPARTURES,
    CK_DEATHS, CK_TEST_CORRECT, CK_TEST_CORRECT_AUX, CK_TEST_TOTAL, CK_TRAIN_TIME_MS, CK_SAMPLES_TOTAL, CK_NSPANS,
    CK_NLEASES, CK_NIDS, CK_FIELDS
};
#define CK_IDENTITY_FIRST CK_NODES /* fields [CK_NODES, CK_TOTAL_STEPS] must match the run that loads it */
#define CK_SPAN_BYTES 16
#define CK_LEASE_BYTES 40
#define CK_ID_BYTES 8

static const char *const ck_identity_names[] = {"nodes", "parameters", "statistics", "training images",
                                                "train.batch_size", "cluster.chunk_batches", "train.epochs",
                                                "train.seed", "steps"};

static void ck_identity(const coord_t *c, uint64_t *f) {
    const auxps_config_t *cf = &c->cfg;
    f[CK_NODES] = (uint64_t)c->opt.nodes;
    f[CK_NPARAMS] = c->nparams;
    f[CK_NSTATS] = c->nstats;
    f[CK_NTRAIN] = (uint64_t)c->ntrain;
    f[CK_BATCH] = (uint64_t)cf->train.batch_size;
    f[CK_CHUNK] = (uint64_t)cf->cluster.chunk_batches;
    f[CK_EPOCHS] = (uint64_t)cf->train.epochs;
    f[CK_SEED] = cf->train.seed;
    f[CK_TOTAL_STEPS] = (uint64_t)c->total_steps;
}

/* Writes the run's state; finished marks a run that exported its model. A failure is logged
 * (the first and every 100th) and costs only the ability to resume from this moment. */
static void save_state(coord_t *c, int finished) {
    if (!c->persist || !c->started) return;
    c->ckpt_dirty = 0;
    int nleases = 0, nids = 0;
    for (int i = 0; i < c->nworkers; i++) nleases += c->workers[i].lease.active;
    for (int i = 0; i < c->norphans; i++) nleases += c->orphans[i].active;
    for (int i = 0; i < c->nworkers; i++) nids += c->workers[i].route_size > 0 || c->workers[i].reserved;
    const size_t size = CK_FIELDS * 8 + (size_t)c->opt.nodes * CK_ENDPOINT_BYTES + (size_t)c->qlen * CK_SPAN_BYTES +
                        (size_t)nleases * CK_LEASE_BYTES + (size_t)nids * CK_ID_BYTES;
    unsigned char *b = calloc(1, size);
    if (b == NULL) {
        logf_(c, "coordinator checkpoint skipped: out of memory for %zu bytes", size);
        return;
    }
    uint64_t f[CK_FIELDS] = {0};
    ck_identity(c, f);
    f[CK_FORMAT] = COORD_CKPT_FORMAT;
    f[CK_FINISHED] = finished ? 1 : 0;
    f[CK_EPOCH] = (uint64_t)c->epoch;
    f[CK_EPOCHS_DONE] = (uint64_t)c->epochs_done;
    f[CK_PLANNED] = (uint64_t)c->planned_steps;
    f[CK_STEP] = (uint64_t)c->step;
    f[CK_EPOCH_END] = c->epoch_end;
    f[CK_NEXT_CHUNK] = c->next_chunk;
    f[CK_EP_TOTAL] = (uint64_t)c->ep_total;
    f[CK_EP_COMPLETED] = (uint64_t)c->ep_completed;
    f[CK_EP_RELEASED] = (uint64_t)c->ep_released;
    f[CK_EP_RETURNED] = (uint64_t)c->ep_returned;
    f[CK_EP_SAMPLES] = (uint64_t)c->ep_samples;
    f[CK_RELEASED_TOTAL] = (uint64_t)c->released_total;
    f[CK_JOINS] = (uint64_t)c->joins;
    f[CK_DEPARTURES] = (uint64_t)c->departures;
    f[CK_DEATHS] = (uint64_t)c->deaths;
    f[CK_TEST_CORRECT] = (uint64_t)c->test_correct;
    f[CK_TEST_CORRECT_AUX] = (uint64_t)c->test_correct_aux;
    f[CK_TEST_TOTAL] = (uint64_t)c->test_total;
    f[CK_TRAIN_TIME_MS] = (uint64_t)(c->train_time * 1000);
    f[CK_SAMPLES_TOTAL] = (uint64_t)c->samples_total;
    f[CK_NSPANS] = (uint64_t)c->qlen;
    f[CK_NLEASES] = (uint64_t)nleases;
    f[CK_NIDS] = (uint64_t)nids;
    for (int i = 0; i < CK_FIELDS; i++) ckpt_put_u64(b + 8 * i, f[i]);
    unsigned char *p = b + CK_FIELDS * 8;
    for (int k = 0; k < c->opt.nodes; k++, p += CK_ENDPOINT_BYTES)
        memcpy(p, c->shards[k].endpoint, strlen(c->shards[k].endpoint));
    for (int i = 0; i < c->qlen; i++, p += CK_SPAN_BYTES) {
        ckpt_put_u64(p, c->queue[c->qhead + i].first);
        ckpt_put_u64(p + 8, c->queue[c->qhead + i].count);
    }
    for (int r = 0; r < 2; r++) {
        int n = r ? c->norphans : c->nworkers;
        for (int i = 0; i < n; i++) {
            const lease_t *l = r ? &c->orphans[i] : &c->workers[i].lease;
            if (!l->active) continue;
            const uint64_t v[5] = {l->chunk, l->epoch, l->first, l->count, l->trained};
            for (int j = 0; j < 5; j++) ckpt_put_u64(p + 8 * j, v[j]);
            p += CK_LEASE_BYTES;
        }
    }
    for (int i = 0; i < c->nworkers; i++) /* the ids in use: a successor gives them out last */
        if (c->workers[i].route_size > 0 || c->workers[i].reserved) {
            ckpt_put_u64(p, (uint64_t)i);
            p += CK_ID_BYTES;
        }
    auxps_error_t e = {0};
    if (ckpt_write(c->cfg.checkpoint.dir, COORD_CKPT_PREFIX, CKPT_KIND_COORD, c->ckpt_seq + 1, b, size,
                   c->cfg.checkpoint.keep, &e) == 0) {
        c->ckpt_seq++;
    } else if (c->ckpt_failures++ % 100 == 0) {
        logf_(c, "coordinator checkpoint failed (%ld so far; the run goes on, but cannot resume from here): %s",
              c->ckpt_failures, e.msg);
    }
    free(b);
}

static void report_bad_state(void *data, const char *path, const char *reason) {
    logf_(data, "checkpoint %s is unusable (%s): trying the previous one", path, reason);
}

/* Resumes the run of the newest valid coordinator checkpoint in checkpoint.dir, if there is
 * one: its epoch, counters, pending chunks, the leases its workers held (kept until they
 * register again and say how far they got) and the nodes' endpoints (the nodes are awaited as
 * restarted nodes). Returns 0 (resumed, or nothing to resume) or a negative code with err set. */
static int restore_state(coord_t *c, auxps_error_t *err) {
    ckpt_t ck;
    int rc = ckpt_load_newest(c->cfg.checkpoint.dir, COORD_CKPT_PREFIX, CKPT_KIND_COORD, &ck, report_bad_state, c,
                              err);
    if (rc == CKPT_NONE) return 0;
    if (rc != 0) return rc;
    const unsigned char *b = ck.payload;
    uint64_t f[CK_FIELDS], want[CK_FIELDS] = {0};
    rc = AUXPS_EFORMAT;
    if (ck.size < CK_FIELDS * 8) {
        auxps_error_set(err, rc, "checkpoint %s: %zu bytes, fewer than the %d of its fields", ck.path, ck.size,
                        CK_FIELDS * 8);
        goto fail;
    }
    for (int i = 0; i < CK_FIELDS; i++) f[i] = ckpt_get_u64(b + 8 * i);
    if (f[CK_FORMAT] != COORD_CKPT_FORMAT) {
        auxps_error_set(err, AUXPS_EVERSION, "checkpoint %s: coordinator payload format %" PRIu64 ", this program "
                        "reads %d", ck.path, f[CK_FORMAT], COORD_CKPT_FORMAT);
        rc = AUXPS_EVERSION;
        goto fail;
    }
    ck_identity(c, want);
    for (int i = CK_IDENTITY_FIRST; i <= CK_TOTAL_STEPS; i++)
        if (f[i] != want[i]) {
            auxps_error_set(err, AUXPS_ECONFIG, "checkpoint %s belongs to another run (%s %" PRIu64 " there, %" PRIu64
                            " here): give this run an empty checkpoint.dir", ck.path,
                            ck_identity_names[i - CK_IDENTITY_FIRST], f[i], want[i]);
            rc = AUXPS_ECONFIG;
            goto fail;
        }
    if (f[CK_FINISHED]) {
        auxps_error_set(err, AUXPS_ECONFIG, "checkpoint %s is of a run that finished and exported its model: give a "
                        "new run an empty checkpoint.dir", ck.path);
        rc = AUXPS_ECONFIG;
        goto fail;
    }
    const uint64_t nspans = f[CK_NSPANS], nleases = f[CK_NLEASES], nids = f[CK_NIDS], S = (uint64_t)c->opt.nodes;
    if (nspans > (uint64_t)c->ntrain || nleases > WIRE_MAX_WORKERS * 4 || nids > WIRE_MAX_WORKERS ||
        ck.size != CK_FIELDS * 8 + S * CK_ENDPOINT_BYTES + nspans * CK_SPAN_BYTES + nleases * CK_LEASE_BYTES +
                   nids * CK_ID_BYTES ||
        f[CK_EPOCH_END] > (uint64_t)c->ntrain || f[CK_EPOCH] > (uint64_t)c->cfg.train.epochs ||
        f[CK_STEP] > (uint64_t)c->total_steps * 2 || f[CK_PLANNED] > (uint64_t)c->total_steps) {
        auxps_error_set(err, rc, "checkpoint %s: %" PRIu64 " pending chunks, %" PRIu64 " leases, epoch %" PRIu64
                        " or its size (%zu bytes) do not fit this run", ck.path, nspans, nleases, f[CK_EPOCH], ck.size);
        goto fail;
    }
    const unsigned char *p = b + CK_FIELDS * 8;
    for (int k = 0; k < c->opt.nodes; k++, p += CK_ENDPOINT_BYTES) {
        if (memchr(p, '\0', CK_ENDPOINT_BYTES) == NULL || p[0] == '\0') {
            auxps_error_set(err, rc, "checkpoint %s: the endpoint of node %d is not a string", ck.path, k);
            goto fail;
        }
        peer_t *n = &c->nodes[k];
        memset(n, 0, sizeof *n);
        n->role = WIRE_ROLE_NODE;
        n->id = (uint32_t)k;
        n->state = PEER_GONE;
        snprintf(n->name, sizeof n->name, "node %d", k);
        snprintf(n->endpoint, sizeof n->endpoint, "%s", (const char *)p);
    }
    const uint32_t end = (uint32_t)f[CK_EPOCH_END];
    c->qcap = (int)nspans + (int)WIRE_MAX_WORKERS;
    c->orphans = calloc(nleases ? nleases : 1, sizeof *c->orphans);
    if ((c->queue = calloc((size_t)c->qcap, sizeof *c->queue)) == NULL || c->orphans == NULL) {
        auxps_error_set(err, AUXPS_ENOMEM, "out of memory");
        rc = AUXPS_ENOMEM;
        goto fail;
    }
    for (uint64_t i = 0; i < nspans; i++, p += CK_SPAN_BYTES) {
        uint64_t first = ckpt_get_u64(p), count = ckpt_get_u64(p + 8);
        if (count == 0 || first + count > end) {
            auxps_error_set(err, rc, "checkpoint %s: pending chunk [%" PRIu64 ", +%" PRIu64 ") is outside the epoch's "
                            "%" PRIu32 " samples", ck.path, first, count, end);
            goto fail;
        }
        c->queue[c->qlen++] = (span_t){(uint32_t)first, (uint32_t)count};
    }
    const long bs = c->cfg.train.batch_size;
    for (uint64_t i = 0; i < nleases; i++, p += CK_LEASE_BYTES) {
        lease_t *l = &c->orphans[c->norphans++];
        uint64_t v[5];
        for (int j = 0; j < 5; j++) v[j] = ckpt_get_u64(p + 8 * j);
        if (v[1] != f[CK_EPOCH] || v[3] == 0 || v[2] + v[3] > end || v[4] > v[3] || v[0] >= f[CK_NEXT_CHUNK]) {
            auxps_error_set(err, rc, "checkpoint %s: lease of chunk %" PRIu64 " (epoch %" PRIu64 ", [%" PRIu64 ", +%"
                            PRIu64 "), %" PRIu64 " trained) does not fit its run", ck.path, v[0], v[1], v[2], v[3],
                            v[4]);
            goto fail;
        }
        *l = (lease_t){.active = 1, .chunk = (uint32_t)v[0], .epoch = (uint32_t)v[1], .first = (uint32_t)v[2],
                       .count = (uint32_t)v[3], .batches = (int)((v[3] + bs - 1) / bs), .trained = (uint32_t)v[4]};
    }
    /* The previous workers' ids: their last messages may still reach the nodes, so a new
     * worker gets one of them only when no other id is free. */
    for (uint64_t i = 0; i < nids; i++, p += CK_ID_BYTES) {
        uint64_t id = ckpt_get_u64(p);
        if (id >= WIRE_MAX_WORKERS) {
            auxps_error_set(err, rc, "checkpoint %s: worker id %" PRIu64 " is out of range", ck.path, id);
            goto fail;
        }
        peer_t *w = &c->workers[id];
        w->state = PEER_GONE;
        w->role = WIRE_ROLE_WORKER;
        w->id = (uint32_t)id;
        w->reserved = 1;
        if ((int)id >= c->nworkers) c->nworkers = (int)id + 1;
    }
    c->epoch = (int)f[CK_EPOCH];
    c->epochs_done = (int)f[CK_EPOCHS_DONE];
    c->planned_steps = (long)f[CK_PLANNED];
    c->step = c->step_gone = (long)f[CK_STEP];
    c->logged_step = c->step;
    c->epoch_end = end;
    c->next_chunk = (uint32_t)f[CK_NEXT_CHUNK];
    c->ep_total = (long)f[CK_EP_TOTAL];
    c->ep_completed = (long)f[CK_EP_COMPLETED];
    c->ep_released = (long)f[CK_EP_RELEASED];
    c->ep_returned = (long)f[CK_EP_RETURNED];
    c->ep_samples = (long)f[CK_EP_SAMPLES];
    c->released_total = (long)f[CK_RELEASED_TOTAL];
    c->joins = (long)f[CK_JOINS];
    c->departures = (long)f[CK_DEPARTURES];
    c->deaths = (long)f[CK_DEATHS];
    c->test_correct = (int)f[CK_TEST_CORRECT];
    c->test_correct_aux = (int)f[CK_TEST_CORRECT_AUX];
    c->test_total = (int)f[CK_TEST_TOTAL];
    c->train_time = (double)f[CK_TRAIN_TIME_MS] / 1000.0;
    c->samples_total = (long)f[CK_SAMPLES_TOTAL];
    c->leased = c->norphans;
    c->chunks_out = 1; /* the epoch's clock is already running */
    c->nnodes = c->opt.nodes;
    c->nodes_down = c->opt.nodes;
    if ((rc = make_shards(c)) != 0) {
        *err = c->err;
        goto fail;
    }
    c->ckpt_seq = ck.step;
    c->started = c->resumed = 1;
    c->phase = P_TRAIN;
    c->t_epoch = c->log_t = c->last_progress = clock_now_s();
    const double ttl = LEASE_TTL_TIMEOUTS * c->timeout_s;
    for (int i = 0; i < c->norphans; i++) c->orphans[i].expires = c->t_epoch + ttl;
    outf(c, "resumed from %s: epoch %d/%d, step %ld, %ld of %ld chunks of the epoch completed, %d pending, %d held "
            "by the previous workers; waiting for the %d nodes\n", ck.path, c->epoch + 1, c->cfg.train.epochs,
         c->step, c->ep_completed, c->ep_total, c->qlen, c->norphans, c->opt.nodes);
    ckpt_release(&ck);
    return 0;
fail:
    ckpt_release(&ck);
    return rc;
}

/* The previous coordinator's lease of chunk (epoch), or NULL. */
static lease_t *find_orphan(coord_t *c, uint32_t chunk, uint32_t epoch) {
    for (int i = 0; i < c->norphans; i++)
        if (c->orphans[i].active && c->orphans[i].chunk == chunk && c->orphans[i].epoch == epoch)
            return &c->orphans[i];
    return NULL;
}

/* A chunk of the previous coordinator ends: done samples of it were trained (CHUNK_DONE of a
 * worker that registered again), or its worker did not come back (done = what the checkpoint
 * knew). The trained prefix counts as completed; the rest is leased next. */
static void end_orphan(coord_t *c, lease_t *l, uint32_t done, int came_back) {
    if (done > l->count) done = l->count;
    l->active = 0;
    c->leased--;
    if (done > 0) {
        c->ep_completed++;
        c->ep_samples += done;
    } else {
        c->ep_total--; /* the same chunk goes back, not a new one */
    }
    if (done < l->count) {
        came_back ? c->ep_returned++ : c->ep_released++;
        if (!came_back) c->released_total++;
        requeue(c, l->first + done, l->count - done);
    }
    c->ckpt_dirty = 1;
    logf_(c, "chunk %" PRIu32 " of the previous coordinator: %" PRIu32 " of its %" PRIu32 " samples trained%s", l->chunk,
          done, l->count, came_back ? ", reported by its worker" : ": its worker did not come back, the rest is leased again");
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
    /* A send waits at most the timeout (a full queue must not hang the coordinator; the pull
     * deadline then ends the run). */
    const int linger = 0, sndtimeo = c->cfg.cluster.timeout_ms;
    for (int k = 0; k < S; k++) {
        void *d = zmq_socket(c->ctx, ZMQ_DEALER);
        auxps_error_t e = {0};
        if (d == NULL || wire_socket_limits(d) != 0 || zmq_setsockopt(d, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
            curve_connect(c->opt.curve, d, &e) != 0 ||
            zmq_setsockopt(d, ZMQ_SNDTIMEO, &sndtimeo, sizeof sndtimeo) != 0 || zmq_connect(d, c->shards[k].endpoint) != 0) {
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

/* ---- membership ------------------------------------------------------------------------- */

/* async: tells node n (NULL: every ready node) that worker id joined the run, so that it
 * takes its pushes and pulls, or left it, so that its statistics leave the average and the id
 * can be given to a new worker (PROTOCOL.md MEMBERSHIP). */
static void send_membership(coord_t *c, peer_t *n, uint32_t id, int joined) {
    for (int k = 0; k < c->nnodes; k++) {
        peer_t *to = &c->nodes[k];
        if (to->state != PEER_READY || (n != NULL && to != n)) continue;
        wire_msg_t m;
        memset(&m, 0, sizeof m);
        m.type = WIRE_MEMBERSHIP;
        m.rid = c->rid++;
        m.membership = (wire_membership_t){id, joined ? 1u : 0u, (uint64_t)c->step};
        send_peer(c, to, &m);
    }
}

/* async: worker p left (BYE) or died (silent for T). Its lease goes back to the queue, its
 * evaluation ranges to other workers, its batches stay counted, and its slot is freed. */
static void worker_gone(coord_t *c, peer_t *p, int died, const char *why) {
    const int welcomed = p->state == PEER_WELCOMED;
    release_lease(c, p, died ? "the worker died" : "the worker left");
    p->state = PEER_GONE;
    if (welcomed) {
        c->live--;
        reassign_evals(c, p);
        send_membership(c, NULL, p->id, 0);
    }
    c->step_gone += (long)p->clock;
    p->clock = 0;
    update_step(c);
    died ? c->deaths++ : c->departures++;
    outf(c, "member: worker %u (%s) %s: %s; %d workers%s\n", p->id, p->name, died ? "died" : "left", why, c->live,
         c->live == 0 && c->phase <= P_EVAL ? ", waiting for one to join" : "");
    p->route_size = 0; /* the slot is free: its id goes to the next worker */
    c->status_dirty = 1;
    if (c->phase == P_TRAIN) check_epoch_done(c);
}

/* Node p is silent or said BYE during training. In an elastic run the workers wait and retry
 * and the node may come back at the same endpoint from its checkpoint; otherwise the run ends. */
static void node_gone(coord_t *c, peer_t *p, const char *why) {
    if (!c->elastic || c->phase < P_TRAIN || c->phase > P_EVAL || c->stopping || !c->cfg.checkpoint.dir[0]) {
        p->state = PEER_GONE;
        fail(c, AUXPS_EIO, "node %u (%s) %s: aborting the run%s", p->id, p->name, why,
             c->elastic && !c->cfg.checkpoint.dir[0] ? " (without checkpoint.dir its shard cannot come back)" : "");
        return;
    }
    if (p->state == PEER_READY) c->nready--;
    p->state = PEER_GONE;
    p->route_size = 0;
    c->nodes_down++;
    c->status_dirty = 1;
    outf(c, "member: node %u (%s) %s; waiting for it to come back at %s from its checkpoint\n", p->id, p->name, why,
         p->endpoint);
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
    const int node = h->role == WIRE_ROLE_NODE;
    int slot = -1;
    char why[WIRE_MAX_TEXT + 1] = "";
    if (node && c->nnodes < c->opt.nodes) {
        slot = c->nnodes++;
    } else if (node && c->started && c->elastic) { /* a node restarted: it takes back its shard */
        /* One that restarted faster than its death was noticed replaces its old connection. */
        for (int k = 0; k < c->nnodes; k++)
            if (c->nodes[k].state != PEER_GONE && strcmp(c->nodes[k].endpoint, h->endpoint) == 0)
                node_gone(c, &c->nodes[k], "registered again from a new connection");
        if (c->failed) return;
        for (int k = 0; k < c->nnodes && slot < 0; k++)
            if (c->nodes[k].state == PEER_GONE && strcmp(c->nodes[k].endpoint, h->endpoint) == 0) slot = k;
        if (slot < 0)
            snprintf(why, sizeof why, "%d nodes are down; a node that comes back must bind the endpoint it had",
                     c->nodes_down);
        else
            c->nodes_down--;
    } else if (!node && !c->elastic && c->nworkers < c->opt.workers) {
        slot = c->nworkers++;
    } else if (!node && c->elastic) { /* the lowest free id, one of the previous coordinator's last */
        for (int i = 0; i < c->nworkers && slot < 0; i++)
            if (c->workers[i].state == PEER_GONE && c->workers[i].route_size == 0 && !c->workers[i].reserved) slot = i;
        if (slot < 0 && c->nworkers < (int)WIRE_MAX_WORKERS) slot = c->nworkers++;
        for (int i = 0; i < c->nworkers && slot < 0; i++)
            if (c->workers[i].state == PEER_GONE && c->workers[i].route_size == 0) slot = i;
        if (slot < 0) snprintf(why, sizeof why, "the run has %u workers, the most it takes", WIRE_MAX_WORKERS);
    }
    if (slot < 0) {
        if (why[0] == '\0') {
            int want = node ? c->opt.nodes : c->opt.workers;
            snprintf(why, sizeof why, "the run has its %d %s%s%s", want, node ? "node" : "worker", want == 1 ? "" : "s",
                     node ? "" : " (ssp and bsp runs have fixed membership)");
        }
        send_error_to(c, c->in.route, c->in.route_size, m->rid, WIRE_ERR_FULL, why);
        return;
    }
    p = node ? &c->nodes[slot] : &c->workers[slot];
    memset(p, 0, sizeof *p);
    memcpy(p->route, c->in.route, c->in.route_size);
    p->route_size = c->in.route_size;
    p->role = (int)h->role;
    p->id = (uint32_t)slot;
    p->state = PEER_HELD;
    p->hello_rid = m->rid;
    p->last_recv = p->last_sent = clock_now_s();
    snprintf(p->name, sizeof p->name, "%s", h->name);
    snprintf(p->endpoint, sizeof p->endpoint, "%s", h->endpoint);
    logf_(c, "%s %u registered: %s%s%s", peer_kind(p), p->id, p->name, node ? " at " : "", node ? p->endpoint : "");
    if (node && c->started) {
        send_welcome(c, p); /* the shard map is unchanged: the node restores its checkpoint */
    } else if (node) {
        c->phase_since = clock_now_s();
        if (c->nnodes == c->opt.nodes) welcome_nodes(c);
    } else if (c->phase >= P_TRAIN && !(c->resumed && c->nready < c->opt.nodes)) {
        c->phase_since = clock_now_s();
        send_welcome(c, p);
    } /* else held: a resumed run welcomes workers once every node has forgotten the old ids */
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
    c->nready++;
    if (c->started) { /* a restarted node: it learns the members anew */
        for (int i = 0; i < c->nworkers; i++)
            if (c->workers[i].state == PEER_WELCOMED) send_membership(c, p, c->workers[i].id, 1);
        outf(c, "member: node %u (%s) is back at version %" PRIu64 "%s; %d of %d nodes ready\n", p->id, p->name,
             r->version, r->version == 0 ? " (no checkpoint: initial parameters)" : c->resumed ? "" : " (from its checkpoint)", c->nready,
             c->opt.nodes);
        if (c->resumed && c->nready == c->opt.nodes && c->phase == P_TRAIN) {
            for (int i = 0; i < c->nworkers; i++)
                if (c->workers[i].state == PEER_HELD) send_welcome(c, &c->workers[i]);
            if (c->resume_finish) start_finish(c); /* training was over: export */
            else check_epoch_done(c);              /* the epoch may have ended just before the restart */
        }
        return;
    }
    if (r->version != 0) {
        fail(c, AUXPS_EIO, "node %u (%s) restored a checkpoint at version %" PRIu64 ", but this run starts afresh: "
             "give it an empty checkpoint.dir (a restarted coordinator does not resume a run)", p->id, p->name,
             r->version);
        return;
    }
    if (c->nready < c->opt.nodes) return;
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
        save_state(c, 0); /* before the worker can train it: a restart knows who holds it */
        send_lease(c, p, m->rid, &p->lease);
    } else {
        send_lease(c, p, m->rid, NULL);
    }
}

static void on_chunk_done(coord_t *c, peer_t *p, const wire_msg_t *m) {
    const wire_chunk_done_t *d = &m->chunk_done;
    if (!worker_id_ok(c, p, m, d->worker)) return;
    lease_t *orphan = NULL;
    if ((!p->lease.active || p->lease.chunk != d->chunk || p->lease.epoch != d->epoch) && c->phase == P_TRAIN &&
        (orphan = find_orphan(c, d->chunk, d->epoch)) != NULL) { /* from before a restart */
        end_orphan(c, orphan, d->samples, 1);
        c->last_progress = clock_now_s();
        check_epoch_done(c);
        return;
    }
    if (!p->lease.active || p->lease.chunk != d->chunk || p->lease.epoch != d->epoch) {
        char why[128];
        snprintf(why, sizeof why, "chunk %" PRIu32 " of epoch %" PRIu32 " is not leased to worker %" PRIu32, d->chunk,
                 d->epoch, p->id);
        c->bad_messages++;
        send_error_to(c, p->route, p->route_size, m->rid, WIRE_ERR_STALE, why);
        return;
    }
    if (c->elastic) {
        /* A worker that leaves returns its chunk in part: the rest is leased next. */
        uint32_t done = d->samples < p->lease.count ? d->samples : p->lease.count;
        c->leased--;
        c->ep_completed++;
        c->ep_samples += done;
        if (done < p->lease.count) {
            c->ep_returned++;
            requeue(c, p->lease.first + done, p->lease.count - done);
            logf_(c, "worker %u returned chunk %" PRIu32 " with %" PRIu32 " of its %" PRIu32 " samples trained",
                  p->id, d->chunk, done, p->lease.count);
        }
    } else if (d->samples != p->lease.count) {
        logf_(c, "worker %u trained %" PRIu32 " of the %" PRIu32 " samples of chunk %" PRIu32, p->id, d->samples,
              p->lease.count, d->chunk);
    }
    p->lease.active = 0;
    c->ckpt_dirty = 1;
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
    if (p->lease.active && p->lease.chunk == r->chunk && p->lease.epoch == r->epoch) {
        p->lease.expires = clock_now_s() + LEASE_TTL_TIMEOUTS * c->timeout_s;
        uint64_t t = (uint64_t)p->lease.trained + r->samples;
        p->lease.trained = t < p->lease.count ? (uint32_t)t : p->lease.count;
    }
    if (r->clock > p->clock) p->clock = r->clock;
    p->samples += r->samples;
    p->staleness = r->staleness;
    p->has_staleness = 1;
    c->samples_total += r->samples;
    c->log_samples += r->samples;
    c->log_loss += r->loss_sum;
    c->log_loss_low += r->loss_low_sum;
    update_step(c);
    maybe_progress(c);
}

static void on_eval_rep(coord_t *c, peer_t *p, const wire_msg_t *m) {
    const wire_eval_rep_t *r = &m->eval_rep;
    if (!worker_id_ok(c, p, m, r->worker)) return;
    evr_t *range = NULL;
    for (int i = 0; i < c->nevr && c->phase == P_EVAL; i++)
        if (c->evr[i].id == r->eval && !c->evr[i].done && c->evr[i].worker == (int)p->id) range = &c->evr[i];
    if (range == NULL) {
        c->bad_messages++;
        send_error_to(c, p->route, p->route_size, m->rid, WIRE_ERR_STALE, "no evaluation of that id is pending");
        return;
    }
    if (r->samples != range->count)
        logf_(c, "worker %u evaluated %" PRIu32 " of the %" PRIu32 " samples asked", p->id, r->samples, range->count);
    range->done = 1;
    p->evals--;
    c->last_progress = clock_now_s();
    c->eval_samples += r->samples;
    c->eval_correct += r->correct_low;
    c->eval_correct_aux += r->correct_aux;
    if (--c->evals_pending == 0) finish_eval(c);
}

static void on_bye(coord_t *c, peer_t *p, const wire_msg_t *m) {
    int expected = p->state == PEER_DONE;
    if (!expected && c->elastic && !c->failed) {
        char why[96];
        snprintf(why, sizeof why, "said BYE (%s)", m->bye.reason ? wire_err_name(m->bye.reason) : "normal");
        if (p->role == WIRE_ROLE_WORKER) worker_gone(c, p, 0, why);
        else node_gone(c, p, why);
        return;
    }
    p->state = PEER_GONE;
    if (!expected && !c->failed)
        fail(c, AUXPS_EIO, "%s %u (%s) left the run (BYE %s): membership is fixed, aborting", peer_kind(p), p->id,
             p->name, m->bye.reason ? wire_err_name(m->bye.reason) : "normal");
}

static void on_node_stats(coord_t *c, peer_t *p, const wire_msg_t *m) {
    if (p->role != WIRE_ROLE_NODE || m->node_stats.node != p->id) {
        bad_message(c, p, m->rid, WIRE_ERR_BAD_MESSAGE, "NODE_STATS from a peer that is not that node");
        return;
    }
    p->stats = m->node_stats;
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
    if (c->elastic && p->role == WIRE_ROLE_WORKER && (p->state == PEER_WELCOMED || p->state == PEER_HELD)) {
        char why[WIRE_MAX_TEXT + 64];
        snprintf(why, sizeof why, "refused the coordinator's message (%s: %s)", wire_err_name(m->error.code),
                 m->error.text);
        worker_gone(c, p, 0, why); /* one bad worker does not end an elastic run */
        return;
    }
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
        if (c->in.route_size > 0) bad_message_kind(c, p, 0, wire_error_code(rc), wire_reject_kind(rc, NULL), e.msg);
        goto done;
    }
    rc = wire_decode_in(&c->in, &m, &e);
    if (rc != 0) {
        if (m.type != WIRE_ERROR) bad_message_kind(c, p, m.rid, wire_error_code(rc), wire_reject_kind(rc, &m), e.msg);
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
    case WIRE_NODE_STATS: on_node_stats(c, p, &m); break;
    default: {
        char why[96];
        snprintf(why, sizeof why, "%s is not a message for the coordinator", wire_type_name(m.type));
        bad_message(c, p, m.rid, WIRE_ERR_BAD_MESSAGE, why);
    }
    }
done:
    wire_msg_clear(&m);
    wire_in_close(&c->in);
    if (c->ckpt_dirty) save_state(c, 0);
    return 1;
}

/* ---- the status endpoint ----------------------------------------------------------------- */

#define STATUS_PERIOD 0.5 /* seconds between snapshots when nothing changes */

static const char *worker_state(const peer_t *p) {
    if (p->state == PEER_HELD) return "joining";
    if (p->state != PEER_WELCOMED) return "leaving";
    if (p->evals > 0) return "evaluating";
    return p->lease.active ? "training" : "idle";
}

/* Fills the snapshot from the run's state and hands it to the server (a copy under its lock:
 * the server thread never reads the coordinator's memory). Also updates the throughputs. */
_Static_assert(STATUS_REJECT_KINDS == WIRE_REJECT_COUNT, "status and wire count the same kinds of refusal");

static void publish_status(coord_t *c, int final) {
    if (c->httpd == NULL) return;
    const double now = clock_now_s(), unow = clock_unix_s();
    if (c->rate_t == 0) c->rate_t = now;
    if (now - c->rate_t >= 1.0 || final) { /* samples/s over the last second or more, smoothed */
        double r = (double)(c->samples_total - c->rate_base) / (now - c->rate_t > 0 ? now - c->rate_t : 1);
        c->rate = c->rate == 0 ? r : 0.5 * c->rate + 0.5 * r;
        c->rate_base = c->samples_total;
        c->rate_t = now;
    }
    const auxps_config_t *cf = &c->cfg;
    const model_spec_t *sp = &cf->model;
    status_snapshot_t *s = c->snap;
    status_snapshot_init(s);
    if (c->failed && c->err.code != 0) s->state = STATUS_FAILED;
    else if (final || c->phase >= P_DRAIN) s->state = STATUS_DONE;
    else if (c->phase < P_TRAIN || c->live == 0 || c->nodes_down > 0) s->state = STATUS_WAITING;
    else s->state = STATUS_TRAINING;
    if (sp->arch == ARCH_RESNET)
        snprintf(s->model.arch, sizeof s->model.arch, "resnet%u", (unsigned)(2 + 6 * sp->blocks) % 10000u);
    else
        snprintf(s->model.arch, sizeof s->model.arch, "mlp");
    s->model.weight_bits = sp->wbits;
    s->model.act_bits = sp->abits;
    s->model.aux = sp->aux;
    s->model.params = c->nparams;
    snprintf(s->consistency, sizeof s->consistency, "%s", cons_name(cf->cluster.consistency));
    snprintf(s->pull, sizeof s->pull, "%s", cf->cluster.pull == PULL_KBIT ? "kbit" : "f32");
    snprintf(s->push, sizeof s->push, "%s", cf->cluster.push == PUSH_Q8 ? "q8" : "f32");
    s->prefetch = cf->cluster.prefetch;
    s->staleness_bound = cf->cluster.consistency == CONS_SSP ? cf->cluster.staleness
                         : cf->cluster.consistency == CONS_BSP ? 0 : -1;
    s->epoch = c->started ? (c->epoch < cf->train.epochs ? c->epoch + 1 : cf->train.epochs) : 0;
    s->epochs = cf->train.epochs;
    s->step = (uint64_t)c->step;
    s->total_steps = (uint64_t)c->total_steps;
    s->samples_per_s = c->started ? c->rate : NAN;
    s->loss_low = c->last_loss_low;
    s->loss_aux = c->last_loss_aux;
    s->test_accuracy = c->last_acc;
    if (c->elastic) {
        s->chunks_total = (uint64_t)c->ep_total;
        s->chunks_done = (uint64_t)c->ep_completed;
        s->chunks_leased = (uint64_t)c->leased;
    } else {
        s->chunks_total = (uint64_t)c->chunks_out + (c->next_pos < c->epoch_end ? 1 : 0);
        s->chunks_done = (uint64_t)c->chunks_done;
        s->chunks_leased = (uint64_t)(c->chunks_out - c->chunks_done);
    }
    s->chunks_released = (uint64_t)c->released_total;
    s->started = c->started_unix;
    s->uptime_s = unow - c->started_unix;
    s->security.curve = c->opt.curve != NULL;
    s->security.auth_refused = curve_zap_refused(c->zap);
    memcpy(s->rejected, c->rejected, sizeof s->rejected);
    uint64_t ck_version = UINT64_MAX, ck_ms = 0;
    for (int k = 0; k < c->nnodes && s->num_shards < STATUS_MAX_SHARDS; k++) {
        const peer_t *n = &c->nodes[k];
        status_shard_t *sh = &s->shards[s->num_shards++];
        sh->id = n->id;
        snprintf(sh->host, sizeof sh->host, "%s", n->name);
        sh->offset = c->shards[k].offset;
        sh->length = c->shards[k].length;
        sh->updates = n->stats.pushes;
        sh->version = n->stats.version;
        sh->bytes_in = n->stats.bytes_in;
        sh->bytes_out = n->stats.bytes_out;
        memcpy(sh->rejected, n->stats.rejected, sizeof sh->rejected);
        if (n->stats.checkpoint_version < ck_version) ck_version = n->stats.checkpoint_version;
        if (n->stats.checkpoint_ms > ck_ms) ck_ms = n->stats.checkpoint_ms;
    }
    if (c->nnodes > 0 && ck_version != UINT64_MAX && ck_version > 0) { /* every node has one: the oldest */
        s->has_checkpoint = 1;
        s->checkpoint_step = ck_version;
        s->checkpoint_time = (double)ck_ms / 1000.0;
    }
    for (int i = 0; i < c->nworkers && s->num_workers < STATUS_MAX_WORKERS; i++) {
        peer_t *p = &c->workers[i];
        if (p->state != PEER_HELD && p->state != PEER_WELCOMED) continue;
        if (now - p->rate_t >= 1.0) {
            double r = (double)(p->samples - p->rate_base) / (p->rate_t > 0 ? now - p->rate_t : 1.0);
            p->rate = p->rate_t > 0 ? (p->rate == 0 ? r : 0.5 * p->rate + 0.5 * r) : 0.0;
            p->rate_base = p->samples;
            p->rate_t = now;
        }
        status_worker_t *w = &s->workers[s->num_workers++];
        w->id = p->id;
        snprintf(w->host, sizeof w->host, "%s", p->name);
        snprintf(w->state, sizeof w->state, "%s", worker_state(p));
        w->samples = p->samples;
        w->samples_per_s = p->rate;
        w->heartbeat_age_s = now - p->last_recv;
        w->staleness = p->has_staleness ? (int64_t)p->staleness : -1;
    }
    httpd_publish(c->httpd, s);
    c->pub_t = now;
    c->status_dirty = 0;
}

/* Starts the server of cfg.status; a failure is logged and the run goes on without it. */
static void start_status(coord_t *c) {
    const auxps_config_t *cf = &c->cfg;
    if (!cf->status.enabled) return;
    auxps_error_t e = {0};
    c->snap = malloc(sizeof *c->snap);
    if (c->snap == NULL || (c->httpd = httpd_start(cf->status.addr, cf->status.port, &e)) == NULL) {
        logf_(c, "no status endpoint: %s", c->snap == NULL ? "out of memory" : e.msg);
        return;
    }
    if (httpd_warning(c->httpd) != NULL) logf_(c, "status endpoint: %s", httpd_warning(c->httpd));
    logf_(c, "status endpoint at http://%s:%d/", cf->status.addr, httpd_port(c->httpd));
    publish_status(c, 0);
}

/* ---- housekeeping ------------------------------------------------------------------------ */

/* The periodic timer. Jobs: publish the status snapshot when due; see the stop flag; send HEARTBEAT on every coordinator link that
 * has been quiet for H (the default H before WELCOME); declare a peer that has been silent for T
 * dead (the default T before WELCOME), which aborts the run since membership is fixed; enforce
 * the deadlines of the phases (registration, NODE_READY, leases, evaluation, final pulls, BYEs). */
static void cron(coord_t *c, volatile sig_atomic_t *stop) {
    const double now = clock_now_s();
    if (c->httpd != NULL && (c->status_dirty || now - c->pub_t >= STATUS_PERIOD)) publish_status(c, 0);
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
                char why[64];
                snprintf(why, sizeof why, "silent for %.1f s", now - p->last_recv);
                if (c->elastic && r == 1) {
                    worker_gone(c, p, 1, why);
                    continue;
                }
                if (r == 0) {
                    node_gone(c, p, why);
                    continue;
                }
                p->state = PEER_GONE;
                fail(c, AUXPS_EIO, "%s %u (%s) %s: aborting the run", peer_kind(p), p->id, p->name, why);
                return;
            }
            if (now - p->last_sent >= h) send_heartbeat(c, p);
            if (p->lease.active && c->nodes_down > 0) {
                p->lease.expires = now + LEASE_TTL_TIMEOUTS * c->timeout_s; /* the workers wait for the node */
            } else if (p->lease.active && now > p->lease.expires && c->elastic) {
                char why[64];
                snprintf(why, sizeof why, "no PROGRESS for %.1f s", LEASE_TTL_TIMEOUTS * c->timeout_s);
                release_lease(c, p, why);
            } else if (p->lease.active && now > p->lease.expires) {
                fail(c, AUXPS_EIO, "worker %u (%s): lease of chunk %" PRIu32 " expired with no PROGRESS for %.1f s: "
                     "aborting the run", p->id, p->name, p->lease.chunk, LEASE_TTL_TIMEOUTS * c->timeout_s);
                return;
            }
        }
    }
    for (int i = 0; i < c->norphans && !c->failed; i++) { /* the previous workers' leases */
        lease_t *l = &c->orphans[i];
        if (!l->active) continue;
        if (c->nodes_down > 0) l->expires = now + LEASE_TTL_TIMEOUTS * c->timeout_s;
        else if (now > l->expires && c->phase == P_TRAIN) {
            end_orphan(c, l, l->trained, 0);
            check_epoch_done(c);
        }
    }
    if (c->ckpt_dirty) save_state(c, 0);
    const double since = now - c->phase_since;
    switch (c->phase) {
    case P_NODES:
        if (since > c->timeout_s)
            fail(c, AUXPS_EIO, "%d of %d nodes registered within %.1f s: aborting", c->nnodes, c->opt.nodes,
                 c->timeout_s);
        break;
    case P_NODES_READY: /* nodes heartbeat while they load the data: this bounds a stuck one */
        if (since > LEASE_TTL_TIMEOUTS * c->timeout_s)
            fail(c, AUXPS_EIO, "%d of %d nodes ready within %.1f s of WELCOME: aborting", c->nready, c->opt.nodes,
                 LEASE_TTL_TIMEOUTS * c->timeout_s);
        break;
    case P_TRAIN:
    case P_EVAL:
        if (c->elastic) { /* waiting for workers or a node is a state, not a failure */
            if (c->nodes_down > 0 || c->live == 0) {
                c->last_progress = now;
                break;
            }
            for (int i = 0; i < c->nevr && c->phase == P_EVAL; i++) {
                evr_t *r = &c->evr[i];
                if (r->done || r->worker < 0 || now <= r->deadline) continue;
                logf_(c, "worker %d did not answer evaluation range %" PRIu32 " within %.1f s: asking another",
                      r->worker, r->id, LEASE_TTL_TIMEOUTS * c->timeout_s);
                c->workers[r->worker].evals--;
                r->worker = -1;
                c->last_progress = now; /* the range starts again with another worker */
                assign_evals(c);
            }
            if (now - c->last_progress > LEASE_TTL_TIMEOUTS * c->timeout_s)
                fail(c, AUXPS_EIO, "no lease, PROGRESS, CHUNK_DONE or EVAL_REP for %.1f s although %d workers are "
                     "alive: the run is stuck, aborting", now - c->last_progress, c->live);
            break;
        }
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
    /* Peers use their own keys (auxps ps/worker --security): the paths stay here. */
    auxps_config_t sent = c->cfg;
    memset(&sent.security, 0, sizeof sent.security);
    int rc = config_write(&sent, f);
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
    c->elastic = cf->cluster.consistency == CONS_ASYNC;
    c->workers = calloc(c->elastic ? WIRE_MAX_WORKERS : (size_t)opt->workers, sizeof *c->workers);
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
    /* The ZAP handler must be up before the bind: a CURVE server without one admits any key. */
    if (opt->curve != NULL && (c->zap = curve_zap_start(opt->curve, c->ctx, "coord", NULL, err)) == NULL) goto fail;
    c->router = zmq_socket(c->ctx, ZMQ_ROUTER);
    const int one = 1, linger = 1000, sndtimeo = cf->cluster.timeout_ms;
    if (c->router == NULL || wire_socket_limits(c->router) != 0 ||
        zmq_setsockopt(c->router, ZMQ_ROUTER_MANDATORY, &one, sizeof one) != 0 ||
        zmq_setsockopt(c->router, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
        zmq_setsockopt(c->router, ZMQ_SNDTIMEO, &sndtimeo, sizeof sndtimeo) != 0) {
        auxps_error_set(err, AUXPS_EIO, "cannot create the ROUTER socket: %s", zmq_strerror(zmq_errno()));
        goto fail;
    }
    if (curve_serve(opt->curve, c->router, err) != 0) goto fail;
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
    curve_zap_stop(&c->zap);
    if (c->ctx != NULL) zmq_ctx_term(c->ctx);
    dataset_free(&c->test);
    model_destroy(&c->model);
    free(c->params);
    free(c->stats);
    free(c->nodes);
    free(c->workers);
    free(c->pulls);
    free(c->queue);
    free(c->orphans);
    httpd_destroy(&c->httpd);
    free(c->snap);
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
    char cons[32], workers[48];
    if (c->elastic) snprintf(workers, sizeof workers, "workers joining and leaving at any time");
    else snprintf(workers, sizeof workers, "%d workers", c->opt.workers);
    if (cf->cluster.consistency == CONS_SSP) snprintf(cons, sizeof cons, "ssp (staleness %d)", cf->cluster.staleness);
    else snprintf(cons, sizeof cons, "%s", cons_name(cf->cluster.consistency));
    outf(c, "auxps: %s, %s W%dA%d%s, %zu parameters (%zu at inference), %d train / %d test images, batch %d, "
            "%d epochs, %ld steps, %d nodes, %s, %s, chunks of %d batches\n",
         cf->path[0] ? cf->path : "(defaults)", sp->arch == ARCH_RESNET ? "resnet" : "mlp", sp->wbits, sp->abits,
         sp->aux ? " + auxiliary module" : "", c->nparams, model_num_inference_params(c->model), c->ntrain, c->test.n,
         cf->train.batch_size, cf->train.epochs, c->total_steps, c->opt.nodes, workers, cons,
         cf->cluster.chunk_batches);
    logf_(c, "listening on %s for %d nodes and %d workers", c->endpoint, c->opt.nodes, c->opt.workers);
    c->phase = P_NODES;
    c->phase_since = clock_now_s();
    c->persist = c->elastic && cf->checkpoint.dir[0] != '\0';
    if (c->persist && restore_state(c, err) != 0) return err->code;
    if (c->resumed && c->epoch >= cf->train.epochs) c->resume_finish = 1;
    const double t0 = clock_now_s();
    c->started_unix = clock_unix_s();
    c->last_loss_low = c->last_loss_aux = c->last_acc = NAN;
    start_status(c);

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
    if (!c->failed && !c->stopping) save_state(c, 1); /* a finished run is not resumed; an interrupted one can be */
    res->epochs_done = c->epochs_done;
    res->steps = c->step;
    res->test_correct = c->test_correct;
    res->test_total = c->test_total;
    res->bad_messages = c->bad_messages;
    res->interrupted = c->stopping > 0;
    publish_status(c, !c->failed);
    if (c->failed) {
        abort_all(c);
        print_counters(c);
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
    print_counters(c);
    return 0;
}

/* ---- the command ------------------------------------------------------------------------- */

static void on_signal(int sig) {
    (void)sig;
    g_coord_stop = 1;
}

static int parse_count(const char *opt, const char *s, long hi, int *out) {
    if (config_parse_int(s, 1, hi, out) == 0) return 0;
    fprintf(stderr, "auxps coord: %s '%s': expected an integer in 1..%ld\n", opt, s, hi);
    return -1;
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
    coord_options_t opt = {0, 1, NULL, NULL, NULL};
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
    curve_t *cv = NULL;
    if (curve_load(&cfg, CURVE_ROLE_SERVER, &cv, &err) != 0) {
        fprintf(stderr, "auxps coord: %s\n", err.msg);
        return 1;
    }
    opt.curve = cv;
    peer_catch_signals(on_signal);
    int threads = cfg.train.threads > 0 ? cfg.train.threads : 1; /* the file check only */
    openblas_set_num_threads(threads);

    coord_t *c = coord_new(&cfg, &opt, &err);
    if (c == NULL) {
        fprintf(stderr, "auxps coord: %s\n", err.msg);
        curve_destroy(&cv);
        return 1;
    }
    coord_result_t res;
    int rc = coord_run(c, stdout, &g_coord_stop, &res, &err);
    coord_destroy(&c);
    curve_destroy(&cv); /* after the coordinator: its ZAP handler reads the keys */
    if (rc != 0) {
        fprintf(stderr, "auxps coord: %s\n", err.msg);
        return 1;
    }
    return res.interrupted ? 130 : 0;
}
