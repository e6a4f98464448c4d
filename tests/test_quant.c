/* test_quant.c - the DoReFa quantizers against docs/MODEL.md: q_k's levels and half-to-even
 * rounding at exact halves, the activation quantizer's clipping and straight-through mask, the
 * weight quantizer's codes, and its backward pass against central finite differences in double
 * of the smooth surrogate f(w) = tanh(w) / max|tanh(w)| that the STE leaves. */
#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "quant.h"
#include "util.h"

/* ---- helpers ---- */

static double levels_of(int k) { return (double)((1 << k) - 1); }

/* Index of the largest |w|. */
static size_t argmax_abs(const float *w, size_t n) {
    size_t best = 0;
    for (size_t i = 1; i < n; i++)
        if (fabsf(w[i]) > fabsf(w[best])) best = i;
    return best;
}

/* The surrogate the STE leaves once round() is replaced by the identity:
 * f_i(w) = 2 u_i - 1 = tanh(w_i) / max_j |tanh(w_j)|. L = sum(c_i f_i) in double. */
typedef struct { size_t n; double *w; const double *c; } wq_ctx_t;

static double wq_loss(const wq_ctx_t *x) {
    double m = 0.0, l = 0.0;
    for (size_t i = 0; i < x->n; i++) m = fmax(m, fabs(tanh(x->w[i])));
    for (size_t i = 0; i < x->n; i++) l += x->c[i] * tanh(x->w[i]) / m;
    return l;
}

static void wq_fd_grad(double *g, wq_ctx_t *x, double eps) {
    for (size_t i = 0; i < x->n; i++) {
        const double v = x->w[i];
        x->w[i] = v + eps;
        const double lp = wq_loss(x);
        x->w[i] = v - eps;
        const double lm = wq_loss(x);
        x->w[i] = v;
        g[i] = (lp - lm) / (2.0 * eps);
    }
}

/* ---- q_k ---- */

Test(quant, qk_two_bits_has_levels_zero_third_two_thirds_one) {
    const float x[] = {0.0f, 0.1f, 0.2f, 0.4f, 0.5f, 0.6f, 0.8f, 0.9f, 1.0f};
    const int code[] = {0, 0, 1, 1, 2, 2, 2, 3, 3}; /* round(3x), 0.5 -> 1.5 -> 2 (even) */
    for (size_t i = 0; i < sizeof x / sizeof x[0]; i++) {
        const float q = quant_qk(x[i], 2);
        cr_assert(fabs(q - code[i] / 3.0) <= 1e-7, "q_2(%g) = %.9g, want %d/3", x[i], q, code[i]);
    }
}

/* k = 1 (one level step): halves go to the even neighbour, unlike round-half-away-from-zero,
 * which would give 1, 2, 3, 4 and -1, -2. */
Test(quant, qk_rounds_exact_halves_to_even_for_one_bit) {
    const float x[] = {0.5f, 1.5f, 2.5f, 3.5f, -0.5f, -1.5f, -2.5f};
    const float want[] = {0.0f, 2.0f, 2.0f, 4.0f, 0.0f, -2.0f, -2.0f};
    for (size_t i = 0; i < sizeof x / sizeof x[0]; i++)
        cr_assert(quant_qk(x[i], 1) == want[i], "q_1(%g) = %g, want %g", x[i], quant_qk(x[i], 1), want[i]);
}

/* For every k, (2^k - 1) * 0.5 = 2^(k-1) - 1/2 lies between the odd 2^(k-1) - 1 and the even
 * 2^(k-1) (k >= 2), so q_k(0.5) = 2^(k-1) / (2^k - 1). Every other x = (j + 1/2) / (2^k - 1) whose
 * float product with 2^k - 1 is exactly j + 1/2 rounds to the even one of j, j + 1. */
Test(quant, qk_rounds_exact_halves_to_even_for_all_bit_widths) {
    int checked = 0;
    for (int k = 1; k <= 8; k++) {
        const float L = (float)levels_of(k);
        const double want_half = k == 1 ? 0.0 : (double)(1 << (k - 1)) / L;
        cr_assert(fabs(quant_qk(0.5f, k) - want_half) <= 1e-7, "q_%d(0.5) = %.9g, want %.9g", k, quant_qk(0.5f, k), want_half);
        for (int j = 0; j < (1 << k) - 1; j++) {
            const float x = ((float)j + 0.5f) / L;
            if (x * L != (float)j + 0.5f) continue; /* not an exact half in float */
            const int even = (j % 2 == 0) ? j : j + 1;
            cr_assert(fabs(quant_qk(x, k) - even / (double)L) <= 1e-7, "q_%d(%.9g) = %.9g, want %d/%g", k, x,
                      quant_qk(x, k), even, L);
            checked++;
        }
    }
    cr_log_info("%d exact halves checked", checked);
    cr_assert_geq(checked, 100, "only %d exact halves found", checked);
}

/* On a fine grid over [0, 1]: every output is one of the 2^k levels j / (2^k - 1), all 2^k occur,
 * and the output is within half a step of the input. */
Test(quant, qk_has_two_to_the_k_levels_within_half_a_step) {
    for (int k = 1; k <= 8; k++) {
        const double L = levels_of(k);
        int seen[256] = {0}, distinct = 0;
        for (int i = 0; i <= 10000; i++) {
            const float x = (float)i / 10000.0f, q = quant_qk(x, k);
            const double j = q * L;
            cr_assert(fabs(j - nearbyint(j)) <= 1e-4 && j >= -1e-4 && j <= L + 1e-4, "q_%d(%g) = %.9g is not a level", k, x, q);
            cr_assert(fabs(q - x) <= 0.5 / L + 1e-6, "q_%d(%g) = %.9g is more than half a step away", k, x, q);
            const int code = (int)nearbyint(j);
            distinct += !seen[code];
            seen[code] = 1;
        }
        cr_assert_eq(distinct, 1 << k, "k = %d: %d distinct levels", k, distinct);
    }
}

/* ---- activations ---- */

Test(quant, act_output_has_two_to_the_k_levels_and_clips_to_unit_interval) {
    enum { N = 4001 };
    float x[N], y[N];
    for (int i = 0; i < N; i++) x[i] = -0.5f + 2.0f * (float)i / (N - 1);
    for (int k = 1; k <= 8; k++) {
        const double L = levels_of(k);
        int seen[256] = {0}, distinct = 0;
        quant_act_forward(y, x, N, k);
        for (int i = 0; i < N; i++) {
            const double clipped = fmin(fmax(x[i], 0.0), 1.0), j = y[i] * L;
            cr_assert(y[i] >= 0.0f && y[i] <= 1.0f, "k = %d: a(%g) = %g outside [0, 1]", k, x[i], y[i]);
            cr_assert(fabs(j - nearbyint(j)) <= 1e-4, "k = %d: a(%g) = %.9g is not a level", k, x[i], y[i]);
            cr_assert(fabs(y[i] - clipped) <= 0.5 / L + 1e-6, "k = %d: a(%g) = %.9g too far from clip", k, x[i], y[i]);
            const int code = (int)nearbyint(j);
            distinct += !seen[code];
            seen[code] = 1;
        }
        cr_assert_eq(distinct, 1 << k, "k = %d: %d distinct levels", k, distinct);
    }
    const float xs[] = {-7.0f, -1e-7f, 0.0f, 1.0f, 1.0000001f, 12.5f};
    const float want[] = {0.0f, 0.0f, 0.0f, 1.0f, 1.0f, 1.0f};
    float ys[6];
    for (int k = 1; k <= 8; k++) {
        quant_act_forward(ys, xs, 6, k);
        for (int i = 0; i < 6; i++) cr_assert_eq(ys[i], want[i], "k = %d: a(%g) = %g, want %g", k, xs[i], ys[i], want[i]);
    }
}

/* Activations round as q_k does: x = 0.5 with k = 1 gives 0, not 1, and every exact half
 * x = (j + 1/2) / (2^k - 1) in [0, 1] goes to the even neighbour. */
Test(quant, act_rounds_exact_halves_to_even) {
    int checked = 0;
    for (int k = 1; k <= 8; k++) {
        const float L = (float)levels_of(k);
        for (int j = 0; j < (1 << k) - 1; j++) {
            const float x = ((float)j + 0.5f) / L;
            if (x * L != (float)j + 0.5f) continue; /* not an exact half in float */
            float y;
            quant_act_forward(&y, &x, 1, k);
            const int even = (j % 2 == 0) ? j : j + 1;
            cr_assert(fabs(y - even / (double)L) <= 1e-7, "k = %d: a(%.9g) = %.9g, want %d/%g", k, x, y, even, L);
            checked++;
        }
    }
    cr_assert_geq(checked, 100, "only %d exact halves found", checked);
}

/* dx += dy exactly where 0 <= x <= 1, both ends included; 0 elsewhere. */
Test(quant, act_ste_passes_gradient_inside_clip_inclusive_and_accumulates_or_overwrites) {
    const float x[] = {-1.0f, -1e-7f, -0.0f, 0.0f, 0.3f, 0.999f, 1.0f, 1.0000001f, 2.0f, -5.0f};
    enum { N = sizeof x / sizeof x[0] };
    const int pass[N] = {0, 0, 1, 1, 1, 1, 1, 0, 0, 0};
    float dy[N], dx[N];
    for (int i = 0; i < N; i++) dy[i] = 1.5f + (float)i;
    for (int k = 1; k <= 8; k++) {
        util_prefill(dx, N);
        quant_act_backward(dx, dy, x, N, k, 1);
        for (int i = 0; i < N; i++) {
            const float want = util_prefill_value(i) + (pass[i] ? dy[i] : 0.0f);
            cr_assert_eq(dx[i], want, "k = %d: dx at x = %g is %g, want %g", k, x[i], dx[i], want);
        }
        for (int i = 0; i < N; i++) dx[i] = NAN;
        quant_act_backward(dx, dy, x, N, k, 0);
        for (int i = 0; i < N; i++)
            cr_assert_eq(dx[i], pass[i] ? dy[i] : 0.0f, "k = %d, acc = 0: dx at x = %g is %g", k, x[i], dx[i]);
    }
}

/* k = 32: plain ReLU, neither clipped at 1 nor quantized; gradient where x > 0 only (0 at x = 0,
 * as PyTorch's ReLU, unlike the k < 32 mask). */
Test(quant, act_full_precision_is_relu_with_relu_gradient) {
    const float x[] = {-2.0f, -0.0f, 0.0f, 0.37f, 1.7f, 123.456f, -1e-30f, 1e-30f};
    enum { N = sizeof x / sizeof x[0] };
    const int pos[N] = {0, 0, 0, 1, 1, 1, 0, 1};
    float y[N], dy[N], dx[N];
    quant_act_forward(y, x, N, 32);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(y[i], pos[i] ? x[i] : 0.0f, "relu(%g) = %g", x[i], y[i]);
        dy[i] = 2.0f + (float)i;
    }
    util_prefill(dx, N);
    quant_act_backward(dx, dy, x, N, 32, 1);
    for (int i = 0; i < N; i++) {
        const float want = util_prefill_value(i) + (pos[i] ? dy[i] : 0.0f);
        cr_assert_eq(dx[i], want, "dx at x = %g is %g, want %g", x[i], dx[i], want);
    }
    for (int i = 0; i < N; i++) dx[i] = NAN;
    quant_act_backward(dx, dy, x, N, 32, 0);
    for (int i = 0; i < N; i++) cr_assert_eq(dx[i], pos[i] ? dy[i] : 0.0f, "dx (acc = 0) at x = %g is %g", x[i], dx[i]);
}

/* ---- weights, k >= 2 ---- */

/* Codes lie in [0, 2^k - 1], wq = 2 code / (2^k - 1) - 1, codes are monotone in w, the largest
 * |w| maps to the end code of its sign, and codes match round((2^k - 1) u) computed in double
 * wherever that product is not within 1e-4 of a half. */
Test(quant, weight_codes_are_in_range_and_max_maps_to_an_end_code) {
    enum { N = 53 };
    util_rng_t r = {11};
    float w[N], wq[N], wq2[N];
    uint8_t codes[N];
    for (int sign = 1; sign >= -1; sign -= 2) {
        for (int k = 2; k <= 8; k++) {
            const double L = levels_of(k);
            util_fill_unif(w, N, &r, -1.2, 1.2);
            w[17] = 1.6f * (float)sign; /* the unique largest |w| */
            quant_weight_forward(wq, codes, w, N, k);
            quant_weight_forward(wq2, NULL, w, N, k);
            double m = 0.0;
            for (int i = 0; i < N; i++) m = fmax(m, fabs(tanh((double)w[i])));
            int compared = 0;
            for (int i = 0; i < N; i++) {
                cr_assert(codes[i] <= L, "k = %d: code %d out of range", k, codes[i]);
                cr_assert(fabs(wq[i] - (2.0 * codes[i] / L - 1.0)) <= 1e-6, "k = %d: wq %.9g does not match code %d", k,
                          wq[i], codes[i]);
                cr_assert_eq(wq[i], wq2[i], "k = %d: wq depends on whether codes are requested", k);
                for (int j = 0; j < N; j++)
                    if (w[i] < w[j]) cr_assert_leq(codes[i], codes[j], "k = %d: codes not monotone in w", k);
                const double p = (tanh((double)w[i]) / (2 * m) + 0.5) * L;
                if (fabs(p - floor(p) - 0.5) < 1e-4) continue;
                cr_assert_eq(codes[i], (int)nearbyint(p), "k = %d: w %g has code %d, want %.0f", k, w[i], codes[i],
                             nearbyint(p));
                compared++;
            }
            cr_assert_geq(compared, N - 2);
            const size_t top = argmax_abs(w, N);
            cr_assert_eq(top, 17);
            cr_assert_eq(codes[top], sign > 0 ? (int)L : 0, "k = %d: max |w| = %g has code %d", k, w[top], codes[top]);
        }
    }
}

/* A zero weight has u = 1/2 exactly, so (2^k - 1) u = 2^(k-1) - 1/2 is an exact half: it goes
 * to the even code 2^(k-1) (as torch.round), giving wq = 1 / (2^k - 1), not to 2^(k-1) - 1. */
Test(quant, weight_zero_maps_to_the_even_middle_code) {
    const float w[] = {0.0f, 0.7f, -0.0f, -0.3f, 0.0f};
    enum { N = sizeof w / sizeof w[0] };
    float wq[N];
    uint8_t codes[N];
    for (int k = 2; k <= 8; k++) {
        const double L = levels_of(k);
        quant_weight_forward(wq, codes, w, N, k);
        for (int i = 0; i < N; i += 2) {
            cr_assert_eq(codes[i], 1 << (k - 1), "k = %d: zero weight has code %d, want %d", k, codes[i], 1 << (k - 1));
            cr_assert(fabs(wq[i] - 1.0 / L) <= 1e-7, "k = %d: zero weight quantizes to %.9g, want 1/%g", k, wq[i], L);
        }
    }
}

/* The backward pass equals the exact gradient of L = sum(c_i f_i(w)), f = tanh(w) / max|tanh(w)|,
 * by central differences in double, including the max element's extra term (the largest |w| is
 * unique with a wide margin, so +-eps never changes which element is the max); it is the same for
 * every k >= 2 and is added to a pre-filled buffer. */
static void check_weight_grad(int sign, uint64_t seed) {
    enum { N = 29, TOP = 7 };
    util_rng_t r = {seed};
    float w[N], dwq[N], dw[N];
    double wd[N], cd[N], g[N];
    util_fill_unif(w, N, &r, -0.9, 0.9);
    w[TOP] = 1.1f * (float)sign;
    util_fill_unif(dwq, N, &r, -1, 1);
    /* Give c at the max the sign that makes |S| = |sum c_i tanh(w_i)| >= m, so that the max's
     * term, -S / m^2 * sign(w_max) * tanh'(w_max), is not accidentally near zero. */
    double rest = 0.0;
    for (int i = 0; i < N; i++)
        if (i != TOP) rest += dwq[i] * tanh((double)w[i]);
    dwq[TOP] = (float)sign * (rest >= 0 ? 1.0f : -1.0f);
    for (int i = 0; i < N; i++) wd[i] = w[i], cd[i] = dwq[i];
    wq_ctx_t x = {N, wd, cd};
    wq_fd_grad(g, &x, 1e-6);
    /* The test must see the max's term: it moves the max's gradient well away from c / m * tanh'. */
    const double m = tanh(1.1), naive = cd[TOP] / m * (1 - m * m);
    cr_assert(fabs(g[TOP] - naive) > 1e-1, "max's term too small to be tested: %g vs %g", g[TOP], naive);
    for (int k = 2; k <= 8; k++) {
        util_prefill(dw, N);
        quant_weight_backward(dw, dwq, w, N, k);
        for (int i = 0; i < N; i++) {
            const double got = (double)dw[i] - util_prefill_value(i);
            cr_assert(fabs(got - g[i]) <= 1e-5 + 1e-4 * fabs(g[i]), "k = %d, sign %d: dw[%d] (w = %g) = %.9g, want %.9g",
                      k, sign, i, w[i], got, g[i]);
        }
    }
}

Test(quant, weight_gradient_matches_finite_differences_positive_max) { check_weight_grad(1, 12); }

Test(quant, weight_gradient_matches_finite_differences_negative_max) { check_weight_grad(-1, 13); }

/* Two maxima w and -w share the max's gradient evenly. With t = tanh(w), m = tanh(a),
 * S = sum c_i t_i: dL/dt_j = c_j / m - S / m^2 * dm/dt_j, dm/dt = +1/2 at t = m and -1/2 at
 * t = -m, then times tanh' = 1 - t^2. The sum is also checked against a finite difference
 * along (e0 - e1), which keeps the tie. */
Test(quant, weight_gradient_splits_max_evenly_between_opposite_ties) {
    const float w[] = {0.8f, -0.8f, 0.3f, -0.5f, 0.1f, 0.65f};
    const float c[] = {0.7f, -0.2f, 0.4f, 0.9f, -0.6f, 0.35f};
    enum { N = sizeof w / sizeof w[0] };
    cr_assert_eq(tanhf(w[1]), -tanhf(w[0]), "tanhf is not odd here: the tie would not be exact");
    double t[N], S = 0.0;
    for (int i = 0; i < N; i++) t[i] = tanh((double)w[i]), S += c[i] * t[i];
    const double m = t[0], d = 1 - m * m, share = S / (2 * m * m);
    double want[N];
    want[0] = (c[0] / m - share) * d;
    want[1] = (c[1] / m + share) * d;
    for (int i = 2; i < N; i++) want[i] = c[i] / m * (1 - t[i] * t[i]);
    cr_assert(fabs(share * d) > 1e-2, "the split term is too small to be tested");
    float dw[N];
    util_prefill(dw, N);
    quant_weight_backward(dw, c, w, N, 3);
    for (int i = 0; i < N; i++) {
        const double got = (double)dw[i] - util_prefill_value(i);
        cr_assert(fabs(got - want[i]) <= 1e-5, "dw[%d] = %.9g, want %.9g", i, got, want[i]);
    }
    double wd[N], cd[N];
    for (int i = 0; i < N; i++) wd[i] = w[i], cd[i] = c[i];
    wq_ctx_t x = {N, wd, cd};
    const double eps = 1e-6;
    wd[0] += eps, wd[1] -= eps;
    const double lp = wq_loss(&x);
    wd[0] -= 2 * eps, wd[1] += 2 * eps;
    const double lm = wq_loss(&x);
    const double dir = (lp - lm) / (2 * eps), got = ((double)dw[0] - util_prefill_value(0)) - ((double)dw[1] - util_prefill_value(1));
    cr_assert(fabs(got - dir) <= 1e-5, "dw0 - dw1 = %.9g, directional difference %.9g", got, dir);
}

Test(quant, weight_gradient_splits_max_evenly_between_equal_ties) {
    const float w[] = {0.3f, 0.8f, -0.5f, 0.8f, 0.1f};
    const float c[] = {0.4f, 0.7f, 0.9f, -0.2f, -0.6f};
    enum { N = sizeof w / sizeof w[0] };
    double t[N], S = 0.0;
    for (int i = 0; i < N; i++) t[i] = tanh((double)w[i]), S += c[i] * t[i];
    const double m = t[1], d = 1 - m * m, share = S / (2 * m * m);
    double want[N];
    for (int i = 0; i < N; i++) want[i] = c[i] / m * (1 - t[i] * t[i]);
    want[1] -= share * d;
    want[3] -= share * d;
    cr_assert(fabs(share * d) > 1e-2, "the split term is too small to be tested");
    float dw[N];
    util_prefill(dw, N);
    quant_weight_backward(dw, c, w, N, 2);
    for (int i = 0; i < N; i++) {
        const double got = (double)dw[i] - util_prefill_value(i);
        cr_assert(fabs(got - want[i]) <= 1e-5, "dw[%d] = %.9g, want %.9g", i, got, want[i]);
    }
}

/* ---- weights, k = 1 ---- */

Test(quant, weight_one_bit_is_sign_times_mean_abs_with_sign_of_zero_positive) {
    const float w[] = {0.5f, -1.5f, 0.0f, 2.0f, -0.25f};
    const float e = 0.85f; /* (0.5 + 1.5 + 0 + 2 + 0.25) / 5 */
    const float want[] = {e, -e, e, e, -e};
    float wq[5];
    quant_weight_forward(wq, NULL, w, 5, 1);
    for (int i = 0; i < 5; i++) cr_assert(fabsf(wq[i] - want[i]) <= 1e-7f, "wq[%d] = %.9g, want %.9g", i, wq[i], want[i]);
}

Test(quant, weight_one_bit_gradient_is_straight_through_and_accumulates) {
    enum { N = 9 };
    util_rng_t r = {14};
    float w[N], dwq[N], dw[N];
    util_fill_unif(w, N, &r, -2, 2);
    util_fill_unif(dwq, N, &r, -1, 1);
    w[3] = 0.0f;
    util_prefill(dw, N);
    quant_weight_backward(dw, dwq, w, N, 1);
    for (int i = 0; i < N; i++) {
        const float want = util_prefill_value(i) + dwq[i];
        cr_assert_eq(dw[i], want, "dw[%d] = %g, want %g", i, dw[i], want);
    }
}

/* k = 1 codes are 1 where w >= 0 (zero included) and 0 elsewhere; quant_weight_mean is mean|w|. */
Test(quant, weight_one_bit_codes_are_sign_bits_and_mean_is_mean_abs) {
    const float w[] = {0.5f, -1.5f, 0.0f, 2.0f, -0.25f};
    const uint8_t want[] = {1, 0, 1, 1, 0};
    uint8_t codes[5];
    float wq[5];
    memset(codes, 0xff, sizeof codes);
    quant_weight_forward(wq, codes, w, 5, 1);
    for (int i = 0; i < 5; i++) cr_assert_eq(codes[i], want[i], "w = %g: code %d, want %d", w[i], codes[i], want[i]);
    cr_assert(fabsf(quant_weight_mean(w, 5) - 0.85f) <= 1e-7f, "mean|w| = %.9g, want 0.85", quant_weight_mean(w, 5));
    cr_assert_eq(quant_weight_mean(w, 0), 0.0f, "mean of an empty tensor");
}

/* Decoding the forward pass's codes gives back its wq bit for bit, for every k. */
Test(quant, weight_decode_of_codes_reproduces_forward_bit_exactly) {
    enum { N = 61 };
    util_rng_t r = {15};
    float w[N], wq[N], dec[N];
    uint8_t codes[N];
    for (int k = 1; k <= 8; k++) {
        util_fill_unif(w, N, &r, -1.5, 1.5);
        w[5] = 0.0f;
        quant_weight_forward(wq, codes, w, N, k);
        quant_weight_decode(dec, codes, N, k, quant_weight_mean(w, N));
        for (int i = 0; i < N; i++)
            cr_assert(memcmp(&dec[i], &wq[i], sizeof(float)) == 0, "k = %d: decoded %.9g, forward %.9g (code %d)", k,
                      dec[i], wq[i], codes[i]);
    }
}

/* ---- degenerate input ---- */

Test(quant, weight_all_zero_tensor_gives_finite_values_and_gradients) {
    enum { N = 16 };
    const float w[N] = {0};
    float wq[N], dwq[N], dw[N];
    uint8_t codes[N];
    for (int i = 0; i < N; i++) dwq[i] = 0.1f * (float)(i - 8);
    for (int k = 1; k <= 8; k++) {
        memset(codes, 0xff, sizeof codes);
        quant_weight_forward(wq, k >= 2 ? codes : NULL, w, N, k);
        for (int i = 0; i < N; i++) {
            cr_assert(isfinite(wq[i]) && wq[i] >= -1.0f && wq[i] <= 1.0f, "k = %d: wq[%d] = %g", k, i, wq[i]);
            cr_assert_eq(wq[i], wq[0], "k = %d: equal weights quantize differently", k);
            if (k >= 2) cr_assert_leq(codes[i], levels_of(k), "k = %d: code %d", k, codes[i]);
        }
        if (k == 1) cr_assert_eq(wq[0], 0.0f, "mean |w| of zeros is 0");
        util_prefill(dw, N);
        quant_weight_backward(dw, dwq, w, N, k);
        for (int i = 0; i < N; i++) cr_assert(isfinite(dw[i]), "k = %d: dw[%d] = %g", k, i, dw[i]);
    }
}

/* An activation's code decodes to quant_act_forward's output bit for bit, at every width that
 * has codes, across the clip boundaries and exact halves; a NaN keeps a code of its own. */
Test(quant, act_codes_decode_to_the_forward_output_bit_exactly) {
    enum { N = 4001 };
    static float x[N], y[N], d[N];
    static uint8_t q[N];
    for (int i = 0; i < N - 1; i++) x[i] = -0.5f + 2.0f * (float)i / (N - 2);
    x[N - 1] = NAN;
    for (int k = 1; k <= QUANT_CODE_MAX_BITS; k++) {
        for (int j = 0; j < (1 << k); j++) x[j] = ((float)j + 0.5f) / (float)((1 << k) - 1); /* halves */
        quant_act_forward(y, x, N, k);
        quant_act_encode(q, x, N, k);
        quant_act_decode(d, q, N, k);
        for (int i = 0; i < N - 1; i++) {
            cr_assert_leq(q[i], (1 << k) - 1, "k = %d: code %d of x = %g", k, q[i], (double)x[i]);
            cr_assert(memcmp(&y[i], &d[i], sizeof(float)) == 0, "k = %d: x = %.9g decodes to %.9g, want %.9g", k,
                      (double)x[i], (double)d[i], (double)y[i]);
        }
        cr_assert_eq(q[N - 1], QUANT_CODE_NAN);
        cr_assert(isnan(d[N - 1]));
    }
}

/* ---- tanh ---- */

/* |f - tanh(x)| in units of the float ulp at the exact value T (2^-149 for subnormal T). */
static double ulp_error(float f, double T) {
    int e;
    frexp(T, &e);
    const double ulp = fmax(ldexp(1.0, e - 24), ldexp(1.0, -149));
    return fabs((double)f - T) / ulp;
}

/* The quantizer's tanh (quant_weight_tanh) is within 1.34 ulp of tanh in double (an exhaustive
 * run over every float gave 1.33, at 0.6283): here a sweep of ~1M bit patterns over all floats,
 * every float in a window around the switch between its two formulas (0.625, where the error
 * peaks), and the edge cases: +-0 keep their sign, subnormals give themselves, +-inf and large
 * values give +-1, NaN gives NaN. Worked in chunks, as the quantizer calls it. */
Test(quant, tanh_is_within_1_34_ulp_of_tanh_in_double_for_all_kinds_of_floats) {
    enum { B = 4096 };
    static float x[B], t[B];
    double worst = 0.0;
    float worst_x = 0.0f;
    uint64_t checked = 0, nans = 0;
    uint32_t win_lo, win_hi;
    const float lo = 0.6f, hi = 0.66f;
    memcpy(&win_lo, &lo, sizeof lo);
    memcpy(&win_hi, &hi, sizeof hi);
    /* pass 0: every 4093rd bit pattern; pass 1: the window, both signs */
    for (int pass = 0; pass < 2; pass++) {
        const uint64_t first = pass == 0 ? 0 : win_lo, last = pass == 0 ? UINT32_MAX : win_hi;
        const uint64_t stride = pass == 0 ? 4093 : 1;
        uint64_t b = first;
        while (b <= last) {
            int n = 0;
            for (; n < B && b <= last; b += stride) {
                const uint32_t u = (uint32_t)b;
                memcpy(&x[n++], &u, sizeof u);
                if (pass == 1 && n < B) x[n] = -x[n - 1], n++;
            }
            quant_weight_tanh(t, x, (size_t)n);
            for (int i = 0; i < n; i++) {
                if (isnan(x[i])) {
                    cr_assert(isnan(t[i]), "tanh(NaN) = %a", (double)t[i]);
                    nans++;
                    continue;
                }
                const double err = ulp_error(t[i], tanh((double)x[i]));
                if (err > worst) worst = err, worst_x = x[i];
                checked++;
            }
        }
    }
    cr_assert_leq(worst, 1.34, "tanh(%a = %.9g) is %.3f ulp off", (double)worst_x, (double)worst_x, worst);
    cr_assert_gt(checked, 1000000);
    cr_assert_gt(nans, 1000);

    const float sub = 1e-40f, big[] = {9.1f, 10.0f, 88.0f, 1e30f, FLT_MAX, INFINITY};
    const float edge[] = {0.0f, -0.0f, sub, -sub, 0x1p-149f, -0x1p-149f, 0x1p-126f, NAN, -NAN};
    float y[9];
    quant_weight_tanh(y, edge, 9);
    cr_assert(y[0] == 0.0f && !signbit(y[0]) && y[1] == 0.0f && signbit(y[1]), "tanh(+-0) = %a, %a", (double)y[0],
              (double)y[1]);
    for (int i = 2; i < 7; i++) cr_assert(y[i] == edge[i], "tanh(%a) = %a", (double)edge[i], (double)y[i]);
    cr_assert(isnan(y[7]) && isnan(y[8]));
    for (size_t i = 0; i < sizeof big / sizeof big[0]; i++) {
        const float v[2] = {big[i], -big[i]};
        float r[2];
        quant_weight_tanh(r, v, 2);
        const float want = 1.0f;
        cr_assert(r[0] == want && r[1] == -want, "tanh(+-%a) = %a, %a, want +-%a", (double)big[i], (double)r[0],
                  (double)r[1], (double)want);
    }
}

/* The loop gives the same bits however it is compiled: values alone (the scalar tail of the
 * vectorised loop) and in an array (the vector body) agree. */
Test(quant, tanh_gives_the_same_bits_alone_and_in_an_array) {
    enum { N = 1003 };
    static float w[N], t[N];
    util_rng_t r = {21};
    util_fill_unif(w, N, &r, -10.0, 10.0);
    for (int i = 0; i < N; i += 3) w[i] *= 0.05f;
    quant_weight_tanh(t, w, N);
    for (int i = 0; i < N; i++) {
        float one;
        quant_weight_tanh(&one, &w[i], 1);
        cr_assert(memcmp(&one, &t[i], sizeof one) == 0, "tanh(%a): %a alone, %a in the array", (double)w[i],
                  (double)one, (double)t[i]);
    }
}

/* The backward pass from w (tanh computed chunk by chunk inside) and from a kept tanh(w) (a
 * node's) agree bit for bit, over several chunks with a tail and with ties at the max. */
Test(quant, weight_backward_from_w_and_from_kept_tanh_agree_bit_for_bit) {
    enum { N = 1000 };
    static float w[N], dwq[N], t[N], a[N], b[N];
    util_rng_t r = {22};
    util_fill_unif(w, N, &r, -2.0, 2.0);
    util_fill_unif(dwq, N, &r, -1.0, 1.0);
    w[7] = 3.0f, w[600] = -3.0f, w[999] = 3.0f; /* three ties at the max, in different chunks */
    quant_weight_tanh(t, w, N);
    for (int i = 0; i < N; i++) a[i] = b[i] = 0.01f * (float)(i % 7);
    quant_weight_backward(a, dwq, w, N, 2);
    quant_weight_backward_tanh(b, dwq, t, N, 1);
    cr_assert(memcmp(a, b, sizeof a) == 0, "the two backward passes differ");
    /* overwriting, in place, gives the bits of accumulating into zeros */
    static float z[N], inplace[N];
    memset(z, 0, sizeof z);
    memcpy(inplace, dwq, sizeof dwq);
    quant_weight_backward(z, dwq, w, N, 2);
    quant_weight_backward_tanh(inplace, inplace, t, N, 0);
    cr_assert(memcmp(z, inplace, sizeof z) == 0, "in place differs from accumulating into zeros");
}
