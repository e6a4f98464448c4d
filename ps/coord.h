/* coord.h - the coordinator of a distributed run (docs/CLUSTER.md, docs/PROTOCOL.md): it
 * registers the parameter-server nodes, computes the shard map, registers the workers, leases
 * them chunks of every epoch's sample order, prints progress in the trainer's format, has the
 * workers evaluate at each epoch end, and finally pulls the parameters from the nodes and
 * exports the model.
 *
 * The coordinator is one thread around one zmq_poll loop. It owns every socket, the peer table,
 * the epoch plan and the final parameter vector; nothing it holds is shared. Every wait is
 * bounded by the run's cluster.timeout_ms: a silent peer ends the run with a message, never a
 * hang. A peer's bad message gets an ERROR reply and is counted; it never stops the run. */
#ifndef AUXPS_COORD_H
#define AUXPS_COORD_H

#include <signal.h>
#include <stdio.h>

#include "config.h"
#include "curve.h"
#include "error.h"
#include "model.h"
#include "wire.h"

#define COORD_DEFAULT_BIND "tcp://127.0.0.1:5555"

typedef struct {
    int nodes;                /* parameter-server nodes the run waits for, 1..WIRE_MAX_SHARDS */
    int workers;              /* workers the run waits for, 1..WIRE_MAX_WORKERS */
    const char *bind;         /* ROUTER endpoint; NULL = COORD_DEFAULT_BIND */
    const char *dump_params;  /* NULL, or a file for the final parameters as raw f32 (tests) */
    const curve_t *curve;     /* NULL (plain), or CURVE server keys (curve.h), borrowed: they
                                 must outlive the coordinator */
} coord_options_t;

/* What a finished run reports (coord_run). */
typedef struct {
    int epochs_done;
    long steps;               /* batches trained, over all workers */
    int test_correct, test_total; /* last evaluation */
    long bad_messages;        /* malformed or unexpected messages answered with ERROR */
    int interrupted;          /* 1 if *stop ended the run early */
} coord_result_t;

typedef struct coord coord_t;

/* Checks the options against cfg (which is copied), loads the data sizes the plan needs, and
 * binds the ROUTER. Returns NULL with err set: AUXPS_EINVAL (bad options, or a config the
 * protocol cannot carry), AUXPS_EIO (bind failed, output not writable, data missing),
 * AUXPS_ENOMEM. */
coord_t *coord_new(const auxps_config_t *cfg, const coord_options_t *opt, auxps_error_t *err);

/* Closes the sockets and frees everything; sets *c to NULL. Safe on NULL and twice. */
void coord_destroy(coord_t **c);

/* The endpoint the ROUTER is bound to (after a "*" port, the real one). */
const char *coord_endpoint(const coord_t *c);

/* Runs the whole dialog of PROTOCOL.md section 4 and prints the run to out. A non-NULL stop flag
 * set to non-zero (from a signal handler) ends the run: DONE (aborted) to the workers, the
 * parameters are still pulled and exported, DONE (aborted) to the nodes; a second stop skips
 * the export. Returns 0 (res->interrupted tells an interrupted run), or a negative code with
 * err set: AUXPS_EIO (a peer fell silent, left, refused its configuration or shard, or a
 * socket failed; every reachable peer got DONE aborted first), or an export error. */
int coord_run(coord_t *c, FILE *out, volatile sig_atomic_t *stop, coord_result_t *res,
              auxps_error_t *err);

/* The shard map of a run of m on S nodes (CLUSTER.md "Shard map"): the tensors cut into S
 * contiguous groups of at least one tensor each, minimising the largest group, and each group
 * given the statistics of the batch norms whose gamma it holds. Fills out[0..S-1] (the caller's
 * array of S entries) with ids, offsets and lengths; endpoints are left empty. Returns 0, or
 * AUXPS_EINVAL with err set (S outside 1..WIRE_MAX_SHARDS or above the number of tensors, or
 * a model whose statistics do not follow its parameter order), or AUXPS_ENOMEM. */
int coord_shard_map(const model_t *m, int S, wire_shard_t *out, auxps_error_t *err);

/* `auxps coord CONFIG --nodes S [--workers N] [--bind ENDPOINT] [--dump-params FILE]
 * [--set section.key=value ...]`; argv excludes the program name and "coord". CONFIG's
 * [security] section turns CURVE on (curve_load). Returns the
 * exit status: 0 done, 1 error, 2 usage, 130 interrupted (SIGINT, SIGTERM). */
int coord_main(int argc, char **argv);

#endif
