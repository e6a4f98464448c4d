/* test_bench.c - `auxps bench --transport` as a user runs it: the real program (path from
 * AUXPS_BIN, default build/auxps) started as a process, its JSON lines parsed and counted. The
 * machine is shared and noisy, so nothing here asserts a speed: only that every configuration
 * (1 and 4 workers against 1 and 2 nodes, bare and auxps) was measured once, with positive
 * rates whose fields agree with each other, and that the process exited 0. Usage errors exit 2.
 *
 * Every wait has a deadline (CHILD_TIMEOUT_S); the suite's .fini kills a child that a failed
 * assertion left running. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "model.h"

extern char **environ;

enum { CHILD_TIMEOUT_S = 240, MAX_OUTPUT = 1 << 20 };

static pid_t child_pid = -1; /* for .fini, if an assertion fails while the child runs */

static void teardown(void) {
    if (child_pid > 0) {
        kill(child_pid, SIGKILL);
        waitpid(child_pid, NULL, 0);
        child_pid = -1;
    }
}

TestSuite(bench, .fini = teardown, .timeout = 300);

/* ---- the child process ---- */

typedef struct {
    char *buf;
    size_t len;
    int fd; /* read end, -1 at EOF */
} stream_t;

typedef struct {
    stream_t out, err;
    int status;   /* exit status, or -1 if killed by a signal */
    int termsig;
} proc_t;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void append(stream_t *s, const char *p, size_t n) {
    cr_assert_leq(s->len + n, (size_t)MAX_OUTPUT, "child output over %d bytes", MAX_OUTPUT);
    s->buf = realloc(s->buf, s->len + n + 1);
    cr_assert_not_null(s->buf);
    memcpy(s->buf + s->len, p, n);
    s->len += n;
    s->buf[s->len] = '\0';
}

/* Runs AUXPS_BIN with args (NULL-terminated, without argv[0]) to completion, stdout and stderr
 * captured; kills it after CHILD_TIMEOUT_S. */
static void run(proc_t *p, const char *const args[]) {
    memset(p, 0, sizeof *p);
    const char *bin = getenv("AUXPS_BIN"), *argv[16];
    int n = 0;
    argv[n++] = bin != NULL && bin[0] ? bin : "build/auxps";
    for (int i = 0; args[i] != NULL && n < 15; i++) argv[n++] = args[i];
    argv[n] = NULL;
    int po[2], pe[2];
    cr_assert_eq(pipe2(po, O_CLOEXEC), 0, "pipe: %s", strerror(errno));
    cr_assert_eq(pipe2(pe, O_CLOEXEC), 0, "pipe: %s", strerror(errno));
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, po[1], 1);
    posix_spawn_file_actions_adddup2(&fa, pe[1], 2);
    pid_t pid;
    int rc = posix_spawn(&pid, argv[0], &fa, NULL, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(po[1]);
    close(pe[1]);
    cr_assert_eq(rc, 0, "cannot start %s: %s (build it, or set AUXPS_BIN)", argv[0], strerror(rc));
    child_pid = pid;
    p->out.fd = po[0];
    p->err.fd = pe[0];
    append(&p->out, "", 0);
    append(&p->err, "", 0);
    const double deadline = now_s() + CHILD_TIMEOUT_S;
    while (p->out.fd >= 0 || p->err.fd >= 0) {
        struct pollfd fds[2];
        stream_t *ss[2];
        int nf = 0;
        if (p->out.fd >= 0) fds[nf] = (struct pollfd){p->out.fd, POLLIN, 0}, ss[nf++] = &p->out;
        if (p->err.fd >= 0) fds[nf] = (struct pollfd){p->err.fd, POLLIN, 0}, ss[nf++] = &p->err;
        double left = deadline - now_s();
        cr_assert_gt(left, 0, "auxps did not finish within %d s; stdout:\n%s\nstderr:\n%s", CHILD_TIMEOUT_S,
                     p->out.buf, p->err.buf);
        int r = poll(fds, (nfds_t)nf, (int)(left * 1000) + 1);
        if (r < 0 && errno == EINTR) continue;
        cr_assert_geq(r, 0, "poll: %s", strerror(errno));
        for (int i = 0; i < nf; i++) {
            if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            char chunk[65536];
            ssize_t k = read(fds[i].fd, chunk, sizeof chunk);
            if (k < 0 && errno == EINTR) continue;
            if (k <= 0) {
                close(ss[i]->fd);
                ss[i]->fd = -1;
            } else {
                append(ss[i], chunk, (size_t)k);
            }
        }
    }
    int st = 0;
    while (waitpid(pid, &st, 0) < 0) cr_assert_eq(errno, EINTR, "waitpid: %s", strerror(errno));
    child_pid = -1;
    p->status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    p->termsig = WIFSIGNALED(st) ? WTERMSIG(st) : 0;
}

#define RUN(p, ...) run((p), (const char *const[]){__VA_ARGS__, NULL})

static void proc_free(proc_t *p) {
    free(p->out.buf);
    free(p->err.buf);
}

/* The process exited with status, with no signal and no sanitizer report. */
static void expect_exit(const proc_t *p, int status) {
    cr_assert_eq(p->termsig, 0, "auxps was killed by signal %d (%s); stderr:\n%s", p->termsig,
                 strsignal(p->termsig), p->err.buf);
    cr_assert(strstr(p->err.buf, "Sanitizer") == NULL && strstr(p->err.buf, "runtime error:") == NULL,
              "sanitizer report:\n%s", p->err.buf);
    cr_assert_eq(p->status, status, "exit status %d, expected %d; stdout:\n%s\nstderr:\n%s", p->status, status,
                 p->out.buf, p->err.buf);
}

/* ---- JSON lines ---- */

/* The number after "key": in the line [l, eol); fails the test if it is missing. */
static double num(const char *l, const char *eol, const char *key) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *k = strstr(l, pat);
    cr_assert(k != NULL && k < eol, "no %s in: %.*s", key, (int)(eol - l), l);
    char *end;
    double v = strtod(k + strlen(pat), &end);
    cr_assert(end != k + strlen(pat) && (*end == ',' || *end == '}'), "%s is not a number in: %.*s", key,
              (int)(eol - l), l);
    return v;
}

static int has(const char *l, const char *eol, const char *text) {
    const char *k = strstr(l, text);
    return k != NULL && k < eol;
}

/* ---- tests ---- */

Test(bench, transport_measures_every_configuration_bare_and_auxps_with_positive_rates) {
    model_spec_t sp;
    model_spec_default(&sp);
    model_t *m = model_new(&sp, 1);
    cr_assert_not_null(m);
    const double params = (double)model_num_params(m);
    model_destroy(&m);

    proc_t p;
    RUN(&p, "bench", "--transport", "--seconds", "0.3");
    expect_exit(&p, 0);
    int seen[2][5][3] = {{{0}}}, lines = 0; /* [auxps?][workers][nodes] */
    double bare_rate[5][3] = {{0}};
    for (const char *l = p.out.buf; *l; lines++) {
        const char *eol = strchr(l, '\n');
        cr_assert_not_null(eol, "unterminated line: %s", l);
        cr_assert(l[0] == '{' && eol[-1] == '}', "not a JSON object: %.*s", (int)(eol - l), l);
        cr_assert(has(l, eol, "\"bench\":\"transport\""), "%.*s", (int)(eol - l), l);
        const int auxps = has(l, eol, "\"path\":\"auxps\"");
        cr_assert(auxps || has(l, eol, "\"path\":\"bare\""), "no path: %.*s", (int)(eol - l), l);
        const int w = (int)num(l, eol, "workers"), s = (int)num(l, eol, "nodes");
        cr_assert((w == 1 || w == 4) && (s == 1 || s == 2), "workers %d, nodes %d", w, s);
        seen[auxps][w][s]++;
        cr_assert_eq(num(l, eol, "params"), params, "params: %.*s", (int)(eol - l), l);
        cr_assert_eq(num(l, eol, "bytes"), 4 * params);
        const double rounds = num(l, eol, "rounds"), rate = num(l, eol, "rounds_per_s");
        const double secs = num(l, eol, "seconds");
        cr_assert(rounds >= w && isfinite(rate) && rate > 0 && secs > 0, "%.*s", (int)(eol - l), l);
        /* The fields agree with each other (to the rounding of the printed values). */
        cr_assert(fabs(rate - rounds / secs) <= 0.01 * rate + 0.1, "rate %g, rounds %g in %g s", rate, rounds, secs);
        cr_assert(fabs(num(l, eol, "mb_per_s") - rate * 8 * params / 1e6) <= 0.001 * rate * 8 * params / 1e6 + 0.1);
        cr_assert(fabs(num(l, eol, "ms_per_round") - 1000.0 * w / rate) <= 0.01 * 1000.0 * w / rate + 0.001);
        if (auxps) {
            cr_assert_gt(seen[0][w][s], 0, "the auxps line of %d workers, %d nodes came before its bare line", w, s);
            const double ratio = num(l, eol, "ratio_to_bare");
            cr_assert(fabs(ratio - rate / bare_rate[w][s]) <= 0.01 * ratio + 0.001, "ratio %g of %g / %g", ratio,
                      rate, bare_rate[w][s]);
        } else {
            cr_assert(!has(l, eol, "ratio_to_bare"), "a bare line with a ratio: %.*s", (int)(eol - l), l);
            bare_rate[w][s] = rate;
        }
        l = eol + 1;
    }
    cr_assert_eq(lines, 8, "%d lines:\n%s", lines, p.out.buf);
    for (int a = 0; a < 2; a++)
        for (int w = 1; w <= 4; w += 3)
            for (int s = 1; s <= 2; s++)
                cr_assert_eq(seen[a][w][s], 1, "%s, %d workers, %d nodes: %d lines", a ? "auxps" : "bare", w, s,
                             seen[a][w][s]);
    cr_assert_not_null(strstr(p.err.buf, "auxps/bare"), "no table on stderr:\n%s", p.err.buf);
    proc_free(&p);
}

Test(bench, transport_usage_errors_exit_2_naming_the_argument) {
    const char *bad[][2] = {{"--seconds", "0"}, {"--seconds", "abc"}, {"--seconds", "1e9"}, {"--steps", "5"}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        proc_t p;
        RUN(&p, "bench", "--transport", bad[i][0], bad[i][1]);
        expect_exit(&p, 2);
        cr_assert_eq(p.out.len, 0, "stdout: %s", p.out.buf);
        const char *named = strcmp(bad[i][0], "--seconds") == 0 ? bad[i][1] : bad[i][0];
        cr_assert_not_null(strstr(p.err.buf, named), "stderr does not name '%s':\n%s", named, p.err.buf);
        proc_free(&p);
    }
}
