/* config.c - reads, checks and writes auxps_config_t. One table row per key says where its
 * value lives, its type and its range; parsing, checking, writing and the error messages all
 * read that table, so a key cannot be parsed one way and documented or written another. */
#include "config.h"

#include <errno.h>
#include <ini.h>
#include <inttypes.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

enum kind { K_INT, K_U64, K_FLOAT, K_BOOL, K_BITS, K_WIDTHS, K_ENUM, K_STR, K_STR0 /* may be empty */ };
enum { LO_OPEN = 1, HI_OPEN = 2 };

typedef struct {
    const char *section, *name;
    enum kind kind;
    size_t off;                 /* of the field in auxps_config_t */
    double lo, hi;              /* K_INT, K_FLOAT, K_WIDTHS */
    int open;                   /* K_FLOAT: LO_OPEN | HI_OPEN */
    const char *const *names;   /* K_ENUM: names[value], NULL-terminated */
} key_def;

static const char *const arch_names[] = {"resnet", "mlp", NULL};       /* ARCH_* order */
static const char *const sched_names[] = {"cosine", "step", "constant", NULL}; /* SCHED_* */
static const char *const cons_names[] = {"async", "ssp", "bsp", NULL};  /* CONS_* */
static const char *const pull_names[] = {"f32", "kbit", NULL};        /* PULL_* */
static const char *const push_names[] = {"f32", "q8", NULL};          /* PUSH_* */

#define F(field) offsetof(auxps_config_t, field)
#define INT(s, n, f, lo, hi) {s, n, K_INT, F(f), lo, hi, 0, NULL}
#define FLT(s, n, f, lo, hi, open) {s, n, K_FLOAT, F(f), lo, hi, open, NULL}
#define OF(s, n, kind, f) {s, n, kind, F(f), 0, 0, 0, NULL}

/* Sections stay contiguous: config_write and the key lists in messages rely on it. */
static const key_def keys[] = {
    {"model", "arch", K_ENUM, F(model.arch), 0, 0, 0, arch_names},
    {"model", "widths", K_WIDTHS, F(model.widths), 1, 1024, 0, NULL},
    INT("model", "blocks", model.blocks, 1, MODEL_MAX_BLOCKS),
    INT("model", "hidden", model.hidden, 1, 65536),
    OF("model", "weight_bits", K_BITS, model.wbits),
    OF("model", "act_bits", K_BITS, model.abits),
    OF("model", "aux", K_BOOL, model.aux),
    FLT("model", "aux_lambda", model.aux_lambda, 0, 100, 0),
    INT("model", "in_channels", model.in_c, 1, 4096),
    INT("model", "in_height", model.in_h, 1, 4096),
    INT("model", "in_width", model.in_w, 1, 4096),
    INT("model", "classes", model.classes, 2, 1000),
    INT("train", "epochs", train.epochs, 1, 10000),
    INT("train", "batch_size", train.batch_size, 1, 4096),
    FLT("train", "lr", train.lr, 0, 10, LO_OPEN),
    FLT("train", "momentum", train.momentum, 0, 1, HI_OPEN),
    OF("train", "nesterov", K_BOOL, train.nesterov),
    FLT("train", "weight_decay", train.weight_decay, 0, 1, HI_OPEN),
    {"train", "schedule", K_ENUM, F(train.schedule), 0, 0, 0, sched_names},
    INT("train", "step_epochs", train.step_epochs, 1, 10000),
    FLT("train", "step_gamma", train.step_gamma, 0, 1, LO_OPEN),
    OF("train", "seed", K_U64, train.seed),
    INT("train", "threads", train.threads, 0, 256),
    INT("train", "log_interval", train.log_interval, 1, 1000000),
    INT("train", "max_steps", train.max_steps, 0, 1000000000),
    OF("train", "output", K_STR, train.output),
    INT("train", "bn_recalibration", train.bn_recalibration, 0, 100000),
    OF("data", "dir", K_STR, data.dir),
    FLT("data", "mean", data.mean, 0, 1, 0),
    FLT("data", "std", data.std, 0, 1, LO_OPEN),
    INT("data", "crop_pad", data.crop_pad, 0, 8),
    OF("data", "flip", K_BOOL, data.flip),
    INT("data", "train_limit", data.train_limit, 0, 10000000),
    INT("data", "test_limit", data.test_limit, 0, 10000000),
    {"cluster", "consistency", K_ENUM, F(cluster.consistency), 0, 0, 0, cons_names},
    INT("cluster", "staleness", cluster.staleness, 0, 1000),
    OF("cluster", "staleness_lr", K_BOOL, cluster.staleness_lr),
    INT("cluster", "chunk_batches", cluster.chunk_batches, 1, 100000),
    INT("cluster", "heartbeat_ms", cluster.heartbeat_ms, 50, 60000),
    INT("cluster", "timeout_ms", cluster.timeout_ms, 200, 3600000),
    INT("cluster", "rejoin_s", cluster.rejoin_s, 0, 86400),
    {"cluster", "pull", K_ENUM, F(cluster.pull), 0, 0, 0, pull_names},
    {"cluster", "push", K_ENUM, F(cluster.push), 0, 0, 0, push_names},
    OF("cluster", "prefetch", K_BOOL, cluster.prefetch),
    OF("checkpoint", "dir", K_STR0, checkpoint.dir),
    INT("checkpoint", "every_steps", checkpoint.every_steps, 1, 100000000),
    INT("checkpoint", "every_s", checkpoint.every_s, 1, 86400),
    INT("checkpoint", "keep", checkpoint.keep, 1, 1000),
    OF("status", "enabled", K_BOOL, status.enabled),
    OF("status", "addr", K_STR, status.addr),
    INT("status", "port", status.port, 0, 65535),
    OF("security", "curve", K_BOOL, security.curve),
    OF("security", "server_public", K_STR0, security.server_public),
    OF("security", "server_secret", K_STR0, security.server_secret),
    OF("security", "client_public", K_STR0, security.client_public),
    OF("security", "client_secret", K_STR0, security.client_secret),
    OF("security", "authorized_keys", K_STR0, security.authorized_keys),
};
enum { NKEYS = sizeof keys / sizeof keys[0] };

#define SECTIONS "[model], [train], [data], [cluster], [checkpoint], [status], [security]"
#define MAX_INPUT (1L << 24) /* values per input image: keeps C*H*W and its products in range */

void config_defaults(auxps_config_t *c) {
    memset(c, 0, sizeof *c);
    c->model = (model_spec_t){.arch = ARCH_RESNET, .in_c = 1, .in_h = 28, .in_w = 28,
                              .classes = 10, .widths = {16, 32, 64}, .blocks = 1,
                              .hidden = 256, .wbits = 2, .abits = 2, .aux = 1,
                              .aux_lambda = 1.0f};
    c->train.epochs = 10;
    c->train.batch_size = 128;
    c->train.lr = 0.05f;
    c->train.momentum = 0.9f;
    c->train.nesterov = 1;
    c->train.weight_decay = 5e-4f;
    c->train.schedule = SCHED_COSINE;
    c->train.step_epochs = 3;
    c->train.step_gamma = 0.1f;
    c->train.seed = 1;
    c->train.log_interval = 100;
    strcpy(c->train.output, "auxps-model.bin");
    strcpy(c->data.dir, "/usr/share/datasets/fashion-mnist");
    c->data.mean = 0.2860f;
    c->data.std = 0.3530f;
    c->cluster.consistency = CONS_ASYNC;
    c->cluster.staleness = 2;
    c->cluster.chunk_batches = 10;
    c->cluster.heartbeat_ms = 1000;
    c->cluster.timeout_ms = 10000;
    c->cluster.rejoin_s = 600;
    c->checkpoint.every_steps = 500;
    c->checkpoint.every_s = 60;
    c->checkpoint.keep = 3;
    c->status.enabled = 1;
    strcpy(c->status.addr, "127.0.0.1");
    c->status.port = 8080;
    /* security: curve off, no key files */
}

const char *config_schedule_name(int schedule) {
    return schedule >= SCHED_COSINE && schedule <= SCHED_CONSTANT ? sched_names[schedule] : "?";
}

static int find_key(const char *section, const char *name) {
    for (int i = 0; i < NKEYS; i++)
        if (strcmp(keys[i].section, section) == 0 && strcmp(keys[i].name, name) == 0) return i;
    return -1;
}

/* Looks section.name up; returns its index, or AUXPS_ECONFIG with a message that lists what
 * would have been valid. where prefixes the message ("FILE:LINE:" or "--set"). */
static int lookup(const char *where, const char *section, const char *name, auxps_error_t *e) {
    int i = find_key(section, name);
    if (i >= 0) return i;
    if (section[0] == '\0')
        return auxps_error_set(e, AUXPS_ECONFIG, "%s %.60s: key outside any section "
                               "(sections: " SECTIONS ")", where, name);
    char list[400] = "";
    size_t len = 0;
    for (int j = 0; j < NKEYS && len < sizeof list; j++)
        if (strcmp(keys[j].section, section) == 0)
            len += (size_t)snprintf(list + len, sizeof list - len, "%s%s", len ? ", " : "",
                                    keys[j].name);
    if (len == 0)
        return auxps_error_set(e, AUXPS_ECONFIG, "%s %.60s.%.60s: unknown section [%.60s] "
                               "(sections: " SECTIONS ")", where, section, name,
                               section);
    return auxps_error_set(e, AUXPS_ECONFIG, "%s %s.%.60s: unknown key (keys of [%s]: %s)",
                           where, section, name, section, list);
}

/* Whole-string base-10 integer: rejects "", "12x", "1.5" and overflow. */
static int parse_ll(const char *s, long long *v) {
    char *end;
    errno = 0;
    *v = strtoll(s, &end, 10);
    return end == s || *end != '\0' || errno != 0 ? -1 : 0;
}

int config_parse_int(const char *s, long lo, long hi, int *out) {
    long long v;
    if (parse_ll(s, &v) != 0 || v < lo || v > hi) return -1;
    *out = (int)v;
    return 0;
}

static int in_range(const key_def *k, double v) {
    return ((k->open & LO_OPEN) ? v > k->lo : v >= k->lo) &&
           ((k->open & HI_OPEN) ? v < k->hi : v <= k->hi);
}

/* What key k accepts, for error messages (docs/CONFIG.md restates it). */
static void describe(const key_def *k, char *buf, size_t len) {
    switch (k->kind) {
    case K_INT: snprintf(buf, len, "an integer in %.0f..%.0f", k->lo, k->hi); break;
    case K_U64: snprintf(buf, len, "an integer in 0..%lld", (long long)INT64_MAX); break;
    case K_FLOAT:
        snprintf(buf, len, "a number in %c%g, %g%c", (k->open & LO_OPEN) ? '(' : '[', k->lo,
                 k->hi, (k->open & HI_OPEN) ? ')' : ']');
        break;
    case K_BOOL: snprintf(buf, len, "true/false, yes/no, on/off or 1/0"); break;
    case K_BITS: snprintf(buf, len, "1..8 or 32"); break;
    case K_WIDTHS:
        snprintf(buf, len, "three integers in %.0f..%.0f separated by commas", k->lo, k->hi);
        break;
    case K_ENUM: {
        size_t n = (size_t)snprintf(buf, len, "one of");
        for (int i = 0; k->names[i] && n < len; i++)
            n += (size_t)snprintf(buf + n, len - n, "%s %s", i ? "," : "", k->names[i]);
        break;
    }
    case K_STR:
    case K_STR0:
        snprintf(buf, len, "%d..%d characters without ';', control characters or outer spaces",
                 k->kind == K_STR0 ? 0 : 1, CONFIG_MAX_STRING);
        break;
    }
}

/* Parses text as k's value and stores it in c only if it is valid. Returns 0 or -1. */
static int parse_value(const key_def *k, const char *text, auxps_config_t *c) {
    void *p = (char *)c + k->off;
    long long v;
    switch (k->kind) {
    case K_INT:
        if (parse_ll(text, &v) || v < k->lo || v > k->hi) return -1;
        *(int *)p = (int)v;
        return 0;
    case K_U64:
        if (parse_ll(text, &v) || v < 0) return -1;
        *(uint64_t *)p = (uint64_t)v;
        return 0;
    case K_BITS:
        if (parse_ll(text, &v) || !((v >= 1 && v <= 8) || v == 32)) return -1;
        *(int *)p = (int)v;
        return 0;
    case K_FLOAT: {
        char *end;
        errno = 0;
        double d = strtod(text, &end);
        /* Range-check the double first (converting an out-of-range double to float is
         * undefined), then the float, which rounding may have pushed onto an open bound. */
        if (end == text || *end != '\0' || errno != 0 || !isfinite(d) || !in_range(k, d) ||
            !in_range(k, (float)d))
            return -1;
        *(float *)p = (float)d;
        return 0;
    }
    case K_BOOL: {
        static const char *const yes[] = {"true", "yes", "on", "1"};
        static const char *const no[] = {"false", "no", "off", "0"};
        for (int i = 0; i < 4; i++) {
            if (strcasecmp(text, yes[i]) == 0) return *(int *)p = 1, 0;
            if (strcasecmp(text, no[i]) == 0) return *(int *)p = 0, 0;
        }
        return -1;
    }
    case K_ENUM:
        for (int i = 0; k->names[i]; i++)
            if (strcasecmp(text, k->names[i]) == 0) return *(int *)p = i, 0;
        return -1;
    case K_WIDTHS: {
        int w[3];
        const char *s = text;
        for (int i = 0; i < 3; i++) {
            char *end;
            errno = 0;
            v = strtoll(s, &end, 10);
            if (end == s || errno != 0 || v < k->lo || v > k->hi) return -1;
            s = end + strspn(end, " \t");
            if (i < 2 && *s++ != ',') return -1;
            w[i] = (int)v;
        }
        if (*s != '\0') return -1;
        memcpy(p, w, sizeof w);
        return 0;
    }
    case K_STR0:
        if (text[0] == '\0') {
            *(char *)p = '\0';
            return 0;
        }
        /* fall through */
    case K_STR: {
        /* Written back, ';' would start an inline comment, a control character a new line,
         * and inih would strip outer spaces: config_write's round trip could not hold. */
        size_t n = strlen(text);
        if (n == 0 || n > CONFIG_MAX_STRING || strchr(text, ';') || text[0] == ' ' ||
            text[n - 1] == ' ')
            return -1;
        for (size_t i = 0; i < n; i++)
            if ((unsigned char)text[i] < 0x20 || text[i] == 0x7f) return -1;
        memcpy(p, text, n + 1);
        return 0;
    }
    }
    return -1;
}

/* Parses value into c[k] or fails with a message that names key, value and valid values. */
static int apply(auxps_config_t *c, const char *where, int i, const char *value,
                 auxps_error_t *e) {
    if (parse_value(&keys[i], value, c) == 0) return 0;
    char want[160];
    describe(&keys[i], want, sizeof want);
    return auxps_error_set(e, AUXPS_ECONFIG, "%s %s.%s = '%.60s': expected %s", where,
                           keys[i].section, keys[i].name, value, want);
}

/* Formats c's value of k so that parse_value reads it back to the same value. */
static void format_value(const key_def *k, const auxps_config_t *c, char *buf, size_t len) {
    const void *p = (const char *)c + k->off;
    const int *ip = p; /* read only for the kinds stored as int */
    switch (k->kind) {
    case K_INT:
    case K_BITS: snprintf(buf, len, "%d", *ip); break;
    case K_U64: snprintf(buf, len, "%" PRIu64, *(const uint64_t *)p); break;
    case K_FLOAT: {
        /* The shortest form that reads back exactly: 0.05 rather than 0.0500000007. */
        float f = *(const float *)p;
        for (int prec = 6; prec <= 9; prec++) {
            snprintf(buf, len, "%.*g", prec, f);
            if (strtof(buf, NULL) == f) break;
        }
        break;
    }
    case K_BOOL: snprintf(buf, len, *ip == 0 ? "false" : *ip == 1 ? "true" : "%d", *ip); break;
    case K_ENUM: {
        int n = 0;
        while (k->names[n]) n++;
        if (*ip >= 0 && *ip < n) snprintf(buf, len, "%s", k->names[*ip]);
        else snprintf(buf, len, "%d", *ip);
        break;
    }
    case K_WIDTHS: {
        const int *w = p;
        snprintf(buf, len, "%d,%d,%d", w[0], w[1], w[2]);
        break;
    }
    case K_STR:
    case K_STR0: snprintf(buf, len, "%.*s", 511, (const char *)p); break;
    }
}

/* Points a cross-field error at the later of the lines that set keys section.a and section.b
 * (key_line, which may be NULL, maps each key to the line of path that set it). */
static void locate(char *where, size_t len, const char *path, const int *key_line, const char *section,
                   const char *a, const char *b) {
    int la = key_line ? key_line[find_key(section, a)] : 0;
    int lb = key_line ? key_line[find_key(section, b)] : 0;
    if (path && (la > 0 || lb > 0)) snprintf(where, len, "%s:%d:", path, la > lb ? la : lb);
    else snprintf(where, len, "%s:", path ? path : "config");
}

/* Checks that need more than one field. */
static int cross_check(const auxps_config_t *c, const char *path, const int *key_line,
                       auxps_error_t *e) {
    char where[600];
    if (c->model.aux && c->model.arch == ARCH_MLP) {
        locate(where, sizeof where, path, key_line, "model", "aux", "arch");
        return auxps_error_set(e, AUXPS_ECONFIG, "%s model.aux = true needs model.arch = "
                               "resnet (the MLP has no auxiliary module): set model.aux = false",
                               where);
    }
    long long in = (long long)c->model.in_c * c->model.in_h * c->model.in_w;
    if (in > MAX_INPUT) {
        locate(where, sizeof where, path, key_line, "model", "in_height", "in_width");
        return auxps_error_set(e, AUXPS_ECONFIG, "%s model.in_channels * in_height * in_width "
                               "= %lld: expected at most %ld", where, in, MAX_INPUT);
    }
    if (c->cluster.prefetch && c->cluster.consistency != CONS_ASYNC) {
        locate(where, sizeof where, path, key_line, "cluster", "prefetch", "consistency");
        return auxps_error_set(e, AUXPS_ECONFIG, "%s cluster.prefetch = true needs cluster.consistency = async "
                               "(ssp and bsp gate each pull on the clock)", where);
    }
    /* Every role needs the server's public key to connect; the rest depends on the role. */
    if (c->security.curve && c->security.server_public[0] == '\0') {
        locate(where, sizeof where, path, key_line, "security", "curve", "server_public");
        return auxps_error_set(e, AUXPS_ECONFIG, "%s security.curve = true needs security.server_public "
                               "(the cluster's public key file, made by auxps keygen)", where);
    }
    return 0;
}

int config_check(const auxps_config_t *c, auxps_error_t *err) {
    if (c == NULL) return auxps_error_set(err, AUXPS_EINVAL, "config_check: NULL config");
    /* Each field must survive the trip through its own text form: that checks its range with
     * the parser's rules and guarantees that config_write's output loads back. */
    auxps_config_t scratch = *c;
    char text[600];
    for (int i = 0; i < NKEYS; i++) {
        format_value(&keys[i], c, text, sizeof text);
        int rc = apply(&scratch, "config:", i, text, err);
        if (rc != 0) return rc;
    }
    return cross_check(c, NULL, NULL, err);
}

typedef struct {
    auxps_config_t cfg;   /* loaded into a copy, so that a failed load leaves the caller's alone */
    const char *path;
    FILE *f;
    int line;             /* lines read so far, i.e. the line inih is parsing */
    int key_line[NKEYS];  /* line that set each key; 0 = still the default */
    int fail_line;        /* line of the first recorded error; 0 = none */
    auxps_error_t e;
} load_ctx;

static char *fail(load_ctx *x, int line, int code, const char *what) {
    x->fail_line = line;
    auxps_error_set(&x->e, code, "%s:%d: %s", x->path, line, what);
    return NULL;
}

/* fgets for inih that counts lines and stops at what inih would silently split or cut: a
 * line longer than its buffer (its tail would parse as a line of its own) and NUL bytes. */
static char *read_line(char *buf, int size, void *stream) {
    load_ctx *x = stream;
    if (x->fail_line) return NULL; /* stop at the first error */
    int n = 0, ch;
    while (n < size - 1 && (ch = getc(x->f)) != EOF) {
        if (n == 0) x->line++;
        if (ch == '\0') return fail(x, x->line, AUXPS_ECONFIG, "NUL byte in the file");
        buf[n++] = (char)ch;
        if (ch == '\n') break;
    }
    /* A full buffer is fine when only the newline did not fit. */
    if (n == size - 1 && buf[n - 1] != '\n' && (ch = getc(x->f)) != '\n' && ch != EOF) {
        char what[64];
        snprintf(what, sizeof what, "line longer than %d characters", size - 1);
        return fail(x, x->line, AUXPS_ECONFIG, what);
    }
    if (ferror(x->f)) {
        char what[128];
        snprintf(what, sizeof what, "read error: %s", strerror(errno));
        return fail(x, x->line + (n == 0), AUXPS_EIO, what);
    }
    if (n == 0) return NULL;
    buf[n] = '\0';
    return buf;
}

static int on_pair(void *user, const char *section, const char *name, const char *value) {
    load_ctx *x = user;
    char where[600];
    snprintf(where, sizeof where, "%s:%d:", x->path, x->line);
    int i = lookup(where, section, name, &x->e), rc = i < 0 ? i : 0;
    if (rc == 0 && x->key_line[i])
        rc = auxps_error_set(&x->e, AUXPS_ECONFIG, "%s %s.%s is set twice (first on line %d; "
                             "a line that starts with a space continues the previous value)",
                             where, section, name, x->key_line[i]);
    if (rc == 0) rc = apply(&x->cfg, where, i, value, &x->e);
    if (rc != 0) {
        x->fail_line = x->line;
        return 0; /* inih then returns this line */
    }
    x->key_line[i] = x->line;
    return 1;
}

/* Loads from f, named path in messages; closes f. */
static int load_file(auxps_config_t *c, const char *path, FILE *f, auxps_error_t *err) {
    load_ctx x = {.path = path, .f = f};
    config_defaults(&x.cfg);
    int bad = ini_parse_stream(read_line, &x, on_pair, &x);
    fclose(x.f);
    /* inih returns the first line it rejected, by its syntax rules or by our handler; a
     * syntax error before our first recorded error comes first. */
    if (bad > 0 && (x.fail_line == 0 || bad < x.fail_line))
        return auxps_error_set(err, AUXPS_ECONFIG, "%s:%d: syntax error: expected [section], "
                               "key = value or a comment", path, bad);
    if (x.fail_line) return auxps_error_set(err, x.e.code, "%s", x.e.msg);
    if (bad < 0) return auxps_error_set(err, AUXPS_EIO, "%s: cannot parse (inih %d)", path, bad);
    int rc = cross_check(&x.cfg, path, x.key_line, err);
    if (rc != 0) return rc;
    strcpy(x.cfg.path, path);
    *c = x.cfg;
    return 0;
}

int config_load(auxps_config_t *c, const char *path, auxps_error_t *err) {
    if (c == NULL || path == NULL)
        return auxps_error_set(err, AUXPS_EINVAL, "config_load: NULL argument");
    if (strlen(path) >= sizeof c->path)
        return auxps_error_set(err, AUXPS_ECONFIG, "%.80s...: config path longer than %zu bytes",
                               path, sizeof c->path - 1);
    FILE *f = fopen(path, "r");
    if (f == NULL) return auxps_error_set(err, AUXPS_EIO, "%s: cannot open: %s", path, strerror(errno));
    return load_file(c, path, f, err);
}

int config_load_text(auxps_config_t *c, const char *text, const char *name, auxps_error_t *err) {
    if (c == NULL || text == NULL || name == NULL)
        return auxps_error_set(err, AUXPS_EINVAL, "config_load_text: NULL argument");
    if (strlen(name) >= sizeof c->path)
        return auxps_error_set(err, AUXPS_ECONFIG, "config name longer than %zu bytes", sizeof c->path - 1);
    /* fmemopen refuses a size of 0, and a size of 1 over "" would read its terminator as a NUL
     * byte: empty text is read as one blank line, which loads the same as an empty file. */
    size_t len = strlen(text);
    if (len == 0) text = "\n", len = 1;
    FILE *f = fmemopen((void *)text, len, "r");
    if (f == NULL) return auxps_error_set(err, AUXPS_ENOMEM, "%s: cannot open the text: %s", name, strerror(errno));
    return load_file(c, name, f, err);
}

static int is_blank(char ch) { return ch == ' ' || ch == '\t'; }

int config_set(auxps_config_t *c, const char *assignment, auxps_error_t *err) {
    if (c == NULL || assignment == NULL)
        return auxps_error_set(err, AUXPS_EINVAL, "config_set: NULL argument");
    char buf[CONFIG_MAX_STRING + 128];
    size_t n = strlen(assignment);
    if (n >= sizeof buf)
        return auxps_error_set(err, AUXPS_ECONFIG, "--set '%.60s...': longer than %zu characters",
                               assignment, sizeof buf - 1);
    memcpy(buf, assignment, n + 1);
    char *eq = strchr(buf, '='), *dot = strchr(buf, '.');
    if (eq == NULL || dot == NULL || dot > eq)
        return auxps_error_set(err, AUXPS_ECONFIG, "--set '%.60s': expected section.key=value",
                               assignment);
    char *section = buf, *name = dot + 1, *value = eq + 1, *end;
    while (is_blank(*section)) section++;
    *dot = '\0';
    for (end = eq; end > name && is_blank(end[-1]); end--) {}
    *end = '\0';
    while (is_blank(*value)) value++;
    for (end = value + strlen(value); end > value && is_blank(end[-1]); end--) {}
    *end = '\0';
    int i = lookup("--set", section, name, err);
    return i < 0 ? i : apply(c, "--set", i, value, err);
}

int config_write(const auxps_config_t *c, FILE *f) {
    if (c == NULL || f == NULL) return AUXPS_EINVAL;
    fprintf(f, "# AuxPS run configuration (docs/CONFIG.md), written by config_write.\n");
    char text[600];
    for (int i = 0; i < NKEYS; i++) {
        if (i == 0 || strcmp(keys[i].section, keys[i - 1].section) != 0)
            fprintf(f, "%s[%s]\n", i ? "\n" : "", keys[i].section);
        format_value(&keys[i], c, text, sizeof text);
        fprintf(f, "%s = %s\n", keys[i].name, text);
    }
    return fflush(f) != 0 || ferror(f) ? AUXPS_EIO : 0;
}

int config_check_output(const char *path, auxps_error_t *err) {
    char dir[sizeof((auxps_config_t *)0)->train.output];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == NULL) snprintf(dir, sizeof dir, ".");
    else if (slash == dir) dir[1] = '\0';
    else *slash = '\0';
    if (access(dir, W_OK) != 0)
        return auxps_error_set(err, AUXPS_EIO, "%s: cannot write the model into '%s': %s", path, dir, strerror(errno));
    return 0;
}
