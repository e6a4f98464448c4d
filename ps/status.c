/* status.c - the status snapshot's JSON and Prometheus renderings and the bounded history
 * (status.h; the schema is docs/STATUS.md). */
#include "status.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Doubles print with 13 significant digits: unix times keep their milliseconds, and values
 * rounded to 6 digits (jval) print short ("0.53", not "0.52999997138977051"). */
#define JSON_FLAGS_STATUS (JSON_INDENT(2) | JSON_REAL_PRECISION(13))
#define JSON_FLAGS_HISTORY (JSON_COMPACT | JSON_REAL_PRECISION(13))

struct status_history {
    int cap;                 /* even, >= 4 */
    int count;
    int stride;              /* a point whose add index is a multiple of stride is kept */
    uint64_t added;
    status_point_t *points;  /* (cap) */
    uint64_t *seq;           /* (cap) add index of each point */
};

/* ---- snapshot ---- */

size_t status_snapshot_used(const status_snapshot_t *s) {
    int n = s->num_workers < 0 ? 0 : s->num_workers > STATUS_MAX_WORKERS ? STATUS_MAX_WORKERS : s->num_workers;
    return offsetof(status_snapshot_t, workers) + (size_t)n * sizeof(status_worker_t);
}

void status_snapshot_init(status_snapshot_t *s) {
    memset(s, 0, offsetof(status_snapshot_t, workers));
    s->state = STATUS_WAITING;
    s->staleness_bound = -1;
    s->samples_per_s = NAN;
    s->loss_low = NAN;
    s->loss_aux = NAN;
    s->test_accuracy = NAN;
}

int status_snapshot_check(const status_snapshot_t *s, auxps_error_t *err) {
    if (s == NULL) return auxps_error_set(err, AUXPS_EINVAL, "status: no snapshot");
    if (s->state < STATUS_WAITING || s->state > STATUS_FAILED)
        return auxps_error_set(err, AUXPS_ERANGE, "status: state %d is not a STATUS_* value", s->state);
    if (s->num_workers < 0 || s->num_workers > STATUS_MAX_WORKERS)
        return auxps_error_set(err, AUXPS_ERANGE, "status: %d workers, expected 0..%d", s->num_workers,
                               STATUS_MAX_WORKERS);
    if (s->num_shards < 0 || s->num_shards > STATUS_MAX_SHARDS)
        return auxps_error_set(err, AUXPS_ERANGE, "status: %d shards, expected 0..%d", s->num_shards,
                               STATUS_MAX_SHARDS);
    return 0;
}

const char *status_state_name(int state) {
    switch (state) {
    case STATUS_WAITING: return "waiting";
    case STATUS_TRAINING: return "training";
    case STATUS_DONE: return "done";
    case STATUS_FAILED: return "failed";
    default: return "unknown";
    }
}

/* Copies the string in src[0..cap) into dst (cap + 1 bytes), stopping at a NUL, with every
 * byte outside printable ASCII replaced by '?': names come from peers. */
static void clean(char *dst, const char *src, size_t cap) {
    size_t i = 0;
    for (; i < cap && src[i] != '\0'; i++) dst[i] = (src[i] >= 0x20 && src[i] <= 0x7e) ? src[i] : '?';
    dst[i] = '\0';
}

/* ---- JSON ---- */

typedef struct {
    int bad; /* set once an allocation failed */
} jctx_t;

static void jset(jctx_t *c, json_t *o, const char *key, json_t *v) {
    if (v == NULL || json_object_set_new(o, key, v) != 0) c->bad = 1;
}

static void jpush(jctx_t *c, json_t *a, json_t *v) {
    if (v == NULL || json_array_append_new(a, v) != 0) c->bad = 1;
}

/* A measured value: null when not finite, else rounded to 6 significant digits. */
static json_t *jval(double v) {
    if (!isfinite(v)) return json_null();
    char b[32];
    snprintf(b, sizeof b, "%.6g", v);
    return json_real(strtod(b, NULL));
}

/* A time or a duration in seconds: null when not finite, else to the millisecond. */
static json_t *jtime(double v) {
    if (!isfinite(v)) return json_null();
    return json_real(round(v * 1000.0) / 1000.0);
}

static json_t *juint(uint64_t v) { return json_integer(v > INT64_MAX ? INT64_MAX : (json_int_t)v); }

static json_t *jstr(const char *s, size_t cap) {
    char b[256];
    clean(b, s, cap < sizeof b - 1 ? cap : sizeof b - 1);
    return json_string(b);
}

static int jdump(json_t *root, jctx_t *c, size_t flags, char **out, size_t *len) {
    char *text = NULL;
    if (!c->bad) text = json_dumps(root, flags);
    json_decref(root);
    if (text == NULL) return AUXPS_ENOMEM;
    *out = text;
    if (len != NULL) *len = strlen(text);
    return 0;
}

const char *status_reject_name(int kind) {
    static const char *const names[STATUS_REJECT_KINDS] = {"malformed", "bad_version", "too_large",
                                                           "out_of_range", "unregistered", "non_finite"};
    return kind >= 0 && kind < STATUS_REJECT_KINDS ? names[kind] : NULL;
}

/* {"malformed": n, ...}: counts of refused messages by kind. */
static json_t *jrejected(jctx_t *c, const uint64_t *counts) {
    json_t *o = json_object();
    if (o == NULL) c->bad = 1;
    for (int k = 0; k < STATUS_REJECT_KINDS && o != NULL; k++) jset(c, o, status_reject_name(k), juint(counts[k]));
    return o;
}

int status_json(const status_snapshot_t *s, double age_s, double now_unix, char **out, size_t *len) {
    if (out == NULL) return AUXPS_EINVAL;
    *out = NULL;
    int rc = status_snapshot_check(s, NULL);
    if (rc != 0) return rc;
    if (!(age_s >= 0)) age_s = 0;
    jctx_t c = {0};
    json_t *root = json_object(), *model = json_object(), *ws = json_array(), *ss = json_array();
    if (root == NULL || model == NULL || ws == NULL || ss == NULL) {
        json_decref(root), json_decref(model), json_decref(ws), json_decref(ss);
        return AUXPS_ENOMEM;
    }
    jset(&c, root, "schema", json_integer(STATUS_SCHEMA));
    jset(&c, root, "state", json_string(status_state_name(s->state)));
    jset(&c, root, "time", jtime(now_unix));
    jset(&c, root, "started", jtime(s->started));
    jset(&c, root, "uptime_s", jtime(s->uptime_s + age_s));
    jset(&c, root, "snapshot_age_s", jtime(age_s));
    jset(&c, model, "arch", jstr(s->model.arch, sizeof s->model.arch));
    jset(&c, model, "weight_bits", json_integer(s->model.weight_bits));
    jset(&c, model, "act_bits", json_integer(s->model.act_bits));
    jset(&c, model, "aux", json_boolean(s->model.aux));
    jset(&c, model, "params", juint(s->model.params));
    jset(&c, root, "model", model);
    jset(&c, root, "consistency", jstr(s->consistency, sizeof s->consistency));
    jset(&c, root, "staleness_bound", s->staleness_bound >= 0 ? json_integer(s->staleness_bound) : json_null());
    jset(&c, root, "pull", jstr(s->pull, sizeof s->pull));
    jset(&c, root, "push", jstr(s->push, sizeof s->push));
    jset(&c, root, "prefetch", json_boolean(s->prefetch));
    jset(&c, root, "epoch", json_integer(s->epoch));
    jset(&c, root, "epochs", json_integer(s->epochs));
    jset(&c, root, "step", juint(s->step));
    jset(&c, root, "total_steps", juint(s->total_steps));
    jset(&c, root, "samples_per_s", jval(s->samples_per_s));
    jset(&c, root, "loss_low", jval(s->loss_low));
    jset(&c, root, "loss_aux", jval(s->loss_aux));
    jset(&c, root, "test_accuracy", s->test_accuracy >= 0 ? jval(s->test_accuracy) : json_null());
    jset(&c, root, "chunks_total", juint(s->chunks_total));
    jset(&c, root, "chunks_done", juint(s->chunks_done));
    jset(&c, root, "chunks_leased", juint(s->chunks_leased));
    jset(&c, root, "chunks_released", juint(s->chunks_released));
    json_t *sec = json_object();
    if (sec != NULL) {
        jset(&c, sec, "curve", json_boolean(s->security.curve));
        jset(&c, sec, "auth_refused", juint(s->security.auth_refused));
    }
    jset(&c, root, "security", sec);
    if (s->has_checkpoint) {
        json_t *ck = json_object();
        if (ck != NULL) {
            jset(&c, ck, "step", juint(s->checkpoint_step));
            jset(&c, ck, "time", jtime(s->checkpoint_time));
        }
        jset(&c, root, "checkpoint", ck);
    } else {
        jset(&c, root, "checkpoint", json_null());
    }
    jset(&c, root, "rejected", jrejected(&c, s->rejected));
    for (int i = 0; i < s->num_workers && !c.bad; i++) {
        const status_worker_t *w = &s->workers[i];
        json_t *o = json_object();
        jpush(&c, ws, o);
        if (o == NULL) break;
        jset(&c, o, "id", json_integer(w->id));
        jset(&c, o, "host", jstr(w->host, sizeof w->host));
        jset(&c, o, "state", jstr(w->state, sizeof w->state));
        jset(&c, o, "samples", juint(w->samples));
        jset(&c, o, "samples_per_s", jval(w->samples_per_s));
        jset(&c, o, "heartbeat_age_s", w->heartbeat_age_s >= 0 ? jtime(w->heartbeat_age_s + age_s) : json_null());
        jset(&c, o, "staleness", w->staleness >= 0 ? json_integer(w->staleness) : json_null());
    }
    jset(&c, root, "workers", ws);
    for (int i = 0; i < s->num_shards && !c.bad; i++) {
        const status_shard_t *h = &s->shards[i];
        json_t *o = json_object();
        jpush(&c, ss, o);
        if (o == NULL) break;
        jset(&c, o, "id", json_integer(h->id));
        jset(&c, o, "host", jstr(h->host, sizeof h->host));
        jset(&c, o, "offset", juint(h->offset));
        jset(&c, o, "length", juint(h->length));
        jset(&c, o, "updates", juint(h->updates));
        jset(&c, o, "version", juint(h->version));
        jset(&c, o, "bytes_in", juint(h->bytes_in));
        jset(&c, o, "bytes_out", juint(h->bytes_out));
        jset(&c, o, "rejected", jrejected(&c, h->rejected));
    }
    jset(&c, root, "shards", ss);
    return jdump(root, &c, JSON_FLAGS_STATUS, out, len);
}

/* ---- Prometheus text ---- */

typedef struct {
    char *p;
    size_t len, cap;
    int bad;
} buf_t;

__attribute__((format(printf, 2, 3))) static void bprintf(buf_t *b, const char *fmt, ...) {
    if (b->bad) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->bad = 1;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap * 2 + (size_t)n;
        char *p = realloc(b->p, cap);
        if (p == NULL) {
            b->bad = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
}

/* One family's HELP and TYPE lines. */
static void family(buf_t *b, const char *name, const char *type, const char *help) {
    bprintf(b, "# HELP auxps_%s %s\n# TYPE auxps_%s %s\n", name, help, name, type);
}

/* A sample value: Prometheus spells the non-finite ones NaN, +Inf, -Inf. */
static void value(buf_t *b, double v) {
    if (isnan(v)) bprintf(b, " NaN\n");
    else if (isinf(v)) bprintf(b, v > 0 ? " +Inf\n" : " -Inf\n");
    else bprintf(b, " %.15g\n", v);
}

static void gauge(buf_t *b, const char *name, const char *help, double v) {
    family(b, name, "gauge", help);
    bprintf(b, "auxps_%s", name);
    value(b, v);
}

/* A label value, escaped as the exposition format requires (backslash, quote, newline), and
 * cleaned of bytes outside printable ASCII. */
static void label(buf_t *b, const char *s, size_t cap) {
    char c[STATUS_NAME_MAX + 1], e[2 * STATUS_NAME_MAX + 1];
    clean(c, s, cap < STATUS_NAME_MAX ? cap : STATUS_NAME_MAX);
    size_t j = 0;
    for (size_t i = 0; c[i] != '\0'; i++) {
        if (c[i] == '\\' || c[i] == '"') e[j++] = '\\';
        e[j++] = c[i];
    }
    e[j] = '\0';
    bprintf(b, "%s", e);
}

int status_metrics(const status_snapshot_t *s, double age_s, char **out, size_t *len) {
    if (out == NULL) return AUXPS_EINVAL;
    *out = NULL;
    int rc = status_snapshot_check(s, NULL);
    if (rc != 0) return rc;
    if (!(age_s >= 0)) age_s = 0;
    buf_t b = {malloc(16384), 0, 16384, 0};
    if (b.p == NULL) return AUXPS_ENOMEM;
    b.p[0] = '\0';

    family(&b, "info", "gauge", "The run's model and consistency model, as labels (always 1).");
    bprintf(&b, "auxps_info{arch=\"");
    label(&b, s->model.arch, sizeof s->model.arch);
    bprintf(&b, "\",consistency=\"");
    label(&b, s->consistency, sizeof s->consistency);
    bprintf(&b, "\",weight_bits=\"%d\",act_bits=\"%d\",aux=\"%s\"} 1\n", s->model.weight_bits,
            s->model.act_bits, s->model.aux ? "on" : "off");
    family(&b, "state", "gauge", "1 for the run's state, 0 for the others.");
    for (int st = STATUS_WAITING; st <= STATUS_FAILED; st++)
        bprintf(&b, "auxps_state{state=\"%s\"} %d\n", status_state_name(st), st == s->state);
    gauge(&b, "model_params", "Length of the parameter vector, in floats.", (double)s->model.params);
    gauge(&b, "model_weight_bitwidth", "Bits of a quantized weight (32: full precision).", s->model.weight_bits);
    gauge(&b, "model_activation_bitwidth", "Bits of a quantized activation (32: full precision).", s->model.act_bits);
    gauge(&b, "model_aux", "1 if the auxiliary module is attached.", s->model.aux ? 1 : 0);
    if (s->staleness_bound >= 0)
        gauge(&b, "staleness_bound", "The ssp staleness bound (0 for bsp).", s->staleness_bound);
    gauge(&b, "epoch", "Epoch in progress, 1-based (0 before the first).", s->epoch);
    gauge(&b, "epochs", "Epochs of the run.", s->epochs);
    family(&b, "steps_total", "counter", "Batches trained, over all workers.");
    bprintf(&b, "auxps_steps_total %llu\n", (unsigned long long)s->step);
    gauge(&b, "planned_steps", "Batches the run plans to train.", (double)s->total_steps);
    gauge(&b, "samples_per_second", "Recent training throughput of the whole run, samples per second.",
          s->samples_per_s);
    gauge(&b, "loss_low", "Latest training loss of the low-precision network.", s->loss_low);
    gauge(&b, "loss_aux", "Latest training loss of the auxiliary module.", s->loss_aux);
    gauge(&b, "test_accuracy_ratio", "Latest test accuracy of the low-precision network (NaN before the first).",
          s->test_accuracy >= 0 ? s->test_accuracy : NAN);
    family(&b, "epoch_chunks", "gauge", "Chunks of the current epoch: planned, done, leased now.");
    bprintf(&b, "auxps_epoch_chunks{state=\"planned\"} %llu\n", (unsigned long long)s->chunks_total);
    bprintf(&b, "auxps_epoch_chunks{state=\"done\"} %llu\n", (unsigned long long)s->chunks_done);
    bprintf(&b, "auxps_epoch_chunks{state=\"leased\"} %llu\n", (unsigned long long)s->chunks_leased);
    family(&b, "chunks_released_total", "counter", "Leases given back after a failure or a leave.");
    bprintf(&b, "auxps_chunks_released_total %llu\n", (unsigned long long)s->chunks_released);
    gauge(&b, "curve_enabled", "1 if the cluster's links use ZeroMQ CURVE.", s->security.curve ? 1 : 0);
    family(&b, "auth_refused_total", "counter", "Connection attempts the coordinator refused: key not authorised.");
    bprintf(&b, "auxps_auth_refused_total %llu\n", (unsigned long long)s->security.auth_refused);
    if (s->has_checkpoint) {
        gauge(&b, "last_checkpoint_step", "Step of the last checkpoint.", (double)s->checkpoint_step);
        gauge(&b, "last_checkpoint_timestamp_seconds", "Unix time of the last checkpoint.", s->checkpoint_time);
    }
    gauge(&b, "start_time_seconds", "Unix time the run started.", s->started);
    gauge(&b, "uptime_seconds", "Seconds since the run started.", s->uptime_s + age_s);
    gauge(&b, "workers", "Workers the coordinator lists.", s->num_workers);
    gauge(&b, "shards", "Parameter-server shards.", s->num_shards);

    family(&b, "worker_info", "gauge", "A worker's host and state, as labels (always 1).");
    for (int i = 0; i < s->num_workers; i++) {
        const status_worker_t *w = &s->workers[i];
        bprintf(&b, "auxps_worker_info{worker=\"%u\",host=\"", (unsigned)w->id);
        label(&b, w->host, sizeof w->host);
        bprintf(&b, "\",state=\"");
        label(&b, w->state, sizeof w->state);
        bprintf(&b, "\"} 1\n");
    }
    family(&b, "worker_samples_total", "counter", "Training samples a worker reported.");
    for (int i = 0; i < s->num_workers; i++)
        bprintf(&b, "auxps_worker_samples_total{worker=\"%u\"} %llu\n", (unsigned)s->workers[i].id,
                (unsigned long long)s->workers[i].samples);
    family(&b, "worker_samples_per_second", "gauge", "A worker's recent throughput, samples per second.");
    for (int i = 0; i < s->num_workers; i++) {
        bprintf(&b, "auxps_worker_samples_per_second{worker=\"%u\"}", (unsigned)s->workers[i].id);
        value(&b, s->workers[i].samples_per_s);
    }
    family(&b, "worker_heartbeat_age_seconds", "gauge", "Seconds since the coordinator last heard from a worker.");
    for (int i = 0; i < s->num_workers; i++) {
        if (!(s->workers[i].heartbeat_age_s >= 0)) continue;
        bprintf(&b, "auxps_worker_heartbeat_age_seconds{worker=\"%u\"}", (unsigned)s->workers[i].id);
        value(&b, s->workers[i].heartbeat_age_s + age_s);
    }
    family(&b, "worker_staleness", "gauge", "Staleness of a worker's last push, in versions.");
    for (int i = 0; i < s->num_workers; i++)
        if (s->workers[i].staleness >= 0)
            bprintf(&b, "auxps_worker_staleness{worker=\"%u\"} %lld\n", (unsigned)s->workers[i].id,
                    (long long)s->workers[i].staleness);

    family(&b, "shard_info", "gauge", "A shard's node, as a label (always 1).");
    for (int i = 0; i < s->num_shards; i++) {
        bprintf(&b, "auxps_shard_info{shard=\"%u\",host=\"", (unsigned)s->shards[i].id);
        label(&b, s->shards[i].host, sizeof s->shards[i].host);
        bprintf(&b, "\"} 1\n");
    }
#define SHARD_FAMILY(name, type, help, field)                                                          \
    family(&b, name, type, help);                                                                      \
    for (int i = 0; i < s->num_shards; i++)                                                            \
        bprintf(&b, "auxps_" name "{shard=\"%u\"} %llu\n", (unsigned)s->shards[i].id,                  \
                (unsigned long long)s->shards[i].field);
    SHARD_FAMILY("shard_offset", "gauge", "First key of a shard, in floats of the parameter vector.", offset)
    SHARD_FAMILY("shard_params", "gauge", "Keys of a shard, in floats.", length)
    SHARD_FAMILY("shard_updates_total", "counter", "Gradient pushes a shard applied.", updates)
    SHARD_FAMILY("shard_version", "gauge", "Optimizer steps a shard applied.", version)
    SHARD_FAMILY("shard_received_bytes_total", "counter", "Payload bytes a shard received.", bytes_in)
    SHARD_FAMILY("shard_sent_bytes_total", "counter", "Payload bytes a shard sent.", bytes_out)
#undef SHARD_FAMILY
    family(&b, "rejected_messages_total", "counter", "Messages the coordinator refused, by kind.");
    for (int k = 0; k < STATUS_REJECT_KINDS; k++)
        bprintf(&b, "auxps_rejected_messages_total{kind=\"%s\"} %llu\n", status_reject_name(k),
                (unsigned long long)s->rejected[k]);
    family(&b, "shard_rejected_messages_total", "counter", "Messages a shard's node refused, by kind.");
    for (int i = 0; i < s->num_shards; i++)
        for (int k = 0; k < STATUS_REJECT_KINDS; k++)
            bprintf(&b, "auxps_shard_rejected_messages_total{shard=\"%u\",kind=\"%s\"} %llu\n",
                    (unsigned)s->shards[i].id, status_reject_name(k), (unsigned long long)s->shards[i].rejected[k]);
    if (b.bad) {
        free(b.p);
        return AUXPS_ENOMEM;
    }
    *out = b.p;
    if (len != NULL) *len = b.len;
    return 0;
}

/* ---- history ---- */

status_history_t *status_history_new(int capacity) {
    if (capacity < 4 || capacity > (1 << 20)) return NULL;
    status_history_t *h = calloc(1, sizeof *h);
    if (h == NULL) return NULL;
    h->cap = capacity & ~1;
    h->stride = 1;
    h->points = malloc(sizeof *h->points * (size_t)h->cap);
    h->seq = malloc(sizeof *h->seq * (size_t)h->cap);
    if (h->points == NULL || h->seq == NULL) status_history_destroy(&h);
    return h;
}

void status_history_destroy(status_history_t **h) {
    if (h == NULL || *h == NULL) return;
    free((*h)->points);
    free((*h)->seq);
    free(*h);
    *h = NULL;
}

/* Keeps the points whose add index is a multiple of twice the stride, and the newest point
 * (which then is provisional: the next add replaces it). */
static void thin(status_history_t *h) {
    h->stride *= 2;
    const status_point_t last = h->points[h->count - 1];
    const uint64_t last_seq = h->seq[h->count - 1];
    int n = 0;
    for (int i = 0; i < h->count; i++)
        if (h->seq[i] % (uint64_t)h->stride == 0) {
            h->points[n] = h->points[i];
            h->seq[n++] = h->seq[i];
        }
    if (h->seq[n - 1] != last_seq) {
        h->points[n] = last;
        h->seq[n++] = last_seq;
    }
    h->count = n;
}

int status_history_add(status_history_t *h, const status_point_t *p) {
    if (h == NULL || p == NULL) return AUXPS_EINVAL;
    const uint64_t k = h->added++;
    /* A provisional last point (not on the stride) only stands for the newest add. */
    int last_kept = h->count > 0 && h->seq[h->count - 1] % (uint64_t)h->stride == 0;
    if (h->count == h->cap && last_kept) {
        thin(h);
        last_kept = h->seq[h->count - 1] % (uint64_t)h->stride == 0;
    }
    int i = h->count > 0 && !last_kept ? h->count - 1 : h->count++;
    h->points[i] = *p;
    h->seq[i] = k;
    return 0;
}

int status_history_copy(status_history_t *dst, const status_history_t *src) {
    if (dst == NULL || src == NULL || dst->cap != src->cap) return AUXPS_EINVAL;
    if (dst == src) return 0;
    dst->count = src->count;
    dst->stride = src->stride;
    dst->added = src->added;
    memcpy(dst->points, src->points, sizeof *src->points * (size_t)src->count);
    memcpy(dst->seq, src->seq, sizeof *src->seq * (size_t)src->count);
    return 0;
}

int status_history_count(const status_history_t *h) { return h ? h->count : 0; }

const status_point_t *status_history_at(const status_history_t *h, int i) {
    return h != NULL && i >= 0 && i < h->count ? &h->points[i] : NULL;
}

uint64_t status_history_added(const status_history_t *h) { return h ? h->added : 0; }

int status_history_stride(const status_history_t *h) { return h ? h->stride : 1; }

int status_history_json(const status_history_t *h, char **out, size_t *len) {
    if (h == NULL || out == NULL) return AUXPS_EINVAL;
    *out = NULL;
    static const char *const fields[] = {"time", "step", "epoch", "loss_low", "loss_aux", "samples_per_s",
                                         "test_accuracy"};
    jctx_t c = {0};
    json_t *root = json_object(), *fs = json_array(), *ps = json_array();
    if (root == NULL || fs == NULL || ps == NULL) {
        json_decref(root), json_decref(fs), json_decref(ps);
        return AUXPS_ENOMEM;
    }
    jset(&c, root, "schema", json_integer(STATUS_SCHEMA));
    jset(&c, root, "capacity", json_integer(h->cap));
    jset(&c, root, "stride", json_integer(h->stride));
    jset(&c, root, "added", juint(h->added));
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) jpush(&c, fs, json_string(fields[i]));
    jset(&c, root, "fields", fs);
    for (int i = 0; i < h->count && !c.bad; i++) {
        const status_point_t *p = &h->points[i];
        json_t *r = json_array();
        jpush(&c, ps, r);
        if (r == NULL) break;
        jpush(&c, r, jtime(p->time));
        jpush(&c, r, juint(p->step));
        jpush(&c, r, json_integer(p->epoch));
        jpush(&c, r, jval(p->loss_low));
        jpush(&c, r, jval(p->loss_aux));
        jpush(&c, r, jval(p->samples_per_s));
        jpush(&c, r, p->test_accuracy >= 0 ? jval(p->test_accuracy) : json_null());
    }
    jset(&c, root, "points", ps);
    return jdump(root, &c, JSON_FLAGS_HISTORY, out, len);
}
