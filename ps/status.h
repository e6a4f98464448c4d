/* status.h - what the status endpoint shows of a run, and its three renderings: the JSON of
 * GET /status, the JSON of GET /history and the Prometheus text of GET /metrics
 * (docs/STATUS.md is the schema, field by field).
 *
 * A status_snapshot_t is plain data that the coordinator fills from its own state: no pointers,
 * fixed caps (STATUS_MAX_WORKERS workers, STATUS_MAX_SHARDS shards), strings NUL-terminated in
 * fixed arrays. "Unknown" is NaN for a double and a negative number where a count or an age
 * cannot be negative; the renderings turn both into JSON null (Prometheus: NaN, or no sample).
 * status_snapshot_init gives the state of a run that has not started.
 *
 * The history is an opaque, bounded time series (status_history_new): when it is full it is
 * thinned to every other point and from then on keeps one point in two as many adds, so it
 * always spans the whole run at a resolution that halves as the run grows; the newest point
 * added is always its last (docs/STATUS.md "History").
 *
 * Renderings read their inputs and allocate their output (caller frees it with free()); they
 * never change the snapshot or the history. Input text (worker and node names) is untrusted:
 * bytes outside printable ASCII are shown as '?', and Prometheus label values are escaped. Every
 * function here is reentrant; none keeps state between calls. */
#ifndef AUXPS_STATUS_H
#define AUXPS_STATUS_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

#define STATUS_SCHEMA 1            /* "schema" of /status and /history; grows on a change */
#define STATUS_MAX_WORKERS 1024
#define STATUS_MAX_SHARDS 64
#define STATUS_NAME_MAX 64         /* bytes of a name, NUL included */
#define STATUS_HISTORY_CAP 4096    /* default points of a history */
#define STATUS_REJECT_KINDS 6      /* kinds of refused messages, in the order of status_reject_name */

/* Run states; the values only grow at the end. */
enum { STATUS_WAITING = 0, STATUS_TRAINING = 1, STATUS_DONE = 2, STATUS_FAILED = 3 };

typedef struct {
    uint32_t id;
    char host[STATUS_NAME_MAX];    /* the name the worker gave in HELLO ("HOST:PID") */
    char state[16];                /* e.g. "alive", "training", "evaluating", "left", "dead" */
    uint64_t samples;              /* training samples it reported, since it joined */
    double samples_per_s;          /* its recent throughput; NaN = unknown */
    double heartbeat_age_s;        /* seconds since anything was heard from it; < 0 = never */
    int64_t staleness;             /* staleness of its last push; < 0 = unknown */
} status_worker_t;

typedef struct {
    uint32_t id;
    char host[STATUS_NAME_MAX];    /* the node's name ("HOST:PID"); may be empty */
    uint64_t offset, length;       /* key range [offset, offset + length), in floats */
    uint64_t updates;              /* gradient pushes applied */
    uint64_t version;              /* optimizer steps applied */
    uint64_t bytes_in, bytes_out;  /* payload bytes received and sent */
    uint64_t rejected[STATUS_REJECT_KINDS]; /* messages the node refused, by kind */
} status_shard_t;

typedef struct {
    int state;                     /* STATUS_* */
    struct {
        char arch[16];             /* "resnet8", "resnet20", "mlp", ... */
        int weight_bits, act_bits; /* 1..8, or 32 = full precision */
        int aux;                   /* 1: auxiliary module attached */
        uint64_t params;           /* length of the parameter vector */
    } model;
    char consistency[8];           /* "async", "ssp", "bsp" */
    char pull[8], push[8];         /* cluster.pull ("f32", "kbit") and cluster.push ("f32", "q8") */
    int prefetch;                  /* cluster.prefetch: workers pull the next version during a step */
    int staleness_bound;           /* ssp's s; 0 for bsp; < 0 = none (async) */
    int epoch, epochs;             /* epoch in progress, 1-based (0 before the first); total */
    uint64_t step, total_steps;    /* batches trained over all workers; planned */
    double samples_per_s;          /* whole run, recent; NaN = unknown */
    double loss_low, loss_aux;     /* latest; NaN = unknown */
    double test_accuracy;          /* latest evaluation in [0, 1]; NaN or < 0 = none yet */
    uint64_t chunks_total;         /* chunks of the current epoch */
    uint64_t chunks_done, chunks_leased;
    uint64_t chunks_released;      /* leases given back (a failure, a leave), whole run */
    int has_checkpoint;            /* 0: no checkpoint yet (the two fields below are unused) */
    uint64_t checkpoint_step;
    double checkpoint_time;        /* unix time, seconds */
    double started;                /* unix time the run started, seconds */
    double uptime_s;               /* seconds since started, when the snapshot was taken */
    struct {
        int curve;                 /* 1: the cluster's links use ZeroMQ CURVE */
        uint64_t auth_refused;     /* the coordinator's refused connection attempts (curve.h) */
    } security;                    /* never any key: the status endpoint is unauthenticated */
    uint64_t rejected[STATUS_REJECT_KINDS]; /* messages the coordinator refused, by kind */
    int num_shards;                /* 0..STATUS_MAX_SHARDS */
    int num_workers;               /* 0..STATUS_MAX_WORKERS; workers stay last (see below) */
    status_shard_t shards[STATUS_MAX_SHARDS];
    status_worker_t workers[STATUS_MAX_WORKERS];
} status_snapshot_t;

/* Bytes of s that hold data: everything up to and including workers[num_workers - 1], so a
 * copy of that prefix is a full copy. s->num_workers must be in range (status_snapshot_check). */
size_t status_snapshot_used(const status_snapshot_t *s);

/* A run that has not started: state waiting, every number 0, every "unknown" NaN or -1, no
 * workers, shards or checkpoint, empty strings. */
void status_snapshot_init(status_snapshot_t *s);

/* Returns 0, or AUXPS_ERANGE with err set when state, num_workers or num_shards is out of
 * range. Strings need not be terminated: every reader stops at the array's end. */
int status_snapshot_check(const status_snapshot_t *s, auxps_error_t *err);

/* The name of a kind of refused message (the protocol's, PROTOCOL.md "Rejected messages"):
 * "malformed", "bad_version", "too_large", "out_of_range", "unregistered", "non_finite"; NULL
 * for a kind out of range. */
const char *status_reject_name(int kind);

/* "waiting", "training", "done", "failed"; "unknown" for another value. */
const char *status_state_name(int state);

/* The JSON of GET /status, NUL-terminated, into *out (malloc'd; *len its length without the
 * NUL). age_s (>= 0) is how long ago the snapshot was taken: it is added to uptime_s and to
 * every heartbeat age, so that a stalled publisher shows as growing ages. now_unix is the time
 * reported as "time". Returns 0, AUXPS_ERANGE (status_snapshot_check) or AUXPS_ENOMEM. */
int status_json(const status_snapshot_t *s, double age_s, double now_unix, char **out, size_t *len);

/* The Prometheus text exposition (format 0.0.4) of the snapshot, every metric prefixed
 * "auxps_", with HELP and TYPE lines; age_s as for status_json. Returns as status_json. */
int status_metrics(const status_snapshot_t *s, double age_s, char **out, size_t *len);

/* ---- history ---- */

/* One point of the time series. Unknown values are NaN (test_accuracy also < 0). */
typedef struct {
    double time;                   /* unix time, seconds */
    uint64_t step;
    int epoch;
    double loss_low, loss_aux;
    double samples_per_s;
    double test_accuracy;          /* the latest evaluation at that time */
} status_point_t;

typedef struct status_history status_history_t;

/* A history of at most capacity points (4..1<<20; it is rounded down to an even number), or
 * NULL (bad capacity, or no memory). */
status_history_t *status_history_new(int capacity);

/* Frees h and sets *h to NULL; safe on NULL and twice. */
void status_history_destroy(status_history_t **h);

/* Appends p (thinning first when full, see above). O(1), O(capacity) when it thins. Returns 0,
 * or AUXPS_EINVAL for a NULL argument. */
int status_history_add(status_history_t *h, const status_point_t *p);

/* Makes dst hold what src holds (same capacity, else AUXPS_EINVAL); copies only the points in
 * use. Returns 0 or AUXPS_EINVAL. */
int status_history_copy(status_history_t *dst, const status_history_t *src);

/* Points held, and the i-th oldest (NULL when i is out of range). */
int status_history_count(const status_history_t *h);
const status_point_t *status_history_at(const status_history_t *h, int i);

/* Points ever added; one point is kept per stride adds (a power of two, 1 until the first
 * thinning). */
uint64_t status_history_added(const status_history_t *h);
int status_history_stride(const status_history_t *h);

/* The JSON of GET /history into *out, as status_json. Returns 0, AUXPS_EINVAL or AUXPS_ENOMEM. */
int status_history_json(const status_history_t *h, char **out, size_t *len);

#endif
