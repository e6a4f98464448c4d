/* util.c - the helpers the test binaries share (util.h). */
#include "util.h"

#include "peer.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <math.h>
#include <msgpack.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

extern char **environ;

/* Every process started and not yet reaped, for util_proc_kill_all; 0: a free slot. */
static pid_t kids[UTIL_MAX_KIDS];

double util_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- temp dirs ---- */

void util_tmpdir_make(char dir[64], const char *name) {
    snprintf(dir, 64, "/tmp/auxps_test_%s_XXXXXX", name);
    cr_assert_not_null(mkdtemp(dir), "mkdtemp: %s", strerror(errno));
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

void util_tmpdir_remove(const char *dir) {
    if (dir[0]) nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- deterministic test data ---- */

uint64_t util_rng_next(util_rng_t *r) {
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

double util_rng_unif(util_rng_t *r, double lo, double hi) {
    return lo + (hi - lo) * (double)(util_rng_next(r) >> 11) * 0x1.0p-53;
}

void util_fill_unif(float *p, size_t n, util_rng_t *r, double lo, double hi) {
    for (size_t i = 0; i < n; i++) p[i] = (float)util_rng_unif(r, lo, hi);
}

float *util_falloc(size_t n) {
    float *p = calloc(n ? n : 1, sizeof(float));
    cr_assert_not_null(p);
    return p;
}

float util_prefill_value(size_t i) { return 0.25f * (float)(i % 7) - 0.5f; }

void util_prefill(float *p, size_t n) {
    for (size_t i = 0; i < n; i++) p[i] = util_prefill_value(i);
}

/* ---- messages ---- */

int util_recv_within(void *sock, int router, wire_in_t *in, wire_msg_t *m, int ms) {
    zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, ms) <= 0) return -1;
    auxps_error_t e = {0};
    cr_assert_eq(wire_recv(sock, router, in, 0, &e), 0, "%s", e.msg);
    cr_assert_eq(wire_decode_in(in, m, &e), 0, "%s", e.msg);
    return 0;
}

/* ---- child processes ---- */

static void stream_append(util_stream_t *s, const char *p, size_t n);

/* ---- hostile peers ---- */

void util_peer_open(util_peer_t *p, const char *endpoint) {
    p->ctx = zmq_ctx_new();
    cr_assert_not_null(p->ctx);
    p->sock = zmq_socket(p->ctx, ZMQ_DEALER);
    cr_assert_not_null(p->sock);
    int linger = 0;
    zmq_setsockopt(p->sock, ZMQ_LINGER, &linger, sizeof linger);
    cr_assert_eq(zmq_connect(p->sock, endpoint), 0, "connect %s: %s", endpoint, zmq_strerror(zmq_errno()));
}

void util_peer_close(util_peer_t *p) {
    if (p->sock != NULL) zmq_close(p->sock);
    if (p->ctx != NULL) zmq_ctx_term(p->ctx);
    p->sock = p->ctx = NULL;
}

void util_peer_send(util_peer_t *p, const void *f0, size_t n0, const void *f1, size_t n1) {
    cr_assert_geq(zmq_send(p->sock, f0, n0, f1 ? ZMQ_SNDMORE : 0), 0, "send: %s", zmq_strerror(zmq_errno()));
    if (f1) cr_assert_geq(zmq_send(p->sock, f1, n1, 0), 0, "send: %s", zmq_strerror(zmq_errno()));
}

uint32_t util_peer_expect_error(util_peer_t *p, const char *what, uint32_t *rid, int ms) {
    wire_in_t in;
    memset(&in, 0, sizeof in);
    wire_msg_t m;
    memset(&m, 0, sizeof m);
    cr_assert_eq(util_recv_within(p->sock, 0, &in, &m, ms), 0, "%s: no reply within %d ms", what, ms);
    cr_assert_eq(m.type, WIRE_ERROR, "%s: answered with %s, not ERROR", what, wire_type_name(m.type));
    uint32_t code = m.error.code;
    if (rid) *rid = m.rid;
    wire_msg_clear(&m);
    wire_in_close(&in);
    return code;
}

int util_peer_silent(util_peer_t *p, int ms) {
    zmq_pollitem_t it = {p->sock, 0, ZMQ_POLLIN, 0};
    return zmq_poll(&it, 1, ms) == 0;
}

void util_encode(const wire_msg_t *m, unsigned char *buf, size_t *n) {
    void *hdr;
    size_t size;
    auxps_error_t e = {0};
    cr_assert_eq(wire_encode(m, &hdr, &size, &e), 0, "%s", e.msg);
    cr_assert_leq(size, *n);
    memcpy(buf, hdr, size);
    *n = size;
    free(hdr);
}

/* The header ["AXPS", WIRE_VERSION, type, rid] of a hand-made message; the caller packs the
 * rest (n fields), so that it can write values wire_encode would refuse. */
static void hand_header(msgpack_packer *pk, uint32_t type, uint32_t rid, int n) {
    msgpack_pack_array(pk, (size_t)(4 + n));
    msgpack_pack_str(pk, 4);
    msgpack_pack_str_body(pk, "AXPS", 4);
    msgpack_pack_uint32(pk, WIRE_VERSION);
    msgpack_pack_uint32(pk, type);
    msgpack_pack_uint32(pk, rid);
}

/* A PUSH header with the given offset and length and no payload. */
static void hand_push(msgpack_sbuffer *sb, uint32_t rid, uint64_t offset, uint64_t length) {
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    hand_header(&pk, WIRE_PUSH, rid, 9);
    const uint64_t v[8] = {0, 0, offset, length, 0, 0, 32, WIRE_ENC_F32};
    for (int i = 0; i < 8; i++) msgpack_pack_uint64(&pk, v[i]);
    msgpack_pack_array(&pk, 0);
}

/* Sends header (and no payload) and checks the ERROR code and, when rid != 0, the rid. */
static void expect_refusal(util_peer_t *p, const char *who, const char *what, const void *hdr, size_t n,
                           uint32_t want, uint32_t rid) {
    char where[160];
    snprintf(where, sizeof where, "%s: %s", who, what);
    util_peer_send(p, hdr, n, NULL, 0);
    uint32_t got_rid, code = util_peer_expect_error(p, where, &got_rid, 5000);
    cr_assert_eq(code, want, "%s: ERROR %s, expected %s", where, wire_err_name(code), wire_err_name(want));
    if (rid) cr_assert_eq(got_rid, rid, "%s: the ERROR answers rid %u, not %u", where, got_rid, rid);
}

int util_send_malformed(util_peer_t *p, const char *who, uint64_t kinds[WIRE_REJECT_COUNT]) {
    int sent = 0;
    unsigned char hb[64];
    size_t hn = sizeof hb;
    wire_msg_t m;
    memset(&m, 0, sizeof m);
    m.type = WIRE_HEARTBEAT;
    m.rid = 4242;
    m.heartbeat = (wire_heartbeat_t){WIRE_ROLE_WORKER, 7};
    util_encode(&m, hb, &hn);
    /* fixarray, fixstr "AXPS", then the version and the type as positive fixints */
    cr_assert(hb[1] == 0xa4 && hb[6] == WIRE_VERSION && hb[7] == WIRE_HEARTBEAT, "unexpected HEARTBEAT encoding");

    unsigned char rnd[64];
    util_rng_t r = {7};
    for (size_t i = 0; i < sizeof rnd; i++) rnd[i] = (unsigned char)util_rng_next(&r);
    rnd[0] = 0xc1; /* never a MessagePack type: the frame is garbage */
    expect_refusal(p, who, "random bytes", rnd, sizeof rnd, WIRE_ERR_BAD_MESSAGE, 0);
    kinds[WIRE_REJECT_MALFORMED]++, sent++;
    expect_refusal(p, who, "truncated header", hb, hn / 2, WIRE_ERR_BAD_MESSAGE, 0);
    kinds[WIRE_REJECT_MALFORMED]++, sent++;
    unsigned char ed[64];
    memcpy(ed, hb, hn);
    ed[7] = 99;
    expect_refusal(p, who, "type 99", ed, hn, WIRE_ERR_BAD_MESSAGE, 4242);
    kinds[WIRE_REJECT_MALFORMED]++, sent++;

    memcpy(ed, hb, hn);
    ed[6] = WIRE_VERSION + 1;
    expect_refusal(p, who, "another version", ed, hn, WIRE_ERR_VERSION, 4242);
    kinds[WIRE_REJECT_BAD_VERSION]++, sent++;

    size_t big = WIRE_MAX_HEADER + 100;
    unsigned char *huge = calloc(1, big);
    cr_assert_not_null(huge);
    memcpy(huge, hb, hn);
    expect_refusal(p, who, "header frame over the limit", huge, big, WIRE_ERR_BAD_MESSAGE, 0);
    free(huge);
    kinds[WIRE_REJECT_TOO_LARGE]++, sent++;
    const unsigned char claim[] = {0xdd, 0xff, 0xff, 0xff, 0xff, 0xa4, 'A', 'X', 'P', 'S'};
    expect_refusal(p, who, "array claiming 2^32-1 items", claim, sizeof claim, WIRE_ERR_BAD_MESSAGE, 0);
    kinds[WIRE_REJECT_TOO_LARGE]++, sent++;

    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    hand_push(&sb, 4343, 0, 1ull << 40);
    expect_refusal(p, who, "PUSH of 2^40 values", sb.data, sb.size, WIRE_ERR_BAD_MESSAGE, 4343);
    kinds[WIRE_REJECT_TOO_LARGE]++, sent++;
    msgpack_sbuffer_clear(&sb);
    hand_push(&sb, 4344, WIRE_MAX_VECTOR - 1, 16);
    expect_refusal(p, who, "PUSH past the end of any vector", sb.data, sb.size, WIRE_ERR_BAD_MESSAGE, 4344);
    kinds[WIRE_REJECT_OUT_OF_RANGE]++, sent++;

    msgpack_sbuffer_clear(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    hand_header(&pk, WIRE_PROGRESS, 4345, 10);
    for (int i = 0; i < 5; i++) msgpack_pack_uint32(&pk, 0); /* worker, chunk, epoch, clock, samples */
    msgpack_pack_double(&pk, NAN);                            /* loss_sum */
    msgpack_pack_double(&pk, 0.0);
    for (int i = 0; i < 3; i++) msgpack_pack_uint32(&pk, 0);
    expect_refusal(p, who, "PROGRESS with a NaN loss", sb.data, sb.size, WIRE_ERR_BAD_MESSAGE, 4345);
    kinds[WIRE_REJECT_NON_FINITE]++, sent++;
    msgpack_sbuffer_destroy(&sb);
    return sent;
}

/* ---- HTTP ---- */

int util_http_get(int port, const char *path, char **body) {
    *body = NULL;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(s, 0, "socket: %s", strerror(errno));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(s, (struct sockaddr *)&a, sizeof a) != 0) {
        close(s);
        return -1;
    }
    char req[512];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", path);
    cr_assert_eq(send(s, req, (size_t)n, MSG_NOSIGNAL), n);
    util_stream_t r = {0};
    stream_append(&r, "", 0);
    const double deadline = util_now_s() + 5.0;
    for (;;) {
        struct pollfd pf = {s, POLLIN, 0};
        double left = deadline - util_now_s();
        cr_assert_gt(left, 0, "GET %s: no complete answer within 5 s", path);
        if (poll(&pf, 1, (int)(left * 1000) + 1) <= 0) continue;
        char chunk[65536];
        ssize_t k = recv(s, chunk, sizeof chunk, 0);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) break;
        stream_append(&r, chunk, (size_t)k);
    }
    close(s);
    int status = -1;
    cr_assert_eq(sscanf(r.buf, "HTTP/1.1 %d", &status), 1, "GET %s: not an HTTP answer: %.100s", path, r.buf);
    const char *b = strstr(r.buf, "\r\n\r\n");
    cr_assert_not_null(b, "GET %s: no end of head", path);
    *body = strdup(b + 4);
    cr_assert_not_null(*body);
    free(r.buf);
    return status;
}

const char *util_auxps_bin(void) {
    const char *b = getenv("AUXPS_BIN");
    return b != NULL && b[0] ? b : "build/auxps";
}

static void stream_append(util_stream_t *s, const char *p, size_t n) {
    if (s->len + n + 1 > s->cap) {
        size_t cap = s->cap ? s->cap : 4096;
        while (cap < s->len + n + 1) cap *= 2;
        cr_assert_leq(cap, (size_t)UTIL_MAX_OUTPUT * 2, "child output over %d bytes", UTIL_MAX_OUTPUT);
        s->buf = realloc(s->buf, cap);
        cr_assert_not_null(s->buf);
        s->cap = cap;
    }
    memcpy(s->buf + s->len, p, n);
    s->len += n;
    s->buf[s->len] = '\0';
}

void util_proc_start(util_proc_t *p, const char *const args[]) { util_proc_start_prog(p, util_auxps_bin(), args); }

void util_proc_start_prog(util_proc_t *p, const char *prog, const char *const args[]) {
    memset(p, 0, sizeof *p);
    p->pid = -1;
    p->slot = -1;
    for (int i = 0; i < UTIL_MAX_KIDS && p->slot < 0; i++)
        if (kids[i] <= 0) p->slot = i;
    cr_assert_geq(p->slot, 0, "more than %d processes", UTIL_MAX_KIDS);
    const char *argv[96];
    int n = 0;
    argv[n++] = prog;
    for (int i = 0; args[i] != NULL; i++) {
        cr_assert_lt(n, 95);
        argv[n++] = args[i];
    }
    argv[n] = NULL;
    int po[2], pe[2];
    cr_assert_eq(pipe2(po, O_CLOEXEC), 0, "pipe: %s", strerror(errno));
    cr_assert_eq(pipe2(pe, O_CLOEXEC), 0, "pipe: %s", strerror(errno));
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, po[1], 1);
    posix_spawn_file_actions_adddup2(&fa, pe[1], 2);
    posix_spawnattr_init(&at);
    sigset_t all, none;
    sigfillset(&all);
    sigemptyset(&none);
    posix_spawnattr_setsigdefault(&at, &all);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
    int rc = posix_spawn(&p->pid, argv[0], &fa, &at, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    close(po[1]);
    close(pe[1]);
    if (rc != 0) {
        close(po[0]);
        close(pe[0]);
        cr_assert_fail("cannot start %s: %s (build it with make build-all, or set AUXPS_BIN)", argv[0], strerror(rc));
    }
    kids[p->slot] = p->pid;
    p->out.fd = po[0];
    p->err.fd = pe[0];
    fcntl(po[0], F_SETFL, O_NONBLOCK);
    fcntl(pe[0], F_SETFL, O_NONBLOCK);
    stream_append(&p->out, "", 0);
    stream_append(&p->err, "", 0);
}

int util_proc_pump(util_proc_t *procs[], int n, double deadline, const char *until, int which) {
    for (;;) {
        if (until != NULL) {
            /* Only complete lines count: a test must not act on half a line. */
            util_stream_t *s = which == 2 ? &procs[0]->err : &procs[0]->out;
            char *nl = memrchr(s->buf, '\n', s->len);
            if (nl != NULL) {
                char save = nl[1];
                nl[1] = '\0';
                int found = strstr(s->buf, until) != NULL;
                nl[1] = save;
                if (found) return 1;
            }
        }
        struct pollfd fds[2 * UTIL_MAX_KIDS];
        util_stream_t *ss[2 * UTIL_MAX_KIDS];
        int nf = 0;
        for (int i = 0; i < n; i++) {
            if (procs[i]->out.fd >= 0) fds[nf] = (struct pollfd){procs[i]->out.fd, POLLIN, 0}, ss[nf++] = &procs[i]->out;
            if (procs[i]->err.fd >= 0) fds[nf] = (struct pollfd){procs[i]->err.fd, POLLIN, 0}, ss[nf++] = &procs[i]->err;
        }
        if (nf == 0) return 0;
        double left = deadline - util_now_s();
        if (left <= 0) {
            for (int i = 0; i < n; i++) procs[i]->timed_out = 1;
            return 0;
        }
        int r = poll(fds, (nfds_t)nf, left > 0.2 ? 200 : (int)(left * 1000) + 1);
        if (r < 0 && errno == EINTR) continue;
        cr_assert_geq(r, 0, "poll: %s", strerror(errno));
        for (int i = 0; i < nf; i++) {
            if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            char chunk[65536];
            ssize_t k = read(fds[i].fd, chunk, sizeof chunk);
            if (k < 0 && (errno == EINTR || errno == EAGAIN)) continue;
            if (k <= 0) {
                close(ss[i]->fd);
                ss[i]->fd = -1;
            } else {
                stream_append(ss[i], chunk, (size_t)k);
            }
        }
    }
}

void util_proc_finish(util_proc_t *procs[], int n, double deadline) {
    util_proc_pump(procs, n, deadline, NULL, 1);
    for (int i = 0; i < n; i++) {
        util_proc_t *p = procs[i];
        int st = 0;
        for (;;) {
            pid_t w = waitpid(p->pid, &st, WNOHANG);
            if (w == p->pid) break;
            cr_assert(w == 0 || errno == EINTR, "waitpid: %s", strerror(errno));
            if (util_now_s() >= deadline) {
                p->timed_out = 1;
                kill(p->pid, SIGKILL);
                waitpid(p->pid, &st, 0);
                break;
            }
            usleep(10000);
        }
        kids[p->slot] = 0;
        if (p->out.fd >= 0) close(p->out.fd);
        if (p->err.fd >= 0) close(p->err.fd);
        p->out.fd = p->err.fd = -1;
        p->exited = WIFEXITED(st);
        p->status = p->exited ? WEXITSTATUS(st) : -1;
        p->signaled = WIFSIGNALED(st);
        p->termsig = p->signaled ? WTERMSIG(st) : 0;
    }
    for (int i = 0; i < n; i++)
        cr_assert(!procs[i]->timed_out, "process %d (%s) did not finish by its deadline; stdout:\n%s\nstderr:\n%s",
                  i, util_auxps_bin(), procs[i]->out.buf, procs[i]->err.buf);
}

void util_proc_run(util_proc_t *p, const char *const args[], double timeout_s) {
    util_proc_start(p, args);
    util_proc_finish(&p, 1, util_now_s() + timeout_s);
}

void util_expect_exit(const util_proc_t *p, int status) {
    cr_assert(!p->signaled, "auxps was killed by signal %d (%s); stdout:\n%s\nstderr:\n%s", p->termsig,
              strsignal(p->termsig), p->out.buf, p->err.buf);
    cr_assert(p->exited);
    cr_assert(strstr(p->err.buf, "Sanitizer") == NULL && strstr(p->err.buf, "runtime error:") == NULL,
              "sanitizer report:\n%s", p->err.buf);
    cr_assert_eq(p->status, status, "exit status %d, expected %d; stdout:\n%s\nstderr:\n%s", p->status, status,
                 p->out.buf, p->err.buf);
}

void util_proc_free(util_proc_t *p) {
    free(p->out.buf);
    free(p->err.buf);
    p->out.buf = p->err.buf = NULL;
}

void util_proc_kill_all(void) {
    for (int i = 0; i < UTIL_MAX_KIDS; i++)
        if (kids[i] > 0) {
            kill(kids[i], SIGKILL);
            waitpid(kids[i], NULL, 0);
            kids[i] = 0;
        }
}

int util_free_port(void) {
    const int port = peer_free_port();
    cr_assert_geq(port, 0, "no free loopback port: %s", strerror(errno));
    return port;
}

void util_asan_no_quarantine(void) {
#if defined(__SANITIZE_ADDRESS__)
    char opts[512];
    const char *old = getenv("ASAN_OPTIONS");
    snprintf(opts, sizeof opts, "%s%squarantine_size_mb=0", old ? old : "", old && *old ? ":" : "");
    setenv("ASAN_OPTIONS", opts, 1);
#endif
}

double util_jnum(const json_t *o, const char *key) {
    const json_t *v = json_object_get(o, key);
    if (!json_is_number(v)) {
        char *text = json_dumps(o, JSON_COMPACT);
        cr_assert_fail("no number %s in %s", key, text != NULL ? text : "(the object)");
    }
    return json_number_value(v);
}
