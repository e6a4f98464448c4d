/* test_status.c - the status endpoint: the snapshot's JSON and Prometheus renderings and the
 * bounded history (status.c), the HTTP server (httpd.c) over real sockets on 127.0.0.1, the
 * dashboard (dashboard.c) in headless Chromium, and `auxps status` (status_cli.c) as the real
 * program (AUXPS_BIN, default build/auxps).
 *
 * Each test starts its own server on a free port (port 0) in the test process and plays the
 * coordinator: it publishes synthetic snapshots and history points. The clients are real: curl,
 * promtool (Debian's prometheus), chromium, and a plain socket client written here for what
 * curl will not send (half a request, a malformed one, pipelined ones). Every external program
 * runs with a deadline and is killed at it. Helper threads never assert: they count, and the
 * test thread asserts on the counts. */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <libgen.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "httpd.h"
#include "status.h"
#include "util.h"

extern char **environ;

enum { CMD_TIMEOUT_S = 60, CHROME_TIMEOUT_S = 150, IO_TIMEOUT_MS = 10000 };

/* Each test runs in its own process, so this per-test state needs no locking. */
static httpd_t *srv;
static int live_port;           /* the coordinator's status port in the live-run test (srv is NULL) */
static char tmp_dir[64];
static status_snapshot_t snap; /* what the test publishes; large, so not on the stack */

static void setup(void) { util_tmpdir_make(tmp_dir, "status"); }

static void teardown(void) {
    httpd_destroy(&srv);
    util_proc_kill_all();
    util_tmpdir_remove(tmp_dir);
}

TestSuite(status, .init = setup, .fini = teardown, .timeout = 300);

/* ---- the synthetic run ---- */

/* A run of 2 workers and 2 shards at step `step`, with numbers derived from it. */
static void fill_snapshot(status_snapshot_t *s, uint64_t step) {
    status_snapshot_init(s);
    s->state = STATUS_TRAINING;
    snprintf(s->model.arch, sizeof s->model.arch, "resnet8");
    s->model.weight_bits = 2;
    s->model.act_bits = 2;
    s->model.aux = 1;
    s->model.params = 87044;
    snprintf(s->consistency, sizeof s->consistency, "ssp");
    snprintf(s->pull, sizeof s->pull, "kbit");
    snprintf(s->push, sizeof s->push, "q8");
    s->prefetch = 1;
    s->staleness_bound = 2;
    s->epochs = 10;
    s->epoch = 1 + (int)(step / 469);
    s->step = step;
    s->total_steps = 4690;
    s->samples_per_s = 400.0 + (double)(step % 7);
    s->loss_low = 2.0 / (1.0 + step / 100.0);
    s->loss_aux = 1.8 / (1.0 + step / 100.0);
    if (step >= 469) s->test_accuracy = 0.75;
    s->chunks_total = 47;
    s->chunks_done = (step % 469) / 10;
    s->chunks_leased = 2;
    s->chunks_released = 1;
    s->started = 1700000000.0;
    s->uptime_s = (double)step / 3.0;
    s->num_workers = 2;
    s->num_shards = 2;
    for (int i = 0; i < 2; i++) {
        status_worker_t *w = &s->workers[i];
        w->id = (uint32_t)i;
        snprintf(w->host, sizeof w->host, "node%d:%d", i, 1000 + i);
        snprintf(w->state, sizeof w->state, "alive");
        w->samples = step * 64;
        w->samples_per_s = 200.0 + i;
        w->heartbeat_age_s = 0.25;
        w->staleness = i;
        status_shard_t *h = &s->shards[i];
        h->id = (uint32_t)i;
        snprintf(h->host, sizeof h->host, "ps%d:%d", i, 2000 + i);
        h->offset = (uint64_t)i * 43522;
        h->length = 43522;
        h->updates = step;
        h->version = step;
        h->bytes_in = step * 174088;
        h->bytes_out = step * 174088;
    }
}

static status_point_t point_at(uint64_t step) {
    status_point_t p = {1700000000.0 + (double)step, step, 1 + (int)(step / 469), 2.0 / (1.0 + step / 100.0),
                        1.8 / (1.0 + step / 100.0), 400.0, step >= 469 ? 0.75 : NAN};
    return p;
}

static void publish_step(uint64_t step) {
    fill_snapshot(&snap, step);
    cr_assert_eq(httpd_publish(srv, &snap), 0);
}

static void start_with(httpd_options_t *o) {
    auxps_error_t err = {0};
    o->addr = "127.0.0.1";
    o->port = 0;
    srv = httpd_start_with(o, &err);
    cr_assert_not_null(srv, "httpd_start_with: %s", err.msg);
    cr_assert_gt(httpd_port(srv), 0);
}

static void start_server(void) {
    httpd_options_t o;
    httpd_options_default(&o);
    start_with(&o);
}

static const char *url(char buf[128], const char *path) {
    snprintf(buf, 128, "http://127.0.0.1:%d%s", httpd_port(srv), path);
    return buf;
}

/* ---- external programs ---- */

typedef struct {
    char *out, *err;
    size_t out_len, err_len;
    int status;      /* exit status, or -1 if killed by a signal */
    int timed_out;
} cmd_t;

static void cmd_free(cmd_t *c) {
    free(c->out);
    free(c->err);
    memset(c, 0, sizeof *c);
}

static int have_program(const char *name) {
    char path[512];
    const char *p = getenv("PATH");
    if (p == NULL) p = "/usr/bin:/bin";
    while (*p) {
        size_t n = strcspn(p, ":");
        snprintf(path, sizeof path, "%.*s/%s", (int)n, p, name);
        if (access(path, X_OK) == 0) return 1;
        p += n + (p[n] == ':');
    }
    return 0;
}

static void append(char **buf, size_t *len, const char *p, size_t n) {
    char *b = realloc(*buf, *len + n + 1);
    cr_assert_not_null(b);
    memcpy(b + *len, p, n);
    *len += n;
    b[*len] = '\0';
    *buf = b;
}

/* Runs argv (found in PATH) with stdin from stdin_path (or /dev/null), captures its output, and
 * kills it after timeout_s. */
static void run_cmd(cmd_t *c, const char *const argv[], const char *stdin_path, double timeout_s) {
    memset(c, 0, sizeof *c);
    append(&c->out, &c->out_len, "", 0);
    append(&c->err, &c->err_len, "", 0);
    int po[2], pe[2];
    cr_assert_eq(pipe2(po, O_CLOEXEC), 0);
    cr_assert_eq(pipe2(pe, O_CLOEXEC), 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, stdin_path ? stdin_path : "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, po[1], 1);
    posix_spawn_file_actions_adddup2(&fa, pe[1], 2);
    pid_t pid;
    int rc = posix_spawnp(&pid, argv[0], &fa, NULL, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(po[1]);
    close(pe[1]);
    cr_assert_eq(rc, 0, "cannot start %s: %s", argv[0], strerror(rc));
    struct pollfd fds[2] = {{po[0], POLLIN, 0}, {pe[0], POLLIN, 0}};
    const double deadline = util_now_s() + timeout_s;
    int open_fds = 2;
    while (open_fds > 0) {
        double left = deadline - util_now_s();
        if (left <= 0) {
            c->timed_out = 1;
            break;
        }
        int r = poll(fds, 2, (int)(left * 1000) + 1);
        if (r < 0 && errno == EINTR) continue;
        cr_assert_geq(r, 0);
        for (int i = 0; i < 2; i++) {
            if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            char buf[65536];
            ssize_t k = read(fds[i].fd, buf, sizeof buf);
            if (k > 0) {
                if (i == 0) append(&c->out, &c->out_len, buf, (size_t)k);
                else append(&c->err, &c->err_len, buf, (size_t)k);
            } else if (k == 0 || errno != EINTR) {
                close(fds[i].fd);
                fds[i].fd = -1;
                open_fds--;
            }
        }
    }
    if (c->timed_out) kill(pid, SIGKILL);
    for (int i = 0; i < 2; i++)
        if (fds[i].fd >= 0) close(fds[i].fd);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    c->status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    cr_assert(!c->timed_out, "%s did not finish within %.0f s; stderr:\n%s", argv[0], timeout_s, c->err);
}

/* curl -s URL with extra options; returns the HTTP code and, in *body (caller frees), the body. */
static int curl(const char *u, char **body, const char *const extra[]) {
    const char *argv[32] = {"curl", "-s", "-S", "--max-time", "20", "-w", "\n%{http_code}"};
    int n = 7;
    for (int i = 0; extra && extra[i]; i++) argv[n++] = extra[i];
    argv[n++] = u;
    argv[n] = NULL;
    cmd_t c;
    run_cmd(&c, argv, NULL, CMD_TIMEOUT_S);
    cr_assert_eq(c.status, 0, "curl %s failed (%d): %s", u, c.status, c.err);
    char *nl = strrchr(c.out, '\n');
    cr_assert_not_null(nl);
    int code = atoi(nl + 1);
    *nl = '\0';
    if (body) *body = c.out;
    else free(c.out);
    free(c.err);
    return code;
}

static json_t *get_json(const char *path) {
    char u[128], *body;
    cr_assert_eq(curl(url(u, path), &body, NULL), 200, "GET %s: %s", path, body);
    json_error_t je;
    json_t *j = json_loads(body, 0, &je);
    cr_assert_not_null(j, "GET %s is not JSON: %s\n%s", path, je.text, body);
    free(body);
    return j;
}

/* ---- a plain socket client ---- */

static int tcp_connect(void) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    const int port = srv != NULL ? httpd_port(srv) : live_port;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct timeval tv = {IO_TIMEOUT_MS / 1000, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int send_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

typedef struct {
    int code;
    char head[4096];
    char *body;
    size_t body_len;
} resp_t;

/* Reads one response from fd (into r; r->body malloc'd). head_only: a HEAD reply, no body.
 * Leftover bytes of a following pipelined response stay in *carry (a buffer the caller keeps).
 * Returns 0, or -1 on EOF, timeout or garbage. Safe in any thread: it never asserts. */
static int read_response(int fd, resp_t *r, int head_only, char *carry, size_t *carry_len) {
    memset(r, 0, sizeof *r);
    size_t cap = 1 << 16, len = *carry_len;
    char *buf = malloc(cap);
    if (buf == NULL) return -1;
    memcpy(buf, carry, len);
    *carry_len = 0;
    char *end = NULL;
    long clen = -1;
    for (;;) {
        if (end == NULL) {
            buf[len] = '\0';
            end = len > 0 ? strstr(buf, "\r\n\r\n") : NULL;
            if (end != NULL) {
                size_t hl = (size_t)(end - buf) + 4;
                if (hl >= sizeof r->head || sscanf(buf, "HTTP/1.1 %d", &r->code) != 1) goto fail;
                memcpy(r->head, buf, hl);
                r->head[hl] = '\0';
                const char *cl = strcasestr(r->head, "\r\nContent-Length:");
                clen = head_only ? 0 : cl ? strtol(cl + 17, NULL, 10) : -1;
                if (clen < 0) goto fail;
                end = buf + hl;
            }
        }
        if (end != NULL && (size_t)(buf + len - end) >= (size_t)clen) break;
        if (len + 65536 + 1 > cap) {
            const ptrdiff_t at = end ? end - buf : -1;
            char *b = realloc(buf, cap * 2);
            if (b == NULL) goto fail;
            buf = b;
            if (at >= 0) end = buf + at;
            cap *= 2;
        }
        ssize_t k = recv(fd, buf + len, cap - len - 1, 0);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) goto fail;
        len += (size_t)k;
    }
    r->body = malloc((size_t)clen + 1);
    if (r->body == NULL) goto fail;
    memcpy(r->body, end, (size_t)clen);
    r->body[clen] = '\0';
    r->body_len = (size_t)clen;
    size_t rest = (size_t)(buf + len - end) - (size_t)clen;
    if (rest > 0 && rest <= 65536) memcpy(carry, end + clen, rest), *carry_len = rest;
    free(buf);
    return 0;
fail:
    free(buf);
    return -1;
}

/* Sends raw bytes on a new connection and reads one response; asserts it arrived. */
static void raw_request(const char *req, size_t n, resp_t *r) {
    int fd = tcp_connect();
    cr_assert_geq(fd, 0, "connect: %s", strerror(errno));
    cr_assert_eq(send_all(fd, req, n), 0);
    char carry[65536];
    size_t cl = 0;
    cr_assert_eq(read_response(fd, r, 0, carry, &cl), 0, "no response to %.60s", req);
    close(fd);
}

/* Waits up to ms for fd to be closed by the peer (EOF or reset); returns 1 if it was. */
static int closed_within(int fd, int ms) {
    const double deadline = util_now_s() + ms / 1000.0;
    char b[4096];
    while (util_now_s() < deadline) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 50) <= 0) continue;
        ssize_t k = recv(fd, b, sizeof b, 0);
        if (k == 0 || (k < 0 && errno != EINTR && errno != EAGAIN)) return 1;
    }
    return 0;
}

/* The value of the sample line that starts with `series ` in Prometheus text; NAN if none. */
static double metric(const char *text, const char *series) {
    size_t n = strlen(series);
    for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
        if (strncmp(l, series, n) == 0 && l[n] == ' ') return strtod(l + n + 1, NULL);
    return NAN;
}

/* ================================ renderings ================================ */

Test(status, json_of_a_run_not_started_has_nulls_for_unknown_values) {
    status_snapshot_init(&snap);
    char *text;
    size_t len;
    cr_assert_eq(status_json(&snap, 0.5, 1700000100.0, &text, &len), 0);
    cr_assert_eq(strlen(text), len);
    json_error_t je;
    json_t *j = json_loads(text, 0, &je);
    cr_assert_not_null(j, "%s", je.text);
    cr_assert_str_eq(json_string_value(json_object_get(j, "state")), "waiting");
    cr_assert_eq(json_integer_value(json_object_get(j, "schema")), STATUS_SCHEMA);
    const char *nulls[] = {"test_accuracy", "loss_low", "loss_aux", "samples_per_s", "checkpoint", "staleness_bound"};
    for (size_t i = 0; i < sizeof nulls / sizeof nulls[0]; i++)
        cr_assert(json_is_null(json_object_get(j, nulls[i])), "%s should be null", nulls[i]);
    cr_assert_eq(json_array_size(json_object_get(j, "workers")), 0);
    cr_assert_eq(json_array_size(json_object_get(j, "shards")), 0);
    cr_assert_float_eq(util_jnum(j, "snapshot_age_s"), 0.5, 1e-9);
    cr_assert_float_eq(util_jnum(j, "uptime_s"), 0.5, 1e-9);
    json_decref(j);
    free(text);
}

Test(status, json_carries_every_field_of_the_schema) {
    fill_snapshot(&snap, 600);
    snap.has_checkpoint = 1;
    snap.checkpoint_step = 500;
    snap.checkpoint_time = 1700000123.456;
    char *text;
    cr_assert_eq(status_json(&snap, 2.0, 1700000200.0, &text, NULL), 0);
    json_t *j = json_loads(text, 0, NULL);
    cr_assert_not_null(j, "%s", text);
    json_t *m = json_object_get(j, "model");
    cr_assert_str_eq(json_string_value(json_object_get(m, "arch")), "resnet8");
    cr_assert_eq(util_jnum(m, "weight_bits"), 2);
    cr_assert_eq(util_jnum(m, "act_bits"), 2);
    cr_assert(json_is_true(json_object_get(m, "aux")));
    cr_assert_eq(util_jnum(m, "params"), 87044);
    cr_assert_str_eq(json_string_value(json_object_get(j, "state")), "training");
    cr_assert_str_eq(json_string_value(json_object_get(j, "consistency")), "ssp");
    cr_assert_str_eq(json_string_value(json_object_get(j, "pull")), "kbit");
    cr_assert_str_eq(json_string_value(json_object_get(j, "push")), "q8");
    cr_assert(json_is_true(json_object_get(j, "prefetch")));
    cr_assert_eq(util_jnum(j, "staleness_bound"), 2);
    cr_assert_eq(util_jnum(j, "epoch"), 2);
    cr_assert_eq(util_jnum(j, "epochs"), 10);
    cr_assert_eq(util_jnum(j, "step"), 600);
    cr_assert_eq(util_jnum(j, "total_steps"), 4690);
    cr_assert_float_eq(util_jnum(j, "samples_per_s"), 400.0 + 600 % 7, 1e-9);
    cr_assert_float_eq(util_jnum(j, "loss_low"), 2.0 / 7.0, 1e-6);
    cr_assert_float_eq(util_jnum(j, "loss_aux"), 1.8 / 7.0, 1e-6);
    cr_assert_float_eq(util_jnum(j, "test_accuracy"), 0.75, 1e-9);
    cr_assert_eq(util_jnum(j, "chunks_total"), 47);
    cr_assert_eq(util_jnum(j, "chunks_done"), (600 % 469) / 10);
    cr_assert_eq(util_jnum(j, "chunks_leased"), 2);
    cr_assert_eq(util_jnum(j, "chunks_released"), 1);
    cr_assert_float_eq(util_jnum(j, "uptime_s"), 200.0 + 2.0, 1e-3);
    cr_assert_float_eq(util_jnum(j, "started"), 1700000000.0, 1e-3);
    cr_assert_float_eq(util_jnum(j, "time"), 1700000200.0, 1e-3);
    json_t *ck = json_object_get(j, "checkpoint");
    cr_assert_eq(util_jnum(ck, "step"), 500);
    cr_assert_float_eq(util_jnum(ck, "time"), 1700000123.456, 1e-3);
    json_t *ws = json_object_get(j, "workers"), *ss = json_object_get(j, "shards");
    cr_assert_eq(json_array_size(ws), 2);
    cr_assert_eq(json_array_size(ss), 2);
    json_t *w1 = json_array_get(ws, 1), *s1 = json_array_get(ss, 1);
    cr_assert_eq(util_jnum(w1, "id"), 1);
    cr_assert_str_eq(json_string_value(json_object_get(w1, "host")), "node1:1001");
    cr_assert_str_eq(json_string_value(json_object_get(w1, "state")), "alive");
    cr_assert_eq(util_jnum(w1, "samples"), 600 * 64);
    cr_assert_float_eq(util_jnum(w1, "samples_per_s"), 201.0, 1e-9);
    cr_assert_float_eq(util_jnum(w1, "heartbeat_age_s"), 2.25, 1e-3); /* aged by the snapshot's age */
    cr_assert_eq(util_jnum(w1, "staleness"), 1);
    cr_assert_eq(util_jnum(s1, "id"), 1);
    cr_assert_str_eq(json_string_value(json_object_get(s1, "host")), "ps1:2001");
    cr_assert_eq(util_jnum(s1, "offset"), 43522);
    cr_assert_eq(util_jnum(s1, "length"), 43522);
    cr_assert_eq(util_jnum(s1, "updates"), 600);
    cr_assert_eq(util_jnum(s1, "version"), 600);
    cr_assert_eq(util_jnum(s1, "bytes_in"), 600.0 * 174088);
    cr_assert_eq(util_jnum(s1, "bytes_out"), 600.0 * 174088);
    json_decref(j);
    free(text);
}

Test(status, hostile_names_are_cleaned_in_json_and_escaped_in_metrics) {
    fill_snapshot(&snap, 10);
    memset(snap.workers[0].host, 'x', sizeof snap.workers[0].host); /* no terminating NUL */
    snprintf(snap.workers[1].host, sizeof snap.workers[1].host, "a\"b\\c\nd\xff");
    char *text;
    cr_assert_eq(status_json(&snap, 0, 0, &text, NULL), 0);
    json_t *j = json_loads(text, 0, NULL);
    cr_assert_not_null(j, "invalid JSON:\n%s", text);
    json_t *ws = json_object_get(j, "workers");
    cr_assert_eq(strlen(json_string_value(json_object_get(json_array_get(ws, 0), "host"))), STATUS_NAME_MAX);
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(ws, 1), "host")), "a\"b\\c?d?");
    json_decref(j);
    free(text);
    cr_assert_eq(status_metrics(&snap, 0, &text, NULL), 0);
    cr_assert_not_null(strstr(text, "auxps_worker_info{worker=\"1\",host=\"a\\\"b\\\\c?d?\",state=\"alive\"} 1\n"), "%s",
                       text);
    free(text);
}

Test(status, renderings_refuse_out_of_range_counts) {
    fill_snapshot(&snap, 1);
    char *text = (char *)1;
    snap.num_workers = STATUS_MAX_WORKERS + 1;
    cr_assert_eq(status_json(&snap, 0, 0, &text, NULL), AUXPS_ERANGE);
    cr_assert_null(text);
    snap.num_workers = 2;
    snap.num_shards = -1;
    cr_assert_eq(status_metrics(&snap, 0, &text, NULL), AUXPS_ERANGE);
    snap.num_shards = 2;
    snap.state = 9;
    auxps_error_t err = {0};
    cr_assert_eq(status_snapshot_check(&snap, &err), AUXPS_ERANGE);
    cr_assert_not_null(strstr(err.msg, "state"));
}

Test(status, history_thins_to_every_other_point_and_always_ends_with_the_newest) {
    status_history_t *h = status_history_new(8);
    cr_assert_not_null(h);
    for (uint64_t k = 0; k < 1000; k++) {
        status_point_t p = point_at(k);
        cr_assert_eq(status_history_add(h, &p), 0);
        const int n = status_history_count(h), stride = status_history_stride(h);
        cr_assert_leq(n, 8);
        cr_assert_eq(status_history_at(h, 0)->step, 0, "the first point is always the run's start");
        cr_assert_eq(status_history_at(h, n - 1)->step, k, "the newest point is always last");
        /* Every point but the last sits on the stride, evenly spaced from the start. */
        for (int i = 0; i < n - 1; i++) cr_assert_eq(status_history_at(h, i)->step, (uint64_t)i * stride);
    }
    cr_assert_eq(status_history_added(h), 1000);
    cr_assert_geq(status_history_stride(h), 128); /* 1000 adds in at most 8 points */
    cr_assert_geq(status_history_count(h), 4);
    cr_assert_null(status_history_at(h, 8));
    cr_assert_null(status_history_at(h, -1));
    status_history_destroy(&h);
    status_history_destroy(&h);
    cr_assert_null(h);
    cr_assert_null(status_history_new(3));
}

Test(status, history_json_rows_follow_the_fields) {
    status_history_t *h = status_history_new(STATUS_HISTORY_CAP);
    for (uint64_t k = 0; k < 500; k += 100) {
        status_point_t p = point_at(k);
        status_history_add(h, &p);
    }
    char *text;
    cr_assert_eq(status_history_json(h, &text, NULL), 0);
    json_t *j = json_loads(text, 0, NULL);
    cr_assert_not_null(j, "%s", text);
    json_t *fs = json_object_get(j, "fields"), *ps = json_object_get(j, "points");
    cr_assert_eq(json_array_size(fs), 7);
    const char *names[] = {"time", "step", "epoch", "loss_low", "loss_aux", "samples_per_s", "test_accuracy"};
    for (int i = 0; i < 7; i++) cr_assert_str_eq(json_string_value(json_array_get(fs, (size_t)i)), names[i]);
    cr_assert_eq(json_array_size(ps), 5);
    json_t *r4 = json_array_get(ps, 4), *r0 = json_array_get(ps, 0);
    cr_assert_float_eq(json_number_value(json_array_get(r4, 0)), 1700000400.0, 1e-3);
    cr_assert_eq(json_integer_value(json_array_get(r4, 1)), 400);
    cr_assert_float_eq(json_number_value(json_array_get(r4, 3)), 0.4, 1e-6);
    cr_assert(json_is_null(json_array_get(r4, 6)), "no evaluation before step 469");
    cr_assert_float_eq(json_number_value(json_array_get(r0, 3)), 2.0, 1e-9);
    cr_assert_eq(util_jnum(j, "capacity"), STATUS_HISTORY_CAP);
    cr_assert_eq(util_jnum(j, "added"), 5);
    cr_assert_eq(util_jnum(j, "stride"), 1);
    json_decref(j);
    free(text);
    status_history_destroy(&h);
}

/* ================================ the server ================================ */

Test(status, start_refuses_a_busy_port_a_bad_address_and_bad_options) {
    start_server();
    auxps_error_t err = {0};
    httpd_t *h2 = httpd_start("127.0.0.1", httpd_port(srv), &err);
    cr_assert_null(h2);
    cr_assert_eq(err.code, AUXPS_EIO);
    cr_assert_not_null(strstr(err.msg, "cannot listen"), "%s", err.msg);
    cr_assert_null(httpd_start("not-an-address", 0, &err));
    cr_assert_eq(err.code, AUXPS_EINVAL);
    httpd_options_t o;
    httpd_options_default(&o);
    o.port = 0;
    o.timeout_ms = 5;
    cr_assert_null(httpd_start_with(&o, &err));
    cr_assert_eq(err.code, AUXPS_EINVAL);
    httpd_destroy(&srv);
    httpd_destroy(&srv);
    cr_assert_null(srv);
}

Test(status, every_endpoint_answers_curl_and_numbers_move_after_a_publish) {
    start_server();
    cr_assert_null(httpd_warning(srv), "%s", httpd_warning(srv));
    /* Before the first publish: a run that has not started. */
    json_t *j = get_json("/status");
    cr_assert_str_eq(json_string_value(json_object_get(j, "state")), "waiting");
    json_decref(j);

    publish_step(100);
    for (uint64_t k = 0; k <= 100; k += 10) {
        status_point_t p = point_at(k);
        cr_assert_eq(httpd_history_add(srv, &p), 0);
    }
    j = get_json("/status");
    cr_assert_str_eq(json_string_value(json_object_get(j, "state")), "training");
    cr_assert_eq(util_jnum(j, "step"), 100);
    cr_assert_eq(json_array_size(json_object_get(j, "workers")), 2);
    const double uptime1 = util_jnum(j, "uptime_s");
    json_decref(j);
    j = get_json("/history");
    cr_assert_eq(json_array_size(json_object_get(j, "points")), 11);
    json_decref(j);

    publish_step(900);
    status_point_t p = point_at(900);
    httpd_history_add(srv, &p);
    j = get_json("/status");
    cr_assert_eq(util_jnum(j, "step"), 900);
    cr_assert_eq(util_jnum(j, "epoch"), 2);
    cr_assert_float_eq(util_jnum(j, "test_accuracy"), 0.75, 1e-9);
    cr_assert_gt(util_jnum(j, "uptime_s"), uptime1);
    cr_assert_eq(util_jnum(json_array_get(json_object_get(j, "shards"), 0), "updates"), 900);
    json_decref(j);
    j = get_json("/history");
    json_t *ps = json_object_get(j, "points");
    cr_assert_eq(json_array_size(ps), 12);
    cr_assert_eq(json_integer_value(json_array_get(json_array_get(ps, 11), 1)), 900);
    json_decref(j);

    /* A publisher that stops: the server still answers, and the ages grow. */
    usleep(1100 * 1000);
    j = get_json("/status");
    cr_assert_geq(util_jnum(j, "snapshot_age_s"), 1.0);
    cr_assert_geq(util_jnum(json_array_get(json_object_get(j, "workers"), 0), "heartbeat_age_s"), 1.25);
    json_decref(j);

    char u[128], *body;
    cr_assert_eq(curl(url(u, "/metrics"), &body, NULL), 200);
    cr_assert_eq(metric(body, "auxps_steps_total"), 900);
    cr_assert_eq(metric(body, "auxps_shard_updates_total{shard=\"1\"}"), 900);
    cr_assert_eq(metric(body, "auxps_state{state=\"training\"}"), 1);
    cr_assert_geq(metric(body, "auxps_http_responses_total{code=\"200\"}"), 6);
    free(body);
    cr_assert_eq(curl(url(u, "/healthz"), &body, NULL), 200);
    cr_assert_str_eq(body, "ok\n");
    free(body);
    cr_assert_eq(curl(url(u, "/"), &body, NULL), 200);
    cr_assert_not_null(strstr(body, "<title>AuxPS status</title>"));
    cr_assert_not_null(strstr(body, "/dygraph.min.js"));
    free(body);
    cr_assert_eq(curl(url(u, "/dygraph.min.js"), &body, NULL), 200);
    cr_assert_not_null(strstr(body, "Dygraph"));
    free(body);
    cr_assert_eq(curl(url(u, "/status?pretty=1"), NULL, NULL), 200, "a query string does not change the route");
}

Test(status, healthz_is_503_once_the_run_failed) {
    start_server();
    publish_step(5);
    char u[128], *body;
    cr_assert_eq(curl(url(u, "/healthz"), &body, NULL), 200);
    free(body);
    snap.state = STATUS_FAILED;
    cr_assert_eq(httpd_publish(srv, &snap), 0);
    cr_assert_eq(curl(url(u, "/healthz"), &body, NULL), 503);
    cr_assert_str_eq(body, "failed\n");
    free(body);
    snap.state = STATUS_DONE;
    httpd_publish(srv, &snap);
    cr_assert_eq(curl(url(u, "/healthz"), NULL, NULL), 200);
}

Test(status, publish_refuses_a_bad_snapshot_and_keeps_the_previous_one) {
    start_server();
    publish_step(42);
    snap.num_workers = STATUS_MAX_WORKERS + 1;
    cr_assert_eq(httpd_publish(srv, &snap), AUXPS_ERANGE);
    cr_assert_eq(httpd_publish(srv, NULL), AUXPS_EINVAL);
    cr_assert_eq(httpd_history_add(srv, NULL), AUXPS_EINVAL);
    json_t *j = get_json("/status");
    cr_assert_eq(util_jnum(j, "step"), 42);
    cr_assert_eq(json_array_size(json_object_get(j, "workers")), 2);
    json_decref(j);
}

Test(status, a_full_snapshot_of_1024_workers_and_64_shards_is_served) {
    start_server();
    fill_snapshot(&snap, 7);
    snap.num_workers = STATUS_MAX_WORKERS;
    snap.num_shards = STATUS_MAX_SHARDS;
    for (int i = 0; i < STATUS_MAX_WORKERS; i++) {
        snap.workers[i] = snap.workers[0];
        snap.workers[i].id = (uint32_t)i;
    }
    for (int i = 0; i < STATUS_MAX_SHARDS; i++) {
        snap.shards[i] = snap.shards[0];
        snap.shards[i].id = (uint32_t)i;
    }
    cr_assert_eq(httpd_publish(srv, &snap), 0);
    json_t *j = get_json("/status");
    cr_assert_eq(json_array_size(json_object_get(j, "workers")), STATUS_MAX_WORKERS);
    cr_assert_eq(util_jnum(json_array_get(json_object_get(j, "workers"), 1023), "id"), 1023);
    cr_assert_eq(json_array_size(json_object_get(j, "shards")), STATUS_MAX_SHARDS);
    json_decref(j);
}

Test(status, a_client_that_half_closes_after_its_requests_still_gets_every_response) {
    start_server();
    fill_snapshot(&snap, 7);
    snap.num_workers = STATUS_MAX_WORKERS;
    for (int i = 0; i < STATUS_MAX_WORKERS; i++) {
        snap.workers[i] = snap.workers[0];
        snap.workers[i].id = (uint32_t)i;
    }
    cr_assert_eq(httpd_publish(srv, &snap), 0);
    /* 24 pipelined requests for a ~250 KB document: more than the socket buffers hold, so the
     * server's writes are still in flight when it reads the EOF. */
    enum { N = 24 };
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int small = 4096;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    struct timeval tv = {IO_TIMEOUT_MS / 1000, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)httpd_port(srv)),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    const char *req = "GET /status HTTP/1.1\r\nHost: x\r\n\r\n";
    for (int i = 0; i < N; i++) cr_assert_eq(send_all(fd, req, strlen(req)), 0);
    cr_assert_eq(shutdown(fd, SHUT_WR), 0);
    usleep(300 * 1000); /* let the server see the EOF before anything is read */
    char carry[65536];
    size_t cl = 0;
    for (int i = 0; i < N; i++) {
        resp_t r;
        cr_assert_eq(read_response(fd, &r, 0, carry, &cl), 0, "response %d of %d was lost", i + 1, N);
        cr_assert_eq(r.code, 200);
        json_t *j = json_loadb(r.body, r.body_len, 0, NULL);
        cr_assert_not_null(j);
        cr_assert_eq(json_array_size(json_object_get(j, "workers")), STATUS_MAX_WORKERS);
        json_decref(j);
        free(r.body);
    }
    cr_assert(closed_within(fd, 3000), "the server closes once it has answered a half-closed client");
    close(fd);
}

Test(status, unknown_paths_get_404_other_methods_405_with_allow) {
    start_server();
    char u[128], *body;
    cr_assert_eq(curl(url(u, "/nope"), &body, NULL), 404);
    free(body);
    cr_assert_eq(curl(url(u, "/status/"), NULL, NULL), 404);
    cr_assert_eq(curl(url(u, "/status"), &body, (const char *[]){"-X", "POST", "-d", "x=1", "-i", NULL}), 405);
    cr_assert_not_null(strstr(body, "Allow: GET, HEAD"), "%s", body);
    free(body);
    cr_assert_eq(curl(url(u, "/metrics"), NULL, (const char *[]){"-X", "DELETE", NULL}), 405);
    /* HEAD: the headers of GET, no body. */
    resp_t r;
    int fd = tcp_connect();
    const char *req = "HEAD /status HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    cr_assert_eq(send_all(fd, req, strlen(req)), 0);
    char carry[65536];
    size_t cl = 0;
    cr_assert_eq(read_response(fd, &r, 1, carry, &cl), 0);
    cr_assert_eq(r.code, 200);
    cr_assert_not_null(strstr(r.head, "Content-Type: application/json"));
    free(r.body);
    cr_assert_eq(read_response(fd, &r, 0, carry, &cl), 0, "the next pipelined request is answered");
    cr_assert_eq(r.code, 200);
    cr_assert_str_eq(r.body, "ok\n");
    free(r.body);
    close(fd);
}

Test(status, malformed_requests_get_400_and_the_connection_closes) {
    start_server();
    const char *bad[] = {
        "GARBAGE\r\n\r\n",
        "GET /status HTTP/1.1\r\nBad Header Line\r\n\r\n",
        "GET /status HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",           /* a body on GET */
        "GET /status HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "GET * HTTP/1.1\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int fd = tcp_connect();
        cr_assert_eq(send_all(fd, bad[i], strlen(bad[i])), 0);
        resp_t r;
        char carry[65536];
        size_t cl = 0;
        cr_assert_eq(read_response(fd, &r, 0, carry, &cl), 0, "no answer to %s", bad[i]);
        cr_assert_eq(r.code, 400, "request %zu got %d", i, r.code);
        cr_assert_not_null(strstr(r.head, "Connection: close"));
        cr_assert(closed_within(fd, 3000), "connection left open after a 400");
        free(r.body);
        close(fd);
    }
    resp_t r;
    const char *v9 = "GET /status HTTP/9.9\r\n\r\n";
    raw_request(v9, strlen(v9), &r);
    cr_assert_eq(r.code, 505);
    free(r.body);
}

Test(status, oversized_headers_get_431_and_a_long_url_414) {
    start_server();
    /* 9 KiB of one header, sent in pieces, and 200 small headers. */
    int fd = tcp_connect();
    const char *start = "GET /status HTTP/1.1\r\nHost: x\r\nX-Big: ";
    cr_assert_eq(send_all(fd, start, strlen(start)), 0);
    char chunk[1024];
    memset(chunk, 'a', sizeof chunk);
    for (int i = 0; i < 9; i++)
        if (send_all(fd, chunk, sizeof chunk) != 0) break; /* the server may have answered already */
    resp_t r;
    char carry[65536];
    size_t cl = 0;
    cr_assert_eq(read_response(fd, &r, 0, carry, &cl), 0);
    cr_assert_eq(r.code, 431);
    cr_assert(closed_within(fd, 3000), "connection left open after a 431");
    free(r.body);
    close(fd);

    char many[8192];
    size_t n = (size_t)snprintf(many, sizeof many, "GET /status HTTP/1.1\r\n");
    for (int i = 0; i < 200; i++) n += (size_t)snprintf(many + n, sizeof many - n, "X-%d: 1\r\n", i);
    n += (size_t)snprintf(many + n, sizeof many - n, "\r\n");
    raw_request(many, n, &r);
    cr_assert_eq(r.code, 431);
    free(r.body);

    char u[4096];
    int k = snprintf(u, sizeof u, "GET /");
    memset(u + k, 'p', 3000);
    k += 3000;
    k += snprintf(u + k, sizeof u - (size_t)k, " HTTP/1.1\r\n\r\n");
    raw_request(u, (size_t)k, &r);
    cr_assert_eq(r.code, 414);
    free(r.body);

    /* Just under the limit is fine. */
    char ok[8192], value[7001];
    memset(value, 'b', 7000);
    value[7000] = '\0';
    n = (size_t)snprintf(ok, sizeof ok, "GET /healthz HTTP/1.1\r\nX-Big: %s\r\n\r\n", value);
    raw_request(ok, n, &r);
    cr_assert_eq(r.code, 200);
    free(r.body);

    char mu[128], *body;
    cr_assert_eq(curl(url(mu, "/metrics"), &body, NULL), 200);
    cr_assert_eq(metric(body, "auxps_http_responses_total{code=\"431\"}"), 2);
    cr_assert_eq(metric(body, "auxps_http_responses_total{code=\"414\"}"), 1);
    free(body);
}

Test(status, a_slow_client_does_not_block_others_and_is_timed_out) {
    httpd_options_t o;
    httpd_options_default(&o);
    o.timeout_ms = 1500;
    start_with(&o);
    publish_step(3);
    int slow = tcp_connect(), idle = tcp_connect();
    const double t0 = util_now_s();
    cr_assert_eq(send_all(slow, "GET /sta", 8), 0); /* half a request, then nothing */
    /* Others are served at once while it waits. */
    const char *req = "GET /status HTTP/1.1\r\n\r\n";
    for (int i = 0; i < 10; i++) {
        resp_t ok;
        raw_request(req, strlen(req), &ok);
        cr_assert_eq(ok.code, 200);
        free(ok.body);
    }
    cr_assert_lt(util_now_s() - t0, 1.0, "10 requests took %.2f s beside a slow client", util_now_s() - t0);
    /* A slowloris trickle does not extend the deadline. */
    for (int i = 0; i < 5 && util_now_s() - t0 < 1.2; i++) {
        send_all(slow, "t", 1);
        usleep(100 * 1000);
    }
    resp_t r;
    char carry[65536];
    size_t cl = 0;
    cr_assert_eq(read_response(slow, &r, 0, carry, &cl), 0, "the slow client got no 408");
    const double waited = util_now_s() - t0;
    cr_assert_eq(r.code, 408);
    cr_assert_geq(waited, 1.4);
    cr_assert_lt(waited, 8.0);
    free(r.body);
    cr_assert(closed_within(slow, 3000));
    cr_assert(closed_within(idle, 3000), "an idle connection is closed at the deadline too");
    close(slow);
    close(idle);
    usleep(200 * 1000); /* the server sees the closes */
    char u[128], *body;
    cr_assert_eq(curl(url(u, "/metrics"), &body, NULL), 200);
    cr_assert_eq(metric(body, "auxps_http_connections_total{outcome=\"timed_out\"}"), 2);
    cr_assert_eq(metric(body, "auxps_http_responses_total{code=\"408\"}"), 1);
    cr_assert_eq(metric(body, "auxps_http_connections"), 1, "only this request's connection is open");
    free(body);
}

Test(status, connections_over_the_cap_get_503_and_service_resumes) {
    httpd_options_t o;
    httpd_options_default(&o);
    o.max_connections = 4;
    start_with(&o);
    int held[4];
    for (int i = 0; i < 4; i++) cr_assert_geq(held[i] = tcp_connect(), 0);
    usleep(200 * 1000); /* let the server accept them */
    resp_t r;
    const char *req = "GET /healthz HTTP/1.1\r\n\r\n";
    raw_request(req, strlen(req), &r);
    cr_assert_eq(r.code, 503);
    cr_assert_not_null(strstr(r.head, "Retry-After: 1"));
    free(r.body);
    for (int i = 0; i < 4; i++) close(held[i]);
    const double deadline = util_now_s() + 5;
    int code = 0;
    while (code != 200 && util_now_s() < deadline) {
        usleep(50 * 1000);
        raw_request(req, strlen(req), &r);
        code = r.code;
        free(r.body);
    }
    cr_assert_eq(code, 200);
}

/* ---- load: 50 clients, 1,000 requests, while the coordinator publishes ---- */

enum { CLIENTS = 50, PER_CLIENT = 20 };

typedef struct {
    int ok, failed, keepalive;
    char why[128];
} client_t;

typedef struct {
    volatile int stop;
    int published;
    double max_publish_s;
} publisher_t;

static void *client_thread(void *arg) {
    client_t *c = arg;
    static const char *const paths[] = {"/status", "/history", "/metrics", "/healthz"};
    int fd = -1;
    char carry[65536];
    size_t cl = 0;
    for (int i = 0; i < PER_CLIENT; i++) {
        /* Even clients keep one connection; odd ones open one per request. */
        if (fd < 0) {
            fd = tcp_connect();
            cl = 0;
        }
        char req[256];
        const char *path = paths[(i + c->keepalive) % 4];
        int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: t\r\n%s\r\n", path,
                         c->keepalive ? "" : "Connection: close\r\n");
        resp_t r;
        if (fd < 0 || send_all(fd, req, (size_t)n) != 0 || read_response(fd, &r, 0, carry, &cl) != 0) {
            c->failed++;
            snprintf(c->why, sizeof c->why, "%s: no response (%s)", path, strerror(errno));
            if (fd >= 0) close(fd);
            fd = -1;
            continue;
        }
        int good = r.code == 200 && r.body_len > 0;
        if (good && path[1] == 's') {
            json_t *j = json_loadb(r.body, r.body_len, 0, NULL);
            good = j != NULL && json_is_integer(json_object_get(j, "step"));
            json_decref(j);
        }
        if (good) c->ok++;
        else {
            c->failed++;
            snprintf(c->why, sizeof c->why, "%s: HTTP %d", path, r.code);
        }
        free(r.body);
        if (!c->keepalive) {
            close(fd);
            fd = -1;
        }
    }
    if (fd >= 0) close(fd);
    return NULL;
}

static void *publisher_thread(void *arg) {
    publisher_t *p = arg;
    status_snapshot_t *s = malloc(sizeof *s);
    if (s == NULL) return NULL;
    for (uint64_t k = 0; !p->stop; k++) {
        fill_snapshot(s, k);
        status_point_t pt = point_at(k);
        double t0 = util_now_s();
        httpd_publish(srv, s);
        httpd_history_add(srv, &pt);
        double dt = util_now_s() - t0;
        if (dt > p->max_publish_s) p->max_publish_s = dt;
        p->published++;
        usleep(2000);
    }
    free(s);
    return NULL;
}

Test(status, a_thousand_requests_from_fifty_concurrent_clients_are_all_answered) {
    start_server();
    publish_step(1);
    publisher_t pub = {0};
    pthread_t pt, th[CLIENTS];
    client_t cs[CLIENTS];
    memset(cs, 0, sizeof cs);
    cr_assert_eq(pthread_create(&pt, NULL, publisher_thread, &pub), 0);
    const double t0 = util_now_s();
    for (int i = 0; i < CLIENTS; i++) {
        cs[i].keepalive = i % 2 == 0;
        cr_assert_eq(pthread_create(&th[i], NULL, client_thread, &cs[i]), 0);
    }
    int ok = 0, failed = 0;
    const char *why = "";
    for (int i = 0; i < CLIENTS; i++) {
        pthread_join(th[i], NULL);
        ok += cs[i].ok;
        failed += cs[i].failed;
        if (cs[i].failed) why = cs[i].why;
    }
    const double elapsed = util_now_s() - t0;
    pub.stop = 1;
    pthread_join(pt, NULL);
    cr_log_info("1000 requests in %.2f s; %d publishes, the slowest %.2f ms", elapsed, pub.published,
                pub.max_publish_s * 1e3);
    cr_assert_eq(failed, 0, "%d of %d requests failed, e.g. %s", failed, CLIENTS * PER_CLIENT, why);
    cr_assert_eq(ok, CLIENTS * PER_CLIENT);
    cr_assert_gt(pub.published, 0);
    cr_assert_lt(pub.max_publish_s, 0.25, "a publish waited %.3f s for the server", pub.max_publish_s);
    char u[128], *body;
    cr_assert_eq(curl(url(u, "/metrics"), &body, NULL), 200);
    cr_assert_geq(metric(body, "auxps_http_responses_total{code=\"200\"}"), CLIENTS * PER_CLIENT);
    cr_assert_eq(metric(body, "auxps_http_connections_total{outcome=\"rejected\"}"), 0);
    free(body);
}

/* ================================ external tools ================================ */

Test(status, promtool_accepts_the_metrics) {
    if (!have_program("promtool")) cr_skip_test("promtool is not installed (Debian package prometheus)");
    start_server();
    publish_step(700);
    snap.has_checkpoint = 1;
    snap.checkpoint_step = 650;
    snap.checkpoint_time = 1700000500;
    snprintf(snap.workers[1].host, sizeof snap.workers[1].host, "we\"ird\\host");
    httpd_publish(srv, &snap);
    char u[128], *body, path[128];
    cr_assert_eq(curl(url(u, "/metrics"), &body, NULL), 200);
    snprintf(path, sizeof path, "%s/metrics.txt", tmp_dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(body, f);
    fclose(f);
    free(body);
    cmd_t c;
    run_cmd(&c, (const char *const[]){"promtool", "check", "metrics", NULL}, path, CMD_TIMEOUT_S);
    cr_assert_eq(c.status, 0, "promtool check metrics failed:\n%s%s", c.out, c.err);
    cmd_free(&c);

    /* Before the first publish too (unknown values, no workers). */
    httpd_destroy(&srv);
    start_server();
    cr_assert_eq(curl(url(u, "/metrics"), &body, NULL), 200);
    f = fopen(path, "w");
    fputs(body, f);
    fclose(f);
    free(body);
    run_cmd(&c, (const char *const[]){"promtool", "check", "metrics", NULL}, path, CMD_TIMEOUT_S);
    cr_assert_eq(c.status, 0, "promtool check metrics failed:\n%s%s", c.out, c.err);
    cmd_free(&c);
}

/* The number in attribute attr="N" of the element with id="id" in serialized DOM; -1 if none. */
static long dom_attr(const char *dom, const char *id, const char *attr) {
    char needle[64];
    snprintf(needle, sizeof needle, "id=\"%s\"", id);
    const char *e = strstr(dom, needle);
    if (e == NULL) return -1;
    const char *open = e;
    while (open > dom && *open != '<') open--;
    const char *close = strchr(e, '>');
    char a[64];
    snprintf(a, sizeof a, "%s=\"", attr);
    const char *v = strstr(open, a);
    return v != NULL && v < close ? strtol(v + strlen(a), NULL, 10) : -1;
}

/* Canvases between the element with id and the next chart (or the workers table). */
static int canvases_in(const char *dom, const char *id, const char *next_id) {
    char a[64], b[64];
    snprintf(a, sizeof a, "id=\"%s\"", id);
    snprintf(b, sizeof b, "id=\"%s\"", next_id);
    const char *s = strstr(dom, a), *e = strstr(dom, b);
    int n = 0;
    for (const char *p = s; p && e && (p = strstr(p, "<canvas")) && p < e; p++) n++;
    return n;
}

Test(status, the_dashboard_draws_charts_and_the_workers_table_in_headless_chromium, .timeout = 400) {
    if (!have_program("chromium")) cr_skip_test("chromium is not installed (Debian package chromium)");
    start_server();
    publish_step(1000);
    for (uint64_t k = 0; k <= 1000; k += 25) {
        status_point_t p = point_at(k);
        httpd_history_add(srv, &p);
    }
    char u[128], profile[128], shot[512], bin[512];
    snprintf(profile, sizeof profile, "%s/chromium", tmp_dir);
    snprintf(bin, sizeof bin, "%s", util_auxps_bin());
    snprintf(shot, sizeof shot, "--screenshot=%s/status-dashboard.png", dirname(bin));
    char user_dir[160];
    snprintf(user_dir, sizeof user_dir, "--user-data-dir=%s", profile);
    const char *common[] = {"chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                            "--no-first-run", "--hide-scrollbars", user_dir, "--virtual-time-budget=5000"};
    const char *argv[16];
    int n = 0;
    for (size_t i = 0; i < sizeof common / sizeof common[0]; i++) argv[n++] = common[i];
    argv[n++] = "--dump-dom";
    argv[n++] = url(u, "/");
    argv[n] = NULL;
    cmd_t c;
    run_cmd(&c, argv, NULL, CHROME_TIMEOUT_S);
    cr_assert_eq(c.status, 0, "chromium failed:\n%s", c.err);
    const char *dom = c.out;
    cr_assert_not_null(strstr(dom, "id=\"chart-loss\""), "no dashboard in the DOM:\n%.2000s", dom);
    /* Every chart drawn with all 41 points, with Dygraphs' canvases inside it. */
    cr_assert_eq(dom_attr(dom, "chart-loss", "data-points"), 41, "loss chart not drawn:\n%.3000s", dom);
    cr_assert_eq(dom_attr(dom, "chart-speed", "data-points"), 41);
    cr_assert_eq(dom_attr(dom, "chart-acc", "data-points"), 22, "accuracy is drawn from the first evaluation");
    cr_assert_geq(canvases_in(dom, "chart-loss", "chart-acc"), 1);
    cr_assert_geq(canvases_in(dom, "chart-acc", "chart-speed"), 1);
    cr_assert_geq(canvases_in(dom, "chart-speed", "workers"), 1);
    /* The workers and shards tables, one row each, with their numbers. */
    cr_assert_not_null(strstr(dom, "<tr data-worker=\"0\">"), "no workers rows:\n%s", strstr(dom, "id=\"workers\""));
    cr_assert_not_null(strstr(dom, "<tr data-worker=\"1\">"));
    cr_assert_not_null(strstr(dom, "node1:1001"));
    cr_assert_not_null(strstr(dom, "<tr data-shard=\"1\">"));
    cr_assert_not_null(strstr(dom, "1000 / 4690"), "the step card");
    cr_assert_not_null(strstr(dom, "75.00%"), "the accuracy card");
    cr_assert_null(strstr(dom, "class=\"plot warn\""), "the page says the chart library is missing");
    cmd_free(&c);

    /* The screenshot, kept beside the binary under test as the test's artifact. */
    n -= 2;
    argv[n++] = "--window-size=1280,1000";
    argv[n++] = shot;
    argv[n++] = url(u, "/");
    argv[n] = NULL;
    run_cmd(&c, argv, NULL, CHROME_TIMEOUT_S);
    cr_assert_eq(c.status, 0, "chromium --screenshot failed:\n%s", c.err);
    struct stat st;
    cr_assert_eq(stat(shot + strlen("--screenshot="), &st), 0, "no screenshot at %s", shot + 13);
    cr_assert_gt(st.st_size, 10000, "the screenshot is too small to show anything");
    cr_log_info("dashboard screenshot: %s", shot + 13);
    cmd_free(&c);
}

Test(status, without_the_chart_library_the_server_says_what_to_install) {
    httpd_options_t o;
    httpd_options_default(&o);
    o.dygraphs_dir = "/nonexistent/dygraphs";
    start_with(&o);
    const char *w = httpd_warning(srv);
    cr_assert_not_null(w);
    cr_assert_not_null(strstr(w, "/nonexistent/dygraphs/dygraph.min.js"), "%s", w);
    cr_assert_not_null(strstr(w, "libjs-dygraphs"), "%s", w);
    char u[128], *body;
    cr_assert_eq(curl(url(u, "/dygraph.min.js"), &body, NULL), 404);
    cr_assert_not_null(strstr(body, "libjs-dygraphs"), "%s", body);
    free(body);
    cr_assert_eq(curl(url(u, "/"), NULL, NULL), 200, "the dashboard is still served");
    cr_assert_eq(curl(url(u, "/status"), NULL, NULL), 200);
}

/* ================================ auxps status ================================ */

Test(status, auxps_status_prints_an_info_view_with_an_epoch_progress_bar) {
    start_server();
    publish_step(700); /* epoch 2, 23 of 47 chunks done */
    char u[128];
    util_proc_t p;
    util_proc_run(&p, (const char *const[]){"status", url(u, ""), NULL}, CMD_TIMEOUT_S);
    util_expect_exit(&p, 0);
    const char *out = p.out.buf;
    const char *want[] = {"# Run\n", "state:training\n", "model:resnet8 W2A2, auxiliary module on, 87044 params\n",
                          "consistency:ssp\n", "staleness_bound:2\n", "pull:kbit\npush:q8\nprefetch:on\n", "epoch:2/10\n",
                          "epoch_progress:[####################....................]  48.9% (23/47 chunks done, 2 leased)\n",
                          "step:700/4690\n", "loss_low:0.2500\n", "test_accuracy:0.7500 (75.00%)\n",
                          "checkpoint:none\n", "# Workers\nworkers:2\n",
                          "worker1:host=node1:1001,state=alive,samples=44800,samples_per_s=201.0,",
                          "shard1:host=ps1:2001,offset=43522,length=43522,updates=700,version=700,"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        cr_assert_not_null(strstr(out, want[i]), "missing '%s' in:\n%s", want[i], out);
    util_proc_free(&p);

    /* host:port alone, and an explicit path, reach the same document. */
    char hp[64];
    snprintf(hp, sizeof hp, "127.0.0.1:%d", httpd_port(srv));
    util_proc_run(&p, (const char *const[]){"status", hp, NULL}, CMD_TIMEOUT_S);
    util_expect_exit(&p, 0);
    cr_assert_not_null(strstr(p.out.buf, "step:700/4690\n"));
    util_proc_free(&p);
}

Test(status, auxps_status_json_prints_the_status_document) {
    start_server();
    publish_step(300);
    char u[128];
    util_proc_t p;
    util_proc_run(&p, (const char *const[]){"status", url(u, "/status"), "--json", NULL}, CMD_TIMEOUT_S);
    util_expect_exit(&p, 0);
    json_error_t je;
    json_t *j = json_loads(p.out.buf, 0, &je);
    cr_assert_not_null(j, "not JSON: %s\n%s", je.text, p.out.buf);
    cr_assert_eq(util_jnum(j, "step"), 300);
    cr_assert_str_eq(json_string_value(json_object_get(j, "state")), "training");
    cr_assert(json_is_null(json_object_get(j, "test_accuracy")));
    json_decref(j);
    util_proc_free(&p);
}

Test(status, auxps_status_reports_unreachable_servers_and_usage_errors) {
    start_server();
    char u[128];
    int port = httpd_port(srv);
    httpd_destroy(&srv); /* nothing listens there now */
    snprintf(u, sizeof u, "http://127.0.0.1:%d", port);
    util_proc_t p;
    util_proc_run(&p, (const char *const[]){"status", u, NULL}, CMD_TIMEOUT_S);
    util_expect_exit(&p, 1);
    cr_assert_not_null(strstr(p.err.buf, "cannot connect"), "%s", p.err.buf);
    util_proc_free(&p);
    util_proc_run(&p, (const char *const[]){"status", "https://127.0.0.1:1/", NULL}, CMD_TIMEOUT_S);
    util_expect_exit(&p, 1);
    cr_assert_not_null(strstr(p.err.buf, "only http://"), "%s", p.err.buf);
    util_proc_free(&p);
    util_proc_run(&p, (const char *const[]){"status", "--bogus", NULL}, CMD_TIMEOUT_S);
    util_expect_exit(&p, 2);
    util_proc_free(&p);

    /* A server that answers something else than a status document. */
    start_server();
    util_proc_run(&p, (const char *const[]){"status", url(u, "/nope"), NULL}, CMD_TIMEOUT_S);
    util_expect_exit(&p, 1);
    cr_assert_not_null(strstr(p.err.buf, "HTTP 404"), "%s", p.err.buf);
    util_proc_free(&p);
    util_proc_run(&p, (const char *const[]){"status", url(u, "/metrics"), NULL}, CMD_TIMEOUT_S);
    util_expect_exit(&p, 1);
    cr_assert_not_null(strstr(p.err.buf, "not JSON"), "%s", p.err.buf);
    util_proc_free(&p);
}

/* ---- the endpoint of a real training run ---- */

static json_t *get_json_at(int port, const char *path) {
    char u[128], *body;
    snprintf(u, sizeof u, "http://127.0.0.1:%d%s", port, path);
    cr_assert_eq(curl(u, &body, NULL), 200, "GET %s: %s", path, body);
    json_error_t je;
    json_t *j = json_loads(body, 0, &je);
    cr_assert_not_null(j, "GET %s is not JSON: %s\n%s", path, je.text, body);
    free(body);
    return j;
}

/* Reads the processes' output for s seconds (their pipes must not fill up). */
static void pump_for(util_proc_t **p, int n, double s) {
    const double end = util_now_s() + s;
    while (util_now_s() < end) {
        util_proc_pump(p, n, util_now_s() + 0.05, NULL, 1);
        for (int i = 0; i < n; i++) p[i]->timed_out = 0;
    }
}

static int workers_in(const json_t *st) { return (int)json_array_size(json_object_get(st, "workers")); }

/* The sum over shards of "updates" in a /status document. */
static uint64_t shard_updates(const json_t *st, int shard) {
    const json_t *sh = json_array_get(json_object_get(st, "shards"), (size_t)shard);
    cr_assert_not_null(sh);
    return (uint64_t)util_jnum(sh, "updates");
}

Test(status, a_training_run_serves_live_numbers_that_agree_with_the_nodes_counters, .timeout = 400) {
    const int port = util_free_port();
    char ep[64], port_set[64], out_set[320];
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", util_free_port());
    snprintf(port_set, sizeof port_set, "status.port=%d", port);
    snprintf(out_set, sizeof out_set, "train.output=%s/live.bin", tmp_dir);
    util_proc_t coord, n0, n1, w[3];
    util_proc_start(&coord, (const char *const[]){"coord", "configs/fmnist-resnet8-w2a2-aux.ini", "--nodes", "2",
                                                   "--bind", ep, "--set", "model.widths=4,8,8", "--set",
                                                   "data.train_limit=6000", "--set", "data.test_limit=500", "--set",
                                                   "train.batch_size=32", "--set", "train.epochs=200", "--set",
                                                   "cluster.chunk_batches=2", "--set", "train.log_interval=20",
                                                   "--set", "cluster.heartbeat_ms=200", "--set",
                                                   "cluster.timeout_ms=3000", "--set", "cluster.prefetch=true",
                                                   "--set", port_set, "--set", out_set, NULL});
    util_proc_start(&n0, (const char *const[]){"ps", "--coordinator", ep, NULL});
    util_proc_start(&n1, (const char *const[]){"ps", "--coordinator", ep, NULL});
    for (int i = 0; i < 2; i++)
        util_proc_start(&w[i], (const char *const[]){"worker", "--coordinator", ep, "--threads", "1", NULL});
    util_proc_t *all[6] = {&coord, &n0, &n1, &w[0], &w[1], NULL};
    int nall = 5;

    /* Training: the numbers move between two looks a second apart. */
    json_t *a = NULL;
    for (int i = 0; i < 600; i++) {
        pump_for(all, nall, 0.1);
        char u[128];
        snprintf(u, sizeof u, "http://127.0.0.1:%d/status", port);
        const char *argv[] = {"curl", "-s", "--max-time", "5", u, NULL};
        cmd_t c;
        run_cmd(&c, argv, NULL, CMD_TIMEOUT_S); /* refused until the coordinator listens */
        json_t *j = c.status == 0 ? json_loads(c.out, 0, NULL) : NULL;
        cmd_free(&c);
        if (j != NULL && strcmp(json_string_value(json_object_get(j, "state")), "training") == 0 &&
            util_jnum(j, "step") > 20 && workers_in(j) == 2) {
            a = j;
            break;
        }
        json_decref(j);
    }
    cr_assert_not_null(a, "the run never showed training with 2 workers; coordinator:\n%s\n%s", coord.out.buf,
                       coord.err.buf);
    pump_for(all, nall, 1.2);
    json_t *b = get_json_at(port, "/status");
    cr_assert_gt(util_jnum(b, "step"), util_jnum(a, "step"), "step moves");
    cr_assert_gt(shard_updates(b, 0), shard_updates(a, 0), "shard 0's updates move");
    cr_assert_gt(util_jnum(b, "samples_per_s"), 0);
    cr_assert(json_is_true(json_object_get(b, "prefetch")), "the run's cluster.prefetch");
    cr_assert_eq(json_array_size(json_object_get(b, "shards")), 2);
    const json_t *wk = json_array_get(json_object_get(b, "workers"), 0);
    cr_assert_lt(util_jnum(wk, "heartbeat_age_s"), 2.0);
    cr_assert_gt(util_jnum(wk, "samples"), 0);
    json_decref(a);
    json_decref(b);

    /* A worker that joins appears within 2 s. */
    util_proc_start(&w[2], (const char *const[]){"worker", "--coordinator", ep, "--threads", "1", NULL});
    all[nall++] = &w[2];
    cr_assert(util_proc_pump(all, nall, util_now_s() + 60, "joined; 3 workers", 1), "no third worker:\n%s",
              coord.out.buf);
    const double joined = util_now_s();
    int seen = 0;
    while (!seen && util_now_s() - joined < 2.0) {
        json_t *j = get_json_at(port, "/status");
        seen = workers_in(j) == 3;
        json_decref(j);
        if (!seen) pump_for(all, nall, 0.1);
    }
    cr_assert(seen, "the third worker is not in /status within 2 s of joining");

    /* Load while it trains: 1,000 requests from 50 concurrent clients and two slow clients that
     * send half a request and stall. Every request is answered; the training throughput
     * before and during the load is logged (a ratio on this shared machine, not a test). */
    live_port = port;
    int slow[2];
    for (int i = 0; i < 2; i++) {
        slow[i] = tcp_connect();
        cr_assert_geq(slow[i], 0);
        cr_assert_eq(send_all(slow[i], "GET /status HTTP/1.1\r\nHo", 25), 0);
    }
    json_t *s0 = get_json_at(port, "/status");
    const double t0 = util_now_s();
    pump_for(all, nall, 2.0);
    json_t *s1 = get_json_at(port, "/status");
    const double t1 = util_now_s();
    pthread_t th[CLIENTS];
    client_t cs[CLIENTS];
    memset(cs, 0, sizeof cs);
    for (int i = 0; i < CLIENTS; i++) {
        cs[i].keepalive = i % 2 == 0;
        cr_assert_eq(pthread_create(&th[i], NULL, client_thread, &cs[i]), 0);
    }
    int ok = 0, failed = 0;
    const char *why = "";
    for (int i = 0; i < CLIENTS; i++) {
        while (pthread_tryjoin_np(th[i], NULL) != 0) pump_for(all, nall, 0.02);
        ok += cs[i].ok;
        failed += cs[i].failed;
        if (cs[i].failed) why = cs[i].why;
    }
    json_t *s2 = get_json_at(port, "/status");
    double t2 = util_now_s();
    /* The snapshot is published every 0.5 s: a burst answered sooner may show no new step yet.
     * The run must go on; it is given 30 s to show it. */
    while (util_jnum(s2, "step") <= util_jnum(s1, "step") && util_now_s() - t2 < 30.0) {
        pump_for(all, nall, 0.2);
        json_decref(s2);
        s2 = get_json_at(port, "/status");
    }
    t2 = util_now_s();
    for (int i = 0; i < 2; i++) close(slow[i]);
    const double before = (util_jnum(s1, "step") - util_jnum(s0, "step")) / (t1 - t0);
    const double during = (util_jnum(s2, "step") - util_jnum(s1, "step")) / (t2 - t1);
    cr_log_info("steps/s before the load %.1f, during %.1f (ratio %.2f); %d requests in %.2f s", before, during,
                before > 0 ? during / before : 0.0, ok + failed, t2 - t1);
    cr_assert_eq(failed, 0, "%d of %d requests failed during training, e.g. %s", failed, CLIENTS * PER_CLIENT, why);
    cr_assert_eq(ok, CLIENTS * PER_CLIENT);
    cr_assert_gt(util_jnum(s2, "step"), util_jnum(s1, "step"), "training went on under the load");
    json_decref(s0);
    json_decref(s1);
    json_decref(s2);

    /* /history, /metrics, /healthz of the live run. */
    json_t *h = get_json_at(port, "/history");
    cr_assert_gt(json_array_size(json_object_get(h, "points")), 0, "history points");
    json_decref(h);
    char u[128], *body;
    snprintf(u, sizeof u, "http://127.0.0.1:%d/metrics", port);
    cr_assert_eq(curl(u, &body, NULL), 200);
    cr_assert(strstr(body, "auxps_") != NULL, "%s", body);
    free(body);
    snprintf(u, sizeof u, "http://127.0.0.1:%d/healthz", port);
    cr_assert_eq(curl(u, &body, NULL), 200);
    free(body);

    /* Every worker leaves: training stops, and the shards' counters in /status come to what the
     * workers say they pushed (the nodes report theirs every heartbeat). */
    for (int i = 0; i < 3; i++) kill(w[i].pid, SIGTERM);
    util_proc_t *ws[3] = {&w[0], &w[1], &w[2]};
    pump_for(all, nall, 0.1);
    util_proc_finish(ws, 3, util_now_s() + 60);
    uint64_t pushed[2] = {0, 0};
    for (int i = 0; i < 3; i++) {
        util_expect_exit(&w[i], 0);
        unsigned long long s0, s1;
        const char *l = strstr(w[i].out.buf, "pushes (per shard: ");
        cr_assert(l != NULL && sscanf(l, "pushes (per shard: %llu,%llu", &s0, &s1) == 2, "%s", w[i].out.buf);
        pushed[0] += s0, pushed[1] += s1;
    }
    util_proc_t *rest[3] = {&coord, &n0, &n1};
    pump_for(rest, 3, 1.0);
    json_t *z = get_json_at(port, "/status");
    cr_assert_str_eq(json_string_value(json_object_get(z, "state")), "waiting", "no workers: waiting");
    cr_assert_eq(shard_updates(z, 0), pushed[0], "shard 0: /status says %llu, the workers pushed %llu",
                 (unsigned long long)shard_updates(z, 0), (unsigned long long)pushed[0]);
    cr_assert_eq(shard_updates(z, 1), pushed[1]);
    json_decref(z);

    /* End the run; the nodes' own counter lines agree with what /status said. */
    kill(coord.pid, SIGINT);
    util_proc_finish(rest, 3, util_now_s() + 120);
    util_expect_exit(&coord, 130);
    for (int k = 0; k < 2; k++) {
        util_proc_t *n = k ? &n1 : &n0;
        unsigned id;
        unsigned long long applied;
        const char *l = strstr(n->out.buf, "node ");
        cr_assert(l != NULL && sscanf(l, "node %u: applied %llu pushes", &id, &applied) == 2, "%s", n->out.buf);
        cr_assert_lt(id, 2u);
        cr_assert_eq(applied, pushed[id], "node %u applied %llu, the workers pushed %llu", id, applied,
                     (unsigned long long)pushed[id]);
    }
    util_proc_free(&coord);
    util_proc_free(&n0);
    util_proc_free(&n1);
    for (int i = 0; i < 3; i++) util_proc_free(&w[i]);
}
