/* test_config.c - the config module: shipped configs load, defaults follow METHOD.md's recipe,
 * every kind of bad input is rejected with a message that names file, line, key and range, and
 * config_write round-trips. Runs from the project root so that configs/ resolves. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

/* Writes len bytes of text to a fresh temp file whose name goes to path (64 bytes). */
static void write_tmp(const char *text, size_t len, char *path) {
    strcpy(path, "/tmp/auxps-test-config-XXXXXX");
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    FILE *f = fdopen(fd, "w");
    cr_assert(f != NULL);
    cr_assert(fwrite(text, 1, len, f) == len);
    cr_assert(fclose(f) == 0);
}

static int load_text(const char *text, auxps_config_t *c, auxps_error_t *e, char *path) {
    write_tmp(text, strlen(text), path);
    int rc = config_load(c, path, e);
    unlink(path);
    return rc;
}

/* Loading len bytes of text must fail with AUXPS_ECONFIG and a message that starts with
 * "FILE:line:" and contains each of the needles; c must stay as it was. */
static void vexpect(const char *text, size_t len, int line, va_list ap) {
    auxps_config_t c, before;
    config_defaults(&c);
    c.train.epochs = 77; /* a value no file below sets, to see that a failed load keeps c */
    memcpy(&before, &c, sizeof c);
    auxps_error_t e = {0};
    char path[64], where[96];
    write_tmp(text, len, path);
    int rc = config_load(&c, path, &e);
    unlink(path);
    cr_assert_eq(rc, AUXPS_ECONFIG, "rc %d for:\n%s", rc, text);
    cr_assert_eq(e.code, AUXPS_ECONFIG);
    snprintf(where, sizeof where, "%s:%d: ", path, line);
    cr_assert(strncmp(e.msg, where, strlen(where)) == 0, "expected '%s' at the start of '%s'",
              where, e.msg);
    for (const char *needle; (needle = va_arg(ap, const char *)) != NULL;)
        cr_assert(strstr(e.msg, needle) != NULL, "'%s' not in '%s'", needle, e.msg);
    cr_assert(memcmp(&c, &before, sizeof c) == 0, "a failed load changed the config");
}

/* vexpect for a string; the needles end with NULL. */
static void expect_error(const char *text, int line, ...) {
    va_list ap;
    va_start(ap, line);
    vexpect(text, strlen(text), line, ap);
    va_end(ap);
}

static void expect_error_len(const char *text, size_t len, int line, ...) {
    va_list ap;
    va_start(ap, line);
    vexpect(text, len, line, ap);
    va_end(ap);
}

static void assert_same(const auxps_config_t *a, const auxps_config_t *b) {
    const model_spec_t *m = &a->model, *n = &b->model;
    cr_assert_eq(m->arch, n->arch);
    cr_assert_eq(m->in_c, n->in_c);
    cr_assert_eq(m->in_h, n->in_h);
    cr_assert_eq(m->in_w, n->in_w);
    cr_assert_eq(m->classes, n->classes);
    for (int i = 0; i < 3; i++) cr_assert_eq(m->widths[i], n->widths[i]);
    cr_assert_eq(m->blocks, n->blocks);
    cr_assert_eq(m->hidden, n->hidden);
    cr_assert_eq(m->wbits, n->wbits);
    cr_assert_eq(m->abits, n->abits);
    cr_assert_eq(m->aux, n->aux);
    cr_assert_eq(m->aux_lambda, n->aux_lambda);
    cr_assert_eq(a->train.epochs, b->train.epochs);
    cr_assert_eq(a->train.batch_size, b->train.batch_size);
    cr_assert_eq(a->train.lr, b->train.lr);
    cr_assert_eq(a->train.momentum, b->train.momentum);
    cr_assert_eq(a->train.nesterov, b->train.nesterov);
    cr_assert_eq(a->train.weight_decay, b->train.weight_decay);
    cr_assert_eq(a->train.schedule, b->train.schedule);
    cr_assert_eq(a->train.step_epochs, b->train.step_epochs);
    cr_assert_eq(a->train.step_gamma, b->train.step_gamma);
    cr_assert_eq(a->train.seed, b->train.seed);
    cr_assert_eq(a->train.threads, b->train.threads);
    cr_assert_eq(a->train.log_interval, b->train.log_interval);
    cr_assert_eq(a->train.max_steps, b->train.max_steps);
    cr_assert_str_eq(a->train.output, b->train.output);
    cr_assert_str_eq(a->data.dir, b->data.dir);
    cr_assert_eq(a->data.mean, b->data.mean);
    cr_assert_eq(a->data.std, b->data.std);
    cr_assert_eq(a->data.crop_pad, b->data.crop_pad);
    cr_assert_eq(a->data.flip, b->data.flip);
    cr_assert_eq(a->data.train_limit, b->data.train_limit);
    cr_assert_eq(a->data.test_limit, b->data.test_limit);
}

/* config_write, then config_load of the output, gives c back. */
static void assert_round_trip(const auxps_config_t *c) {
    char path[64];
    write_tmp("", 0, path);
    FILE *f = fopen(path, "w");
    cr_assert(f != NULL);
    cr_assert_eq(config_write(c, f), 0);
    cr_assert(fclose(f) == 0);
    auxps_config_t back;
    auxps_error_t e = {0};
    int rc = config_load(&back, path, &e);
    unlink(path);
    cr_assert_eq(rc, 0, "%s", e.msg);
    assert_same(c, &back);
}

static void set_ok(auxps_config_t *c, const char *assignment) {
    auxps_error_t e = {0};
    cr_assert_eq(config_set(c, assignment, &e), 0, "%s: %s", assignment, e.msg);
}

/* config_set must fail, leave c alone, and say "--set" and each needle. */
static void set_bad(const char *assignment, const char *needle) {
    auxps_config_t c, before;
    config_defaults(&c);
    memcpy(&before, &c, sizeof c);
    auxps_error_t e = {0};
    cr_assert_eq(config_set(&c, assignment, &e), AUXPS_ECONFIG, "accepted %s", assignment);
    cr_assert(strncmp(e.msg, "--set", 5) == 0, "%s", e.msg);
    cr_assert(strstr(e.msg, needle) != NULL, "'%s' not in '%s'", needle, e.msg);
    cr_assert(memcmp(&c, &before, sizeof c) == 0);
}

Test(config, defaults_follow_the_method_recipe) {
    auxps_config_t c;
    config_defaults(&c);
    const model_spec_t *m = &c.model;
    cr_assert_eq(m->arch, ARCH_RESNET);
    cr_assert(m->widths[0] == 16 && m->widths[1] == 32 && m->widths[2] == 64);
    cr_assert_eq(m->blocks, 1);
    cr_assert(m->in_c == 1 && m->in_h == 28 && m->in_w == 28);
    cr_assert_eq(m->classes, 10);
    cr_assert(m->wbits == 2 && m->abits == 2);
    cr_assert(m->aux == 1 && m->aux_lambda == 1.0f);
    cr_assert_eq(m->hidden, 256);
    cr_assert_eq(c.train.epochs, 10);
    cr_assert_eq(c.train.batch_size, 128);
    cr_assert_eq(c.train.lr, 0.05f);
    cr_assert_eq(c.train.momentum, 0.9f);
    cr_assert_eq(c.train.nesterov, 1);
    cr_assert_eq(c.train.weight_decay, 5e-4f);
    cr_assert_eq(c.train.schedule, SCHED_COSINE);
    cr_assert_eq(c.train.step_epochs, 3);
    cr_assert_eq(c.train.step_gamma, 0.1f);
    cr_assert_eq(c.train.seed, 1);
    cr_assert_eq(c.train.threads, 0);
    cr_assert_eq(c.train.log_interval, 100);
    cr_assert_eq(c.train.max_steps, 0);
    cr_assert_str_eq(c.train.output, "auxps-model.bin");
    cr_assert_str_eq(c.data.dir, "/usr/share/datasets/fashion-mnist");
    cr_assert_eq(c.data.mean, 0.2860f);
    cr_assert_eq(c.data.std, 0.3530f);
    cr_assert_eq(c.data.crop_pad, 0);
    cr_assert_eq(c.data.flip, 0);
    cr_assert(c.data.train_limit == 0 && c.data.test_limit == 0);
    cr_assert_str_eq(c.path, "");
    auxps_error_t e = {0};
    cr_assert_eq(config_check(&c, &e), 0, "%s", e.msg);
    cr_assert_str_eq(config_schedule_name(c.train.schedule), "cosine");
}

Test(config, every_shipped_config_loads_with_its_model) {
    static const struct {
        const char *path;
        int arch, blocks, wbits, abits, aux, epochs;
    } ship[] = {
        {"configs/fmnist-resnet8-w2a2-aux.ini", ARCH_RESNET, 1, 2, 2, 1, 10},
        {"configs/fmnist-resnet8-w2a2.ini", ARCH_RESNET, 1, 2, 2, 0, 10},
        {"configs/fmnist-resnet8-w4a4-aux.ini", ARCH_RESNET, 1, 4, 4, 1, 10},
        {"configs/fmnist-resnet8-fp32.ini", ARCH_RESNET, 1, 32, 32, 0, 10},
        {"configs/fmnist-resnet20-w2a2-aux.ini", ARCH_RESNET, 3, 2, 2, 1, 10},
        {"configs/fmnist-mlp-w2a2.ini", ARCH_MLP, 1, 2, 2, 0, 2},
    };
    for (size_t i = 0; i < sizeof ship / sizeof ship[0]; i++) {
        auxps_config_t c, d;
        auxps_error_t e = {0};
        cr_assert_eq(config_load(&c, ship[i].path, &e), 0, "%s", e.msg);
        cr_assert_str_eq(c.path, ship[i].path);
        cr_assert_eq(c.model.arch, ship[i].arch, "%s", ship[i].path);
        cr_assert_eq(c.model.blocks, ship[i].blocks, "%s", ship[i].path);
        cr_assert_eq(c.model.wbits, ship[i].wbits, "%s", ship[i].path);
        cr_assert_eq(c.model.abits, ship[i].abits, "%s", ship[i].path);
        cr_assert_eq(c.model.aux, ship[i].aux, "%s", ship[i].path);
        cr_assert_eq(c.train.epochs, ship[i].epochs, "%s", ship[i].path);
        if (c.model.aux) cr_assert_eq(c.model.aux_lambda, 1.0f);
        /* Everything else is the recipe. */
        config_defaults(&d);
        d.model.arch = c.model.arch, d.model.blocks = c.model.blocks;
        d.model.wbits = c.model.wbits, d.model.abits = c.model.abits, d.model.aux = c.model.aux;
        d.train.epochs = c.train.epochs;
        strcpy(d.train.output, c.train.output);
        assert_same(&c, &d);
        cr_assert_eq(config_check(&c, &e), 0, "%s", e.msg);
        assert_round_trip(&c);
    }
}

Test(config, set_overrides_fields) {
    auxps_config_t c;
    config_defaults(&c);
    set_ok(&c, "train.lr=0.1");
    set_ok(&c, "  train.epochs = 3  ");
    set_ok(&c, "model.widths= 8, 16 ,32");
    set_ok(&c, "model.arch=mlp");
    set_ok(&c, "model.aux=off");
    set_ok(&c, "train.schedule=STEP");
    set_ok(&c, "train.seed=9223372036854775807");
    set_ok(&c, "data.dir=/tmp/some dir/x.y");
    set_ok(&c, "data.flip=yes");
    set_ok(&c, "model.weight_bits=3");
    set_ok(&c, "train.momentum=0");
    cr_assert_eq(c.train.lr, 0.1f);
    cr_assert_eq(c.train.epochs, 3);
    cr_assert(c.model.widths[0] == 8 && c.model.widths[1] == 16 && c.model.widths[2] == 32);
    cr_assert_eq(c.model.arch, ARCH_MLP);
    cr_assert_eq(c.model.aux, 0);
    cr_assert_eq(c.train.schedule, SCHED_STEP);
    cr_assert_eq(c.train.seed, 9223372036854775807ull);
    cr_assert_str_eq(c.data.dir, "/tmp/some dir/x.y");
    cr_assert_eq(c.data.flip, 1);
    cr_assert_eq(c.model.wbits, 3);
    cr_assert_eq(c.train.momentum, 0.0f);
    auxps_error_t e = {0};
    cr_assert_eq(config_check(&c, &e), 0, "%s", e.msg);
    assert_round_trip(&c);
}

Test(config, bad_set_is_rejected_and_names_the_key) {
    set_bad("train.lr", "expected section.key=value");
    set_bad("lr=0.1", "expected section.key=value");
    set_bad("train.lr=abc", "--set train.lr = 'abc': expected a number in (0, 10]");
    set_bad("train.lr=0", "(0, 10]");
    set_bad("train.lr=", "(0, 10]");
    set_bad("train.epochs=12x", "--set train.epochs = '12x': expected an integer in 1..10000");
    set_bad("train.epochs=10001", "1..10000");
    set_bad("model.act_bits=9", "expected 1..8 or 32");
    set_bad("train.schedule=linear", "one of cosine, step, constant");
    set_bad("train.learning_rate=1", "--set train.learning_rate: unknown key");
    set_bad("optim.lr=1", "unknown section [optim]");
    set_bad("train.seed=9223372036854775808", "0..9223372036854775807");
    set_bad("train.seed=-1", "0..9223372036854775807");
    set_bad("data.dir=a;b", "without ';'");
    set_bad("data.dir=", "1..180 characters");
    char long_dir[200] = "data.dir=/";
    memset(long_dir + 10, 'x', 181);
    set_bad(long_dir, "1..180 characters");
}

Test(config, check_catches_fields_set_in_code_and_cross_field_errors) {
    auxps_config_t c;
    auxps_error_t e = {0};
    config_defaults(&c);
    c.train.lr = NAN;
    cr_assert_eq(config_check(&c, &e), AUXPS_ECONFIG);
    cr_assert(strstr(e.msg, "train.lr") != NULL, "%s", e.msg);
    config_defaults(&c);
    c.model.abits = 16;
    cr_assert_eq(config_check(&c, &e), AUXPS_ECONFIG);
    cr_assert(strstr(e.msg, "model.act_bits = '16': expected 1..8 or 32") != NULL, "%s", e.msg);
    config_defaults(&c);
    set_ok(&c, "model.arch=mlp"); /* valid by itself: the aux check waits for config_check */
    cr_assert_eq(config_check(&c, &e), AUXPS_ECONFIG);
    cr_assert(strstr(e.msg, "model.aux = true needs model.arch = resnet") != NULL, "%s", e.msg);
    config_defaults(&c);
    c.model.in_c = c.model.in_h = c.model.in_w = 4096;
    cr_assert_eq(config_check(&c, &e), AUXPS_ECONFIG);
    cr_assert(strstr(e.msg, "at most 16777216") != NULL, "%s", e.msg);
}

Test(config, unknown_section_and_key_are_rejected) {
    expect_error("[model]\nblocks = 1\n\n[optim]\nlr = 1\n", 5,
                 "optim.lr: unknown section [optim]", "[model], [train], [data]", NULL);
    expect_error("[train]\nepochs = 3\nlearning_rate = 0.1\n", 3,
                 "train.learning_rate: unknown key", "lr, momentum", NULL);
    expect_error("; comment\nepochs = 3\n", 2, "epochs: key outside any section", NULL);
    /* Keys are case-sensitive, like the names of the C fields they fill. */
    expect_error("[train]\nEpochs = 3\n", 2, "unknown key", NULL);
}

Test(config, malformed_numbers_are_rejected) {
    expect_error("[train]\nepochs = abc\n", 2,
                 "train.epochs = 'abc': expected an integer in 1..10000", NULL);
    expect_error("[train]\n\nepochs = 12x\n", 3, "train.epochs = '12x'", "1..10000", NULL);
    expect_error("[train]\nepochs = 1.5\n", 2, "1..10000", NULL);
    expect_error("[train]\nepochs = 0x10\n", 2, "1..10000", NULL);
    expect_error("[train]\nepochs =\n", 2, "1..10000", NULL);
    expect_error("[train]\nlr = nan\n", 2, "train.lr = 'nan': expected a number in (0, 10]",
                 NULL);
    expect_error("[train]\nlr = inf\n", 2, "(0, 10]", NULL);
    expect_error("[train]\nlr = 0.1x\n", 2, "(0, 10]", NULL);
    expect_error("[train]\nlr = 1e999\n", 2, "(0, 10]", NULL);
    /* Only " ;" starts an inline comment in inih; "#" after a value is junk. */
    expect_error("[train]\nlr = 0.1 # comment\n", 2, "train.lr = '0.1 # comment'", NULL);
    expect_error("[model]\nwidths = 16,32\n", 2,
                 "three integers in 1..1024 separated by commas", NULL);
    expect_error("[model]\nwidths = 16,32,64,128\n", 2, "model.widths", NULL);
    expect_error("[model]\nwidths = 16,0,64\n", 2, "model.widths", NULL);
    expect_error("[model]\nwidths = 16;32;64\n", 2, "model.widths", NULL);
    expect_error("[model]\naux = maybe\n", 2,
                 "model.aux = 'maybe': expected true/false, yes/no, on/off or 1/0", NULL);
}

Test(config, out_of_range_values_are_rejected) {
    expect_error("[train]\nbatch_size = 0\n", 2, "train.batch_size", "1..4096", NULL);
    expect_error("[train]\nbatch_size = 4097\n", 2, "1..4096", NULL);
    expect_error("[train]\nepochs = 99999999999999999999\n", 2, "1..10000", NULL);
    expect_error("[train]\nthreads = -1\n", 2, "0..256", NULL);
    expect_error("[model]\nblocks = 17\n", 2, "model.blocks", "1..16", NULL);
    expect_error("[model]\nclasses = 1\n", 2, "2..1000", NULL);
    expect_error("[data]\ncrop_pad = 9\n", 2, "0..8", NULL);
    expect_error("[train]\nlr = 0\n", 2, "train.lr = '0'", "(0, 10]", NULL);
    expect_error("[train]\nlr = 10.5\n", 2, "(0, 10]", NULL);
    expect_error("[train]\nmomentum = 1\n", 2, "train.momentum", "[0, 1)", NULL);
    /* Rounds to 1.0f, the open bound. */
    expect_error("[train]\nmomentum = 0.99999999999\n", 2, "[0, 1)", NULL);
    expect_error("[train]\nweight_decay = -0.001\n", 2, "[0, 1)", NULL);
    expect_error("[train]\nstep_gamma = 0\n", 2, "(0, 1]", NULL);
    expect_error("[model]\naux_lambda = 100.5\n", 2, "model.aux_lambda", "[0, 100]", NULL);
    expect_error("[data]\nstd = 0\n", 2, "data.std", "(0, 1]", NULL);
    expect_error("[train]\nseed = 9223372036854775808\n", 2, "train.seed", NULL);
}

Test(config, bits_accept_1_to_8_and_32_only) {
    auxps_config_t c;
    auxps_error_t e = {0};
    char path[64];
    cr_assert_eq(load_text("[model]\nweight_bits = 3\nact_bits = 8\n", &c, &e, path), 0, "%s",
                 e.msg);
    cr_assert(c.model.wbits == 3 && c.model.abits == 8);
    cr_assert_eq(load_text("[model]\nweight_bits = 1\nact_bits = 32\n", &c, &e, path), 0);
    cr_assert(c.model.wbits == 1 && c.model.abits == 32);
    expect_error("[model]\nweight_bits = 9\n", 2, "model.weight_bits = '9': expected 1..8 or 32",
                 NULL);
    expect_error("[model]\n\nact_bits = 16\n", 3, "model.act_bits = '16': expected 1..8 or 32",
                 NULL);
    expect_error("[model]\nact_bits = 0\n", 2, "expected 1..8 or 32", NULL);
}

Test(config, names_and_bools_are_checked) {
    expect_error("[train]\nschedule = linear\n", 2,
                 "train.schedule = 'linear': expected one of cosine, step, constant", NULL);
    expect_error("[model]\narch = vgg\n", 2, "one of resnet, mlp", NULL);
    auxps_config_t c;
    auxps_error_t e = {0};
    char path[64];
    cr_assert_eq(load_text("[train]\nschedule = constant\nnesterov = OFF\n[data]\nflip = 1\n", &c,
                           &e, path), 0, "%s", e.msg);
    cr_assert_eq(c.train.schedule, SCHED_CONSTANT);
    cr_assert_eq(c.train.nesterov, 0);
    cr_assert_eq(c.data.flip, 1);
}

Test(config, aux_with_mlp_is_rejected_at_the_later_line) {
    /* aux defaults to on, so choosing the MLP alone is the conflict. */
    expect_error("[model]\n\narch = mlp\n", 3, "model.aux = true needs model.arch = resnet",
                 NULL);
    expect_error("[model]\narch = mlp\nhidden = 64\naux = yes\n", 4, "needs model.arch = resnet",
                 NULL);
    auxps_config_t c;
    auxps_error_t e = {0};
    char path[64];
    cr_assert_eq(load_text("[model]\narch = mlp\naux = false\n", &c, &e, path), 0, "%s", e.msg);
}

Test(config, structural_errors_point_at_their_line) {
    expect_error("[model]\nblocks = 2\n[train\nepochs = 3\n", 3, "syntax error", NULL);
    expect_error("[train]\nepochs = 3\nlr\n", 3, "syntax error", NULL);
    /* A syntax error before a bad value is the first error. */
    expect_error("[train]\nlr\nepochs = abc\n", 2, "syntax error", NULL);
    expect_error("[train]\nepochs = 3\nlr = 0.1\nepochs = 4\n", 4,
                 "train.epochs is set twice (first on line 2", NULL);
    /* An indented line continues the previous value, so it sets the same key again. */
    expect_error("[train]\nepochs = 3\n  lr = 0.1\n", 3, "train.epochs is set twice", NULL);
    char text[400] = "[data]\n# a comment\ndir = /";
    memset(text + strlen(text), 'x', 250);
    strcat(text, "\n");
    expect_error(text, 3, "line longer than 199 characters", NULL);
    /* The limit holds for a blank line too (the fuzz corpus's regress-blank-line-too-long). */
    memset(text, ' ', 250);
    strcpy(text + 250, "\n[train]\nepochs = 3\n");
    expect_error(text, 1, "line longer than 199 characters", NULL);
    static const char nul[] = "[data]\ndir = a\0b\n";
    expect_error_len(nul, sizeof nul - 1, 2, "NUL byte", NULL);
    expect_error("[data]\ndir = a;b\n", 2, "data.dir = 'a;b'", "without ';'", NULL);
}

Test(config, comments_crlf_and_long_lines_up_to_the_limit_load) {
    auxps_config_t c;
    auxps_error_t e = {0};
    char path[64], text[600];
    cr_assert_eq(load_text("\xEF\xBB\xBF# bom\r\n[train]\r\nepochs = 4 ; inline\r\n\r\n"
                           "lr: 0.2\r\n[model]\r\nwidths = 8 ,16, 32\r\n", &c, &e, path), 0,
                 "%s", e.msg);
    cr_assert_eq(c.train.epochs, 4);
    cr_assert_eq(c.train.lr, 0.2f);
    cr_assert(c.model.widths[0] == 8 && c.model.widths[1] == 16 && c.model.widths[2] == 32);
    /* A comment of exactly 199 characters plus its newline fills inih's buffer exactly. */
    strcpy(text, "#");
    memset(text + 1, 'c', 198);
    strcpy(text + 199, "\n[train]\nepochs = 5\n");
    cr_assert_eq(load_text(text, &c, &e, path), 0, "%s", e.msg);
    cr_assert_eq(c.train.epochs, 5);
    memset(text, ' ', 199); /* and a blank line of 199 characters */
    strcpy(text + 199, "\n[train]\nepochs = 6\n");
    cr_assert_eq(load_text(text, &c, &e, path), 0, "%s", e.msg);
    cr_assert_eq(c.train.epochs, 6);
    /* The longest path fits on a line. */
    strcpy(text, "[data]\ndir = /");
    memset(text + strlen(text), 'd', CONFIG_MAX_STRING - 1);
    strcpy(text + strlen("[data]\ndir = ") + CONFIG_MAX_STRING, "\n");
    cr_assert_eq(load_text(text, &c, &e, path), 0, "%s", e.msg);
    cr_assert_eq(strlen(c.data.dir), CONFIG_MAX_STRING);
    assert_round_trip(&c);
}

Test(config, missing_file_is_an_io_error_naming_the_file) {
    auxps_config_t c;
    auxps_error_t e = {0};
    cr_assert_eq(config_load(&c, "/nonexistent/auxps.ini", &e), AUXPS_EIO);
    cr_assert_eq(e.code, AUXPS_EIO);
    cr_assert(strstr(e.msg, "/nonexistent/auxps.ini") != NULL, "%s", e.msg);
    cr_assert_eq(config_load(&c, "/tmp", &e), AUXPS_EIO, "%s", e.msg); /* a directory */
    cr_assert(strstr(e.msg, "/tmp:1: read error") != NULL, "%s", e.msg);
    cr_assert_eq(config_load(NULL, "x", &e), AUXPS_EINVAL);
    cr_assert_eq(config_load(&c, NULL, NULL), AUXPS_EINVAL);
}

Test(config, write_round_trips_unusual_values) {
    auxps_config_t c;
    config_defaults(&c);
    assert_round_trip(&c);
    c.model.arch = ARCH_MLP;
    c.model.aux = 0;
    c.model.wbits = 1;
    c.model.abits = 32;
    c.model.aux_lambda = 0.3f;
    c.train.lr = 1.0f / 3.0f;
    c.train.momentum = nextafterf(1.0f, 0.0f);
    c.train.weight_decay = 1e-7f;
    c.train.schedule = SCHED_STEP;
    c.train.step_gamma = 0.5f;
    c.train.seed = 0xfedcba9876543210ull >> 1;
    c.train.nesterov = 0;
    c.train.max_steps = 17;
    c.data.mean = 0.1f;
    c.data.std = 1.0f;
    c.data.flip = 1;
    c.data.train_limit = 1000;
    strcpy(c.train.output, "out dir/model #1.bin");
    auxps_error_t e = {0};
    cr_assert_eq(config_check(&c, &e), 0, "%s", e.msg);
    assert_round_trip(&c);
}

Test(config_cluster, defaults_and_overrides_of_the_cluster_section) {
    auxps_config_t c;
    auxps_error_t e = {0};
    config_defaults(&c);
    cr_expect_eq(c.cluster.consistency, CONS_ASYNC);
    cr_expect_eq(c.cluster.staleness, 2);
    cr_expect_eq(c.cluster.chunk_batches, 10);
    cr_assert_eq(config_set(&c, "cluster.consistency=ssp", &e), 0, "%s", e.msg);
    cr_expect_eq(c.cluster.consistency, CONS_SSP);
    cr_expect_eq(config_set(&c, "cluster.consistency=gossip", &e), AUXPS_ECONFIG);
    cr_expect_eq(config_set(&c, "cluster.timeout_ms=5", &e), AUXPS_ECONFIG);
}

/* cluster.prefetch is off by default and needs async: ssp and bsp gate each pull on the clock. */
Test(config_cluster, prefetch_needs_async) {
    auxps_config_t c;
    config_defaults(&c);
    cr_expect_eq(c.cluster.prefetch, 0);
    expect_error("[cluster]\nprefetch = true\nconsistency = bsp\n", 3,
                 "cluster.prefetch = true needs cluster.consistency = async", NULL);
    expect_error("[cluster]\nconsistency = ssp\nprefetch = yes\n", 3, "needs cluster.consistency = async", NULL);
    auxps_error_t e = {0};
    cr_assert_eq(config_load_text(&c, "[cluster]\nprefetch = true\n", "t", &e), 0, "%s", e.msg);
    cr_expect_eq(c.cluster.prefetch, 1);
}

Test(config_text, load_text_reads_what_config_write_wrote) {
    auxps_config_t a, b;
    auxps_error_t e = {0};
    config_defaults(&a);
    cr_assert_eq(config_set(&a, "cluster.consistency=bsp", &e), 0);
    cr_assert_eq(config_set(&a, "train.seed=77", &e), 0);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    cr_assert_eq(config_write(&a, f), 0);
    fclose(f);
    cr_assert_eq(config_load_text(&b, text, "WELCOME", &e), 0, "%s", e.msg);
    cr_expect_eq(b.cluster.consistency, CONS_BSP);
    cr_expect_eq(b.train.seed, 77);
    cr_expect_eq(config_load_text(&b, "[train]\nepochs = x\n", "WELCOME", &e), AUXPS_ECONFIG);
    cr_expect(strstr(e.msg, "WELCOME:2:") != NULL, "%s", e.msg);
    free(text);
}

/* Empty text is an empty file: the defaults (it was once refused as "NUL byte in the file"). */
Test(config_text, empty_text_loads_the_defaults) {
    auxps_config_t a, b;
    auxps_error_t e = {0};
    config_defaults(&a);
    memset(&b, 0xff, sizeof b);
    cr_assert_eq(config_load_text(&b, "", "WELCOME", &e), 0, "%s", e.msg);
    cr_expect_eq(b.train.epochs, a.train.epochs);
    cr_expect_eq(b.model.wbits, a.model.wbits);
    cr_expect_str_eq(b.path, "WELCOME");
}

/* The one parser of integer command-line values takes whole base-10 integers in range only. */
Test(config, parse_int_takes_whole_integers_in_range_only) {
    int v = 7;
    cr_assert_eq(config_parse_int("42", 1, 100, &v), 0);
    cr_assert_eq(v, 42);
    cr_assert_eq(config_parse_int("-3", -5, 5, &v), 0);
    cr_assert_eq(v, -3);
    static const char *const bad[] = {"", "12x", "1.5", " ", "0x10", "101", "0", "99999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_eq(config_parse_int(bad[i], 1, 100, &v), -1, "'%s' was taken", bad[i]);
        cr_assert_eq(v, -3, "'%s' changed the value", bad[i]);
    }
}
