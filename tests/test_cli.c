/* test_cli.c - the auxps command as a user runs it: each test starts the real program (path from
 * AUXPS_BIN, default build/auxps) as a separate process, captures its stdout, stderr and exit
 * status, and checks what it printed and wrote. Covers short training runs (MLP and a tiny
 * ResNet with the auxiliary module) whose exported model `auxps eval` must score exactly as the
 * trainer did, `auxps info`, hostile configs, data and model files (an error naming the file,
 * exit 1, never a signal), usage errors, SIGINT during training, and `auxps bench`.
 *
 * Every wait has a deadline (CHILD_TIMEOUT_S); a child still running then is killed. The suite's
 * .fini kills a child a failed assertion left behind and removes the per-test temp dir. */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

enum { CHILD_TIMEOUT_S = 120 };

#define MLP_CONFIG "configs/fmnist-mlp-w2a2.ini"
#define RESNET_CONFIG "configs/fmnist-resnet8-w2a2-aux.ini"
#define FMNIST_DIR "/usr/share/datasets/fashion-mnist"

/* Each test runs in its own process, so this per-test state needs no locking. */
static char tmp_dir[64];

/* ---- temp dir ---- */

static void setup(void) { util_tmpdir_make(tmp_dir, "cli"); }

/* Kills a child a failed assertion left running. */
static void teardown(void) {
    util_proc_kill_all();
    util_tmpdir_remove(tmp_dir);
}

TestSuite(cli, .init = setup, .fini = teardown, .timeout = 300);

static const char *tpath(char buf[256], const char *name) {
    snprintf(buf, 256, "%s/%s", tmp_dir, name);
    return buf;
}

/* ---- child processes (tests/util.h) ---- */

typedef util_proc_t proc_t;

/* Reads both pipes until EOF on both, or until stdout holds a complete line containing `until`
 * (when not NULL), or the deadline. Returns 1 if `until` was seen. */
static int proc_pump(proc_t *p, double deadline, const char *until) {
    return util_proc_pump(&p, 1, deadline, until, 1);
}

/* Collects the rest of the output and the exit status; kills the child at the deadline. */
static void proc_finish(proc_t *p, double deadline) { util_proc_finish(&p, 1, deadline); }

/* Runs auxps to completion, killing it after CHILD_TIMEOUT_S. */
#define RUN(p, ...) util_proc_run((p), (const char *const[]){__VA_ARGS__, NULL}, CHILD_TIMEOUT_S)

static void expect_stderr_has(const proc_t *p, const char *needle) {
    cr_assert_not_null(strstr(p->err.buf, needle), "stderr lacks '%s':\n%s", needle, p->err.buf);
}

/* ---- output parsing ---- */

/* The first line of text starting with prefix (NULL if none). */
static const char *line_starting(const char *text, const char *prefix) {
    for (const char *l = text; l != NULL && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
        if (strncmp(l, prefix, strlen(prefix)) == 0) return l;
    return NULL;
}

/* needle inside the line at l (up to its newline), or NULL. */
static const char *in_line(const char *l, const char *needle) {
    const char *eol = strchr(l, '\n'), *k = strstr(l, needle);
    return k != NULL && (eol == NULL || k < eol) ? k : NULL;
}

/* The next line after l that starts with prefix. */
static const char *next_line_starting(const char *l, const char *prefix) {
    const char *eol = strchr(l, '\n');
    return eol != NULL ? line_starting(eol + 1, prefix) : NULL;
}

/* Parses "test_accuracy A (C/N)" somewhere in the line at l. */
static void parse_accuracy(const char *l, const char *what, double *acc, int *correct, int *total) {
    cr_assert_not_null(l, "no %s line", what);
    const char *a = in_line(l, "test_accuracy ");
    cr_assert(a != NULL, "%s line has no test_accuracy: %.200s", what, l);
    cr_assert_eq(sscanf(a, "test_accuracy %lf (%d/%d)", acc, correct, total), 3, "cannot parse %s line: %.200s",
                 what, l);
    cr_assert(*total > 0 && *correct >= 0 && *correct <= *total, "%s: %d/%d", what, *correct, *total);
    cr_assert(fabs(*acc - (double)*correct / *total) < 1e-4, "%s: %.4f is not %d/%d", what, *acc, *correct,
              *total);
}

/* The value after `key ` in the line at l, e.g. "loss_aux 2.29". */
static double field_after(const char *l, const char *key) {
    const char *k = in_line(l, key);
    cr_assert(k != NULL, "no '%s' in line: %.200s", key, l);
    char *end;
    double v = strtod(k + strlen(key), &end);
    cr_assert_neq(end, k + strlen(key), "no number after '%s': %.200s", key, l);
    return v;
}

static int file_size(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) return -1;
    return (int)st.st_size;
}

typedef struct {
    int correct, total;   /* from the trainer's "done:" line */
    double acc;
    long steps_done, steps_total;
} train_summary_t;

/* Checks the parts of a finished `auxps train` that every run shares: a header with the step
 * count, at least one progress line (img/s, loss_low, loss_aux, eta), "done:" and "exported
 * model" lines with the same count, and the written model. */
static void check_train_output(const proc_t *p, const char *model, train_summary_t *s) {
    const char *head = line_starting(p->out.buf, "auxps: ");
    cr_assert_not_null(head, "no header line:\n%s", p->out.buf);
    const char *st = strstr(head, " steps,");
    cr_assert_not_null(st);
    while (st > head && st[-1] != ' ') st--;
    s->steps_total = strtol(st, NULL, 10);
    cr_assert_gt(s->steps_total, 0);

    const char *prog = line_starting(p->out.buf, "epoch ");
    while (prog != NULL && in_line(prog, " img/s") == NULL) prog = next_line_starting(prog, "epoch ");
    cr_assert_not_null(prog, "no progress line:\n%s", p->out.buf);
    const char *ips = in_line(prog, " img/s");
    while (ips > prog && ips[-1] != ' ') ips--;
    cr_assert_gt(strtod(ips, NULL), 0.0, "img/s not positive: %.200s", prog);
    double loss = field_after(prog, "loss_low ");
    cr_assert(isfinite(loss) && loss > 0.0, "loss_low %g", loss);
    field_after(prog, "loss_aux ");
    cr_assert_not_null(in_line(prog, "| eta "), "no eta: %.200s", prog);

    cr_assert(strstr(p->out.buf, "done in") || strstr(p->out.buf, "stopped in"), "no end-of-epoch line:\n%s",
              p->out.buf);
    const char *done = line_starting(p->out.buf, "done: ");
    parse_accuracy(done, "done:", &s->acc, &s->correct, &s->total);
    s->steps_done = strtol(done + strlen("done: "), NULL, 10);
    cr_assert_not_null(in_line(done, model), "done: line lacks %s", model);

    double acc;
    int c, n;
    parse_accuracy(line_starting(p->out.buf, "exported model "), "exported model", &acc, &c, &n);
    cr_assert_not_null(strstr(p->out.buf, "from the file alone"));
    cr_assert_eq(c, s->correct, "the exported model scores %d, the trainer %d", c, s->correct);
    cr_assert_eq(n, s->total);
    cr_assert_gt(file_size(model), 96, "%s not written", model);
}

/* Runs `auxps eval model [--limit N]` and returns its count. */
static void eval_model(const char *model, const char *limit, int *correct, int *total) {
    proc_t p;
    if (limit != NULL) RUN(&p, "eval", model, "--limit", limit);
    else RUN(&p, "eval", model);
    util_expect_exit(&p, 0);
    double acc;
    parse_accuracy(line_starting(p.out.buf, "test_accuracy "), "eval", &acc, correct, total);
    cr_assert_not_null(strstr(p.out.buf, model));
    util_proc_free(&p);
}

/* A small W2A2 MLP export for the tests that need a real model file (about a second). */
static void train_small_mlp(const char *model) {
    char out[300];
    snprintf(out, sizeof out, "train.output=%s", model);
    proc_t p;
    RUN(&p, "train", MLP_CONFIG, "--set", "data.train_limit=1000", "--set", "data.test_limit=300", "--set",
        "train.epochs=1", "--set", out);
    util_expect_exit(&p, 0);
    cr_assert_gt(file_size(model), 96);
    util_proc_free(&p);
}

/* ---- 1, 2: training runs ---- */

Test(cli, train_mlp_exports_a_model_that_eval_scores_identically) {
    char model[256], out[300];
    tpath(model, "m.bin");
    snprintf(out, sizeof out, "train.output=%s", model);
    proc_t p;
    RUN(&p, "train", MLP_CONFIG, "--set", "data.train_limit=3000", "--set", "data.test_limit=1000", "--set",
        "train.epochs=1", "--set", out);
    util_expect_exit(&p, 0);
    cr_assert_str_empty(p.err.buf, "stderr not empty:\n%s", p.err.buf);
    train_summary_t s;
    check_train_output(&p, model, &s);
    cr_assert_eq(s.total, 1000);
    cr_assert_eq(s.steps_done, s.steps_total);
    cr_assert_eq(s.steps_total, (3000 + 127) / 128, "1 epoch of 3000 images in batches of 128");
    cr_assert_gt(s.acc, 0.5, "accuracy %.4f after one epoch: training does not learn", s.acc);
    const char *ep = line_starting(p.out.buf, "epoch 1/1 done");
    double acc;
    int c, n;
    parse_accuracy(ep, "epoch 1/1 done", &acc, &c, &n);
    cr_assert_eq(c, s.correct);

    eval_model(model, "1000", &c, &n);
    cr_assert_eq(n, 1000);
    cr_assert_eq(c, s.correct, "auxps eval scores %d/%d, the trainer %d/%d", c, n, s.correct, s.total);
    util_proc_free(&p);
}

/* The auxiliary head must have a loss of its own, and the export must drop it without changing
 * the low-precision network's answers. 3000 images in batches of 64 with lr 0.1 give the 4-8-8
 * network enough steps to learn in two short epochs (seeds 1..4 reach 0.45..0.51 in evaluation
 * mode; with batches of 32 the running batch-norm statistics are too noisy for 2-bit
 * activations and evaluation accuracy swings between 0.2 and 0.55). */
Test(cli, train_tiny_resnet_with_aux_learns_and_exports_without_aux) {
    char model[256], out[300];
    tpath(model, "r.bin");
    snprintf(out, sizeof out, "train.output=%s", model);
    proc_t p;
    RUN(&p, "train", RESNET_CONFIG, "--set", "model.widths=4,8,8", "--set", "data.train_limit=3000", "--set",
        "data.test_limit=500", "--set", "train.epochs=2", "--set", "train.batch_size=64", "--set", "train.lr=0.1",
        "--set", "train.log_interval=20", "--set", out);
    util_expect_exit(&p, 0);
    train_summary_t s;
    check_train_output(&p, model, &s);
    cr_assert_not_null(strstr(p.out.buf, "+ auxiliary module"), "header does not mention the aux module");
    cr_assert_not_null(strstr(p.out.buf, "| aux head "), "no aux head accuracy");

    int progress = 0;
    for (const char *l = line_starting(p.out.buf, "epoch "); l != NULL; l = next_line_starting(l, "epoch ")) {
        if (in_line(l, " img/s") == NULL) continue;
        double la = field_after(l, "loss_aux ");
        cr_assert(isfinite(la) && la > 0.0, "loss_aux %g: %.200s", la, l);
        progress++;
    }
    cr_assert_geq(progress, 2, "progress lines: %d", progress);
    cr_assert_eq(s.total, 500);
    cr_assert_gt(s.acc, 0.3, "accuracy %.4f: the ResNet does not learn", s.acc);

    int c, n;
    eval_model(model, "500", &c, &n);
    cr_assert_eq(n, 500);
    cr_assert_eq(c, s.correct, "auxps eval scores %d/%d, the trainer %d/%d", c, n, s.correct, s.total);

    proc_t q;
    RUN(&q, "info", model);
    util_expect_exit(&q, 0);
    cr_assert_not_null(strstr(q.out.buf, "tensor: fc1.w "), "no fc1.w:\n%s", q.out.buf);
    cr_assert_null(strstr(q.out.buf, "aux."), "the export holds auxiliary tensors:\n%s", q.out.buf);
    cr_assert_not_null(strstr(q.out.buf, "widths: 4,8,8"), "%s", q.out.buf);
    util_proc_free(&q);
    util_proc_free(&p);
}

/* ---- 3: info ---- */

Test(cli, info_lists_tensors_and_size_ratio_against_fp32) {
    char model[256];
    train_small_mlp(tpath(model, "m.bin"));
    proc_t p;
    RUN(&p, "info", model);
    util_expect_exit(&p, 0);
    const char *o = p.out.buf;
    const char *names[] = {"fc_in.w", "fc_in.b", "bn1.gamma", "bn1.beta", "fc_mid.w",
                           "bn2.gamma", "bn2.beta", "fc_out.w", "fc_out.b"};
    int tensors = 0;
    for (const char *l = line_starting(o, "tensor: "); l != NULL; l = next_line_starting(l, "tensor: ")) tensors++;
    cr_assert_eq(tensors, 9, "tensor lines: %d\n%s", tensors, o);
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        char want[64];
        snprintf(want, sizeof want, "tensor: %s ", names[i]);
        cr_assert_not_null(strstr(o, want), "no '%s' in:\n%s", want, o);
    }
    cr_assert_not_null(strstr(o, "tensor: fc_mid.w shape=256x256 bits=2 "), "fc_mid.w not 2-bit:\n%s", o);
    cr_assert_null(strstr(o, "aux."), "auxiliary tensor in the export:\n%s", o);

    const char *fb = line_starting(o, "file_bytes: "), *fp = line_starting(o, "fp32_bytes: "),
               *ra = line_starting(o, "ratio: ");
    cr_assert(fb && fp && ra, "no size lines:\n%s", o);
    long file_bytes = strtol(fb + 12, NULL, 10), fp32_bytes = strtol(fp + 12, NULL, 10);
    double ratio = strtod(ra + 7, NULL);
    cr_assert_eq(file_bytes, file_size(model), "file_bytes %ld, the file has %d", file_bytes, file_size(model));
    cr_assert_gt(fp32_bytes, file_bytes, "a W2A2 export must be smaller than FP32");
    cr_assert(fabs(ratio - (double)file_bytes / fp32_bytes) < 1e-3, "ratio %.4f, sizes give %.4f", ratio,
              (double)file_bytes / fp32_bytes);
    util_proc_free(&p);
}

/* ---- 4: bad configs ---- */

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    fputs(text, f);
    cr_assert_eq(fclose(f), 0);
}

/* Runs `auxps train ini` on a file holding text; it must fail with exit 1, naming file:line. */
static void expect_config_error(const char *text, const char *line_tag, const char *needle) {
    char ini[256], model[256], out[300];
    tpath(ini, "run.ini");
    write_text(ini, text);
    snprintf(out, sizeof out, "train.output=%s", tpath(model, "never.bin"));
    proc_t p;
    RUN(&p, "train", ini, "--set", out);
    util_expect_exit(&p, 1);
    char where[300];
    snprintf(where, sizeof where, "%s%s", ini, line_tag);
    expect_stderr_has(&p, where);
    expect_stderr_has(&p, needle);
    cr_assert_eq(file_size(model), -1, "a failed config wrote a model");
    cr_assert_null(strstr(p.out.buf, "img/s"), "training started:\n%s", p.out.buf);
    util_proc_free(&p);
}

Test(cli, config_unknown_key_fails_naming_file_and_line) {
    expect_config_error("[model]\narch = mlp\nbogus_key = 1\naux = false\n", ":3:", "bogus_key");
}

Test(cli, config_wrong_type_fails_naming_key_and_value) {
    expect_config_error("[model]\narch = mlp\naux = false\nhidden = many\n", ":4:", "'many'");
}

Test(cli, config_weight_bits_9_fails_with_valid_range) {
    expect_config_error("[model]\narch = mlp\naux = false\nweight_bits = 9\n", ":4:", "1..8 or 32");
}

Test(cli, config_set_epochs_0_fails_naming_set) {
    proc_t p;
    RUN(&p, "train", MLP_CONFIG, "--set", "train.epochs=0");
    util_expect_exit(&p, 1);
    expect_stderr_has(&p, "--set");
    expect_stderr_has(&p, "train.epochs");
    cr_assert_null(strstr(p.out.buf, "img/s"), "training started:\n%s", p.out.buf);
    util_proc_free(&p);
}

Test(cli, config_missing_file_fails_naming_it) {
    char ini[256];
    tpath(ini, "no-such-config.ini");
    proc_t p;
    RUN(&p, "train", ini);
    util_expect_exit(&p, 1);
    expect_stderr_has(&p, ini);
    util_proc_free(&p);
}

/* ---- 5: bad data ---- */

Test(cli, data_dir_missing_fails_naming_the_file) {
    proc_t p;
    RUN(&p, "train", MLP_CONFIG, "--set", "data.dir=/nonexistent");
    util_expect_exit(&p, 1);
    expect_stderr_has(&p, "/nonexistent/train-images-idx3-ubyte");
    util_proc_free(&p);
}

/* A data dir whose other three files are the real ones and whose training images are the given
 * bytes; training must fail with exit 1, naming that file. */
static void expect_bad_train_images(const unsigned char *bytes, size_t len) {
    char dir[256], path[300], setdir[320], model[256], out[300];
    tpath(dir, "data");
    cr_assert_eq(mkdir(dir, 0700), 0, "%s: %s", dir, strerror(errno));
    const char *others[] = {"train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"};
    for (int i = 0; i < 3; i++) {
        char src[300];
        snprintf(src, sizeof src, "%s/%s", FMNIST_DIR, others[i]);
        snprintf(path, sizeof path, "%s/%s", dir, others[i]);
        cr_assert_eq(symlink(src, path), 0, "%s: %s", path, strerror(errno));
    }
    snprintf(path, sizeof path, "%s/train-images-idx3-ubyte.gz", dir);
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(bytes, 1, len, f), len);
    cr_assert_eq(fclose(f), 0);
    snprintf(setdir, sizeof setdir, "data.dir=%s", dir);
    snprintf(out, sizeof out, "train.output=%s", tpath(model, "never.bin"));
    proc_t p;
    RUN(&p, "train", MLP_CONFIG, "--set", setdir, "--set", out);
    util_expect_exit(&p, 1);
    expect_stderr_has(&p, path);
    cr_assert_eq(file_size(model), -1, "bad data wrote a model");
    util_proc_free(&p);
}

Test(cli, data_truncated_train_images_fail_naming_the_file) {
    FILE *f = fopen(FMNIST_DIR "/train-images-idx3-ubyte.gz", "rb");
    cr_assert_not_null(f, "Fashion-MNIST not installed: %s", strerror(errno));
    unsigned char head[5000];
    size_t n = fread(head, 1, sizeof head, f);
    fclose(f);
    cr_assert_eq(n, sizeof head);
    expect_bad_train_images(head, n);
}

Test(cli, data_gzip_header_only_fails_naming_the_file) {
    /* A valid 10-byte gzip member header (deflate, no flags, OS unix) and nothing after it. */
    const unsigned char hdr[] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3};
    expect_bad_train_images(hdr, sizeof hdr);
}

/* ---- 6: bad model files ---- */

/* Both model commands must fail on path with exit 1 and a message naming it. */
static void expect_bad_model(const char *path) {
    const char *cmds[] = {"eval", "info"};
    for (int i = 0; i < 2; i++) {
        proc_t p;
        RUN(&p, cmds[i], path);
        util_expect_exit(&p, 1);
        expect_stderr_has(&p, path);
        cr_assert_null(strstr(p.out.buf, "test_accuracy"), "%s printed a result:\n%s", cmds[i], p.out.buf);
        util_proc_free(&p);
    }
}

static void copy_with(const char *from, const char *to, long cut, long flip) {
    FILE *f = fopen(from, "rb");
    cr_assert_not_null(f);
    static unsigned char buf[4 << 20];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    cr_assert_lt(n, sizeof buf);
    if (cut >= 0 && (size_t)cut < n) n = (size_t)cut;
    if (flip >= 0) {
        cr_assert_lt((size_t)flip, n);
        buf[flip] ^= 0x40;
    }
    f = fopen(to, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(buf, 1, n, f), n);
    cr_assert_eq(fclose(f), 0);
}

Test(cli, model_missing_file_fails_naming_it) {
    char path[256];
    expect_bad_model(tpath(path, "missing.bin"));
}

Test(cli, model_empty_file_fails_naming_it) {
    char path[256];
    write_text(tpath(path, "empty.bin"), "");
    expect_bad_model(path);
}

Test(cli, model_corrupt_copies_fail_naming_them) {
    char model[256], bad[256];
    train_small_mlp(tpath(model, "m.bin"));
    const long size = file_size(model);
    /* A payload byte (caught by the CRC), a header byte, the last CRC byte, and a truncation. */
    copy_with(model, tpath(bad, "flip-mid.bin"), -1, size / 2);
    expect_bad_model(bad);
    copy_with(model, tpath(bad, "flip-spec.bin"), -1, 24);
    expect_bad_model(bad);
    copy_with(model, tpath(bad, "flip-crc.bin"), -1, size - 1);
    expect_bad_model(bad);
    copy_with(model, tpath(bad, "cut.bin"), size / 3, -1);
    expect_bad_model(bad);
    /* The original still loads: the failures above are the corruption's, not the file's. */
    int c, n;
    eval_model(model, "300", &c, &n);
    cr_assert_eq(n, 300);
}

/* ---- 7: usage and version ---- */

Test(cli, no_arguments_exits_2_with_usage) {
    proc_t p;
    util_proc_run(&p, (const char *const[]){NULL}, CHILD_TIMEOUT_S);
    util_expect_exit(&p, 2);
    expect_stderr_has(&p, "usage: auxps");
    util_proc_free(&p);
}

Test(cli, unknown_command_exits_2_with_usage) {
    proc_t p;
    RUN(&p, "frobnicate");
    util_expect_exit(&p, 2);
    expect_stderr_has(&p, "frobnicate");
    expect_stderr_has(&p, "usage: auxps");
    util_proc_free(&p);
}

Test(cli, ps_refuses_an_advertised_endpoint_that_is_no_endpoint) {
    proc_t p;
    RUN(&p, "ps", "--coordinator", "tcp://127.0.0.1:1", "--bind", "tcp://127.0.0.1:*", "--advertise", "ps0:6000");
    util_expect_exit(&p, 1);
    expect_stderr_has(&p, "--advertise 'ps0:6000'");
    util_proc_free(&p);
}

Test(cli, version_prints_a_version) {
    proc_t p;
    RUN(&p, "version");
    util_expect_exit(&p, 0);
    int a, b, c;
    cr_assert_eq(sscanf(p.out.buf, "auxps %d.%d.%d", &a, &b, &c), 3, "no version in: %s", p.out.buf);
    util_proc_free(&p);
}

/* The kernels `auxps version` names, read from its "; kernels NAME" line. */
static void version_kernels(char *name, size_t len) {
    proc_t p;
    RUN(&p, "version");
    util_expect_exit(&p, 0);
    const char *k = strstr(p.out.buf, "; kernels ");
    cr_assert(k != NULL, "no kernels in: %s", p.out.buf);
    k += strlen("; kernels ");
    snprintf(name, len, "%.*s", (int)strcspn(k, "\n"), k);
    util_proc_free(&p);
}

/* Debian's OpenBLAS 0.3.21 falls back to its SSE3 kernels on CPUs newer than its model table;
 * auxps restarts itself with kernels as wide as the CPU's features, unless told otherwise. */
Test(cli, openblas_runs_kernels_as_wide_as_the_cpu_unless_openblas_coretype_says) {
    unsetenv("OPENBLAS_CORETYPE");
    char name[64];
    version_kernels(name, sizeof name);
    __builtin_cpu_init();
    const int avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512cd") &&
                       __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
                       __builtin_cpu_supports("avx512vl");
    const int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    const int wide512 = strcmp(name, "SkylakeX") == 0 || strcmp(name, "Cooperlake") == 0 ||
                        strcmp(name, "SapphireRapids") == 0;
    const int wide256 = wide512 || strcmp(name, "Haswell") == 0 || strcmp(name, "Zen") == 0 ||
                        strcmp(name, "Excavator") == 0;
    cr_log_info("OpenBLAS kernels %s; CPU AVX-512 %d, AVX2 %d", name, avx512, avx2);
    if (avx512) cr_assert(wide512, "an AVX-512 CPU runs OpenBLAS's %s kernels", name);
    else if (avx2) cr_assert(wide256, "an AVX2 CPU runs OpenBLAS's %s kernels", name);

    cr_assert_eq(setenv("OPENBLAS_CORETYPE", "Prescott", 1), 0);
    version_kernels(name, sizeof name);
    cr_assert_str_eq(name, "Prescott", "OPENBLAS_CORETYPE=Prescott gave %s kernels", name);
}

/* ---- 8: SIGINT ---- */

Test(cli, sigint_during_train_still_evaluates_exports_and_exits_130) {
    char model[256], out[300];
    tpath(model, "s.bin");
    snprintf(out, sizeof out, "train.output=%s", model);
    proc_t p;
    util_proc_start(&p, (const char *const[]){"train", MLP_CONFIG, "--set", out, NULL});
    const double deadline = util_now_s() + CHILD_TIMEOUT_S;
    int seen = proc_pump(&p, deadline, "img/s");
    if (!seen) proc_finish(&p, deadline);
    cr_assert(seen, "no progress line before the end; stdout:\n%s\nstderr:\n%s", p.out.buf, p.err.buf);
    cr_assert_eq(kill(p.pid, SIGINT), 0, "kill: %s", strerror(errno));
    proc_finish(&p, deadline);
    util_expect_exit(&p, 130);
    train_summary_t s;
    check_train_output(&p, model, &s);
    cr_assert_lt(s.steps_done, s.steps_total, "stopped after %ld of %ld steps", s.steps_done, s.steps_total);
    cr_assert_eq(s.total, 10000);

    int c, n;
    eval_model(model, NULL, &c, &n);
    cr_assert_eq(n, s.total);
    cr_assert_eq(c, s.correct, "auxps eval scores %d/%d, the stopped trainer %d/%d", c, n, s.correct, s.total);
    util_proc_free(&p);
}

/* ---- 9: bench ---- */

Test(cli, bench_prints_json_lines_for_1_and_2_threads) {
    proc_t p;
    RUN(&p, "bench", "--steps", "1", "--batch", "8");
    util_expect_exit(&p, 0);
    int seen[3] = {0}, lines = 0;
    for (const char *l = p.out.buf; *l; lines++) {
        const char *eol = strchr(l, '\n');
        cr_assert_not_null(eol, "unterminated line: %s", l);
        cr_assert(l[0] == '{' && eol[-1] == '}', "not a JSON object: %.*s", (int)(eol - l), l);
        const char *t = in_line(l, "\"threads\":"), *ips = in_line(l, "\"images_per_s\":");
        cr_assert(t != NULL && ips != NULL, "no threads or images_per_s: %.*s", (int)(eol - l), l);
        int threads = atoi(t + strlen("\"threads\":"));
        double v = strtod(ips + strlen("\"images_per_s\":"), NULL);
        cr_assert(threads >= 1 && threads <= 2, "threads %d", threads);
        cr_assert(isfinite(v) && v > 0.0, "images_per_s %g", v);
        cr_assert_not_null(in_line(l, "\"batch\":8,"));
        cr_assert_not_null(in_line(l, "\"steps\":1,"));
        seen[threads]++;
        l = eol + 1;
    }
    cr_assert_eq(lines, 2, "%d lines:\n%s", lines, p.out.buf);
    cr_assert(seen[1] == 1 && seen[2] == 1, "threads 1: %d lines, 2: %d lines", seen[1], seen[2]);
    util_proc_free(&p);
}
