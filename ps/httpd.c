/* httpd.c - the status endpoint's HTTP/1.1 server (httpd.h): a libuv loop in a thread of its
 * own, requests parsed with http_parser, pages rendered by status.c and dashboard.c.
 *
 * Threads: the caller's thread only touches `lock` and what it guards (shared, shared_history,
 * the generations and pub_time). Everything else belongs to the server thread once it runs. */
#include "httpd.h"

#include "clock.h"
#include "dashboard.h"

#include <arpa/inet.h>
#include <errno.h>
#include <http_parser.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

enum {
    MAX_URL = 2048,            /* bytes of a request target; longer: 414 */
    MAX_HEADERS = 100,         /* header lines of a request; more: 431 */
    LINGER_MS = 1000,          /* after our last response, unread input is drained this long */
    MAX_STATIC = 4 << 20,      /* bytes of a chart library file */
    REJECT_SLACK = 64,         /* connections over the cap still told 503; beyond: closed at once */
    READ_BUF = 65536,
    MAX_UNSENT = 8 << 20,      /* a client that lets this much pile up unread is dropped */
    LISTEN_BACKLOG = 128,
};

/* The status codes the server sends; the index is the slot of its /metrics counter. */
#define CODE_MAP(X)                                                                                \
    X(200, "OK")                                                                                   \
    X(400, "Bad Request")                                                                          \
    X(404, "Not Found")                                                                            \
    X(405, "Method Not Allowed")                                                                   \
    X(408, "Request Timeout")                                                                      \
    X(414, "URI Too Long")                                                                         \
    X(431, "Request Header Fields Too Large")                                                      \
    X(500, "Internal Server Error")                                                                \
    X(503, "Service Unavailable")                                                                  \
    X(505, "HTTP Version Not Supported")

enum {
#define X(code, text) CODE_##code,
    CODE_MAP(X)
#undef X
    NUM_CODES
};

typedef struct conn conn_t;

/* One static file of the chart library, read at start. */
typedef struct {
    const char *name;          /* path served, e.g. "/dygraph.min.js" */
    const char *type;
    char *data;                /* NULL when missing */
    size_t len;
} asset_t;

struct httpd {
    httpd_options_t opt;
    char addr[64];
    int port;
    char warning[512];

    uv_mutex_t lock;           /* guards the four fields below */
    status_snapshot_t *shared;
    status_history_t *shared_history;
    uint64_t gen, history_gen; /* bumped by every publish / add */
    double pub_time;           /* clock_now_s of the last publish */

    /* The server thread's own copies, refreshed from the shared ones when a request needs them. */
    status_snapshot_t *view;
    status_history_t *history_view;
    uint64_t view_gen, history_view_gen;
    double view_time;

    uv_loop_t loop;
    uv_tcp_t listener;
    uv_async_t stop;
    uv_thread_t thread;
    int lock_ok, loop_ok, listener_ok, stop_ok, thread_ok;
    http_parser_settings settings;
    conn_t *conns;             /* open connections, a doubly linked list */
    int nconn;
    asset_t assets[2];
    char readbuf[READ_BUF];    /* every read is parsed before the next one is made */

    /* Counters, server thread only. */
    uint64_t responses[NUM_CODES];
    uint64_t accepted, rejected, timed_out;
};

struct conn {
    uv_tcp_t tcp;
    uv_timer_t timer;          /* the request deadline; after the last response, the linger */
    uv_shutdown_t shutdown;
    http_parser parser;
    httpd_t *srv;
    conn_t *prev, *next;
    int handles;               /* open uv handles; the conn is freed when none is left */
    int dead;                  /* uv_close called */
    int closing;               /* last response sent: input is drained and dropped */
    int peer_done;             /* the client shut its write side (EOF) */
    int shut_done;             /* our write side is shut */
    int writes;                /* responses queued and not yet written */
    int partial;               /* part of a request has arrived */
    int head_request;          /* the request being answered is a HEAD: no body */
    int after_value;           /* the previous header callback was a value */
    int headers;
    size_t head_bytes;
    size_t url_len;
    char url[MAX_URL + 1];
};

typedef struct {
    uv_write_t req;
    char *owned;               /* body freed once written, or NULL */
    char head[768];
} wreq_t;

static int code_slot(int code) {
    switch (code) {
#define X(c, text) case c: return CODE_##c;
        CODE_MAP(X)
#undef X
    default: return CODE_500;
    }
}

static const char *code_text(int code) {
    switch (code) {
#define X(c, text) case c: return text;
        CODE_MAP(X)
#undef X
    default: return "Internal Server Error";
    }
}

static double unix_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- connections ---- */

static void on_handle_closed(uv_handle_t *hd) {
    conn_t *c = hd->data;
    if (--c->handles == 0) free(c);
}

/* Closes both handles; pending writes and the shutdown are cancelled (their callbacks see
 * c->dead). Safe twice. */
static void conn_close(conn_t *c) {
    if (c->dead) return;
    c->dead = 1;
    httpd_t *h = c->srv;
    if (c->prev) c->prev->next = c->next;
    else h->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    h->nconn--;
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
}

static void on_timer(uv_timer_t *t);

static void deadline(conn_t *c, int ms) {
    if (!c->dead) uv_timer_start(&c->timer, on_timer, (uint64_t)ms, 0);
}

static void on_written(uv_write_t *req, int status) {
    wreq_t *w = (wreq_t *)req;
    conn_t *c = req->handle->data;
    free(w->owned);
    free(w);
    c->writes--;
    if (status < 0) conn_close(c);
}

static void on_shutdown(uv_shutdown_t *req, int status) {
    conn_t *c = req->handle->data;
    if (c->dead) return;
    c->shut_done = 1;
    if (status < 0 || c->peer_done) conn_close(c); /* nothing left to drain after the client's EOF */
    else deadline(c, LINGER_MS);
}

/* Stops serving c: its responses go out, then the write side is shut and whatever the client
 * still sends is dropped until it closes or the linger ends. */
static void conn_finish(conn_t *c) {
    if (c->dead || c->closing) return;
    c->closing = 1;
    deadline(c, c->srv->opt.timeout_ms); /* time to read the responses */
    if (uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, on_shutdown) != 0) conn_close(c);
}

/* Queues one response. body (len bytes) is sent unless the request was HEAD; owned bodies are
 * freed here or after the write. extra is more header lines ("Name: value\r\n") or NULL. cache=1
 * lets clients keep it for a day (the chart library), else no-store. keep=0 ends the connection
 * after it. */
static void respond_ex(conn_t *c, int code, const char *type, const char *body, size_t len, char *owned,
                       const char *extra, int cache, int keep) {
    httpd_t *h = c->srv;
    if (c->dead || c->closing) {
        free(owned);
        return;
    }
    h->responses[code_slot(code)]++;
    if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) > MAX_UNSENT) {
        free(owned); /* the client is not reading what it asked for */
        conn_close(c);
        return;
    }
    wreq_t *w = malloc(sizeof *w);
    if (w == NULL) {
        free(owned);
        conn_close(c);
        return;
    }
    w->owned = owned;
    int n = snprintf(w->head, sizeof w->head,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nCache-Control: %s\r\n"
                     "X-Content-Type-Options: nosniff\r\n%sConnection: %s\r\n\r\n",
                     code, code_text(code), type, len, cache ? "public, max-age=86400" : "no-store",
                     extra ? extra : "", keep ? "keep-alive" : "close");
    if (n < 0 || (size_t)n >= sizeof w->head) n = 0; /* cannot happen: the parts are ours */
    uv_buf_t bufs[2] = {uv_buf_init(w->head, (unsigned)n), uv_buf_init((char *)body, (unsigned)len)};
    const int with_body = !c->head_request && len > 0;
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, bufs, with_body ? 2 : 1, on_written) != 0) {
        free(w->owned);
        free(w);
        conn_close(c);
        return;
    }
    c->writes++;
    if (!keep) conn_finish(c);
}

static void respond(conn_t *c, int code, const char *type, const char *body, size_t len, char *owned,
                    const char *extra, int keep) {
    respond_ex(c, code, type, body, len, owned, extra, 0, keep);
}

static void respond_text(conn_t *c, int code, const char *text, const char *extra, int keep) {
    respond(c, code, "text/plain; charset=utf-8", text, strlen(text), NULL, extra, keep);
}

/* ---- the pages ---- */

/* Refreshes the server thread's copy of the snapshot if a newer one was published. */
static void sync_view(httpd_t *h) {
    uv_mutex_lock(&h->lock);
    if (h->view_gen != h->gen) {
        memcpy(h->view, h->shared, status_snapshot_used(h->shared));
        h->view_gen = h->gen;
        h->view_time = h->pub_time;
    }
    uv_mutex_unlock(&h->lock);
}

static void sync_history(httpd_t *h) {
    uv_mutex_lock(&h->lock);
    if (h->history_view_gen != h->history_gen) {
        status_history_copy(h->history_view, h->shared_history);
        h->history_view_gen = h->history_gen;
    }
    uv_mutex_unlock(&h->lock);
}

static double view_age(const httpd_t *h) {
    double a = clock_now_s() - h->view_time;
    return a > 0 ? a : 0;
}

/* The server's own families, appended to the snapshot's Prometheus text. */
static char *append_http_metrics(httpd_t *h, char *text, size_t *len) {
    char more[4096];
    size_t n = 0;
#define ADD(...) n += (size_t)snprintf(more + n, n < sizeof more ? sizeof more - n : 0, __VA_ARGS__)
    ADD("# HELP auxps_http_responses_total Responses the status endpoint sent, by status code.\n"
        "# TYPE auxps_http_responses_total counter\n");
#define X(c, t) ADD("auxps_http_responses_total{code=\"%d\"} %llu\n", c, (unsigned long long)h->responses[CODE_##c]);
    CODE_MAP(X)
#undef X
    ADD("# HELP auxps_http_connections Open connections to the status endpoint.\n"
        "# TYPE auxps_http_connections gauge\nauxps_http_connections %d\n", h->nconn);
    ADD("# HELP auxps_http_connections_total Connections to the status endpoint, by outcome.\n"
        "# TYPE auxps_http_connections_total counter\n"
        "auxps_http_connections_total{outcome=\"accepted\"} %llu\n"
        "auxps_http_connections_total{outcome=\"rejected\"} %llu\n"
        "auxps_http_connections_total{outcome=\"timed_out\"} %llu\n",
        (unsigned long long)h->accepted, (unsigned long long)h->rejected, (unsigned long long)h->timed_out);
    ADD("# HELP auxps_status_snapshot_age_seconds Seconds since the coordinator last published its status.\n"
        "# TYPE auxps_status_snapshot_age_seconds gauge\nauxps_status_snapshot_age_seconds %.3f\n", view_age(h));
#undef ADD
    if (n >= sizeof more) n = sizeof more - 1;
    char *t = realloc(text, *len + n + 1);
    if (t == NULL) {
        free(text);
        return NULL;
    }
    memcpy(t + *len, more, n + 1);
    *len += n;
    return t;
}

static void route(conn_t *c, int keep) {
    httpd_t *h = c->srv;
    struct http_parser_url u;
    http_parser_url_init(&u);
    if (http_parser_parse_url(c->url, c->url_len, 0, &u) != 0 || !(u.field_set & (1 << UF_PATH)) ||
        c->url[u.field_data[UF_PATH].off] != '/') {
        respond_text(c, 400, "bad request target\n", NULL, 0);
        return;
    }
    char path[MAX_URL + 1];
    memcpy(path, c->url + u.field_data[UF_PATH].off, u.field_data[UF_PATH].len);
    path[u.field_data[UF_PATH].len] = '\0';
    char *body = NULL;
    size_t len = 0;
    int rc = 0;
    if (strcmp(path, "/status") == 0) {
        sync_view(h);
        rc = status_json(h->view, view_age(h), unix_now(), &body, &len);
        if (rc == 0) respond(c, 200, "application/json", body, len, body, NULL, keep);
    } else if (strcmp(path, "/history") == 0) {
        sync_history(h);
        rc = status_history_json(h->history_view, &body, &len);
        if (rc == 0) respond(c, 200, "application/json", body, len, body, NULL, keep);
    } else if (strcmp(path, "/metrics") == 0) {
        sync_view(h);
        rc = status_metrics(h->view, view_age(h), &body, &len);
        if (rc == 0 && (body = append_http_metrics(h, body, &len)) == NULL) rc = AUXPS_ENOMEM;
        if (rc == 0) respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", body, len, body, NULL, keep);
    } else if (strcmp(path, "/healthz") == 0) {
        sync_view(h);
        if (h->view->state == STATUS_FAILED) respond_text(c, 503, "failed\n", NULL, keep);
        else respond_text(c, 200, "ok\n", NULL, keep);
    } else if (strcmp(path, "/") == 0) {
        const char *html = dashboard_html(&len);
        respond(c, 200, "text/html; charset=utf-8", html, len, NULL, NULL, keep);
    } else {
        for (int i = 0; i < 2; i++) {
            const asset_t *a = &h->assets[i];
            if (strcmp(path, a->name) != 0) continue;
            if (a->data != NULL) respond_ex(c, 200, a->type, a->data, a->len, NULL, NULL, 1, keep);
            else respond_text(c, 404, h->warning, NULL, keep);
            return;
        }
        respond_text(c, 404, "not found\n", NULL, keep);
        return;
    }
    if (rc != 0) respond_text(c, 500, "cannot render the page: out of memory\n", NULL, 0);
}

/* ---- parser callbacks: a non-zero return stops the parser; c->closing tells ours apart ---- */

static int on_message_begin(http_parser *p) {
    conn_t *c = p->data;
    c->partial = 1;
    c->head_request = 0;
    c->url_len = 0;
    c->url[0] = '\0';
    c->head_bytes = 0;
    c->headers = 0;
    c->after_value = 1;
    return 0;
}

static int head_grows(conn_t *c, size_t n) {
    c->head_bytes += n;
    if (c->head_bytes > (size_t)c->srv->opt.max_header_bytes || c->headers > MAX_HEADERS) {
        respond_text(c, 431, "request header fields too large\n", NULL, 0);
        return -1;
    }
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t n) {
    conn_t *c = p->data;
    if (c->url_len + n > MAX_URL) {
        respond_text(c, 414, "request target too long\n", NULL, 0);
        return -1;
    }
    memcpy(c->url + c->url_len, at, n);
    c->url_len += n;
    c->url[c->url_len] = '\0';
    return head_grows(c, n);
}

static int on_header_field(http_parser *p, const char *at, size_t n) {
    (void)at;
    conn_t *c = p->data;
    if (c->after_value) {
        c->headers++;
        n += 4; /* ": " and CRLF */
    }
    c->after_value = 0;
    return head_grows(c, n);
}

static int on_header_value(http_parser *p, const char *at, size_t n) {
    (void)at;
    conn_t *c = p->data;
    c->after_value = 1;
    return head_grows(c, n);
}

static int on_headers_complete(http_parser *p) {
    conn_t *c = p->data;
    if (p->http_major != 1) {
        respond_text(c, 505, "only HTTP/1.0 and HTTP/1.1 are served\n", NULL, 0);
        return -1;
    }
    if (p->method != HTTP_GET && p->method != HTTP_HEAD) {
        respond_text(c, 405, "method not allowed\n", "Allow: GET, HEAD\r\n", 0);
        return -1;
    }
    if ((p->flags & F_CHUNKED) || (p->content_length > 0 && p->content_length != UINT64_MAX)) {
        respond_text(c, 400, "a request body is not accepted\n", NULL, 0);
        return -1;
    }
    c->head_request = p->method == HTTP_HEAD;
    return 0;
}

static int on_message_complete(http_parser *p) {
    conn_t *c = p->data;
    c->partial = 0;
    route(c, http_should_keep_alive(p));
    if (c->closing || c->dead) return -1;
    deadline(c, c->srv->opt.timeout_ms); /* the next request has as long */
    return 0;
}

/* ---- libuv callbacks ---- */

static void on_alloc(uv_handle_t *hd, size_t suggested, uv_buf_t *buf) {
    (void)suggested;
    conn_t *c = hd->data;
    *buf = uv_buf_init(c->srv->readbuf, sizeof c->srv->readbuf);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
    conn_t *c = s->data;
    if (c->dead || nread == 0) return;
    if (nread == UV_EOF) {
        /* A client that half-closed after its request still gets the responses in flight. */
        c->peer_done = 1;
        if (c->closing && !c->shut_done) return; /* on_shutdown closes */
        if (!c->closing && c->writes > 0) conn_finish(c);
        else conn_close(c);
        return;
    }
    if (nread < 0) {
        conn_close(c);
        return;
    }
    if (c->closing) return;
    size_t n = http_parser_execute(&c->parser, &c->srv->settings, buf->base, (size_t)nread);
    if (c->closing || c->dead) return;
    enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
    if (e == HPE_HEADER_OVERFLOW) respond_text(c, 431, "request header fields too large\n", NULL, 0);
    else if (e != HPE_OK || (n != (size_t)nread && !c->parser.upgrade))
        respond_text(c, 400, "malformed request\n", NULL, 0);
    else if (c->parser.upgrade) conn_finish(c); /* what follows is not HTTP */
}

static void on_timer(uv_timer_t *t) {
    conn_t *c = t->data;
    if (c->dead) return;
    if (c->closing) {
        conn_close(c);
        return;
    }
    c->srv->timed_out++;
    if (c->partial) respond_text(c, 408, "request timeout\n", NULL, 0);
    else conn_close(c);
}

static void on_connection(uv_stream_t *server, int status) {
    httpd_t *h = server->data;
    if (status < 0) return;
    conn_t *c = calloc(1, sizeof *c);
    if (c == NULL) return; /* out of memory: libuv stops accepting; the process has worse trouble */
    c->srv = h;
    uv_tcp_init(&h->loop, &c->tcp);
    uv_timer_init(&h->loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->handles = 2;
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    c->next = h->conns;
    if (h->conns) h->conns->prev = c;
    h->conns = c;
    h->nconn++;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    if (h->nconn > h->opt.max_connections) {
        h->rejected++;
        if (h->nconn > h->opt.max_connections + REJECT_SLACK) conn_close(c);
        else respond_text(c, 503, "too many connections\n", "Retry-After: 1\r\n", 0);
    } else {
        h->accepted++;
        uv_tcp_nodelay(&c->tcp, 1);
        deadline(c, h->opt.timeout_ms);
    }
    if (!c->dead && uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) conn_close(c);
}

static void on_stop(uv_async_t *a) {
    httpd_t *h = a->data;
    while (h->conns) conn_close(h->conns);
    uv_close((uv_handle_t *)&h->listener, NULL);
    uv_close((uv_handle_t *)&h->stop, NULL);
}

static void run(void *arg) {
    httpd_t *h = arg;
    uv_run(&h->loop, UV_RUN_DEFAULT);
}

/* ---- life ---- */

void httpd_options_default(httpd_options_t *o) {
    o->addr = HTTPD_DEFAULT_ADDR;
    o->port = HTTPD_DEFAULT_PORT;
    o->timeout_ms = 10000;
    o->max_connections = 256;
    o->max_header_bytes = 8192;
    o->history_capacity = STATUS_HISTORY_CAP;
    o->dygraphs_dir = HTTPD_DYGRAPHS_DIR;
}

/* Reads dir/name into a->data; leaves it NULL and returns -1 when it cannot. */
static int load_asset(asset_t *a, const char *dir, const char *name) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (f == NULL) return -1;
    char *d = malloc(MAX_STATIC);
    size_t n = d ? fread(d, 1, MAX_STATIC, f) : 0;
    int bad = d == NULL || ferror(f) || n == MAX_STATIC || n == 0;
    fclose(f);
    if (bad) {
        free(d);
        return -1;
    }
    a->data = d;
    a->len = n;
    return 0;
}

/* Closes what httpd_start_with opened and frees h; for a loop that is not running. */
static void teardown(httpd_t *h) {
    if (h->loop_ok) {
        if (h->listener_ok && !uv_is_closing((uv_handle_t *)&h->listener))
            uv_close((uv_handle_t *)&h->listener, NULL);
        if (h->stop_ok && !uv_is_closing((uv_handle_t *)&h->stop)) uv_close((uv_handle_t *)&h->stop, NULL);
        uv_run(&h->loop, UV_RUN_DEFAULT);
        uv_loop_close(&h->loop);
    }
    if (h->lock_ok) uv_mutex_destroy(&h->lock);
    for (int i = 0; i < 2; i++) free(h->assets[i].data);
    free(h->shared);
    free(h->view);
    status_history_destroy(&h->shared_history);
    status_history_destroy(&h->history_view);
    free(h);
}

httpd_t *httpd_start_with(const httpd_options_t *opt, auxps_error_t *err) {
    httpd_options_t o;
    httpd_options_default(&o);
    if (opt != NULL) o = *opt;
    if (o.addr == NULL) o.addr = HTTPD_DEFAULT_ADDR;
    if (o.dygraphs_dir == NULL) o.dygraphs_dir = HTTPD_DYGRAPHS_DIR;
    if (o.port < 0 || o.port > 65535 || o.timeout_ms < 100 || o.timeout_ms > 600000 || o.max_connections < 1 ||
        o.max_connections > 10000 || o.max_header_bytes < 1024 || o.max_header_bytes > (1 << 20) ||
        o.history_capacity < 4 || o.history_capacity > (1 << 20)) {
        auxps_error_set(err, AUXPS_EINVAL, "status server: an option is out of range (port 0..65535, timeout "
                        "100..600000 ms, connections 1..10000, header bytes 1024..1048576, history 4..1048576)");
        return NULL;
    }
    const char *bind_addr = strcmp(o.addr, "localhost") == 0 ? "127.0.0.1" : o.addr;
    struct sockaddr_storage sa;
    int rc = strchr(bind_addr, ':') ? uv_ip6_addr(bind_addr, o.port, (struct sockaddr_in6 *)&sa)
                                    : uv_ip4_addr(bind_addr, o.port, (struct sockaddr_in *)&sa);
    if (rc != 0 || strlen(bind_addr) >= 64) {
        auxps_error_set(err, AUXPS_EINVAL, "status server: address '%s' is not an IPv4 or IPv6 literal", o.addr);
        return NULL;
    }
    httpd_t *h = calloc(1, sizeof *h);
    if (h == NULL) {
        auxps_error_set(err, AUXPS_ENOMEM, "status server: out of memory");
        return NULL;
    }
    h->opt = o;
    snprintf(h->addr, sizeof h->addr, "%s", bind_addr);
    h->opt.addr = h->addr;
    h->opt.dygraphs_dir = NULL; /* the caller's string is not kept */
    h->shared = malloc(sizeof *h->shared);
    h->view = malloc(sizeof *h->view);
    h->shared_history = status_history_new(o.history_capacity);
    h->history_view = status_history_new(o.history_capacity);
    if (h->shared == NULL || h->view == NULL || h->shared_history == NULL || h->history_view == NULL) {
        auxps_error_set(err, AUXPS_ENOMEM, "status server: out of memory");
        goto fail;
    }
    status_snapshot_init(h->shared);
    status_snapshot_init(h->view);
    h->pub_time = h->view_time = clock_now_s();

    h->assets[0] = (asset_t){"/dygraph.min.js", "text/javascript; charset=utf-8", NULL, 0};
    h->assets[1] = (asset_t){"/dygraph.min.css", "text/css; charset=utf-8", NULL, 0};
    if (load_asset(&h->assets[0], o.dygraphs_dir, "dygraph.min.js") != 0 ||
        load_asset(&h->assets[1], o.dygraphs_dir, "dygraph.min.css") != 0)
        snprintf(h->warning, sizeof h->warning,
                 "the dashboard's charts are off: cannot read %.300s/dygraph.min.js and dygraph.min.css "
                 "(install Debian's libjs-dygraphs)\n", o.dygraphs_dir);

    h->settings = (http_parser_settings){
        .on_message_begin = on_message_begin,
        .on_url = on_url,
        .on_header_field = on_header_field,
        .on_header_value = on_header_value,
        .on_headers_complete = on_headers_complete,
        .on_message_complete = on_message_complete,
    };
    if (uv_mutex_init(&h->lock) != 0) {
        auxps_error_set(err, AUXPS_ENOMEM, "status server: cannot create its mutex");
        goto fail;
    }
    h->lock_ok = 1;
    if ((rc = uv_loop_init(&h->loop)) != 0) {
        auxps_error_set(err, AUXPS_ENOMEM, "status server: cannot create the event loop: %s", uv_strerror(rc));
        goto fail;
    }
    h->loop_ok = 1;
    uv_tcp_init(&h->loop, &h->listener);
    h->listener.data = h;
    h->listener_ok = 1;
    if ((rc = uv_tcp_bind(&h->listener, (const struct sockaddr *)&sa, 0)) != 0 ||
        (rc = uv_listen((uv_stream_t *)&h->listener, LISTEN_BACKLOG, on_connection)) != 0) {
        auxps_error_set(err, AUXPS_EIO, "status server: cannot listen on %s port %d: %s", o.addr, o.port,
                        uv_strerror(rc));
        goto fail;
    }
    struct sockaddr_storage bound;
    int blen = sizeof bound;
    if ((rc = uv_tcp_getsockname(&h->listener, (struct sockaddr *)&bound, &blen)) != 0) {
        auxps_error_set(err, AUXPS_EIO, "status server: getsockname: %s", uv_strerror(rc));
        goto fail;
    }
    h->port = bound.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&bound)->sin6_port)
                                          : ntohs(((struct sockaddr_in *)&bound)->sin_port);
    if (uv_async_init(&h->loop, &h->stop, on_stop) != 0) {
        auxps_error_set(err, AUXPS_ENOMEM, "status server: cannot create the stop signal");
        goto fail;
    }
    h->stop.data = h;
    h->stop_ok = 1;
    /* The thread inherits a mask that blocks every signal: SIGINT and SIGTERM must interrupt
     * the caller's poll, not this thread. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = uv_thread_create(&h->thread, run, h);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        auxps_error_set(err, AUXPS_ENOMEM, "status server: cannot start its thread: %s", uv_strerror(rc));
        goto fail;
    }
    h->thread_ok = 1;
    return h;
fail:
    teardown(h);
    return NULL;
}

httpd_t *httpd_start(const char *addr, int port, auxps_error_t *err) {
    httpd_options_t o;
    httpd_options_default(&o);
    o.addr = addr;
    o.port = port;
    return httpd_start_with(&o, err);
}

int httpd_port(const httpd_t *h) { return h ? h->port : -1; }

const char *httpd_warning(const httpd_t *h) { return h && h->warning[0] ? h->warning : NULL; }

int httpd_publish(httpd_t *h, const status_snapshot_t *s) {
    if (h == NULL || s == NULL) return AUXPS_EINVAL;
    int rc = status_snapshot_check(s, NULL);
    if (rc != 0) return rc;
    const double now = clock_now_s();
    uv_mutex_lock(&h->lock);
    memcpy(h->shared, s, status_snapshot_used(s));
    h->gen++;
    h->pub_time = now;
    uv_mutex_unlock(&h->lock);
    return 0;
}

int httpd_history_add(httpd_t *h, const status_point_t *p) {
    if (h == NULL || p == NULL) return AUXPS_EINVAL;
    uv_mutex_lock(&h->lock);
    int rc = status_history_add(h->shared_history, p);
    h->history_gen++;
    uv_mutex_unlock(&h->lock);
    return rc;
}

void httpd_destroy(httpd_t **hp) {
    if (hp == NULL || *hp == NULL) return;
    httpd_t *h = *hp;
    if (h->thread_ok) {
        uv_async_send(&h->stop);
        uv_thread_join(&h->thread);
    }
    teardown(h);
    *hp = NULL;
}
