/* quant.c - DoReFa weight and activation quantizers. Rounding is half-to-even (rintf in
 * the default rounding mode), as torch.round, so codes match the PyTorch reference. */
#include "quant.h"

#include "hot.h"

#include <math.h>

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

void quant_weight_decode(float *wq, const uint8_t *codes, size_t n, int k, float e) {
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

void quant_weight_tanh(float *t, const float *w, size_t n) {
    for (size_t i = 0; i < n; i++) t[i] = tanhf(w[i]);
}

void quant_weight_forward_tanh(float *wq, uint8_t *codes, const float *t, size_t n, int k) {
    float m = 0.0f;
    for (size_t i = 0; i < n; i++) {
        float a = fabsf(t[i]);
        if (a > m) m = a;
    }
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
 * computed from w when tw is NULL (the branch is the same for every i: the compiler hoists it).
 * u = t / (2m) + 1/2 with m = max|t|: du_i/dt_j = d_ij / (2m) - t_i / (2m^2) dm/dt_j, and
 * dm/dt_j = sign(t_j) / ties for the maxima. wq = 2 q(u) - 1 gives dL/du = 2 dL/dwq. */
static inline void weight_backward(float *dw, const float *dwq, const float *w, const float *tw, size_t n) {
    /* One pass finds m, counts its ties and sums gt = sum_i dL/du_i * t_i. */
    float m = 0.0f;
    double gt = 0.0;
    size_t ties = 0;
    for (size_t i = 0; i < n; i++) {
        const float t = tw != NULL ? tw[i] : tanhf(w[i]), a = fabsf(t);
        gt += 2.0 * dwq[i] * t;
        if (a > m) {
            m = a;
            ties = 1;
        } else if (a == m) {
            ties++;
        }
    }
    if (m == 0.0f) {
        for (size_t i = 0; i < n; i++) dw[i] += dwq[i];
        return;
    }
    const float dm = (float)(-gt / (2.0 * (double)m * m)) / (float)ties;
    for (size_t i = 0; i < n; i++) {
        const float t = tw != NULL ? tw[i] : tanhf(w[i]);
        float dt = 2.0f * dwq[i] / (2.0f * m);
        if (fabsf(t) == m) dt += t > 0.0f ? dm : -dm;
        dw[i] += dt * (1.0f - t * t);
    }
}

void quant_weight_backward(float *dw, const float *dwq, const float *w, size_t n, int k) {
    if (k == 1) {
        for (size_t i = 0; i < n; i++) dw[i] += dwq[i];
        return;
    }
    weight_backward(dw, dwq, w, NULL, n);
}

void quant_weight_backward_tanh(float *dw, const float *dwq, const float *tw, size_t n) {
    weight_backward(dw, dwq, NULL, tw, n);
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
    for (size_t i = 0; i < n; i++) y[i] = codes[i] == QUANT_CODE_NAN ? NAN : (float)codes[i] / levels;
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
