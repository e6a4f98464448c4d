/* node.h - a parameter-server node (`auxps ps`): owns one contiguous shard of the parameter
 * vector, of the batch-norm statistics vector and of the optimizer's momentum, and applies SGD
 * to it on every gradient push (docs/CLUSTER.md, docs/PROTOCOL.md).
 *
 * Life of a node: node_new binds the data ROUTER and connects a DEALER to the coordinator;
 * node_run sends HELLO with the bound endpoint, waits for WELCOME, initialises the whole model
 * from the run seed (model_init) and keeps its slice, answers NODE_READY, then serves PULL,
 * PUSH and STATS_PUSH from workers (and PULLs from the coordinator) until DONE, which it
 * answers with BYE.
 *
 * Serving rules, in one place:
 *   - PULL is answered from an immutable, reference-counted snapshot of the shard taken at
 *     most once per version (payloads go out without a copy, so the live vector never does).
 *     Any sub-range of the shard may be pulled; stats pulls are never gated.
 *   - PUSH and STATS_PUSH must cover the whole shard (OUT_OF_RANGE otherwise): the learning
 *     rate schedule counts one step per pushed batch, and averaging keeps one slice per worker.
 *   - async: every push is one SGD step at once. ssp: pushes are applied at once and a params
 *     PULL with clock c waits while the smallest clock of the num_workers workers is below
 *     c - staleness (the node sends the waiting worker HEARTBEAT every heartbeat interval).
 *     bsp: the pushes of one clock from all num_workers workers are summed, weighted by their
 *     samples, and applied as one step; each push is acknowledged at once (the PULL of the
 *     next clock is what waits). Workers are ids 0..num_workers-1 (as the coordinator numbers
 *     them, CLUSTER.md "Ids"); another id is refused with OUT_OF_RANGE in every model.
 *   - The lr of an update is optim_lr(schedule step before it), divided by max(1, staleness)
 *     with cluster.staleness_lr; staleness is the node's version minus PUSH.version.
 *   - Stats: mode average serves the sample-weighted mean of every worker's latest slice,
 *     mode replace the latest slice; before any push the initial statistics.
 *   - A gradient or statistics push with a NaN or an infinity is refused whole with ERROR
 *     NON_FINITE: one pass over the decoded values before anything is applied.
 *   - A malformed, unexpected or refused message gets ERROR (never an ERROR in answer to an
 *     ERROR) and is counted, in total and by kind (WIRE_REJECT_*); a sender with 16 refusals
 *     is ignored from then on. A worker id
 *     is bound to the routing id that first used it. Nothing a peer sends can crash the node.
 *
 * Everything the node owns is freed by node_destroy; node_run allocates per run. */
#ifndef AUXPS_NODE_H
#define AUXPS_NODE_H

#include <signal.h>
#include <stdint.h>
#include <stdio.h>

#include "curve.h"
#include "error.h"
#include "wire.h"

#define NODE_DEFAULT_BIND "tcp://127.0.0.1:*"
#define NODE_MAX_BAD 16          /* refusals after which a sender is ignored */
#define NODE_HELLO_TRIES 5       /* HELLOs sent before giving up on a silent coordinator */

typedef struct node node_t;

/* What the node has done; node_run prints the first line of it at exit (CLUSTER.md
 * "Counters"). */
typedef struct {
    uint32_t id;                 /* shard id, UINT32_MAX before WELCOME */
    uint64_t pushes;             /* gradient pushes applied (each push of a bsp sum counts) */
    uint64_t stats_pushes;       /* STATS_PUSHes applied */
    uint64_t version;            /* optimizer steps applied to the shard */
    uint64_t max_staleness;      /* largest version - PUSH.version seen */
    uint64_t pulls;              /* PULLs answered */
    uint64_t deferred;           /* PULLs that had to wait for the ssp/bsp gate */
    uint64_t refused;            /* messages answered with ERROR or ignored as bad */
    uint64_t left;               /* workers forgotten after MEMBERSHIP left (or a rejoin of the id) */
    uint64_t joined;             /* MEMBERSHIP joined: workers admitted (async) */
    uint64_t duplicates;         /* async PUSHes of a batch already applied (a resend): ACKed only */
    uint64_t checkpoints;        /* checkpoints written */
    uint64_t restored_version;   /* version of the checkpoint restored at start; 0 = none */
    uint64_t rejoins;            /* registrations with a coordinator that came back */
    uint64_t checkpoint_version; /* of the newest checkpoint written; 0 = none */
    uint64_t checkpoint_unix_ms; /* when it was written */
    uint64_t bytes_in, bytes_out; /* payload bytes of pushes received and PULL_REPs sent */
    uint64_t fresh_buffers;      /* updates written to a new params buffer because ZeroMQ was
                                    still sending the old one in a PULL_REP */
    uint64_t auth_refused;       /* CURVE: connection attempts with a key not admitted (curve.h) */
    uint64_t rejected[WIRE_REJECT_COUNT]; /* refused messages by kind (WIRE_REJECT_*); every
                                           * refusal but the node's own out-of-memory counts */
} node_counters_t;

/* Creates a node's sockets: binds the data ROUTER at bind (NULL: NODE_DEFAULT_BIND) and
 * connects a DEALER to coordinator. Returns NULL with err set (AUXPS_EINVAL: bad argument or
 * endpoint; AUXPS_EIO: ZeroMQ failed, e.g. the address is in use; AUXPS_ENOMEM). */
node_t *node_new(const char *coordinator, const char *bind, auxps_error_t *err);
/* As node_new, with ZeroMQ CURVE when cv is not NULL (a CURVE_ROLE_SERVER handle, curve.h):
 * a ZAP handler in the node's context admits only cv's keys, the data ROUTER serves with the
 * server key and the coordinator link connects with it. cv is borrowed and must outlive the
 * node. */
node_t *node_new_curve(const char *coordinator, const char *bind, const curve_t *cv, auxps_error_t *err);
/* Closes the sockets and frees everything; safe on NULL and twice, clears *n. */
void node_destroy(node_t **n);

/* The endpoint sent in HELLO, which workers connect to: the one the data ROUTER is bound to
 * (read back with ZMQ_LAST_ENDPOINT), or the one node_advertise set. Valid until node_destroy. */
const char *node_endpoint(const node_t *n);

/* Advertises endpoint in HELLO instead of the bound one: for a node bound to a wildcard
 * address (tcp://0.0.0.0:6000) that others reach by a name (tcp://ps0:6000, a container's).
 * Call before node_run. Returns 0, or AUXPS_EINVAL (NULL, empty, or longer than
 * WIRE_MAX_ENDPOINT, or no "tcp://", "ipc://" or "inproc://" endpoint). */
int node_advertise(node_t *n, const char *endpoint, auxps_error_t *err);

/* Registers and serves until DONE. stop (may be NULL): when it becomes non-zero, the node keeps
 * serving for at most the run's timeout so that the coordinator can still pull the final
 * model, then says BYE and returns; a second signal (stop >= 2) ends it at once. log (may be
 * NULL: stderr) receives one line per notable event; out (may be NULL: nothing) receives the
 * counters line at the end. Returns 0 after DONE or a stop, or a negative code with err set:
 * AUXPS_ECONFIG (the WELCOME's configuration is invalid or disagrees with the model: ERROR
 * CONFIG was sent), AUXPS_EIO (the coordinator was silent for the timeout, refused us, or
 * ZeroMQ failed), AUXPS_ENOMEM. Call it once per node. */
int node_run(node_t *n, volatile sig_atomic_t *stop, FILE *log, FILE *out, auxps_error_t *err);

/* Copies the counters; safe at any time from the thread that runs the node. */
void node_get_counters(const node_t *n, node_counters_t *c);

/* `auxps ps --coordinator ENDPOINT [--bind ENDPOINT] [--advertise ENDPOINT] [--security CONFIG]
 * [--set security.KEY=VALUE ...]`: argv excludes the program name and "ps". The [security]
 * section of CONFIG (peer_load_curve) turns CURVE on. Installs SIGINT/SIGTERM handlers, runs a
 * node, prints its counters line to stdout. Returns the exit status: 0 after DONE, 1 on an
 * error, 2 on a usage error. */
int node_main(int argc, char **argv);

#endif
