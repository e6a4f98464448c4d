/* quant.h - DoReFa quantizers with the straight-through estimator (METHOD.md, docs/MODEL.md).
 *
 * k = 32 means full precision. Weights are quantized per tensor; activations elementwise. */
#ifndef AUXPS_QUANT_H
#define AUXPS_QUANT_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

/* q_k(x) = round((2^k - 1) x) / (2^k - 1), round half to even; x itself for k >= 32. */
float quant_qk(float x, int k);

/* Weights, k = 1..8. wq (n) = quantized w (n). codes (n), when non-NULL, receive the integer
 * codes: round((2^k - 1) u) for k >= 2, so that wq = 2 code / (2^k - 1) - 1; for k = 1,
 * 1 where w >= 0 and 0 elsewhere. */
void quant_weight_forward(float *wq, uint8_t *codes, const float *w, size_t n, int k);
/* The inverse of the forward pass's rounding, bit-exact with it: wq (n) from codes (n). For
 * k >= 2, wq = 2 code / (2^k - 1) - 1 and e is unused; for k = 1, code 1 is +e and code 0 is -e,
 * with e = mean|w| (quant_weight_mean). */
void quant_weight_decode(float *wq, const uint8_t *codes, size_t n, int k, float e);
/* mean|w|, the 1-bit scale, computed exactly as quant_weight_forward does. */
float quant_weight_mean(const float *w, size_t n);
/* dw (n) += dL/dw given dwq = dL/dwq (n): STE through the rounding only. */
void quant_weight_backward(float *dw, const float *dwq, const float *w, size_t n, int k);

/* Weights in two steps, for k >= 2 and a caller that keeps tanh(w) (a node answers many pulls
 * and pushes of one version): t (n) = tanh(w), computed as the functions above do (within
 * 1.34 ulp of the exact tanh; +-0, +-inf and NaN as tanh has them); then
 * quant_weight_forward_tanh (wq and codes may each be NULL) and quant_weight_backward_tanh give
 * bit for bit what quant_weight_forward and quant_weight_backward give from w. With acc = 0,
 * quant_weight_backward_tanh overwrites dw instead, with the bits that accumulating into zeros
 * gives, and dw may then be dwq itself (a node turns a pushed dL/dwq into dL/dw in place). */
void quant_weight_tanh(float *t, const float *w, size_t n);
void quant_weight_forward_tanh(float *wq, uint8_t *codes, const float *t, size_t n, int k);
void quant_weight_backward_tanh(float *dw, const float *dwq, const float *t, size_t n, int acc);

/* Activations, k = 1..8: y = q_k(clip(x, 0, 1)); k = 32: y = ReLU(x). */
void quant_act_forward(float *y, const float *x, size_t n, int k);
/* The same activations stored compactly, for k = 1..QUANT_CODE_MAX_BITS: codes (n) receive
 * round((2^k - 1) clip(x, 0, 1)), or QUANT_CODE_NAN where x is NaN, and quant_act_decode gives
 * back y (n) bit-exact with quant_act_forward's output (a NaN as the default NaN). */
#define QUANT_CODE_MAX_BITS 7
#define QUANT_CODE_NAN 255
void quant_act_encode(uint8_t *codes, const float *x, size_t n, int k);
void quant_act_decode(float *y, const uint8_t *codes, size_t n, int k);
/* One code's value, as quant_act_decode gives it, with levels = 2^k - 1: for loops that decode
 * a few values at a time into place. */
static inline float quant_act_value(uint8_t code, float levels) {
    return code == QUANT_CODE_NAN ? NAN : (float)code / levels;
}
/* t[c] = quant_act_value(c, 2^k - 1) for every byte c: for loops whose reads are strided, or
 * whose rows are too short to vectorise, where a load from the table costs less than a
 * division. */
static inline void quant_act_table(float t[256], int k) {
    const float levels = (float)((1u << k) - 1);
    for (int c = 0; c < 256; c++) t[c] = quant_act_value((uint8_t)c, levels);
}
/* dx += dy where 0 <= x <= 1 (k < 32) or x > 0 (k = 32), and 0 elsewhere; with acc = 0, dx is
 * overwritten instead (its old contents are never read). */
void quant_act_backward(float *dx, const float *dy, const float *x, size_t n, int k, int acc);

#endif
