/* config.h - a run's configuration: the model, the training recipe and the data, read from an
 * INI file (docs/CONFIG.md lists every key) and overridden by --set section.key=value.
 *
 * Input is hostile: unknown sections and keys, malformed numbers, trailing junk, non-finite
 * floats and out-of-range values are all rejected with AUXPS_ECONFIG and a sentence in err that
 * names the file and line (or "--set"), the key and the valid range. The config is plain data:
 * it owns no memory. */
#ifndef AUXPS_CONFIG_H
#define AUXPS_CONFIG_H

#include <stdint.h>
#include <stdio.h>

#include "error.h"
#include "model.h"

enum { SCHED_COSINE = 0, SCHED_STEP = 1, SCHED_CONSTANT = 2 };
/* Consistency models of distributed training (docs/PROTOCOL.md); the values are the wire's. */
enum { CONS_ASYNC = 0, CONS_SSP = 1, CONS_BSP = 2 };
/* cluster.pull and cluster.push: what workers ask for and send (docs/CLUSTER.md "Bytes"). */
enum { PULL_F32 = 0, PULL_KBIT = 1 };
enum { PUSH_F32 = 0, PUSH_Q8 = 1 };

/* Longest accepted string value (paths): every value must fit on one line of libinih's
 * 200-byte line buffer, so that config_write's output always loads back. */
#define CONFIG_MAX_STRING 180

typedef struct {
    model_spec_t model;
    struct {
        int epochs;            /* 1..10000, default 10 */
        int batch_size;        /* 1..4096, default 128 */
        float lr;              /* (0, 10], default 0.05 */
        float momentum;        /* [0, 1), default 0.9 */
        int nesterov;          /* bool, default true */
        float weight_decay;    /* [0, 1), default 5e-4 */
        int schedule;          /* SCHED_*, default SCHED_COSINE */
        int step_epochs;       /* 1..10000, default 3: SCHED_STEP multiplies lr by step_gamma
                                  every step_epochs */
        float step_gamma;      /* (0, 1], default 0.1 */
        uint64_t seed;         /* 0..2^63-1, default 1 */
        int threads;           /* 0..256, 0 = all cores, default 0 */
        int log_interval;      /* steps between progress lines, 1..1000000, default 100 */
        int max_steps;         /* 0 = no limit (for tests), default 0 */
        char output[512];      /* exported model path, default "auxps-model.bin" */
        int bn_recalibration;  /* batches that re-estimate the batch-norm running statistics
                                  before each evaluation; 0 (default) keeps the running ones */
    } train;
    struct {
        char dir[512];         /* default "/usr/share/datasets/fashion-mnist" */
        float mean, std;       /* default 0.2860, 0.3530 */
        int crop_pad;          /* 0..8, default 0 */
        int flip;              /* bool, default false */
        int train_limit;       /* 0 = all, else the first N training samples; default 0 */
        int test_limit;        /* same for the test set; default 0 */
    } data;
    struct {
        int consistency;       /* CONS_*, default CONS_ASYNC; names "async", "ssp", "bsp" */
        int staleness;         /* ssp bound s, 0..1000, default 2 (bsp uses 0) */
        int staleness_lr;      /* bool, default false: divide the lr by the measured staleness */
        int chunk_batches;     /* batches per leased chunk, 1..100000, default 10 */
        int heartbeat_ms;      /* 50..60000, default 1000 */
        int timeout_ms;        /* a peer silent this long is dead; 200..3600000, default 10000 */
        int rejoin_s;          /* async with checkpoints: how long nodes and workers wait for a lost
                                * coordinator to come back; 0..86400, default 600, 0 = exit */
        int pull;              /* PULL_*, default PULL_F32; names "f32", "kbit": kbit pulls carry
                                * the quantized tensors as k-bit codes, and pushes then carry
                                * dL/dwq for them (the node applies the quantizer's backward) */
        int push;              /* PUSH_*, default PUSH_F32; names "f32", "q8": 8-bit gradients
                                * with error feedback */
        int prefetch;          /* bool, default false; async only: a worker asks for the next
                                * batch's weights before it computes this batch's gradient */
    } cluster;
    struct {
        char dir[512];         /* where nodes write checkpoints; "" (default) = none */
        int every_steps;       /* a node checkpoints after this many updates, 1..100000000,
                                  default 500 */
        int every_s;           /* ... or after this many seconds with updates, 1..86400,
                                  default 60 */
        int keep;              /* newest checkpoints kept per node, 1..1000, default 3 */
    } checkpoint;
    struct {
        int enabled;           /* bool, default true: the coordinator serves HTTP status */
        char addr[CONFIG_MAX_STRING + 1]; /* IPv4 address to bind, default "127.0.0.1" */
        int port;              /* 0..65535, default 8080; 0 = any free port (logged) */
    } status;
    struct {                   /* ZeroMQ CURVE (docs/CONFIG.md [security], common/curve.h) */
        int curve;             /* bool, default false: plain, unauthenticated ZeroMQ */
        /* Paths of Z85 key files (auxps keygen); "" = not given. Which role needs which is
         * curve.h's business: the config checks only that curve = true names server_public. */
        char server_public[CONFIG_MAX_STRING + 1];
        char server_secret[CONFIG_MAX_STRING + 1];
        char client_public[CONFIG_MAX_STRING + 1];
        char client_secret[CONFIG_MAX_STRING + 1];
        char authorized_keys[CONFIG_MAX_STRING + 1];
    } security;
    char path[512];            /* the file it was loaded from; "" if none */
} auxps_config_t;

/* Fills c with METHOD.md's training recipe and the default model (ResNet-8 16/32/64, 1x28x28,
 * 10 classes, W2A2, auxiliary module on with lambda 1, MLP hidden width 256). */
void config_defaults(auxps_config_t *c);

/* Sets c to the defaults, then applies the INI file at path, then runs config_check's
 * cross-field checks. Returns 0, AUXPS_EIO (file missing or unreadable), AUXPS_ECONFIG (a bad
 * line; err says "FILE:LINE: ...") or AUXPS_EINVAL (NULL argument). On failure c is unchanged. */
int config_load(auxps_config_t *c, const char *path, auxps_error_t *err);

/* As config_load, from INI text (a WELCOME's config); name stands for the file in messages. */
int config_load_text(auxps_config_t *c, const char *text, const char *name, auxps_error_t *err);

/* Applies one "section.key=value" assignment (as given to --set; whitespace around the key and
 * the value is ignored). Checks only that key's own range, so that a series of --set can pass
 * through combinations that are invalid halfway: call config_check after the last one. Errors
 * say "--set section.key". On failure c is unchanged. */
int config_set(auxps_config_t *c, const char *assignment, auxps_error_t *err);

/* Returns 0 if every field of c is in range and the fields agree with each other (the
 * auxiliary module needs arch = resnet; the input has at most 2^24 values; security.curve =
 * true needs security.server_public), else AUXPS_ECONFIG
 * with a sentence in err. */
int config_check(const auxps_config_t *c, auxps_error_t *err);

/* Writes c as an INI file that config_load reads back to the same values (every key, so that
 * a run's record does not depend on later changes of the defaults); path is not written. The
 * round trip holds for every config that passes config_check. Returns 0, AUXPS_EIO (write
 * failed) or AUXPS_EINVAL (NULL argument). */
int config_write(const auxps_config_t *c, FILE *f);

/* Checks that the directory of path (train.output) is writable, so that a run does not train
 * for hours and then fail to write its model. Returns 0, or AUXPS_EIO with a sentence in err
 * that names path and the directory. */
int config_check_output(const char *path, auxps_error_t *err);

/* Parses all of s as a base-10 integer in [lo, hi] (a command-line value): rejects "", "12x",
 * "1.5", overflow and values out of range. Returns 0 with *out set, or -1 (out unchanged). */
int config_parse_int(const char *s, long lo, long hi, int *out);

/* The name of a SCHED_* value ("cosine", "step", "constant"), or "?" if out of range. */
const char *config_schedule_name(int schedule);

#endif
