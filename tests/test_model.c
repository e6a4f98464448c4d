/* test_model.c - the model against PyTorch golden values (tests/golden/, made by
 * make_golden.py) and against finite differences; its parameter layout against docs/MODEL.md. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "optim.h"
#include "config.h"
#include "rng.h"

typedef struct {
    model_spec_t spec;
    int batch;
    float lr, momentum, wd;
    size_t num_params, num_stats;
} golden_meta_t;

static void *read_file(const char *dir, const char *name, size_t *len) {
    char path[512];
    snprintf(path, sizeof path, "tests/golden/%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (f == NULL) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *buf = malloc(n > 0 ? (size_t)n : 1);
    cr_assert_not_null(buf);
    cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    if (len) *len = (size_t)n;
    return buf;
}

static void *must_read(const char *dir, const char *name, size_t expect_bytes) {
    size_t len = 0;
    void *p = read_file(dir, name, &len);
    cr_assert_not_null(p, "missing golden file %s/%s", dir, name);
    cr_assert_eq(len, expect_bytes, "%s/%s: %zu bytes, expected %zu", dir, name, len, expect_bytes);
    return p;
}

static void load_meta(const char *dir, golden_meta_t *g) {
    char *txt = read_file(dir, "meta.txt", NULL);
    cr_assert_not_null(txt, "missing tests/golden/%s/meta.txt", dir);
    model_spec_default(&g->spec);
    char key[64];
    for (char *line = strtok(txt, "\n"); line; line = strtok(NULL, "\n")) {
        char *v = strchr(line, ' ');
        if (v == NULL) continue;
        snprintf(key, sizeof key, "%.*s", (int)(v - line), line);
        v++;
        model_spec_t *s = &g->spec;
        if (!strcmp(key, "arch")) s->arch = strcmp(v, "mlp") == 0 ? ARCH_MLP : ARCH_RESNET;
        else if (!strcmp(key, "in_c")) s->in_c = atoi(v);
        else if (!strcmp(key, "in_h")) s->in_h = atoi(v);
        else if (!strcmp(key, "in_w")) s->in_w = atoi(v);
        else if (!strcmp(key, "classes")) s->classes = atoi(v);
        else if (!strcmp(key, "widths")) sscanf(v, "%d %d %d", &s->widths[0], &s->widths[1], &s->widths[2]);
        else if (!strcmp(key, "blocks")) s->blocks = atoi(v);
        else if (!strcmp(key, "wbits")) s->wbits = atoi(v);
        else if (!strcmp(key, "abits")) s->abits = atoi(v);
        else if (!strcmp(key, "aux")) s->aux = atoi(v);
        else if (!strcmp(key, "aux_lambda")) s->aux_lambda = strtof(v, NULL);
        else if (!strcmp(key, "batch")) g->batch = atoi(v);
        else if (!strcmp(key, "num_params")) g->num_params = strtoul(v, NULL, 10);
        else if (!strcmp(key, "num_stats")) g->num_stats = strtoul(v, NULL, 10);
        else if (!strcmp(key, "lr")) g->lr = strtof(v, NULL);
        else if (!strcmp(key, "momentum")) g->momentum = strtof(v, NULL);
        else if (!strcmp(key, "weight_decay")) g->wd = strtof(v, NULL);
    }
    free(txt);
}

/* max|a - b| <= tol * max(max|b|, floor): relative to the tensor's own scale. */
static void expect_close(const char *what, const float *a, const float *b, size_t n, double tol, double floor) {
    double maxb = floor, maxd = 0.0;
    size_t worst = 0;
    for (size_t i = 0; i < n; i++) {
        if (fabs(b[i]) > maxb) maxb = fabs(b[i]);
        double d = fabs((double)a[i] - b[i]);
        if (d > maxd) {
            maxd = d;
            worst = i;
        }
    }
    cr_expect(maxd <= tol * maxb, "%s: max error %.3g at [%zu] (%.8g vs %.8g), scale %.3g, relative %.3g > %.1g", what,
              maxd, worst, n ? a[worst] : 0.0f, n ? b[worst] : 0.0f, maxb, maxd / maxb, tol);
}

static void check_golden(const char *dir) {
    golden_meta_t g = {0};
    load_meta(dir, &g);
    model_t *m = model_new(&g.spec, g.batch);
    cr_assert_not_null(m, "%s: model_new failed", dir);
    const size_t np = model_num_params(m), ns = model_num_stats(m);
    cr_assert_eq(np, g.num_params, "%s: %zu params, reference %zu", dir, np, g.num_params);
    cr_assert_eq(ns, g.num_stats, "%s: %zu stats, reference %zu", dir, ns, g.num_stats);
    const model_spec_t *sp = &g.spec;
    const size_t nx = (size_t)g.batch * sp->in_c * sp->in_h * sp->in_w, nl = (size_t)g.batch * sp->classes;

    /* Layout: every tensor name, offset and size as the reference walks docs/MODEL.md. */
    char *tens = read_file(dir, "tensors.txt", NULL);
    cr_assert_not_null(tens);
    int i = 0;
    for (char *line = strtok(tens, "\n"); line; line = strtok(NULL, "\n"), i++) {
        char name[64];
        size_t off, size;
        cr_assert_eq(sscanf(line, "%63s %zu %zu", name, &off, &size), 3);
        const model_tensor_t *t = model_tensor(m, i);
        cr_assert_not_null(t, "%s: reference has more tensors than the model", dir);
        cr_expect_str_eq(t->name, name, "%s: tensor %d is %s, reference %s", dir, i, t->name, name);
        cr_expect_eq(t->offset, off, "%s: tensor %d (%s): offset %zu, reference %zu", dir, i, name, t->offset, off);
        cr_expect_eq(t->size, size, "%s: tensor %d (%s): size %zu, reference %zu", dir, i, name, t->size, size);
    }
    cr_expect_eq(i, model_num_tensors(m), "%s: %d tensors, reference %d", dir, model_num_tensors(m), i);
    free(tens);

    float *params = must_read(dir, "params.f32", np * 4), *x = must_read(dir, "x.f32", nx * 4);
    int *y = must_read(dir, "y.i32", (size_t)g.batch * 4);
    float *logits = must_read(dir, "logits_low.f32", nl * 4), *loss = must_read(dir, "loss.f32", 12);
    float *grads = must_read(dir, "grads.f32", np * 4), *stats = must_read(dir, "stats.f32", ns * 4);
    float *after = must_read(dir, "params_after.f32", np * 4);
    float *eval_logits = must_read(dir, "eval_logits_low.f32", nl * 4);

    memcpy(model_params(m), params, np * 4);
    model_result_t r;
    model_forward(m, x, y, g.batch, 1, &r);
    expect_close("logits_low", model_logits(m), logits, nl, 1e-4, 1e-3);
    if (sp->aux) {
        float *alog = must_read(dir, "logits_aux.f32", nl * 4);
        expect_close("logits_aux", model_logits_aux(m), alog, nl, 1e-4, 1e-3);
        free(alog);
    }
    cr_expect(fabsf(r.loss_low - loss[0]) <= 1e-4f * fabsf(loss[0]), "%s: loss_low %.7g vs %.7g", dir, r.loss_low, loss[0]);
    cr_expect(fabsf(r.loss_aux - loss[1]) <= 1e-4f * fabsf(loss[1]) + 1e-7f, "%s: loss_aux %.7g vs %.7g", dir, r.loss_aux,
              loss[1]);
    cr_expect(fabsf(r.loss - loss[2]) <= 1e-4f * fabsf(loss[2]), "%s: loss %.7g vs %.7g", dir, r.loss, loss[2]);

    if (sp->wbits >= 2 && sp->wbits <= 8) {
        size_t ncodes = 0;
        for (int t = 0; t < model_num_tensors(m); t++) ncodes += model_tensor(m, t)->quantized ? model_tensor(m, t)->size : 0;
        uint8_t *codes = must_read(dir, "wcodes.u8", ncodes), *mine = malloc(ncodes);
        size_t at = 0;
        for (int t = 0; t < model_num_tensors(m); t++) {
            if (!model_tensor(m, t)->quantized) continue;
            cr_assert_eq(model_weight_codes(m, t, mine + at), 0);
            at += model_tensor(m, t)->size;
        }
        size_t diff = 0;
        for (size_t k = 0; k < ncodes; k++) diff += codes[k] != mine[k];
        cr_expect_eq(diff, 0, "%s: %zu of %zu weight codes differ from PyTorch", dir, diff, ncodes);
        free(codes);
        free(mine);
    }

    model_backward(m);
    for (int t = 0; t < model_num_tensors(m); t++) {
        const model_tensor_t *mt = model_tensor(m, t);
        char what[96];
        snprintf(what, sizeof what, "%s grad %s", dir, mt->name);
        expect_close(what, model_grads(m) + mt->offset, grads + mt->offset, mt->size, 1e-4, 1e-6);
    }
    expect_close("running stats", model_stats(m), stats, ns, 1e-4, 1e-3);

    /* One SGD step, as torch.optim.SGD with fresh momentum. */
    float *mom = calloc(np, sizeof(float));
    optim_t o = {g.lr, g.momentum, g.wd, 1, SCHED_CONSTANT, 1, 1.0f, 1, 1};
    optim_sgd(&o, optim_lr(&o, 0), model_params(m), model_grads(m), mom, np);
    expect_close("params after one step", model_params(m), after, np, 1e-5, 1e-3);

    /* Evaluation mode with the updated running statistics and the original parameters. */
    memcpy(model_params(m), params, np * 4);
    model_forward(m, x, y, g.batch, 0, NULL);
    expect_close("eval logits_low", model_logits(m), eval_logits, nl, 1e-4, 1e-3);

    free(mom); free(params); free(x); free(y); free(logits); free(loss); free(grads); free(stats); free(after);
    free(eval_logits);
    model_destroy(&m);
}

Test(model_golden, fp32_resnet8_with_aux_matches_pytorch) { check_golden("fp32_aux"); }
Test(model_golden, w2a2_with_aux_matches_pytorch) { check_golden("w2a2_aux"); }
Test(model_golden, w2a2_two_blocks_per_stage_matches_pytorch) { check_golden("w2a2_noaux_b2"); }
Test(model_golden, w1a4_with_aux_matches_pytorch) { check_golden("w1a4_aux"); }

Test(model_layout, resnet8_parameter_counts_match_method) {
    model_spec_t sp;
    model_spec_default(&sp);
    model_t *m = model_new(&sp, 2);
    cr_assert_not_null(m);
    cr_expect_eq(model_num_params(m), 87044);
    cr_expect_eq(model_num_inference_params(m), 77754);
    for (int i = 0; i < model_num_tensors(m); i++) {
        const model_tensor_t *t = model_tensor(m, i);
        cr_expect_eq(t->aux, t->offset >= 77754, "%s: aux tensors must follow the inference network", t->name);
    }
    model_destroy(&m);
    sp.aux = 0;
    m = model_new(&sp, 2);
    cr_expect_eq(model_num_params(m), 77754);
    model_destroy(&m);
    sp.blocks = 3;
    m = model_new(&sp, 2);
    cr_expect_eq(model_num_params(m), 272186);
    model_destroy(&m);
    sp.aux = 1;
    m = model_new(&sp, 2);
    cr_expect_eq(model_num_params(m), 292676);
    model_destroy(&m);
}

/* The deepest ResNet the spec allows (MODEL_MAX_BLOCKS per stage, auxiliary module) has 454
 * tensors and 150 batch norms; the model's tables once held 256 and 96, and such a spec (from a
 * config's model.blocks or an exported model's header) wrote past them. */
Test(model_layout, the_deepest_resnet_the_spec_allows_builds_and_runs) {
    model_spec_t sp;
    model_spec_default(&sp);
    sp.blocks = MODEL_MAX_BLOCKS;
    sp.widths[0] = 2, sp.widths[1] = 3, sp.widths[2] = 4;
    sp.in_h = sp.in_w = 8;
    model_t *m = model_new(&sp, 2);
    cr_assert_not_null(m);
    /* Stem 3, blocks 48 x 6, two shortcuts x 3, fc 2; auxiliary: start 3, adaptors 48 x 3, two
     * down-sampling x 3, fc 2. */
    cr_expect_eq(model_num_tensors(m), 299 + 155);
    cr_expect_eq(model_num_bns(m), 1 + 96 + 2 + 1 + 48 + 2);
    size_t np = 0, ns = 0;
    cr_expect_eq(model_spec_layout(&sp, &np, &ns), 0);
    cr_expect_eq(np, model_num_inference_params(m));
    cr_expect_eq(ns, model_num_inference_stats(m));
    model_init(m, 5);
    float x[2 * 64];
    for (int i = 0; i < 2 * 64; i++) x[i] = (float)(i % 9) * 0.25f - 1.0f;
    int y[2] = {3, 7};
    model_result_t res;
    model_forward(m, x, y, 2, 1, &res);
    model_backward(m);
    cr_expect(isfinite(res.loss), "loss %g", (double)res.loss);
    model_destroy(&m);
}

Test(model_layout, invalid_specs_are_refused) {
    model_spec_t sp;
    model_spec_default(&sp);
    char msg[128];
    sp.wbits = 9;
    cr_expect_eq(model_spec_check(&sp, msg, sizeof msg), -4);
    cr_expect_null(model_new(&sp, 4));
    model_spec_default(&sp);
    sp.arch = ARCH_MLP;
    cr_expect_neq(model_spec_check(&sp, msg, sizeof msg), 0, "aux with the MLP must be refused");
    model_spec_default(&sp);
    cr_expect_null(model_new(&sp, 0));
}

/* Central differences of the full-precision loss against the analytic gradient of a small
 * network, for a sample of parameters of every tensor. */
static void check_fd(model_spec_t *sp) {
    const int n = 3;
    model_t *m = model_new(sp, n);
    cr_assert_not_null(m);
    model_init(m, 3);
    rng_t r;
    rng_seed(&r, 11);
    const size_t nx = (size_t)n * sp->in_c * sp->in_h * sp->in_w;
    float *x = malloc(nx * sizeof(float));
    int y[3];
    for (size_t i = 0; i < nx; i++) x[i] = rng_normal(&r);
    for (int i = 0; i < n; i++) y[i] = (int)rng_below(&r, (uint32_t)sp->classes);
    float *p = model_params(m);
    /* Non-trivial batch-norm affine parameters. */
    for (int t = 0; t < model_num_tensors(m); t++) {
        const model_tensor_t *mt = model_tensor(m, t);
        if (mt->kind == MODEL_T_BN_GAMMA || mt->kind == MODEL_T_BN_BETA)
            for (size_t j = 0; j < mt->size; j++) p[mt->offset + j] += 0.3f * rng_normal(&r);
    }
    model_result_t res;
    model_forward(m, x, y, n, 1, &res);
    model_backward(m);
    float *g = malloc(model_num_params(m) * sizeof(float));
    memcpy(g, model_grads(m), model_num_params(m) * sizeof(float));
    /* ReLU kinks make the loss piecewise smooth, and a difference over a step that crosses one
     * is wrong. So a point passes when the difference at one of three step sizes agrees with the
     * analytic gradient; it fails when all three agree with each other (the loss is smooth
     * there) but not with the gradient; otherwise it is skipped, which must stay rare. */
    int bad = 0, checked = 0, skipped = 0;
    for (int t = 0; t < model_num_tensors(m); t++) {
        const model_tensor_t *mt = model_tensor(m, t);
        for (int k = 0; k < 3; k++) {
            size_t j = mt->offset + rng_below(&r, (uint32_t)mt->size);
            const double tol = 1e-3 + 2e-2 * fabs(g[j]);
            double fd[3];
            int agree = 0;
            for (int s = 0; s < 3; s++) {
                const float h = (s == 0 ? 1e-3f : s == 1 ? 3e-4f : 1e-4f) * fmaxf(1.0f, fabsf(p[j])), save = p[j];
                p[j] = save + h;
                model_forward(m, x, y, n, 1, &res);
                double lp = res.loss;
                p[j] = save - h;
                model_forward(m, x, y, n, 1, &res);
                double lm = res.loss;
                p[j] = save;
                fd[s] = (lp - lm) / (2.0 * h);
                agree |= fabs(fd[s] - g[j]) <= tol;
            }
            if (agree) {
                checked++;
            } else if (fabs(fd[0] - fd[1]) <= tol && fabs(fd[1] - fd[2]) <= tol) {
                checked++;
                bad++;
                cr_log_error("%s[%zu]: analytic %.6g, finite difference %.6g", mt->name, j - mt->offset, g[j], fd[2]);
            } else {
                skipped++;
            }
        }
    }
    cr_expect_eq(bad, 0, "%d of %d gradients disagree with finite differences", bad, checked);
    cr_expect_geq(checked, 9 * (checked + skipped) / 10, "only %d of %d points are away from kinks", checked,
                  checked + skipped);
    free(g);
    free(x);
    model_destroy(&m);
}

Test(model_fd, fp32_resnet_with_aux_gradient_matches_finite_differences) {
    model_spec_t sp;
    model_spec_default(&sp);
    sp.widths[0] = 3; sp.widths[1] = 4; sp.widths[2] = 5;
    sp.in_h = sp.in_w = 8;
    sp.blocks = 2;
    sp.wbits = sp.abits = 32;
    sp.aux_lambda = 0.7f;
    check_fd(&sp);
}

Test(model_fd, fp32_mlp_gradient_matches_finite_differences) {
    model_spec_t sp;
    model_spec_default(&sp);
    sp.arch = ARCH_MLP;
    sp.aux = 0;
    sp.hidden = 6;
    sp.in_h = sp.in_w = 4;
    sp.wbits = sp.abits = 32;
    check_fd(&sp);
}

/* Momentum 1/(k+1) on the k-th of K passes must leave the plain average of the K batches'
 * statistics: what trainer_recalibrate relies on. */
Test(model_bn, momentum_one_over_k_averages_batch_statistics) {
    model_spec_t sp;
    model_spec_default(&sp);
    sp.widths[0] = 3; sp.widths[1] = 4; sp.widths[2] = 5;
    sp.in_h = sp.in_w = 8;
    const int n = 4, K = 3;
    model_t *m = model_new(&sp, n);
    cr_assert_not_null(m);
    model_init(m, 5);
    const size_t nx = (size_t)n * 64, ns = model_num_stats(m);
    float *x = malloc(nx * K * sizeof(float)), *avg = calloc(ns, sizeof(float));
    rng_t r;
    rng_seed(&r, 9);
    for (size_t i = 0; i < nx * K; i++) x[i] = rng_normal(&r) + (float)(i / nx); /* batches differ */
    for (int k = 0; k < K; k++) { /* each batch's own statistics: momentum 1 */
        model_set_bn_momentum(m, 1.0f);
        model_forward(m, x + k * nx, NULL, n, 1, NULL);
        for (size_t i = 0; i < ns; i++) avg[i] += model_stats(m)[i] / K;
    }
    for (int k = 0; k < K; k++) {
        model_set_bn_momentum(m, 1.0f / (float)(k + 1));
        model_forward(m, x + k * nx, NULL, n, 1, NULL);
    }
    expect_close("recalibrated statistics", model_stats(m), avg, ns, 1e-5, 1e-3);
    free(x);
    free(avg);
    model_destroy(&m);
}

/* ---- memory: the activation arena (docs/MODEL.md "Memory") ---- */

/* The arena of the default network at the recipe's batch: 47.4 MB (45.2 MiB) when the buffers
 * are planned by lifetime, quantized activations kept as codes, o, s, the stem's output, the
 * shortcuts' and the auxiliary module's 1x1 convolution outputs and the last block's a_out
 * recomputed, and the adaptors' input gradients written over their output gradients; keeping
 * the 1x1 outputs took 65.0 MB, one slot per tensor and gradient 242 MB. */
Test(model_memory, resnet8_w2a2_aux_arena_at_batch_128_is_under_46_mib) {
    model_spec_t sp;
    model_spec_default(&sp);
    model_t *m = model_new(&sp, 128);
    cr_assert_not_null(m);
    const size_t arena = model_arena_bytes(m), scratch = model_scratch_bytes(m);
    cr_log_info("ResNet-8 W2A2 + aux, batch 128: arena %zu bytes, scratch %zu bytes", arena, scratch);
    cr_expect_lt(arena, (size_t)46 << 20, "arena %zu bytes", arena);
    cr_expect_lt(scratch, (size_t)3 << 20, "scratch %zu bytes (LAYER_PARTS parts)", scratch);
    model_destroy(&m);
    /* the arena scales with the batch, and nothing else in it does */
    m = model_new(&sp, 64);
    cr_assert_not_null(m);
    cr_expect_leq(model_arena_bytes(m), arena / 2 + 4096);
    model_destroy(&m);
}

/* The arena's plan must not change a result: a model sized for a larger batch, running an
 * evaluation pass (which uses a forward-only plan) between training steps, gives bit for bit the
 * losses, logits, gradients and statistics of a model sized for exactly the batch. Nor must the
 * number of threads: the first model runs on `threads`, the second on 1. */
static void check_same_results(model_spec_t sp, int threads) {
    const int n = 5, steps = 3;
    model_t *a = model_new(&sp, 11), *b = model_new(&sp, n);
    cr_assert(a != NULL && b != NULL);
    cr_assert_eq(model_set_threads(a, threads), 0);
    cr_assert_eq(model_threads(a), threads);
    model_init(a, 3);
    model_init(b, 3);
    const size_t img = (size_t)sp.in_c * sp.in_h * sp.in_w, np = model_num_params(a);
    float *x = malloc(sizeof(float) * img * n);
    int y[5];
    rng_t r;
    rng_seed(&r, 4);
    for (int s = 0; s < steps; s++) {
        for (size_t i = 0; i < img * n; i++) x[i] = rng_normal(&r);
        for (int i = 0; i < n; i++) y[i] = (int)(rng_uniform(&r) * sp.classes) % sp.classes;
        model_result_t ra, rb, re;
        model_forward(a, x, y, n, 0, &re); /* evaluation, then training on the same model */
        model_forward(a, x, y, n, 1, &ra);
        model_backward(a);
        model_forward(b, x, y, n, 1, &rb);
        model_backward(b);
        cr_assert(ra.loss == rb.loss && ra.loss_low == rb.loss_low && ra.loss_aux == rb.loss_aux,
                  "step %d: loss %a, want %a", s, (double)ra.loss, (double)rb.loss);
        cr_assert(memcmp(model_logits(a), model_logits(b), sizeof(float) * n * sp.classes) == 0);
        cr_assert(memcmp(model_grads(a), model_grads(b), sizeof(float) * np) == 0, "step %d: gradients differ", s);
        cr_assert(memcmp(model_stats(a), model_stats(b), sizeof(float) * model_num_stats(a)) == 0);
        for (size_t i = 0; i < np; i++) {
            model_params(a)[i] -= 0.1f * model_grads(a)[i];
            model_params(b)[i] -= 0.1f * model_grads(b)[i];
        }
    }
    free(x);
    model_destroy(&a);
    model_destroy(&b);
}

Test(model_memory, the_arena_plan_changes_no_result) {
    model_spec_t sp;
    model_spec_default(&sp);
    sp.widths[0] = 3; sp.widths[1] = 4; sp.widths[2] = 6;
    sp.in_h = sp.in_w = 9;
    const int bits[][2] = {{2, 2}, {32, 32}, {1, 4}, {4, 8}};
    for (size_t i = 0; i < sizeof bits / sizeof bits[0]; i++)
        for (int aux = 0; aux <= 1; aux++)
            for (int blocks = 1; blocks <= 2; blocks++) {
                sp.wbits = bits[i][0];
                sp.abits = bits[i][1];
                sp.aux = aux;
                sp.blocks = blocks;
                check_same_results(sp, 1);
            }
    model_spec_default(&sp);
    sp.arch = ARCH_MLP;
    sp.aux = 0;
    sp.hidden = 16;
    sp.in_h = sp.in_w = 6;
    check_same_results(sp, 1);
}

/* The kernels' parts are fixed (layers.h), so 2 or 3 threads give the bits of 1: with channels
 * fewer than the parts, with more, and at ResNet-8's own widths. */
Test(model_threads, the_number_of_threads_changes_no_result) {
    model_spec_t sp;
    model_spec_default(&sp);
    sp.widths[0] = 3; sp.widths[1] = 4; sp.widths[2] = 6;
    sp.in_h = sp.in_w = 9;
    const int bits[][2] = {{2, 2}, {32, 32}, {1, 4}};
    for (size_t i = 0; i < sizeof bits / sizeof bits[0]; i++)
        for (int aux = 0; aux <= 1; aux++) {
            sp.wbits = bits[i][0];
            sp.abits = bits[i][1];
            sp.aux = aux;
            sp.blocks = 2;
            check_same_results(sp, 2);
            check_same_results(sp, 3);
        }
    model_spec_default(&sp);
    check_same_results(sp, 2);
}

Test(model_threads, set_threads_refuses_counts_out_of_range) {
    model_spec_t sp;
    model_spec_default(&sp);
    model_t *m = model_new(&sp, 2);
    cr_assert_not_null(m);
    cr_assert_eq(model_threads(m), 1);
    cr_assert_eq(model_set_threads(m, 0), AUXPS_EINVAL);
    cr_assert_eq(model_set_threads(m, 257), AUXPS_EINVAL);
    cr_assert_eq(model_set_threads(m, 2), 0);
    cr_assert_eq(model_threads(m), 2);
    cr_assert_eq(model_set_threads(m, 1), 0);
    cr_assert_eq(model_threads(m), 1);
    model_destroy(&m);
}
