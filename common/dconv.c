/* dconv.c - direct convolution kernels (see dconv.h): AVX-512 and AVX2 versions, chosen at run
 * time, and the plain C references they are held to. */
#include "dconv.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define DCONV_X86 1
#include <immintrin.h>
/* Tuned for no CPU in particular: GCC 12 tuning for AMD (-mtune=native on Zen) folds a vector
 * that four multiply-adds use into each of them as a memory operand, four loads instead of
 * one, and the weight gradient then ran at half the speed. */
#define AVX512 __attribute__((target("avx512f,tune=generic")))
#define AVX2 __attribute__((target("avx2,fma,tune=generic")))
#endif

static const char *const level_names[] = {"off", "c", "avx2", "avx512"};

int dconv_level(int *forced) {
    const char *e = getenv("AUXPS_DCONV");
    int best = DCONV_OFF;
#ifdef DCONV_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = DCONV_AVX2;
    if (__builtin_cpu_supports("avx512f")) best = DCONV_AVX512;
#endif
    int level = best, named = 0;
    if (e != NULL && strcmp(e, "0") == 0) level = DCONV_OFF;
    else if (e != NULL) /* kernels this CPU does not run, or another value: the widest it runs */
        for (int l = DCONV_C; l <= DCONV_AVX512; l++)
            if (strcmp(e, level_names[l]) == 0 && (l == DCONV_C || l <= best)) level = l, named = 1;
    if (forced != NULL) *forced = named;
    return level;
}

int dconv_enabled(void) { return dconv_level(NULL) != DCONV_OFF; }

const char *dconv_kernels(void) { return level_names[dconv_level(NULL)]; }

void dconv_geom_same(dconv_geom_t *g, int k, int wp, int rows, size_t plane) {
    g->taps = k * k;
    g->rows = rows;
    g->stride = plane;
    for (int t = 0; t < k * k; t++) g->off[t] = (size_t)(t / k) * wp + t % k;
}

size_t dconv_packed_size(int m, int kc, int taps) {
    const size_t blocks = ((size_t)m + DCONV_BLOCK - 1) / DCONV_BLOCK;
    return blocks * DCONV_BLOCK * (size_t)kc * taps;
}

/* Layout: block b, input channel c, tap i, then the block's DCONV_BLOCK outputs, so that the
 * forward kernel reads the weights in one stream. */
void dconv_pack(float *dst, const float *w, int cout, int cin, int k2, int transposed, const int *tap, int ntaps) {
    const int m = transposed ? cin : cout, kc = transposed ? cout : cin;
    const int blocks = (m + DCONV_BLOCK - 1) / DCONV_BLOCK;
    for (int b = 0; b < blocks; b++)
        for (int c = 0; c < kc; c++)
            for (int i = 0; i < ntaps; i++)
                for (int l = 0; l < DCONV_BLOCK; l++) {
                    const int o = b * DCONV_BLOCK + l;
                    const size_t at = transposed ? (size_t)c * cin + o : (size_t)o * cin + c;
                    *dst++ = o < m ? w[at * k2 + tap[i]] : 0.0f;
                }
}

/* ---- the plain C references ------------------------------------------------------------ */

/* Each sum is a chain of fused multiply-adds (fmaf) from zero, as in the vector kernels: the
 * forward and transposed weight-gradient sums take the kernels' order too, and so their bits. */
/* One block of nout outputs (dconv_forward walks the blocks). */
static void forward_block_c(float *o, const float *wb, const float *p, int nout, int kc, const dconv_geom_t *g,
                            int acc) {
    for (int i = 0; i < nout; i++)
        for (int q = 0; q < g->rows; q++) {
            float s = 0.0f;
            for (int c = 0; c < kc; c++)
                for (int t = 0; t < g->taps; t++)
                    s = fmaf(wb[((size_t)c * g->taps + t) * DCONV_BLOCK + i], p[(size_t)c * g->stride + q + g->off[t]],
                             s);
            o[(size_t)i * g->rows + q] = acc ? o[(size_t)i * g->rows + q] + s : s;
        }
}

static void weight_grad_c(float *dw, const float *dy, size_t dy_stride, const float *x, int cout, int cin,
                          const dconv_geom_t *g) {
    for (int t = 0; t < g->taps; t++)
        for (int co = 0; co < cout; co++)
            for (int ci = 0; ci < cin; ci++) {
                float s = 0.0f;
                for (int q = 0; q < g->rows; q++)
                    s = fmaf(dy[co * dy_stride + q], x[ci * g->stride + q + g->off[t]], s);
                dw[((size_t)t * cout + co) * cin + ci] += s;
            }
}

static void weight_grad_t_c(float *dw, const float *dy, size_t dy_stride, const float *xt, int cout, int cin,
                            const dconv_geom_t *g) {
    for (int t = 0; t < g->taps; t++)
        for (int co = 0; co < cout; co++)
            for (int ci = 0; ci < cin; ci++) {
                float s = 0.0f;
                for (int q = 0; q < g->rows; q++) s = fmaf(dy[co * dy_stride + q], xt[(q + g->off[t]) * cin + ci], s);
                dw[((size_t)t * cout + co) * cin + ci] += s;
            }
}

#ifdef DCONV_X86

/* ---- AVX-512 ----------------------------------------------------------------------------- */

_Static_assert(DCONV_BLOCK == 8 && DCONV_TILE == 32 && DCONV_WIDE == 16,
               "the kernels' tiles: 8 outputs by 2 vectors of 16; inputs by vectors of 16");

/* Lanes [0, n) of a 16-lane mask, n clipped to [0, 16]. */
static inline __mmask16 first_lanes(int n) {
    return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1);
}

/* One block of up to 8 outputs: 16 accumulators of 16 lanes hold 8 outputs by 32 positions
 * over every input channel and tap; each step loads two vectors of the plane and broadcasts
 * 8 weights for 16 multiply-adds. The last tile's loads and stores stop at rows. */
AVX512 static void forward_block512(float *o, const float *wb, const float *p, int nout, int kc,
                                    const dconv_geom_t *g, int acc) {
    const int rows = g->rows;
    for (int p0 = 0; p0 < rows; p0 += DCONV_TILE) {
        const __mmask16 m0 = first_lanes(rows - p0), m1 = first_lanes(rows - p0 - 16);
        __m512 a0[8], a1[8];
        for (int i = 0; i < 8; i++) a0[i] = a1[i] = _mm512_setzero_ps();
        const float *wq = wb;
        for (int c = 0; c < kc; c++) {
            const float *x = p + (size_t)c * g->stride + p0;
            for (int t = 0; t < g->taps; t++, wq += 8) {
                const float *xt = x + g->off[t];
                const __m512 x0 = _mm512_maskz_loadu_ps(m0, xt), x1 = _mm512_maskz_loadu_ps(m1, xt + 16);
                for (int i = 0; i < 8; i++) {
                    const __m512 wv = _mm512_set1_ps(wq[i]);
                    a0[i] = _mm512_fmadd_ps(wv, x0, a0[i]);
                    a1[i] = _mm512_fmadd_ps(wv, x1, a1[i]);
                }
            }
        }
        for (int i = 0; i < 8; i++) {
            if (i >= nout) break;
            float *d = o + (size_t)i * rows + p0;
            if (acc) {
                a0[i] = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, d), a0[i]);
                a1[i] = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, d + 16), a1[i]);
            }
            _mm512_mask_storeu_ps(d, m0, a0[i]);
            _mm512_mask_storeu_ps(d + 16, m1, a1[i]);
        }
    }
}

/* The sums of the lanes of 16 vectors: the result's lanes 4 l + j hold those of x[4 j + l]. Four
 * rounds of shuffles and adds (45 instructions) instead of 16 reductions of one vector each. */
AVX512 static inline __m512 reduce16(const __m512 *x) {
    __m512 s[8], t[4], u[2];
    for (int j = 0; j < 8; j++) /* 256-bit halves: x[2j] in the low one, x[2j+1] in the high */
        s[j] = _mm512_add_ps(_mm512_shuffle_f32x4(x[2 * j], x[2 * j + 1], 0x44),
                             _mm512_shuffle_f32x4(x[2 * j], x[2 * j + 1], 0xEE));
    for (int j = 0; j < 4; j++) /* 128-bit lane l: x[4j + l] */
        t[j] = _mm512_add_ps(_mm512_shuffle_f32x4(s[2 * j], s[2 * j + 1], 0x88),
                             _mm512_shuffle_f32x4(s[2 * j], s[2 * j + 1], 0xDD));
    for (int j = 0; j < 2; j++) /* lane l: partial pairs of x[8j + l] and x[8j + 4 + l], interleaved */
        u[j] = _mm512_add_ps(_mm512_unpacklo_ps(t[2 * j], t[2 * j + 1]), _mm512_unpackhi_ps(t[2 * j], t[2 * j + 1]));
    /* lane l: x[l], x[4 + l], x[8 + l], x[12 + l] */
    return _mm512_add_ps(_mm512_shuffle_ps(u[0], u[1], 0x44), _mm512_shuffle_ps(u[0], u[1], 0xEE));
}

/* Tiles of 4 output by 4 input channels, one tap at a time: 16 accumulators sum over the
 * positions 16 lanes at a time, and each lane sum is reduced at the end. Rows past a tile's
 * edge read the edge's row again and are not stored. */
AVX512 static void weight_grad512(float *dw, const float *dy, size_t dy_stride, const float *x, int cout, int cin,
                                  const dconv_geom_t *g) {
    const int rows = g->rows, full = rows / 16;
    const __mmask16 tail = first_lanes(rows % 16);
    for (int cb = 0; cb < cout; cb += 4)
        for (int ib = 0; ib < cin; ib += 4)
            for (int t = 0; t < g->taps; t++) {
                const int nc = cout - cb < 4 ? cout - cb : 4, ni = cin - ib < 4 ? cin - ib : 4;
                const float *d[4], *xr[4];
                for (int i = 0; i < 4; i++) {
                    d[i] = dy + (size_t)(cb + (i < nc ? i : nc - 1)) * dy_stride;
                    xr[i] = x + (size_t)(ib + (i < ni ? i : ni - 1)) * g->stride + g->off[t];
                }
                __m512 a[4][4];
                for (int i = 0; i < 4; i++)
                    for (int v = 0; v < 4; v++) a[i][v] = _mm512_setzero_ps();
                int q = 0;
                for (int r = 0; r < full; r++, q += 16) {
                    __m512 xv[4];
                    for (int v = 0; v < 4; v++) xv[v] = _mm512_loadu_ps(xr[v] + q);
                    for (int i = 0; i < 4; i++) {
                        const __m512 dv = _mm512_loadu_ps(d[i] + q);
                        for (int v = 0; v < 4; v++) a[i][v] = _mm512_fmadd_ps(dv, xv[v], a[i][v]);
                    }
                }
                if (tail) {
                    __m512 xv[4];
                    for (int v = 0; v < 4; v++) xv[v] = _mm512_maskz_loadu_ps(tail, xr[v] + q);
                    for (int i = 0; i < 4; i++) {
                        const __m512 dv = _mm512_maskz_loadu_ps(tail, d[i] + q);
                        for (int v = 0; v < 4; v++) a[i][v] = _mm512_fmadd_ps(dv, xv[v], a[i][v]);
                    }
                }
                __m512 x16[16];
                float sum[16];
                for (int i = 0; i < 4; i++)
                    for (int v = 0; v < 4; v++) x16[4 * v + i] = a[i][v];
                _mm512_storeu_ps(sum, reduce16(x16)); /* sum[4 i + v]: a[i][v] */
                for (int i = 0; i < nc; i++) {
                    float *row = dw + ((size_t)t * cout + cb + i) * cin + ib;
                    for (int v = 0; v < ni; v++) row[v] += sum[4 * i + v];
                }
            }
}

/* The same sums with x transposed, xt (positions, cin): NC output channels by NV vectors of 16
 * input channels (24 accumulators) are summed over the positions one at a time, a broadcast of
 * dy by a row of xt, with no reduction across lanes. One function per tile shape. */
#define WEIGHT_GRAD_T(NAME, NC, NV)                                                                             \
    AVX512 static void NAME(float *dw, const float *dy, size_t dy_stride, const float *xt, int cout, int cin,   \
                            int ib, const dconv_geom_t *g) {                                                    \
        for (int cb = 0; cb < cout; cb += NC) {                                                                 \
            const int nc = cout - cb < NC ? cout - cb : NC;                                                     \
            const float *d[NC];                                                                                 \
            for (int i = 0; i < NC; i++) d[i] = dy + (size_t)(cb + (i < nc ? i : nc - 1)) * dy_stride;         \
            for (int t = 0; t < g->taps; t++) {                                                                 \
                const float *x = xt + g->off[t] * cin + ib;                                                     \
                __m512 a[NC][NV];                                                                               \
                for (int i = 0; i < NC; i++)                                                                    \
                    for (int v = 0; v < NV; v++) a[i][v] = _mm512_setzero_ps();                                 \
                for (int q = 0; q < g->rows; q++, x += cin) {                                                   \
                    __m512 xv[NV];                                                                              \
                    for (int v = 0; v < NV; v++) xv[v] = _mm512_loadu_ps(x + 16 * v);                          \
                    for (int i = 0; i < NC; i++) {                                                              \
                        const __m512 dv = _mm512_set1_ps(d[i][q]);                                              \
                        for (int v = 0; v < NV; v++) a[i][v] = _mm512_fmadd_ps(dv, xv[v], a[i][v]);            \
                    }                                                                                           \
                }                                                                                               \
                for (int i = 0; i < nc; i++) {                                                                  \
                    float *row = dw + ((size_t)t * cout + cb + i) * cin + ib;                                   \
                    for (int v = 0; v < NV; v++)                                                                \
                        _mm512_storeu_ps(row + 16 * v, _mm512_add_ps(_mm512_loadu_ps(row + 16 * v), a[i][v])); \
                }                                                                                               \
            }                                                                                                   \
        }                                                                                                       \
    }

WEIGHT_GRAD_T(weight_grad_t4, 6, 4)
WEIGHT_GRAD_T(weight_grad_t2, 12, 2)
WEIGHT_GRAD_T(weight_grad_t1, 12, 1)

/* Input channels in groups of 64, then 32, then 16. */
AVX512 static void weight_grad_t512(float *dw, const float *dy, size_t dy_stride, const float *xt, int cout, int cin,
                                    const dconv_geom_t *g) {
    int ib = 0;
    for (; ib + 64 <= cin; ib += 64) weight_grad_t4(dw, dy, dy_stride, xt, cout, cin, ib, g);
    if (ib + 32 <= cin) {
        weight_grad_t2(dw, dy, dy_stride, xt, cout, cin, ib, g);
        ib += 32;
    }
    if (ib < cin) weight_grad_t1(dw, dy, dy_stride, xt, cout, cin, ib, g);
}


/* ---- AVX2 -------------------------------------------------------------------------------- */

/* Lanes [0, n) of an 8-lane mask (n may be out of [0, 8]). */
AVX2 static inline __m256i first8(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* One tile of 4 outputs by 24 positions from p0: 12 accumulators of 8 lanes over every input
 * channel and tap; each step loads three vectors of the plane and broadcasts 4 weights (wq:
 * the half block's first weight, DCONV_BLOCK floats per channel and tap). masked: the tile
 * crosses rows, and its loads and stores stop there. Sums in the order of forward_block512's. */
AVX2 static inline __attribute__((always_inline)) void forward_tile4(float *o, const float *wq, const float *p,
                                                                     int nout, int kc, const dconv_geom_t *g,
                                                                     int acc, int p0, int masked) {
    const int rows = g->rows;
    __m256i m[3];
    for (int v = 0; v < 3; v++) m[v] = first8(rows - p0 - 8 * v);
    __m256 a[4][3];
    for (int i = 0; i < 4; i++)
        for (int v = 0; v < 3; v++) a[i][v] = _mm256_setzero_ps();
    for (int c = 0; c < kc; c++) {
        const float *x = p + (size_t)c * g->stride + p0;
        for (int t = 0; t < g->taps; t++, wq += DCONV_BLOCK) {
            const float *xt = x + g->off[t];
            __m256 xv[3];
            for (int v = 0; v < 3; v++)
                xv[v] = masked ? _mm256_maskload_ps(xt + 8 * v, m[v]) : _mm256_loadu_ps(xt + 8 * v);
            for (int i = 0; i < 4; i++) {
                const __m256 wv = _mm256_broadcast_ss(wq + i);
                for (int v = 0; v < 3; v++) a[i][v] = _mm256_fmadd_ps(wv, xv[v], a[i][v]);
            }
        }
    }
    for (int i = 0; i < 4; i++) {
        if (i >= nout) break;
        float *d = o + (size_t)i * rows + p0;
        for (int v = 0; v < 3; v++) {
            if (masked) {
                if (acc) a[i][v] = _mm256_add_ps(_mm256_maskload_ps(d + 8 * v, m[v]), a[i][v]);
                _mm256_maskstore_ps(d + 8 * v, m[v], a[i][v]);
            } else {
                if (acc) a[i][v] = _mm256_add_ps(_mm256_loadu_ps(d + 8 * v), a[i][v]);
                _mm256_storeu_ps(d + 8 * v, a[i][v]);
            }
        }
    }
}

#define TILE4 24 /* positions of an AVX2 tile */

/* A block of up to 8 outputs as two halves of 4 (16 registers hold 12 accumulators). */
AVX2 static void forward_block256(float *o, const float *wb, const float *p, int nout, int kc,
                                  const dconv_geom_t *g, int acc) {
    const int rows = g->rows, full = rows / TILE4 * TILE4;
    for (int h = 0; h < 2 && 4 * h < nout; h++) {
        float *oh = o + (size_t)4 * h * rows;
        const int nh = nout - 4 * h;
        for (int p0 = 0; p0 < full; p0 += TILE4) forward_tile4(oh, wb + 4 * h, p, nh, kc, g, acc, p0, 0);
        if (full < rows) forward_tile4(oh, wb + 4 * h, p, nh, kc, g, acc, full, 1);
    }
}

/* The sums of the lanes of 8 vectors: lane j of the result is x[j]'s. */
AVX2 static inline __m256 reduce8(const __m256 *x) {
    const __m256 t0 = _mm256_hadd_ps(x[0], x[1]), t1 = _mm256_hadd_ps(x[2], x[3]);
    const __m256 t2 = _mm256_hadd_ps(x[4], x[5]), t3 = _mm256_hadd_ps(x[6], x[7]);
    const __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3); /* 128-bit halves: x[0..3], x[4..7] */
    return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

/* Tiles of 4 output by 3 input channels, one tap at a time, as weight_grad512 with 8 lanes. */
AVX2 static void weight_grad256(float *dw, const float *dy, size_t dy_stride, const float *x, int cout, int cin,
                                const dconv_geom_t *g) {
    const int rows = g->rows, full = rows / 8;
    const __m256i tail = first8(rows % 8);
    for (int cb = 0; cb < cout; cb += 4)
        for (int ib = 0; ib < cin; ib += 3)
            for (int t = 0; t < g->taps; t++) {
                const int nc = cout - cb < 4 ? cout - cb : 4, ni = cin - ib < 3 ? cin - ib : 3;
                const float *d[4], *xr[3];
                for (int i = 0; i < 4; i++) d[i] = dy + (size_t)(cb + (i < nc ? i : nc - 1)) * dy_stride;
                for (int v = 0; v < 3; v++) xr[v] = x + (size_t)(ib + (v < ni ? v : ni - 1)) * g->stride + g->off[t];
                __m256 a[16];
                for (int i = 0; i < 16; i++) a[i] = _mm256_setzero_ps();
                int q = 0;
                for (int r = 0; r < full; r++, q += 8) {
                    __m256 xv[3];
                    for (int v = 0; v < 3; v++) xv[v] = _mm256_loadu_ps(xr[v] + q);
                    for (int i = 0; i < 4; i++) {
                        const __m256 dv = _mm256_loadu_ps(d[i] + q);
                        for (int v = 0; v < 3; v++) a[3 * i + v] = _mm256_fmadd_ps(dv, xv[v], a[3 * i + v]);
                    }
                }
                if (rows % 8) {
                    __m256 xv[3];
                    for (int v = 0; v < 3; v++) xv[v] = _mm256_maskload_ps(xr[v] + q, tail);
                    for (int i = 0; i < 4; i++) {
                        const __m256 dv = _mm256_maskload_ps(d[i] + q, tail);
                        for (int v = 0; v < 3; v++) a[3 * i + v] = _mm256_fmadd_ps(dv, xv[v], a[3 * i + v]);
                    }
                }
                float sum[16]; /* sum[3 i + v]: output cb + i, input ib + v */
                _mm256_storeu_ps(sum, reduce8(a));
                _mm256_storeu_ps(sum + 8, reduce8(a + 8));
                for (int i = 0; i < nc; i++) {
                    float *row = dw + ((size_t)t * cout + cb + i) * cin + ib;
                    for (int v = 0; v < ni; v++) row[v] += sum[3 * i + v];
                }
            }
}

/* With x transposed: 6 output channels by 16 input channels (12 accumulators) per step, a
 * broadcast of dy by a row of xt, in the order of weight_grad_t512's sums. */
AVX2 static void weight_grad_t256(float *dw, const float *dy, size_t dy_stride, const float *xt, int cout, int cin,
                                  const dconv_geom_t *g) {
    for (int ib = 0; ib < cin; ib += 16)
        for (int cb = 0; cb < cout; cb += 6) {
            const int nc = cout - cb < 6 ? cout - cb : 6;
            const float *d[6];
            for (int i = 0; i < 6; i++) d[i] = dy + (size_t)(cb + (i < nc ? i : nc - 1)) * dy_stride;
            for (int t = 0; t < g->taps; t++) {
                const float *x = xt + g->off[t] * cin + ib;
                __m256 a[6][2];
                for (int i = 0; i < 6; i++) a[i][0] = a[i][1] = _mm256_setzero_ps();
                for (int q = 0; q < g->rows; q++, x += cin) {
                    const __m256 x0 = _mm256_loadu_ps(x), x1 = _mm256_loadu_ps(x + 8);
                    for (int i = 0; i < 6; i++) {
                        const __m256 dv = _mm256_broadcast_ss(d[i] + q);
                        a[i][0] = _mm256_fmadd_ps(dv, x0, a[i][0]);
                        a[i][1] = _mm256_fmadd_ps(dv, x1, a[i][1]);
                    }
                }
                for (int i = 0; i < nc; i++) {
                    float *row = dw + ((size_t)t * cout + cb + i) * cin + ib;
                    _mm256_storeu_ps(row, _mm256_add_ps(_mm256_loadu_ps(row), a[i][0]));
                    _mm256_storeu_ps(row + 8, _mm256_add_ps(_mm256_loadu_ps(row + 8), a[i][1]));
                }
            }
        }
}

#endif

/* ---- the entry points -------------------------------------------------------------------- */

typedef void forward_block_fn(float *o, const float *wb, const float *p, int nout, int kc, const dconv_geom_t *g,
                              int acc);
typedef void weight_grad_fn(float *dw, const float *dy, size_t dy_stride, const float *x, int cout, int cin,
                            const dconv_geom_t *g);

/* Each kernel set, by level. */
static const struct {
    forward_block_fn *forward_block;
    weight_grad_fn *weight_grad, *weight_grad_t;
} kernel_sets[] = {
    [DCONV_C] = {forward_block_c, weight_grad_c, weight_grad_t_c},
#ifdef DCONV_X86
    [DCONV_AVX2] = {forward_block256, weight_grad256, weight_grad_t256},
    [DCONV_AVX512] = {forward_block512, weight_grad512, weight_grad_t512},
#endif
};

/* The blocks of DCONV_BLOCK outputs, each on its packed weights. */
void dconv_forward(int level, float *o, const float *wpk, const float *p, int m, int kc, const dconv_geom_t *g,
                   int acc) {
    const size_t bsz = (size_t)DCONV_BLOCK * kc * g->taps;
    for (int b = 0; b * DCONV_BLOCK < m; b++) {
        const int nout = m - b * DCONV_BLOCK < DCONV_BLOCK ? m - b * DCONV_BLOCK : DCONV_BLOCK;
        kernel_sets[level].forward_block(o + (size_t)b * DCONV_BLOCK * g->rows, wpk + b * bsz, p, nout, kc, g, acc);
    }
}

void dconv_weight_grad(int level, float *dw, const float *dy, size_t dy_stride, const float *x, int cout, int cin,
                       const dconv_geom_t *g) {
    kernel_sets[level].weight_grad(dw, dy, dy_stride, x, cout, cin, g);
}

void dconv_weight_grad_t(int level, float *dw, const float *dy, size_t dy_stride, const float *xt, int cout, int cin,
                         const dconv_geom_t *g) {
    kernel_sets[level].weight_grad_t(dw, dy, dy_stride, xt, cout, cin, g);
}
