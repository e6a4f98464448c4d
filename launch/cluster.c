/* cluster.c - `auxps cluster`: starts a coordinator, S nodes and N workers as children on
 * loopback, streams their output with prefixes, forwards Ctrl-C, and leaves no orphan. */
#include "cluster.h"

#include "config.h"
#include "peer.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_ARGS 512
#define LINE_MAX_BYTES 65536 /* a longer line is passed on in pieces */

/* One output stream of a child, cut into lines. */
typedef struct {
    int fd;                   /* read end; -1 at EOF */
    int out;                  /* 1 or 2: where its lines go */
    size_t len;
    char buf[LINE_MAX_BYTES];
} stream_t;

typedef struct {
    char name[32];            /* "coord:PID", "ps:PID", "worker:PID" (the coordinator logs host:pid) */
    char prefix[40];          /* "" for the coordinator's stdout */
    pid_t pid;                /* -1 once reaped */
    int status;               /* from waitpid */
    stream_t so, se;
} child_t;

typedef struct {
    child_t *kids;            /* [0] is the coordinator */
    int nkids;
    int sigfd;                /* signalfd of SIGINT, SIGTERM, SIGCHLD */
    int signals;              /* SIGINT/SIGTERM received */
} launcher_t;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void write_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return; /* a closed terminal or pipe: the run goes on without it */
        p += k;
        n -= (size_t)k;
    }
}

static void emit_line(const child_t *c, const stream_t *s, const char *line, size_t n) {
    char pre[48];
    const char *prefix = pre;
    if (s == &c->so) prefix = c->prefix; /* "" for the coordinator: the run's record */
    else snprintf(pre, sizeof pre, "[%s] ", c->name);
    /* One write per line, so that lines of different children do not interleave. */
    char out[LINE_MAX_BYTES + 64];
    size_t pl = strlen(prefix);
    memcpy(out, prefix, pl);
    memcpy(out + pl, line, n);
    out[pl + n] = '\n';
    write_all(s->out, out, pl + n + 1);
}

/* Reads what is available; passes complete lines on. At EOF the last partial line is passed on
 * too. Returns 1 if it read something. */
static int pump(child_t *c, stream_t *s) {
    if (s->fd < 0) return 0;
    ssize_t k = read(s->fd, s->buf + s->len, sizeof s->buf - s->len);
    if (k < 0 && (errno == EINTR || errno == EAGAIN)) return 0;
    if (k <= 0) {
        if (s->len > 0) emit_line(c, s, s->buf, s->len);
        s->len = 0;
        close(s->fd);
        s->fd = -1;
        return 0;
    }
    s->len += (size_t)k;
    size_t start = 0;
    for (size_t i = 0; i < s->len; i++)
        if (s->buf[i] == '\n') {
            emit_line(c, s, s->buf + start, i - start);
            start = i + 1;
        }
    if (start == 0 && s->len == sizeof s->buf) { /* no newline in a full buffer */
        emit_line(c, s, s->buf, s->len);
        start = s->len;
    }
    memmove(s->buf, s->buf + start, s->len - start);
    s->len -= start;
    return 1;
}

/* Starts /proc/self/exe with args in a new process group, with its output into pipes, the
 * default signal dispositions and mask, and death with the launcher. Returns 0 or -1. */
static int start_child(child_t *c, char *const args[]) {
    int po[2], pe[2];
    if (pipe2(po, O_CLOEXEC) != 0) return -1;
    if (pipe2(pe, O_CLOEXEC) != 0) {
        close(po[0]);
        close(po[1]);
        return -1;
    }
    const pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        close(po[0]), close(po[1]), close(pe[0]), close(pe[1]);
        return -1;
    }
    if (pid == 0) { /* only async-signal-safe calls until exec */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent) _exit(127);
        setpgid(0, 0);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull < 0 || dup2(devnull, 0) < 0 || dup2(po[1], 1) < 0 || dup2(pe[1], 2) < 0) _exit(127);
        execv("/proc/self/exe", args);
        _exit(127);
    }
    close(po[1]);
    close(pe[1]);
    c->pid = pid;
    c->so = (stream_t){.fd = po[0], .out = 1};
    c->se = (stream_t){.fd = pe[0], .out = 2};
    fcntl(po[0], F_SETFL, O_NONBLOCK);
    fcntl(pe[0], F_SETFL, O_NONBLOCK);
    return 0;
}

/* Reaps every child that has exited. Returns how many are still running. */
static int reap(launcher_t *l) {
    int running = 0;
    for (int i = 0; i < l->nkids; i++) {
        child_t *c = &l->kids[i];
        if (c->pid < 0) continue;
        int st;
        pid_t w = waitpid(c->pid, &st, WNOHANG);
        if (w == c->pid) {
            c->status = st;
            c->pid = -1;
        } else {
            running++;
        }
    }
    return running;
}

static void signal_others(launcher_t *l, int sig) {
    for (int i = 1; i < l->nkids; i++)
        if (l->kids[i].pid > 0) kill(l->kids[i].pid, sig);
}

static int parse_count(const char *opt, const char *s, long lo, long hi, int *out) {
    if (config_parse_int(s, lo, hi, out) == 0) return 0;
    fprintf(stderr, "auxps cluster: %s '%s': expected an integer in %ld..%ld\n", opt, s, lo, hi);
    return -1;
}

static void usage(void) {
    fprintf(stderr, "usage: auxps cluster CONFIG --ps S --workers N [--threads T] [--dump-params FILE] "
                    "[--set section.key=value ...]\n");
}

static void describe_exit(const child_t *c) {
    if (WIFEXITED(c->status) && WEXITSTATUS(c->status) == 0) return;
    if (WIFEXITED(c->status))
        fprintf(stderr, "[cluster] %s exited with status %d\n", c->name, WEXITSTATUS(c->status));
    else if (WIFSIGNALED(c->status))
        fprintf(stderr, "[cluster] %s was killed by signal %d (%s)\n", c->name, WTERMSIG(c->status),
                strsignal(WTERMSIG(c->status)));
}

/* Streams output and handles signals until every child has exited and every pipe is closed. */
static void supervise(launcher_t *l) {
    const int n = l->nkids;
    struct pollfd *fds = calloc((size_t)(2 * n + 1), sizeof *fds);
    stream_t **ss = calloc((size_t)(2 * n + 1), sizeof *ss);
    child_t **owner = calloc((size_t)(2 * n + 1), sizeof *owner);
    if (fds == NULL || ss == NULL || owner == NULL) { /* cannot supervise: end it all */
        for (int i = 0; i < n; i++)
            if (l->kids[i].pid > 0) kill(l->kids[i].pid, SIGKILL);
        while (reap(l) > 0) usleep(10000);
        free(fds), free(ss), free(owner);
        return;
    }
    double coord_end = -1, term_at = -1, kill_at = -1, all_gone = -1;
    for (;;) {
        int running = reap(l);
        const double now = now_s();
        if (l->kids[0].pid < 0 && coord_end < 0) {
            coord_end = now;
            term_at = now + CLUSTER_GRACE_MS / 1000.0;
            kill_at = term_at + CLUSTER_KILL_MS / 1000.0;
        }
        if (term_at > 0 && now >= term_at) {
            if (running > 0) fprintf(stderr, "[cluster] %d processes still running after the coordinator: SIGTERM\n", running);
            signal_others(l, SIGTERM);
            term_at = -1;
        }
        if (kill_at > 0 && now >= kill_at) {
            signal_others(l, SIGKILL);
            kill_at = -1;
        }
        int nf = 0;
        for (int i = 0; i < n; i++) {
            child_t *c = &l->kids[i];
            stream_t *st[2] = {&c->so, &c->se};
            for (int j = 0; j < 2; j++)
                if (st[j]->fd >= 0) {
                    fds[nf] = (struct pollfd){st[j]->fd, POLLIN, 0};
                    ss[nf] = st[j];
                    owner[nf++] = c;
                }
        }
        if (running == 0) {
            if (all_gone < 0) all_gone = now;
            /* Pipes close with their writers; a descendant holding one may not keep us. */
            if (nf == 0 || now - all_gone > 1.0) break;
        }
        fds[nf] = (struct pollfd){l->sigfd, POLLIN, 0};
        int r = poll(fds, (nfds_t)nf + 1, 100);
        if (r < 0 && errno != EINTR) break;
        if (r <= 0) continue;
        for (int i = 0; i < nf; i++)
            if (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) pump(owner[i], ss[i]);
        if (fds[nf].revents & POLLIN) {
            struct signalfd_siginfo si;
            while (read(l->sigfd, &si, sizeof si) == (ssize_t)sizeof si) {
                if (si.ssi_signo != SIGINT && si.ssi_signo != SIGTERM) continue; /* SIGCHLD: reap above */
                l->signals++;
                if (l->signals <= 2 && l->kids[0].pid > 0) {
                    fprintf(stderr, "[cluster] %s: asking the coordinator to stop%s\n", strsignal((int)si.ssi_signo),
                            l->signals == 2 ? " at once" : "");
                    kill(l->kids[0].pid, SIGINT);
                } else {
                    fprintf(stderr, "[cluster] %s again: killing every process\n", strsignal((int)si.ssi_signo));
                    for (int i = 0; i < n; i++)
                        if (l->kids[i].pid > 0) kill(l->kids[i].pid, SIGKILL);
                }
            }
        }
    }
    /* Whatever is left (a child that ignored SIGKILL cannot exist; this is the belt). */
    for (int i = 0; i < n; i++)
        if (l->kids[i].pid > 0) kill(l->kids[i].pid, SIGKILL);
    while (reap(l) > 0) usleep(10000);
    for (int i = 0; i < n; i++) {
        stream_t *st[2] = {&l->kids[i].so, &l->kids[i].se};
        for (int j = 0; j < 2; j++) {
            while (pump(&l->kids[i], st[j])) {}
            if (st[j]->fd >= 0) {
                if (st[j]->len > 0) emit_line(&l->kids[i], st[j], st[j]->buf, st[j]->len);
                close(st[j]->fd);
                st[j]->fd = -1;
            }
        }
    }
    free(fds);
    free(ss);
    free(owner);
}

int cluster_main(int argc, char **argv) {
    if (argc < 1 || argv[0][0] == '-') {
        usage();
        return 2;
    }
    const char *config = argv[0], *dump = NULL;
    int nodes = 0, workers = 0, threads = -1;
    const char *sets[MAX_ARGS];
    int nsets = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--ps") == 0 && v) {
            if (parse_count("--ps", v, 1, 64, &nodes) != 0) return 2;
            i++;
        } else if (strcmp(a, "--workers") == 0 && v) {
            if (parse_count("--workers", v, 1, 1024, &workers) != 0) return 2;
            i++;
        } else if (strcmp(a, "--threads") == 0 && v) {
            if (parse_count("--threads", v, 1, 256, &threads) != 0) return 2;
            i++;
        } else if (strcmp(a, "--dump-params") == 0 && v) {
            dump = v, i++;
        } else if (strcmp(a, "--set") == 0 && v && nsets < MAX_ARGS / 2 - 16) {
            sets[nsets++] = v, i++;
        } else if (strncmp(a, "--set=", 6) == 0 && nsets < MAX_ARGS / 2 - 16) {
            sets[nsets++] = a + 6;
        } else {
            fprintf(stderr, "auxps cluster: unknown or incomplete argument '%s'\n", a);
            usage();
            return 2;
        }
    }
    if (nodes == 0 || workers == 0) {
        fprintf(stderr, "auxps cluster: --ps S and --workers N are required\n");
        usage();
        return 2;
    }
    /* Check the config here too, so that a mistake is one message, not one per process. */
    auxps_config_t cfg;
    auxps_error_t err = {0};
    int rc = config_load(&cfg, config, &err);
    for (int i = 0; rc == 0 && i < nsets; i++) rc = config_set(&cfg, sets[i], &err);
    if (rc == 0) rc = config_check(&cfg, &err);
    if (rc != 0) {
        fprintf(stderr, "auxps cluster: %s\n", err.msg);
        return 1;
    }
    if (threads < 0) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        threads = cfg.train.threads > 0 ? cfg.train.threads : cores > workers ? (int)(cores / workers) : 1;
    }
    int port = peer_free_port(); /* the coordinator fails with a clear message if it is taken */
    if (port < 0) {
        fprintf(stderr, "auxps cluster: no free loopback port: %s\n", strerror(errno));
        return 1;
    }
    char endpoint[64], snodes[16], sworkers[16], sthreads[16];
    snprintf(endpoint, sizeof endpoint, "tcp://127.0.0.1:%d", port);
    snprintf(snodes, sizeof snodes, "%d", nodes);
    snprintf(sworkers, sizeof sworkers, "%d", workers);
    snprintf(sthreads, sizeof sthreads, "%d", threads);

    /* SIGINT, SIGTERM and SIGCHLD arrive through a signalfd; children unblock them. */
    sigset_t mask, old;
    sigemptyset(&mask);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGCHLD);
    launcher_t l = {0};
    l.sigfd = -1;
    if (sigprocmask(SIG_BLOCK, &mask, &old) != 0 || (l.sigfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK)) < 0) {
        fprintf(stderr, "auxps cluster: signalfd: %s\n", strerror(errno));
        sigprocmask(SIG_SETMASK, &old, NULL);
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    l.kids = calloc((size_t)(1 + nodes + workers), sizeof *l.kids);
    if (l.kids == NULL) {
        fprintf(stderr, "auxps cluster: out of memory\n");
        close(l.sigfd);
        sigprocmask(SIG_SETMASK, &old, NULL);
        return 1;
    }
    int status = 1;
    char *args[MAX_ARGS];
    int na = 0;
    args[na++] = "auxps";
    args[na++] = "coord";
    args[na++] = (char *)config;
    args[na++] = "--nodes", args[na++] = snodes;
    args[na++] = "--workers", args[na++] = sworkers;
    args[na++] = "--bind", args[na++] = endpoint;
    if (dump != NULL) args[na++] = "--dump-params", args[na++] = (char *)dump;
    for (int i = 0; i < nsets; i++) args[na++] = "--set", args[na++] = (char *)sets[i];
    args[na] = NULL;
    for (int i = 0; i < 1 + nodes + workers; i++) {
        child_t *c = &l.kids[i];
        c->pid = -1;
        if (i > 0) {
            int node = i <= nodes;
            na = 0;
            args[na++] = "auxps";
            args[na++] = node ? "ps" : "worker";
            args[na++] = "--coordinator", args[na++] = endpoint;
            if (!node) args[na++] = "--threads", args[na++] = sthreads;
            /* Nodes and workers take their keys from the same config (curve.h: each reads
             * what its role needs), and the --set of security keys with it. */
            if (cfg.security.curve) {
                args[na++] = "--security", args[na++] = (char *)config;
                for (int j = 0; j < nsets; j++)
                    if (strncmp(sets[j] + strspn(sets[j], " \t"), "security.", 9) == 0)
                        args[na++] = "--set", args[na++] = (char *)sets[j];
            }
            args[na] = NULL;
        }
        if (start_child(c, args) != 0) {
            fprintf(stderr, "auxps cluster: cannot start process %d of %d: %s\n", i + 1, 1 + nodes + workers,
                    strerror(errno));
            for (int j = 0; j < i; j++)
                if (l.kids[j].pid > 0) kill(l.kids[j].pid, SIGKILL);
            l.nkids = i;
            while (reap(&l) > 0) usleep(10000);
            goto done;
        }
        /* Named by pid: node and worker ids are given by the coordinator in order of arrival. */
        snprintf(c->name, sizeof c->name, "%s:%d", i == 0 ? "coord" : i <= nodes ? "ps" : "worker", (int)c->pid);
        if (i > 0) snprintf(c->prefix, sizeof c->prefix, "[%s] ", c->name);
        l.nkids = i + 1;
    }
    fprintf(stderr, "[cluster] coordinator at %s, %d nodes, %d workers (%d threads each); processes:", endpoint, nodes,
            workers, threads);
    for (int i = 0; i < l.nkids; i++) fprintf(stderr, " [%s]", l.kids[i].name);
    fprintf(stderr, "\n");
    supervise(&l);
    for (int i = 0; i < l.nkids; i++) describe_exit(&l.kids[i]);
    const int st = l.kids[0].status;
    status = WIFEXITED(st) ? WEXITSTATUS(st) : WIFSIGNALED(st) ? 128 + WTERMSIG(st) : 1;
done:
    for (int i = 0; i < l.nkids; i++) {
        if (l.kids[i].so.fd >= 0) close(l.kids[i].so.fd);
        if (l.kids[i].se.fd >= 0) close(l.kids[i].se.fd);
    }
    free(l.kids);
    close(l.sigfd);
    sigprocmask(SIG_SETMASK, &old, NULL);
    return status;
}
