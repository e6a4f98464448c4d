/* quant.c - DoReFa weight and activation quantizers. Rounding is half-to-even (rintf in
 * the default rounding mode), as torch.round, so codes match the PyTorch reference. */
#include "quant.h"

#include "hot.h"

#include <math.h>
#include <string.h>

/* The weight passes work in chunks of this many values, so that tanh(w) computed on the fly
 * stays in a small stack buffer (L1) between the loops that read it. A multiple of GT_LANES. */
#define QUANT_CHUNK 256
#define GT_LANES 16 /* weight_backward's accumulators of gt, a power of 2 */

/* tanh(x) within 1.34 ulp of the exact value for every float (tests/test_quant.c checks a sweep
 * against tanh in double; an exhaustive run over all floats gave 1.33 ulp at 0.6283), as
 * branch-free arithmetic that GCC vectorises in a loop over an array: glibc's tanhf is a call
 * per value, ~25 ns, and was the largest cost of a node's k-bit pulls. Cephes' tanhf split:
 * |x| < 0.625, an odd polynomial; above, 1 - 2 / (exp(2|x|) + 1), with |x| clamped to 9.1, where
 * tanh is already 1.0f, so that exp's 2^n never leaves the normal range and the float-to-int
 * conversion is always defined. exp is Cephes' expf: n = rint(y / ln 2), y - n ln 2 in two
 * parts (the first exact), a degree-7 polynomial, 2^n put into the exponent bits. Both branches
 * are computed for every value and one is selected. tanh(+-0) = +-0, denormals give themselves,
 * +-inf gives +-1, NaN gives a NaN. Every step is a plain IEEE operation (no FMA: -std=c11
 * disables contraction), so the vector and scalar forms of the loop give the same bits. */
static inline float tanh_poly(float ax) {
    const float z = ax * ax;
    return ((((-5.70498872745e-3f * z + 2.06390887954e-2f) * z - 5.37397155531e-2f) * z + 1.33314422036e-1f) * z -
            3.33332819422e-1f) * z * ax + ax;
}

static inline float tanh_approx(float x) {
    const float ax = fabsf(x), p = tanh_poly(ax);
    const float c = ax < 9.1f ? ax : 9.1f; /* a NaN becomes 9.1 here (p keeps it) */
    const float y = 2.0f * c, nf = rintf(y * 1.44269504088896341f);
    float r = y - nf * 0.693359375f;
    r = r - nf * -2.12194440e-4f;
    float e = (((((1.9875691500e-4f * r + 1.3981999507e-3f) * r + 8.3334519073e-3f) * r + 4.1665795894e-2f) * r +
                1.6666665459e-1f) * r + 5.0000001201e-1f) * (r * r) + r + 1.0f;
    const uint32_t bits = (uint32_t)((int32_t)nf + 127) << 23; /* 2^n, n in 0..27 */
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    e *= scale;
    const float q = 1.0f - 2.0f / (e + 1.0f);
    return copysignf(ax >= 0.625f ? q : p, x); /* a NaN fails the test and keeps p, a NaN */
}

/* max |t_i| over the t_i that are not NaN (0 if none), the value of the scalar loop
 * `if (|t_i| > m) m = |t_i|`: the bits of non-negative floats order as the floats, and an
 * integer max vectorises where a float max does not (without -ffinite-math-only). */
static float abs_max(const float *t, size_t n) {
    int32_t m = 0; /* signed: SSE4.1 has a signed 32-bit max and compare, not unsigned ones */
    for (size_t i = 0; i < n; i++) {
        int32_t b;
        memcpy(&b, &t[i], sizeof b);
        b &= 0x7fffffff;
        b = b > 0x7f800000 ? 0 : b;
        m = b > m ? b : m;
    }
    float r;
    memcpy(&r, &m, sizeof r);
    return r;
}

float quant_qk(float x, int k) {
    if (k >= 32) return x;
    const float levels = (float)((1u << k) - 1);
    return rintf(x * levels) / levels;
}

float quant_weight_mean(const float *w, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += fabsf(w[i]);
    return n ? (float)(s / (double)n) : 0.0f;
}

HOT_WIDE void quant_weight_decode(float *wq, const uint8_t *codes, size_t n, int k, float e) {
    if (k == 1) {
        for (size_t i = 0; i < n; i++) wq[i] = codes[i] ? e : -e;
        return;
    }
    const float levels = (float)((1u << k) - 1);
    for (size_t i = 0; i < n; i++) wq[i] = 2.0f * ((float)codes[i] / levels) - 1.0f;
}

void quant_weight_forward(float *wq, uint8_t *codes, const float *w, size_t n, int k) {
    if (k == 1) {
        const float e = quant_weight_mean(w, n);
        for (size_t i = 0; i < n; i++) {
            wq[i] = w[i] >= 0.0f ? e : -e;
            if (codes != NULL) codes[i] = w[i] >= 0.0f;
        }
        return;
    }
    /* wq holds tanh(w) between the two passes, so that tanh is computed once per weight */
    quant_weight_tanh(wq, w, n);
    quant_weight_forward_tanh(wq, codes, wq, n, k);
}

/* Latent weights are mostly far below 0.625: a block whose |w| are all below it (NaN is not)
 * takes the polynomial alone, which is what tanh_approx selects for each of them, at a third of
 * the cost. */
#define TANH_BLOCK 64
HOT_WIDE void quant_weight_tanh(float *t, const float *w, size_t n) {
    for (size_t at = 0; at < n; at += TANH_BLOCK) {
        const size_t len = n - at < TANH_BLOCK ? n - at : TANH_BLOCK;
        const float *x = w + at;
        float *y = t + at;
        int32_t m = 0;
        for (size_t i = 0; i < len; i++) {
            int32_t b;
            memcpy(&b, &x[i], sizeof b);
            b &= 0x7fffffff;
            m = b > m ? b : m;
        }
        if (m < 0x3f200000) /* 0.625f */
            for (size_t i = 0; i < len; i++) y[i] = copysignf(tanh_poly(fabsf(x[i])), x[i]);
        else
            for (size_t i = 0; i < len; i++) y[i] = tanh_approx(x[i]);
    }
}

HOT_WIDE void quant_weight_forward_tanh(float *wq, uint8_t *codes, const float *t, size_t n, int k) {
    float m = abs_max(t, n);
    if (m == 0.0f) m = 1.0f; /* all-zero tensor: u = 1/2 everywhere, no division by zero */
    const float levels = (float)((1u << k) - 1), inv2m = 0.5f / m;
    for (size_t i = 0; i < n; i++) {
        float u = t[i] * inv2m + 0.5f;
        float c = rintf(u * levels);
        if (wq != NULL) wq[i] = 2.0f * (c / levels) - 1.0f;
        if (codes != NULL) codes[i] = (uint8_t)c;
    }
}

/* dw += dL/dw of the DoReFa weight quantizer (k >= 2), with t_i = tanh(w_i) read from tw, or
 * computed from w chunk by chunk when tw is NULL (the same tanh_approx, so both give the same
 * bits). u = t / (2m) + 1/2 with m = max|t|: du_i/dt_j = d_ij / (2m) - t_i / (2m^2) dm/dt_j,
 * and dm/dt_j = sign(t_j) / ties for the maxima. wq = 2 q(u) - 1 gives dL/du = 2 dL/dwq. */
HOT_WIDE static void weight_backward(float *dw, const float *dwq, const float *w, const float *tw, size_t n, int acc) {
    float buf[QUANT_CHUNK];
    /* The first pass finds m and counts its ties (each chunk's max and ties, merged), and sums
     * gt = sum_i dL/du_i * t_i = 2 sum_i dwq_i t_i in GT_LANES interleaved double accumulators
     * (a fixed order, so that the sum does not depend on how the loop is compiled; enough
     * independent chains that the additions' latency does not bound the loop). */
    float m = 0.0f;
    size_t ties = 0;
    double gs[GT_LANES] = {0.0};
    /* Value i goes to accumulator i % GT_LANES however the values are chunked, so a kept tanh
     * is read in one piece. */
    const size_t chunk = tw != NULL ? n : QUANT_CHUNK;
    for (size_t at = 0; at < n; at += chunk) {
        const size_t len = n - at < chunk ? n - at : chunk;
        const float *t = tw != NULL ? tw + at : buf, *g = dwq + at;
        if (tw == NULL) quant_weight_tanh(buf, w + at, len);
        const float cm = abs_max(t, len);
        uint32_t ct = 0;
        for (size_t i = 0; i < len; i++) ct += fabsf(t[i]) == cm;
        if (cm > m) m = cm, ties = ct;
        else if (cm == m) ties += ct;
        size_t i = 0;
        for (; i + GT_LANES <= len; i += GT_LANES)
            for (int j = 0; j < GT_LANES; j++) gs[j] += (double)g[i + j] * t[i + j];
        for (; i < len; i++) gs[i % GT_LANES] += (double)g[i] * t[i];
    }
    if (m == 0.0f) {
        for (size_t i = 0; i < n; i++) dw[i] = (acc ? dw[i] : 0.0f) + dwq[i];
        return;
    }
    for (int h = GT_LANES / 2; h > 0; h /= 2) /* a pairwise tree, in a fixed order */
        for (int j = 0; j < h; j++) gs[j] += gs[j + h];
    const double gt = 2.0 * gs[0];
    /* dL/dt_i = dL/du_i / (2m) = dwq_i / m, as a product with 1/m (a division per value would
     * cost as much as the rest of the loop) */
    const float dm = (float)(-gt / (2.0 * (double)m * m)) / (float)ties, inv_m = 1.0f / m;
    for (size_t at = 0; at < n; at += chunk) {
        const size_t len = n - at < chunk ? n - at : chunk;
        const float *t = tw != NULL ? tw + at : buf, *g = dwq + at;
        float *d = dw + at;
        if (tw == NULL) quant_weight_tanh(buf, w + at, len);
        for (size_t i = 0; i < len; i++) {
            const float ti = t[i], dt = g[i] * inv_m, dtm = dt + (ti > 0.0f ? dm : -dm);
            d[i] = (acc ? d[i] : 0.0f) + (fabsf(ti) == m ? dtm : dt) * (1.0f - ti * ti);
        }
    }
}

HOT_WIDE void quant_weight_backward(float *dw, const float *dwq, const float *w, size_t n, int k) {
    if (k == 1) {
        for (size_t i = 0; i < n; i++) dw[i] += dwq[i];
        return;
    }
    weight_backward(dw, dwq, w, NULL, n, 1);
}

HOT_WIDE void quant_weight_backward_tanh(float *dw, const float *dwq, const float *tw, size_t n, int acc) {
    weight_backward(dw, dwq, NULL, tw, n, acc);
}

HOT void quant_act_forward(float *y, const float *x, size_t n, int k) {
    if (k >= 32) {
        for (size_t i = 0; i < n; i++) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
        return;
    }
    const float levels = (float)((1u << k) - 1);
    for (size_t i = 0; i < n; i++) {
        float v = x[i] < 0.0f ? 0.0f : x[i];
        v = v > 1.0f ? 1.0f : v;
        y[i] = rintf(v * levels) / levels;
    }
}

/* The code is the float rintf(v * levels) of quant_act_forward, an integer in [0, levels], so
 * code / levels is its output to the bit. */
HOT void quant_act_encode(uint8_t *codes, const float *x, size_t n, int k) {
    const float levels = (float)((1u << k) - 1);
    for (size_t i = 0; i < n; i++) {
        float v = x[i] < 0.0f ? 0.0f : x[i];
        v = v > 1.0f ? 1.0f : v;
        codes[i] = v == v ? (uint8_t)rintf(v * levels) : QUANT_CODE_NAN;
    }
}

HOT void quant_act_decode(float *y, const uint8_t *codes, size_t n, int k) {
    const float levels = (float)((1u << k) - 1);
    for (size_t i = 0; i < n; i++) y[i] = quant_act_value(codes[i], levels);
}

/* dx (+)= dy * mask, the mask of one precision: dy is loaded unconditionally so that the loops
 * vectorise, and the accumulating and overwriting loops are separate for the same reason. */
HOT void quant_act_backward(float *dx, const float *dy, const float *x, size_t n, int k, int acc) {
    if (k >= 32) {
        if (acc)
            for (size_t i = 0; i < n; i++) {
                const float g = dy[i];
                dx[i] += x[i] > 0.0f ? g : 0.0f;
            }
        else
            for (size_t i = 0; i < n; i++) {
                const float g = dy[i];
                dx[i] = x[i] > 0.0f ? g : 0.0f;
            }
        return;
    }
    if (acc)
        for (size_t i = 0; i < n; i++) {
            const float g = dy[i], v = x[i];
            dx[i] += (v >= 0.0f && v <= 1.0f) ? g : 0.0f;
        }
    else
        for (size_t i = 0; i < n; i++) {
            const float g = dy[i], v = x[i];
            dx[i] = (v >= 0.0f && v <= 1.0f) ? g : 0.0f;
        }
}
