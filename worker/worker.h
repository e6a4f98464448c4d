/* worker.h - a training worker (`auxps worker`): registers with the coordinator, connects to
 * every parameter-server node, and trains on leased chunks of the epoch's sample order until
 * DONE (docs/CLUSTER.md, docs/PROTOCOL.md).
 *
 * Per chunk (lease mode range: positions [first, first + count) of data_epoch_order(seed,
 * epoch); mode list: the indices of the payload; mode wait: ask again after ttl_ms):
 *   - pull the batch-norm statistics of every shard (all requests in flight at once);
 *   - per batch of batch_size samples (the last one of a chunk may be shorter): pull the
 *     parameters of every shard at the worker's clock, run model_forward + model_backward in
 *     training mode exactly as trainer_step does but without its optimizer step (the nodes
 *     apply it), push each shard's slice of the gradient without a copy, wait for every
 *     PUSH_ACK, advance the clock and send PROGRESS. Within a chunk the next batch's pull
 *     goes right behind each push on the same link, and is answered after the push is
 *     applied (PROTOCOL.md "Consistency"): the same weights, one round trip sooner;
 *   - at the end push the local statistics (mode average, weight = the chunk's samples, at
 *     most WIRE_MAX_BATCH) and send CHUNK_DONE.
 * EVAL_REQ is served between batches and while idle: pull parameters and statistics (clock 0:
 * an evaluation is not a training batch and passes the ssp/bsp gate), evaluate the range in
 * evaluation mode, answer EVAL_REP, and restore the local statistics.
 *
 * Every wait has a deadline: a node that does not answer a request (nor send HEARTBEAT) within
 * the run's timeout, or a coordinator silent that long, ends the run with an error. A stop
 * request or DONE ends it after the current batch, with BYE. */
#ifndef AUXPS_WORKER_H
#define AUXPS_WORKER_H

#include <signal.h>
#include <stdint.h>
#include <stdio.h>

#include "curve.h"
#include "error.h"
#include "wire.h"

#define WORKER_HELLO_TRIES 5     /* HELLOs sent before giving up on a silent coordinator */
#define WORKER_MAX_EVALS 8       /* evaluation requests queued while a batch runs */

typedef struct worker worker_t;

/* What the worker has done; worker_run prints the pushes as the counters line of CLUSTER.md. */
typedef struct {
    uint32_t id;                 /* worker id, UINT32_MAX before WELCOME */
    uint32_t nshards;
    uint64_t clock;              /* batches trained and pushed */
    uint64_t pushes;             /* PUSHes acknowledged, all shards */
    uint64_t shard_pushes[WIRE_MAX_SHARDS]; /* PUSHes acknowledged by each shard */
    uint64_t chunks;             /* chunks completed (CHUNK_DONE sent) */
    uint64_t samples;            /* training samples */
    uint64_t evals;              /* EVAL_REPs sent */
    uint64_t resends;            /* requests sent again to a node that did not answer in time */
    uint64_t rejoins;            /* registrations with a coordinator that came back */
    uint64_t clock_before;       /* batches trained under earlier ids (before rejoins) */
} worker_counters_t;

/* Creates the worker's context and connects a DEALER to the coordinator. threads > 0 sets the
 * BLAS threads; 0 takes the configuration's train.threads (0 there: all cores). Returns NULL
 * with err set (AUXPS_EINVAL: bad argument or endpoint; AUXPS_EIO; AUXPS_ENOMEM). */
worker_t *worker_new(const char *coordinator, int threads, auxps_error_t *err);
/* As worker_new, with ZeroMQ CURVE when cv is not NULL (curve.h; a CURVE_ROLE_CLIENT handle):
 * the links to the coordinator and to the nodes connect with cv's client keys to the cluster's
 * server key. cv is borrowed and must outlive the worker. */
worker_t *worker_new_curve(const char *coordinator, int threads, const curve_t *cv, auxps_error_t *err);
/* Closes the sockets and frees everything; safe on NULL and twice, clears *w. */
void worker_destroy(worker_t **w);

/* Registers, trains and evaluates until DONE. stop (may be NULL): when non-zero the worker
 * finishes the current batch, says BYE and returns 0. log (NULL: stderr) receives notable
 * events; out (may be NULL) the counters line at the end. Returns 0 after DONE, a stop or the
 * coordinator's SHUTTING_DOWN, or a negative code with err set: AUXPS_ECONFIG (the WELCOME's
 * configuration or data do not fit: ERROR CONFIG was sent), AUXPS_EIO (a peer was silent for
 * the timeout, refused a request, or ZeroMQ failed), AUXPS_ERANGE (a lease or evaluation
 * outside the data), AUXPS_ENOMEM. Call it once per worker. */
int worker_run(worker_t *w, volatile sig_atomic_t *stop, FILE *log, FILE *out, auxps_error_t *err);

/* Copies the counters. */
void worker_get_counters(const worker_t *w, worker_counters_t *c);

/* `auxps worker --coordinator ENDPOINT [--threads T] [--security CONFIG] [--set
 * security.KEY=VALUE ...]`: argv excludes the program name and "worker"; the [security] section
 * of CONFIG (peer_load_curve) turns CURVE on. Installs SIGINT/SIGTERM handlers, runs a worker, prints its counters line to
 * stdout. Returns the exit status: 0 after DONE or a signal, 1 on an error, 2 on a usage
 * error. */
int worker_main(int argc, char **argv);

#endif
