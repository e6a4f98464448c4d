/* test_dconv.c - the direct convolution kernels against plain double-precision loops over the
 * same padded planes, every kernel set this CPU runs (the plain C references, AVX2, AVX-512);
 * test_layers holds the convolutions that use them to finite differences. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dconv.h"
#include "util.h"

/* The kernel sets, chosen through AUXPS_DCONV (dconv.h). */
static const char *const sets[] = {"c", "avx2", "avx512"};
static const int set_levels[] = {DCONV_C, DCONV_AVX2, DCONV_AVX512};
#define N_SETS 3

/* Selects kernel set i; 0 if this CPU does not run it. */
static int use_set(int i) {
    cr_assert_eq(setenv("AUXPS_DCONV", sets[i], 1), 0);
    int forced;
    if (dconv_level(&forced) != set_levels[i]) {
        cr_log_info("this CPU does not run the %s kernels", sets[i]);
        return 0;
    }
    cr_assert_eq(forced, 1);
    cr_assert_str_eq(dconv_kernels(), sets[i]);
    return 1;
}

/* k, h, w (the plane has h + k - 1 rows of w + k - 1 columns), m outputs, kc inputs: outputs
 * that fill no block, one block, several and a part of one; positions that end a tile exactly
 * or inside any of its vectors (AVX-512: 2 of 16, AVX2: 3 of 8); 1x1 kernels, whose plane is
 * the image itself. */
static const int shapes[][5] = {
    {3, 28, 28, 16, 16}, {3, 14, 14, 32, 32}, {3, 7, 7, 64, 64}, {3, 5, 6, 3, 5},
    {5, 6, 7, 9, 4},     {3, 4, 6, 17, 11},   {3, 2, 6, 8, 1},   {3, 9, 5, 20, 7},
    {1, 7, 7, 12, 10},   {1, 14, 14, 16, 32},
};
#define N_SHAPES (sizeof shapes / sizeof shapes[0])

/* The stride-1 geometry of a shape, and its planes' size. */
static dconv_geom_t geom_of(const int *sh, size_t *plane) {
    const int k = sh[0], wp = sh[2] + k - 1;
    dconv_geom_t g;
    *plane = (size_t)(sh[1] + k - 1) * wp;
    dconv_geom_same(&g, k, wp, sh[1] * wp, *plane);
    return g;
}

/* Taps 0 .. k2 - 1 in order, or reversed. */
static void taps(int *t, int k2, int reversed) {
    for (int i = 0; i < k2; i++) t[i] = reversed ? k2 - 1 - i : i;
}

/* Planes of c channels, values in [-1, 1) everywhere (the kernels do not care what the padding
 * holds), followed by the k floats the kernels may read. */
static float *planes(int c, size_t plane, int k, util_rng_t *r) {
    const size_t n = (size_t)c * plane + k;
    float *p = util_falloc(n);
    util_fill_unif(p, n, r, -1, 1);
    return p;
}

static void check_forward(int level, const char *set) {
    util_rng_t r = {31};
    for (size_t i = 0; i < N_SHAPES; i++) {
        const int *sh = shapes[i], k = sh[0], m = sh[3], kc = sh[4], k2 = k * k;
        size_t plane;
        const dconv_geom_t g = geom_of(sh, &plane);
        int tap[DCONV_MAX_TAPS];
        taps(tap, k2, 0);
        float *p = planes(kc, plane, k, &r), *w = util_falloc((size_t)m * kc * k2);
        float *wpk = util_falloc(dconv_packed_size(m, kc, k2));
        const size_t no = (size_t)m * g.rows;
        float *o = util_falloc(no + 64);
        util_fill_unif(w, (size_t)m * kc * k2, &r, -1, 1);
        for (size_t j = 0; j < no + 64; j++) o[j] = 1e30f;
        dconv_pack(wpk, w, m, kc, k2, 0, tap, k2);
        dconv_forward(level, o, wpk, p, m, kc, &g, 0);
        for (int oc = 0; oc < m; oc++)
            for (int q = 0; q < g.rows; q++) {
                double s = 0.0;
                for (int c = 0; c < kc; c++)
                    for (int t = 0; t < k2; t++)
                        s += (double)w[((size_t)oc * kc + c) * k2 + t] *
                             p[(size_t)c * plane + q + (size_t)(t / k) * (sh[2] + k - 1) + t % k];
                const float v = o[(size_t)oc * g.rows + q];
                cr_assert(fabs(v - s) <= 1e-5 * (1.0 + fabs(s)), "%s shape %zu out %d pos %d: %.9g, double %.9g",
                          set, i, oc, q, v, s);
            }
        for (size_t j = no; j < no + 64; j++) cr_assert_eq(o[j], 1e30f, "%s shape %zu: wrote past m rows", set, i);
        float *o2 = util_falloc(no);
        for (size_t j = 0; j < no; j++) o2[j] = o[j];
        dconv_forward(level, o2, wpk, p, m, kc, &g, 1); /* acc = 1 adds the same sums again */
        for (size_t j = 0; j < no; j++) cr_assert_eq(o2[j], o[j] + o[j], "%s shape %zu: acc = 1 at %zu", set, i, j);
        free(o2);
        free(p); free(w); free(wpk); free(o);
    }
}

Test(dconv, forward_equals_double_loops_and_writes_only_m_rows) {
    for (int i = 0; i < N_SETS; i++)
        if (use_set(i)) check_forward(set_levels[i], sets[i]);
}

/* The flipped packing is the input gradient's kernel: output ci over input co, taps reversed. */
static void check_flipped(int level, const char *set) {
    util_rng_t r = {32};
    const int shape[5] = {3, 6, 5, 5, 11}; /* cout 5, cin 11: dx has 11 outputs over 5 */
    const int k = 3, cout = 5, cin = 11, k2 = 9;
    size_t plane;
    const dconv_geom_t g = geom_of(shape, &plane);
    int tap[DCONV_MAX_TAPS];
    taps(tap, k2, 1);
    float *p = planes(cout, plane, k, &r), *w = util_falloc((size_t)cout * cin * k2),
          *o = util_falloc((size_t)cin * g.rows);
    float *wpk = util_falloc(dconv_packed_size(cin, cout, k2));
    util_fill_unif(w, (size_t)cout * cin * k2, &r, -1, 1);
    dconv_pack(wpk, w, cout, cin, k2, 1, tap, k2);
    dconv_forward(level, o, wpk, p, cin, cout, &g, 0);
    for (int ci = 0; ci < cin; ci++)
        for (int q = 0; q < g.rows; q++) {
            double s = 0.0;
            for (int co = 0; co < cout; co++)
                for (int t = 0; t < k2; t++)
                    s += (double)w[((size_t)co * cin + ci) * k2 + (k2 - 1 - t)] *
                         p[(size_t)co * plane + q + (size_t)(t / k) * 7 + t % k];
            cr_assert(fabs(o[(size_t)ci * g.rows + q] - s) <= 1e-5 * (1.0 + fabs(s)), "%s dx %d pos %d", set, ci, q);
        }
    free(p); free(w); free(o); free(wpk);
}

Test(dconv, flipped_kernel_swaps_channel_axes_and_reverses_taps) {
    for (int i = 0; i < N_SETS; i++)
        if (use_set(i)) check_flipped(set_levels[i], sets[i]);
}

/* dw (k*k, cout, cin) gains the sums over the rows positions of shape sh, and keeps what it
 * held; with transposed, the input is read as (positions, cin) (dconv_weight_grad_t). */
static void check_weight_grad(const int *sh, int transposed, util_rng_t *r, size_t i, int level, const char *set) {
    const int k = sh[0], cout = sh[3], cin = sh[4], k2 = k * k;
    size_t plane;
    const dconv_geom_t g = geom_of(sh, &plane);
    const size_t nx = (size_t)cin * (plane + k);
    float *dy = planes(cout, plane, k, r), *x = util_falloc(nx);
    util_fill_unif(x, nx, r, -1, 1);
    const size_t nw = (size_t)k2 * cout * cin;
    float *dw = util_falloc(nw), *dw0 = util_falloc(nw);
    util_prefill(dw0, nw);
    for (size_t j = 0; j < nw; j++) dw[j] = dw0[j];
    if (transposed) dconv_weight_grad_t(level, dw, dy, plane, x, cout, cin, &g);
    else dconv_weight_grad(level, dw, dy, plane, x, cout, cin, &g);
    for (int t = 0; t < k2; t++)
        for (int co = 0; co < cout; co++)
            for (int ci = 0; ci < cin; ci++) {
                double s = 0.0;
                for (int q = 0; q < g.rows; q++) {
                    const size_t pos = (size_t)q + (size_t)(t / k) * (sh[2] + k - 1) + t % k;
                    s += (double)dy[(size_t)co * plane + q] * x[transposed ? pos * cin + ci : ci * plane + pos];
                }
                const size_t j = ((size_t)t * cout + co) * cin + ci;
                cr_assert(fabs(dw[j] - dw0[j] - s) <= 1e-4 * (1.0 + fabs(s)),
                          "%s %s shape %zu dw[%d][%d][%d]: %.9g, double %.9g", set,
                          transposed ? "transposed" : "planes", i, t, co, ci, dw[j] - dw0[j], s);
            }
    free(dy); free(x); free(dw); free(dw0);
}

Test(dconv, weight_grad_adds_double_loop_sums) {
    for (int k = 0; k < N_SETS; k++) {
        if (!use_set(k)) continue;
        util_rng_t r = {33};
        for (size_t i = 0; i < N_SHAPES; i++) check_weight_grad(shapes[i], 0, &r, i, set_levels[k], sets[k]);
    }
}

/* With the input transposed (cin a multiple of DCONV_WIDE): the same sums, added. */
Test(dconv, transposed_weight_grad_adds_double_loop_sums) {
    /* as shapes: input channels in groups of 64, 32 and 16 */
    const int wide[][5] = {{3, 7, 7, 64, 64}, {3, 5, 6, 13, 64}, {5, 4, 4, 7, 128}, {3, 7, 9, 20, 32},
                           {3, 4, 4, 5, 48},  {3, 6, 6, 3, 16},  {1, 5, 5, 14, 112}};
    for (int k = 0; k < N_SETS; k++) {
        if (!use_set(k)) continue;
        util_rng_t r = {34};
        for (size_t i = 0; i < sizeof wide / sizeof wide[0]; i++)
            check_weight_grad(wide[i], 1, &r, i, set_levels[k], sets[k]);
    }
}

/* The forward sums and the transposed weight gradient's run in one order on every kernel set:
 * the same bits from the references, AVX2 and AVX-512 (dconv.h). */
Test(dconv, every_kernel_set_gives_the_forward_and_transposed_weight_grad_bits_of_the_references) {
    util_rng_t r = {35};
    const int sh[5] = {3, 9, 7, 13, 32}; /* a partial block, a tile's tail; cin in groups of 16 */
    const int k = sh[0], m = sh[3], kc = sh[4], k2 = k * k;
    size_t plane;
    const dconv_geom_t g = geom_of(sh, &plane);
    int tap[DCONV_MAX_TAPS];
    taps(tap, k2, 0);
    float *p = planes(kc, plane, k, &r), *w = util_falloc((size_t)m * kc * k2),
          *wpk = util_falloc(dconv_packed_size(m, kc, k2));
    util_fill_unif(w, (size_t)m * kc * k2, &r, -1, 1);
    dconv_pack(wpk, w, m, kc, k2, 0, tap, k2);
    const size_t no = (size_t)m * g.rows, nw = (size_t)k2 * m * kc;
    float *dy = planes(m, plane, k, &r), *xt = util_falloc((size_t)kc * (plane + k));
    util_fill_unif(xt, (size_t)kc * (plane + k), &r, -1, 1);
    float *o[N_SETS], *dw[N_SETS];
    int ran = 0;
    for (int i = 0; i < N_SETS; i++) {
        o[i] = util_falloc(no);
        dw[i] = util_falloc(nw);
        if (!use_set(i)) continue;
        dconv_forward(set_levels[i], o[i], wpk, p, m, kc, &g, 0);
        dconv_weight_grad_t(set_levels[i], dw[i], dy, plane, xt, m, kc, &g);
        cr_assert(memcmp(o[i], o[0], no * sizeof(float)) == 0, "%s forward differs from the references", sets[i]);
        cr_assert(memcmp(dw[i], dw[0], nw * sizeof(float)) == 0, "%s transposed weight gradient differs", sets[i]);
        ran++;
    }
    cr_log_info("%d kernel sets compared", ran);
    for (int i = 0; i < N_SETS; i++) free(o[i]), free(dw[i]);
    free(p); free(w); free(wpk); free(dy); free(xt);
}

Test(dconv, the_environment_chooses_the_kernels) {
    int forced = -1;
    cr_assert_eq(unsetenv("AUXPS_DCONV"), 0);
    const int best = dconv_level(&forced);
    cr_assert_eq(forced, 0);
    cr_assert_eq(setenv("AUXPS_DCONV", "0", 1), 0);
    cr_assert_eq(dconv_enabled(), 0);
    cr_assert_str_eq(dconv_kernels(), "off");
    cr_assert_eq(setenv("AUXPS_DCONV", "c", 1), 0);
    cr_assert_eq(dconv_level(&forced), DCONV_C);
    cr_assert_eq(forced, 1);
    cr_assert_eq(setenv("AUXPS_DCONV", "1", 1), 0); /* not a set's name: the widest, not forced */
    cr_assert_eq(dconv_level(&forced), best);
    cr_assert_eq(forced, 0);
    cr_assert_eq(setenv("AUXPS_DCONV", "avx512", 1), 0); /* only where the CPU runs it */
    cr_assert_eq(dconv_level(NULL), best == DCONV_AVX512 ? DCONV_AVX512 : best);
}
