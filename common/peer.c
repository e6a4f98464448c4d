/* peer.c - the coordinator link, HELLO names, log lines and signals of a cluster process
 * (peer.h). */
#include "peer.h"

#include "clock.h"
#include "config.h"
#include "wire.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <time.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zmq.h>

int peer_zfail(const char *what, auxps_error_t *err) {
    return auxps_error_set(err, AUXPS_EIO, "%s: %s", what, zmq_strerror(zmq_errno()));
}

int peer_sockopt(void *sock, int opt, int value) {
    return zmq_setsockopt(sock, opt, &value, sizeof value);
}

void *peer_coord_socket(void *ctx, const char *coordinator, const curve_t *cv, const char *who,
                        auxps_error_t *err) {
    char what[64];
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    if (s == NULL) {
        snprintf(what, sizeof what, "%s: zmq_socket", who);
        peer_zfail(what, err);
        return NULL;
    }
    /* The BYE to the coordinator is worth waiting for, for a moment. */
    if (peer_sockopt(s, ZMQ_LINGER, 1000) || peer_sockopt(s, ZMQ_SNDTIMEO, 1000) ||
        wire_socket_limits(s) != 0) {
        snprintf(what, sizeof what, "%s: zmq_setsockopt", who);
        peer_zfail(what, err);
        goto fail;
    }
    if (curve_connect(cv, s, err) != 0) goto fail;
    if (zmq_connect(s, coordinator) != 0) {
        auxps_error_set(err, AUXPS_EINVAL, "%s: cannot connect to the coordinator at %s: %s", who,
                        coordinator, zmq_strerror(zmq_errno()));
        goto fail;
    }
    return s;
fail:
    zmq_close(s);
    return NULL;
}

int peer_load_curve(const char *path, const char *const *sets, int nsets, int role, curve_t **cv,
                    auxps_error_t *err) {
    *cv = NULL;
    auxps_config_t cfg;
    config_defaults(&cfg);
    int rc = path != NULL ? config_load(&cfg, path, err) : 0;
    for (int i = 0; rc == 0 && i < nsets; i++) {
        const char *s = sets[i] + strspn(sets[i], " \t");
        if (strncmp(s, "security.", 9) != 0)
            return auxps_error_set(err, AUXPS_ECONFIG, "--set %s: only security.* applies here; the run's "
                                   "other settings come from the coordinator", sets[i]);
        rc = config_set(&cfg, s, err);
    }
    if (rc == 0) rc = config_check(&cfg, err);
    if (rc == 0) rc = curve_load(&cfg, role, cv, err);
    return rc;
}

void peer_hello_name(char *name, size_t size, const char *fallback) {
    char host[64];
    snprintf(host, sizeof host, "%s", fallback);
    if (gethostname(host, sizeof host) != 0) snprintf(host, sizeof host, "%s", fallback);
    host[sizeof host - 1] = '\0';
    for (char *c = host; *c; c++)
        if (*c < 0x21 || *c > 0x7e) *c = '_';
    snprintf(name, size, "%.40s:%ld", host, (long)getpid());
}

void peer_vsay(FILE *log, const char *role, int named, uint32_t id, const char *fmt, va_list ap) {
    FILE *f = log ? log : stderr;
    if (named) fprintf(f, "%s %" PRIu32 ": ", role, id);
    else fprintf(f, "%s: ", role);
    vfprintf(f, fmt, ap);
    fputc('\n', f);
    fflush(f);
}

void peer_catch_signals(void (*handler)(int)) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler; /* no SA_RESTART: zmq_poll returns EINTR */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

typedef struct {
    int (*fn)(void *arg);
    void *arg;
    int rc;
    atomic_int done;
} beating_job_t;

static void *beating_thread(void *p) {
    beating_job_t *j = p;
    j->rc = j->fn(j->arg);
    atomic_store(&j->done, 1);
    return NULL;
}

int peer_run_beating(void *coord, uint32_t role, uint32_t id, uint32_t *rid, uint32_t heartbeat_ms,
                     int (*fn)(void *arg), void *arg) {
    beating_job_t j = {fn, arg, 0, 0};
    pthread_t t;
    if (pthread_create(&t, NULL, beating_thread, &j) != 0) return fn(arg);
    int64_t next = clock_now_ms();
    while (!atomic_load(&j.done)) {
        if (clock_now_ms() >= next) {
            wire_msg_t m = wire_heartbeat(role, id);
            m.rid = (*rid)++;
            auxps_error_t e = {0};
            wire_send(coord, NULL, 0, &m, NULL, NULL, ZMQ_DONTWAIT, &e); /* a lost one is the next one's job */
            next = clock_now_ms() + heartbeat_ms;
        }
        nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
    }
    pthread_join(t, NULL);
    return j.rc;
}

/* Binds a TCP socket to 127.0.0.1:port (0: the kernel's choice) and returns the port bound, or
 * -1 with errno set. */
static int bind_port(int port) {
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) return -1;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)port);
    socklen_t len = sizeof a;
    int got = -1;
    if (bind(s, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(s, (struct sockaddr *)&a, &len) == 0)
        got = ntohs(a.sin_port);
    const int e = errno;
    close(s);
    errno = e;
    return got;
}

#define PEER_PORT_LOW 10000 /* the draws: [PEER_PORT_LOW, the ephemeral range's start) */
#define PEER_PORT_DRAWS 64

int peer_free_port(void) {
    int lo = 32768; /* Linux's default start of the ephemeral range */
    FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
    if (f != NULL) {
        int a, b;
        if (fscanf(f, "%d %d", &a, &b) == 2 && a > PEER_PORT_LOW && a <= 65535) lo = a;
        fclose(f);
    }
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t x = ((uint64_t)getpid() << 32) ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec * 1000003u);
    x |= 1; /* xorshift never leaves 0 */
    for (int i = 0; i < PEER_PORT_DRAWS; i++) { /* lo > PEER_PORT_LOW: the default, or checked above */
        x ^= x << 13, x ^= x >> 7, x ^= x << 17; /* xorshift64 */
        const int port = PEER_PORT_LOW + (int)(x % (uint64_t)(lo - PEER_PORT_LOW));
        if (bind_port(port) == port) return port;
    }
    return bind_port(0);
}
