/* layers.h - forward/backward pairs of the layers AuxPS networks are built from.
 *
 * Tensors are float32, NCHW, row-major. Every backward pass accumulates (+=) into its parameter
 * gradients. Into the input gradient dx it accumulates when acc is 1, so that a tensor that
 * feeds two consumers receives both contributions, and overwrites when acc is 0, so that the
 * first consumer needs no zeroed buffer (as BLAS beta = 0: dx's old contents are never read).
 * A NULL dx skips the input gradient. Nothing here allocates: scratch space is passed in.
 *
 * The convolutions and batch norms cut their work into LAYER_PARTS parts (images for a
 * convolution, channels for a batch norm) and run them on `pool` (pool.h; NULL runs them in the
 * caller). The parts and the order in which their sums are added are fixed, so the results are
 * the same bits on any number of threads. */
#ifndef AUXPS_LAYERS_H
#define AUXPS_LAYERS_H

#include "pool.h"

#include <stddef.h>
#include <stdint.h>

/* Parts of every convolution and batch norm: enough for 4 threads. */
#define LAYER_PARTS 4

/* Shape of a 2-D convolution without bias; ho/wo are filled by conv_shape_init. */
typedef struct {
    int n, cin, h, w;     /* input (n, cin, h, w) */
    int cout, k, stride, pad;
    int ho, wo;           /* output (n, cout, ho, wo) */
} conv_shape_t;

void conv_shape_init(conv_shape_t *s, int n, int cin, int h, int w, int cout, int k, int stride, int pad);
/* Floats of scratch the convolution needs, forward and backward: for each of the LAYER_PARTS
 * parts an im2col area of (cin*k*k, ho*wo) (for stride 1 the larger of that and (cout*k*k, h*w);
 * none for a 1x1 stride-1 pad-0 conv, or one image of cin*h*w when cin == cout) and a partial dw
 * of cout*cin*k*k; for stride 1 also one flipped kernel of cin*cout*k*k. A stride-1 convolution
 * as large as its input (2 pad = k - 1, k > 1) with 4 channels or more on each side needs,
 * instead of the im2col area, the padded planes of one image's input (cin) and dout (cout), each
 * channel's (h + 2 pad) rows of w + 2 pad, with k floats more after each, and its uncropped
 * output (the larger of cin and cout, times h rows of w + 2 pad); its kernel area also holds
 * the kernel by tap for the forward pass. */
size_t conv_scratch_size(const conv_shape_t *s);

/* out (n, cout, ho, wo) = conv(x (n, cin, h, w), w (cout, cin, k, k)) with OpenBLAS sgemm: k*k
 * shifted ones over the padded image for the stride-1 convolutions above, otherwise im2col and
 * one. */
void conv2d_forward(pool_t *pool, float *out, const float *x, const float *w, const conv_shape_t *s, float *col);

/* 1 when conv2d_forward and conv2d_backward run shape s on the direct kernels (dconv.h) rather
 * than on sgemms, as the environment (AUXPS_DCONV) stands now. */
int conv_uses_direct(const conv_shape_t *s);
/* dx (n, cin, h, w) (+)= ..., dw (cout, cin, k, k) += ... from dout (n, cout, ho, wo). With acc = 0,
 * dx may be x itself: each image of x is read before that image's gradient is written; and for
 * a pointwise convolution (1x1, stride 1, no padding) with cin == cout, dx may be dout itself:
 * each image's dx goes through the scratch, then over that image's dout. */
void conv2d_backward(pool_t *pool, float *dx, float *dw, const float *dout, const float *x, const float *w,
                     const conv_shape_t *s, float *col, int acc);
/* The same with x given as k-bit activation codes (quant_act_encode), decoded one image at a
 * time: equal to the float versions on quant_act_decode(x). col holds conv_scratch_size_codes
 * (also one decoded image per part). */
size_t conv_scratch_size_codes(const conv_shape_t *s);
void conv2d_forward_codes(pool_t *pool, float *out, const uint8_t *x, int k, const float *w, const conv_shape_t *s,
                          float *col);
void conv2d_backward_codes(pool_t *pool, float *dx, float *dw, const float *dout, const uint8_t *x, int k,
                           const float *w, const conv_shape_t *s, float *col, int acc);
/* The items [*lo, *hi) of n that part `part` (0..LAYER_PARTS-1) works on. */
void layer_part_range(int n, int part, int *lo, int *hi);
/* Plain loops, the reference the fast path is tested against. */
void conv2d_forward_ref(float *out, const float *x, const float *w, const conv_shape_t *s);

/* Batch norm over (n, c, hw): per channel c, statistics over n and hw. mean, rstd (c) receive
 * the batch statistics in training (and are read by the backward pass). In training, running
 * statistics rmean, rvar (c) are updated as running = (1 - momentum) running + momentum batch,
 * with the unbiased variance (PyTorch uses momentum 0.1); in evaluation they normalise
 * instead. eps = 1e-5. */
void batchnorm_forward(pool_t *pool, float *y, const float *x, const float *gamma, const float *beta,
                       float *mean, float *rstd, float *rmean, float *rvar,
                       int n, int c, int hw, int training, float momentum);
/* y = BN(x), or BN(x) + r with r given as floats or as k-bit codes rq (the other NULL), of a
 * training-mode forward pass recomputed from its saved mean and rstd: bit-exact with what
 * batchnorm_forward or batchnorm_add_forward wrote (gamma and beta unchanged). r may be y. */
void batchnorm_recompute(pool_t *pool, float *y, const float *x, const float *r, const uint8_t *rq, int k,
                         const float *gamma, const float *beta, const float *mean, const float *rstd, int n, int c,
                         int hw);
/* dx (+)=, dgamma, dbeta += from dy, for a training-mode forward pass with the saved mean, rstd.
 * With acc = 0, dx may be x itself (each value is read before it is overwritten); so in
 * batchnorm_act_backward. */
void batchnorm_backward(pool_t *pool, float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                        const float *gamma, const float *mean, const float *rstd, int n, int c, int hw,
                        int acc);

/* y = BN(x) + r in one pass, exactly equal to batchnorm_forward then add_forward; r (n, c, hw)
 * may be y itself. */
void batchnorm_add_forward(pool_t *pool, float *y, const float *x, const float *r, const float *gamma,
                           const float *beta, float *mean, float *rstd, float *rmean, float *rvar,
                           int n, int c, int hw, int training, float momentum);
/* The same with r given as k-bit activation codes. */
void batchnorm_add_forward_codes(pool_t *pool, float *y, const float *x, const uint8_t *r, int k, const float *gamma,
                                 const float *beta, float *mean, float *rstd, float *rmean, float *rvar,
                                 int n, int c, int hw, int training, float momentum);
/* y = A_k(BN(x)) in one pass, without storing the batch norm's output: batchnorm_forward then
 * quant_act_forward(k) (ReLU for k = 32), and exactly equal to them. */
void batchnorm_act_forward(pool_t *pool, float *y, const float *x, const float *gamma, const float *beta,
                           float *mean, float *rstd, float *rmean, float *rvar,
                           int n, int c, int hw, int training, float momentum, int k);
/* The same writing the k-bit codes of y (k = 1..QUANT_CODE_MAX_BITS, quant_act_encode). */
void batchnorm_act_forward_codes(pool_t *pool, uint8_t *y, const float *x, const float *gamma, const float *beta,
                                 float *mean, float *rstd, float *rmean, float *rvar,
                                 int n, int c, int hw, int training, float momentum, int k);
/* The backward pass of batchnorm_act_forward from dy = dL/dy: the quantizer's mask is recomputed
 * from x, beta and the saved statistics exactly as the forward pass computed the batch norm's
 * output (beta and gamma must be unchanged in between). Equals quant_act_backward into a
 * temporary, then batchnorm_backward. */
void batchnorm_act_backward(pool_t *pool, float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                            const float *gamma, const float *beta, const float *mean, const float *rstd,
                            int n, int c, int hw, int k, int acc);

void relu_forward(float *y, const float *x, size_t len);
/* Uses the forward output y, or its input x: y > 0 exactly where x > 0. */
void relu_backward(float *dx, const float *dy, const float *y, size_t len, int acc);

void add_forward(float *y, const float *a, const float *b, size_t len);

/* y (n, c) = mean over hw of x (n, c, hw). */
void avgpool_forward(float *y, const float *x, int n, int c, int hw);
void avgpool_backward(float *dx, const float *dy, int n, int c, int hw, int acc);

/* y (n, out) = x (n, in) w^T + b, w (out, in), b (out) or NULL. */
void linear_forward(float *y, const float *x, const float *w, const float *b, int n, int in, int out);
void linear_backward(float *dx, float *dw, float *db, const float *dy, const float *x, const float *w,
                     int n, int in, int out, int acc);

/* Mean over the batch of cross-entropy of softmax(logits (n, classes)) against y (n). Writes
 * dlogits = scale * d(mean loss)/dlogits when dlogits is non-NULL (overwrites, does not add);
 * counts correct argmax predictions in *correct when non-NULL. Returns the mean loss. */
float softmax_xent(const float *logits, const int *y, int n, int classes, float *dlogits, float scale,
                   int *correct);

#endif
