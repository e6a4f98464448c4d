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
#include "util.h"

enum { CHILD_TIMEOUT_S = 240 };

/* Kills a child that a failed assertion left running. */
static void teardown(void) { util_proc_kill_all(); }

TestSuite(bench, .fini = teardown, .timeout = 300);

/* ---- the child process (tests/util.h) ---- */

typedef util_proc_t proc_t;

/* Runs auxps to completion, killing it after CHILD_TIMEOUT_S. */
#define RUN(p, ...) util_proc_run((p), (const char *const[]){__VA_ARGS__, NULL}, CHILD_TIMEOUT_S)

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
    util_expect_exit(&p, 0);
    int seen[2][5][3] = {{{0}}}, lines = 0; /* [auxps?][workers][nodes] */
    double bare_rate[5][3] = {{0}};
    for (const char *l = p.out.buf; *l; lines++) {
        const char *eol = strchr(l, '\n');
        cr_assert_not_null(eol, "unterminated line: %s", l);
        cr_assert(l[0] == '{' && eol[-1] == '}', "not a JSON object: %.*s", (int)(eol - l), l);
        cr_assert(has(l, eol, "\"bench\":\"transport\""), "%.*s", (int)(eol - l), l);
        cr_assert(has(l, eol, "\"curve\":false}"), "%.*s", (int)(eol - l), l);
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
    util_proc_free(&p);
}

/* --curve: the same eight lines, every one marked CURVE, and the nodes still applied exactly
 * the pushes they acknowledged (the bench checks that itself, else it exits 1). Without the
 * flag every line says false (the test above ran it). */
Test(bench, transport_with_curve_measures_every_configuration_over_curve) {
    proc_t p;
    RUN(&p, "bench", "--transport", "--seconds", "0.2", "--curve");
    util_expect_exit(&p, 0);
    int lines = 0;
    for (const char *l = p.out.buf; *l; lines++) {
        const char *eol = strchr(l, '\n');
        cr_assert_not_null(eol);
        cr_assert(has(l, eol, "\"curve\":true}"), "%.*s", (int)(eol - l), l);
        cr_assert_gt(num(l, eol, "rounds_per_s"), 0);
        l = eol + 1;
    }
    cr_assert_eq(lines, 8, "%s", p.out.buf);
    cr_assert_not_null(strstr(p.err.buf, "every link CURVE"), "%s", p.err.buf);
    util_proc_free(&p);
}

Test(bench, transport_usage_errors_exit_2_naming_the_argument) {
    const char *bad[][2] = {{"--seconds", "0"}, {"--seconds", "abc"}, {"--seconds", "1e9"}, {"--steps", "5"}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        proc_t p;
        RUN(&p, "bench", "--transport", bad[i][0], bad[i][1]);
        util_expect_exit(&p, 2);
        cr_assert_eq(p.out.len, 0, "stdout: %s", p.out.buf);
        const char *named = strcmp(bad[i][0], "--seconds") == 0 ? bad[i][1] : bad[i][0];
        cr_assert_not_null(strstr(p.err.buf, named), "stderr does not name '%s':\n%s", named, p.err.buf);
        util_proc_free(&p);
    }
}
