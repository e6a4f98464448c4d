/* layers.c - layer kernels. The convolution is im2col + sgemm per image: the per-image matrices
 * are already large enough for OpenBLAS, and the scratch stays one image's size. */
#include "layers.h"

#include "quant.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

void conv_shape_init(conv_shape_t *s, int n, int cin, int h, int w, int cout, int k, int stride, int pad) {
    s->n = n; s->cin = cin; s->h = h; s->w = w;
    s->cout = cout; s->k = k; s->stride = stride; s->pad = pad;
    s->ho = (h + 2 * pad - k) / stride + 1;
    s->wo = (w + 2 * pad - k) / stride + 1;
}

static int conv_is_pointwise(const conv_shape_t *s) {
    return s->k == 1 && s->stride == 1 && s->pad == 0;
}

/* A stride-1 convolution's input gradient is itself a convolution of dout, with the kernel
 * flipped and its channel axes swapped, padded by k - 1 - pad: im2col of dout and one sgemm that
 * adds straight into dx. That avoids the (cin*k*k, ho*wo) product and the scatter of col2im. */
static int conv_dx_is_conv(const conv_shape_t *s) {
    return s->stride == 1 && s->pad <= s->k - 1;
}

/* The shape of that convolution of one image's dout (cout, ho, wo) into dx (cin, h, w). */
static void conv_dx_shape(conv_shape_t *t, const conv_shape_t *s) {
    conv_shape_init(t, 1, s->cout, s->ho, s->wo, s->cin, s->k, 1, s->k - 1 - s->pad);
}

size_t conv_scratch_size(const conv_shape_t *s) {
    if (conv_is_pointwise(s)) return 0;
    size_t n = (size_t)s->cin * s->k * s->k * s->ho * s->wo;
    if (conv_dx_is_conv(s)) {
        /* im2col of dout, then the flipped kernel after it */
        const size_t nd = (size_t)s->cout * s->k * s->k * s->h * s->w;
        if (nd > n) n = nd;
        n += (size_t)s->cin * s->cout * s->k * s->k;
    }
    return n;
}

/* The output columns [*lo, *hi) whose input column ox * stride - pad + kx lies inside [0, w). */
static void valid_cols(const conv_shape_t *s, int kx, int *lo, int *hi) {
    int off = kx - s->pad, a = 0, b = s->wo;
    while (a < b && a * s->stride + off < 0) a++;
    while (b > a && (b - 1) * s->stride + off >= s->w) b--;
    *lo = a;
    *hi = b;
}

/* col (cin*k*k, ho*wo) from one image x (cin, h, w). The bounds are worked out once per kernel
 * column, so the inner loops are plain copies that the compiler vectorises. */
static void im2col(float *col, const float *x, const conv_shape_t *s) {
    const int k = s->k, wo = s->wo, howo = s->ho * wo, st = s->stride;
    for (int c = 0; c < s->cin; c++) {
        const float *xc = x + (size_t)c * s->h * s->w;
        for (int ky = 0; ky < k; ky++) {
            for (int kx = 0; kx < k; kx++) {
                float *row = col + ((size_t)(c * k + ky) * k + kx) * howo;
                int lo, hi;
                valid_cols(s, kx, &lo, &hi);
                const int off = kx - s->pad;
                for (int oy = 0; oy < s->ho; oy++) {
                    const int iy = oy * st - s->pad + ky;
                    float *restrict r = row + oy * wo;
                    if (iy < 0 || iy >= s->h || lo >= hi) {
                        memset(r, 0, sizeof(float) * (size_t)wo);
                        continue;
                    }
                    const float *restrict xr = xc + (size_t)iy * s->w; /* input column ox * st + off */
                    for (int ox = 0; ox < lo; ox++) r[ox] = 0.0f;
                    if (st == 1) {
                        memcpy(r + lo, xr + lo + off, sizeof(float) * (size_t)(hi - lo));
                    } else {
                        for (int ox = lo; ox < hi; ox++) r[ox] = xr[ox * st + off];
                    }
                    for (int ox = hi; ox < wo; ox++) r[ox] = 0.0f;
                }
            }
        }
    }
}

/* dx (cin, h, w) += col2im(dcol (cin*k*k, ho*wo)). */
static void col2im_add(float *dx, const float *dcol, const conv_shape_t *s) {
    const int k = s->k, wo = s->wo, howo = s->ho * wo, st = s->stride;
    for (int c = 0; c < s->cin; c++) {
        float *dxc = dx + (size_t)c * s->h * s->w;
        for (int ky = 0; ky < k; ky++) {
            for (int kx = 0; kx < k; kx++) {
                const float *row = dcol + ((size_t)(c * k + ky) * k + kx) * howo;
                int lo, hi;
                valid_cols(s, kx, &lo, &hi);
                const int off = kx - s->pad;
                for (int oy = 0; oy < s->ho; oy++) {
                    const int iy = oy * st - s->pad + ky;
                    if (iy < 0 || iy >= s->h) continue;
                    const float *restrict r = row + oy * wo;
                    float *restrict dr = dxc + (size_t)iy * s->w;
                    if (st == 1) {
                        float *restrict ds = dr + lo + off;
                        for (int i = 0; i < hi - lo; i++) ds[i] += r[lo + i];
                    } else {
                        for (int ox = lo; ox < hi; ox++) dr[ox * st + off] += r[ox];
                    }
                }
            }
        }
    }
}

size_t conv_scratch_size_codes(const conv_shape_t *s) {
    return conv_scratch_size(s) + (size_t)s->cin * s->h * s->w;
}

/* Image n of the input as floats: x's own, or its k-bit codes xq decoded into buf (after the
 * float path's scratch, so im2col and the flipped kernel never overwrite it). */
static const float *image_of(const float *x, const uint8_t *xq, int k, int n, size_t xsz, float *buf) {
    if (xq == NULL) return x + n * xsz;
    quant_act_decode(buf, xq + n * xsz, xsz, k);
    return buf;
}

static void conv_forward_impl(float *out, const float *x, const uint8_t *xq, int bits, const float *w,
                              const conv_shape_t *s, float *col) {
    const int kk = s->cin * s->k * s->k, howo = s->ho * s->wo;
    const size_t xsz = (size_t)s->cin * s->h * s->w, osz = (size_t)s->cout * howo;
    float *buf = col + conv_scratch_size(s);
    for (int n = 0; n < s->n; n++) {
        const float *b = image_of(x, xq, bits, n, xsz, buf);
        if (!conv_is_pointwise(s)) {
            im2col(col, b, s);
            b = col;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s->cout, howo, kk, 1.0f, w, kk, b, howo,
                    0.0f, out + n * osz, howo);
    }
}

void conv2d_forward(float *out, const float *x, const float *w, const conv_shape_t *s, float *col) {
    conv_forward_impl(out, x, NULL, 0, w, s, col);
}

void conv2d_forward_codes(float *out, const uint8_t *x, int k, const float *w, const conv_shape_t *s, float *col) {
    conv_forward_impl(out, NULL, x, k, w, s, col);
}

static void conv_backward_impl(float *dx, float *dw, const float *dout, const float *x, const uint8_t *xq,
                               int bits, const float *w, const conv_shape_t *s, float *col, int acc) {
    const int kk = s->cin * s->k * s->k, howo = s->ho * s->wo, k2 = s->k * s->k;
    const size_t xsz = (size_t)s->cin * s->h * s->w, osz = (size_t)s->cout * howo;
    const int pointwise = conv_is_pointwise(s), dx_conv = !pointwise && dx != NULL && conv_dx_is_conv(s);
    conv_shape_t t;
    float *wt = NULL; /* (cin, cout, k, k): w with channel axes swapped and the kernel flipped */
    if (dx_conv) {
        conv_dx_shape(&t, s);
        wt = col + conv_scratch_size(s) - (size_t)s->cin * s->cout * k2;
        for (int co = 0; co < s->cout; co++)
            for (int ci = 0; ci < s->cin; ci++)
                for (int j = 0; j < k2; j++)
                    wt[((size_t)ci * s->cout + co) * k2 + j] = w[((size_t)co * s->cin + ci) * k2 + (k2 - 1 - j)];
    }
    float *buf = col + conv_scratch_size(s);
    for (int n = 0; n < s->n; n++) {
        const float *dy = dout + n * osz;
        const float *b = image_of(x, xq, bits, n, xsz, buf);
        if (!pointwise) {
            im2col(col, b, s);
            b = col;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, s->cout, kk, howo, 1.0f, dy, howo, b, howo,
                    1.0f, dw, kk);
        if (dx == NULL) continue;
        if (pointwise) {
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, kk, howo, s->cout, 1.0f, w, kk, dy, howo,
                        acc ? 1.0f : 0.0f, dx + n * xsz, howo);
        } else if (dx_conv) {
            const int hw = s->h * s->w, kt = s->cout * k2;
            im2col(col, dy, &t);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s->cin, hw, kt, 1.0f, wt, kt, col, hw,
                        acc ? 1.0f : 0.0f, dx + n * xsz, hw);
        } else {
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, kk, howo, s->cout, 1.0f, w, kk, dy, howo,
                        0.0f, col, howo);
            /* one image's dx is still in cache when col2im adds into it */
            if (!acc) memset(dx + n * xsz, 0, sizeof(float) * xsz);
            col2im_add(dx + n * xsz, col, s);
        }
    }
}

void conv2d_backward(float *dx, float *dw, const float *dout, const float *x, const float *w,
                     const conv_shape_t *s, float *col, int acc) {
    conv_backward_impl(dx, dw, dout, x, NULL, 0, w, s, col, acc);
}

void conv2d_backward_codes(float *dx, float *dw, const float *dout, const uint8_t *x, int k, const float *w,
                           const conv_shape_t *s, float *col, int acc) {
    conv_backward_impl(dx, dw, dout, NULL, x, k, w, s, col, acc);
}

void conv2d_forward_ref(float *out, const float *x, const float *w, const conv_shape_t *s) {
    for (int n = 0; n < s->n; n++)
        for (int co = 0; co < s->cout; co++)
            for (int oy = 0; oy < s->ho; oy++)
                for (int ox = 0; ox < s->wo; ox++) {
                    double acc = 0.0;
                    for (int ci = 0; ci < s->cin; ci++)
                        for (int ky = 0; ky < s->k; ky++)
                            for (int kx = 0; kx < s->k; kx++) {
                                int iy = oy * s->stride - s->pad + ky, ix = ox * s->stride - s->pad + kx;
                                if (iy < 0 || iy >= s->h || ix < 0 || ix >= s->w) continue;
                                acc += (double)x[(((size_t)n * s->cin + ci) * s->h + iy) * s->w + ix] *
                                       w[(((size_t)co * s->cin + ci) * s->k + ky) * s->k + kx];
                            }
                    out[(((size_t)n * s->cout + co) * s->ho + oy) * s->wo + ox] = (float)acc;
                }
}

/* Channel ch's normalisation y = x a + b: from the batch statistics in training (which it saves in
 * mean, rstd and folds into the running ones), from the running ones in evaluation. */
static void bn_coefs(const float *x, const float *gamma, const float *beta, float *mean, float *rstd,
                     float *rmean, float *rvar, int n, int c, int hw, int training, float momentum, int ch,
                     float *a, float *b) {
    const double m = (double)n * hw;
    float mu, rs;
    if (training) {
        /* Float sums over one row (vectorised), double across rows. */
        double sum = 0.0, sq = 0.0;
        for (int i = 0; i < n; i++) {
            const float *p = x + ((size_t)i * c + ch) * hw;
            float r = 0.0f;
            for (int j = 0; j < hw; j++) r += p[j];
            sum += r;
        }
        double dmu = sum / m;
        const float fmu = (float)dmu;
        for (int i = 0; i < n; i++) {
            const float *p = x + ((size_t)i * c + ch) * hw;
            float r = 0.0f;
            for (int j = 0; j < hw; j++) r += (p[j] - fmu) * (p[j] - fmu);
            sq += r;
        }
        double var = sq / m;
        mu = (float)dmu;
        rs = (float)(1.0 / sqrt(var + 1e-5));
        mean[ch] = mu;
        rstd[ch] = rs;
        double unbiased = m > 1 ? sq / (m - 1) : var;
        rmean[ch] = (float)((1.0 - momentum) * rmean[ch] + momentum * dmu);
        rvar[ch] = (float)((1.0 - momentum) * rvar[ch] + momentum * unbiased);
    } else {
        mu = rmean[ch];
        rs = (float)(1.0 / sqrt((double)rvar[ch] + 1e-5));
    }
    *a = gamma[ch] * rs;
    *b = beta[ch] - mu * *a;
}

void batchnorm_forward(float *y, const float *x, const float *gamma, const float *beta,
                       float *mean, float *rstd, float *rmean, float *rvar,
                       int n, int c, int hw, int training, float momentum) {
    for (int ch = 0; ch < c; ch++) {
        float a, b;
        bn_coefs(x, gamma, beta, mean, rstd, rmean, rvar, n, c, hw, training, momentum, ch, &a, &b);
        for (int i = 0; i < n; i++) {
            const float *p = x + ((size_t)i * c + ch) * hw;
            float *q = y + ((size_t)i * c + ch) * hw;
            for (int j = 0; j < hw; j++) q[j] = p[j] * a + b;
        }
    }
}

/* The fused kernels work on one row (image, channel) at a time, in chunks of BN_CHUNK floats
 * that stay in L1. */
#define BN_CHUNK 256

static void bn_add_impl(float *y, const float *x, const float *r, const uint8_t *rq, int bits,
                        const float *gamma, const float *beta, float *mean, float *rstd, float *rmean,
                        float *rvar, int n, int c, int hw, int training, float momentum) {
    float t[BN_CHUNK];
    for (int ch = 0; ch < c; ch++) {
        float a, b;
        bn_coefs(x, gamma, beta, mean, rstd, rmean, rvar, n, c, hw, training, momentum, ch, &a, &b);
        for (int i = 0; i < n; i++) {
            const size_t o = ((size_t)i * c + ch) * hw;
            const float *p = x + o;
            float *q = y + o;
            if (rq == NULL) {
                const float *u = r + o;
                for (int j = 0; j < hw; j++) q[j] = p[j] * a + b + u[j];
                continue;
            }
            for (int j0 = 0; j0 < hw; j0 += BN_CHUNK) {
                const int len = hw - j0 < BN_CHUNK ? hw - j0 : BN_CHUNK;
                quant_act_decode(t, rq + o + j0, (size_t)len, bits);
                for (int j = 0; j < len; j++) q[j0 + j] = p[j0 + j] * a + b + t[j];
            }
        }
    }
}

void batchnorm_add_forward(float *y, const float *x, const float *r, const float *gamma, const float *beta,
                           float *mean, float *rstd, float *rmean, float *rvar,
                           int n, int c, int hw, int training, float momentum) {
    bn_add_impl(y, x, r, NULL, 0, gamma, beta, mean, rstd, rmean, rvar, n, c, hw, training, momentum);
}

void batchnorm_add_forward_codes(float *y, const float *x, const uint8_t *r, int k, const float *gamma,
                                 const float *beta, float *mean, float *rstd, float *rmean, float *rvar,
                                 int n, int c, int hw, int training, float momentum) {
    bn_add_impl(y, x, NULL, r, k, gamma, beta, mean, rstd, rmean, rvar, n, c, hw, training, momentum);
}

void batchnorm_recompute(float *y, const float *x, const float *r, const uint8_t *rq, int k, const float *gamma,
                         const float *beta, const float *mean, const float *rstd, int n, int c, int hw) {
    float t[BN_CHUNK];
    for (int ch = 0; ch < c; ch++) {
        const float a = gamma[ch] * rstd[ch], b = beta[ch] - mean[ch] * a; /* as bn_coefs */
        for (int i = 0; i < n; i++) {
            const size_t o = ((size_t)i * c + ch) * hw;
            const float *p = x + o;
            float *q = y + o;
            if (rq != NULL) {
                for (int j0 = 0; j0 < hw; j0 += BN_CHUNK) {
                    const int len = hw - j0 < BN_CHUNK ? hw - j0 : BN_CHUNK;
                    quant_act_decode(t, rq + o + j0, (size_t)len, k);
                    for (int j = 0; j < len; j++) q[j0 + j] = p[j0 + j] * a + b + t[j];
                }
            } else if (r != NULL) {
                const float *u = r + o;
                for (int j = 0; j < hw; j++) q[j] = p[j] * a + b + u[j];
            } else {
                for (int j = 0; j < hw; j++) q[j] = p[j] * a + b;
            }
        }
    }
}

void batchnorm_backward(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                        const float *gamma, const float *mean, const float *rstd, int n, int c, int hw,
                        int acc) {
    const double m = (double)n * hw;
    for (int ch = 0; ch < c; ch++) {
        const float mu = mean[ch], rs = rstd[ch];
        double sdy = 0.0, sdyx = 0.0;
        for (int i = 0; i < n; i++) {
            const float *p = x + ((size_t)i * c + ch) * hw;
            const float *g = dy + ((size_t)i * c + ch) * hw;
            float a = 0.0f, b = 0.0f;
            for (int j = 0; j < hw; j++) {
                a += g[j];
                b += g[j] * ((p[j] - mu) * rs);
            }
            sdy += a;
            sdyx += b;
        }
        dgamma[ch] += (float)sdyx;
        dbeta[ch] += (float)sdy;
        if (dx == NULL) continue;
        const float k = gamma[ch] * rs, mdy = (float)(sdy / m), mdyx = (float)(sdyx / m);
        for (int i = 0; i < n; i++) {
            const float *p = x + ((size_t)i * c + ch) * hw;
            const float *g = dy + ((size_t)i * c + ch) * hw;
            float *d = dx + ((size_t)i * c + ch) * hw;
            if (acc)
                for (int j = 0; j < hw; j++) d[j] += k * (g[j] - mdy - (p[j] - mu) * rs * mdyx);
            else
                for (int j = 0; j < hw; j++) d[j] = k * (g[j] - mdy - (p[j] - mu) * rs * mdyx);
        }
    }
}

/* In the fused batch norm + activation kernels, the batch norm output of a chunk is computed,
 * then the quantizer's own kernels run on it, so the fused path cannot drift from them. */
static void bn_act_impl(float *y, uint8_t *yq, const float *x, const float *gamma, const float *beta,
                        float *mean, float *rstd, float *rmean, float *rvar,
                        int n, int c, int hw, int training, float momentum, int k) {
    float t[BN_CHUNK];
    for (int ch = 0; ch < c; ch++) {
        float a, b;
        bn_coefs(x, gamma, beta, mean, rstd, rmean, rvar, n, c, hw, training, momentum, ch, &a, &b);
        for (int i = 0; i < n; i++) {
            const size_t o = ((size_t)i * c + ch) * hw;
            const float *p = x + o;
            for (int j0 = 0; j0 < hw; j0 += BN_CHUNK) {
                const int len = hw - j0 < BN_CHUNK ? hw - j0 : BN_CHUNK;
                if (yq != NULL) {
                    for (int j = 0; j < len; j++) t[j] = p[j0 + j] * a + b;
                    quant_act_encode(yq + o + j0, t, (size_t)len, k);
                    continue;
                }
                float *q = y + o;
                for (int j = j0; j < j0 + len; j++) q[j] = p[j] * a + b;
                quant_act_forward(q + j0, q + j0, (size_t)len, k);
            }
        }
    }
}

void batchnorm_act_forward(float *y, const float *x, const float *gamma, const float *beta,
                           float *mean, float *rstd, float *rmean, float *rvar,
                           int n, int c, int hw, int training, float momentum, int k) {
    bn_act_impl(y, NULL, x, gamma, beta, mean, rstd, rmean, rvar, n, c, hw, training, momentum, k);
}

void batchnorm_act_forward_codes(uint8_t *y, const float *x, const float *gamma, const float *beta,
                                 float *mean, float *rstd, float *rmean, float *rvar,
                                 int n, int c, int hw, int training, float momentum, int k) {
    bn_act_impl(NULL, y, x, gamma, beta, mean, rstd, rmean, rvar, n, c, hw, training, momentum, k);
}

void batchnorm_act_backward(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                            const float *gamma, const float *beta, const float *mean, const float *rstd,
                            int n, int c, int hw, int k, int acc) {
    const double m = (double)n * hw;
    float t[BN_CHUNK], g[BN_CHUNK];
    for (int ch = 0; ch < c; ch++) {
        const float mu = mean[ch], rs = rstd[ch];
        const float a = gamma[ch] * rs, b = beta[ch] - mu * a; /* as batchnorm_forward */
        double sdy = 0.0, sdyx = 0.0;
        for (int i = 0; i < n; i++) {
            const float *p = x + ((size_t)i * c + ch) * hw;
            const float *d = dy + ((size_t)i * c + ch) * hw;
            float sa = 0.0f, sb = 0.0f;
            for (int j0 = 0; j0 < hw; j0 += BN_CHUNK) {
                const int len = hw - j0 < BN_CHUNK ? hw - j0 : BN_CHUNK;
                for (int j = 0; j < len; j++) t[j] = p[j0 + j] * a + b;
                quant_act_backward(g, d + j0, t, (size_t)len, k, 0);
                for (int j = 0; j < len; j++) {
                    sa += g[j];
                    sb += g[j] * ((p[j0 + j] - mu) * rs);
                }
            }
            sdy += sa;
            sdyx += sb;
        }
        dgamma[ch] += (float)sdyx;
        dbeta[ch] += (float)sdy;
        if (dx == NULL) continue;
        const float kk = gamma[ch] * rs, mdy = (float)(sdy / m), mdyx = (float)(sdyx / m);
        for (int i = 0; i < n; i++) {
            const float *p = x + ((size_t)i * c + ch) * hw;
            const float *d = dy + ((size_t)i * c + ch) * hw;
            float *o = dx + ((size_t)i * c + ch) * hw;
            for (int j0 = 0; j0 < hw; j0 += BN_CHUNK) {
                const int len = hw - j0 < BN_CHUNK ? hw - j0 : BN_CHUNK;
                for (int j = 0; j < len; j++) t[j] = p[j0 + j] * a + b;
                quant_act_backward(g, d + j0, t, (size_t)len, k, 0);
                float *q = o + j0;
                const float *pp = p + j0;
                if (acc)
                    for (int j = 0; j < len; j++) q[j] += kk * (g[j] - mdy - (pp[j] - mu) * rs * mdyx);
                else
                    for (int j = 0; j < len; j++) q[j] = kk * (g[j] - mdy - (pp[j] - mu) * rs * mdyx);
            }
        }
    }
}

void relu_forward(float *y, const float *x, size_t len) {
    for (size_t i = 0; i < len; i++) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

void relu_backward(float *dx, const float *dy, const float *y, size_t len, int acc) {
    /* dy is loaded unconditionally so that the loops vectorise */
    if (acc)
        for (size_t i = 0; i < len; i++) {
            const float g = dy[i];
            dx[i] += y[i] > 0.0f ? g : 0.0f;
        }
    else
        for (size_t i = 0; i < len; i++) {
            const float g = dy[i];
            dx[i] = y[i] > 0.0f ? g : 0.0f;
        }
}

void add_forward(float *y, const float *a, const float *b, size_t len) {
    for (size_t i = 0; i < len; i++) y[i] = a[i] + b[i];
}

void avgpool_forward(float *y, const float *x, int n, int c, int hw) {
    for (size_t i = 0; i < (size_t)n * c; i++) {
        const float *p = x + i * hw;
        double s = 0.0;
        for (int j = 0; j < hw; j++) s += p[j];
        y[i] = (float)(s / hw);
    }
}

void avgpool_backward(float *dx, const float *dy, int n, int c, int hw, int acc) {
    for (size_t i = 0; i < (size_t)n * c; i++) {
        const float g = dy[i] / (float)hw;
        float *d = dx + i * hw;
        if (acc)
            for (int j = 0; j < hw; j++) d[j] += g;
        else
            for (int j = 0; j < hw; j++) d[j] = g;
    }
}

void linear_forward(float *y, const float *x, const float *w, const float *b, int n, int in, int out) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, out, in, 1.0f, x, in, w, in, 0.0f, y, out);
    if (b == NULL) return;
    for (int i = 0; i < n; i++)
        for (int o = 0; o < out; o++) y[(size_t)i * out + o] += b[o];
}

void linear_backward(float *dx, float *dw, float *db, const float *dy, const float *x, const float *w,
                     int n, int in, int out, int acc) {
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, n, 1.0f, dy, out, x, in, 1.0f, dw, in);
    if (db != NULL)
        for (int i = 0; i < n; i++)
            for (int o = 0; o < out; o++) db[o] += dy[(size_t)i * out + o];
    if (dx != NULL)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, in, out, 1.0f, dy, out, w, in,
                    acc ? 1.0f : 0.0f, dx, in);
}

float softmax_xent(const float *logits, const int *y, int n, int classes, float *dlogits, float scale,
                   int *correct) {
    double loss = 0.0;
    int right = 0;
    for (int i = 0; i < n; i++) {
        const float *l = logits + (size_t)i * classes;
        int best = 0;
        float mx = l[0];
        for (int k = 1; k < classes; k++)
            if (l[k] > mx) { mx = l[k]; best = k; }
        double sum = 0.0;
        for (int k = 0; k < classes; k++) sum += exp((double)l[k] - mx);
        loss += log(sum) - ((double)l[y[i]] - mx);
        right += best == y[i];
        if (dlogits != NULL) {
            float *d = dlogits + (size_t)i * classes;
            for (int k = 0; k < classes; k++) {
                double p = exp((double)l[k] - mx) / sum;
                d[k] = (float)((p - (k == y[i])) * scale / n);
            }
        }
    }
    if (correct != NULL) *correct = right;
    return (float)(loss / n);
}
