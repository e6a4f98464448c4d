/* test_layers.c - the layer kernels against outside references: hand-computed values, plain
 * double-precision loops written here, and central finite differences in double of
 * L = sum(c * out) for random c. Backward passes are also checked to accumulate (+=). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "layers.h"
#include "quant.h"
#include "util.h"

/* ---- helpers ---- */

static double *dalloc(size_t n) {
    double *p = calloc(n ? n : 1, sizeof(double));
    cr_assert_not_null(p);
    return p;
}

static double *to_double(const float *p, size_t n) {
    double *d = dalloc(n);
    for (size_t i = 0; i < n; i++) d[i] = p[i];
    return d;
}

/* got[i] - base[i] (base NULL: 0) must equal want[i] within atol + rtol * |want[i]|. */
static void assert_close(const float *got, const float *base, const double *want, size_t n,
                         double atol, double rtol, const char *what) {
    for (size_t i = 0; i < n; i++) {
        double g = (double)got[i] - (base ? (double)base[i] : 0.0);
        cr_assert(isfinite(g) && fabs(g - want[i]) <= atol + rtol * fabs(want[i]),
                  "%s[%zu]: got %.9g, want %.9g", what, i, g, want[i]);
    }
}

/* Central finite differences: g[i] = (L(p + eps e_i) - L(p - eps e_i)) / (2 eps), where the
 * loss reads p through ctx. */
typedef double (*loss_fn)(const void *ctx);

static void fd_grad(double *g, double *p, size_t n, double eps, loss_fn f, const void *ctx) {
    for (size_t i = 0; i < n; i++) {
        const double v = p[i];
        p[i] = v + eps;
        const double lp = f(ctx);
        p[i] = v - eps;
        const double lm = f(ctx);
        p[i] = v;
        g[i] = (lp - lm) / (2.0 * eps);
    }
}

/* ---- convolution ---- */

/* Double-precision convolution written from the input's side (scatter): input pixel (iy, ix)
 * meets kernel tap (ky, kx) at output oy = (iy + pad - ky) / stride when that divides exactly.
 * Independent of the gather loops in conv2d_forward_ref. */
static void conv_scatter_double(double *out, const double *x, const double *w, const conv_shape_t *s) {
    memset(out, 0, sizeof(double) * (size_t)s->n * s->cout * s->ho * s->wo);
    for (int n = 0; n < s->n; n++)
        for (int ci = 0; ci < s->cin; ci++)
            for (int iy = 0; iy < s->h; iy++)
                for (int ix = 0; ix < s->w; ix++) {
                    const double xv = x[(((size_t)n * s->cin + ci) * s->h + iy) * s->w + ix];
                    for (int ky = 0; ky < s->k; ky++) {
                        const int ty = iy + s->pad - ky;
                        if (ty < 0 || ty % s->stride != 0 || ty / s->stride >= s->ho) continue;
                        const int oy = ty / s->stride;
                        for (int kx = 0; kx < s->k; kx++) {
                            const int tx = ix + s->pad - kx;
                            if (tx < 0 || tx % s->stride != 0 || tx / s->stride >= s->wo) continue;
                            const int ox = tx / s->stride;
                            for (int co = 0; co < s->cout; co++)
                                out[(((size_t)n * s->cout + co) * s->ho + oy) * s->wo + ox] +=
                                    xv * w[(((size_t)co * s->cin + ci) * s->k + ky) * s->k + kx];
                        }
                    }
                }
}

typedef struct {
    const conv_shape_t *s;
    double *x, *w, *c, *out;
} conv_ctx_t;

static double conv_loss(const void *p) {
    const conv_ctx_t *cx = p;
    const size_t no = (size_t)cx->s->n * cx->s->cout * cx->s->ho * cx->s->wo;
    conv_scatter_double(cx->out, cx->x, cx->w, cx->s);
    double l = 0.0;
    for (size_t i = 0; i < no; i++) l += cx->c[i] * cx->out[i];
    return l;
}

/* n, cin, h, w, cout, k, stride, pad: k = 1, 3, 5; stride 1, 2; pad 0, 1, 2; non-square; batch > 1;
 * channel counts that are not powers of two; the 1x1 stride-1 pad-0 pointwise path; uncovered
 * input rows (h = 6, k = 3, stride 2, pad 0); batches of 9, whose parts hold several images,
 * so that im2col reuses the padding's zeros of a part's first image; and stride-1 convolutions
 * as large as their input with at least 4 channels in and out, which run as shifted sgemms over
 * a padded plane (k = 3 and 5, non-square, batch 9), beside one with 3 channels out, which
 * does not on the sgemm path; small planes with 16 or 64 channels in, stride 1 and 2, whose
 * direct weight gradient reads the input transposed (dconv.h); one input channel, as the stem,
 * which the direct kernels too run over the padded plane; and a 1x1 convolution of stride 3,
 * whose im2col only picks pixels. The convolutions run both ways: with the direct kernels where
 * the CPU has them, and with the sgemms (conv_paths). */
static const int conv_cases[][8] = {
    {2, 3, 7, 5, 5, 3, 1, 1},  {3, 5, 9, 6, 7, 3, 2, 1}, {2, 3, 8, 11, 6, 5, 1, 2},
    {1, 6, 10, 7, 3, 5, 2, 2}, {2, 7, 6, 9, 5, 1, 1, 0}, {2, 5, 7, 8, 3, 1, 2, 0},
    {2, 3, 5, 6, 4, 1, 1, 1},  {1, 3, 6, 6, 2, 3, 2, 0}, {2, 3, 7, 7, 3, 3, 1, 0},
    {1, 2, 5, 5, 3, 5, 1, 0},  {2, 12, 4, 4, 20, 3, 1, 1}, {3, 1, 9, 4, 1, 3, 2, 2},
    {9, 2, 5, 4, 3, 3, 1, 1},  {9, 2, 7, 6, 3, 3, 2, 1},   {9, 1, 6, 6, 2, 3, 2, 0},
    {9, 2, 6, 5, 2, 5, 1, 2},  {9, 5, 6, 7, 4, 3, 1, 1},   {3, 4, 5, 6, 6, 5, 1, 2},
    {2, 8, 7, 7, 4, 3, 1, 1},  {2, 4, 5, 5, 3, 3, 1, 1},  {2, 5, 11, 11, 9, 3, 1, 1},
    {1, 64, 3, 3, 4, 3, 1, 1},  {1, 16, 6, 6, 4, 3, 2, 1}, {2, 16, 4, 4, 5, 3, 1, 1},
    {3, 1, 7, 6, 5, 3, 1, 1},   {2, 4, 7, 7, 3, 1, 3, 0},
};
#define N_CONV_CASES (sizeof conv_cases / sizeof conv_cases[0])

/* AUXPS_DCONV for each pass over the cases (dconv.h): the paths training takes on this CPU,
 * the AVX2 kernels on every convolution (the widest the CPU runs, if it has no AVX2), the plain
 * C references on every convolution, then the sgemms. Criterion runs every test in a process
 * of its own. */
static const char *const conv_paths[] = {"1", "avx2", "c", "0"};
#define N_CONV_PATHS 4

static void conv_path(int p) {
    cr_assert_eq(setenv("AUXPS_DCONV", conv_paths[p], 1), 0);
}

static void conv_case(conv_shape_t *s, size_t i) {
    const int *c = conv_cases[i];
    conv_shape_init(s, c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]);
}

Test(layers, conv_shape_init_computes_output_size_and_scratch) {
    conv_shape_t s;
    conv_shape_init(&s, 2, 3, 7, 5, 4, 3, 2, 1);
    cr_assert_eq(s.ho, 4);
    cr_assert_eq(s.wo, 3);
    /* stride 2, 3x3: room for im2col (cin*k*k, ho*wo) and for the direct kernels' phase planes,
     * the larger: the packed kernel (8 outputs by 4 inputs, 9 taps), and per part the phase
     * planes (3 channels of 4 planes of 5 x 5, each channel followed by k floats, so that they
     * can be laid out transposed), room to align dout's plane (16 floats), dout's plane (4
     * channels of 6 x 5, 32 floats apart) followed by k floats, the output or a phase of dx (the
     * larger of 4 x 20 and 3 x 25), and the partial dw (cout, cin, k, k) */
    const size_t phases = (size_t)3 * (4 * 25 + 3) + 16 + 4 * 32 + 3 + 80;
    cr_assert_eq(conv_scratch_size(&s), (size_t)8 * 4 * 9 + LAYER_PARTS * (phases + 4 * 3 * 3 * 3));
    cr_assert_eq(conv_scratch_size_codes(&s), conv_scratch_size(&s) + (size_t)LAYER_PARTS * 3 * 7 * 5);
    conv_shape_init(&s, 2, 3, 7, 5, 4, 1, 1, 0);
    cr_assert_eq(s.ho, 7);
    cr_assert_eq(s.wo, 5);
    /* a 1x1 convolution's kernel, packed for the direct kernels (dconv.h): the larger of 8
     * outputs by cin or 8 by cout */
    cr_assert_eq(conv_scratch_size(&s), (size_t)8 * 4 + LAYER_PARTS * 4 * 3,
                 "1x1 stride-1 pad-0 conv: the packed kernel and the partial dw");
    conv_shape_init(&s, 2, 4, 7, 5, 4, 1, 1, 0);
    cr_assert_eq(conv_scratch_size(&s), (size_t)8 * 4 + LAYER_PARTS * (4 * 7 * 5 + 4 * 4),
                 "1x1 conv with cin == cout: one image, for dx over dout, and the partial dw");
    conv_shape_init(&s, 1, 2, 6, 6, 4, 1, 2, 0);
    cr_assert_eq(s.ho, 3);
    cr_assert_eq(conv_scratch_size(&s), (size_t)8 * 4 + LAYER_PARTS * (2 * 3 * 3 + 4 * 2));
    /* stride 1, as large as its input, 3 channels in: the sgemms' backward im2col of dout
     * (cout*k*k, h*w) per part, larger than the direct kernels' planes (3 + 4 channels of 9 x 7,
     * each followed by k floats, and 4 x 7 rows of 7), and the kernel packed for the direct
     * kernels' input gradient (8 outputs by 4 inputs, times 3 x 3), larger than one flipped
     * kernel */
    conv_shape_init(&s, 2, 3, 7, 5, 4, 3, 1, 1);
    cr_assert_eq(conv_scratch_size(&s),
                 (size_t)8 * 4 * 3 * 3 + LAYER_PARTS * ((size_t)4 * 3 * 3 * 7 * 5 + 4 * 3 * 3 * 3));
    /* stride 1, as large as its input, 4 channels or more each side: the kernel by tap or packed
     * for the direct kernels (the larger of 8 outputs by 6 inputs or 8 by 4, times 3 x 3), and
     * per part the padded input and dout planes (9 x 7 in 64 floats, each followed by k floats)
     * with room to align dout's (16 floats), the uncropped output (the larger channel count
     * times 7 rows of 7), and the partial dw (6 x 4 x 3 x 3); codes are decoded straight into
     * the input plane */
    conv_shape_init(&s, 2, 4, 7, 5, 6, 3, 1, 1);
    const size_t planes = (size_t)(4 + 6) * (64 + 3) + 16, out = (size_t)6 * 7 * 7;
    const size_t packed = (size_t)8 * 6 * 3 * 3, dw = (size_t)6 * 4 * 3 * 3;
    cr_assert_eq(conv_scratch_size(&s), packed + LAYER_PARTS * (planes + out + dw));
    cr_assert_eq(conv_scratch_size_codes(&s), conv_scratch_size(&s));
}

/* 4x4 input 1..16, 3x3 all-ones kernel, stride 2, pad 1: window sums computed by hand. */
Test(layers, conv2d_forward_matches_hand_computed_window_sums) {
    conv_shape_t s;
    conv_shape_init(&s, 1, 1, 4, 4, 1, 3, 2, 1);
    float x[16], w[9], out[4], ref[4], *col = util_falloc(conv_scratch_size(&s));
    for (int i = 0; i < 16; i++) x[i] = (float)(i + 1);
    for (int i = 0; i < 9; i++) w[i] = 1.0f;
    conv2d_forward(NULL, out, x, w, &s, col);
    free(col);
    conv2d_forward_ref(ref, x, w, &s);
    const float want[4] = {14, 30, 57, 99};
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(out[i], want[i], "fast out[%d] = %g, want %g", i, out[i], want[i]);
        cr_assert_eq(ref[i], want[i], "ref out[%d] = %g, want %g", i, ref[i], want[i]);
    }
}

/* A single tap at (ky, kx) = (0, 2) with pad 1 reads x[oy - 1][ox + 1]: cross-correlation, as
 * PyTorch, not a flipped-kernel convolution. */
Test(layers, conv2d_forward_is_cross_correlation_not_flipped) {
    conv_shape_t s;
    conv_shape_init(&s, 1, 1, 4, 4, 1, 3, 1, 1);
    float x[16], w[9] = {0}, out[16], ref[16], col[8 * 9 + LAYER_PARTS * (9 * 16 + 9)];
    cr_assert_eq(conv_scratch_size(&s), sizeof col / sizeof col[0]);
    for (int i = 0; i < 16; i++) x[i] = (float)(i + 1);
    w[2] = 1.0f;
    conv2d_forward(NULL, out, x, w, &s, col);
    conv2d_forward_ref(ref, x, w, &s);
    for (int oy = 0; oy < 4; oy++)
        for (int ox = 0; ox < 4; ox++) {
            const int iy = oy - 1, ix = ox + 1;
            const float want = (iy >= 0 && ix < 4) ? x[iy * 4 + ix] : 0.0f;
            cr_assert_eq(out[oy * 4 + ox], want, "fast (%d,%d) = %g, want %g", oy, ox, out[oy * 4 + ox], want);
            cr_assert_eq(ref[oy * 4 + ox], want, "ref (%d,%d) = %g, want %g", oy, ox, ref[oy * 4 + ox], want);
        }
}

/* The fast path equals conv2d_forward_ref, and both equal the scatter reference in double. The
 * scratch buffer is exactly conv_scratch_size floats (ASan catches overruns), NULL for the
 * pointwise path, and starts as NaN (so a padding zero left unwritten shows); the output is
 * overwritten, not accumulated. */
Test(layers, conv2d_forward_matches_ref_for_all_shapes) {
    util_rng_t r = {1};
    for (int path = 0; path < N_CONV_PATHS; path++) {
        conv_path(path);
        for (size_t t = 0; t < N_CONV_CASES; t++) {
            conv_shape_t s;
            conv_case(&s, t);
            const size_t nx = (size_t)s.n * s.cin * s.h * s.w, nw = (size_t)s.cout * s.cin * s.k * s.k;
            const size_t no = (size_t)s.n * s.cout * s.ho * s.wo, ncol = conv_scratch_size(&s);
            float *x = util_falloc(nx), *w = util_falloc(nw), *out = util_falloc(no), *ref = util_falloc(no);
            float *col = ncol ? util_falloc(ncol) : NULL;
            util_fill_unif(x, nx, &r, -1, 1);
            util_fill_unif(w, nw, &r, -1, 1);
            for (size_t i = 0; i < no; i++) out[i] = 1e30f;
            for (size_t i = 0; i < ncol; i++) col[i] = NAN;
            conv2d_forward(NULL, out, x, w, &s, col);
            conv2d_forward_ref(ref, x, w, &s);
            double *xd = to_double(x, nx), *wd = to_double(w, nw), *od = dalloc(no);
            conv_scatter_double(od, xd, wd, &s);
            for (size_t i = 0; i < no; i++) {
                cr_assert(fabsf(out[i] - ref[i]) <= 1e-5f * (1.0f + fabsf(ref[i])),
                          "AUXPS_DCONV=%s case %zu out[%zu]: fast %.9g, ref %.9g",
conv_paths[path], t, i, out[i], ref[i]);
                cr_assert(fabs(ref[i] - od[i]) <= 1e-6 * (1.0 + fabs(od[i])),
                          "AUXPS_DCONV=%s case %zu out[%zu]: ref %.9g, double %.9g",
conv_paths[path], t, i, ref[i], od[i]);
            }
            free(x); free(w); free(out); free(ref); free(col); free(xd); free(wd); free(od);
        }
    }
}

/* dx and dw against central differences of L = sum(c * conv(x, w)) in double; conv is linear,
 * so the difference quotient is exact up to rounding. The gradients are added to pre-filled
 * buffers, and a second call with dx = NULL still adds the same dw. */
/* acc = 1 adds to what dx held; acc = 0 overwrites dx, which starts as NaN here, so any read of
 * the old contents would show. */
Test(layers, conv2d_backward_matches_finite_differences_and_accumulates_or_overwrites) {
    util_rng_t r = {2};
    for (int path = 0; path < N_CONV_PATHS; path++) {
        conv_path(path);
        for (size_t t = 0; t < N_CONV_CASES; t++) {
            conv_shape_t s;
            conv_case(&s, t);
            const size_t nx = (size_t)s.n * s.cin * s.h * s.w, nw = (size_t)s.cout * s.cin * s.k * s.k;
            const size_t no = (size_t)s.n * s.cout * s.ho * s.wo, ncol = conv_scratch_size(&s);
            float *x = util_falloc(nx), *w = util_falloc(nw), *c = util_falloc(no);
            float *dx = util_falloc(nx), *dw = util_falloc(nw), *dx0 = util_falloc(nx), *dw0 = util_falloc(nw),
                  *dw2 = util_falloc(nw);
            float *col = ncol ? util_falloc(ncol) : NULL, *dxo = util_falloc(nx), *dw3 = util_falloc(nw);
            util_fill_unif(x, nx, &r, -1, 1);
            util_fill_unif(w, nw, &r, -1, 1);
            util_fill_unif(c, no, &r, -1, 1);
            util_prefill(dx0, nx);
            util_prefill(dw0, nw);
            memcpy(dx, dx0, sizeof(float) * nx);
            memcpy(dw, dw0, sizeof(float) * nw);
            memcpy(dw2, dw0, sizeof(float) * nw);
            memcpy(dw3, dw0, sizeof(float) * nw);
            for (size_t i = 0; i < nx; i++) dxo[i] = NAN;
            for (size_t i = 0; i < ncol; i++) col[i] = NAN; /* as in the forward test */
            conv2d_backward(NULL, dx, dw, c, x, w, &s, col, 1);
            for (size_t i = 0; i < ncol; i++) col[i] = NAN;
            conv2d_backward(NULL, NULL, dw2, c, x, w, &s, col, 1);
            conv2d_backward(NULL, dxo, dw3, c, x, w, &s, col, 0);

            conv_ctx_t cx = {&s, to_double(x, nx), to_double(w, nw), to_double(c, no), dalloc(no)};
            double *gx = dalloc(nx), *gw = dalloc(nw);
            fd_grad(gx, cx.x, nx, 1e-2, conv_loss, &cx);
            fd_grad(gw, cx.w, nw, 1e-2, conv_loss, &cx);
            cr_log_info("AUXPS_DCONV=%s conv case %zu: %zu dx and %zu dw values checked", conv_paths[path], t, nx, nw);
            assert_close(dx, dx0, gx, nx, 1e-4, 1e-4, "conv dx");
            assert_close(dw, dw0, gw, nw, 1e-4, 1e-4, "conv dw");
            assert_close(dw2, dw0, gw, nw, 1e-4, 1e-4, "conv dw (dx = NULL)");
            assert_close(dxo, NULL, gx, nx, 1e-4, 1e-4, "conv dx (acc = 0)");
            assert_close(dw3, dw0, gw, nw, 1e-4, 1e-4, "conv dw (acc = 0)");
            free(x); free(w); free(c); free(dx); free(dw); free(dx0); free(dw0); free(dw2); free(col);
            free(dxo); free(dw3);
            free(cx.x); free(cx.w); free(cx.c); free(cx.out); free(gx); free(gw);
        }
    }
}

/* ---- batch norm ---- */

typedef struct {
    int n, c, hw;
    double *x, *gamma, *beta, *coef;
} bn_ctx_t;

/* L = sum(coef * y), y the training-mode batch norm computed in double (biased variance). */
static double bn_loss(const void *p) {
    const bn_ctx_t *b = p;
    const double m = (double)b->n * b->hw;
    double l = 0.0;
    for (int ch = 0; ch < b->c; ch++) {
        double mu = 0.0, var = 0.0;
        for (int i = 0; i < b->n; i++)
            for (int j = 0; j < b->hw; j++) mu += b->x[((size_t)i * b->c + ch) * b->hw + j];
        mu /= m;
        for (int i = 0; i < b->n; i++)
            for (int j = 0; j < b->hw; j++) {
                const double d = b->x[((size_t)i * b->c + ch) * b->hw + j] - mu;
                var += d * d;
            }
        var /= m;
        for (int i = 0; i < b->n; i++)
            for (int j = 0; j < b->hw; j++) {
                const size_t k = ((size_t)i * b->c + ch) * b->hw + j;
                l += b->coef[k] * (b->gamma[ch] * (b->x[k] - mu) / sqrt(var + 1e-5) + b->beta[ch]);
            }
    }
    return l;
}

/* Input whose channels have different means and spreads. */
static void bn_fill_input(float *x, int n, int c, int hw, util_rng_t *r) {
    for (int i = 0; i < n; i++)
        for (int ch = 0; ch < c; ch++)
            for (int j = 0; j < hw; j++)
                x[((size_t)i * c + ch) * hw + j] = (float)(1.5 * ch - 2.0 + (0.5 + 0.5 * ch) * util_rng_unif(r, -1, 1));
}

Test(layers, batchnorm_training_normalises_to_beta_mean_and_gamma_std) {
    enum { N = 4, C = 3, HW = 5 };
    const double m = N * HW;
    util_rng_t r = {3};
    float x[N * C * HW], y[N * C * HW], mean[C], rstd[C];
    float gamma[C] = {1.5f, -0.7f, 0.3f}, beta[C] = {0.25f, -1.0f, 2.0f};
    float rmean[C] = {0.5f, -0.25f, 1.0f}, rvar[C] = {2.0f, 0.5f, 1.0f};
    const float rmean0[C] = {0.5f, -0.25f, 1.0f}, rvar0[C] = {2.0f, 0.5f, 1.0f};
    bn_fill_input(x, N, C, HW, &r);
    batchnorm_forward(NULL, y, x, gamma, beta, mean, rstd, rmean, rvar, N, C, HW, 1, 0.1f);
    for (int ch = 0; ch < C; ch++) {
        double mu = 0.0, sq = 0.0, ym = 0.0, ysq = 0.0;
        for (int i = 0; i < N; i++)
            for (int j = 0; j < HW; j++) mu += x[(i * C + ch) * HW + j];
        mu /= m;
        for (int i = 0; i < N; i++)
            for (int j = 0; j < HW; j++) {
                const double d = x[(i * C + ch) * HW + j] - mu;
                sq += d * d;
                ym += y[(i * C + ch) * HW + j];
            }
        ym /= m;
        for (int i = 0; i < N; i++)
            for (int j = 0; j < HW; j++) {
                const double d = y[(i * C + ch) * HW + j] - ym;
                ysq += d * d;
            }
        const double var = sq / m, ystd = sqrt(ysq / m);
        const double want_std = fabs(gamma[ch]) * sqrt(var / (var + 1e-5));
        cr_assert(fabs(ym - beta[ch]) <= 1e-5, "channel %d: output mean %.9g, want beta %g", ch, ym, beta[ch]);
        cr_assert(fabs(ystd - want_std) <= 1e-5 * want_std, "channel %d: output std %.9g, want %.9g", ch, ystd, want_std);
        cr_assert(fabs(mean[ch] - mu) <= 1e-6 * (1 + fabs(mu)), "channel %d: saved mean %.9g, want %.9g", ch, mean[ch], mu);
        const double want_rstd = 1.0 / sqrt(var + 1e-5);
        cr_assert(fabs(rstd[ch] - want_rstd) <= 1e-6 * want_rstd, "channel %d: saved rstd %.9g, want %.9g", ch, rstd[ch], want_rstd);
        /* PyTorch: momentum 0.1 and the unbiased variance (m / (m - 1) = 20/19 here). */
        const double want_rm = 0.9 * rmean0[ch] + 0.1 * mu, want_rv = 0.9 * rvar0[ch] + 0.1 * sq / (m - 1);
        cr_assert(fabs(rmean[ch] - want_rm) <= 1e-6 * (1 + fabs(want_rm)), "channel %d: running mean %.9g, want %.9g", ch, rmean[ch], want_rm);
        cr_assert(fabs(rvar[ch] - want_rv) <= 1e-6 * want_rv, "channel %d: running var %.9g, want %.9g", ch, rvar[ch], want_rv);
    }
}

Test(layers, batchnorm_eval_uses_running_stats_and_leaves_them_unchanged) {
    enum { N = 3, C = 2, HW = 4 };
    util_rng_t r = {4};
    float x[N * C * HW], y[N * C * HW], mean[C] = {0}, rstd[C] = {0};
    const float gamma[C] = {1.25f, -0.5f}, beta[C] = {0.5f, 3.0f};
    float rmean[C] = {0.3f, -4.0f}, rvar[C] = {2.5f, 0.04f};
    bn_fill_input(x, N, C, HW, &r);
    batchnorm_forward(NULL, y, x, gamma, beta, mean, rstd, rmean, rvar, N, C, HW, 0, 0.1f);
    cr_assert(rmean[0] == 0.3f && rmean[1] == -4.0f, "eval changed the running mean");
    cr_assert(rvar[0] == 2.5f && rvar[1] == 0.04f, "eval changed the running variance");
    for (int i = 0; i < N; i++)
        for (int ch = 0; ch < C; ch++)
            for (int j = 0; j < HW; j++) {
                const int k = (i * C + ch) * HW + j;
                const double want = gamma[ch] * ((double)x[k] - rmean[ch]) / sqrt((double)rvar[ch] + 1e-5) + beta[ch];
                cr_assert(fabs(y[k] - want) <= 1e-5 * (1 + fabs(want)), "y[%d] = %.9g, want %.9g", k, y[k], want);
            }
}

/* dx, dgamma, dbeta against central differences in double of L = sum(c * y), y the training
 * forward pass; added to pre-filled buffers. A second call with dx = NULL adds the same dgamma,
 * dbeta. */
Test(layers, batchnorm_backward_matches_finite_differences_and_accumulates_or_overwrites) {
    enum { N = 3, C = 4, HW = 5, NX = N * C * HW };
    util_rng_t r = {5};
    float x[NX], y[NX], coef[NX], mean[C], rstd[C], rmean[C] = {0}, rvar[C] = {1, 1, 1, 1};
    float gamma[C], beta[C];
    float dx[NX], dx0[NX], dg[C], dg0[C], db[C], db0[C], dg2[C], db2[C], dxo[NX], dg3[C], db3[C];
    bn_fill_input(x, N, C, HW, &r);
    util_fill_unif(gamma, C, &r, 0.5, 1.5);
    gamma[2] = -gamma[2];
    util_fill_unif(beta, C, &r, -1, 1);
    util_fill_unif(coef, NX, &r, -1, 1);
    util_prefill(dx0, NX);
    util_prefill(dg0, C);
    for (int i = 0; i < C; i++) db0[i] = 0.125f * (float)i - 1.0f;
    memcpy(dx, dx0, sizeof dx);
    memcpy(dg, dg0, sizeof dg);
    memcpy(db, db0, sizeof db);
    memcpy(dg2, dg0, sizeof dg);
    memcpy(db2, db0, sizeof db);
    batchnorm_forward(NULL, y, x, gamma, beta, mean, rstd, rmean, rvar, N, C, HW, 1, 0.1f);
    memcpy(dg3, dg0, sizeof dg);
    memcpy(db3, db0, sizeof db);
    for (int i = 0; i < NX; i++) dxo[i] = NAN;
    batchnorm_backward(NULL, dx, dg, db, coef, x, gamma, mean, rstd, N, C, HW, 1);
    batchnorm_backward(NULL, NULL, dg2, db2, coef, x, gamma, mean, rstd, N, C, HW, 1);
    batchnorm_backward(NULL, dxo, dg3, db3, coef, x, gamma, mean, rstd, N, C, HW, 0);

    bn_ctx_t b = {N, C, HW, to_double(x, NX), to_double(gamma, C), to_double(beta, C), to_double(coef, NX)};
    double gx[NX], gg[C], gb[C];
    fd_grad(gx, b.x, NX, 1e-5, bn_loss, &b);
    fd_grad(gg, b.gamma, C, 1e-5, bn_loss, &b);
    fd_grad(gb, b.beta, C, 1e-5, bn_loss, &b);
    assert_close(dx, dx0, gx, NX, 2e-5, 1e-3, "bn dx");
    assert_close(dg, dg0, gg, C, 2e-5, 1e-4, "bn dgamma");
    assert_close(db, db0, gb, C, 2e-5, 1e-4, "bn dbeta");
    assert_close(dg2, dg0, gg, C, 2e-5, 1e-4, "bn dgamma (dx = NULL)");
    assert_close(db2, db0, gb, C, 2e-5, 1e-4, "bn dbeta (dx = NULL)");
    assert_close(dxo, NULL, gx, NX, 2e-5, 1e-3, "bn dx (acc = 0)");
    assert_close(dg3, dg0, gg, C, 2e-5, 1e-4, "bn dgamma (acc = 0)");
    assert_close(db3, db0, gb, C, 2e-5, 1e-4, "bn dbeta (acc = 0)");
    free(b.x); free(b.gamma); free(b.beta); free(b.coef);
}

/* The fused batch norm + activation equals the two kernels it replaces: the forward exactly, the
 * backward up to the order of the float sums. hw = 300 spans two of the kernels' chunks. */
Test(layers, batchnorm_act_fused_matches_batchnorm_then_quantizer) {
    enum { N = 3, C = 4, HW = 300, NX = N * C * HW };
    const int ks[] = {1, 2, 4, 32};
    util_rng_t r = {11};
    float *x = util_falloc(NX), *y = util_falloc(NX), *yr = util_falloc(NX), *t = util_falloc(NX),
          *dy = util_falloc(NX);
    float *dt = util_falloc(NX), *dx = util_falloc(NX), *dxr = util_falloc(NX);
    float gamma[C], beta[C], mean[C], rstd[C], meanr[C], rstdr[C];
    float rm[C] = {0}, rv[C] = {1, 1, 1, 1}, rmr[C] = {0}, rvr[C] = {1, 1, 1, 1};
    bn_fill_input(x, N, C, HW, &r);
    util_fill_unif(gamma, C, &r, 0.2, 0.8);
    gamma[1] = -gamma[1];
    util_fill_unif(beta, C, &r, 0, 1);
    util_fill_unif(dy, NX, &r, -1, 1);
    for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++) {
        const int k = ks[ki];
        batchnorm_act_forward(NULL, y, x, gamma, beta, mean, rstd, rm, rv, N, C, HW, 1, 0.1f, k);
        batchnorm_forward(NULL, t, x, gamma, beta, meanr, rstdr, rmr, rvr, N, C, HW, 1, 0.1f);
        quant_act_forward(yr, t, NX, k);
        for (int i = 0; i < NX; i++) cr_assert_eq(y[i], yr[i], "k = %d: y[%d] = %g, want %g", k, i, y[i], yr[i]);
        for (int ch = 0; ch < C; ch++)
            cr_assert(mean[ch] == meanr[ch] && rstd[ch] == rstdr[ch] && rm[ch] == rmr[ch] && rv[ch] == rvr[ch]);
        for (int acc = 0; acc <= 1; acc++) {
            float dg[C] = {0}, db[C] = {0}, dgr[C] = {0}, dbr[C] = {0};
            util_prefill(dx, NX);
            util_prefill(dxr, NX);
            if (!acc)
                for (int i = 0; i < NX; i++) dx[i] = NAN;
            batchnorm_act_backward(NULL, dx, dg, db, dy, x, gamma, beta, mean, rstd, N, C, HW, k, acc);
            quant_act_backward(dt, dy, t, NX, k, 0);
            batchnorm_backward(NULL, dxr, dgr, dbr, dt, x, gamma, meanr, rstdr, N, C, HW, acc);
            for (int i = 0; i < NX; i++)
                cr_assert(fabsf(dx[i] - dxr[i]) <= 1e-6f + 1e-5f * fabsf(dxr[i]), "k = %d acc = %d: dx[%d] = %.9g, want %.9g",
                          k, acc, i, dx[i], dxr[i]);
            for (int ch = 0; ch < C; ch++) {
                cr_assert(fabsf(dg[ch] - dgr[ch]) <= 1e-5f + 1e-5f * fabsf(dgr[ch]), "k = %d: dgamma[%d]", k, ch);
                cr_assert(fabsf(db[ch] - dbr[ch]) <= 1e-5f + 1e-5f * fabsf(dbr[ch]), "k = %d: dbeta[%d]", k, ch);
            }
        }
    }
    free(x); free(y); free(yr); free(t); free(dy); free(dt); free(dx); free(dxr);
}

/* y = BN(x) + r equals batchnorm_forward then add_forward exactly, also in place (r = y). */
Test(layers, batchnorm_add_matches_batchnorm_then_add_in_place_too) {
    enum { N = 3, C = 4, HW = 7, NX = N * C * HW };
    util_rng_t r = {12};
    float x[NX], res[NX], y[NX], yr[NX], t[NX], gamma[C], beta[C], mean[C], rstd[C], mr[C], sr[C];
    float rm[C] = {0}, rv[C] = {1, 1, 1, 1}, rmr[C] = {0}, rvr[C] = {1, 1, 1, 1};
    bn_fill_input(x, N, C, HW, &r);
    util_fill_unif(res, NX, &r, -2, 2);
    util_fill_unif(gamma, C, &r, -1, 1);
    util_fill_unif(beta, C, &r, -1, 1);
    batchnorm_forward(NULL, t, x, gamma, beta, mr, sr, rmr, rvr, N, C, HW, 1, 0.1f);
    add_forward(yr, t, res, NX);
    batchnorm_add_forward(NULL, y, x, res, gamma, beta, mean, rstd, rm, rv, N, C, HW, 1, 0.1f);
    for (int i = 0; i < NX; i++) cr_assert_eq(y[i], yr[i], "y[%d] = %.9g, want %.9g", i, y[i], yr[i]);
    memcpy(y, res, sizeof y);
    batchnorm_add_forward(NULL, y, x, y, gamma, beta, mean, rstd, rm, rv, N, C, HW, 0, 0.1f);
    batchnorm_forward(NULL, t, x, gamma, beta, mr, sr, rmr, rvr, N, C, HW, 0, 0.1f);
    add_forward(yr, t, res, NX);
    for (int i = 0; i < NX; i++) cr_assert_eq(y[i], yr[i], "in place, eval: y[%d] = %.9g, want %.9g", i, y[i], yr[i]);
}

/* ---- elementwise ---- */

Test(layers, relu_forward_zeroes_non_positive_and_backward_passes_where_output_positive) {
    const float x[] = {-3.0f, -1e-30f, 0.0f, -0.0f, 1e-30f, 0.5f, 7.25f, -0.5f};
    enum { N = sizeof x / sizeof x[0] };
    const int pass[N] = {0, 0, 0, 0, 1, 1, 1, 0};
    float y[N], dy[N], dx[N];
    for (int i = 0; i < N; i++) y[i] = 99.0f;
    relu_forward(y, x, N);
    for (int i = 0; i < N; i++) {
        const float want = pass[i] ? x[i] : 0.0f;
        cr_assert(y[i] == want && !signbit(y[i]), "relu(%g) = %g, want %g", x[i], y[i], want);
        dy[i] = 1.0f + (float)i;
    }
    util_prefill(dx, N);
    relu_backward(dx, dy, y, N, 1);
    for (int i = 0; i < N; i++) {
        const float want = util_prefill_value(i) + (pass[i] ? dy[i] : 0.0f);
        cr_assert_eq(dx[i], want, "relu dx[%d] (x = %g) = %g, want %g", i, x[i], dx[i], want);
    }
    for (int i = 0; i < N; i++) dx[i] = NAN;
    relu_backward(dx, dy, y, N, 0);
    for (int i = 0; i < N; i++)
        cr_assert_eq(dx[i], pass[i] ? dy[i] : 0.0f, "relu dx[%d] (acc = 0) = %g", i, dx[i]);
}

Test(layers, add_forward_sums_elementwise) {
    const float a[] = {1.0f, -2.5f, 0.0f, 1e20f, 3.0f}, b[] = {0.5f, 2.5f, -0.0f, -1e20f, -7.0f};
    const float want[] = {1.5f, 0.0f, 0.0f, 0.0f, -4.0f};
    float y[5];
    add_forward(y, a, b, 5);
    for (int i = 0; i < 5; i++) cr_assert_eq(y[i], want[i], "y[%d] = %g, want %g", i, y[i], want[i]);
}

/* ---- average pool ---- */

typedef struct { size_t len; int hw; double *x, *coef; } pool_ctx_t;

static double pool_loss(const void *p) {
    const pool_ctx_t *c = p;
    double l = 0.0;
    for (size_t i = 0; i < c->len / c->hw; i++) {
        double s = 0.0;
        for (int j = 0; j < c->hw; j++) s += c->x[i * c->hw + j];
        l += c->coef[i] * s / c->hw;
    }
    return l;
}

Test(layers, avgpool_averages_each_channel_and_backward_spreads_evenly) {
    enum { N = 2, C = 3, HW = 6, NX = N * C * HW };
    util_rng_t r = {6};
    float x[NX], y[N * C], dy[N * C], dx[NX], dx0[NX];
    util_fill_unif(x, NX, &r, -2, 2);
    util_fill_unif(dy, N * C, &r, -1, 1);
    avgpool_forward(y, x, N, C, HW);
    for (int i = 0; i < N * C; i++) {
        double s = 0.0;
        for (int j = 0; j < HW; j++) s += x[i * HW + j];
        cr_assert(fabs(y[i] - s / HW) <= 1e-6, "y[%d] = %.9g, want %.9g", i, y[i], s / HW);
    }
    util_prefill(dx0, NX);
    memcpy(dx, dx0, sizeof dx);
    avgpool_backward(dx, dy, N, C, HW, 1);
    pool_ctx_t c = {NX, HW, to_double(x, NX), to_double(dy, N * C)};
    double g[NX];
    fd_grad(g, c.x, NX, 1e-3, pool_loss, &c);
    assert_close(dx, dx0, g, NX, 1e-6, 1e-5, "avgpool dx");
    for (int i = 0; i < NX; i++) dx[i] = NAN;
    avgpool_backward(dx, dy, N, C, HW, 0);
    assert_close(dx, NULL, g, NX, 1e-6, 1e-5, "avgpool dx (acc = 0)");
    free(c.x); free(c.coef);
}

/* ---- linear ---- */

typedef struct { int n, in, out; double *x, *w, *b, *coef; } lin_ctx_t;

static void linear_double(double *y, const lin_ctx_t *c) {
    for (int i = 0; i < c->n; i++)
        for (int o = 0; o < c->out; o++) {
            double s = c->b ? c->b[o] : 0.0;
            for (int k = 0; k < c->in; k++) s += c->x[i * c->in + k] * c->w[o * c->in + k];
            y[i * c->out + o] = s;
        }
}

static double linear_loss(const void *p) {
    const lin_ctx_t *c = p;
    double y[64], l = 0.0;
    linear_double(y, c);
    for (int i = 0; i < c->n * c->out; i++) l += c->coef[i] * y[i];
    return l;
}

static void check_linear(int with_bias, uint64_t seed) {
    enum { N = 4, IN = 7, OUT = 5 };
    util_rng_t r = {seed};
    float x[N * IN], w[OUT * IN], b[OUT], y[N * OUT], dy[N * OUT];
    float dx[N * IN], dx0[N * IN], dw[OUT * IN], dw0[OUT * IN], dw2[OUT * IN], db[OUT], db0[OUT], db2[OUT];
    util_fill_unif(x, N * IN, &r, -1, 1);
    util_fill_unif(w, OUT * IN, &r, -1, 1);
    util_fill_unif(b, OUT, &r, -1, 1);
    util_fill_unif(dy, N * OUT, &r, -1, 1);
    for (int i = 0; i < N * OUT; i++) y[i] = 1e30f;
    linear_forward(y, x, w, with_bias ? b : NULL, N, IN, OUT);

    lin_ctx_t c = {N, IN, OUT, to_double(x, N * IN), to_double(w, OUT * IN), with_bias ? to_double(b, OUT) : NULL,
                   to_double(dy, N * OUT)};
    double yd[N * OUT];
    linear_double(yd, &c);
    assert_close(y, NULL, yd, N * OUT, 1e-5, 1e-5, with_bias ? "linear y (bias)" : "linear y (no bias)");

    util_prefill(dx0, N * IN);
    util_prefill(dw0, OUT * IN);
    for (int i = 0; i < OUT; i++) db0[i] = -0.75f + 0.5f * (float)i;
    memcpy(dx, dx0, sizeof dx);
    memcpy(dw, dw0, sizeof dw);
    memcpy(dw2, dw0, sizeof dw);
    memcpy(db, db0, sizeof db);
    memcpy(db2, db0, sizeof db);
    linear_backward(dx, dw, with_bias ? db : NULL, dy, x, w, N, IN, OUT, 1);
    linear_backward(NULL, dw2, with_bias ? db2 : NULL, dy, x, w, N, IN, OUT, 1);

    double gx[N * IN], gw[OUT * IN];
    fd_grad(gx, c.x, N * IN, 1e-2, linear_loss, &c);
    fd_grad(gw, c.w, OUT * IN, 1e-2, linear_loss, &c);
    assert_close(dx, dx0, gx, N * IN, 1e-5, 1e-5, "linear dx");
    assert_close(dw, dw0, gw, OUT * IN, 1e-5, 1e-5, "linear dw");
    assert_close(dw2, dw0, gw, OUT * IN, 1e-5, 1e-5, "linear dw (dx = NULL)");
    float dxo[N * IN];
    for (int i = 0; i < N * IN; i++) dxo[i] = NAN;
    linear_backward(dxo, dw2, NULL, dy, x, w, N, IN, OUT, 0);
    assert_close(dxo, NULL, gx, N * IN, 1e-5, 1e-5, "linear dx (acc = 0)");
    if (with_bias) {
        double gb[OUT];
        fd_grad(gb, c.b, OUT, 1e-2, linear_loss, &c);
        assert_close(db, db0, gb, OUT, 1e-5, 1e-5, "linear db");
        assert_close(db2, db0, gb, OUT, 1e-5, 1e-5, "linear db (dx = NULL)");
    } else {
        for (int i = 0; i < OUT; i++) cr_assert_eq(db[i], db0[i], "db touched although NULL was passed");
    }
    free(c.x); free(c.w); free(c.b); free(c.coef);
}

Test(layers, linear_with_bias_matches_reference_and_finite_differences) { check_linear(1, 7); }

Test(layers, linear_without_bias_matches_reference_and_finite_differences) { check_linear(0, 8); }

/* ---- softmax cross-entropy ---- */

typedef struct { int n, classes; const int *y; double *logits; } xent_ctx_t;

static double xent_loss(const void *p) {
    const xent_ctx_t *c = p;
    double l = 0.0;
    for (int i = 0; i < c->n; i++) {
        const double *r = c->logits + (size_t)i * c->classes;
        double mx = r[0], s = 0.0;
        for (int k = 1; k < c->classes; k++) mx = fmax(mx, r[k]);
        for (int k = 0; k < c->classes; k++) s += exp(r[k] - mx);
        l += log(s) + mx - r[c->y[i]];
    }
    return l / c->n;
}

/* Row 0: logits (0, ln 2, ln 3) give p = (1/6, 2/6, 3/6), label 2: loss ln 2. Row 1: equal
 * logits, 3 classes: loss ln 3. Mean: ln 6 / 2. */
Test(layers, softmax_xent_loss_matches_hand_computation) {
    const float logits[6] = {0.0f, (float)log(2.0), (float)log(3.0), 5.0f, 5.0f, 5.0f};
    const int y[2] = {2, 0};
    const float loss = softmax_xent(logits, y, 2, 3, NULL, 0.0f, NULL);
    cr_assert(fabs(loss - log(6.0) / 2) <= 1e-6, "loss %.9g, want ln(6)/2 = %.9g", loss, log(6.0) / 2);
}

/* dlogits = scale * d(mean loss)/dlogits, against central differences in double, for two scales;
 * dlogits is overwritten, not accumulated. */
Test(layers, softmax_xent_dlogits_match_finite_differences_times_scale) {
    enum { N = 5, K = 7 };
    util_rng_t r = {9};
    float logits[N * K], d[N * K];
    const int y[N] = {0, 6, 3, 3, 1};
    util_fill_unif(logits, N * K, &r, -3, 3);
    xent_ctx_t c = {N, K, y, to_double(logits, N * K)};
    double g[N * K], gs[N * K];
    fd_grad(g, c.logits, N * K, 1e-5, xent_loss, &c);
    const float scales[2] = {1.0f, 0.7f};
    for (int s = 0; s < 2; s++) {
        util_prefill(d, N * K);
        const float loss = softmax_xent(logits, y, N, K, d, scales[s], NULL);
        cr_assert(fabs(loss - xent_loss(&c)) <= 1e-6 * (1 + xent_loss(&c)), "loss %.9g, want %.9g", loss, xent_loss(&c));
        for (int i = 0; i < N * K; i++) gs[i] = scales[s] * g[i];
        assert_close(d, NULL, gs, N * K, 1e-7, 1e-5, "dlogits");
    }
    free(c.logits);
}

Test(layers, softmax_xent_counts_correct_argmax_predictions) {
    /* argmaxes 0, 2, 1, 1, 3 against labels 0, 2, 2, 1, 0: three right. */
    const float logits[5 * 4] = {
        3, 1, 2, 0,   -1, -2, 4, 0,   0, 5, 1, 2,   -3, -1, -2, -4,   0, 1, 2, 9,
    };
    const int y[5] = {0, 2, 2, 1, 0};
    int correct = -1;
    float d[20];
    const float l1 = softmax_xent(logits, y, 5, 4, NULL, 0.0f, &correct);
    cr_assert_eq(correct, 3);
    correct = -1;
    const float l2 = softmax_xent(logits, y, 5, 4, d, 1.0f, &correct);
    cr_assert_eq(correct, 3);
    cr_assert_eq(l1, l2, "the loss depends on whether dlogits is requested");
}

/* Logits around +-1e4 would overflow exp() without the max shift: the result must equal that of
 * the shifted logits (0, -1, -2, -2e4), computed by hand. */
Test(layers, softmax_xent_is_stable_for_huge_logits) {
    const float logits[2 * 4] = {1e4f, 1e4f - 1, 1e4f - 2, -1e4f, -1e4f, -1e4f + 3, -1e4f + 1, -1e4f + 2};
    const int y[2] = {1, 0};
    float d[8];
    const double z0 = 1 + exp(-1.0) + exp(-2.0);              /* row 0 shifted by 1e4 */
    const double z1 = exp(-3.0) + 1 + exp(-2.0) + exp(-1.0);  /* row 1 shifted by -1e4 + 3 */
    const double want = ((log(z0) + 1.0) + (log(z1) + 3.0)) / 2;
    const float loss = softmax_xent(logits, y, 2, 4, d, 1.0f, NULL);
    cr_assert(isfinite(loss) && fabs(loss - want) <= 1e-5, "loss %.9g, want %.9g", loss, want);
    const double p[8] = {1 / z0, exp(-1.0) / z0, exp(-2.0) / z0, 0,
                         exp(-3.0) / z1, 1 / z1, exp(-2.0) / z1, exp(-1.0) / z1};
    for (int i = 0; i < 8; i++) {
        const double wd = (p[i] - (i == 1 || i == 4)) / 2;
        cr_assert(isfinite(d[i]) && fabs(d[i] - wd) <= 1e-6, "dlogits[%d] = %.9g, want %.9g", i, d[i], wd);
    }
}

/* ---- compact activations and in-place backward passes (the model's arena, docs/MODEL.md) ---- */

static void fill_codes(uint8_t *q, size_t n, int k, util_rng_t *r) {
    for (size_t i = 0; i < n; i++) q[i] = (uint8_t)(util_rng_next(r) % (1u << k));
}

/* A convolution reading k-bit codes computes exactly what it computes on their decoded floats:
 * output, input gradient (overwritten and accumulated) and weight gradient, bit for bit. */
Test(layers, conv2d_on_codes_equals_conv2d_on_decoded_floats_bit_exactly) {
    util_rng_t r = {21};
    for (int path = 0; path < N_CONV_PATHS; path++) {
        conv_path(path);
        for (size_t t = 0; t < N_CONV_CASES; t++) {
            conv_shape_t s;
            conv_case(&s, t);
            const int k = 1 + (int)(t % 3);
            const size_t nx = (size_t)s.n * s.cin * s.h * s.w, nw = (size_t)s.cout * s.cin * s.k * s.k;
            const size_t no = (size_t)s.n * s.cout * s.ho * s.wo, ncol = conv_scratch_size_codes(&s);
            /* shifted convolutions (layers.c conv_is_shifted) decode into their input plane */
            const int shifted = s.stride == 1 && s.k > 1 && 2 * s.pad == s.k - 1 && s.cin >= 4 && s.cout >= 4;
            cr_assert_geq(ncol, conv_scratch_size(&s) + (shifted ? 0 : (size_t)s.cin * s.h * s.w));
            uint8_t *q = malloc(nx);
            float *x = util_falloc(nx), *w = util_falloc(nw), *dout = util_falloc(no), *col = util_falloc(ncol);
            float *o1 = util_falloc(no), *o2 = util_falloc(no), *dx1 = util_falloc(nx), *dx2 = util_falloc(nx),
                  *dw1 = util_falloc(nw), *dw2 = util_falloc(nw);
            cr_assert_not_null(q);
            fill_codes(q, nx, k, &r);
            quant_act_decode(x, q, nx, k);
            util_fill_unif(w, nw, &r, -1, 1);
            util_fill_unif(dout, no, &r, -1, 1);
            conv2d_forward(NULL, o1, x, w, &s, col);
            conv2d_forward_codes(NULL, o2, q, k, w, &s, col);
            cr_assert(memcmp(o1, o2, sizeof(float) * no) == 0, "AUXPS_DCONV=%s case %zu: forward differs",
                      conv_paths[path], t);
            for (int acc = 0; acc <= 1; acc++) {
                util_prefill(dx1, nx);
                util_prefill(dx2, nx);
                util_prefill(dw1, nw);
                util_prefill(dw2, nw);
                conv2d_backward(NULL, dx1, dw1, dout, x, w, &s, col, acc);
                conv2d_backward_codes(NULL, dx2, dw2, dout, q, k, w, &s, col, acc);
                cr_assert(memcmp(dx1, dx2, sizeof(float) * nx) == 0, "AUXPS_DCONV=%s case %zu acc %d: dx differs",
                          conv_paths[path], t, acc);
                cr_assert(memcmp(dw1, dw2, sizeof(float) * nw) == 0, "AUXPS_DCONV=%s case %zu acc %d: dw differs",
                          conv_paths[path], t, acc);
            }
            free(q); free(x); free(w); free(dout); free(col); free(o1); free(o2);
            free(dx1); free(dx2); free(dw1); free(dw2);
        }
    }
}

/* With acc = 0 the input gradient may overwrite the input itself: same dx and dw, bit for bit. */
Test(layers, conv2d_backward_in_place_over_its_input_equals_separate_buffers) {
    util_rng_t r = {22};
    for (int path = 0; path < N_CONV_PATHS; path++) {
        conv_path(path);
        for (size_t t = 0; t < N_CONV_CASES; t++) {
            conv_shape_t s;
            conv_case(&s, t);
            const size_t nx = (size_t)s.n * s.cin * s.h * s.w, nw = (size_t)s.cout * s.cin * s.k * s.k;
            const size_t no = (size_t)s.n * s.cout * s.ho * s.wo, ncol = conv_scratch_size(&s);
            float *x = util_falloc(nx), *w = util_falloc(nw), *dout = util_falloc(no),
                  *col = ncol ? util_falloc(ncol) : NULL;
            float *dx = util_falloc(nx), *dw1 = util_falloc(nw), *dw2 = util_falloc(nw);
            util_fill_unif(x, nx, &r, -1, 1);
            util_fill_unif(w, nw, &r, -1, 1);
            util_fill_unif(dout, no, &r, -1, 1);
            util_prefill(dw1, nw);
            util_prefill(dw2, nw);
            conv2d_backward(NULL, dx, dw1, dout, x, w, &s, col, 0);
            conv2d_backward(NULL, x, dw2, dout, x, w, &s, col, 0);
            cr_assert(memcmp(dx, x, sizeof(float) * nx) == 0, "AUXPS_DCONV=%s case %zu: dx differs in place",
                      conv_paths[path], t);
            cr_assert(memcmp(dw1, dw2, sizeof(float) * nw) == 0, "AUXPS_DCONV=%s case %zu: dw differs in place",
                      conv_paths[path], t);
            free(x); free(w); free(dout); free(col); free(dx); free(dw1); free(dw2);
        }
    }
}

/* A 1x1 convolution with cin == cout writes dx over dout, image by image through its scratch,
 * with the bits of separate buffers, on any number of threads. */
Test(layers, pointwise_conv_backward_over_its_output_gradient_equals_separate_buffers) {
    util_rng_t r = {23};
    const int shapes[][4] = {{5, 8, 7, 7}, {1, 3, 4, 6}, {9, 16, 3, 3}}; /* n, c, h, w */
    pool_t *pool = pool_new(3);
    cr_assert_not_null(pool);
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        conv_shape_t s;
        conv_shape_init(&s, shapes[t][0], shapes[t][1], shapes[t][2], shapes[t][3], shapes[t][1], 1, 1, 0);
        const size_t nx = (size_t)s.n * s.cin * s.h * s.w, nw = (size_t)s.cout * s.cin;
        float *x = util_falloc(nx), *w = util_falloc(nw), *dout = util_falloc(nx),
              *col = util_falloc(conv_scratch_size(&s));
        float *dx = util_falloc(nx), *dw1 = util_falloc(nw), *dw2 = util_falloc(nw);
        util_fill_unif(x, nx, &r, -1, 1);
        util_fill_unif(w, nw, &r, -1, 1);
        util_fill_unif(dout, nx, &r, -1, 1);
        util_prefill(dw1, nw);
        util_prefill(dw2, nw);
        conv2d_backward(NULL, dx, dw1, dout, x, w, &s, col, 0);
        conv2d_backward(pool, dout, dw2, dout, x, w, &s, col, 0);
        cr_assert(memcmp(dx, dout, sizeof(float) * nx) == 0, "case %zu: dx differs over dout", t);
        cr_assert(memcmp(dw1, dw2, sizeof(float) * nw) == 0, "case %zu: dw differs over dout", t);
        free(x); free(w); free(dout); free(col); free(dx); free(dw1); free(dw2);
    }
    pool_destroy(&pool);
}

/* The batch-norm kernels that write or read codes equal the float ones on decoded values, and
 * batchnorm_recompute gives back what the training-mode forward pass wrote, bit for bit. */
Test(layers, batchnorm_codes_and_recompute_equal_the_forward_pass_bit_exactly) {
    enum { N = 3, C = 4, HW = 300, NX = N * C * HW };
    util_rng_t r = {23};
    float *x = util_falloc(NX), *y = util_falloc(NX), *yr = util_falloc(NX), *res = util_falloc(NX),
          *t = util_falloc(NX);
    uint8_t *q = malloc(NX), *rq = malloc(NX);
    float gamma[C], beta[C], mean[C], rstd[C], meanr[C], rstdr[C];
    cr_assert(q != NULL && rq != NULL);
    bn_fill_input(x, N, C, HW, &r);
    util_fill_unif(gamma, C, &r, 0.2, 0.8);
    util_fill_unif(beta, C, &r, 0, 1);
    for (int k = 1; k <= QUANT_CODE_MAX_BITS; k++) {
        float rm[C] = {0}, rv[C] = {1, 1, 1, 1}, rmr[C] = {0}, rvr[C] = {1, 1, 1, 1};
        batchnorm_act_forward(NULL, yr, x, gamma, beta, meanr, rstdr, rmr, rvr, N, C, HW, 1, 0.1f, k);
        batchnorm_act_forward_codes(NULL, q, x, gamma, beta, mean, rstd, rm, rv, N, C, HW, 1, 0.1f, k);
        quant_act_decode(y, q, NX, k);
        cr_assert(memcmp(y, yr, sizeof(float) * NX) == 0, "k = %d: codes of A(BN(x)) differ", k);
        for (int ch = 0; ch < C; ch++)
            cr_assert(mean[ch] == meanr[ch] && rstd[ch] == rstdr[ch] && rm[ch] == rmr[ch] && rv[ch] == rvr[ch]);

        fill_codes(rq, NX, k, &r);
        quant_act_decode(res, rq, NX, k);
        batchnorm_add_forward(NULL, yr, x, res, gamma, beta, meanr, rstdr, rmr, rvr, N, C, HW, 1, 0.1f);
        batchnorm_add_forward_codes(NULL, y, x, rq, k, gamma, beta, mean, rstd, rm, rv, N, C, HW, 1, 0.1f);
        cr_assert(memcmp(y, yr, sizeof(float) * NX) == 0, "k = %d: BN(x) + codes differs", k);
        batchnorm_recompute(NULL, y, x, NULL, rq, k, gamma, beta, mean, rstd, N, C, HW);
        cr_assert(memcmp(y, yr, sizeof(float) * NX) == 0, "k = %d: recomputed BN(x) + codes differs", k);
    }
    float rm[C] = {0}, rv[C] = {1, 1, 1, 1};
    batchnorm_forward(NULL, yr, x, gamma, beta, mean, rstd, rm, rv, N, C, HW, 1, 0.1f);
    batchnorm_recompute(NULL, y, x, NULL, NULL, 0, gamma, beta, mean, rstd, N, C, HW);
    cr_assert(memcmp(y, yr, sizeof(float) * NX) == 0, "recomputed BN(x) differs");
    util_fill_unif(res, NX, &r, -2, 2);
    memcpy(t, res, sizeof(float) * NX);
    batchnorm_add_forward(NULL, yr, x, res, gamma, beta, mean, rstd, rm, rv, N, C, HW, 1, 0.1f);
    batchnorm_recompute(NULL, t, x, t, NULL, 0, gamma, beta, mean, rstd, N, C, HW);
    cr_assert(memcmp(t, yr, sizeof(float) * NX) == 0, "recomputed BN(x) + r in place differs");
    free(x); free(y); free(yr); free(res); free(t); free(q); free(rq);
}

/* With acc = 0 a batch norm's input gradient may overwrite its input: bit for bit the same. */
Test(layers, batchnorm_backward_in_place_over_its_input_equals_separate_buffers) {
    enum { N = 3, C = 4, HW = 300, NX = N * C * HW };
    util_rng_t r = {24};
    float *x = util_falloc(NX), *x2 = util_falloc(NX), *dy = util_falloc(NX), *dx = util_falloc(NX);
    float gamma[C], beta[C], mean[C], rstd[C], rm[C] = {0}, rv[C] = {1, 1, 1, 1};
    bn_fill_input(x, N, C, HW, &r);
    util_fill_unif(gamma, C, &r, 0.2, 0.8);
    util_fill_unif(beta, C, &r, 0, 1);
    util_fill_unif(dy, NX, &r, -1, 1);
    batchnorm_forward(NULL, dx, x, gamma, beta, mean, rstd, rm, rv, N, C, HW, 1, 0.1f);
    for (int k = 0; k <= 2; k++) {
        float dg1[C] = {0}, db1[C] = {0}, dg2[C] = {0}, db2[C] = {0};
        memcpy(x2, x, sizeof(float) * NX);
        if (k == 0) {
            batchnorm_backward(NULL, dx, dg1, db1, dy, x, gamma, mean, rstd, N, C, HW, 0);
            batchnorm_backward(NULL, x2, dg2, db2, dy, x2, gamma, mean, rstd, N, C, HW, 0);
        } else {
            batchnorm_act_backward(NULL, dx, dg1, db1, dy, x, gamma, beta, mean, rstd, N, C, HW, k, 0);
            batchnorm_act_backward(NULL, x2, dg2, db2, dy, x2, gamma, beta, mean, rstd, N, C, HW, k, 0);
        }
        cr_assert(memcmp(dx, x2, sizeof(float) * NX) == 0, "k = %d: dx differs in place", k);
        cr_assert(memcmp(dg1, dg2, sizeof dg1) == 0 && memcmp(db1, db2, sizeof db1) == 0, "k = %d", k);
    }
    free(x); free(x2); free(dy); free(dx);
}
