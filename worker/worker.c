/* worker.c - the training worker: registration, leases, the pull / compute / push loop, and
 * evaluations (worker.h has the sequence, docs/CLUSTER.md the why). */
#include "worker.h"

#include "clock.h"
#include "coded.h"
#include "config.h"
#include "data.h"
#include "model.h"
#include "peer.h"
#include "rng.h"

#include <cblas.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#define STOPPED 1                /* a step ends because the run is over, not because it failed */
#define WAIT_FLOOR_MS 10         /* a LEASE wait with ttl 0 still pauses this long */
#define RETRY_MS 200             /* pause before asking again for a lease that was refused */

#define LINK_REQS 2              /* requests in flight on a link: a PUSH and the next batch's PULL */

/* A request awaiting its answer. */
typedef struct {
    wire_msg_t msg;              /* the request as last sent (its rid, type, range), to match the answer and
                                  * to be sent again after a timeout */
    float *dst;                  /* PULL: where the values go */
    wire_free_fn *free_fn;       /* its payload's release (zero-copy pushes), or NULL */
} req_t;

/* The link to one node and its outstanding requests, answered in the order sent (PROTOCOL.md
 * "Consistency": a node processes one worker's messages in order). */
typedef struct {
    void *sock;
    req_t reqs[LINK_REQS];       /* oldest first */
    int nreqs;
    uint32_t nsegs;              /* q8 PUSH: segments (one per tensor of the shard) */
    wire_seg_t *segs;            /* (shard's tensors) their table */
    uint64_t version;            /* params version of the last PULL_REP */
    uint64_t base;               /* params version the batch being trained was computed from */
    int64_t heard;               /* ms: the last send of the requests or the node's last message */
    int attempts;                /* sends of the outstanding requests so far */
    int refused;                 /* the node answered NOT_REGISTERED */
    char route[WIRE_MAX_ROUTE];  /* this worker's routing id on the link */
} link_t;

struct worker {
    void *ctx, *coord;
    const curve_t *curve;        /* CURVE client keys (borrowed); NULL = plain */
    char coord_ep[WIRE_MAX_ENDPOINT + 1];
    int threads;
    FILE *log;
    int ran, welcomed;
    volatile sig_atomic_t *stop;

    /* The run, from WELCOME. */
    uint32_t consistency, heartbeat_ms, timeout_ms;
    uint64_t seed;
    wire_shard_t *shards;        /* (nshards) */
    link_t *links;               /* (nshards) */
    auxps_config_t cfg;
    dataset_t train, test;
    data_transform_t tf;
    model_t *model;
    float *x;                    /* (batch, C, H, W) */
    int *y, *idx;                /* (batch) */
    int *order;                  /* (train.n) the order of epoch order_epoch */
    long order_epoch;
    uint32_t *list;              /* (lease.count) indices of a list lease */
    float *stats_keep;           /* (num_stats) local statistics saved across an evaluation */
    int kbit, q8;                /* cluster.pull = kbit (and weights quantized), cluster.push = q8 */
    uint8_t *codes;              /* (num_params) kbit: the codes of the PULL_REPs */
    uint8_t *qcodes;             /* (num_params) q8: the codes of the PUSHes, sent without a copy */
    float *resid;                /* (num_params) q8: the error feedback (what was not sent yet) */
    rng_t rng;                   /* augmentation, from WELCOME.stream_seed */

    /* The coordinator link. */
    uint32_t coord_rid, node_rid;
    int64_t coord_sent, coord_heard;
    int lease_wait, lease_got, lease_retry;
    uint32_t lease_rid;
    wire_lease_t lease;
    wire_eval_req_t evals[WORKER_MAX_EVALS];
    uint32_t eval_rids[WORKER_MAX_EVALS];
    int nevals, in_eval;
    int done;                    /* DONE or SHUTTING_DOWN came: stop after this batch */
    int coord_lost;              /* the coordinator is gone: stop after this batch and register again */
    int64_t lost_since;
    struct {
        int active;
        uint32_t chunk, epoch, trained;
    } orphan;                    /* the lease held when the coordinator was lost */
    atomic_int inflight;         /* zero-copy payloads ZeroMQ has not released yet */

    uint64_t staleness;          /* of the last batch's pushes, largest over the shards */

    /* PROGRESS since the last report. */
    uint32_t prog_samples, prog_low, prog_aux;
    double prog_loss, prog_loss_low;
    worker_counters_t cnt;
};

static void say(worker_t *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(worker_t *w, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    peer_vsay(w->log, "worker", w->welcomed, w->cnt.id, fmt, ap);
    va_end(ap);
}

worker_t *worker_new(const char *coordinator, int threads, auxps_error_t *err) {
    return worker_new_curve(coordinator, threads, NULL, err);
}

worker_t *worker_new_curve(const char *coordinator, int threads, const curve_t *cv, auxps_error_t *err) {
    if (coordinator == NULL || coordinator[0] == '\0' || strlen(coordinator) > WIRE_MAX_ENDPOINT ||
        threads < 0 || threads > 256) {
        auxps_error_set(err, AUXPS_EINVAL, "worker: a coordinator endpoint of at most %u bytes and "
                        "0..256 threads are needed", WIRE_MAX_ENDPOINT);
        return NULL;
    }
    worker_t *w = calloc(1, sizeof *w);
    if (w == NULL) {
        auxps_error_set(err, AUXPS_ENOMEM, "worker: out of memory");
        return NULL;
    }
    w->cnt.id = UINT32_MAX;
    w->threads = threads;
    w->curve = cv;
    w->order_epoch = -1;
    atomic_init(&w->inflight, 0);
    snprintf(w->coord_ep, sizeof w->coord_ep, "%s", coordinator);
    if ((w->ctx = zmq_ctx_new()) == NULL) {
        peer_zfail("worker: zmq", err);
        goto fail;
    }
    if ((w->coord = peer_coord_socket(w->ctx, coordinator, cv, "worker", err)) == NULL) goto fail;
    return w;
fail:
    worker_destroy(&w);
    return NULL;
}

void worker_destroy(worker_t **wp) {
    if (wp == NULL || *wp == NULL) return;
    worker_t *w = *wp;
    if (w->links != NULL)
        for (uint32_t s = 0; s < w->cnt.nshards; s++)
            if (w->links[s].sock != NULL) zmq_close(w->links[s].sock);
    if (w->coord != NULL) zmq_close(w->coord);
    if (w->ctx != NULL) zmq_ctx_term(w->ctx); /* every zero-copy payload is released by now */
    if (w->links != NULL)
        for (uint32_t s = 0; s < w->cnt.nshards; s++) free(w->links[s].segs);
    free(w->links);
    free(w->shards);
    free(w->codes);
    free(w->qcodes);
    free(w->resid);
    dataset_free(&w->train);
    dataset_free(&w->test);
    model_destroy(&w->model);
    free(w->x);
    free(w->y);
    free(w->idx);
    free(w->order);
    free(w->list);
    free(w->stats_keep);
    free(w);
    *wp = NULL;
}

void worker_get_counters(const worker_t *w, worker_counters_t *c) { *c = w->cnt; }

/* ---- sending --------------------------------------------------------------------------- */

static int send_coord(worker_t *w, wire_msg_t *m, auxps_error_t *err) {
    int rc = wire_send(w->coord, NULL, 0, m, NULL, NULL, 0, err);
    if (rc == 0) w->coord_sent = clock_now_ms();
    return rc;
}

/* A request or one-way message of ours: a fresh rid. */
static int send_new(worker_t *w, wire_msg_t *m, auxps_error_t *err) {
    m->rid = w->coord_rid++;
    return send_coord(w, m, err);
}

static void send_bye(worker_t *w, uint32_t reason) {
    wire_msg_t m;
    memset(&m, 0, sizeof m);
    m.type = WIRE_BYE;
    m.bye = (wire_bye_t){WIRE_ROLE_WORKER, w->welcomed ? w->cnt.id : 0, reason};
    auxps_error_t e = {0};
    send_new(w, &m, &e);
}

static void error_to_coord(worker_t *w, uint32_t rid, uint32_t code, const char *text) {
    auxps_error_t e = {0};
    if (wire_send_error(w->coord, NULL, 0, rid, code, text, &e) == 0) w->coord_sent = clock_now_ms();
}

/* wire_free_fn of a pushed slice: the buffer belongs to the model; only count it released. */
static void push_released(void *data, void *hint) {
    (void)data;
    atomic_fetch_sub((atomic_int *)hint, 1);
}

/* Waits until ZeroMQ has released every zero-copy payload, before the model's buffers change. */
static int wait_released(worker_t *w, auxps_error_t *err) {
    int64_t deadline = clock_now_ms() + w->timeout_ms;
    while (atomic_load(&w->inflight) > 0) {
        if (clock_now_ms() > deadline)
            return auxps_error_set(err, AUXPS_EIO, "worker %" PRIu32 ": ZeroMQ held a pushed "
                                   "buffer for %" PRIu32 " ms", w->cnt.id, w->timeout_ms);
        nanosleep(&(struct timespec){0, 100000}, NULL);
    }
    return 0;
}

/* ---- receiving ------------------------------------------------------------------------- */

/* The coordinator fell silent for T, or a restarted one does not know this worker. In an async
 * run with checkpoints the worker finishes its batch and registers again for at most
 * cluster.rejoin_s (docs/CHECKPOINT.md "Coordinator restart"); otherwise it is an error. */
static int lose_coord(worker_t *w, const char *why, auxps_error_t *err) {
    if (w->consistency != WIRE_CONS_ASYNC || w->cfg.checkpoint.dir[0] == '\0' || w->cfg.cluster.rejoin_s == 0)
        return auxps_error_set(err, AUXPS_EIO, "worker %" PRIu32 ": the coordinator at %s %s", w->cnt.id, w->coord_ep,
                               why);
    if (w->coord_lost) return 0;
    say(w, "the coordinator at %s %s: finishing this batch, then registering again for at most %d s", w->coord_ep,
        why, w->cfg.cluster.rejoin_s);
    w->coord_lost = 1;
    w->lost_since = clock_now_ms();
    return 0;
}

/* One message from the coordinator. Returns 0 or a negative error. */
static int on_coord(worker_t *w, wire_in_t *in, auxps_error_t *err) {
    auxps_error_t e = {0};
    wire_msg_t m;
    int rc = wire_decode_in(in, &m, &e);
    if (rc < 0) {
        say(w, "refused a message from the coordinator: %s", e.msg);
        if (m.type != WIRE_ERROR) error_to_coord(w, m.rid, wire_error_code(rc), e.msg);
        return 0;
    }
    switch (m.type) {
    case WIRE_HEARTBEAT:
    case WIRE_WELCOME: /* the answer to a resent HELLO */
        break;
    case WIRE_LEASE:
        if (!w->lease_wait || m.rid != w->lease_rid || m.lease.worker != w->cnt.id) break;
        w->orphan.active = 0; /* the coordinator handled the CHUNK_DONE sent before the request */
        if (m.lease.mode == WIRE_LEASE_LIST) {
            uint32_t *list = realloc(w->list, (size_t)m.lease.count * sizeof *list);
            if (list == NULL) {
                rc = auxps_error_set(err, AUXPS_ENOMEM, "worker: out of memory for a lease");
                break;
            }
            w->list = list;
            memcpy(list, m.payload, (size_t)m.lease.count * sizeof *list); /* little-endian host */
        }
        w->lease = m.lease;
        w->lease_got = 1;
        break;
    case WIRE_EVAL_REQ:
        if (w->nevals == WORKER_MAX_EVALS) {
            error_to_coord(w, m.rid, WIRE_ERR_INTERNAL, "too many evaluations queued");
            break;
        }
        w->evals[w->nevals] = m.eval_req;
        w->eval_rids[w->nevals++] = m.rid;
        break;
    case WIRE_DONE:
        say(w, "DONE (%s, epoch %" PRIu32 ", step %" PRIu64 ")",
            m.done.reason == WIRE_DONE_FINISHED ? "finished" : "aborted", m.done.epoch, m.done.step);
        w->done = 1;
        break;
    case WIRE_ERROR: {
        uint32_t code = m.error.code;
        int ours = w->lease_wait && m.rid == w->lease_rid;
        if (code == WIRE_ERR_SHUTTING_DOWN) {
            say(w, "the coordinator is shutting down: %s", m.error.text);
            w->done = 1;
        } else if (code == WIRE_ERR_STALE) {
            say(w, "the coordinator says stale: %s", m.error.text);
            if (ours) w->lease_retry = 1;
        } else if (ours && (code == WIRE_ERR_FULL || code == WIRE_ERR_INTERNAL)) {
            w->lease_retry = 1;
        } else if (code == WIRE_ERR_BAD_MESSAGE && !ours) {
            say(w, "the coordinator refused a message: %s", m.error.text);
        } else if (code == WIRE_ERR_NOT_REGISTERED) { /* a restarted coordinator */
            rc = lose_coord(w, "does not know this worker (it restarted)", err);
        } else {
            rc = auxps_error_set(err, AUXPS_EIO, "worker %" PRIu32 ": the coordinator sent ERROR "
                                 "%s: %s", w->cnt.id, wire_err_name(code), m.error.text);
        }
        break;
    }
    default:
        error_to_coord(w, m.rid, WIRE_ERR_BAD_MESSAGE, "not a message for a worker");
        say(w, "refused %s from the coordinator", wire_type_name(m.type));
    }
    wire_msg_clear(&m);
    return rc;
}

/* How long the k-th send of a request waits for its answer: T, then 2T, 4T, at most 8T. */
static int64_t retry_wait_ms(const worker_t *w, const link_t *l) {
    int k = l->attempts < 4 ? l->attempts - 1 : 3;
    return (int64_t)w->timeout_ms << k;
}

/* kbit runs: the params of PULL_REP m into the model, which trains frozen on the k-bit weights
 * (model_set_frozen, model_set_qgrads): coded_take_kbit checks and decodes a k-bit answer; an
 * f32 answer (PROTOCOL.md allows it) is quantized here instead. Returns 0 or AUXPS_EFORMAT
 * with the reason. */
static int take_weights(worker_t *w, const wire_msg_t *m, auxps_error_t *err) {
    const wire_pull_rep_t *r = &m->pull_rep;
    model_t *md = w->model;
    if (r->encoding == WIRE_ENC_KBIT)
        return coded_take_kbit(md, m, w->cfg.model.wbits, model_params(md), model_qweights(md), w->codes, err);
    int rc = wire_payload_f32(m, model_params(md) + r->offset, err);
    if (rc != 0) return rc;
    for (int i = 0; i < model_num_tensors(md); i++) {
        const model_tensor_t *t = model_tensor(md, i);
        if (t->offset >= r->offset && t->offset + t->size <= r->offset + r->length) model_quantize_tensor(md, i);
    }
    return 0;
}

/* The outstanding request of link l with this rid, or NULL. */
static req_t *find_req(link_t *l, uint32_t rid) {
    for (int i = 0; i < l->nreqs; i++)
        if (l->reqs[i].msg.rid == rid) return &l->reqs[i];
    return NULL;
}

/* The request answered (or given up): the others keep their order. */
static void drop_req(link_t *l, req_t *q) {
    const int i = (int)(q - l->reqs);
    memmove(q, q + 1, sizeof *q * (size_t)(l->nreqs - i - 1));
    l->nreqs--;
}

/* One message from node s. Returns 0 or a negative error. */
static int on_node(worker_t *w, uint32_t s, wire_in_t *in, auxps_error_t *err) {
    link_t *l = &w->links[s];
    auxps_error_t e = {0};
    wire_msg_t m;
    int rc = wire_decode_in(in, &m, &e);
    if (rc < 0) {
        if (find_req(l, m.rid) != NULL)
            return auxps_error_set(err, AUXPS_EIO, "worker %" PRIu32 ": node %" PRIu32 " answered "
                                   "with a malformed message: %s", w->cnt.id, s, e.msg);
        say(w, "ignored a malformed message from node %" PRIu32 ": %s", s, e.msg);
        return 0;
    }
    req_t *q = find_req(l, m.rid);
    switch (m.type) {
    case WIRE_HEARTBEAT: break;
    case WIRE_PULL_REP: {
        if (q == NULL || q->msg.type != WIRE_PULL) break; /* a late answer to a request given up */
        const wire_pull_rep_t *r = &m.pull_rep;
        const wire_pull_t *asked = &q->msg.pull;
        if (r->shard != s || r->vec != asked->vec || r->offset != asked->offset || r->length != asked->length) {
            rc = auxps_error_set(err, AUXPS_EIO, "worker %" PRIu32 ": node %" PRIu32 " answered "
                                 "PULL with another range", w->cnt.id, s);
            break;
        }
        if ((rc = r->vec == WIRE_VEC_PARAMS && w->kbit ? take_weights(w, &m, &e)
                                                       : wire_payload_f32(&m, q->dst, &e)) != 0) {
            rc = auxps_error_set(err, AUXPS_EIO, "worker %" PRIu32 ": node %" PRIu32 ": %s",
                                 w->cnt.id, s, e.msg);
            break;
        }
        if (r->vec == WIRE_VEC_PARAMS) l->version = r->version;
        drop_req(l, q);
        break;
    }
    case WIRE_PUSH_ACK:
        if (q == NULL || (q->msg.type != WIRE_PUSH && q->msg.type != WIRE_STATS_PUSH)) break;
        if (q->msg.type == WIRE_PUSH) {
            w->cnt.pushes++;
            w->cnt.shard_pushes[s]++;
            /* staleness: the updates others applied between our pull and our push */
            uint64_t pv = q->msg.push.version, av = m.push_ack.version;
            uint64_t st = av > pv + 1 ? av - pv - 1 : 0;
            if (st > w->staleness) w->staleness = st;
        }
        drop_req(l, q);
        break;
    case WIRE_ERROR:
        if (q == NULL) {
            say(w, "node %" PRIu32 " sent ERROR %s: %s", s, wire_err_name(m.error.code), m.error.text);
        } else if (m.error.code == WIRE_ERR_SHUTTING_DOWN) {
            drop_req(l, q);
            w->done = 1;
        } else if (m.error.code == WIRE_ERR_NOT_REGISTERED && w->consistency == WIRE_CONS_ASYNC) {
            /* The node has not had our MEMBERSHIP yet (it was restarting, or the coordinator's
             * message is still on its way): the requests go again after H. */
            l->refused = 1;
            if (w->coord_lost) { /* it forgot this worker's id: the request is dropped, not applied */
                drop_req(l, q);
                break;
            }
            say(w, "node %" PRIu32 " does not know this worker yet: %s again in %" PRIu32 " ms", s,
                wire_type_name(q->msg.type), w->heartbeat_ms);
            l->heard = clock_now_ms() - retry_wait_ms(w, l) + w->heartbeat_ms;
        } else {
            rc = auxps_error_set(err, AUXPS_EIO, "worker %" PRIu32 ": node %" PRIu32 " refused %s: "
                                 "ERROR %s: %s", w->cnt.id, s, wire_type_name(q->msg.type),
                                 wire_err_name(m.error.code), m.error.text);
        }
        break;
    default: {
        auxps_error_t e2 = {0};
        if (m.type != WIRE_ERROR)
            wire_send_error(l->sock, NULL, 0, m.rid, WIRE_ERR_BAD_MESSAGE, "not a message for a worker", &e2);
    }
    }
    wire_msg_clear(&m);
    return rc;
}

/* Drains a socket; node = -1 for the coordinator. */
static int drain(worker_t *w, void *sock, int node, auxps_error_t *err) {
    wire_in_t in = {0};
    int rc = 0;
    for (;;) {
        auxps_error_t e = {0};
        int r = wire_recv(sock, 0, &in, ZMQ_DONTWAIT, &e);
        if (r == AUXPS_EIO) {
            if (errno != EAGAIN && errno != EINTR) rc = auxps_error_set(err, AUXPS_EIO, "worker: %s", e.msg);
            break;
        }
        int64_t now = clock_now_ms();
        if (node < 0) w->coord_heard = now;
        else w->links[node].heard = now;
        if (r < 0) {
            say(w, "refused a message from %s: %s", node < 0 ? "the coordinator" : "a node", e.msg);
            continue;
        }
        if ((rc = node < 0 ? on_coord(w, &in, err) : on_node(w, (uint32_t)node, &in, err)) != 0) break;
    }
    wire_in_close(&in);
    return rc;
}

/* A DEALER to node s's endpoint with this worker's routing id (the node hands the id over to
 * the newest connection). */
static void *node_socket(worker_t *w, uint32_t s, auxps_error_t *err) {
    link_t *l = &w->links[s];
    void *sock = zmq_socket(w->ctx, ZMQ_DEALER);
    if (sock == NULL || peer_sockopt(sock, ZMQ_LINGER, 0) || peer_sockopt(sock, ZMQ_SNDTIMEO, (int)w->timeout_ms) ||
        wire_socket_limits(sock) != 0 || zmq_setsockopt(sock, ZMQ_ROUTING_ID, l->route, strlen(l->route)) != 0) {
        peer_zfail("worker: node socket", err);
        if (sock != NULL) zmq_close(sock);
        return NULL;
    }
    if (curve_connect(w->curve, sock, err) != 0) {
        zmq_close(sock);
        return NULL;
    }
    if (zmq_connect(sock, w->shards[s].endpoint) != 0) {
        auxps_error_set(err, AUXPS_ECONFIG, "worker: cannot connect to node %" PRIu32 " at %s: %s", s,
                        w->shards[s].endpoint, zmq_strerror(zmq_errno()));
        zmq_close(sock);
        return NULL;
    }
    return sock;
}

/* Node s did not answer in time: it may have died and be restarting from its checkpoint.
 * The outstanding requests go again, in their order, with new rids on the same socket, which
 * ZeroMQ reconnects by itself and which delivers them once the node listens again. The first
 * copies may arrive too (they were still queued): a node ACKs an async PUSH of a batch it
 * applied already without applying it again (its clock tells), and a PULL answered twice costs
 * a reply the worker ignores. The worker never gives up on its own: the coordinator decides
 * when a run ends (DONE). A push counts only when acknowledged. */
static void resend(worker_t *w, uint32_t s) {
    link_t *l = &w->links[s];
    say(w, "node %" PRIu32 " at %s did not answer %s%s within %" PRId64 " ms: sending %s again (attempt %d)", s,
        w->shards[s].endpoint, wire_type_name(l->reqs[0].msg.type), l->nreqs > 1 ? " and the PULL behind it" : "",
        retry_wait_ms(w, l), l->nreqs > 1 ? "them" : "it", l->attempts + 1);
    l->heard = clock_now_ms();
    l->attempts++;
    for (int i = 0; i < l->nreqs; i++) {
        req_t *q = &l->reqs[i];
        q->msg.rid = w->node_rid++;
        w->cnt.resends++;
        if (q->free_fn != NULL) atomic_fetch_add(&w->inflight, 1);
        auxps_error_t e = {0};
        if (wire_send(l->sock, NULL, 0, &q->msg, q->free_fn, &w->inflight, 0, &e) != 0) /* again after the next wait */
            say(w, "sending %s to node %" PRIu32 " again failed: %s", wire_type_name(q->msg.type), s, e.msg);
    }
}

/* The periodic jobs and one poll of every socket, for at most timeout_ms: (1) HEARTBEAT to the
 * coordinator after H of silence on that link; (2) the coordinator's timeout; (3) the timeout
 * of every outstanding node request: the request goes again (resend), or after DONE the wait
 * ends. Returns 0, STOPPED (a request given up after DONE) or a negative error. */
static int pump(worker_t *w, int64_t timeout_ms, auxps_error_t *err) {
    int64_t now = clock_now_ms();
    uint32_t hb = w->welcomed ? w->heartbeat_ms : WIRE_DEFAULT_HEARTBEAT_MS;
    if (w->welcomed && !w->coord_lost && now - w->coord_heard >= w->timeout_ms) {
        char why[64];
        snprintf(why, sizeof why, "was silent for %" PRIu32 " ms", w->timeout_ms);
        int rc = lose_coord(w, why, err);
        if (rc != 0) return rc;
    }
    if (w->welcomed && !w->coord_lost && now - w->coord_sent >= hb) {
        wire_msg_t m = wire_heartbeat(WIRE_ROLE_WORKER, w->cnt.id);
        int rc = send_new(w, &m, err);
        if (rc != 0) return rc;
    }
    int64_t next = w->coord_sent + hb;
    if (w->welcomed && !w->coord_lost && w->coord_heard + w->timeout_ms < next) next = w->coord_heard + w->timeout_ms;
    uint32_t ns = w->welcomed ? w->cnt.nshards : 0;
    for (uint32_t s = 0; s < ns; s++) {
        link_t *l = &w->links[s];
        if (l->nreqs == 0) continue;
        if (w->coord_lost && l->refused) { /* the node forgot this worker's id: dropped */
            l->nreqs = 0;
            continue;
        }
        const int64_t wait_ms = retry_wait_ms(w, l);
        if (now - l->heard >= wait_ms && w->coord_lost) { /* registering again comes first */
            say(w, "node %" PRIu32 " did not answer %s while the coordinator is lost: dropped", s,
                wire_type_name(l->reqs[0].msg.type));
            l->nreqs = 0;
            continue;
        }
        if (now - l->heard >= wait_ms) {
            if (w->done) { /* the run is over: no reply is worth waiting for any more */
                say(w, "node %" PRIu32 " did not answer %s after DONE: giving up", s,
                    wire_type_name(l->reqs[0].msg.type));
                l->nreqs = 0;
                return STOPPED;
            }
            resend(w, s);
            continue;
        }
        if (l->heard + wait_ms < next) next = l->heard + wait_ms;
    }
    int64_t wait = next - now;
    if (timeout_ms >= 0 && timeout_ms < wait) wait = timeout_ms;
    if (wait < 0) wait = 0;
    zmq_pollitem_t items[1 + WIRE_MAX_SHARDS];
    items[0] = (zmq_pollitem_t){w->coord, 0, ZMQ_POLLIN, 0};
    for (uint32_t s = 0; s < ns; s++) items[1 + s] = (zmq_pollitem_t){w->links[s].sock, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(items, (int)(1 + ns), (long)wait) < 0) {
        if (zmq_errno() == EINTR) return 0;
        return peer_zfail("worker: zmq_poll", err);
    }
    int rc = 0;
    if (items[0].revents & ZMQ_POLLIN) rc = drain(w, w->coord, -1, err);
    for (uint32_t s = 0; s < ns && rc == 0; s++)
        if (items[1 + s].revents & ZMQ_POLLIN) rc = drain(w, w->links[s].sock, (int)s, err);
    return rc;
}

/* Waits for the answers of every node with a request outstanding. */
static int wait_links(worker_t *w, auxps_error_t *err) {
    for (;;) {
        int pending = 0;
        for (uint32_t s = 0; s < w->cnt.nshards; s++) pending |= w->links[s].nreqs > 0;
        if (!pending) return 0;
        int rc = pump(w, -1, err);
        if (rc != 0) return rc;
    }
}

/* ---- requests to the nodes ------------------------------------------------------------- */

/* Sends request m to node s and queues it behind the link's outstanding one, if any (at most
 * LINK_REQS); dst: where a PULL's values go (NULL for a push). */
static int send_node(worker_t *w, uint32_t s, wire_msg_t *m, wire_free_fn *ffn, float *dst, auxps_error_t *err) {
    link_t *l = &w->links[s];
    if (l->nreqs == LINK_REQS)
        return auxps_error_set(err, AUXPS_EIO, "worker %" PRIu32 ": %d requests to node %" PRIu32 " outstanding "
                               "already", w->cnt.id, LINK_REQS, s);
    if (l->nreqs == 0) { /* the link's timer, retries and refusal start with its first request */
        l->heard = clock_now_ms();
        l->attempts = 1;
        l->refused = 0;
    }
    m->rid = w->node_rid++;
    l->reqs[l->nreqs++] = (req_t){*m, dst, ffn};
    if (ffn != NULL) atomic_fetch_add(&w->inflight, 1);
    int rc = wire_send(l->sock, NULL, 0, m, ffn, &w->inflight, 0, err);
    if (rc != 0) {
        char why[sizeof err->msg];
        snprintf(why, sizeof why, "%s", err->msg);
        l->nreqs--;
        return auxps_error_set(err, rc, "worker %" PRIu32 ": sending %s to node %" PRIu32 ": %s",
                               w->cnt.id, wire_type_name(m->type), s, why);
    }
    return 0;
}

/* Asks every shard for vec, all requests in flight at once; the answers go into the model when
 * they are taken (pump, wait_links). The statistics a STATS_PUSH sends without a copy are the
 * buffer a stats PULL fills: that pull waits until ZeroMQ has released them. A params PULL
 * fills no pushed buffer and may follow a PUSH at once. */
static int send_pulls(worker_t *w, uint32_t vec, uint64_t clock, auxps_error_t *err) {
    int rc = vec == WIRE_VEC_STATS ? wait_released(w, err) : 0;
    if (rc != 0) return rc;
    for (uint32_t s = 0; s < w->cnt.nshards; s++) {
        const wire_shard_t *sh = &w->shards[s];
        uint64_t off = vec == WIRE_VEC_PARAMS ? sh->offset : sh->stats_offset;
        uint64_t len = vec == WIRE_VEC_PARAMS ? sh->length : sh->stats_length;
        if (len == 0) continue;
        wire_msg_t m;
        memset(&m, 0, sizeof m);
        m.type = WIRE_PULL;
        m.pull = (wire_pull_t){w->cnt.id, s, vec, off, len, clock,
                               vec == WIRE_VEC_PARAMS && w->kbit ? WIRE_ENC_KBIT : WIRE_ENC_F32};
        float *dst = (vec == WIRE_VEC_PARAMS ? model_params(w->model) : model_stats(w->model)) + off;
        if ((rc = send_node(w, s, &m, NULL, dst, err)) != 0) return rc;
    }
    return 0;
}

/* Pulls vec from every shard into the model. */
static int pull_all(worker_t *w, uint32_t vec, uint64_t clock, auxps_error_t *err) {
    int rc = send_pulls(w, vec, clock, err);
    return rc != 0 ? rc : wait_links(w, err);
}

/* q8 pushes: shard s's gradient as one 8-bit segment per tensor, with error feedback
 * (wire_q8_encode), into w->qcodes and the link's segment table. */
static int encode_q8(worker_t *w, uint32_t s, auxps_error_t *err) {
    const wire_shard_t *sh = &w->shards[s];
    link_t *l = &w->links[s];
    auxps_error_t e = {0};
    int rc = coded_q8_encode(w->model, sh->offset, sh->length, model_grads(w->model), w->resid, w->qcodes, l->segs,
                             (uint32_t)model_num_tensors(w->model), &l->nsegs, &e);
    if (rc != 0) return auxps_error_set(err, rc, "worker %" PRIu32 ": %s", w->cnt.id, e.msg);
    return 0;
}

/* Pushes every shard's slice of the gradient (vec params) or of the statistics (vec stats)
 * without a copy; with pull_next (vec params) the PULL of the next batch (clock + 1) goes right
 * behind each PUSH on the same link. Then waits for every answer: the node applies the push
 * before it reads the pull (PROTOCOL.md "Consistency"), so the pulled weights are those a pull
 * sent after the acknowledgement would get, one round trip sooner. */
static int push_all(worker_t *w, uint32_t vec, uint32_t samples, int pull_next, auxps_error_t *err) {
    if (vec == WIRE_VEC_PARAMS) w->staleness = 0;
    for (uint32_t s = 0; s < w->cnt.nshards; s++) {
        const wire_shard_t *sh = &w->shards[s];
        wire_msg_t m;
        memset(&m, 0, sizeof m);
        if (vec == WIRE_VEC_PARAMS) {
            m.type = WIRE_PUSH;
            m.push = (wire_push_t){w->cnt.id, s, sh->offset, sh->length, w->cnt.clock,
                                   w->links[s].base, samples, WIRE_ENC_F32, NULL, 0};
            m.payload = model_grads(w->model) + sh->offset;
            m.payload_size = sh->length * sizeof(float);
            if (w->q8) {
                int rc = encode_q8(w, s, err);
                if (rc != 0) return rc;
                m.push.encoding = WIRE_ENC_Q8;
                m.push.segs = w->links[s].segs;
                m.push.nsegs = w->links[s].nsegs;
                m.payload = w->qcodes + sh->offset; /* 8-bit codes pack to themselves */
                m.payload_size = sh->length;
            }
        } else {
            if (sh->stats_length == 0) continue;
            m.type = WIRE_STATS_PUSH;
            m.stats_push = (wire_stats_push_t){w->cnt.id, s, sh->stats_offset, sh->stats_length,
                                               w->cnt.clock, WIRE_STATS_AVERAGE, samples};
            m.payload = model_stats(w->model) + sh->stats_offset;
            m.payload_size = sh->stats_length * sizeof(float);
        }
        int rc = send_node(w, s, &m, push_released, NULL, err);
        if (rc != 0) return rc;
    }
    if (pull_next) {
        int rc = send_pulls(w, WIRE_VEC_PARAMS, w->cnt.clock + 1, err);
        if (rc != 0) return rc;
    }
    return wait_links(w, err);
}

/* ---- evaluation ------------------------------------------------------------------------ */

static int run_eval(worker_t *w, const wire_eval_req_t *q, uint32_t rid, auxps_error_t *err) {
    const dataset_t *ds = q->split == WIRE_SPLIT_TRAIN ? &w->train : &w->test;
    if ((uint64_t)q->first + q->count > (uint64_t)ds->n) {
        char text[WIRE_MAX_TEXT + 1];
        snprintf(text, sizeof text, "samples [%" PRIu32 ", %" PRIu64 ") are outside the %s set of %d",
                 q->first, (uint64_t)q->first + q->count, q->split == WIRE_SPLIT_TRAIN ? "training" : "test",
                 ds->n);
        say(w, "refused EVAL_REQ %" PRIu32 ": %s", q->eval, text);
        error_to_coord(w, rid, WIRE_ERR_OUT_OF_RANGE, text);
        return 0;
    }
    const size_t nstats = model_num_stats(w->model);
    int rc = wait_released(w, err);
    if (rc != 0) return rc;
    memcpy(w->stats_keep, model_stats(w->model), nstats * sizeof(float));
    if ((rc = pull_all(w, WIRE_VEC_PARAMS, 0, err)) != 0 || (rc = pull_all(w, WIRE_VEC_STATS, 0, err)) != 0)
        return rc;
    uint64_t version = UINT64_MAX;
    for (uint32_t s = 0; s < w->cnt.nshards; s++)
        if (w->links[s].version < version) version = w->links[s].version;
    const int b = w->cfg.train.batch_size;
    double loss_low = 0.0;
    uint32_t correct_low = 0, correct_aux = 0;
    for (uint32_t start = 0; start < q->count; start += (uint32_t)b) {
        const int n = q->count - start < (uint32_t)b ? (int)(q->count - start) : b;
        for (int i = 0; i < n; i++) w->idx[i] = (int)(q->first + start) + i;
        if ((rc = dataset_read(ds, w->idx, n, &w->tf, NULL, w->x, w->y, err)) != 0) return rc;
        model_result_t r;
        model_forward(w->model, w->x, w->y, n, 0, &r);
        loss_low += (double)r.loss_low * n;
        correct_low += (uint32_t)r.correct_low;
        correct_aux += (uint32_t)r.correct_aux;
        if ((rc = pump(w, 0, err)) != 0) return rc; /* heartbeats during a long evaluation */
    }
    memcpy(model_stats(w->model), w->stats_keep, nstats * sizeof(float));
    wire_msg_t m;
    memset(&m, 0, sizeof m);
    m.type = WIRE_EVAL_REP;
    m.rid = rid;
    m.eval_rep = (wire_eval_rep_t){q->eval, w->cnt.id, q->count, loss_low, correct_low, correct_aux, version};
    if ((rc = send_coord(w, &m, err)) != 0) return rc;
    w->cnt.evals++;
    return 0;
}

/* Serves the queued evaluation requests; called where no batch is half done. */
static int run_pending(worker_t *w, auxps_error_t *err) {
    if (w->in_eval) return 0;
    w->in_eval = 1;
    int rc = 0;
    while (rc == 0 && w->nevals > 0 && !w->done && !w->coord_lost) {
        wire_eval_req_t q = w->evals[0];
        uint32_t rid = w->eval_rids[0];
        w->nevals--;
        memmove(w->evals, w->evals + 1, (size_t)w->nevals * sizeof *w->evals);
        memmove(w->eval_rids, w->eval_rids + 1, (size_t)w->nevals * sizeof *w->eval_rids);
        rc = run_eval(w, &q, rid, err);
    }
    w->in_eval = 0;
    return rc;
}

static int stopping(const worker_t *w) { return w->done || w->coord_lost || (w->stop != NULL && *w->stop); }

/* ---- training -------------------------------------------------------------------------- */

static int send_progress(worker_t *w, auxps_error_t *err) {
    wire_msg_t m;
    memset(&m, 0, sizeof m);
    m.type = WIRE_PROGRESS;
    m.progress = (wire_progress_t){w->cnt.id, w->lease.chunk, w->lease.epoch, w->cnt.clock, w->prog_samples,
                                   w->prog_loss, w->prog_loss_low, w->prog_low, w->prog_aux, w->staleness};
    w->prog_samples = w->prog_low = w->prog_aux = 0;
    w->prog_loss = w->prog_loss_low = 0.0;
    return send_new(w, &m, err);
}

/* Trains the leased chunk. Returns 0 (the chunk is done, or the run stops: see stopping()) or
 * a negative error. */
static int run_chunk(worker_t *w, auxps_error_t *err) {
    const wire_lease_t *l = &w->lease;
    const int ntrain = w->train.n;
    int rc;
    if (l->mode == WIRE_LEASE_RANGE) {
        if ((uint64_t)l->first + l->count > (uint64_t)ntrain)
            return auxps_error_set(err, AUXPS_ERANGE, "worker %" PRIu32 ": LEASE of positions [%" PRIu32
                                   ", %" PRIu64 ") in an epoch of %d samples", w->cnt.id, l->first,
                                   (uint64_t)l->first + l->count, ntrain);
        if (w->order_epoch != (long)l->epoch) {
            data_epoch_order(w->order, ntrain, w->seed, (int)l->epoch);
            w->order_epoch = l->epoch;
        }
    } else {
        for (uint32_t i = 0; i < l->count; i++)
            if (w->list[i] >= (uint32_t)ntrain)
                return auxps_error_set(err, AUXPS_ERANGE, "worker %" PRIu32 ": LEASE index %" PRIu32
                                       " in a training set of %d samples", w->cnt.id, w->list[i], ntrain);
    }
    if ((rc = pull_all(w, WIRE_VEC_STATS, w->cnt.clock, err)) != 0) return rc;
    const uint32_t b = (uint32_t)w->cfg.train.batch_size;
    /* cluster.prefetch: the next batch's pull goes out before this batch's forward pass and is
     * taken after its backward pass, so the model holds the next weights when the loop comes
     * round again (fetched = 1). Nothing reads a node's answer during the computation. Without
     * it, the next batch's pull goes right behind this batch's pushes (push_all), unless the
     * chunk ends or the run stops; an evaluation in between pulls other weights (at clock 0,
     * past the ssp/bsp gate), and then the batch pulls its own again. */
    const int prefetch = w->cfg.cluster.prefetch && w->consistency == WIRE_CONS_ASYNC;
    int fetched = 0;
    uint32_t trained = 0;
    while (trained < l->count && !stopping(w)) {
        const int n = (int)(l->count - trained < b ? l->count - trained : b);
        for (int i = 0; i < n; i++)
            w->idx[i] = l->mode == WIRE_LEASE_RANGE ? w->order[l->first + trained + i] : (int)w->list[trained + i];
        if ((rc = dataset_read(&w->train, w->idx, n, &w->tf, &w->rng, w->x, w->y, err)) != 0) return rc;
        if (!fetched && (rc = pull_all(w, WIRE_VEC_PARAMS, w->cnt.clock, err)) != 0) return rc;
        if ((rc = pump(w, 0, err)) != 0 || (rc = wait_released(w, err)) != 0) return rc;
        for (uint32_t s = 0; s < w->cnt.nshards; s++) w->links[s].base = w->links[s].version;
        if (prefetch && (rc = send_pulls(w, WIRE_VEC_PARAMS, w->cnt.clock + 1, err)) != 0) return rc;
        model_result_t r;
        model_forward(w->model, w->x, w->y, n, 1, &r);
        model_backward(w->model);
        if ((rc = prefetch ? wait_links(w, err) : pump(w, 0, err)) != 0) return rc;
        const int ahead = !prefetch && trained + (uint32_t)n < l->count && !stopping(w);
        if ((rc = push_all(w, WIRE_VEC_PARAMS, (uint32_t)n, ahead, err)) != 0) return rc;
        fetched = prefetch || ahead;
        w->cnt.clock++;
        w->cnt.samples += (uint64_t)n;
        trained += (uint32_t)n;
        w->prog_samples += (uint32_t)n;
        w->prog_loss += (double)r.loss * n;
        w->prog_loss_low += (double)r.loss_low * n;
        w->prog_low += (uint32_t)r.correct_low;
        w->prog_aux += (uint32_t)r.correct_aux;
        if ((rc = send_progress(w, err)) != 0) return rc;
        const uint64_t evals = w->cnt.evals;
        if ((rc = run_pending(w, err)) != 0) return rc;
        if (w->cnt.evals != evals) fetched = prefetch;
    }
    /* Told DONE: the chunk is dropped. Asked to stop (a leave): the trained part is returned
     * as done and the coordinator leases the rest to another worker (async). The coordinator
     * lost: the nodes still get the statistics, and the coordinator that comes back hears how
     * far the chunk got once this worker has registered again. */
    if (w->coord_lost && !w->done) {
        if (trained > 0 && (rc = push_all(w, WIRE_VEC_STATS, trained < WIRE_MAX_BATCH ? trained : WIRE_MAX_BATCH,
                                          0, err)) != 0)
            return rc;
        w->orphan.active = 1;
        w->orphan.chunk = l->chunk;
        w->orphan.epoch = l->epoch;
        w->orphan.trained = trained;
        return 0;
    }
    if (trained < l->count && (w->done || trained == 0)) return 0;
    uint32_t weight = trained < WIRE_MAX_BATCH ? trained : WIRE_MAX_BATCH;
    if ((rc = push_all(w, WIRE_VEC_STATS, weight, 0, err)) != 0) return rc;
    wire_msg_t m;
    memset(&m, 0, sizeof m);
    m.type = WIRE_CHUNK_DONE;
    m.chunk_done = (wire_chunk_done_t){w->cnt.id, l->chunk, l->epoch, trained, w->cnt.clock};
    if ((rc = send_new(w, &m, err)) != 0) return rc;
    w->cnt.chunks++;
    /* Until a LEASE answers (the coordinator has it then), a restarted coordinator is told again. */
    w->orphan.active = 1;
    w->orphan.chunk = l->chunk;
    w->orphan.epoch = l->epoch;
    w->orphan.trained = trained;
    if (trained < l->count) say(w, "leaving: chunk %" PRIu32 " returned with %" PRIu32 " of its %" PRIu32
                                " samples trained", l->chunk, trained, l->count);
    return 0;
}

/* Pauses for ms while answering the coordinator and serving evaluations. */
static int idle(worker_t *w, int64_t ms, auxps_error_t *err) {
    int64_t until = clock_now_ms() + ms;
    int rc = 0;
    while (rc == 0 && !stopping(w)) {
        int64_t left = until - clock_now_ms();
        if (left <= 0) break;
        if ((rc = pump(w, left, err)) == 0) rc = run_pending(w, err);
    }
    return rc;
}

/* Asks for a lease and waits for it, serving evaluations meanwhile. Returns 0 with w->lease
 * set, STOPPED, or a negative error. */
static int get_lease(worker_t *w, auxps_error_t *err) {
    int rc;
    for (;;) {
        wire_msg_t m;
        memset(&m, 0, sizeof m);
        m.type = WIRE_LEASE_REQ;
        m.lease_req.worker = w->cnt.id;
        if ((rc = send_new(w, &m, err)) != 0) return rc;
        w->lease_rid = m.rid;
        w->lease_wait = 1;
        w->lease_got = w->lease_retry = 0;
        while (!w->lease_got && !w->lease_retry) {
            if ((rc = run_pending(w, err)) != 0) break;
            if (stopping(w)) {
                rc = STOPPED;
                break;
            }
            if ((rc = pump(w, -1, err)) != 0) break;
        }
        w->lease_wait = 0;
        if (rc != 0 || w->lease_got) return rc;
        if ((rc = idle(w, RETRY_MS, err)) != 0) return rc;
        if (stopping(w)) return STOPPED;
    }
}

/* ---- registration ---------------------------------------------------------------------- */

static int send_hello(worker_t *w, auxps_error_t *err) {
    wire_msg_t m;
    memset(&m, 0, sizeof m);
    m.type = WIRE_HELLO;
    m.hello.role = WIRE_ROLE_WORKER;
    peer_hello_name(m.hello.name, sizeof m.hello.name, "worker");
    m.hello.encodings = 1u << WIRE_ENC_F32 | 1u << WIRE_ENC_KBIT | 1u << WIRE_ENC_Q8;
    return send_new(w, &m, err);
}

typedef struct {
    worker_t *w;
    auxps_error_t *err;
} load_job_t;

/* peer_run_beating's job: the training and test sets of the run's configuration, their images
 * left in cache files in $TMPDIR (data.h dataset_open) and read as batches need them. */
static int load_data(void *arg) {
    load_job_t *j = arg;
    const auxps_config_t *c = &j->w->cfg;
    int rc = dataset_open(&j->w->train, c->data.dir, 1, c->data.train_limit, NULL, j->err);
    if (rc == 0) rc = dataset_open(&j->w->test, c->data.dir, 0, c->data.test_limit, NULL, j->err);
    return rc;
}

/* One DEALER per node, with a routing id of our own (worker id, pid, host, registration), so
 * that a node can tie this worker id to this connection. Closes the previous ones (a rejoin):
 * the new routing id differs from theirs, so the node never confuses the two connections. */
static int connect_nodes(worker_t *w, auxps_error_t *err) {
    char route[WIRE_MAX_ROUTE], host[64] = "";
    if (gethostname(host, sizeof host) != 0) host[0] = '\0';
    host[sizeof host - 1] = '\0';
    snprintf(route, sizeof route, "w%" PRIu32 ":%ld:%" PRIu64 ":%s", w->cnt.id, (long)getpid(), w->cnt.rejoins, host);
    for (uint32_t s = 0; s < w->cnt.nshards; s++) {
        link_t *l = &w->links[s];
        if (l->sock != NULL) zmq_close(l->sock);
        wire_seg_t *segs = l->segs; /* q8: allocated once, at WELCOME */
        memset(l, 0, sizeof *l);
        l->segs = segs;
        snprintf(l->route, sizeof l->route, "%s", route);
        if ((l->sock = node_socket(w, s, err)) == NULL) return err->code == AUXPS_ECONFIG ? AUXPS_ECONFIG : AUXPS_EIO;
    }
    return 0;
}

/* WELCOME from the coordinator that came back: the same run (model, shards, consistency) under
 * a new worker id. New node connections for the new id; the batch clock starts again at 0
 * (the coordinator counts the steps before its restart from its checkpoint); the chunk held
 * when the coordinator was lost is reported done as far as it got. */
static int rewelcome(worker_t *w, const wire_msg_t *m, auxps_error_t *err) {
    const wire_welcome_t *x = &m->welcome;
    int same = x->role == WIRE_ROLE_WORKER && x->consistency == w->consistency && x->seed == w->seed &&
               x->num_params == model_num_params(w->model) && x->num_stats == model_num_stats(w->model) &&
               x->nshards == w->cnt.nshards;
    for (uint32_t s = 0; same && s < x->nshards; s++)
        same = x->shards[s].offset == w->shards[s].offset && x->shards[s].length == w->shards[s].length &&
               x->shards[s].stats_offset == w->shards[s].stats_offset &&
               x->shards[s].stats_length == w->shards[s].stats_length &&
               strcmp(x->shards[s].endpoint, w->shards[s].endpoint) == 0;
    if (!same) {
        auxps_error_set(err, AUXPS_ECONFIG, "worker %" PRIu32 ": the coordinator came back with another run "
                        "(model, shards or consistency differ)", w->cnt.id);
        error_to_coord(w, m->rid, WIRE_ERR_CONFIG, err->msg);
        return AUXPS_ECONFIG;
    }
    const uint32_t old = w->cnt.id;
    w->cnt.id = x->id;
    w->heartbeat_ms = x->heartbeat_ms;
    w->timeout_ms = x->timeout_ms;
    int rc = connect_nodes(w, err);
    if (rc != 0) return rc;
    w->cnt.clock_before += w->cnt.clock;
    w->cnt.clock = 0;
    w->cnt.rejoins++;
    w->coord_lost = 0;
    w->coord_heard = w->coord_sent = clock_now_ms();
    say(w, "registered again after %.1f s (was worker %" PRIu32 ")", (clock_now_ms() - w->lost_since) / 1000.0, old);
    if (!w->orphan.active) return 0;
    w->orphan.active = 0;
    wire_msg_t d;
    memset(&d, 0, sizeof d);
    d.type = WIRE_CHUNK_DONE;
    d.chunk_done = (wire_chunk_done_t){w->cnt.id, w->orphan.chunk, w->orphan.epoch, w->orphan.trained, 0};
    say(w, "chunk %" PRIu32 " of epoch %" PRIu32 " reported with %" PRIu32 " samples trained", w->orphan.chunk,
        w->orphan.epoch, w->orphan.trained);
    return send_new(w, &d, err);
}

/* Sets the worker up from WELCOME m: configuration, data, model, one DEALER per node. Answers
 * ERROR CONFIG and returns AUXPS_ECONFIG if the configuration or the data do not fit. */
static int welcome(worker_t *w, const wire_msg_t *m, auxps_error_t *err) {
    const wire_welcome_t *x = &m->welcome;
    int rc;
    if (w->model != NULL) return rewelcome(w, m, err);
    if (x->role != WIRE_ROLE_WORKER) {
        rc = auxps_error_set(err, AUXPS_ECONFIG, "WELCOME for role %" PRIu32 ", not a worker", x->role);
        goto refused;
    }
    if ((rc = config_load_text(&w->cfg, x->config, "WELCOME.config", err)) != 0) goto refused;
    const model_spec_t *sp = &w->cfg.model;
    const int b = w->cfg.train.batch_size;
    if ((w->model = model_new(sp, b)) == NULL) {
        rc = auxps_error_set(err, AUXPS_ECONFIG, "WELCOME.config: cannot build its model for batch %d", b);
        goto refused;
    }
    if (model_num_params(w->model) != x->num_params || model_num_stats(w->model) != x->num_stats) {
        rc = auxps_error_set(err, AUXPS_ECONFIG, "WELCOME: %" PRIu64 " params and %" PRIu64 " stats, "
                             "but its config's model has %zu and %zu", x->num_params, x->num_stats,
                             model_num_params(w->model), model_num_stats(w->model));
        goto refused;
    }
    const auxps_config_t *c = &w->cfg;
    load_job_t job = {w, err};
    if ((rc = peer_run_beating(w->coord, WIRE_ROLE_WORKER, x->id, &w->coord_rid, x->heartbeat_ms, load_data,
                               &job)) != 0) {
        rc = AUXPS_ECONFIG;
        goto refused;
    }
    if (w->train.c != sp->in_c || w->train.h != sp->in_h || w->train.w != sp->in_w ||
        w->test.c != sp->in_c || w->test.h != sp->in_h || w->test.w != sp->in_w ||
        w->train.classes > sp->classes || w->test.classes > sp->classes) {
        rc = auxps_error_set(err, AUXPS_ECONFIG, "data in %s does not fit the model's input or classes",
                             c->data.dir);
        goto refused;
    }
    const size_t img = (size_t)sp->in_c * sp->in_h * sp->in_w;
    w->x = malloc(sizeof(float) * img * (size_t)b);
    w->y = malloc(sizeof(int) * (size_t)b);
    w->idx = malloc(sizeof(int) * (size_t)b);
    w->order = malloc(sizeof(int) * (size_t)w->train.n);
    w->stats_keep = malloc(sizeof(float) * (model_num_stats(w->model) + 1));
    w->shards = malloc(sizeof *w->shards * x->nshards);
    w->links = calloc(x->nshards, sizeof *w->links);
    if (w->links != NULL) w->cnt.nshards = x->nshards; /* worker_destroy frees what the links hold */
    w->kbit = c->cluster.pull == PULL_KBIT && sp->wbits < 32;
    w->q8 = c->cluster.push == PUSH_Q8;
    const size_t np = model_num_params(w->model);
    if (w->kbit) w->codes = malloc(np);
    if (w->q8) w->qcodes = malloc(np), w->resid = calloc(np, sizeof(float));
    if (w->q8 && w->links != NULL)
        for (uint32_t s = 0; s < x->nshards; s++)
            if ((w->links[s].segs = malloc(sizeof(wire_seg_t) * (size_t)model_num_tensors(w->model))) == NULL) break;
    if (!w->x || !w->y || !w->idx || !w->order || !w->stats_keep || !w->shards || !w->links ||
        (w->kbit && w->codes == NULL) ||
        (w->q8 && (w->qcodes == NULL || w->resid == NULL || w->links[x->nshards - 1].segs == NULL))) {
        rc = auxps_error_set(err, AUXPS_ENOMEM, "worker: out of memory");
        goto refused;
    }
    if (w->kbit) { /* no latent weights here: the nodes send k-bit weights and apply the quantizer's backward */
        model_set_frozen(w->model, 1);
        model_set_qgrads(w->model, 1);
    }
    memcpy(w->shards, x->shards, sizeof *w->shards * x->nshards);
    w->cnt.nshards = x->nshards;
    w->cnt.id = x->id;
    w->consistency = x->consistency;
    w->heartbeat_ms = x->heartbeat_ms;
    w->timeout_ms = x->timeout_ms;
    w->seed = x->seed;
    rng_seed(&w->rng, x->stream_seed);
    w->tf = (data_transform_t){c->data.mean, c->data.std, c->data.crop_pad, c->data.flip};
    if ((rc = connect_nodes(w, err)) != 0) goto refused;
    int threads = w->threads > 0 ? w->threads : c->train.threads;
    if (threads <= 0) threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (threads < 1) threads = 1;
    if (threads > 256) threads = 256;
    if (model_set_threads(w->model, threads) != 0) {
        rc = auxps_error_set(err, AUXPS_ENOMEM, "worker: cannot start %d compute threads", threads);
        goto refused;
    }
    w->welcomed = 1;
    w->coord_heard = clock_now_ms(); /* the data took a while to load */
    say(w, "%" PRIu32 " shards, %zu params, %d train / %d test samples, batch %d, %s, %d threads",
        x->nshards, model_num_params(w->model), w->train.n, w->test.n, b,
        x->consistency == WIRE_CONS_ASYNC ? "async" : x->consistency == WIRE_CONS_SSP ? "ssp" : "bsp", threads);
    return 0;
refused:
    error_to_coord(w, m->rid, rc == AUXPS_ENOMEM ? WIRE_ERR_INTERNAL : WIRE_ERR_CONFIG, err->msg);
    return rc;
}

/* HELLO until WELCOME: WORKER_HELLO_TRIES times, or until give_up_at (ms) if it is not 0. */
static int register_worker(worker_t *w, int64_t give_up_at, auxps_error_t *err) {
    const int64_t t0 = WIRE_DEFAULT_TIMEOUT_MS;
    int tries = 1, rc;
    if ((rc = send_hello(w, err)) != 0) return rc;
    int64_t deadline = clock_now_ms() + t0;
    wire_in_t in = {0};
    wire_msg_t m = {0};
    for (;;) {
        if (w->stop != NULL && *w->stop) {
            rc = STOPPED;
            break;
        }
        int64_t now = clock_now_ms();
        if (now >= deadline) {
            if (give_up_at ? now >= give_up_at : tries >= WORKER_HELLO_TRIES) {
                rc = auxps_error_set(err, AUXPS_EIO, "worker: no answer from the coordinator at %s "
                                     "after %d HELLOs, %" PRId64 " s each", w->coord_ep, tries, t0 / 1000);
                break;
            }
            say(w, "no answer from the coordinator at %s: HELLO again", w->coord_ep);
            if ((rc = send_hello(w, err)) != 0) break;
            tries++;
            deadline = now + t0;
        }
        if (now - w->coord_sent >= WIRE_DEFAULT_HEARTBEAT_MS) { /* held back: still here */
            wire_msg_t hb = wire_heartbeat(WIRE_ROLE_WORKER, 0);
            if ((rc = send_new(w, &hb, err)) != 0) break;
        }
        zmq_pollitem_t it = {w->coord, 0, ZMQ_POLLIN, 0};
        int64_t wait = deadline - now;
        if (zmq_poll(&it, 1, wait > 1000 ? 1000 : (long)wait) < 0) {
            if (zmq_errno() == EINTR) continue;
            rc = peer_zfail("worker: zmq_poll", err);
            break;
        }
        auxps_error_t e = {0};
        int r = wire_recv(w->coord, 0, &in, ZMQ_DONTWAIT, &e);
        if (r == AUXPS_EIO) {
            if (errno == EAGAIN || errno == EINTR) continue;
            rc = auxps_error_set(err, AUXPS_EIO, "worker: %s", e.msg);
            break;
        }
        deadline = clock_now_ms() + t0; /* any message is a sign of life */
        if (r < 0) continue;
        wire_msg_clear(&m);
        if ((r = wire_decode_in(&in, &m, &e)) < 0) {
            say(w, "refused a message from the coordinator: %s", e.msg);
            if (m.type != WIRE_ERROR) error_to_coord(w, m.rid, wire_error_code(r), e.msg);
            continue;
        }
        if (m.type == WIRE_WELCOME) {
            rc = welcome(w, &m, err);
            break;
        }
        if (m.type == WIRE_HEARTBEAT) continue;
        if (m.type == WIRE_ERROR && m.error.code == WIRE_ERR_NOT_REGISTERED) continue; /* to the old socket's messages */
        if (m.type == WIRE_ERROR) {
            if (m.error.code == WIRE_ERR_FULL && (give_up_at ? clock_now_ms() < give_up_at : tries < WORKER_HELLO_TRIES)) {
                say(w, "the coordinator is full (%s): HELLO again in 1 s", m.error.text);
                nanosleep(&(struct timespec){1, 0}, NULL);
                if ((rc = send_hello(w, err)) != 0) break;
                tries++;
                deadline = clock_now_ms() + t0;
                continue;
            }
            if (m.error.code == WIRE_ERR_SHUTTING_DOWN) {
                rc = STOPPED;
                break;
            }
            rc = auxps_error_set(err, AUXPS_EIO, "worker: the coordinator refused HELLO: %s %s",
                                 wire_err_name(m.error.code), m.error.text);
            break;
        }
        if (m.type == WIRE_DONE) {
            rc = STOPPED;
            break;
        }
        error_to_coord(w, m.rid, WIRE_ERR_BAD_MESSAGE, "expected WELCOME");
    }
    wire_msg_clear(&m);
    wire_in_close(&in);
    return rc;
}

/* The coordinator was lost (see lose_coord): a fresh socket (what was queued for the old one is
 * dropped), HELLO until a coordinator welcomes this worker again, or cluster.rejoin_s passes. */
static int rejoin(worker_t *w, auxps_error_t *err) {
    int rc = wait_released(w, err); /* the node sockets are replaced after WELCOME */
    if (rc != 0) return rc;
    void *s = peer_coord_socket(w->ctx, w->coord_ep, w->curve, "worker", err);
    if (s == NULL) return err->code;
    zmq_close(w->coord);
    w->coord = s;
    w->nevals = 0; /* a new coordinator evaluates anew */
    w->lease_wait = 0;
    return register_worker(w, w->lost_since + (int64_t)w->cfg.cluster.rejoin_s * 1000, err);
}

/* ---- the run --------------------------------------------------------------------------- */

int worker_run(worker_t *w, volatile sig_atomic_t *stop, FILE *log, FILE *out, auxps_error_t *err) {
    if (w == NULL || w->ran)
        return auxps_error_set(err, AUXPS_EINVAL, "worker_run: NULL worker or called twice");
    w->ran = 1;
    w->log = log;
    w->stop = stop;
    w->coord_sent = w->coord_heard = clock_now_ms();
    int rc = register_worker(w, 0, err);
    if (rc == STOPPED) {
        if (w->stop != NULL && *w->stop) send_bye(w, 0); /* the coordinator may have taken us in */
        return 0;
    }
    if (rc != 0) return rc;
    while (rc == 0) {
        if (w->coord_lost) {
            rc = rejoin(w, err);
            continue;
        }
        if ((rc = run_pending(w, err)) != 0) break;
        if (w->coord_lost) continue;
        if (stopping(w)) break;
        if ((rc = get_lease(w, err)) == STOPPED && w->coord_lost) {
            rc = 0;
            continue;
        }
        if (rc != 0) break;
        if (w->lease.mode == WIRE_LEASE_WAIT)
            rc = idle(w, w->lease.ttl_ms > WAIT_FLOOR_MS ? w->lease.ttl_ms : WAIT_FLOOR_MS, err);
        else rc = run_chunk(w, err);
    }
    if (rc == STOPPED) rc = 0;
    if (rc == 0 && !w->done) say(w, "stopping on request");
    send_bye(w, rc == 0 ? 0 : (uint32_t)(rc == AUXPS_ERANGE ? WIRE_ERR_OUT_OF_RANGE : WIRE_ERR_INTERNAL));
    if (out != NULL) {
        fprintf(out, "worker %" PRIu32 ": pushed %" PRIu64 " pushes (per shard: ", w->cnt.id, w->cnt.pushes);
        for (uint32_t s = 0; s < w->cnt.nshards; s++)
            fprintf(out, "%s%" PRIu64, s ? "," : "", w->cnt.shard_pushes[s]);
        fprintf(out, ")\n");
        fflush(out);
    }
    say(w, "%" PRIu64 " batches, %" PRIu64 " samples, %" PRIu64 " chunks, %" PRIu64 " evaluations",
        w->cnt.clock_before + w->cnt.clock, w->cnt.samples, w->cnt.chunks, w->cnt.evals);
    return rc;
}

/* ---- auxps worker ---------------------------------------------------------------------- */

static volatile sig_atomic_t worker_stop; /* the only global, as signal handlers need */

static void on_signal(int sig) {
    (void)sig;
    worker_stop = 1;
}

int worker_main(int argc, char **argv) {
    const char *coordinator = NULL, *security = NULL, *sets[PEER_MAX_SETS];
    int threads = 0, nsets = 0;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--coordinator") == 0 && i + 1 < argc) {
            coordinator = argv[++i];
        } else if (strcmp(argv[i], "--security") == 0 && i + 1 < argc) {
            security = argv[++i];
        } else if (strcmp(argv[i], "--set") == 0 && i + 1 < argc && nsets < PEER_MAX_SETS) {
            sets[nsets++] = argv[++i];
        } else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            if (config_parse_int(argv[++i], 1, 256, &threads) != 0) {
                fprintf(stderr, "auxps worker: --threads '%s': expected an integer in 1..256\n", argv[i]);
                return 2;
            }
        } else {
            fprintf(stderr, "auxps worker: unknown or incomplete argument '%s'\n", argv[i]);
            coordinator = NULL;
            break;
        }
    }
    if (coordinator == NULL) {
        fprintf(stderr, "usage: auxps worker --coordinator ENDPOINT [--threads T] [--security CONFIG] "
                        "[--set security.KEY=VALUE ...]\n");
        return 2;
    }
    peer_catch_signals(on_signal);
    auxps_error_t err = {0};
    curve_t *cv = NULL;
    if (peer_load_curve(security, sets, nsets, CURVE_ROLE_CLIENT, &cv, &err) != 0) {
        fprintf(stderr, "auxps worker: %s\n", err.msg);
        return 1;
    }
    worker_t *w = worker_new_curve(coordinator, threads, cv, &err);
    if (w == NULL) {
        fprintf(stderr, "auxps worker: %s\n", err.msg);
        curve_destroy(&cv);
        return 1;
    }
    int rc = worker_run(w, &worker_stop, stderr, stdout, &err);
    if (rc != 0) fprintf(stderr, "auxps worker: %s\n", err.msg);
    worker_destroy(&w);
    curve_destroy(&cv);
    return rc != 0 ? 1 : 0;
}
