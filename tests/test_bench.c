/* test_bench.c - `auxps bench` (compute, --sgemm, --conv, --table, --transport) and the suite
 * bench/run as a user runs them: the real program (path from AUXPS_BIN, default build/auxps)
 * and /bin/sh started as processes, their JSON lines parsed and counted. The machine is shared
 * and noisy, so nothing here asserts a speed: only that every configuration was measured once,
 * with positive rates whose fields agree with each other, that the FLOP counts are the
 * networks' (counted independently), and that the process exited 0. Usage errors exit 2.
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

#include "bench_compute.h"
#include "dconv.h"
#include "layers.h"
#include "model.h"
#include "util.h"

#include <jansson.h>

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
        cr_assert_eq(num(l, eol, "bytes_per_round"), 8 * params, "f32: the vector both ways");
        cr_assert(has(l, eol, "\"encoding\":\"f32\""), "%.*s", (int)(eol - l), l);
        const double rounds = num(l, eol, "rounds"), rate = num(l, eol, "rounds_per_s");
        const double secs = num(l, eol, "seconds");
        cr_assert(rounds >= w && isfinite(rate) && rate > 0 && secs > 0, "%.*s", (int)(eol - l), l);
        /* two runs of S / 2 (bare, auxps, auxps, bare), each timed until its last round ends */
        cr_assert_geq(secs, 0.3, "%.*s", (int)(eol - l), l);
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

/* --coded: k-bit pulls and q8 pushes through the real node code (which checks that it applied
 * every acknowledged push, else the bench exits 1), at most a quarter of the f32 bytes a round. */
Test(bench, transport_coded_moves_at_most_a_quarter_of_the_f32_bytes) {
    proc_t p;
    RUN(&p, "bench", "--transport", "--seconds", "0.2", "--coded");
    util_expect_exit(&p, 0);
    int lines = 0;
    for (const char *l = p.out.buf; *l; lines++) {
        const char *eol = strchr(l, '\n');
        cr_assert_not_null(eol);
        cr_assert(has(l, eol, "\"encoding\":\"kbit+q8\""), "%.*s", (int)(eol - l), l);
        const double f32 = 2 * num(l, eol, "bytes"), coded = num(l, eol, "bytes_per_round");
        cr_assert(coded > 0 && coded <= 0.25 * f32, "%g bytes a round against %g in f32", coded, f32);
        const double rate = num(l, eol, "rounds_per_s");
        cr_assert_gt(rate, 0);
        cr_assert(fabs(num(l, eol, "mb_per_s") - rate * coded / 1e6) <= 0.001 * rate * coded / 1e6 + 0.1);
        l = eol + 1;
    }
    cr_assert_eq(lines, 8, "%s", p.out.buf);
    cr_assert_not_null(strstr(p.err.buf, "pushed as q8"), "%s", p.err.buf);
    util_proc_free(&p);
}

/* --workers and --nodes choose the configurations: here 2 workers against 2 nodes alone, a pair
 * the default matrix does not run; and 1 worker against 1 and 2 nodes, nodes outermost. */
Test(bench, transport_measures_the_configurations_chosen) {
    const char *const args[][4] = {{"--workers", "2", "--nodes", "2"}, {"--workers", "1", "--nodes", "2,1"}};
    const int want[][2][2] = {{{2, 2}, {0, 0}}, {{1, 2}, {1, 1}}}, lines_want[] = {2, 4};
    for (int a = 0; a < 2; a++) {
        proc_t p;
        RUN(&p, "bench", "--transport", "--seconds", "0.2", args[a][0], args[a][1], args[a][2], args[a][3]);
        util_expect_exit(&p, 0);
        int lines = 0;
        for (const char *l = p.out.buf; *l; lines++) {
            const char *eol = strchr(l, '\n');
            cr_assert_not_null(eol);
            cr_assert(lines < lines_want[a], "too many lines:\n%s", p.out.buf);
            const int *c = want[a][lines / 2];
            cr_assert(num(l, eol, "workers") == c[0] && num(l, eol, "nodes") == c[1], "line %d: %.*s", lines,
                      (int)(eol - l), l);
            cr_assert(has(l, eol, lines % 2 ? "\"path\":\"auxps\"" : "\"path\":\"bare\""), "%.*s", (int)(eol - l), l);
            cr_assert_gt(num(l, eol, "rounds_per_s"), 0);
            l = eol + 1;
        }
        cr_assert_eq(lines, lines_want[a], "%s", p.out.buf);
        util_proc_free(&p);
    }
}

Test(bench, transport_usage_errors_exit_2_naming_the_argument) {
    const char *bad[][2] = {{"--seconds", "0"}, {"--seconds", "abc"}, {"--seconds", "1e9"}, {"--steps", "5"},
                            {"--workers", "5"}, {"--workers", "1,1"}, {"--workers", "2,"}, {"--nodes", "0"},
                            {"--nodes", "3"}, {"--nodes", "x"}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        proc_t p;
        RUN(&p, "bench", "--transport", bad[i][0], bad[i][1]);
        util_expect_exit(&p, 2);
        cr_assert_eq(p.out.len, 0, "stdout: %s", p.out.buf);
        const char *named = strcmp(bad[i][0], "--steps") != 0 ? bad[i][1] : bad[i][0];
        cr_assert_not_null(strstr(p.err.buf, named), "stderr does not name '%s':\n%s", named, p.err.buf);
        util_proc_free(&p);
    }
    proc_t p;
    RUN(&p, "bench", "--transport", "--nodes");
    util_expect_exit(&p, 2);
    cr_assert_not_null(strstr(p.err.buf, "'--nodes' needs a value"), "%s", p.err.buf);
    util_proc_free(&p);
}

/* ---- compute, sgemm, table, the suite ---- */

/* Multiply-adds of one 1x28x28 image's forward pass, counted by hand from METHOD.md's layer
 * list (stem 28*28*16*9 = 112,896; ...) and, separately, by bench/pytorch_bench.py from the
 * F.conv2d and F.linear calls of the PyTorch model: [resnet20?][aux?]. METHOD.md rounds them to
 * 9.3 M, 10.4 M, 31 M and 33 M. */
static const double method_macs[2][2] = {{9345920, 10350080}, {31021952, 33230336}};
static const double stem_macs = 112896;

/* Parses every line of text as a JSON object into a new array; fails the test on any other
 * line. */
static json_t *json_lines(const char *text) {
    json_t *arr = json_array();
    cr_assert_not_null(arr);
    for (const char *l = text; *l;) {
        const char *eol = strchr(l, '\n');
        cr_assert_not_null(eol, "unterminated line: %s", l);
        json_error_t e;
        json_t *o = json_loadb(l, (size_t)(eol - l), 0, &e);
        cr_assert(json_is_object(o), "not a JSON object (%s): %.*s", e.text, (int)(eol - l), l);
        json_array_append_new(arr, o);
        l = eol + 1;
    }
    return arr;
}

static const char *jstr(const json_t *o, const char *k) {
    json_t *v = json_object_get(o, k);
    cr_assert(json_is_string(v), "no string %s in %s", k, json_dumps(o, JSON_COMPACT));
    return json_string_value(v);
}

/* Checks one compute line (either implementation) and returns its model index (0 resnet8, 1
 * resnet20). */
static int check_compute(const json_t *o, int batch, int threads) {
    const char *model = jstr(o, "model");
    const int r20 = strcmp(model, "resnet20") == 0;
    cr_assert(r20 || strcmp(model, "resnet8") == 0, "model %s", model);
    cr_assert_eq(util_jnum(o, "blocks"), r20 ? 3 : 1);
    cr_assert_eq(util_jnum(o, "wbits"), util_jnum(o, "abits"));
    cr_assert_eq(util_jnum(o, "batch"), batch);
    cr_assert_eq(util_jnum(o, "threads"), threads);
    const int aux = json_is_true(json_object_get(o, "aux"));
    cr_assert(aux || json_is_false(json_object_get(o, "aux")));
    cr_assert_eq(util_jnum(o, "fwd_macs_per_image"), method_macs[r20][aux], "%s aux %d: %.0f MACs", model, aux,
                 util_jnum(o, "fwd_macs_per_image"));
    const double steps = util_jnum(o, "steps"), secs = util_jnum(o, "seconds"), ips = util_jnum(o, "images_per_s");
    cr_assert(steps >= 1 && secs > 0 && isfinite(ips) && ips > 0, "%s", json_dumps(o, JSON_COMPACT));
    /* images/s = steps * batch / seconds, to the rounding of the printed seconds (1 ms) */
    cr_assert(fabs(ips * secs - steps * batch) <= ips * 0.0006 + 0.01 * steps * batch, "%s",
              json_dumps(o, JSON_COMPACT));
    return r20;
}

Test(bench, compute_measures_every_configuration_and_counts_the_flops_of_the_networks) {
    proc_t p;
    RUN(&p, "bench", "--model", "resnet8,resnet20", "--bits", "32,2", "--aux", "on,off", "--batch", "4", "--threads",
        "1", "--steps", "1", "--warmup", "0");
    util_expect_exit(&p, 0);
    json_t *lines = json_lines(p.out.buf);
    cr_assert_eq(json_array_size(lines), 8, "%zu lines:\n%s", json_array_size(lines), p.out.buf);
    int seen[2][2][33] = {{{0}}};
    size_t i;
    json_t *o;
    json_array_foreach(lines, i, o) {
        cr_assert_str_eq(jstr(o, "bench"), "compute");
        cr_assert_str_eq(jstr(o, "impl"), "auxps");
        const int r20 = check_compute(o, 4, 1), aux = json_is_true(json_object_get(o, "aux"));
        const int bits = (int)util_jnum(o, "wbits");
        cr_assert(bits == 32 || bits == 2, "bits %d", bits);
        cr_assert_eq(util_jnum(o, "steps"), 1);
        const double macs = method_macs[r20][aux], flops = util_jnum(o, "flops_per_image");
        cr_assert_eq(flops, 6 * macs - 2 * stem_macs);
        const double g = util_jnum(o, "gflops"), want = flops * util_jnum(o, "images_per_s") / 1e9;
        cr_assert(fabs(g - want) <= 0.001 * want + 0.001, "gflops %g, flops * images/s %g", g, want);
        /* memory: the model's activation arena, and the process's peak resident set holds it */
        const double arena = util_jnum(o, "arena_bytes"), rss_kb = util_jnum(o, "peak_rss_kb");
        cr_assert(arena > 0 && rss_kb * 1024 > arena, "arena %.0f bytes, peak RSS %.0f kB", arena, rss_kb);
        seen[r20][aux][bits]++;
    }
    for (int r = 0; r < 2; r++)
        for (int a = 0; a < 2; a++)
            cr_assert(seen[r][a][32] == 1 && seen[r][a][2] == 1, "resnet%d aux %d: %d FP32, %d W2A2 lines", r ? 20 : 8,
                      a, seen[r][a][32], seen[r][a][2]);
    json_decref(lines);
    util_proc_free(&p);
}

Test(bench, flops_of_the_default_network_match_method_md) {
    model_spec_t sp;
    model_spec_default(&sp);
    double macs, stem;
    cr_assert_eq(bench_flops(&sp, &macs, &stem), 6 * method_macs[0][1] - 2 * stem_macs);
    cr_assert_eq(macs, method_macs[0][1]);
    cr_assert_eq(stem, stem_macs);
    sp.arch = ARCH_MLP;
    cr_assert_eq(bench_flops(&sp, &macs, &stem), 0, "an MLP is not counted");
}

Test(bench, sgemm_reports_the_fastest_call_per_thread_count) {
    proc_t p;
    RUN(&p, "bench", "--sgemm", "--threads", "1,2", "--seconds", "0.05");
    util_expect_exit(&p, 0);
    json_t *lines = json_lines(p.out.buf);
    cr_assert_eq(json_array_size(lines), 2, "%s", p.out.buf);
    for (int t = 1; t <= 2; t++) {
        const json_t *o = json_array_get(lines, (size_t)t - 1);
        cr_assert_str_eq(jstr(o, "bench"), "sgemm");
        cr_assert_eq(util_jnum(o, "threads"), t);
        cr_assert_eq(util_jnum(o, "n"), BENCH_SGEMM_N);
        cr_assert_geq(util_jnum(o, "calls"), 3);
        const double peak = util_jnum(o, "gflops"), mean = util_jnum(o, "gflops_mean");
        cr_assert(mean > 0 && isfinite(peak) && peak >= mean * 0.999, "peak %g, mean %g", peak, mean);
        cr_assert(strlen(jstr(o, "kernels")) > 0, "no OpenBLAS kernels named: %s", p.out.buf);
    }
    json_decref(lines);
    util_proc_free(&p);
}

/* --conv: every ResNet-8 convolution, forward and backward, both ways where the CPU has the
 * direct kernels, with rates that agree with the times, the kernels named, and the path
 * training takes as layers.c chooses it. */
Test(bench, conv_times_every_resnet8_convolution_both_ways) {
    cr_assert_eq(unsetenv("AUXPS_DCONV"), 0);
    proc_t p;
    RUN(&p, "bench", "--conv", "--seconds", "0.01");
    util_expect_exit(&p, 0);
    json_t *lines = json_lines(p.out.buf);
    cr_assert_eq(json_array_size(lines), 20, "10 layers, forward and backward: %s", p.out.buf);
    const int direct = dconv_enabled();
    int on_direct = 0;
    for (size_t i = 0; i < 20; i++) {
        const json_t *o = json_array_get(lines, i);
        cr_assert_str_eq(jstr(o, "bench"), "conv");
        cr_assert_str_eq(jstr(o, "kernels"), dconv_kernels());
        conv_shape_t s;
        const int h = (int)util_jnum(o, "h"), k = (int)util_jnum(o, "k");
        conv_shape_init(&s, 128, (int)util_jnum(o, "cin"), h, h, (int)util_jnum(o, "cout"), k,
                        (int)util_jnum(o, "stride"), (k - 1) / 2);
        cr_assert_str_eq(jstr(o, "training"), conv_uses_direct(&s) ? "direct" : "sgemm", "line %zu", i);
        on_direct += conv_uses_direct(&s);
        cr_assert_str_eq(jstr(o, "pass"), i % 2 ? "backward" : "forward");
        cr_assert_eq(util_jnum(o, "batch"), 128);
        const double ms = util_jnum(o, "sgemm_ms"), dms = util_jnum(o, "direct_ms");
        const double flop = 2.0 * 128 * util_jnum(o, "cout") * util_jnum(o, "cin") * k * k *
                            pow(h / util_jnum(o, "stride"), 2) * (i % 2 ? 2 : 1);
        const double g = util_jnum(o, "sgemm_gflops");
        cr_assert(ms > 0 && fabs(flop / (ms * 1e-3) / 1e9 - g) < 0.1 + 0.01 * g, "line %zu: %g ms, %g GFLOP/s", i, ms,
                  g);
        if (direct)
            cr_assert(dms > 0 && fabs(ms / dms - util_jnum(o, "speedup")) < 0.01 + 0.01 * util_jnum(o, "speedup"),
                      "line %zu: %g against %g ms, speedup %g", i, ms, dms, util_jnum(o, "speedup"));
        else
            cr_assert_eq(dms, 0.0, "no direct kernels on this CPU, yet a time");
    }
    cr_assert(direct ? on_direct > 0 : on_direct == 0, "%d passes on the direct kernels", on_direct);
    json_decref(lines);
    util_proc_free(&p);
}

/* The line of text that contains all of the given substrings (NULL-terminated), or NULL. */
static const char *line_with(const char *text, const char *const subs[]) {
    for (const char *l = text; *l;) {
        const char *eol = strchr(l, '\n');
        if (eol == NULL) eol = l + strlen(l);
        int all = 1;
        for (int i = 0; subs[i] != NULL && all; i++) {
            const char *k = strstr(l, subs[i]);
            all = k != NULL && k < eol;
        }
        if (all) return l;
        l = *eol ? eol + 1 : eol;
    }
    return NULL;
}

Test(bench, table_pairs_each_configuration_with_pytorch_and_the_peak) {
    char dir[64], path[128];
    util_tmpdir_make(dir, "bench_table");
    snprintf(path, sizeof path, "%s/r.jsonl", dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs("{\"bench\":\"load\",\"when\":\"start\",\"cpus\":2,\"loadavg_1min\":3.5}\n"
          "{\"bench\":\"sgemm\",\"impl\":\"openblas\",\"threads\":1,\"n\":1024,\"gflops\":40.0}\n"
          "not json: skipped\n"
          "{\"bench\":\"compute\",\"impl\":\"auxps\",\"model\":\"resnet8\",\"wbits\":2,\"abits\":2,\"aux\":true,"
          "\"batch\":128,\"threads\":1,\"images_per_s\":200.0,\"gflops\":12.5}\n"
          "{\"bench\":\"compute\",\"impl\":\"pytorch\",\"malloc\":\"tuned\",\"torch\":\"9.9\",\"model\":\"resnet8\","
          "\"wbits\":2,\"abits\":2,\"aux\":true,\"batch\":128,\"threads\":1,\"images_per_s\":100.0}\n"
          "{\"bench\":\"compute\",\"impl\":\"pytorch\",\"malloc\":\"untuned\",\"torch\":\"9.9\",\"model\":\"resnet8\","
          "\"wbits\":2,\"abits\":2,\"aux\":true,\"batch\":128,\"threads\":1,\"images_per_s\":50.0}\n"
          "{\"bench\":\"compute\",\"impl\":\"auxps\",\"model\":\"resnet20\",\"wbits\":32,\"abits\":32,\"aux\":false,"
          "\"batch\":32,\"threads\":2,\"images_per_s\":30.0,\"gflops\":5.0}\n"
          "{\"bench\":\"sgemm\",\"impl\":\"openblas\",\"kernels\":\"SkylakeX\",\"threads\":1,\"n\":1024,"
          "\"gflops\":50.0}\n"
          "{\"bench\":\"cluster\",\"mode\":\"cluster\",\"config\":\"c.ini\",\"workers\":2,\"threads\":1,\"steps\":60,"
          "\"images_per_s\":321.0,\"wall_s\":40.5}\n"
          "{\"bench\":\"load\",\"when\":\"end\",\"cpus\":2,\"loadavg_1min\":4.25}\n",
          f);
    cr_assert_eq(fclose(f), 0);
    proc_t p;
    RUN(&p, "bench", "--table", path);
    util_expect_exit(&p, 0);
    /* AuxPS 200 against 100 and 50: ratios 2 and 4; 12.5 GFLOP/s of the run's peak 50: 25%. */
    cr_assert_not_null(line_with(p.out.buf, (const char *const[]){"resnet8", "W2A2", " 128 ", "200.0", "12.50", " 25 ",
                                                                   "100.0", "50.0", "2.00", "4.00", NULL}),
                       "%s", p.out.buf);
    /* A configuration PyTorch did not measure has dashes, and no peak was measured at 2 threads. */
    const char *r20 = line_with(p.out.buf, (const char *const[]){"resnet20", "FP32", "off", "30.0", "5.00", NULL});
    cr_assert_not_null(r20, "%s", p.out.buf);
    cr_assert_eq(strchr(r20, '\n') - r20, strchr(line_with(p.out.buf, (const char *const[]){"resnet8", "W2A2", NULL}), '\n') -
                 line_with(p.out.buf, (const char *const[]){"resnet8", "W2A2", NULL}), "columns differ:\n%s", p.out.buf);
    cr_assert_not_null(line_with(p.out.buf, (const char *const[]){"OpenBLAS SkylakeX kernels", "1 thread 50.0 GFLOP/s",
                                                                   NULL}), "%s", p.out.buf);
    cr_assert_not_null(line_with(p.out.buf, (const char *const[]){"PyTorch 9.9", NULL}), "%s", p.out.buf);
    cr_assert_not_null(line_with(p.out.buf, (const char *const[]){"cluster", "321.0", "40.5", NULL}), "%s", p.out.buf);
    cr_assert_not_null(line_with(p.out.buf, (const char *const[]){"2 CPUs", "3.50", "4.25", NULL}), "%s", p.out.buf);
    util_proc_free(&p);
    util_tmpdir_remove(dir);
}

Test(bench, compute_usage_errors_exit_2_naming_the_argument) {
    const char *bad[][2] = {{"--bits", "9"},        {"--bits", "2,,4"},     {"--bits", ",2"},
                            {"--model", "resnet9"}, {"--aux", "maybe"},     {"--batch", "0"},
                            {"--threads", "x"},     {"--seconds", "-1"},    {"--warmup-seconds", "abc"},
                            {"--steps", "0"},       {"--frobnicate", "1"}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        proc_t p;
        RUN(&p, "bench", bad[i][0], bad[i][1]);
        util_expect_exit(&p, 2);
        cr_assert_eq(p.out.len, 0, "stdout: %s", p.out.buf);
        cr_assert_not_null(strstr(p.err.buf, bad[i][0]), "stderr does not name '%s':\n%s", bad[i][0], p.err.buf);
        util_proc_free(&p);
    }
    proc_t p;
    RUN(&p, "bench", "--table", "/nonexistent/results.jsonl");
    util_expect_exit(&p, 1);
    cr_assert_not_null(strstr(p.err.buf, "/nonexistent/results.jsonl"), "%s", p.err.buf);
    util_proc_free(&p);
}

/* Runs bench/run on one small configuration with the given BENCH_PARTS (BENCH_OUT in a temp
 * dir) and returns its JSON lines; p keeps its output. */
static json_t *run_suite(proc_t *p, const char *parts) {
    char dir[64], out[128];
    util_tmpdir_make(dir, "bench_suite");
    snprintf(out, sizeof out, "%s/out.jsonl", dir);
    const char *env[][2] = {{"BENCH_QUICK", "1"},     {"BENCH_PARTS", parts},   {"BENCH_MODELS", "resnet8"},
                            {"BENCH_BITS", "2"},       {"BENCH_AUX", "on"},      {"BENCH_BATCHES", "8"},
                            {"BENCH_THREADS", "1"},    {"BENCH_SECONDS", "0.1"}, {"BENCH_WARMUP", "0"},
                            {"BENCH_SGEMM_SECONDS", "0.1"}, {"BENCH_OUT", out},  {"AUXPS_BIN", util_auxps_bin()}};
    for (size_t i = 0; i < sizeof env / sizeof *env; i++) cr_assert_eq(setenv(env[i][0], env[i][1], 1), 0);
    util_proc_start_prog(p, "/bin/sh", (const char *const[]){"bench/run", NULL});
    util_proc_finish((proc_t *[]){p}, 1, util_now_s() + CHILD_TIMEOUT_S);
    util_expect_exit(p, 0);
    /* With BENCH_OUT the JSON goes to the file and the table to stdout. */
    cr_assert_null(strchr(p->out.buf, '{'), "JSON on stdout:\n%s", p->out.buf);
    cr_assert_not_null(line_with(p->out.buf, (const char *const[]){"resnet8", "W2A2", " 8 ", NULL}), "no table row:\n%s",
                       p->out.buf);
    FILE *f = fopen(out, "r");
    cr_assert_not_null(f);
    char text[16384];
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = '\0';
    fclose(f);
    util_tmpdir_remove(dir);
    return json_lines(text);
}

/* Counts the suite's lines by kind, checking each: [0] load, [1] sgemm, [2] auxps, [3] PyTorch
 * tuned, [4] untuned, [5] conv; macs[0] AuxPS's multiply-adds, [1] and [2] PyTorch's. */
static void count_suite(const json_t *lines, int count[6], double macs[3]) {
    size_t i;
    json_t *o;
    json_array_foreach(lines, i, o) {
        const char *b = jstr(o, "bench");
        if (strcmp(b, "load") == 0) {
            count[0]++;
            cr_assert_gt(util_jnum(o, "cpus"), 0);
            cr_assert_geq(util_jnum(o, "loadavg_1min"), 0);
        } else if (strcmp(b, "sgemm") == 0) {
            count[1]++;
            cr_assert_eq(util_jnum(o, "threads"), 1);
            cr_assert_gt(util_jnum(o, "gflops"), 0);
        } else if (strcmp(b, "conv") == 0) {
            count[5]++;
            cr_assert_gt(util_jnum(o, "sgemm_ms"), 0);
        } else {
            cr_assert_str_eq(b, "compute", "unexpected line %s", json_dumps(o, JSON_COMPACT));
            check_compute(o, 8, 1);
            const char *impl = jstr(o, "impl");
            if (strcmp(impl, "auxps") == 0) {
                count[2]++;
                macs[0] = util_jnum(o, "fwd_macs_per_image");
                cr_assert_gt(util_jnum(o, "gflops"), 0);
            } else {
                cr_assert_str_eq(impl, "pytorch");
                const int t = strcmp(jstr(o, "malloc"), "tuned") == 0;
                cr_assert(t || strcmp(jstr(o, "malloc"), "untuned") == 0);
                count[t ? 3 : 4]++;
                macs[t ? 1 : 2] = util_jnum(o, "fwd_macs_per_image");
            }
        }
    }
}

/* The suite's compute part on one small configuration: every line is a JSON object of a known
 * kind with positive numbers, and the table follows. */
Test(bench, suite_writes_json_lines_and_the_table) {
    proc_t p;
    json_t *lines = run_suite(&p, "compute");
    int count[6] = {0};
    double macs[3] = {0};
    count_suite(lines, count, macs);
    cr_assert_eq(count[0], 2, "load at the start and the end");
    cr_assert_eq(count[1], 2, "sgemm before and after the compute part");
    cr_assert_eq(count[2], 1);
    cr_assert_eq(count[3] + count[4], 0, "PyTorch lines without the pytorch part");
    json_decref(lines);
    util_proc_free(&p);
}

/* The conv part: a line for each ResNet-8 convolution's forward and backward pass, and their
 * table. */
Test(bench, suite_runs_the_conv_part_and_prints_its_table) {
    proc_t p;
    json_t *lines = run_suite(&p, "compute,conv");
    int count[6] = {0};
    double macs[3] = {0};
    count_suite(lines, count, macs);
    cr_assert_eq(count[5], 20, "10 convolutions, forward and backward");
    cr_assert_not_null(strstr(p.out.buf, "conv: ResNet-8's convolutions"), "no conv table:\n%s", p.out.buf);
    json_decref(lines);
    util_proc_free(&p);
}

/* The PyTorch part beside it, where /usr/bin/python3 has torch (`make test` does not need it):
 * one tuned and one untuned line, whose own count of the multiply-adds agrees with AuxPS's. */
Test(bench, suite_runs_pytorch_tuned_and_untuned_beside_auxps) {
    /* find_spec does not import torch, which takes seconds. */
    if (system("/usr/bin/python3 -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec(\"torch\") is None)'"
               " >/dev/null 2>&1") != 0)
        cr_skip_test("/usr/bin/python3 has no torch (python3-torch): the suite measures AuxPS alone");
    proc_t p;
    json_t *lines = run_suite(&p, "compute,pytorch");
    int count[6] = {0};
    double macs[3] = {0};
    count_suite(lines, count, macs);
    cr_assert(count[2] == 1 && count[3] == 1 && count[4] == 1, "auxps %d, tuned %d, untuned %d lines", count[2],
              count[3], count[4]);
    cr_assert(macs[1] == macs[0] && macs[2] == macs[0], "MACs: AuxPS %.0f, PyTorch %.0f and %.0f", macs[0], macs[1],
              macs[2]);
    cr_assert_not_null(line_with(p.out.buf, (const char *const[]){"PyTorch", "tuned = MALLOC_MMAP_THRESHOLD_", NULL}),
                       "%s", p.out.buf);
    json_decref(lines);
    util_proc_free(&p);
}
