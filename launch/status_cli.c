/* status_cli.c - `auxps status`: one HTTP GET of /status and its INFO-style view (status_cli.h). */
#include "status_cli.h"

#include <errno.h>
#include <http_parser.h>
#include <jansson.h>
#include <math.h>
#include <netdb.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"

enum { MAX_HOST = 255, MAX_PATH = 2048, BAR_WIDTH = 40 };

typedef struct {
    char host[MAX_HOST + 1];   /* without brackets */
    char port[8];
    char path[MAX_PATH + 1];
    char authority[MAX_HOST + 16]; /* the Host header */
} url_t;

static int parse_url(const char *s, url_t *u, auxps_error_t *err) {
    const char *p = s;
    if (strncmp(p, "http://", 7) == 0) p += 7;
    else if (strstr(p, "://") != NULL)
        return auxps_error_set(err, AUXPS_EINVAL, "%s: only http:// URLs are supported", s);
    size_t hl;
    int v6 = *p == '[';
    if (v6) {
        const char *e = strchr(p, ']');
        if (e == NULL) return auxps_error_set(err, AUXPS_EINVAL, "%s: unterminated [IPv6 address]", s);
        hl = (size_t)(e - p - 1);
        memcpy(u->host, p + 1, hl <= MAX_HOST ? hl : 0);
        p = e + 1;
    } else {
        hl = strcspn(p, ":/");
        memcpy(u->host, p, hl <= MAX_HOST ? hl : 0);
        p += hl;
    }
    if (hl > MAX_HOST) return auxps_error_set(err, AUXPS_EINVAL, "%s: host name too long", s);
    u->host[hl] = '\0';
    if (hl == 0) snprintf(u->host, sizeof u->host, "127.0.0.1");
    long port = 8080;
    if (*p == ':') {
        char *end;
        errno = 0;
        port = strtol(p + 1, &end, 10);
        if (errno != 0 || end == p + 1 || port < 1 || port > 65535 || (*end != '\0' && *end != '/'))
            return auxps_error_set(err, AUXPS_EINVAL, "%s: the port must be a number in 1..65535", s);
        p = end;
    }
    if (*p != '\0' && *p != '/') return auxps_error_set(err, AUXPS_EINVAL, "%s: not an http URL", s);
    if (strlen(p) > MAX_PATH) return auxps_error_set(err, AUXPS_EINVAL, "%s: path too long", s);
    for (const char *c = p; *c; c++)
        if (*c <= 0x20 || *c >= 0x7f) return auxps_error_set(err, AUXPS_EINVAL, "%s: the path has a space or a control byte", s);
    snprintf(u->path, sizeof u->path, "%s", *p == '\0' || strcmp(p, "/") == 0 ? "/status" : p);
    snprintf(u->port, sizeof u->port, "%ld", port);
    snprintf(u->authority, sizeof u->authority, v6 ? "[%s]:%ld" : "%s:%ld", u->host, port);
    return 0;
}

/* Milliseconds left before deadline (clock_now_ms), at least 0. */
static int left_ms(int64_t deadline) {
    int64_t l = deadline - clock_now_ms();
    return l < 0 ? 0 : l > INT32_MAX ? INT32_MAX : (int)l;
}

/* Waits until fd is ready for events; returns 0, or -1 at the deadline or on a poll error. */
static int wait_fd(int fd, short events, int64_t deadline) {
    for (;;) {
        struct pollfd pf = {fd, events, 0};
        int ms = left_ms(deadline);
        if (ms == 0) return -1;
        int r = poll(&pf, 1, ms);
        if (r > 0) return 0;
        if (r < 0 && errno != EINTR) return -1;
    }
}

static int connect_any(const url_t *u, int64_t deadline, auxps_error_t *err) {
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int g = getaddrinfo(u->host, u->port, &hints, &res);
    if (g != 0) return auxps_error_set(err, AUXPS_EIO, "cannot resolve %s: %s", u->host, gai_strerror(g));
    int fd = -1, why = 0;
    for (struct addrinfo *a = res; a != NULL && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) {
            why = errno;
            continue;
        }
        if (connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
            int e = errno;
            socklen_t sl = sizeof e;
            if (e == EINPROGRESS) {
                e = ETIMEDOUT;
                if (wait_fd(fd, POLLOUT, deadline) == 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &sl) != 0) e = errno;
            }
            if (e != 0) {
                why = e;
                close(fd);
                fd = -1;
            }
        }
    }
    freeaddrinfo(res);
    if (fd < 0) return auxps_error_set(err, AUXPS_EIO, "cannot connect to %s: %s", u->authority, strerror(why));
    return fd;
}

typedef struct {
    char *body;
    size_t len, cap;
    int complete, too_big;
} reply_t;

static int on_body(http_parser *p, const char *at, size_t n) {
    reply_t *r = p->data;
    if (r->len + n + 1 > STATUS_CLI_MAX_BODY) {
        r->too_big = 1;
        return -1;
    }
    if (r->len + n + 1 > r->cap) {
        size_t cap = r->cap ? r->cap : 65536;
        while (cap < r->len + n + 1) cap *= 2;
        char *b = realloc(r->body, cap);
        if (b == NULL) return -1;
        r->body = b;
        r->cap = cap;
    }
    memcpy(r->body + r->len, at, n);
    r->len += n;
    r->body[r->len] = '\0';
    return 0;
}

static int on_complete(http_parser *p) {
    ((reply_t *)p->data)->complete = 1;
    return -1; /* stop: one reply is all we asked for */
}

int status_cli_get(const char *url, int timeout_ms, int *code, char **body, size_t *len, auxps_error_t *err) {
    url_t u;
    *body = NULL;
    int rc = parse_url(url, &u, err);
    if (rc != 0) return rc;
    const int64_t deadline = clock_now_ms() + timeout_ms;
    int fd = connect_any(&u, deadline, err);
    if (fd < 0) return fd;
    char req[MAX_PATH + 2 * MAX_HOST + 256];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: auxps-status\r\nAccept: application/json\r\n"
                     "Connection: close\r\n\r\n", u.path, u.authority);
    reply_t r = {0};
    http_parser p;
    http_parser_settings st = {.on_body = on_body, .on_message_complete = on_complete};
    http_parser_init(&p, HTTP_RESPONSE);
    p.data = &r;
    for (int off = 0; off < n;) {
        ssize_t k = send(fd, req + off, (size_t)(n - off), MSG_NOSIGNAL);
        if (k < 0 && (errno == EAGAIN || errno == EINTR)) {
            if (wait_fd(fd, POLLOUT, deadline) != 0) {
                rc = auxps_error_set(err, AUXPS_EIO, "%s: timed out sending the request", u.authority);
                goto done;
            }
            continue;
        }
        if (k < 0) {
            rc = auxps_error_set(err, AUXPS_EIO, "%s: send: %s", u.authority, strerror(errno));
            goto done;
        }
        off += (int)k;
    }
    while (!r.complete) {
        char buf[65536];
        ssize_t k = recv(fd, buf, sizeof buf, 0);
        if (k < 0 && (errno == EAGAIN || errno == EINTR)) {
            if (wait_fd(fd, POLLIN, deadline) != 0) {
                rc = auxps_error_set(err, AUXPS_EIO, "%s: no complete reply within %d ms", u.authority, timeout_ms);
                goto done;
            }
            continue;
        }
        if (k < 0) {
            rc = auxps_error_set(err, AUXPS_EIO, "%s: recv: %s", u.authority, strerror(errno));
            goto done;
        }
        size_t used = http_parser_execute(&p, &st, buf, (size_t)k); /* k == 0: end of stream */
        if (r.too_big) {
            rc = auxps_error_set(err, AUXPS_EFORMAT, "%s: reply over %u bytes", u.authority, STATUS_CLI_MAX_BODY);
            goto done;
        }
        if (!r.complete && (HTTP_PARSER_ERRNO(&p) != HPE_OK || used != (size_t)k)) {
            rc = auxps_error_set(err, AUXPS_EFORMAT, "%s: not an HTTP reply (%s)", u.authority,
                                 http_errno_description(HTTP_PARSER_ERRNO(&p)));
            goto done;
        }
        if (k == 0 && !r.complete) {
            rc = auxps_error_set(err, AUXPS_EIO, "%s: the connection closed before the reply was complete",
                                 u.authority);
            goto done;
        }
    }
    if (r.body == NULL && (r.body = calloc(1, 1)) == NULL) {
        rc = auxps_error_set(err, AUXPS_ENOMEM, "out of memory");
        goto done;
    }
    *code = (int)p.status_code;
    *body = r.body;
    *len = r.len;
    r.body = NULL;
done:
    free(r.body);
    close(fd);
    return rc;
}

/* ---- the INFO view ---- */

static double jnum(const json_t *o, const char *key) {
    const json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

static const char *jtext(const json_t *o, const char *key) {
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

/* A number for a key:value line: "-" when unknown, else with d decimals (d < 0: as an integer). */
static const char *fmt(char *b, size_t n, double v, int d) {
    if (!isfinite(v)) snprintf(b, n, "-");
    else if (d < 0) snprintf(b, n, "%.0f", v);
    else snprintf(b, n, "%.*f", d, v);
    return b;
}

static void duration(char *b, size_t n, double s) {
    if (!isfinite(s) || s < 0) {
        snprintf(b, n, "-");
        return;
    }
    long t = (long)s;
    if (t >= 3600) snprintf(b, n, "%ldh %02ldm %02lds", t / 3600, t / 60 % 60, t % 60);
    else if (t >= 60) snprintf(b, n, "%ldm %02lds", t / 60, t % 60);
    else snprintf(b, n, "%.1fs", s);
}

static void utc(char *b, size_t n, double t) {
    time_t tt = (time_t)t;
    struct tm tm;
    if (!isfinite(t) || t <= 0 || gmtime_r(&tt, &tm) == NULL) snprintf(b, n, "-");
    else strftime(b, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void bar(FILE *out, const char *key, double done, double total, const char *tail) {
    double f = total > 0 && isfinite(done) ? done / total : 0;
    if (f < 0) f = 0;
    if (f > 1) f = 1;
    int k = (int)(f * BAR_WIDTH + 0.5);
    fprintf(out, "%s:[", key);
    for (int i = 0; i < BAR_WIDTH; i++) fputc(i < k ? '#' : '.', out);
    fprintf(out, "] %5.1f%%%s\n", 100 * f, tail);
}

static int print_info(FILE *out, const char *url, const json_t *s, auxps_error_t *err) {
    const json_t *model = json_object_get(s, "model"), *ws = json_object_get(s, "workers"),
                 *ss = json_object_get(s, "shards"), *ck = json_object_get(s, "checkpoint");
    if (!json_is_object(s) || !json_is_string(json_object_get(s, "state")) || !json_is_object(model) ||
        !json_is_array(ws) || !json_is_array(ss))
        return auxps_error_set(err, AUXPS_EFORMAT, "%s: not a status document (docs/STATUS.md)", url);
    char a[64], b[64], c[64];
    fprintf(out, "# Run\nurl:%s\nstate:%s\n", url, jtext(s, "state"));
    utc(a, sizeof a, jnum(s, "started"));
    duration(b, sizeof b, jnum(s, "uptime_s"));
    fprintf(out, "started:%s\nuptime:%s\n", a, b);
    fprintf(out, "model:%s W%sA%s, auxiliary module %s, %s params\n", jtext(model, "arch"),
            fmt(a, sizeof a, jnum(model, "weight_bits"), -1), fmt(b, sizeof b, jnum(model, "act_bits"), -1),
            json_is_true(json_object_get(model, "aux")) ? "on" : "off", fmt(c, sizeof c, jnum(model, "params"), -1));
    fprintf(out, "consistency:%s\nstaleness_bound:%s\n", jtext(s, "consistency"),
            fmt(a, sizeof a, jnum(s, "staleness_bound"), -1));
    if (json_object_get(s, "pull") != NULL) fprintf(out, "pull:%s\npush:%s\n", jtext(s, "pull"), jtext(s, "push"));
    if (json_object_get(s, "prefetch") != NULL)
        fprintf(out, "prefetch:%s\n", json_is_true(json_object_get(s, "prefetch")) ? "on" : "off");
    const double age = jnum(s, "snapshot_age_s");
    if (age > 5) fprintf(out, "warning:no update from the coordinator for %.0f s\n", age);

    fprintf(out, "\n# Progress\nepoch:%s/%s\n", fmt(a, sizeof a, jnum(s, "epoch"), -1),
            fmt(b, sizeof b, jnum(s, "epochs"), -1));
    char tail[256];
    snprintf(tail, sizeof tail, " (%s/%s chunks done, %s leased)", fmt(a, sizeof a, jnum(s, "chunks_done"), -1),
             fmt(b, sizeof b, jnum(s, "chunks_total"), -1), fmt(c, sizeof c, jnum(s, "chunks_leased"), -1));
    bar(out, "epoch_progress", jnum(s, "chunks_done"), jnum(s, "chunks_total"), tail);
    fprintf(out, "step:%s/%s\n", fmt(a, sizeof a, jnum(s, "step"), -1), fmt(b, sizeof b, jnum(s, "total_steps"), -1));
    bar(out, "run_progress", jnum(s, "step"), jnum(s, "total_steps"), "");
    fprintf(out, "samples_per_s:%s\nchunks_released:%s\n", fmt(a, sizeof a, jnum(s, "samples_per_s"), 1),
            fmt(b, sizeof b, jnum(s, "chunks_released"), -1));

    fprintf(out, "\n# Training\nloss_low:%s\nloss_aux:%s\n", fmt(a, sizeof a, jnum(s, "loss_low"), 4),
            fmt(b, sizeof b, jnum(s, "loss_aux"), 4));
    const double acc = jnum(s, "test_accuracy");
    if (isfinite(acc)) fprintf(out, "test_accuracy:%.4f (%.2f%%)\n", acc, 100 * acc);
    else fprintf(out, "test_accuracy:none yet\n");
    if (json_is_object(ck)) {
        utc(a, sizeof a, jnum(ck, "time"));
        duration(b, sizeof b, jnum(s, "time") - jnum(ck, "time"));
        fprintf(out, "checkpoint:step %s at %s (%s ago)\n", fmt(c, sizeof c, jnum(ck, "step"), -1), a, b);
    } else {
        fprintf(out, "checkpoint:none\n");
    }

    fprintf(out, "\n# Workers\nworkers:%zu\n", json_array_size(ws));
    for (size_t i = 0; i < json_array_size(ws); i++) {
        const json_t *w = json_array_get(ws, i);
        char d[64], e[64];
        fprintf(out, "worker%s:host=%s,state=%s,samples=%s,samples_per_s=%s,heartbeat_age_s=%s,staleness=%s\n",
                fmt(a, sizeof a, jnum(w, "id"), -1), jtext(w, "host"), jtext(w, "state"),
                fmt(b, sizeof b, jnum(w, "samples"), -1), fmt(c, sizeof c, jnum(w, "samples_per_s"), 1),
                fmt(d, sizeof d, jnum(w, "heartbeat_age_s"), 1), fmt(e, sizeof e, jnum(w, "staleness"), -1));
    }
    fprintf(out, "\n# Shards\nshards:%zu\n", json_array_size(ss));
    for (size_t i = 0; i < json_array_size(ss); i++) {
        const json_t *h = json_array_get(ss, i);
        char d[64], e[64], f[64], g[64];
        fprintf(out, "shard%s:host=%s,offset=%s,length=%s,updates=%s,version=%s,bytes_in=%s,bytes_out=%s\n",
                fmt(a, sizeof a, jnum(h, "id"), -1), jtext(h, "host"), fmt(b, sizeof b, jnum(h, "offset"), -1),
                fmt(c, sizeof c, jnum(h, "length"), -1), fmt(d, sizeof d, jnum(h, "updates"), -1),
                fmt(e, sizeof e, jnum(h, "version"), -1), fmt(f, sizeof f, jnum(h, "bytes_in"), -1),
                fmt(g, sizeof g, jnum(h, "bytes_out"), -1));
    }
    return 0;
}

int status_cli_main(int argc, char **argv) {
    const char *url = STATUS_CLI_DEFAULT_URL;
    int json = 0, have_url = 0;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) json = 1;
        else if (argv[i][0] != '-' && !have_url) url = argv[i], have_url = 1;
        else {
            fprintf(stderr, "auxps status: unknown argument '%s'\nusage: auxps status [URL] [--json]\n", argv[i]);
            return 2;
        }
    }
    auxps_error_t err = {0};
    char *body = NULL;
    size_t len = 0;
    int code = 0;
    if (status_cli_get(url, STATUS_CLI_TIMEOUT_MS, &code, &body, &len, &err) != 0) {
        fprintf(stderr, "auxps status: %s\n", err.msg);
        return 1;
    }
    int rc = 1;
    json_error_t je;
    json_t *doc = NULL;
    if (code != 200) {
        /* The server's words, cut short and shown as printable ASCII only: it may be anyone. */
        char said[201];
        size_t n = 0;
        for (size_t i = 0; i < len && n < sizeof said - 1; i++) said[n++] = body[i] >= 0x20 && body[i] < 0x7f ? body[i] : ' ';
        said[n] = '\0';
        fprintf(stderr, "auxps status: %s: HTTP %d: %s\n", url, code, said);
        goto done;
    }
    if ((doc = json_loadb(body, len, 0, &je)) == NULL) {
        fprintf(stderr, "auxps status: %s: the reply is not JSON: %s (line %d)\n", url, je.text, je.line);
        goto done;
    }
    if (json) {
        fwrite(body, 1, len, stdout);
        if (len == 0 || body[len - 1] != '\n') fputc('\n', stdout);
        rc = 0;
    } else {
        url_t u;
        char shown[sizeof u.authority + sizeof u.path + 8];
        if (parse_url(url, &u, NULL) == 0) snprintf(shown, sizeof shown, "http://%s%s", u.authority, u.path);
        else snprintf(shown, sizeof shown, "%s", url);
        rc = print_info(stdout, shown, doc, &err) == 0 ? 0 : 1;
        if (rc != 0) fprintf(stderr, "auxps status: %s\n", err.msg);
    }
    if (fflush(stdout) != 0) rc = 1;
done:
    json_decref(doc);
    free(body);
    return rc;
}
