/* node.c - the parameter-server node: registration with the coordinator, the shard and its
 * optimizer state, and the serving loop (node.h has the rules, docs/CLUSTER.md the why). */
#include "node.h"

#include "ckpt.h"
#include "clock.h"
#include "coded.h"
#include "config.h"
#include "curve.h"
#include "data.h"
#include "hot.h"
#include "model.h"
#include "optim.h"
#include "peer.h"
#include "quant.h"
#include "wire.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#define NODE_BAD_TABLE 64        /* senders whose refusals are remembered */
#define NODE_DATA_BURST 256      /* data messages handled before the coordinator is looked at */
#define NODE_HWM 64              /* queued messages per peer on the data socket */

/* One vector's shard at one generation, shared by the PULL_REPs that send it without a copy:
 * the stats snapshot of a generation, or the params themselves (pcur), which the node updates
 * in place only while no reply holds them. The last reference, the node's or that of ZeroMQ's
 * free callback on an I/O thread, frees it. */
typedef struct {
    atomic_int refs;
    uint64_t gen;
    float data[];
} snap_t;

/* One tensor of the shard, relative to its start. */
typedef struct {
    uint64_t off, len;
    int quantized;
} ntensor_t;

/* What the node knows of one worker id. */
typedef struct {
    unsigned char route[WIRE_MAX_ROUTE]; /* the routing id bound to this worker id */
    size_t route_size;                   /* 0: not heard from yet */
    uint64_t clock;                      /* this worker's batches applied here */
    int in_sum;                          /* bsp: its push of the current clock is summed */
    float *stats;                        /* average mode: its latest stats slice (slen) */
    uint32_t stats_samples;              /* their weight; 0 = none */
    int waiting;                         /* a params PULL waits for the ssp/bsp gate */
    wire_pull_t pull;                    /* that PULL and its rid */
    uint32_t pull_rid;
    int64_t next_hb;                     /* when the waiting worker gets its next HEARTBEAT */
    int member;                          /* async: MEMBERSHIP said it joined (and not left) */
} wslot_t;

typedef struct {
    unsigned char route[WIRE_MAX_ROUTE];
    size_t size;                         /* 0: free entry */
    uint32_t bad;
} badpeer_t;

struct node {
    void *ctx, *coord, *data;
    curve_zap_t *zap;                    /* CURVE: the ZAP handler of ctx; NULL = plain */
    const curve_t *curve;                /* its keys (borrowed: they outlive the node); NULL = plain */
    char endpoint[WIRE_MAX_ENDPOINT + 1];
    char coord_ep[WIRE_MAX_ENDPOINT + 1];
    FILE *log;
    int ran;

    /* The run, from WELCOME. */
    int welcomed;
    uint32_t consistency, staleness, num_workers, heartbeat_ms, timeout_ms;
    auxps_config_t cfg;
    uint64_t off, len, soff, slen;       /* the shard: params [off, off+len), stats [soff, soff+slen) */

    /* The shard's state. The params live in pcur, which the PULL_REPs send without a copy;
     * pspare is the buffer the next update writes while ZeroMQ still reads pcur (reply_pull
     * keeps one whenever it shares pcur). */
    snap_t *pcur, *pspare;               /* data: (len) */
    float *momentum;                     /* (len) */
    float *stats;                        /* (slen) the values served */
    float *grad;                         /* (len) scratch: a decoded gradient */
    float *sbuf;                         /* (slen) scratch: decoded statistics */
    double *sum;                         /* (len) bsp: sum of samples * gradient of this clock */
    uint32_t sum_count;                  /* pushes in the sum */
    uint64_t sum_samples, sum_clock, sum_stale;
    optim_t optim;
    long step;                           /* schedule step: batches applied */
    uint64_t version;                    /* optimizer steps applied */
    uint64_t stats_gen;                  /* changes with every stats push */
    int stats_dirty;                     /* the average must be recomputed */
    snap_t *ssnap;                       /* the latest stats snapshot, or NULL */

    /* k-bit pulls (cluster.pull = kbit; CLUSTER.md "Bytes per step"): the shard's tensors, the
     * packed codes of the params at ksnap->gen, and their segment table. */
    int kbit, wbits;
    ntensor_t *tens;                     /* (ntens), in order, tiling [0, len) */
    uint32_t ntens;
    uint8_t *codes;                      /* (len) scratch: the integer codes */
    float *qbuf;                         /* (largest quantized tensor) scratch */
    float *tw;                           /* (len) tanh of the quantized tensors' weights ... */
    uint64_t tw_version;                 /* ... at this version; UINT64_MAX: none yet */
    wire_seg_t *ksegs;                   /* (ntens) the segments of ksnap */
    uint32_t nksegs;
    snap_t *ksnap;                       /* packed bytes, or NULL */

    wslot_t *workers;                    /* (WIRE_MAX_WORKERS) */
    uint16_t *seen;                      /* ids heard from, in order of first message */
    uint32_t nseen;
    badpeer_t bad[NODE_BAD_TABLE];

    /* Checkpoints (docs/CHECKPOINT.md): the version and time of the last one written or loaded. */
    uint64_t ckpt_version;
    int64_t ckpt_ms;
    char ckpt_prefix[32];
    uint64_t ckpt_failures;

    uint32_t coord_rid, data_rid;        /* per-socket counters for one-way messages */
    int64_t coord_sent, coord_heard;     /* ms, CLOCK_MONOTONIC */
    int coord_lost;                      /* registering again with a restarted coordinator */
    int64_t lost_since, hello_sent;
    node_counters_t cnt;
};

static void say(node_t *n, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(node_t *n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    peer_vsay(n->log, "node", n->welcomed, n->cnt.id, fmt, ap);
    va_end(ap);
}

/* ---- snapshots ------------------------------------------------------------------------- */

static snap_t *snap_alloc(size_t len, uint64_t gen) {
    snap_t *s = malloc(sizeof *s + len * sizeof(float));
    if (s == NULL) return NULL;
    atomic_init(&s->refs, 1);
    s->gen = gen;
    return s;
}

static snap_t *snap_new(const float *src, size_t len, uint64_t gen) {
    snap_t *s = snap_alloc(len, gen);
    if (s != NULL) memcpy(s->data, src, len * sizeof(float));
    return s;
}

static void snap_unref(snap_t *s) {
    if (s != NULL && atomic_fetch_sub(&s->refs, 1) == 1) free(s);
}

/* wire_free_fn of a PULL_REP payload: data points into the snapshot given as hint. */
static void snap_release(void *data, void *hint) {
    (void)data;
    snap_unref(hint);
}

/* tanh of the quantized tensors' latent weights at the current version (weight_bits >= 2),
 * computed once per version for the pulls' codes and the pushes' quantizer backward. */
static const float *shard_tanh(node_t *n) {
    if (n->tw_version != n->version) {
        for (uint32_t i = 0; i < n->ntens; i++)
            if (n->tens[i].quantized)
                quant_weight_tanh(n->tw + n->tens[i].off, n->pcur->data + n->tens[i].off, n->tens[i].len);
        n->tw_version = n->version;
    }
    return n->tw;
}

/* The k-bit snapshot of the params at the current version, in the segments of
 * coded_kbit_layout: each quantized tensor is one segment of DoReFa codes (lo = -1, step =
 * 2 / (2^k - 1); 1 bit: lo = -mean|w|, step = 2 mean|w| of this version, MODEL.md), and the runs
 * of full-precision tensors between them are float32 segments. NULL when out of memory. */
static snap_t *kbit_snapshot(node_t *n, size_t *bytes) {
    const int k = n->wbits;
    if (n->ksnap == NULL || n->ksnap->gen != n->version) {
        snap_unref(n->ksnap);
        n->ksnap = NULL;
        /* n->ksegs (coded_kbit_layout) has one segment per quantized tensor, in order */
        uint32_t si = 0;
        for (uint32_t i = 0; i < n->ntens; i++) {
            const ntensor_t *t = &n->tens[i];
            if (!t->quantized) continue;
            while (n->ksegs[si].bits == 32) si++;
            const float *w = n->pcur->data + t->off;
            if (k == 1) {
                quant_weight_forward(n->qbuf, n->codes + t->off, w, t->len, k);
                const float e = quant_weight_mean(w, t->len);
                n->ksegs[si].lo = -e;
                n->ksegs[si].step = 2.0f * e;
            } else {
                quant_weight_forward_tanh(NULL, n->codes + t->off, shard_tanh(n) + t->off, t->len, k);
            }
            si++;
        }
        const uint32_t ns = n->nksegs;
        const size_t size = wire_segs_bytes(n->ksegs, ns);
        snap_t *s = malloc(sizeof *s + size + sizeof(float));
        if (s == NULL) return NULL;
        atomic_init(&s->refs, 1);
        s->gen = n->version;
        auxps_error_t e = {0};
        if (wire_pack_codes(n->ksegs, ns, n->codes, n->pcur->data, s->data, size, &e) != 0) {
            say(n, "internal: k-bit snapshot: %s", e.msg);
            free(s);
            return NULL;
        }
        n->ksnap = s;
    }
    *bytes = wire_segs_bytes(n->ksegs, n->nksegs);
    return n->ksnap;
}

/* ---- sockets --------------------------------------------------------------------------- */

node_t *node_new(const char *coordinator, const char *bind, auxps_error_t *err) {
    return node_new_curve(coordinator, bind, NULL, err);
}

node_t *node_new_curve(const char *coordinator, const char *bind, const curve_t *cv, auxps_error_t *err) {
    if (bind == NULL) bind = NODE_DEFAULT_BIND;
    if (coordinator == NULL || coordinator[0] == '\0' || strlen(coordinator) > WIRE_MAX_ENDPOINT ||
        strlen(bind) > WIRE_MAX_ENDPOINT) {
        auxps_error_set(err, AUXPS_EINVAL, "node: the coordinator endpoint must be given and both "
                        "endpoints be at most %u bytes", WIRE_MAX_ENDPOINT);
        return NULL;
    }
    node_t *n = calloc(1, sizeof *n);
    if (n == NULL) {
        auxps_error_set(err, AUXPS_ENOMEM, "node: out of memory");
        return NULL;
    }
    n->cnt.id = UINT32_MAX;
    n->curve = cv;
    snprintf(n->coord_ep, sizeof n->coord_ep, "%s", coordinator);
    n->ctx = zmq_ctx_new();
    if (n->ctx == NULL) {
        peer_zfail("node: zmq_ctx_new", err);
        goto fail;
    }
    /* The ZAP handler must be up before the bind: a CURVE server without one admits any key. */
    if (cv != NULL && (n->zap = curve_zap_start(cv, n->ctx, "node", NULL, err)) == NULL) goto fail;
    n->data = zmq_socket(n->ctx, ZMQ_ROUTER);
    if (n->data == NULL) {
        peer_zfail("node: zmq_socket", err);
        goto fail;
    }
    /* Replies still queued when DONE comes are not worth waiting for (the BYE to the
     * coordinator is: peer_coord_socket). */
    if (peer_sockopt(n->data, ZMQ_LINGER, 200) || peer_sockopt(n->data, ZMQ_SNDHWM, NODE_HWM) ||
        peer_sockopt(n->data, ZMQ_RCVHWM, NODE_HWM) || wire_socket_limits(n->data) != 0) {
        peer_zfail("node: zmq_setsockopt", err);
        goto fail;
    }
    if (curve_serve(cv, n->data, err) != 0) goto fail;
    if (zmq_bind(n->data, bind) != 0) {
        auxps_error_set(err, AUXPS_EIO, "node: cannot bind %s: %s", bind, zmq_strerror(zmq_errno()));
        goto fail;
    }
    size_t len = sizeof n->endpoint;
    if (zmq_getsockopt(n->data, ZMQ_LAST_ENDPOINT, n->endpoint, &len) != 0) {
        peer_zfail("node: ZMQ_LAST_ENDPOINT", err);
        goto fail;
    }
    n->endpoint[sizeof n->endpoint - 1] = '\0';
    if ((n->coord = peer_coord_socket(n->ctx, coordinator, cv, "node", err)) == NULL) goto fail;
    return n;
fail:
    node_destroy(&n);
    return NULL;
}

static void free_run(node_t *n) {
    snap_unref(n->pcur);
    snap_unref(n->pspare);
    free(n->momentum);
    free(n->stats);
    free(n->grad);
    free(n->sbuf);
    free(n->sum);
    if (n->workers != NULL)
        for (uint32_t i = 0; i < WIRE_MAX_WORKERS; i++) free(n->workers[i].stats);
    free(n->workers);
    free(n->seen);
    snap_unref(n->ssnap);
    snap_unref(n->ksnap);
    free(n->tens);
    free(n->codes);
    free(n->qbuf);
    free(n->tw);
    free(n->ksegs);
    n->tens = NULL, n->codes = NULL, n->qbuf = NULL, n->tw = NULL, n->ksegs = NULL, n->ksnap = NULL;
    n->ntens = 0;
    n->momentum = n->stats = n->grad = n->sbuf = NULL;
    n->sum = NULL;
    n->workers = NULL;
    n->seen = NULL;
    n->pcur = n->pspare = n->ssnap = NULL;
}

void node_destroy(node_t **np) {
    if (np == NULL || *np == NULL) return;
    node_t *n = *np;
    if (n->data != NULL) zmq_close(n->data);
    if (n->coord != NULL) zmq_close(n->coord);
    curve_zap_stop(&n->zap);
    if (n->ctx != NULL) zmq_ctx_term(n->ctx); /* every zero-copy payload is released by now */
    free_run(n);
    free(n);
    *np = NULL;
}

const char *node_endpoint(const node_t *n) { return n->endpoint; }

int node_advertise(node_t *n, const char *endpoint, auxps_error_t *err) {
    if (n == NULL || endpoint == NULL || endpoint[0] == '\0' || strlen(endpoint) > WIRE_MAX_ENDPOINT ||
        (strncmp(endpoint, "tcp://", 6) != 0 && strncmp(endpoint, "ipc://", 6) != 0 &&
         strncmp(endpoint, "inproc://", 9) != 0))
        return auxps_error_set(err, AUXPS_EINVAL, "node: --advertise '%s': expected a tcp://, ipc:// or inproc:// "
                               "endpoint of at most %u bytes", endpoint ? endpoint : "", WIRE_MAX_ENDPOINT);
    for (const char *p = endpoint; *p; p++)
        if (*p <= ' ' || *p > '~')
            return auxps_error_set(err, AUXPS_EINVAL, "node: --advertise: the endpoint has a space or a "
                                   "non-printable byte");
    snprintf(n->endpoint, sizeof n->endpoint, "%s", endpoint);
    return 0;
}

void node_get_counters(const node_t *n, node_counters_t *c) {
    *c = n->cnt;
    c->auth_refused = curve_zap_refused(n->zap);
}

/* ---- sending --------------------------------------------------------------------------- */

static int send_coord(node_t *n, wire_msg_t *m, auxps_error_t *err) {
    int rc = wire_send(n->coord, NULL, 0, m, NULL, NULL, 0, err);
    if (rc == 0) n->coord_sent = clock_now_ms();
    return rc;
}

static int send_oneway(node_t *n, wire_msg_t *m, auxps_error_t *err) {
    m->rid = n->coord_rid++;
    return send_coord(n, m, err);
}

static int send_bye(node_t *n, uint32_t reason) {
    wire_msg_t m;
    memset(&m, 0, sizeof m);
    m.type = WIRE_BYE;
    m.bye = (wire_bye_t){WIRE_ROLE_NODE, n->welcomed ? n->cnt.id : 0, reason};
    auxps_error_t e = {0};
    return send_oneway(n, &m, &e);
}

static badpeer_t *badpeer(node_t *n, const unsigned char *route, size_t size, int add) {
    badpeer_t *least = &n->bad[0];
    for (int i = 0; i < NODE_BAD_TABLE; i++) {
        badpeer_t *b = &n->bad[i];
        if (b->size == size && memcmp(b->route, route, size) == 0) return b;
        if (b->bad < least->bad) least = b;
    }
    if (!add) return NULL;
    memcpy(least->route, route, size);
    least->size = size;
    least->bad = 0;
    return least;
}

static int ignored(node_t *n, const wire_in_t *in) {
    if (in->route_size == 0) return 0;
    const badpeer_t *b = badpeer(n, in->route, in->route_size, 0);
    return b != NULL && b->bad >= NODE_MAX_BAD;
}

/* Answers a refused message with ERROR (unless it was an ERROR itself), counts it in total and
 * as kind (WIRE_REJECT_*, or -1: the node's own failure, no kind) and against its sender, and
 * logs it while the sender is not yet ignored. in NULL: the coordinator. */
static void vrefuse(node_t *n, const wire_in_t *in, uint32_t type, uint32_t rid, uint32_t code, int kind,
                    const char *fmt, va_list ap) {
    char text[WIRE_MAX_TEXT + 1];
    vsnprintf(text, sizeof text, fmt, ap);
    n->cnt.refused++;
    if (kind >= 0 && kind < WIRE_REJECT_COUNT) n->cnt.rejected[kind]++;
    uint32_t bad = 0;
    if (in != NULL && in->route_size > 0) {
        badpeer_t *b = badpeer(n, in->route, in->route_size, 1);
        bad = ++b->bad;
    }
    if (bad <= NODE_MAX_BAD)
        say(n, "refused %s from %s: %s %s%s", type ? wire_type_name(type) : "a message",
            in != NULL ? "a worker" : "the coordinator", wire_err_name(code), text,
            bad == NODE_MAX_BAD ? " (16th bad message: ignoring this sender from now on)" : "");
    if (type == WIRE_ERROR) return; /* never an ERROR in answer to an ERROR */
    auxps_error_t e = {0};
    if (in != NULL) wire_send_error(n->data, in->route, in->route_size, rid, code, text, &e);
    else if (wire_send_error(n->coord, NULL, 0, rid, code, text, &e) == 0) n->coord_sent = clock_now_ms();
}

/* A refusal the node decided: its kind follows from the ERROR code. */
static void refuse(node_t *n, const wire_in_t *in, uint32_t type, uint32_t rid, uint32_t code,
                   const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static void refuse(node_t *n, const wire_in_t *in, uint32_t type, uint32_t rid, uint32_t code,
                   const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vrefuse(n, in, type, rid, code, code == WIRE_ERR_INTERNAL ? -1 : (int)wire_reject_of_code(code), fmt, ap);
    va_end(ap);
}

static void refuse_kind(node_t *n, const wire_in_t *in, uint32_t type, uint32_t rid, uint32_t code, int kind,
                        const char *fmt, ...) __attribute__((format(printf, 7, 8)));
static void refuse_kind(node_t *n, const wire_in_t *in, uint32_t type, uint32_t rid, uint32_t code, int kind,
                        const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vrefuse(n, in, type, rid, code, kind, fmt, ap);
    va_end(ap);
}

/* A message that failed wire_recv (m NULL) or wire_decode with rc: its kind is the wire's. */
static void refuse_bad(node_t *n, const wire_in_t *in, const wire_msg_t *m, int rc, const char *why) {
    refuse_kind(n, in, m ? m->type : 0, m ? m->rid : 0, wire_error_code(rc), (int)wire_reject_kind(rc, m),
                "%s", why);
}

/* ---- the shard ------------------------------------------------------------------------- */

/* The smallest clock among the run's workers, ids 0..num_workers-1 (the coordinator numbers
 * them so); one not heard from yet is at clock 0. */
static uint64_t min_clock(const node_t *n) {
    uint64_t m = UINT64_MAX;
    for (uint32_t i = 0; i < n->num_workers; i++)
        if (n->workers[i].clock < m) m = n->workers[i].clock;
    return m;
}

static int gate_open(const node_t *n, uint64_t clock) {
    if (n->consistency == WIRE_CONS_ASYNC) return 1;
    uint64_t m = min_clock(n);
    return clock <= m || clock - m <= n->staleness;
}

/* The slot of worker id for a message that came on route, binding the id to the route on its
 * first message; NULL (and ERROR NOT_REGISTERED sent) if another route holds the id. */
static wslot_t *worker_slot(node_t *n, uint32_t id, const wire_in_t *in, uint32_t type, uint32_t rid) {
    if (n->consistency == WIRE_CONS_ASYNC && id < n->num_workers && !n->workers[id].member) {
        /* async membership is elastic: only the ids the coordinator announced are workers */
        refuse(n, in, type, rid, WIRE_ERR_NOT_REGISTERED, "worker id %" PRIu32 " is not a member of the "
               "run (yet)", id);
        return NULL;
    }
    if (id >= n->num_workers) {
        /* the coordinator numbers the workers 0..num_workers-1 (CLUSTER.md "Ids"); the gates
         * count those, and another id is no registered worker */
        refuse(n, in, type, rid, WIRE_ERR_OUT_OF_RANGE, "worker id %" PRIu32 " is not one of the "
               "run's %" PRIu32 " workers", id, n->num_workers);
        return NULL;
    }
    wslot_t *w = &n->workers[id];
    if (w->route_size == 0) {
        memcpy(w->route, in->route, in->route_size);
        w->route_size = in->route_size;
        n->seen[n->nseen++] = (uint16_t)id;
        return w;
    }
    if (w->route_size != in->route_size || memcmp(w->route, in->route, in->route_size) != 0) {
        refuse(n, in, type, rid, WIRE_ERR_NOT_REGISTERED, "worker id %" PRIu32 " belongs to "
               "another connection", id);
        return NULL;
    }
    return w;
}

static void recompute_stats(node_t *n) {
    n->stats_dirty = 0;
    uint64_t total = 0;
    for (uint32_t i = 0; i < n->nseen; i++) total += n->workers[n->seen[i]].stats_samples;
    if (total == 0) return;
    /* In double, so that one worker's slice comes back bit for bit: samples * x is exact and
     * so is its division by samples. */
    for (uint64_t j = 0; j < n->slen; j++) {
        double acc = 0.0;
        for (uint32_t i = 0; i < n->nseen; i++) {
            const wslot_t *w = &n->workers[n->seen[i]];
            if (w->stats_samples) acc += (double)w->stats_samples * w->stats[j];
        }
        n->stats[j] = (float)(acc / (double)total);
    }
}

static void send_pull_rep(node_t *n, const unsigned char *route, size_t route_size, wire_msg_t *m, snap_t *s) {
    atomic_fetch_add(&s->refs, 1); /* ZeroMQ's reference, dropped by snap_release */
    auxps_error_t e = {0};
    if (wire_send(n->data, route, route_size, m, snap_release, s, ZMQ_DONTWAIT, &e) != 0)
        say(n, "PULL_REP not sent: %s", e.msg);
    else n->cnt.pulls++, n->cnt.bytes_out += m->payload_size;
}

static void refuse_route(node_t *n, const unsigned char *route, size_t route_size, uint32_t rid,
                         const char *why) {
    wire_in_t in = {.route_size = route_size};
    memcpy(in.route, route, route_size);
    refuse(n, &in, WIRE_PULL, rid, WIRE_ERR_INTERNAL, "%s", why);
}

/* PULL_REP of the whole params shard in k-bit codes. */
static void reply_pull_kbit(node_t *n, const unsigned char *route, size_t route_size, uint32_t rid,
                            const wire_pull_t *p) {
    size_t bytes;
    snap_t *s = kbit_snapshot(n, &bytes);
    if (s == NULL) {
        refuse_route(n, route, route_size, rid, "out of memory for a k-bit snapshot");
        return;
    }
    wire_msg_t m;
    memset(&m, 0, sizeof m);
    m.type = WIRE_PULL_REP;
    m.rid = rid;
    m.pull_rep = (wire_pull_rep_t){n->cnt.id, p->vec, p->offset, p->length, n->version, min_clock(n),
                                   WIRE_ENC_KBIT, n->ksegs, n->nksegs};
    m.payload = s->data;
    m.payload_size = bytes;
    send_pull_rep(n, route, route_size, &m, s);
}

/* Sends PULL_REP for p (checked) from the current snapshot, which is made if it is stale; a
 * kbit request in a kbit run for the whole params shard is answered in codes, any other
 * request in f32 (PROTOCOL.md: a node MAY answer f32 to a kbit request). */
static void reply_pull(node_t *n, const unsigned char *route, size_t route_size, uint32_t rid,
                       const wire_pull_t *p) {
    int params = p->vec == WIRE_VEC_PARAMS;
    if (params && p->encoding == WIRE_ENC_KBIT && n->kbit && p->offset == n->off && p->length == n->len) {
        reply_pull_kbit(n, route, route_size, rid, p);
        return;
    }
    snap_t *s;
    if (params) {
        /* pcur itself goes out; the next update then writes pspare (apply_update) */
        if (n->pspare == NULL && (n->pspare = snap_alloc(n->len, 0)) == NULL) {
            refuse_route(n, route, route_size, rid, "out of memory for a params buffer");
            return;
        }
        s = n->pcur;
    } else {
        if (n->stats_dirty) recompute_stats(n);
        if (n->ssnap == NULL || n->ssnap->gen != n->stats_gen) {
            snap_unref(n->ssnap);
            if ((n->ssnap = snap_new(n->stats, n->slen, n->stats_gen)) == NULL) {
                refuse_route(n, route, route_size, rid, "out of memory for a snapshot");
                return;
            }
        }
        s = n->ssnap;
    }
    wire_msg_t m;
    memset(&m, 0, sizeof m);
    m.type = WIRE_PULL_REP;
    m.rid = rid;
    m.pull_rep = (wire_pull_rep_t){n->cnt.id, p->vec, p->offset, p->length, n->version,
                                   min_clock(n), WIRE_ENC_F32, NULL, 0};
    m.payload = s->data + (p->offset - (params ? n->off : n->soff));
    m.payload_size = p->length * sizeof(float);
    send_pull_rep(n, route, route_size, &m, s);
}

/* Answers the waiting PULLs that the gate lets through now. */
static void release_waiting(node_t *n) {
    for (uint32_t i = 0; i < n->nseen; i++) {
        wslot_t *w = &n->workers[n->seen[i]];
        if (w->waiting && gate_open(n, w->pull.clock)) {
            w->waiting = 0;
            reply_pull(n, w->route, w->route_size, w->pull_rid, &w->pull);
        }
    }
}

/* PUSH_ACK of rid, saying that the shard is at version (PROTOCOL.md: the version after the
 * push was applied). */
static void ack_at(node_t *n, const wire_in_t *in, uint32_t rid, uint32_t vec, uint64_t version) {
    wire_msg_t m;
    memset(&m, 0, sizeof m);
    m.type = WIRE_PUSH_ACK;
    m.rid = rid;
    m.push_ack = (wire_push_ack_t){n->cnt.id, vec, version, min_clock(n)};
    auxps_error_t e = {0};
    if (wire_send(n->data, in->route, in->route_size, &m, NULL, NULL, ZMQ_DONTWAIT, &e) != 0)
        say(n, "PUSH_ACK not sent: %s", e.msg);
}

static void ack(node_t *n, const wire_in_t *in, uint32_t rid, uint32_t vec) { ack_at(n, in, rid, vec, n->version); }

/* One SGD step of the shard with gradient g, standing for `batches` pushed batches. */
static void apply_update(node_t *n, const float *g, uint64_t staleness, uint32_t batches) {
    float lr = optim_lr(&n->optim, n->step);
    if (n->cfg.cluster.staleness_lr && staleness > 1) lr /= (float)staleness;
    snap_t *old = n->pcur;
    if (atomic_load(&old->refs) > 1) {
        /* A PULL_REP that ZeroMQ has not sent reads old: the update goes to the spare, and old
         * is freed by the last of its readers. A count that drops meanwhile only costs this. */
        n->pcur = n->pspare;
        n->pspare = NULL;
        optim_sgd_to(&n->optim, lr, n->pcur->data, old->data, g, n->momentum, n->len);
        snap_unref(old);
        n->cnt.fresh_buffers++;
    } else {
        optim_sgd(&n->optim, lr, old->data, g, n->momentum, n->len);
    }
    n->step += batches;
    n->version++;
    n->cnt.version = n->version;
    n->cnt.pushes += batches;
}

/* bsp: applies the sample-weighted mean of the summed pushes as one step. */
static void apply_sum(node_t *n) {
    for (uint64_t i = 0; i < n->len; i++) {
        n->grad[i] = (float)(n->sum[i] / (double)n->sum_samples);
        n->sum[i] = 0.0;
    }
    apply_update(n, n->grad, n->sum_stale, n->sum_count);
    for (uint32_t i = 0; i < n->nseen; i++) {
        wslot_t *w = &n->workers[n->seen[i]];
        if (w->in_sum) {
            w->in_sum = 0;
            w->clock = n->sum_clock + 1;
        }
    }
    n->sum_count = 0;
    n->sum_samples = n->sum_stale = 0;
}

/* MEMBERSHIP left (and before a joined: the id may have served a worker before): the id is
 * free for a new worker. Its statistics leave the average; if they were the only ones, the
 * values served stay as they are (recompute_stats keeps them when no worker has any), since
 * they are the best estimate there is. */
static void forget_worker(node_t *n, uint32_t id) {
    wslot_t *w = &n->workers[id];
    w->member = 0;
    if (w->route_size == 0) return;
    for (uint32_t i = 0; i < n->nseen; i++)
        if (n->seen[i] == id) {
            memmove(n->seen + i, n->seen + i + 1, (n->nseen - i - 1) * sizeof *n->seen);
            n->nseen--;
            break;
        }
    float *stats = w->stats;
    memset(w, 0, sizeof *w);
    w->stats = stats; /* the buffer is reused by the next worker with this id */
    n->stats_dirty = 1;
    n->cnt.left++;
}

/* ---- checkpoints (docs/CHECKPOINT.md "Node payload") ------------------------------------ */

#define NODE_CKPT_FIXED 72 /* bytes before the floats */

/* Writes the shard, its momentum, its statistics and its counters. A failure is logged and
 * costs nothing but the checkpoint: the node keeps serving. */
static void write_checkpoint(node_t *n) {
    const size_t size = NODE_CKPT_FIXED + (2 * n->len + n->slen) * sizeof(float);
    unsigned char *b = malloc(size);
    n->ckpt_ms = clock_now_ms();
    if (b == NULL) {
        say(n, "checkpoint skipped: out of memory for %zu bytes", size);
        return;
    }
    const uint64_t fixed[9] = {n->cnt.id, n->off, n->len, n->soff, n->slen, n->version, (uint64_t)n->step,
                               n->cnt.pushes, n->cnt.stats_pushes};
    for (int i = 0; i < 9; i++) ckpt_put_u64(b + 8 * i, fixed[i]);
    unsigned char *p = b + NODE_CKPT_FIXED; /* little-endian host (wire.c) */
    memcpy(p, n->pcur->data, n->len * sizeof(float));
    memcpy(p + n->len * sizeof(float), n->momentum, n->len * sizeof(float));
    memcpy(p + 2 * n->len * sizeof(float), n->stats, n->slen * sizeof(float));
    auxps_error_t e = {0};
    if (ckpt_write(n->cfg.checkpoint.dir, n->ckpt_prefix, CKPT_KIND_NODE, n->version, b, size,
                   n->cfg.checkpoint.keep, &e) != 0) {
        /* Tried again after the next interval, not at every update; logged the first time and
         * every 100th, so that a full disk does not flood the log. */
        n->ckpt_version = n->version;
        if (n->ckpt_failures++ % 100 == 0)
            say(n, "checkpoint at version %" PRIu64 " failed (%" PRIu64 " failures so far; serving goes on): %s",
                n->version, n->ckpt_failures, e.msg);
    } else {
        n->ckpt_version = n->version;
        n->cnt.checkpoints++;
        n->cnt.checkpoint_version = n->version;
        n->cnt.checkpoint_unix_ms = (uint64_t)clock_unix_ms();
    }
    free(b);
}

static void report_bad_checkpoint(void *data, const char *path, const char *reason) {
    say(data, "checkpoint %s is unusable (%s): trying the previous one", path, reason);
}

/* Loads the newest valid checkpoint of this node's shard, if checkpoints are on and there is
 * one. Returns 0 (restored or none) or AUXPS_ECONFIG/AUXPS_EIO with err set (every checkpoint
 * bad, or one that belongs to another shard or model). */
static int load_checkpoint(node_t *n, auxps_error_t *err) {
    ckpt_t ck;
    int rc = ckpt_load_newest(n->cfg.checkpoint.dir, n->ckpt_prefix, CKPT_KIND_NODE, &ck,
                              report_bad_checkpoint, n, err);
    if (rc == CKPT_NONE) {
        say(n, "no checkpoint of %s in %s: starting from the initial parameters", n->ckpt_prefix,
            n->cfg.checkpoint.dir);
        return 0;
    }
    if (rc != 0) return rc;
    const unsigned char *b = ck.payload;
    const size_t want = NODE_CKPT_FIXED + (2 * n->len + n->slen) * sizeof(float);
    if (ck.size != want || ckpt_get_u64(b) != n->cnt.id || ckpt_get_u64(b + 8) != n->off || ckpt_get_u64(b + 16) != n->len ||
        ckpt_get_u64(b + 24) != n->soff || ckpt_get_u64(b + 32) != n->slen || ckpt_get_u64(b + 40) != ck.step) {
        rc = auxps_error_set(err, AUXPS_ECONFIG, "checkpoint %s holds another shard or model than node %"
                             PRIu32 "'s params %" PRIu64 "+%" PRIu64 " stats %" PRIu64 "+%" PRIu64
                             " (move it away to start this shard afresh)", ck.path, n->cnt.id, n->off,
                             n->len, n->soff, n->slen);
        ckpt_release(&ck);
        return rc;
    }
    n->version = ckpt_get_u64(b + 40);
    n->step = (long)ckpt_get_u64(b + 48);
    n->cnt.pushes = ckpt_get_u64(b + 56);
    n->cnt.stats_pushes = ckpt_get_u64(b + 64);
    n->cnt.version = n->version;
    const unsigned char *p = b + NODE_CKPT_FIXED;
    memcpy(n->pcur->data, p, n->len * sizeof(float));
    memcpy(n->momentum, p + n->len * sizeof(float), n->len * sizeof(float));
    memcpy(n->stats, p + 2 * n->len * sizeof(float), n->slen * sizeof(float));
    n->ckpt_version = n->version;
    n->cnt.restored_version = n->version;
    n->cnt.checkpoint_version = n->version;
    n->cnt.checkpoint_unix_ms = ck.time_ms;
    say(n, "restored checkpoint %s: version %" PRIu64 ", step %ld, %" PRIu64 " pushes applied before it",
        ck.path, n->version, n->step, n->cnt.pushes);
    ckpt_release(&ck);
    return 0;
}

/* Due when every_steps updates or every_s seconds (with an update) have passed. */
static void maybe_checkpoint(node_t *n) {
    if (n->cfg.checkpoint.dir[0] == '\0' || n->version == n->ckpt_version) return;
    if (n->version - n->ckpt_version >= (uint64_t)n->cfg.checkpoint.every_steps ||
        clock_now_ms() - n->ckpt_ms >= (int64_t)n->cfg.checkpoint.every_s * 1000)
        write_checkpoint(n);
}

/* The index of the first NaN or infinity in v[0..len), or len if all are finite. The common
 * case, all finite, costs one pass that the compiler vectorises: the exponent bits of every value
 * are ORed into one flag with no branch; only a bad push is scanned again to name the value. */
HOT_WIDE static uint64_t first_non_finite(const float *v, uint64_t len) {
    uint32_t any = 0;
    for (uint64_t i = 0; i < len; i++) {
        uint32_t u;
        memcpy(&u, &v[i], sizeof u);
        any |= (uint32_t)((u & 0x7f800000u) == 0x7f800000u); /* exponent all ones: Inf or NaN */
    }
    if (!any) return len;
    for (uint64_t i = 0; i < len; i++) {
        uint32_t u;
        memcpy(&u, &v[i], sizeof u);
        if ((u & 0x7f800000u) == 0x7f800000u) return i;
    }
    return len;
}

/* 1 if every value of the coded payload of push p is finite without looking at them: a segment of
 * codes decodes to lo + step * c (wire_dequant), which is monotonic in c, so it is finite for
 * every c if it is at c = 0 and at the segment's largest code. 0 for an f32 payload or a 32-bit
 * segment, whose values must be scanned. */
static int coded_finite(const wire_push_t *p) {
    if (p->encoding == WIRE_ENC_F32) return 0;
    for (uint32_t i = 0; i < p->nsegs; i++) {
        const wire_seg_t *s = &p->segs[i];
        if (s->bits == 32) return 0;
        const float a = wire_dequant(s->lo, s->step, 0), b = wire_dequant(s->lo, s->step, (1u << s->bits) - 1);
        if (!isfinite(a) || !isfinite(b)) return 0;
    }
    return 1;
}

/* In a kbit run a push carries dL/dwq for the quantized tensors: n->grad becomes dL/dw through
 * the quantizer's backward with the shard's current latent weights (quant_weight_backward into
 * zeroed gradients, as model_backward does in one process; for k >= 2 in place, with the same
 * bits). */
static void quant_backward(node_t *n) {
    for (uint32_t i = 0; i < n->ntens; i++) {
        const ntensor_t *t = &n->tens[i];
        if (!t->quantized) continue;
        if (n->wbits >= 2) {
            quant_weight_backward_tanh(n->grad + t->off, n->grad + t->off, shard_tanh(n) + t->off, t->len, 0);
            continue;
        }
        memset(n->qbuf, 0, t->len * sizeof(float));
        quant_weight_backward(n->qbuf, n->grad + t->off, n->pcur->data + t->off, t->len, 1);
        memcpy(n->grad + t->off, n->qbuf, t->len * sizeof(float));
    }
}

static int check_shard(node_t *n, const wire_in_t *in, uint32_t type, uint32_t rid, uint32_t shard) {
    if (shard == n->cnt.id) return 0;
    refuse(n, in, type, rid, WIRE_ERR_OUT_OF_RANGE, "shard %" PRIu32 " is not node %" PRIu32 "'s",
           shard, n->cnt.id);
    return -1;
}

/* A PUSH or STATS_PUSH covers its whole vector's shard [base, base + len): 0, or -1 with ERROR
 * OUT_OF_RANGE sent. */
static int check_whole(node_t *n, const wire_in_t *in, const wire_msg_t *m, uint64_t base, uint64_t len,
                       uint64_t offset, uint64_t length) {
    if (offset == base && length == len) return 0;
    refuse(n, in, m->type, m->rid, WIRE_ERR_OUT_OF_RANGE, "a %s must cover the whole %sshard [%" PRIu64 ", %"
           PRIu64 "), not [%" PRIu64 ", %" PRIu64 ")", wire_type_name(m->type),
           m->type == WIRE_STATS_PUSH ? "stats " : "", base, base + len, offset, offset + length);
    return -1;
}

static void on_pull(node_t *n, const wire_in_t *in, const wire_msg_t *m) {
    const wire_pull_t *p = &m->pull;
    if (check_shard(n, in, m->type, m->rid, p->shard) < 0) return;
    if (p->encoding != WIRE_ENC_F32 && p->encoding != WIRE_ENC_KBIT) { /* wire_decode lets no other in */
        refuse(n, in, m->type, m->rid, WIRE_ERR_ENCODING, "this node serves f32 and kbit only");
        return;
    }
    int params = p->vec == WIRE_VEC_PARAMS;
    uint64_t base = params ? n->off : n->soff, blen = params ? n->len : n->slen;
    if (p->offset < base || p->offset - base > blen || p->length > blen - (p->offset - base)) {
        refuse(n, in, m->type, m->rid, WIRE_ERR_OUT_OF_RANGE, "%s [%" PRIu64 ", %" PRIu64 ") is "
               "not inside the shard [%" PRIu64 ", %" PRIu64 ")", params ? "params" : "stats",
               p->offset, p->offset + p->length, base, base + blen);
        return;
    }
    if (p->worker != WIRE_ID_COORD) {
        wslot_t *w = worker_slot(n, p->worker, in, m->type, m->rid);
        if (w == NULL) return;
        if (params && !gate_open(n, p->clock)) {
            if (w->waiting) {
                refuse(n, in, m->type, m->rid, WIRE_ERR_BAD_MESSAGE, "worker %" PRIu32 " already "
                       "has a PULL waiting", p->worker);
                return;
            }
            w->waiting = 1;
            w->pull = *p;
            w->pull_rid = m->rid;
            w->next_hb = clock_now_ms() + n->heartbeat_ms;
            n->cnt.deferred++;
            return;
        }
    }
    reply_pull(n, in->route, in->route_size, m->rid, p);
}

static void on_push(node_t *n, const wire_in_t *in, const wire_msg_t *m) {
    const wire_push_t *p = &m->push;
    if (check_shard(n, in, m->type, m->rid, p->shard) < 0) return;
    if (p->encoding != WIRE_ENC_F32 && p->encoding != WIRE_ENC_Q8) { /* wire_decode lets no other in */
        refuse(n, in, m->type, m->rid, WIRE_ERR_ENCODING, "this node takes f32 and q8 pushes only");
        return;
    }
    if (check_whole(n, in, m, n->off, n->len, p->offset, p->length) < 0) return;
    wslot_t *w = worker_slot(n, p->worker, in, m->type, m->rid);
    if (w == NULL) return;
    n->cnt.bytes_in += m->payload_size;
    if (n->consistency == WIRE_CONS_ASYNC && p->clock < w->clock) {
        /* A worker's clocks only grow: this batch was applied already. A worker that resent
         * it after a timeout (PROTOCOL.md section 9) gets the ACK it missed; nothing is applied
         * twice. */
        n->cnt.duplicates++;
        ack(n, in, m->rid, WIRE_VEC_PARAMS);
        return;
    }
    /* Ahead of the shard is impossible, except for a push computed before this node died and
     * restarted from a checkpoint: the versions between were lost; it counts as fresh. */
    if (p->version > n->version && n->cnt.restored_version == 0) {
        refuse(n, in, m->type, m->rid, WIRE_ERR_BAD_MESSAGE, "PUSH.version %" PRIu64 " is ahead "
               "of the shard's version %" PRIu64, p->version, n->version);
        return;
    }
    if (n->consistency == WIRE_CONS_BSP &&
        (w->in_sum || p->clock != w->clock || (n->sum_count > 0 && p->clock != n->sum_clock))) {
        refuse(n, in, m->type, m->rid, WIRE_ERR_BAD_MESSAGE, "bsp: PUSH.clock %" PRIu64 " from "
               "worker %" PRIu32 " at clock %" PRIu64 "%s", p->clock, p->worker, w->clock,
               w->in_sum ? ", which already pushed this clock" : "");
        return;
    }
    /* An f32 gradient is read in place where it can be; a kbit run's is turned into dL/dw in
     * n->grad. */
    auxps_error_t e = {0};
    const float *g = NULL;
    int rc = n->kbit ? 0 : wire_payload_f32_view(m, &g, &e);
    if (rc == 0 && g == NULL) {
        rc = wire_payload_f32(m, n->grad, &e);
        g = n->grad;
    }
    if (rc != 0) {
        refuse(n, in, m->type, m->rid, WIRE_ERR_BAD_MESSAGE, "%s", e.msg);
        return;
    }
    uint64_t bad = coded_finite(p) ? n->len : first_non_finite(g, n->len);
    if (bad < n->len) { /* nothing of it is applied: a NaN would spread to every parameter */
        refuse(n, in, m->type, m->rid, WIRE_ERR_NON_FINITE, "PUSH from worker %" PRIu32 ": gradient value %"
               PRIu64 " is %g", p->worker, n->off + bad, (double)g[bad]);
        return;
    }
    uint64_t stale = p->version < n->version ? n->version - p->version : 0;
    if (stale > n->cnt.max_staleness) n->cnt.max_staleness = stale;
    if (n->consistency == WIRE_CONS_BSP) {
        if (n->kbit) quant_backward(n);
        for (uint64_t i = 0; i < n->len; i++) n->sum[i] += (double)p->samples * g[i];
        n->sum_samples += p->samples;
        n->sum_clock = p->clock;
        if (stale > n->sum_stale) n->sum_stale = stale;
        n->sum_count++;
        w->in_sum = 1;
        if (n->sum_count >= n->num_workers) apply_sum(n);
        ack(n, in, m->rid, WIRE_VEC_PARAMS);
    } else {
        /* Nothing can fail from here on, so the ACK (with the version this push makes) goes
         * first and the update is computed while it travels: a PULL that follows it is read
         * after the update, by this same thread (PROTOCOL.md, PUSH_ACK). No yield here for
         * ZeroMQ's I/O thread to send the ACK first: every other worker waits for this
         * update, and with 4 workers and 2 nodes on 2 cores a yield cost a third of the
         * coded rounds (bench --transport --coded), while a cluster's images/s did not
         * change with or without it, prefetching or not. */
        if (p->clock + 1 > w->clock) w->clock = p->clock + 1;
        ack_at(n, in, m->rid, WIRE_VEC_PARAMS, n->version + 1);
        if (n->kbit) quant_backward(n);
        apply_update(n, g, stale, 1);
    }
    release_waiting(n);
}

static void on_stats_push(node_t *n, const wire_in_t *in, const wire_msg_t *m) {
    const wire_stats_push_t *p = &m->stats_push;
    if (check_shard(n, in, m->type, m->rid, p->shard) < 0) return;
    if (check_whole(n, in, m, n->soff, n->slen, p->offset, p->length) < 0) return;
    wslot_t *w = worker_slot(n, p->worker, in, m->type, m->rid);
    if (w == NULL) return;
    auxps_error_t e = {0};
    if (wire_payload_f32(m, n->sbuf, &e) != 0) {
        refuse(n, in, m->type, m->rid, WIRE_ERR_BAD_MESSAGE, "%s", e.msg);
        return;
    }
    uint64_t bad = first_non_finite(n->sbuf, n->slen);
    if (bad < n->slen) {
        refuse(n, in, m->type, m->rid, WIRE_ERR_NON_FINITE, "STATS_PUSH from worker %" PRIu32 ": statistic %"
               PRIu64 " is %g", p->worker, n->soff + bad, (double)n->sbuf[bad]);
        return;
    }
    if (p->mode == WIRE_STATS_REPLACE) {
        memcpy(n->stats, n->sbuf, n->slen * sizeof(float));
        for (uint32_t i = 0; i < n->nseen; i++) n->workers[n->seen[i]].stats_samples = 0;
        n->stats_dirty = 0;
    } else {
        if (w->stats == NULL && (w->stats = malloc(n->slen * sizeof(float))) == NULL) {
            refuse(n, in, m->type, m->rid, WIRE_ERR_INTERNAL, "out of memory for statistics");
            return;
        }
        memcpy(w->stats, n->sbuf, n->slen * sizeof(float));
        w->stats_samples = p->samples;
        n->stats_dirty = 1;
    }
    n->stats_gen++;
    n->cnt.stats_pushes++;
    n->cnt.bytes_in += m->payload_size;
    ack(n, in, m->rid, WIRE_VEC_STATS);
}

/* ---- registration ---------------------------------------------------------------------- */

static int send_hello(node_t *n, auxps_error_t *err) {
    wire_msg_t m;
    memset(&m, 0, sizeof m);
    m.type = WIRE_HELLO;
    m.hello.role = WIRE_ROLE_NODE;
    peer_hello_name(m.hello.name, sizeof m.hello.name, "node");
    snprintf(m.hello.endpoint, sizeof m.hello.endpoint, "%s", n->endpoint);
    m.hello.encodings = 1u << WIRE_ENC_F32 | 1u << WIRE_ENC_KBIT | 1u << WIRE_ENC_Q8;
    return send_oneway(n, &m, err);
}

typedef struct {
    node_t *n;
    int *count;
    auxps_error_t *err;
} count_job_t;

/* peer_run_beating's job: the training set's size, from its files' headers (the coordinator reads
 * the whole set; a node needs only the count, not 47 MB decompressed in its memory). */
static int count_data(void *arg) {
    count_job_t *j = arg;
    return dataset_count(j->n->cfg.data.dir, 1, j->n->cfg.data.train_limit, j->count, j->err);
}

/* kbit runs: the shard's tensors and the k-bit pull buffers. The coordinator's shard map never
 * splits a tensor, and a kbit run needs whole tensors (a quantizer's scale is the tensor's max):
 * a map that splits one is refused (AUXPS_ECONFIG). */
static int shard_tensors(node_t *n, const model_t *model, auxps_error_t *err) {
    const int T = model_num_tensors(model);
    n->kbit = n->cfg.cluster.pull == PULL_KBIT && n->cfg.model.wbits < 32;
    n->wbits = n->cfg.model.wbits;
    if (!n->kbit) return 0; /* any slice will do */
    if ((n->tens = calloc((size_t)T, sizeof *n->tens)) == NULL)
        return auxps_error_set(err, AUXPS_ENOMEM, "out of memory for the shard's tensors");
    uint64_t at = 0, qmax = 0;
    n->ntens = 0;
    for (int i = 0; i < T; i++) {
        const model_tensor_t *t = model_tensor(model, i);
        if (t->offset + t->size <= n->off || t->offset >= n->off + n->len) continue;
        if (t->offset != n->off + at || t->offset + t->size > n->off + n->len)
            return auxps_error_set(err, AUXPS_ECONFIG, "WELCOME: the shard [%" PRIu64 ", %" PRIu64 ") splits "
                                   "tensor %s", n->off, n->off + n->len, t->name);
        n->tens[n->ntens++] = (ntensor_t){at, t->size, t->quantized};
        at += t->size;
        if (t->quantized && t->size > qmax) qmax = t->size;
    }
    if (at != n->len)
        return auxps_error_set(err, AUXPS_ECONFIG, "WELCOME: the shard [%" PRIu64 ", %" PRIu64 ") does not "
                               "hold whole tensors", n->off, n->off + n->len);
    n->codes = malloc(n->len);
    n->qbuf = malloc((qmax ? qmax : 1) * sizeof(float));
    n->tw = malloc((n->len ? n->len : 1) * sizeof(float));
    n->tw_version = UINT64_MAX;
    n->ksegs = malloc((size_t)T * sizeof *n->ksegs);
    if (n->codes == NULL || n->qbuf == NULL || n->tw == NULL || n->ksegs == NULL)
        return auxps_error_set(err, AUXPS_ENOMEM, "out of memory for k-bit pulls");
    return coded_kbit_layout(model, n->off, n->len, n->wbits, n->ksegs, (uint32_t)T, &n->nksegs, err);
}

/* NODE_READY: this node serves its shard, at its current version. */
static int send_ready(node_t *n, auxps_error_t *err) {
    wire_msg_t r;
    memset(&r, 0, sizeof r);
    r.type = WIRE_NODE_READY;
    r.node_ready = (wire_node_ready_t){n->cnt.id, n->off, n->len, n->soff, n->slen, n->version};
    return send_oneway(n, &r, err);
}

/* Sets the node up from WELCOME m: the configuration, the model's initial slice, the schedule.
 * Answers ERROR CONFIG and returns AUXPS_ECONFIG if the configuration does not fit. */
static int welcome(node_t *n, const wire_msg_t *m, auxps_error_t *err) {
    const wire_welcome_t *w = &m->welcome;
    model_t *model = NULL;
    int rc, nsamples = 0;
    if (w->role != WIRE_ROLE_NODE) {
        rc = auxps_error_set(err, AUXPS_ECONFIG, "WELCOME for role %" PRIu32 ", not a node", w->role);
        goto refused;
    }
    if ((rc = config_load_text(&n->cfg, w->config, "WELCOME.config", err)) != 0) goto refused;
    if ((model = model_new(&n->cfg.model, 1)) == NULL) {
        rc = auxps_error_set(err, AUXPS_ECONFIG, "WELCOME.config: cannot build its model");
        goto refused;
    }
    if (model_num_params(model) != w->num_params || model_num_stats(model) != w->num_stats) {
        rc = auxps_error_set(err, AUXPS_ECONFIG, "WELCOME: %" PRIu64 " params and %" PRIu64 " stats, "
                             "but its config's model has %zu and %zu", w->num_params, w->num_stats,
                             model_num_params(model), model_num_stats(model));
        goto refused;
    }
    /* The schedule needs the number of training samples (CLUSTER.md "Steps"). */
    count_job_t job = {n, &nsamples, err};
    if ((rc = peer_run_beating(n->coord, WIRE_ROLE_NODE, w->id, &n->coord_rid, w->heartbeat_ms, count_data,
                               &job)) != 0) {
        rc = AUXPS_ECONFIG;
        goto refused;
    }
    const wire_shard_t *s = &w->shards[w->id];
    if (strcmp(s->endpoint, n->endpoint) != 0)
        say(n, "the shard map gives my endpoint as %s; I am bound to %s", s->endpoint, n->endpoint);
    n->off = s->offset, n->len = s->length, n->soff = s->stats_offset, n->slen = s->stats_length;
    n->consistency = w->consistency;
    n->staleness = w->consistency == WIRE_CONS_SSP ? w->staleness : 0;
    n->num_workers = w->num_workers;
    n->heartbeat_ms = w->heartbeat_ms;
    n->timeout_ms = w->timeout_ms;
    n->pcur = snap_alloc(n->len, 0);
    n->momentum = calloc(n->len, sizeof(float));
    n->grad = malloc(n->len * sizeof(float));
    n->stats = malloc((n->slen ? n->slen : 1) * sizeof(float));
    n->sbuf = malloc((n->slen ? n->slen : 1) * sizeof(float));
    n->sum = w->consistency == WIRE_CONS_BSP ? calloc(n->len, sizeof(double)) : NULL;
    n->workers = calloc(WIRE_MAX_WORKERS, sizeof *n->workers);
    n->seen = calloc(WIRE_MAX_WORKERS, sizeof *n->seen);
    if (!n->pcur || !n->momentum || !n->grad || !n->stats || !n->sbuf || !n->workers || !n->seen ||
        (w->consistency == WIRE_CONS_BSP && n->sum == NULL)) {
        rc = auxps_error_set(err, AUXPS_ENOMEM, "out of memory for a shard of %" PRIu64 " floats", n->len);
        goto refused;
    }
    if ((rc = shard_tensors(n, model, err)) != 0) goto refused;
    model_init(model, w->seed);
    memcpy(n->pcur->data, model_params(model) + n->off, n->len * sizeof(float));
    memcpy(n->stats, model_stats(model) + n->soff, n->slen * sizeof(float));
    const long b = n->cfg.train.batch_size, spe = (nsamples + b - 1) / b;
    long total = spe * n->cfg.train.epochs;
    if (n->cfg.train.max_steps > 0 && n->cfg.train.max_steps < total) total = n->cfg.train.max_steps;
    const auxps_config_t *c = &n->cfg;
    n->optim = (optim_t){c->train.lr, c->train.momentum, c->train.weight_decay, c->train.nesterov,
                         c->train.schedule, c->train.step_epochs, c->train.step_gamma, spe, total};
    n->cnt.id = w->id;
    n->ckpt_ms = clock_now_ms();
    snprintf(n->ckpt_prefix, sizeof n->ckpt_prefix, "node-%" PRIu32, w->id);
    if (n->cfg.checkpoint.dir[0] != '\0' && (rc = load_checkpoint(n, err)) != 0) {
        rc = AUXPS_ECONFIG;
        goto refused;
    }
    n->welcomed = 1;
    say(n, "params [%" PRIu64 ", %" PRIu64 ") of %" PRIu64 ", stats [%" PRIu64 ", %" PRIu64 ") of %"
        PRIu64 ", %s (staleness %" PRIu32 "), %" PRIu32 " workers, %d training samples, %ld steps, "
        "serving at %s", n->off, n->off + n->len, w->num_params, n->soff, n->soff + n->slen,
        w->num_stats,
        w->consistency == WIRE_CONS_ASYNC ? "async" : w->consistency == WIRE_CONS_SSP ? "ssp" : "bsp",
        n->staleness, n->num_workers, nsamples, total, n->endpoint);
    model_destroy(&model);
    return send_ready(n, err);
refused:
    model_destroy(&model);
    auxps_error_t e = {0};
    uint32_t code = rc == AUXPS_ENOMEM ? WIRE_ERR_INTERNAL : WIRE_ERR_CONFIG;
    if (wire_send_error(n->coord, NULL, 0, m->rid, code, err->msg, &e) == 0) n->coord_sent = clock_now_ms();
    return rc;
}

/* Reads one message from the coordinator into m (in holds its frames). Returns 1 with a
 * decoded message, 0 if there was nothing or it was refused, or AUXPS_EIO if ZeroMQ failed. */
static int recv_coord(node_t *n, wire_in_t *in, wire_msg_t *m, auxps_error_t *err) {
    auxps_error_t e = {0};
    int rc = wire_recv(n->coord, 0, in, ZMQ_DONTWAIT, &e);
    if (rc == AUXPS_EIO) {
        if (errno == EAGAIN || errno == EINTR) return 0;
        return auxps_error_set(err, AUXPS_EIO, "node: receiving from the coordinator: %s", e.msg);
    }
    n->coord_heard = clock_now_ms(); /* any message is a sign of life */
    if (rc < 0) {
        refuse_bad(n, NULL, NULL, rc, e.msg);
        return 0;
    }
    if ((rc = wire_decode_in(in, m, &e)) < 0) {
        refuse_bad(n, NULL, m, rc, e.msg);
        return 0;
    }
    return 1;
}

static int register_node(node_t *n, volatile sig_atomic_t *stop, auxps_error_t *err) {
    const int64_t t0 = WIRE_DEFAULT_TIMEOUT_MS;
    int tries = 1, rc;
    if ((rc = send_hello(n, err)) != 0) return rc;
    int64_t deadline = clock_now_ms() + t0;
    wire_in_t in = {0};
    wire_msg_t m = {0};
    for (;;) {
        if (stop != NULL && *stop) {
            rc = auxps_error_set(err, AUXPS_EIO, "node: stopped before the coordinator welcomed it");
            break;
        }
        int64_t now = clock_now_ms();
        if (now >= deadline) {
            if (tries >= NODE_HELLO_TRIES) {
                rc = auxps_error_set(err, AUXPS_EIO, "node: no answer from the coordinator at %s "
                                     "after %d HELLOs, %" PRId64 " s each", n->coord_ep, tries, t0 / 1000);
                break;
            }
            say(n, "no answer from the coordinator at %s: HELLO again", n->coord_ep);
            if ((rc = send_hello(n, err)) != 0) break;
            tries++;
            deadline = now + t0;
        }
        if (now - n->coord_sent >= WIRE_DEFAULT_HEARTBEAT_MS) { /* held back: still here */
            wire_msg_t hb = wire_heartbeat(WIRE_ROLE_NODE, 0);
            if ((rc = send_oneway(n, &hb, err)) != 0) break;
        }
        zmq_pollitem_t it = {n->coord, 0, ZMQ_POLLIN, 0};
        int64_t wait = deadline - now;
        if (zmq_poll(&it, 1, wait > 1000 ? 1000 : (long)wait) < 0) {
            if (zmq_errno() == EINTR) continue;
            rc = peer_zfail("node: zmq_poll", err);
            break;
        }
        wire_msg_clear(&m);
        if ((rc = recv_coord(n, &in, &m, err)) < 0) break;
        if (rc == 0) {
            if (n->coord_heard > deadline - t0) deadline = n->coord_heard + t0;
            continue;
        }
        deadline = n->coord_heard + t0;
        if (m.type == WIRE_WELCOME) {
            rc = welcome(n, &m, err);
            break;
        } else if (m.type == WIRE_HEARTBEAT) {
            continue;
        } else if (m.type == WIRE_ERROR) {
            if (m.error.code == WIRE_ERR_FULL && tries < NODE_HELLO_TRIES) {
                say(n, "the coordinator is full (%s): HELLO again in 1 s", m.error.text);
                nanosleep(&(struct timespec){1, 0}, NULL);
                if ((rc = send_hello(n, err)) != 0) break;
                tries++;
                deadline = clock_now_ms() + t0;
                continue;
            }
            rc = auxps_error_set(err, AUXPS_EIO, "node: the coordinator refused HELLO: %s %s",
                                 wire_err_name(m.error.code), m.error.text);
            break;
        } else {
            refuse(n, NULL, m.type, m.rid, WIRE_ERR_BAD_MESSAGE, "%s before WELCOME",
                   wire_type_name(m.type));
        }
    }
    wire_msg_clear(&m);
    wire_in_close(&in);
    return rc;
}

/* ---- a lost coordinator (docs/CHECKPOINT.md "Coordinator restart") ------------------------ */

/* The coordinator fell silent for T, or a restarted one does not know this node. In an async
 * run with checkpoints the node goes on serving its workers and registers again for at most
 * cluster.rejoin_s; otherwise the run is over for it. */
static int lose_coord(node_t *n, const char *why, auxps_error_t *err) {
    if (n->consistency != WIRE_CONS_ASYNC || n->cfg.checkpoint.dir[0] == '\0' || n->cfg.cluster.rejoin_s == 0)
        return auxps_error_set(err, AUXPS_EIO, "node %" PRIu32 ": the coordinator at %s %s", n->cnt.id, n->coord_ep,
                               why);
    say(n, "the coordinator at %s %s: serving the workers and registering again for at most %d s", n->coord_ep, why,
        n->cfg.cluster.rejoin_s);
    /* A new socket: what was queued for the old coordinator is dropped, not delivered to the new one. */
    void *s = peer_coord_socket(n->ctx, n->coord_ep, n->curve, "node", err);
    if (s == NULL) return err->code;
    zmq_close(n->coord);
    n->coord = s;
    n->coord_lost = 1;
    n->lost_since = n->hello_sent = clock_now_ms();
    return send_hello(n, err);
}

/* WELCOME from the coordinator that came back: it must give this node the shard it holds.
 * The new coordinator numbers its workers afresh, so every worker id is forgotten (its workers
 * register again and are announced by MEMBERSHIP); the parameters stay as they are. */
static int rewelcome(node_t *n, const wire_msg_t *m, auxps_error_t *err) {
    const wire_welcome_t *w = &m->welcome;
    const wire_shard_t *s = w->id < w->nshards ? &w->shards[w->id] : NULL;
    if (w->role != WIRE_ROLE_NODE || w->id != n->cnt.id || s == NULL || s->offset != n->off || s->length != n->len ||
        s->stats_offset != n->soff || s->stats_length != n->slen || w->consistency != n->consistency) {
        auxps_error_set(err, AUXPS_EIO, "node %" PRIu32 ": the coordinator came back with another run (node %" PRIu32
                        " of %" PRIu32 "), not this node's shard params %" PRIu64 "+%" PRIu64 " stats %" PRIu64 "+%"
                        PRIu64, n->cnt.id, w->id, w->nshards, n->off, n->len, n->soff, n->slen);
        auxps_error_t e = {0};
        if (wire_send_error(n->coord, NULL, 0, m->rid, WIRE_ERR_CONFIG, err->msg, &e) == 0) n->coord_sent = clock_now_ms();
        return err->code;
    }
    for (uint32_t id = 0; id < WIRE_MAX_WORKERS; id++)
        if (n->workers[id].member || n->workers[id].route_size > 0) forget_worker(n, id);
    n->heartbeat_ms = w->heartbeat_ms;
    n->timeout_ms = w->timeout_ms;
    n->coord_lost = 0;
    n->coord_heard = clock_now_ms();
    n->cnt.rejoins++;
    say(n, "registered again with the coordinator after %.1f s, at version %" PRIu64,
        (clock_now_ms() - n->lost_since) / 1000.0, n->version);
    return send_ready(n, err);
}

/* ---- serving --------------------------------------------------------------------------- */

enum { RUN_ON = 0, RUN_DONE = 1 };

/* Handles every message waiting from the coordinator. Returns RUN_ON, RUN_DONE (DONE or
 * SHUTTING_DOWN came: BYE was sent) or a negative error. */
static int serve_coord(node_t *n, auxps_error_t *err) {
    wire_in_t in = {0};
    wire_msg_t m = {0};
    int rc, result = RUN_ON;
    while (result == RUN_ON && (rc = recv_coord(n, &in, &m, err)) != 0) {
        if (rc < 0) {
            result = rc;
            break;
        }
        switch (m.type) {
        case WIRE_HEARTBEAT: break;
        case WIRE_WELCOME: /* the answer to a resent HELLO, or to the HELLO after a lost coordinator */
            if (n->coord_lost && (rc = rewelcome(n, &m, err)) != 0) result = rc;
            break;
        case WIRE_MEMBERSHIP:
            if (n->consistency != WIRE_CONS_ASYNC) {
                refuse(n, NULL, m.type, m.rid, WIRE_ERR_BAD_MESSAGE, "MEMBERSHIP in an ssp or bsp run");
                break;
            }
            forget_worker(n, m.membership.worker);
            if (m.membership.joined) {
                n->workers[m.membership.worker].member = 1;
                n->cnt.joined++;
            }
            break;
        case WIRE_DONE:
            say(n, "DONE (%s, epoch %" PRIu32 ", step %" PRIu64 ")",
                m.done.reason == WIRE_DONE_FINISHED ? "finished" : "aborted", m.done.epoch, m.done.step);
            send_bye(n, 0);
            result = RUN_DONE;
            break;
        case WIRE_ERROR:
            if (m.error.code == WIRE_ERR_SHUTTING_DOWN) {
                say(n, "the coordinator is shutting down: %s", m.error.text);
                send_bye(n, 0);
                result = RUN_DONE;
            } else if (m.error.code == WIRE_ERR_NOT_REGISTERED) { /* a restarted coordinator */
                if (!n->coord_lost && (rc = lose_coord(n, "does not know this node (it restarted)", err)) != 0)
                    result = rc;
            } else {
                result = auxps_error_set(err, AUXPS_EIO, "node %" PRIu32 ": the coordinator sent "
                                         "ERROR %s: %s", n->cnt.id, wire_err_name(m.error.code),
                                         m.error.text);
            }
            break;
        default:
            refuse(n, NULL, m.type, m.rid, WIRE_ERR_BAD_MESSAGE, "%s is not for a node's "
                   "coordinator link", wire_type_name(m.type));
        }
        wire_msg_clear(&m);
    }
    wire_in_close(&in);
    return result;
}

/* Handles up to NODE_DATA_BURST messages waiting on the data socket. Returns 0 or AUXPS_EIO. */
static int serve_data(node_t *n, auxps_error_t *err) {
    wire_in_t in = {0};
    wire_msg_t m = {0};
    int rc = 0, drained = 0;
    for (int k = 0; k < NODE_DATA_BURST; k++) {
        auxps_error_t e = {0};
        int r = wire_recv(n->data, 1, &in, ZMQ_DONTWAIT, &e);
        if (r == AUXPS_EIO) {
            if (errno != EAGAIN && errno != EINTR)
                rc = auxps_error_set(err, AUXPS_EIO, "node %" PRIu32 ": data socket: %s", n->cnt.id, e.msg);
            drained = errno == EAGAIN;
            break;
        }
        if (ignored(n, &in)) continue;
        if (r < 0) {
            if (in.route_size > 0) refuse_bad(n, &in, NULL, r, e.msg);
            else n->cnt.refused++, n->cnt.rejected[wire_reject_kind(r, NULL)]++;
            continue;
        }
        if ((r = wire_decode_in(&in, &m, &e)) < 0) {
            refuse_bad(n, &in, &m, r, e.msg);
            continue;
        }
        switch (m.type) {
        case WIRE_PULL: on_pull(n, &in, &m); break;
        case WIRE_PUSH: on_push(n, &in, &m); break;
        case WIRE_STATS_PUSH: on_stats_push(n, &in, &m); break;
        case WIRE_HEARTBEAT: break;
        case WIRE_BYE: break;
        case WIRE_ERROR: /* no worker has a reason to refuse what a node sends */
            n->cnt.refused++;
            n->cnt.rejected[WIRE_REJECT_MALFORMED]++;
            say(n, "a peer sent ERROR %s: %s", wire_err_name(m.error.code), m.error.text);
            break;
        default:
            refuse(n, &in, m.type, m.rid, WIRE_ERR_BAD_MESSAGE, "%s is not for a node",
                   wire_type_name(m.type));
        }
        wire_msg_clear(&m);
    }
    wire_msg_clear(&m);
    wire_in_close(&in);
    /* Nothing waits: the k-bit snapshot of a new version is made now rather than when its PULL
     * comes (the worker that pushed it pulls next, and is still reading its PUSH_ACK). A PULL
     * that arrives meanwhile waits no longer than it would have for the snapshot itself. */
    if (rc == 0 && drained && n->kbit && (n->ksnap == NULL || n->ksnap->gen != n->version)) {
        size_t bytes;
        (void)kbit_snapshot(n, &bytes); /* out of memory: the PULL tries again and answers ERROR */
    }
    return rc;
}

/* The periodic jobs, run before every poll: (1) NODE_STATS (the heartbeat) to the coordinator after H of
 * silence on that link; (2) HEARTBEAT every H to each worker whose PULL waits at the gate;
 * (3) the coordinator's timeout; (4) a checkpoint when one is due. Returns the ms until the next job is due, or a negative
 * error. */
static int64_t housekeeping(node_t *n, auxps_error_t *err) {
    int64_t now = clock_now_ms(), next = now + n->heartbeat_ms;
    if (!n->coord_lost && now - n->coord_heard >= n->timeout_ms) {
        char why[64];
        snprintf(why, sizeof why, "was silent for %" PRIu32 " ms", n->timeout_ms);
        int rc = lose_coord(n, why, err);
        if (rc != 0) return rc;
    }
    if (n->coord_lost) { /* HELLO every T, HEARTBEAT every H, until WELCOME */
        if (now - n->lost_since >= (int64_t)n->cfg.cluster.rejoin_s * 1000)
            return auxps_error_set(err, AUXPS_EIO, "node %" PRIu32 ": the coordinator at %s did not come back "
                                   "within cluster.rejoin_s = %d s", n->cnt.id, n->coord_ep, n->cfg.cluster.rejoin_s);
        if (now - n->hello_sent >= n->timeout_ms) {
            n->hello_sent = now;
            if (send_hello(n, err) != 0) return err->code;
        } else if (now - n->coord_sent >= n->heartbeat_ms) {
            wire_msg_t hb = wire_heartbeat(WIRE_ROLE_NODE, 0);
            if (send_oneway(n, &hb, err) != 0) return err->code;
        }
    } else if (now - n->coord_sent >= n->heartbeat_ms) { /* NODE_STATS is the node's heartbeat */
        const node_counters_t *c = &n->cnt;
        wire_msg_t m;
        memset(&m, 0, sizeof m);
        m.type = WIRE_NODE_STATS;
        m.node_stats = (wire_node_stats_t){c->id, c->pushes, c->version, c->pulls, c->bytes_in, c->bytes_out,
                                           c->refused, c->max_staleness, c->checkpoint_version,
                                           c->checkpoint_unix_ms, {0}};
        memcpy(m.node_stats.rejected, c->rejected, sizeof c->rejected);
        if (send_oneway(n, &m, err) != 0) return err->code;
    }
    maybe_checkpoint(n);
    if (n->cfg.checkpoint.dir[0] != '\0' && n->version != n->ckpt_version &&
        n->ckpt_ms + n->cfg.checkpoint.every_s * 1000 < next)
        next = n->ckpt_ms + n->cfg.checkpoint.every_s * 1000;
    if (n->coord_sent + n->heartbeat_ms < next) next = n->coord_sent + n->heartbeat_ms;
    if (!n->coord_lost && n->coord_heard + n->timeout_ms < next) next = n->coord_heard + n->timeout_ms;
    for (uint32_t i = 0; i < n->nseen; i++) {
        wslot_t *w = &n->workers[n->seen[i]];
        if (!w->waiting) continue;
        if (now >= w->next_hb) {
            wire_msg_t m = wire_heartbeat(WIRE_ROLE_NODE, n->cnt.id);
            m.rid = n->data_rid++;
            auxps_error_t e = {0};
            wire_send(n->data, w->route, w->route_size, &m, NULL, NULL, ZMQ_DONTWAIT, &e);
            w->next_hb = now + n->heartbeat_ms;
        }
        if (w->next_hb < next) next = w->next_hb;
    }
    return next > now ? next - now : 0;
}

int node_run(node_t *n, volatile sig_atomic_t *stop, FILE *log, FILE *out, auxps_error_t *err) {
    if (n == NULL || n->ran)
        return auxps_error_set(err, AUXPS_EINVAL, "node_run: NULL node or called twice");
    n->ran = 1;
    n->log = log;
    n->coord_heard = n->coord_sent = clock_now_ms();
    int rc = register_node(n, stop, err);
    if (rc != 0) goto done;
    n->coord_heard = clock_now_ms();
    int64_t stop_deadline = -1;
    for (;;) {
        int64_t wait = housekeeping(n, err);
        if (wait < 0) {
            rc = (int)wait;
            break;
        }
        if (stop != NULL && *stop) {
            int64_t now = clock_now_ms();
            if (stop_deadline < 0) {
                stop_deadline = now + n->timeout_ms;
                say(n, "stop requested: serving until DONE, at most %" PRIu32 " ms more", n->timeout_ms);
            }
            if (*stop >= 2 || now >= stop_deadline) {
                say(n, "stopping without DONE");
                send_bye(n, WIRE_ERR_SHUTTING_DOWN);
                rc = 0;
                break;
            }
            if (stop_deadline - now < wait) wait = stop_deadline - now;
        }
        zmq_pollitem_t items[2] = {{n->coord, 0, ZMQ_POLLIN, 0}, {n->data, 0, ZMQ_POLLIN, 0}};
        if (zmq_poll(items, 2, (long)wait) < 0) {
            if (zmq_errno() == EINTR) continue;
            rc = peer_zfail("node: zmq_poll", err);
            break;
        }
        if (items[0].revents & ZMQ_POLLIN) {
            int r = serve_coord(n, err);
            if (r != RUN_ON) {
                rc = r == RUN_DONE ? 0 : r;
                break;
            }
        }
        if ((items[1].revents & ZMQ_POLLIN) && (rc = serve_data(n, err)) != 0) break;
    }
done:
    if (n->welcomed) {
        if (out != NULL) {
            fprintf(out, "node %" PRIu32 ": applied %" PRIu64 " pushes, %" PRIu64 " stats pushes, "
                    "version %" PRIu64 ", max staleness %" PRIu64 "\n", n->cnt.id, n->cnt.pushes,
                    n->cnt.stats_pushes, n->cnt.version, n->cnt.max_staleness);
            fflush(out);
        }
        char kinds[256];
        size_t k = 0;
        for (uint32_t i = 0; i < WIRE_REJECT_COUNT && k < sizeof kinds; i++)
            k += (size_t)snprintf(kinds + k, sizeof kinds - k, "%s%s %" PRIu64, i ? ", " : "", wire_reject_name(i),
                                  n->cnt.rejected[i]);
        say(n, "answered %" PRIu64 " pulls (%" PRIu64 " waited at the gate), refused %" PRIu64
            " messages (%s)", n->cnt.pulls, n->cnt.deferred, n->cnt.refused, kinds);
        say(n, "payload bytes: %" PRIu64 " received in pushes, %" PRIu64 " sent in pull replies%s", n->cnt.bytes_in,
            n->cnt.bytes_out, n->kbit ? " (k-bit weights)" : "");
    }
    if (n->zap != NULL)
        say(n, "CURVE: refused %" PRIu64 " connection attempts of unauthorised keys", curve_zap_refused(n->zap));
    return rc;
}

/* ---- auxps ps -------------------------------------------------------------------------- */

static volatile sig_atomic_t node_stop; /* the only global, as signal handlers need */

static void on_signal(int sig) {
    (void)sig;
    if (node_stop < 2) node_stop++;
}

int node_main(int argc, char **argv) {
    const char *coordinator = NULL, *bind = NULL, *advertise = NULL, *security = NULL, *sets[PEER_MAX_SETS];
    int nsets = 0;
    static const char usage[] = "usage: auxps ps --coordinator ENDPOINT [--bind ENDPOINT] [--advertise ENDPOINT]\n"
                                "                [--security CONFIG] [--set security.KEY=VALUE ...]\n";
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--coordinator") == 0 && i + 1 < argc) coordinator = argv[++i];
        else if (strcmp(argv[i], "--bind") == 0 && i + 1 < argc) bind = argv[++i];
        else if (strcmp(argv[i], "--advertise") == 0 && i + 1 < argc) advertise = argv[++i];
        else if (strcmp(argv[i], "--security") == 0 && i + 1 < argc) security = argv[++i];
        else if (strcmp(argv[i], "--set") == 0 && i + 1 < argc && nsets < PEER_MAX_SETS) sets[nsets++] = argv[++i];
        else {
            fprintf(stderr, "auxps ps: unknown or incomplete argument '%s'\n", argv[i]);
            fputs(usage, stderr);
            return 2;
        }
    }
    if (coordinator == NULL) {
        fputs(usage, stderr);
        return 2;
    }
    peer_catch_signals(on_signal);
    auxps_error_t err = {0};
    curve_t *cv = NULL;
    if (peer_load_curve(security, sets, nsets, CURVE_ROLE_SERVER, &cv, &err) != 0) {
        fprintf(stderr, "auxps ps: %s\n", err.msg);
        return 1;
    }
    node_t *n = node_new_curve(coordinator, bind, cv, &err);
    if (n == NULL || (advertise != NULL && node_advertise(n, advertise, &err) != 0)) {
        fprintf(stderr, "auxps ps: %s\n", err.msg);
        node_destroy(&n);
        curve_destroy(&cv);
        return 1;
    }
    int rc = node_run(n, &node_stop, stderr, stdout, &err);
    if (rc != 0) fprintf(stderr, "auxps ps: %s\n", err.msg);
    node_destroy(&n);
    curve_destroy(&cv); /* after the node: its ZAP handler reads the keys */
    return rc != 0 ? 1 : 0;
}
