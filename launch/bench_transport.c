/* bench_transport.c - `auxps bench --transport`: pull + push rounds per second through the real
 * node code, against a bare ZeroMQ exchange of the same frames (bench_transport.h says what is
 * measured and how). The file has four parts: the plan of a configuration (shard map, frame
 * sizes), the bench workers, the bare servers, and the minimal coordinator that runs real
 * nodes. */
#include "bench_transport.h"

#include "bench_compute.h"
#include "clock.h"
#include "coded.h"
#include "config.h"
#include "coord.h"
#include "curve.h"
#include "error.h"
#include "model.h"
#include "node.h"
#include "peer.h"
#include "wire.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#define BT_MAX_NODES 2           /* the configurations: 1 and 2 nodes ... */
#define BT_MAX_WORKERS 4         /* ... against 1 and 4 workers */
#define BT_BIND "tcp://127.0.0.1:*"
#define BT_HWM 64                /* queued messages per peer: as the node's data socket */
#define BT_MAX_HDR 2048          /* bytes of a header frame the bare exchange imitates */
#define BT_POLL_MS 50            /* the coordinator's and the bare servers' poll interval */
#define BT_BYE_MS 5000           /* the nodes answer DONE within this */

enum { PATH_BARE = 0, PATH_AUXPS = 1 };
static const char *const path_names[] = {"bare", "auxps"};

/* ---- the plan of a configuration ------------------------------------------------------- */

/* What every thread of one configuration reads; only `finished` and `abort` change while they
 * run. */
typedef struct {
    int path, nworkers, nshards;
    wire_shard_t shards[BT_MAX_NODES];     /* endpoints: the nodes' or the bare servers' */
    size_t pull_hdr[BT_MAX_NODES];         /* bytes of each shard's PULL header ... */
    size_t rep_hdr[BT_MAX_NODES];          /* ... PULL_REP header ... */
    size_t push_hdr[BT_MAX_NODES];         /* ... PUSH header ... */
    size_t ack_hdr[BT_MAX_NODES];          /* ... and PUSH_ACK header (the bare frames) */
    uint32_t samples, timeout_ms;
    const curve_t *curve;                  /* --curve: every link is a CURVE link; NULL = plain */
    /* --coded: k-bit pulls and q8 pushes (CLUSTER.md "Bytes per step"), else f32 */
    int coded;
    const model_t *model;                  /* the tensor layout */
    size_t rep_bytes[BT_MAX_NODES];        /* payload bytes of each shard's PULL_REP ... */
    size_t push_bytes[BT_MAX_NODES];       /* ... and PUSH */
    wire_seg_t *ksegs[BT_MAX_NODES];       /* coded: the node's segments of a PULL_REP */
    uint32_t nksegs[BT_MAX_NODES];
    double t_warm, t_end;                  /* CLOCK_MONOTONIC s: the warm-up ends, time is up */
    atomic_int finished;                   /* workers that have stopped */
    atomic_int abort;                      /* the coordinator failed: stop now */
} plan_t;

/* The whole bench: the default configuration, its model and shard maps. */
typedef struct {
    double seconds;                        /* timed seconds of each configuration and path ... */
    double run_seconds;                    /* ... in two runs of this many (bench_transport) */
    auxps_config_t cfg;
    char *config_text;                     /* the WELCOME's config: config_write of cfg */
    model_t *model;                        /* the tensor layout */
    size_t nparams, nstats;
    wire_shard_t map[BT_MAX_NODES + 1][BT_MAX_NODES]; /* map[S]: S shards, no endpoints yet */
    float *grad;                           /* (2 nparams) the gradients every worker pushes in turn */
    curve_t *curve;                        /* --curve: keys made for this run only; NULL = plain */
    int coded;                             /* --coded: cluster.pull = kbit, cluster.push = q8 */
} bench_t;

/* Coded runs: the segments a node sends for shard s of p (coded_kbit_layout, as node.c's
 * kbit_snapshot), and the payload sizes of both directions. f32 runs: 4 bytes per value both
 * ways. */
static int plan_payloads(plan_t *p, auxps_error_t *err) {
    for (int s = 0; s < p->nshards; s++) {
        const wire_shard_t *sh = &p->shards[s];
        if (!p->coded) {
            p->rep_bytes[s] = p->push_bytes[s] = sh->length * sizeof(float);
            continue;
        }
        const int T = model_num_tensors(p->model);
        if ((p->ksegs[s] = malloc(sizeof(wire_seg_t) * (size_t)T)) == NULL)
            return auxps_error_set(err, AUXPS_ENOMEM, "out of memory");
        int rc = coded_kbit_layout(p->model, sh->offset, sh->length, model_spec(p->model)->wbits, p->ksegs[s],
                                   (uint32_t)T, &p->nksegs[s], err);
        if (rc != 0) return rc;
        p->rep_bytes[s] = wire_segs_bytes(p->ksegs[s], p->nksegs[s]);
        p->push_bytes[s] = sh->length; /* q8: a byte per value */
    }
    return 0;
}

static void plan_free(plan_t *p) {
    for (int s = 0; s < BT_MAX_NODES; s++) free(p->ksegs[s]), p->ksegs[s] = NULL;
}

/* Bytes of m's header as wire_encode packs it. */
static int header_size(const wire_msg_t *m, size_t *size, auxps_error_t *err) {
    void *hdr = NULL;
    int rc = wire_encode(m, &hdr, size, err);
    free(hdr);
    if (rc == 0 && *size > BT_MAX_HDR)
        rc = auxps_error_set(err, AUXPS_EINVAL, "internal: a %s header of %zu bytes", wire_type_name(m->type), *size);
    return rc;
}

/* The header sizes of one shard's four messages, with the field values of a run a few thousand
 * rounds old (a rid, clock and version of 1000 take as many bytes as any up to 65535). */
static int frame_sizes(plan_t *p, const float *payload, auxps_error_t *err) {
    for (int s = 0; s < p->nshards; s++) {
        const wire_shard_t *sh = &p->shards[s];
        const uint64_t v = 1000;
        wire_msg_t m;
        memset(&m, 0, sizeof m);
        m.rid = (uint32_t)v;
        m.type = WIRE_PULL;
        m.pull = (wire_pull_t){BT_MAX_WORKERS - 1, sh->id, WIRE_VEC_PARAMS, sh->offset, sh->length, v,
                               p->coded ? WIRE_ENC_KBIT : WIRE_ENC_F32};
        int rc = header_size(&m, &p->pull_hdr[s], err);
        m.type = WIRE_PULL_REP;
        m.pull_rep = (wire_pull_rep_t){sh->id, WIRE_VEC_PARAMS, sh->offset, sh->length, v, v, WIRE_ENC_F32, NULL, 0};
        if (p->coded) m.pull_rep.encoding = WIRE_ENC_KBIT, m.pull_rep.segs = p->ksegs[s], m.pull_rep.nsegs = p->nksegs[s];
        m.payload = payload + sh->offset;
        m.payload_size = p->rep_bytes[s];
        if (rc == 0) rc = header_size(&m, &p->rep_hdr[s], err);
        m.type = WIRE_PUSH;
        m.push = (wire_push_t){BT_MAX_WORKERS - 1, sh->id, sh->offset, sh->length, v, v, p->samples,
                               WIRE_ENC_F32, NULL, 0};
        wire_seg_t q8[WIRE_MAX_SEGMENTS];
        uint32_t nq = 0;
        if (p->coded) { /* a q8 segment per tensor, with typical scales */
            for (int i = 0; i < model_num_tensors(p->model) && nq < WIRE_MAX_SEGMENTS; i++) {
                const model_tensor_t *t = model_tensor(p->model, i);
                if (t->offset >= sh->offset && t->offset < sh->offset + sh->length)
                    q8[nq++] = (wire_seg_t){(uint32_t)t->size, 8, -128.0f * 1.2345e-5f, 1.2345e-5f};
            }
            m.push.encoding = WIRE_ENC_Q8, m.push.segs = q8, m.push.nsegs = nq;
        }
        m.payload_size = p->push_bytes[s];
        if (rc == 0) rc = header_size(&m, &p->push_hdr[s], err);
        m.type = WIRE_PUSH_ACK;
        m.push_ack = (wire_push_ack_t){sh->id, WIRE_VEC_PARAMS, v, v};
        m.payload = NULL;
        m.payload_size = 0;
        if (rc == 0) rc = header_size(&m, &p->ack_hdr[s], err);
        if (rc != 0) return rc;
    }
    return 0;
}

/* ---- bench workers --------------------------------------------------------------------- */

static const unsigned char zeros[BT_MAX_HDR]; /* the bytes of the bare exchange's header frames */

typedef struct {
    plan_t *plan;
    uint32_t id;
    const float *grad[2];                  /* (nparams) pushed without a copy, never changed: [clock % 2] */
    float *params;                         /* (nparams) where pulled values go */
    float *wq, *resid;                     /* coded: (nparams) decoded k-bit weights; q8 error feedback */
    uint8_t *codes, *qcodes;               /* coded: (nparams) codes pulled; codes pushed */
    wire_seg_t *qsegs[BT_MAX_NODES];       /* coded: the segments of each shard's PUSH */
    void *ctx, *socks[BT_MAX_NODES];
    wire_in_t in;
    atomic_int inflight;                   /* zero-copy pushes ZeroMQ has not released */
    uint32_t next_rid;
    uint32_t push_rid[BT_MAX_NODES];       /* the outstanding PUSH of each shard ... */
    uint32_t pull_rid[BT_MAX_NODES];       /* ... and PULL */
    uint64_t clock, version[BT_MAX_NODES];
    /* results, read once the thread is joined */
    uint64_t rounds;                       /* counted: started after the warm-up */
    uint64_t total_rounds;
    uint64_t acks[BT_MAX_NODES];           /* PUSH_ACKs (or bare acks) from each shard */
    double last_done;                      /* when the last counted round ended */
    int rc;
    auxps_error_t err;
    pthread_t thread;
    int started;
} bworker_t;

/* wire_free_fn of a pushed gradient slice: the buffer stays; count it released. */
static void push_released(void *data, void *hint) {
    (void)data;
    atomic_fetch_sub((atomic_int *)hint, 1);
}

static int wait_released(bworker_t *w) {
    double deadline = clock_now_s() + w->plan->timeout_ms / 1000.0;
    while (atomic_load(&w->inflight) > 0) {
        if (clock_now_s() > deadline)
            return auxps_error_set(&w->err, AUXPS_EIO, "worker %" PRIu32 ": ZeroMQ held a pushed buffer "
                                   "for %" PRIu32 " ms", w->id, w->plan->timeout_ms);
        nanosleep(&(struct timespec){0, 100000}, NULL);
    }
    return 0;
}

static int worker_connect(bworker_t *w) {
    const plan_t *p = w->plan;
    if ((w->ctx = zmq_ctx_new()) == NULL) return peer_zfail("worker: zmq_ctx_new", &w->err);
    char route[32];
    snprintf(route, sizeof route, "bench-w%" PRIu32, w->id);
    for (int s = 0; s < p->nshards; s++) {
        /* The real worker's options (worker.c, welcome), and its own routing id. */
        void *sock = w->socks[s] = zmq_socket(w->ctx, ZMQ_DEALER);
        if (sock == NULL || peer_sockopt(sock, ZMQ_LINGER, 0) || peer_sockopt(sock, ZMQ_SNDTIMEO, (int)p->timeout_ms) ||
            wire_socket_limits(sock) != 0 || zmq_setsockopt(sock, ZMQ_ROUTING_ID, route, strlen(route)) != 0)
            return peer_zfail("worker: node socket", &w->err);
        if (curve_connect(p->curve, sock, &w->err) != 0) return w->err.code;
        if (zmq_connect(sock, p->shards[s].endpoint) != 0)
            return auxps_error_set(&w->err, AUXPS_EIO, "worker %" PRIu32 ": cannot connect to %s: %s", w->id,
                                   p->shards[s].endpoint, zmq_strerror(zmq_errno()));
    }
    return 0;
}

static int send_pull(bworker_t *w, int s) {
    const plan_t *p = w->plan;
    const wire_shard_t *sh = &p->shards[s];
    w->pull_rid[s] = w->next_rid++;
    if (p->path == PATH_BARE) {
        if (zmq_send(w->socks[s], zeros, p->pull_hdr[s], 0) < 0) return peer_zfail("worker: bare request", &w->err);
        return 0;
    }
    wire_msg_t m;
    memset(&m, 0, sizeof m);
    m.type = WIRE_PULL;
    m.rid = w->pull_rid[s];
    m.pull = (wire_pull_t){w->id, sh->id, WIRE_VEC_PARAMS, sh->offset, sh->length, w->clock,
                           p->coded ? WIRE_ENC_KBIT : WIRE_ENC_F32};
    return wire_send(w->socks[s], NULL, 0, &m, NULL, NULL, 0, &w->err);
}

static int send_push(bworker_t *w, int s) {
    const plan_t *p = w->plan;
    const wire_shard_t *sh = &p->shards[s];
    const float *grad = w->grad[w->clock % 2];
    void *slice = (void *)(grad + sh->offset);
    const size_t size = p->push_bytes[s];
    w->push_rid[s] = w->next_rid++;
    atomic_fetch_add(&w->inflight, 1);
    if (p->path == PATH_BARE) {
        zmq_msg_t pm;
        if (zmq_msg_init_data(&pm, slice, size, push_released, &w->inflight) != 0) {
            atomic_fetch_sub(&w->inflight, 1);
            return peer_zfail("worker: bare push", &w->err);
        }
        if (zmq_send(w->socks[s], zeros, p->push_hdr[s], ZMQ_SNDMORE) < 0 || zmq_msg_send(&pm, w->socks[s], 0) < 0) {
            int rc = peer_zfail("worker: bare push", &w->err);
            zmq_msg_close(&pm); /* releases the slice */
            return rc;
        }
        return 0;
    }
    wire_msg_t m;
    memset(&m, 0, sizeof m);
    m.type = WIRE_PUSH;
    m.rid = w->push_rid[s];
    m.push = (wire_push_t){w->id, sh->id, sh->offset, sh->length, w->clock, w->version[s], p->samples,
                           WIRE_ENC_F32, NULL, 0};
    m.payload = slice;
    m.payload_size = size;
    if (p->coded) { /* as worker.c encode_q8 */
        uint32_t nq = 0;
        int rc = coded_q8_encode(p->model, sh->offset, sh->length, grad, w->resid, w->qcodes, w->qsegs[s],
                                 (uint32_t)model_num_tensors(p->model), &nq, &w->err);
        if (rc != 0) {
            atomic_fetch_sub(&w->inflight, 1);
            return rc;
        }
        m.push.encoding = WIRE_ENC_Q8;
        m.push.segs = w->qsegs[s];
        m.push.nsegs = nq;
        m.payload = w->qcodes + sh->offset;
    }
    return wire_send(w->socks[s], NULL, 0, &m, push_released, &w->inflight, 0, &w->err);
}

/* Coded: PULL_REP m into params (float32 segments) and wq (the k-bit weights), as worker.c
 * take_weights. */
static int take_codes(bworker_t *w, const wire_msg_t *m, auxps_error_t *err) {
    return coded_take_kbit(w->plan->model, m, model_spec(w->plan->model)->wbits, w->params, w->wq, w->codes, err);
}

/* Reads one message from shard s of the real path; *done = 1 if it answers an outstanding
 * request: the PULL, or with push the PUSH sent before it. Returns 0 or a negative error. */
static int recv_auxps(bworker_t *w, int s, int push, int *done) {
    const wire_shard_t *sh = &w->plan->shards[s];
    auxps_error_t e = {0};
    int rc = wire_recv(w->socks[s], 0, &w->in, ZMQ_DONTWAIT, &e);
    if (rc == AUXPS_EIO && (errno == EAGAIN || errno == EINTR)) return 0;
    if (rc != 0) return auxps_error_set(&w->err, rc, "worker %" PRIu32 ": shard %d: %s", w->id, s, e.msg);
    wire_msg_t m;
    if ((rc = wire_decode_in(&w->in, &m, &e)) != 0)
        return auxps_error_set(&w->err, rc, "worker %" PRIu32 ": shard %d sent a malformed message: %s",
                               w->id, s, e.msg);
    if (m.type == WIRE_HEARTBEAT) {
        rc = 0;
    } else if (m.type == WIRE_ERROR) {
        rc = auxps_error_set(&w->err, AUXPS_EIO, "worker %" PRIu32 ": shard %d refused %s: ERROR %s: %s", w->id, s,
                             wire_type_name(push && m.rid == w->push_rid[s] ? WIRE_PUSH : WIRE_PULL),
                             wire_err_name(m.error.code), m.error.text);
    } else if (m.type == WIRE_PULL_REP && m.rid == w->pull_rid[s]) {
        const wire_pull_rep_t *r = &m.pull_rep;
        if (r->shard != sh->id || r->vec != WIRE_VEC_PARAMS || r->offset != sh->offset || r->length != sh->length)
            rc = auxps_error_set(&w->err, AUXPS_EIO, "worker %" PRIu32 ": shard %d answered PULL with another "
                                 "range", w->id, s);
        else if ((rc = w->plan->coded ? take_codes(w, &m, &e) : wire_payload_f32(&m, w->params + sh->offset, &e)) != 0)
            rc = auxps_error_set(&w->err, rc, "worker %" PRIu32 ": shard %d: %s", w->id, s, e.msg);
        else {
            w->version[s] = r->version;
            *done = 1;
        }
    } else if (push && m.type == WIRE_PUSH_ACK && m.rid == w->push_rid[s] && m.push_ack.vec == WIRE_VEC_PARAMS) {
        w->acks[s]++;
        *done = 1;
    } else {
        rc = auxps_error_set(&w->err, AUXPS_EIO, "worker %" PRIu32 ": shard %d sent %s (rid %" PRIu32 ") while "
                             "PULL %" PRIu32 " was outstanding", w->id, s, wire_type_name(m.type), m.rid,
                             w->pull_rid[s]);
    }
    wire_msg_clear(&m);
    return rc;
}

/* Reads one message from bare server s: [header, slice] answers a pull, [header] a push (with
 * push: the first answer). */
static int recv_bare(bworker_t *w, int s, int push, int *done) {
    size_t sizes[2] = {0, 0};
    int frames = 0, more = 1, rc = 0;
    while (more) {
        zmq_msg_t part;
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, w->socks[s], frames == 0 ? ZMQ_DONTWAIT : 0) < 0) {
            int e = zmq_errno();
            zmq_msg_close(&part);
            if (frames == 0 && (e == EAGAIN || e == EINTR)) return 0;
            errno = e;
            return peer_zfail("worker: bare reply", &w->err);
        }
        more = zmq_msg_more(&part);
        if (frames < 2) sizes[frames] = zmq_msg_size(&part);
        frames++;
        zmq_msg_close(&part);
    }
    if ((frames != 1 || !push) && (frames != 2 || sizes[1] != w->plan->rep_bytes[s]))
        rc = auxps_error_set(&w->err, AUXPS_EIO, "worker %" PRIu32 ": bare server %d sent %d frames (%zu "
                             "bytes last)", w->id, s, frames, sizes[frames > 1]);
    else if (frames == 1)
        w->acks[s]++;
    *done = rc == 0;
    return rc;
}

/* Sends a PULL to every shard, with push a PUSH right before it on each link (worker.c
 * push_all with the next batch's pull), then waits for every answer, handling them as they
 * come. */
static int exchange(bworker_t *w, int push) {
    const plan_t *p = w->plan;
    int pending[BT_MAX_NODES], left = 0, rc;
    for (int s = 0; s < p->nshards; s++) {
        if ((push && (rc = send_push(w, s)) != 0) || (rc = send_pull(w, s)) != 0) return rc;
        pending[s] = 1 + push;
        left += pending[s];
    }
    const double deadline = clock_now_s() + p->timeout_ms / 1000.0;
    while (left > 0) {
        zmq_pollitem_t items[BT_MAX_NODES];
        int which[BT_MAX_NODES], n = 0;
        for (int s = 0; s < p->nshards; s++)
            if (pending[s]) items[n] = (zmq_pollitem_t){w->socks[s], 0, ZMQ_POLLIN, 0}, which[n++] = s;
        double wait = deadline - clock_now_s();
        if (wait <= 0)
            return auxps_error_set(&w->err, AUXPS_EIO, "worker %" PRIu32 ": no answer to %s within %" PRIu32
                                   " ms", w->id, push ? "PUSH and PULL" : "PULL", p->timeout_ms);
        if (zmq_poll(items, n, (long)(wait * 1000) + 1) < 0) {
            if (zmq_errno() == EINTR) continue;
            return peer_zfail("worker: zmq_poll", &w->err);
        }
        for (int i = 0; i < n; i++) {
            if (!(items[i].revents & ZMQ_POLLIN)) continue;
            int s = which[i], done = 0;
            rc = p->path == PATH_BARE ? recv_bare(w, s, push, &done) : recv_auxps(w, s, push, &done);
            if (rc != 0) return rc;
            if (done) pending[s]--, left--;
        }
    }
    return 0;
}

static void *worker_thread(void *arg) {
    bworker_t *w = arg;
    plan_t *p = w->plan;
    if ((w->rc = worker_connect(w)) != 0 || (w->rc = exchange(w, 0)) != 0) goto done; /* the first batch's pull */
    for (;;) {
        const double t0 = clock_now_s();
        if ((t0 >= p->t_end && w->rounds > 0) || atomic_load(&p->abort)) break;
        /* The worker's batch minus the compute: worker.c push_all with the next batch's PULL
         * behind each PUSH, after ZeroMQ has released the last pushes (worker.c waits so before
         * the backward pass rewrites what they sent). */
        if ((w->rc = wait_released(w)) != 0 || (w->rc = exchange(w, 1)) != 0) break;
        const double t1 = clock_now_s();
        w->clock++;
        w->total_rounds++;
        if (t0 >= p->t_warm) {
            w->rounds++;
            w->last_done = t1;
        }
    }
    if (w->rc == 0) w->rc = wait_released(w);
done:
    wire_in_close(&w->in);
    for (int s = 0; s < BT_MAX_NODES; s++)
        if (w->socks[s] != NULL) zmq_close(w->socks[s]);
    if (w->ctx != NULL) zmq_ctx_term(w->ctx); /* every zero-copy push is released by now */
    atomic_fetch_add(&p->finished, 1);
    return NULL;
}

/* ---- bare servers ---------------------------------------------------------------------- */

typedef struct {
    const plan_t *plan;
    int shard;
    void *ctx, *sock;
    curve_zap_t *zap;                      /* --curve: the ZAP handler of ctx */
    char endpoint[WIRE_MAX_ENDPOINT + 1];
    float *slice;                          /* (shard length) the reply, sent without a copy */
    atomic_int stop;
    int rc;
    auxps_error_t err;
    pthread_t thread;
    int started;
} bare_t;

static void keep_buffer(void *data, void *hint) { (void)data, (void)hint; } /* freed after zmq_ctx_term */

/* Answers one waiting message; returns 1 if there was one, 0 if none, or a negative error. */
static int bare_serve_one(bare_t *b) {
    const size_t slice = b->plan->rep_bytes[b->shard];
    zmq_msg_t route;
    zmq_msg_init(&route);
    if (zmq_msg_recv(&route, b->sock, ZMQ_DONTWAIT) < 0) {
        int e = zmq_errno();
        zmq_msg_close(&route);
        if (e == EAGAIN || e == EINTR) return 0;
        errno = e;
        return peer_zfail("bare server: recv", &b->err);
    }
    int frames = 0, more = zmq_msg_more(&route);
    while (more) {
        zmq_msg_t part;
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, b->sock, 0) < 0) {
            zmq_msg_close(&part);
            zmq_msg_close(&route);
            return peer_zfail("bare server: recv", &b->err);
        }
        more = zmq_msg_more(&part);
        frames++;
        zmq_msg_close(&part);
    }
    int rc = 1;
    /* 1 frame: a pull, answered with a header and the slice; 2: a push, answered with an ack. */
    const size_t hdr = frames == 1 ? b->plan->rep_hdr[b->shard] : b->plan->ack_hdr[b->shard];
    if (zmq_msg_send(&route, b->sock, ZMQ_SNDMORE) < 0 ||
        zmq_send(b->sock, zeros, hdr, frames == 1 ? ZMQ_SNDMORE : 0) < 0)
        rc = peer_zfail("bare server: send", &b->err);
    if (rc == 1 && frames == 1) {
        zmq_msg_t pm;
        if (zmq_msg_init_data(&pm, b->slice, slice, keep_buffer, NULL) != 0 || zmq_msg_send(&pm, b->sock, 0) < 0) {
            rc = peer_zfail("bare server: send", &b->err);
            zmq_msg_close(&pm);
        }
    }
    zmq_msg_close(&route); /* a no-op once sent */
    return rc;
}

static void *bare_thread(void *arg) {
    bare_t *b = arg;
    while (!atomic_load(&b->stop)) {
        zmq_pollitem_t it = {b->sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, BT_POLL_MS) < 0) {
            if (zmq_errno() == EINTR) continue;
            b->rc = peer_zfail("bare server: zmq_poll", &b->err);
            break;
        }
        int r;
        while ((r = bare_serve_one(b)) == 1) {}
        if (r < 0) {
            b->rc = r;
            break;
        }
    }
    return NULL;
}

static int bare_start(bare_t *b, plan_t *p, int shard) {
    memset(b, 0, sizeof *b);
    b->plan = p;
    b->shard = shard;
    atomic_init(&b->stop, 0);
    size_t len = sizeof b->endpoint;
    if ((b->slice = calloc(p->shards[shard].length, sizeof(float))) == NULL)
        return auxps_error_set(&b->err, AUXPS_ENOMEM, "out of memory");
    if ((b->ctx = zmq_ctx_new()) == NULL) return peer_zfail("bare server: zmq_ctx_new", &b->err);
    if (p->curve != NULL && (b->zap = curve_zap_start(p->curve, b->ctx, "bare", NULL, &b->err)) == NULL)
        return b->err.code;
    if ((b->sock = zmq_socket(b->ctx, ZMQ_ROUTER)) == NULL ||
        peer_sockopt(b->sock, ZMQ_LINGER, 0) || peer_sockopt(b->sock, ZMQ_SNDHWM, BT_HWM) ||
        peer_sockopt(b->sock, ZMQ_RCVHWM, BT_HWM) || wire_socket_limits(b->sock) != 0 ||
        curve_serve(p->curve, b->sock, &b->err) != 0 ||
        zmq_bind(b->sock, BT_BIND) != 0 || zmq_getsockopt(b->sock, ZMQ_LAST_ENDPOINT, b->endpoint, &len) != 0)
        return peer_zfail("bare server: socket", &b->err);
    b->endpoint[sizeof b->endpoint - 1] = '\0';
    snprintf(p->shards[shard].endpoint, sizeof p->shards[shard].endpoint, "%s", b->endpoint);
    if (pthread_create(&b->thread, NULL, bare_thread, b) != 0)
        return auxps_error_set(&b->err, AUXPS_EIO, "bare server: cannot start a thread");
    b->started = 1;
    return 0;
}

static void bare_stop(bare_t *b) {
    atomic_store(&b->stop, 1);
    if (b->started) pthread_join(b->thread, NULL);
    b->started = 0;
    if (b->sock != NULL) zmq_close(b->sock);
    curve_zap_stop(&b->zap);
    if (b->ctx != NULL) zmq_ctx_term(b->ctx); /* every reply is released by now */
    b->sock = b->ctx = NULL;
    free(b->slice);
    b->slice = NULL;
}

/* ---- real nodes and the minimal coordinator -------------------------------------------- */

/* A node in its thread, and what the coordinator knows of it. */
typedef struct {
    node_t *node;
    pthread_t thread;
    int started;
    volatile sig_atomic_t stop;
    FILE *log;                             /* the node's log, shown if something fails */
    char *log_buf;
    size_t log_len;
    int rc;
    auxps_error_t err;
} bnode_t;

typedef struct {
    unsigned char route[WIRE_MAX_ROUTE];
    size_t route_size;
    uint32_t hello_rid;
    int ready, bye;
    double last_sent;
} peer_t;

typedef struct {
    const bench_t *b;
    plan_t *plan;
    void *ctx, *router;
    char endpoint[WIRE_MAX_ENDPOINT + 1];
    peer_t peers[BT_MAX_NODES];
    int npeers, welcomed, nready, nbye;
    uint32_t rid;
    wire_in_t in;
    auxps_error_t err;
} bcoord_t;

static void *node_thread(void *arg) {
    bnode_t *n = arg;
    n->rc = node_run(n->node, &n->stop, n->log, NULL, &n->err);
    return NULL;
}

static int coord_send(bcoord_t *c, peer_t *p, wire_msg_t *m) {
    p->last_sent = clock_now_s();
    if (wire_send(c->router, p->route, p->route_size, m, NULL, NULL, 0, &c->err) != 0)
        return auxps_error_set(&c->err, AUXPS_EIO, "coordinator: sending %s: %s", wire_type_name(m->type), c->err.msg);
    return 0;
}

static int send_welcome(bcoord_t *c, int k) {
    const auxps_config_t *cf = &c->b->cfg;
    const uint64_t golden = 0x9E3779B97F4A7C15ull;
    wire_msg_t m;
    memset(&m, 0, sizeof m);
    m.type = WIRE_WELCOME;
    m.rid = c->peers[k].hello_rid;
    m.welcome = (wire_welcome_t){
        .role = WIRE_ROLE_NODE, .id = (uint32_t)k, .consistency = WIRE_CONS_ASYNC, .staleness = 0,
        .num_workers = (uint32_t)c->plan->nworkers, .num_params = c->b->nparams, .num_stats = c->b->nstats,
        .seed = cf->train.seed, .stream_seed = (cf->train.seed ^ 0x5A5A5A5Aull) ^ ((uint64_t)(k + 1) * golden),
        .heartbeat_ms = (uint32_t)cf->cluster.heartbeat_ms, .timeout_ms = (uint32_t)cf->cluster.timeout_ms,
        .shards = c->plan->shards, .nshards = (uint32_t)c->plan->nshards, .config = c->b->config_text};
    return coord_send(c, &c->peers[k], &m);
}

static int send_simple(bcoord_t *c, peer_t *p, uint32_t type) {
    wire_msg_t m;
    memset(&m, 0, sizeof m);
    m.type = type;
    m.rid = c->rid++;
    if (type == WIRE_HEARTBEAT) m.heartbeat = (wire_heartbeat_t){WIRE_ROLE_COORD, WIRE_ID_COORD};
    else m.done = (wire_done_t){WIRE_DONE_FINISHED, 0, 0};
    return coord_send(c, p, &m);
}

static int on_hello(bcoord_t *c, int k, const wire_msg_t *m) {
    if (m->hello.role != WIRE_ROLE_NODE || m->hello.endpoint[0] == '\0')
        return auxps_error_set(&c->err, AUXPS_EIO, "coordinator: a HELLO from something that is not a node");
    if (k >= 0) { /* a resend: the same answer */
        c->peers[k].hello_rid = m->rid;
        return c->welcomed ? send_welcome(c, k) : 0;
    }
    if (c->npeers >= c->plan->nshards)
        return auxps_error_set(&c->err, AUXPS_EIO, "coordinator: more nodes than the %d started", c->plan->nshards);
    peer_t *p = &c->peers[c->npeers];
    memcpy(p->route, c->in.route, c->in.route_size);
    p->route_size = c->in.route_size;
    p->hello_rid = m->rid;
    snprintf(c->plan->shards[c->npeers].endpoint, sizeof c->plan->shards[0].endpoint, "%s", m->hello.endpoint);
    if (++c->npeers < c->plan->nshards) return 0;
    c->welcomed = 1;
    for (int i = 0; i < c->npeers; i++) {
        int rc = send_welcome(c, i);
        if (rc != 0) return rc;
    }
    return 0;
}

/* Handles one message from a node. Returns 0 or a negative error (a refusal, a bad shard). */
static int coord_on_message(bcoord_t *c) {
    auxps_error_t e = {0};
    wire_msg_t m;
    int rc = wire_decode_in(&c->in, &m, &e);
    if (rc != 0) return auxps_error_set(&c->err, rc, "coordinator: a malformed message from a node: %s", e.msg);
    int k = -1;
    for (int i = 0; i < c->npeers; i++)
        if (c->peers[i].route_size == c->in.route_size && memcmp(c->peers[i].route, c->in.route, c->in.route_size) == 0)
            k = i;
    if (m.type == WIRE_HELLO) {
        rc = on_hello(c, k, &m);
    } else if (k < 0) {
        rc = auxps_error_set(&c->err, AUXPS_EIO, "coordinator: %s from an unregistered peer", wire_type_name(m.type));
    } else if (m.type == WIRE_NODE_READY) {
        const wire_node_ready_t *r = &m.node_ready;
        const wire_shard_t *s = &c->plan->shards[k];
        if (r->node != (uint32_t)k || r->offset != s->offset || r->length != s->length ||
            r->stats_offset != s->stats_offset || r->stats_length != s->stats_length)
            rc = auxps_error_set(&c->err, AUXPS_EIO, "coordinator: node %d is ready with another shard", k);
        else if (!c->peers[k].ready)
            c->peers[k].ready = 1, c->nready++;
    } else if (m.type == WIRE_ERROR) {
        rc = auxps_error_set(&c->err, AUXPS_EIO, "node %d sent ERROR %s: %s", k, wire_err_name(m.error.code),
                             m.error.text);
    } else if (m.type == WIRE_BYE) {
        if (!c->peers[k].bye) c->peers[k].bye = 1, c->nbye++;
    } else if (m.type != WIRE_HEARTBEAT && m.type != WIRE_NODE_STATS) {
        rc = auxps_error_set(&c->err, AUXPS_EIO, "coordinator: node %d sent %s", k, wire_type_name(m.type));
    }
    wire_msg_clear(&m);
    return rc;
}

/* Serves the nodes for at most ms: their messages, and a HEARTBEAT to each welcomed node every
 * H. Returns 0 or a negative error. */
static int coord_pump(bcoord_t *c, long ms) {
    const double h = c->b->cfg.cluster.heartbeat_ms / 1000.0;
    if (c->welcomed)
        for (int k = 0; k < c->npeers; k++)
            if (!c->peers[k].bye && clock_now_s() - c->peers[k].last_sent >= h) {
                int rc = send_simple(c, &c->peers[k], WIRE_HEARTBEAT);
                if (rc != 0) return rc;
            }
    zmq_pollitem_t it = {c->router, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, ms) < 0) return zmq_errno() == EINTR ? 0 : peer_zfail("coordinator: zmq_poll", &c->err);
    for (;;) {
        auxps_error_t e = {0};
        int rc = wire_recv(c->router, 1, &c->in, ZMQ_DONTWAIT, &e);
        if (rc == AUXPS_EIO && (errno == EAGAIN || errno == EINTR)) return 0;
        if (rc != 0) return auxps_error_set(&c->err, rc, "coordinator: %s", e.msg);
        if ((rc = coord_on_message(c)) != 0) return rc;
    }
}

/* Pumps until *count reaches want or ms pass. */
static int coord_wait(bcoord_t *c, const int *count, int want, long ms, const char *what) {
    const double deadline = clock_now_s() + ms / 1000.0;
    while (*count < want) {
        double left = deadline - clock_now_s();
        if (left <= 0)
            return auxps_error_set(&c->err, AUXPS_EIO, "coordinator: %d of %d nodes %s within %ld ms", *count, want,
                                   what, ms);
        int rc = coord_pump(c, left * 1000 < BT_POLL_MS ? (long)(left * 1000) + 1 : BT_POLL_MS);
        if (rc != 0) return rc;
    }
    return 0;
}

/* ---- one configuration ----------------------------------------------------------------- */

typedef struct {
    int path, workers, nodes;
    uint64_t rounds;
    size_t bytes;                          /* payload bytes of one round, both directions */
    double seconds, rate;                  /* rate: rounds/s over all workers */
} result_t;

/* Adds the run part to the sum r of a configuration's runs of one path. */
static void add_run(result_t *r, const result_t *part) {
    const uint64_t rounds = r->rounds + part->rounds;
    const double seconds = r->seconds + part->seconds;
    *r = *part;
    r->rounds = rounds;
    r->seconds = seconds;
    r->rate = seconds > 0 ? (double)rounds / seconds : 0.0;
}

/* Runs the workers of plan p against servers already listening; fills res. */
static int run_workers(const bench_t *b, plan_t *p, bworker_t *ws, bcoord_t *c, result_t *res, auxps_error_t *err) {
    int rc = 0, started = 0;
    memset(ws, 0, sizeof *ws * (size_t)p->nworkers);
    p->t_warm = clock_now_s() + BENCH_TRANSPORT_WARMUP_S;
    p->t_end = p->t_warm + b->run_seconds;
    for (int i = 0; i < p->nworkers; i++) {
        bworker_t *w = &ws[i];
        w->plan = p;
        w->id = (uint32_t)i;
        w->grad[0] = b->grad, w->grad[1] = b->grad + b->nparams;
        atomic_init(&w->inflight, 0);
        int ok = (w->params = malloc(b->nparams * sizeof(float))) != NULL;
        if (ok && p->coded) {
            ok = (w->wq = malloc(b->nparams * sizeof(float))) && (w->resid = calloc(b->nparams, sizeof(float))) &&
                 (w->codes = malloc(b->nparams)) && (w->qcodes = malloc(b->nparams));
            for (int s = 0; s < p->nshards && ok; s++)
                ok = (w->qsegs[s] = malloc(sizeof(wire_seg_t) * (size_t)model_num_tensors(b->model))) != NULL;
        }
        if (!ok) {
            rc = auxps_error_set(err, AUXPS_ENOMEM, "out of memory");
            break;
        }
        if (pthread_create(&w->thread, NULL, worker_thread, w) != 0) {
            rc = auxps_error_set(err, AUXPS_EIO, "cannot start a worker thread");
            break;
        }
        w->started = 1;
        started++;
    }
    if (rc != 0) atomic_store(&p->abort, 1);
    /* While the workers run, the coordinator keeps the nodes' links alive. */
    while (atomic_load(&p->finished) < started) {
        if (c == NULL) {
            nanosleep(&(struct timespec){0, BT_POLL_MS * 1000000L}, NULL);
        } else if (rc == 0 && (rc = coord_pump(c, BT_POLL_MS)) != 0) {
            auxps_error_set(err, rc, "%s", c->err.msg);
            atomic_store(&p->abort, 1);
        } else if (rc != 0) {
            nanosleep(&(struct timespec){0, BT_POLL_MS * 1000000L}, NULL);
        }
    }
    double last = p->t_warm;
    memset(res, 0, sizeof *res);
    for (int i = 0; i < p->nworkers; i++) {
        bworker_t *w = &ws[i];
        if (w->started) pthread_join(w->thread, NULL);
        w->started = 0;
        free(w->params), free(w->wq), free(w->resid), free(w->codes), free(w->qcodes);
        w->params = w->wq = w->resid = NULL;
        w->codes = w->qcodes = NULL;
        for (int s = 0; s < BT_MAX_NODES; s++) free(w->qsegs[s]), w->qsegs[s] = NULL;
        if (rc == 0 && w->rc != 0) rc = auxps_error_set(err, w->rc, "%s", w->err.msg);
        res->rounds += w->rounds;
        if (w->rounds > 0 && w->last_done > last) last = w->last_done;
    }
    if (rc == 0 && atomic_load(&p->abort)) rc = auxps_error_set(err, AUXPS_EIO, "the run was aborted");
    res->path = p->path;
    for (int s = 0; s < p->nshards; s++) res->bytes += p->rep_bytes[s] + p->push_bytes[s];
    res->workers = p->nworkers;
    res->nodes = p->nshards;
    res->seconds = last - p->t_warm;
    res->rate = res->seconds > 0 ? (double)res->rounds / res->seconds : 0.0;
    return rc;
}

static void plan_init(const bench_t *b, plan_t *p, int path, int workers, int nodes) {
    memset(p, 0, sizeof *p);
    p->path = path;
    p->nworkers = workers;
    p->nshards = nodes;
    memcpy(p->shards, b->map[nodes], sizeof p->shards[0] * (size_t)nodes);
    p->samples = (uint32_t)b->cfg.train.batch_size;
    p->timeout_ms = (uint32_t)b->cfg.cluster.timeout_ms;
    p->curve = b->curve;
    p->coded = b->coded;
    p->model = b->model;
    atomic_init(&p->finished, 0);
    atomic_init(&p->abort, 0);
}

static int run_bare(const bench_t *b, int workers, int nodes, result_t *res, auxps_error_t *err) {
    plan_t p;
    bare_t servers[BT_MAX_NODES];
    bworker_t ws[BT_MAX_WORKERS];
    plan_init(b, &p, PATH_BARE, workers, nodes);
    memset(servers, 0, sizeof servers);
    int rc = plan_payloads(&p, err);
    if (rc == 0) rc = frame_sizes(&p, b->grad, err);
    for (int s = 0; s < nodes && rc == 0; s++)
        if ((rc = bare_start(&servers[s], &p, s)) != 0) auxps_error_set(err, rc, "%s", servers[s].err.msg);
    if (rc == 0) rc = run_workers(b, &p, ws, NULL, res, err);
    for (int s = 0; s < nodes; s++) {
        bare_stop(&servers[s]);
        if (rc == 0 && servers[s].rc != 0) rc = auxps_error_set(err, servers[s].rc, "%s", servers[s].err.msg);
    }
    plan_free(&p);
    return rc;
}

static int run_auxps(const bench_t *b, int workers, int nodes, result_t *res, auxps_error_t *err) {
    plan_t p;
    bnode_t bn[BT_MAX_NODES];
    bworker_t ws[BT_MAX_WORKERS];
    bcoord_t c;
    plan_init(b, &p, PATH_AUXPS, workers, nodes);
    memset(bn, 0, sizeof bn);
    memset(ws, 0, sizeof ws);
    memset(&c, 0, sizeof c);
    c.b = b;
    c.plan = &p;
    size_t len = sizeof c.endpoint;
    int rc = plan_payloads(&p, err);
    curve_zap_t *zap = NULL;
    if (rc != 0) goto done;
    if ((c.ctx = zmq_ctx_new()) == NULL) {
        rc = peer_zfail("coordinator: zmq_ctx_new", err);
        goto done;
    }
    if (b->curve != NULL && (zap = curve_zap_start(b->curve, c.ctx, "coord", NULL, err)) == NULL) {
        rc = err->code;
        goto done;
    }
    if ((c.router = zmq_socket(c.ctx, ZMQ_ROUTER)) == NULL ||
        peer_sockopt(c.router, ZMQ_LINGER, 0) || wire_socket_limits(c.router) != 0 ||
        curve_serve(b->curve, c.router, err) != 0 || zmq_bind(c.router, BT_BIND) != 0 ||
        zmq_getsockopt(c.router, ZMQ_LAST_ENDPOINT, c.endpoint, &len) != 0) {
        rc = peer_zfail("coordinator: socket", err);
        goto done;
    }
    c.endpoint[sizeof c.endpoint - 1] = '\0';
    for (int k = 0; k < nodes; k++) {
        bnode_t *n = &bn[k];
        if ((n->log = open_memstream(&n->log_buf, &n->log_len)) == NULL) {
            rc = auxps_error_set(err, AUXPS_ENOMEM, "out of memory");
            goto done;
        }
        if ((n->node = node_new_curve(c.endpoint, BT_BIND, b->curve, err)) == NULL) {
            rc = err->code;
            goto done;
        }
        if (pthread_create(&n->thread, NULL, node_thread, n) != 0) {
            rc = auxps_error_set(err, AUXPS_EIO, "cannot start a node thread");
            goto done;
        }
        n->started = 1;
    }
    /* HELLO -> WELCOME (once all have registered) -> NODE_READY, as PROTOCOL.md section 4. */
    if ((rc = coord_wait(&c, &c.npeers, nodes, BENCH_TRANSPORT_SETUP_MS, "registered")) != 0 ||
        (rc = coord_wait(&c, &c.nready, nodes, BENCH_TRANSPORT_SETUP_MS, "ready")) != 0) {
        auxps_error_set(err, rc, "%s", c.err.msg);
        goto done;
    }
    /* The workers are members of the (async) run: MEMBERSHIP joined for each, before they start. */
    for (int k = 0; k < nodes && rc == 0; k++)
        for (int i = 0; i < workers && rc == 0; i++) {
            wire_msg_t m;
            memset(&m, 0, sizeof m);
            m.type = WIRE_MEMBERSHIP;
            m.rid = c.rid++;
            m.membership = (wire_membership_t){(uint32_t)i, 1, 0};
            rc = coord_send(&c, &c.peers[k], &m);
        }
    for (int k = 0; k < nodes && rc == 0; k++) {
        node_counters_t cnt = {0};
        const double until = clock_now_s() + BENCH_TRANSPORT_SETUP_MS / 1000.0;
        while (rc == 0 && cnt.joined < (uint64_t)workers) {
            if (clock_now_s() > until) rc = auxps_error_set(&c.err, AUXPS_EIO, "node %d took in %" PRIu64 " of %d "
                                                            "workers", k, cnt.joined, workers);
            else if ((rc = coord_pump(&c, 5)) == 0) node_get_counters(bn[k].node, &cnt);
        }
    }
    if (rc != 0) {
        auxps_error_set(err, rc, "%s", c.err.msg);
        goto done;
    }
    if ((rc = run_workers(b, &p, ws, &c, res, err)) != 0) goto done;
    for (int k = 0; k < nodes; k++)
        if ((rc = send_simple(&c, &c.peers[k], WIRE_DONE)) != 0) {
            auxps_error_set(err, rc, "%s", c.err.msg);
            goto done;
        }
    if ((rc = coord_wait(&c, &c.nbye, nodes, BT_BYE_MS, "said BYE")) != 0) auxps_error_set(err, rc, "%s", c.err.msg);
done:
    for (int k = 0; k < nodes; k++) {
        bnode_t *n = &bn[k];
        if (n->started) {
            if (rc != 0) n->stop = 2; /* after DONE the node has returned already */
            pthread_join(n->thread, NULL);
            n->started = 0;
            if (rc == 0 && n->rc != 0) rc = auxps_error_set(err, n->rc, "node: %s", n->err.msg);
        }
    }
    /* Count what happened: each node applied exactly the pushes its shard acknowledged. */
    for (int k = 0; k < nodes && rc == 0; k++) {
        node_counters_t cnt;
        node_get_counters(bn[k].node, &cnt);
        uint64_t acked = 0;
        for (int i = 0; i < workers; i++) acked += ws[i].acks[cnt.id < BT_MAX_NODES ? cnt.id : 0];
        if (cnt.id >= (uint32_t)nodes || cnt.pushes != acked || cnt.refused != 0)
            rc = auxps_error_set(err, AUXPS_EIO, "node %" PRIu32 " applied %" PRIu64 " pushes and refused %" PRIu64
                                 " messages; its workers saw %" PRIu64 " acknowledged", cnt.id, cnt.pushes,
                                 cnt.refused, acked);
    }
    for (int k = 0; k < nodes; k++) {
        bnode_t *n = &bn[k];
        if (n->log != NULL) {
            fclose(n->log);
            if (rc != 0 && n->log_len > 0) fprintf(stderr, "%s", n->log_buf);
        }
        free(n->log_buf);
        node_destroy(&n->node);
    }
    wire_in_close(&c.in);
    if (c.router != NULL) zmq_close(c.router);
    curve_zap_stop(&zap);
    if (c.ctx != NULL) zmq_ctx_term(c.ctx);
    plan_free(&p);
    return rc;
}

/* ---- output ---------------------------------------------------------------------------- */

static void print_json(const bench_t *b, const result_t *r, const result_t *bare) {
    const model_spec_t *sp = &b->cfg.model;
    const size_t bytes = b->nparams * sizeof(float);
    printf("{\"bench\":\"transport\",\"path\":\"%s\",\"model\":\"resnet8\",\"wbits\":%d,\"abits\":%d,\"aux\":%s,"
           "\"params\":%zu,\"bytes\":%zu,\"encoding\":\"%s\",\"bytes_per_round\":%zu,\"workers\":%d,\"nodes\":%d,"
           "\"seconds\":%.3f,\"rounds\":%" PRIu64 ",\"rounds_per_s\":%.1f,\"mb_per_s\":%.1f,\"ms_per_round\":%.3f",
           path_names[r->path], sp->wbits, sp->abits, sp->aux ? "true" : "false", b->nparams, bytes,
           b->coded ? "kbit+q8" : "f32", r->bytes, r->workers, r->nodes, r->seconds, r->rounds, r->rate,
           r->rate * (double)r->bytes / 1e6, 1000.0 * r->workers / r->rate);
    if (bare != NULL) printf(",\"ratio_to_bare\":%.3f", r->rate / bare->rate);
    printf(",\"curve\":%s}\n", b->curve != NULL ? "true" : "false");
    fflush(stdout);
}

static void print_table(const bench_t *b, const result_t (*res)[2], int n) {
    const double mb = n > 0 ? (double)res[0][PATH_AUXPS].bytes / 1e6 : 0.0;
    if (b->coded)
        fprintf(stderr, "transport: ResNet-8 W2A2 + aux, %zu values pulled as 2-bit codes and float32 and pushed as "
                "q8, %zu payload bytes per round (f32: %zu), %.2f s per configuration after %.1f s warm-up%s\n",
                b->nparams, n > 0 ? res[0][PATH_AUXPS].bytes : 0, 2 * b->nparams * sizeof(float), b->seconds,
                BENCH_TRANSPORT_WARMUP_S, b->curve != NULL ? ", every link CURVE (both paths)" : "");
    else
        fprintf(stderr, "transport: ResNet-8 W2A2 + aux, %zu float32 (%zu bytes) pulled and pushed per round, "
                "%.2f s per configuration after %.1f s warm-up%s\n", b->nparams, b->nparams * sizeof(float), b->seconds,
                BENCH_TRANSPORT_WARMUP_S, b->curve != NULL ? ", every link CURVE (both paths)" : "");
    fprintf(stderr, "workers  nodes  auxps rounds/s     MB/s  bare rounds/s     MB/s  auxps/bare\n");
    for (int i = 0; i < n; i++) {
        const result_t *bare = &res[i][PATH_BARE], *real = &res[i][PATH_AUXPS];
        fprintf(stderr, "%7d  %5d  %14.1f  %7.1f  %13.1f  %7.1f  %10.2f\n", real->workers, real->nodes, real->rate,
                real->rate * mb, bare->rate, bare->rate * mb, real->rate / bare->rate);
    }
}

/* ---- the command ----------------------------------------------------------------------- */

static int bench_init(bench_t *b, auxps_error_t *err) {
    config_defaults(&b->cfg);
    model_spec_default(&b->cfg.model);
    b->cfg.cluster.consistency = CONS_ASYNC;
    if (b->coded) b->cfg.cluster.pull = PULL_KBIT, b->cfg.cluster.push = PUSH_Q8;
    int rc = config_check(&b->cfg, err);
    if (rc != 0) return rc;
    size_t size = 0;
    FILE *f = open_memstream(&b->config_text, &size);
    if (f == NULL) return auxps_error_set(err, AUXPS_ENOMEM, "out of memory");
    rc = config_write(&b->cfg, f);
    if (fclose(f) != 0 || rc != 0) return auxps_error_set(err, AUXPS_ENOMEM, "cannot write the config text");
    if (size < 1 || size > WIRE_MAX_CONFIG)
        return auxps_error_set(err, AUXPS_EINVAL, "the config is %zu bytes as text: WELCOME carries 1..%u", size,
                               WIRE_MAX_CONFIG);
    if ((b->model = model_new(&b->cfg.model, 1)) == NULL)
        return auxps_error_set(err, AUXPS_ENOMEM, "cannot build the default model");
    b->nparams = model_num_params(b->model);
    b->nstats = model_num_stats(b->model);
    for (int s = 1; s <= BT_MAX_NODES; s++)
        /* the coordinator's shard map, so that the nodes serve the slices of a real run */
        if ((rc = coord_shard_map(b->model, s, b->map[s], err)) != 0) return rc;
    if ((b->grad = malloc(2 * b->nparams * sizeof(float))) == NULL)
        return auxps_error_set(err, AUXPS_ENOMEM, "out of memory");
    /* A small gradient and its negation, pushed in turn: the parameters stay near the model's
     * initial values, as in training. One gradient pushed every round would drive each
     * weight to -g / weight_decay, up to 1.6, where no trained weight goes and the node's tanh
     * takes its exp branch (quant.c) for every block, at 3 times the cost. */
    for (size_t i = 0; i < b->nparams; i++) {
        b->grad[i] = 1e-4f * (float)((int)(i % 17) - 8);
        b->grad[b->nparams + i] = -b->grad[i];
    }
    return 0;
}

static void bench_free(bench_t *b) {
    free(b->config_text);
    free(b->grad);
    model_destroy(&b->model);
    curve_destroy(&b->curve);
}

/* 1 if no count is in l twice. */
static int distinct(const bench_list_t *l) {
    for (int i = 0; i < l->n; i++)
        for (int j = 0; j < i; j++)
            if (l->v[i] == l->v[j]) return 0;
    return 1;
}

static int usage_error(const char *fmt, const char *arg) {
    fprintf(stderr, "auxps bench: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nusage: auxps bench --transport [--seconds S] [--curve] [--coded] [--workers W,..] "
                    "[--nodes S,..]\n");
    return 2;
}

int bench_transport(int argc, char **argv) {
    bench_t b;
    memset(&b, 0, sizeof b);
    b.seconds = BENCH_TRANSPORT_SECONDS;
    int curve = 0;
    bench_list_t nodes = {{1, 2}, 2}, workers = {{1, BT_MAX_WORKERS}, 2};
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--transport") == 0) continue;
        if (strcmp(argv[i], "--curve") == 0) {
            curve = 1;
            continue;
        }
        if (strcmp(argv[i], "--coded") == 0) {
            b.coded = 1;
            continue;
        }
        const int valued = strcmp(argv[i], "--seconds") == 0 || strcmp(argv[i], "--workers") == 0 ||
                           strcmp(argv[i], "--nodes") == 0;
        if (valued && i + 1 == argc) return usage_error("'%s' needs a value", argv[i]);
        if (strcmp(argv[i], "--seconds") == 0) {
            char *end;
            errno = 0;
            double v = strtod(argv[++i], &end);
            if (errno != 0 || end == argv[i] || *end != '\0' || !(v > 0.0) || v > BENCH_TRANSPORT_MAX_SECONDS)
                return usage_error("--seconds '%s': expected a number of seconds in (0, 3600]", argv[i]);
            b.seconds = v;
            continue;
        }
        if (valued) { /* --workers or --nodes */
            const int w = strcmp(argv[i], "--workers") == 0;
            bench_list_t *l = w ? &workers : &nodes;
            if (bench_parse_list(argv[++i], 1, w ? BT_MAX_WORKERS : BT_MAX_NODES, NULL, l) != 0 || !distinct(l))
                return usage_error(w ? "--workers '%s': expected distinct counts in 1..4, comma-separated"
                                     : "--nodes '%s': expected distinct counts in 1..2, comma-separated", argv[i]);
            continue;
        }
        return usage_error("unknown argument '%s' for --transport", argv[i]);
    }
    auxps_error_t err = {0};
    /* Each configuration runs bare, auxps, auxps, bare, each run half the time: a load that
     * changes steadily over the four weighs on both paths alike. */
    static const int order[] = {PATH_BARE, PATH_AUXPS, PATH_AUXPS, PATH_BARE};
    const int runs = (int)(sizeof order / sizeof *order);
    b.run_seconds = b.seconds * 2 / runs;
    result_t res[BT_MAX_NODES * BT_MAX_WORKERS][2];
    memset(res, 0, sizeof res);
    int n = 0, rc = bench_init(&b, &err);
    if (rc == 0 && curve) rc = curve_ephemeral(&b.curve, &err);
    for (int i = 0; i < nodes.n && rc == 0; i++)
        for (int j = 0; j < workers.n && rc == 0; j++, n++) {
            const int S = nodes.v[i], W = workers.v[j];
            for (int k = 0; k < runs && rc == 0; k++) {
                result_t part;
                rc = order[k] == PATH_BARE ? run_bare(&b, W, S, &part, &err) : run_auxps(&b, W, S, &part, &err);
                if (rc == 0) add_run(&res[n][order[k]], &part);
            }
            if (rc != 0) break;
            print_json(&b, &res[n][PATH_BARE], NULL);
            print_json(&b, &res[n][PATH_AUXPS], &res[n][PATH_BARE]);
        }
    if (rc == 0) print_table(&b, (const result_t(*)[2])res, n);
    else fprintf(stderr, "auxps bench: %s\n", err.msg);
    bench_free(&b);
    return rc == 0 ? 0 : 1;
}
