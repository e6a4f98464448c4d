/* layers.c - layer kernels. A convolution works one image at a time, so that its scratch stays
 * one image's size per part: a stride-1 convolution as large as its input runs as k*k shifted
 * sgemms over the zero-padded image (no im2col matrix); the others are im2col + one sgemm. The
 * parts (layers.h) run on the pool's threads; the elementwise loops are HOT (hot.h). */
#include "layers.h"

#include "dconv.h"
#include "hot.h"
#include "pool.h"
#include "quant.h"

#include <cblas.h>
#include <math.h>
#include <stdint.h>
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

/* A stride-1 convolution whose output is as large as its input (2 pad = k - 1), k > 1: the
 * direct kernels compute it over a padded plane, without im2col (conv_forward_shifted). */
static int conv_is_same(const conv_shape_t *s) {
    return s->stride == 1 && s->k > 1 && 2 * s->pad == s->k - 1;
}

/* Convolutions with fewer channels than this on either side keep im2col on the sgemm path: with
 * K = cin (or cout) that small, the shifted sgemms below are slower than one sgemm of
 * K = cin*k*k. */
#define SHIFT_MIN_CHANNELS 4

/* A 'same' convolution that the sgemm path too computes over the padded plane, as shifted
 * sgemms. */
static int conv_is_shifted(const conv_shape_t *s) {
    return conv_is_same(s) && s->cin >= SHIFT_MIN_CHANNELS && s->cout >= SHIFT_MIN_CHANNELS;
}

/* A stride-2 convolution larger than 1x1, when the direct kernels run it: each image is laid out
 * in four phase planes, the padded input's even or odd rows by its even or odd columns, so that
 * every tap reads one of them shifted by whole rows and columns, as a stride-1 convolution reads
 * its plane. */
static int conv_is_phased(const conv_shape_t *s) {
    return s->stride == 2 && s->k > 1;
}

/* The planes that the direct weight gradient reads dout from start their rows of positions on a
 * 64-byte line: dout's planes are a multiple of PLANE_ALIGN floats apart, and the first is placed
 * (align_at) so that dout's first position is on a line. The kernel's loads of dout then never
 * straddle two lines (the unaligned loads cost the weight gradient about a seventh of its speed). */
#define PLANE_ALIGN 16

static size_t align_up(size_t n) { return (n + PLANE_ALIGN - 1) / PLANE_ALIGN * PLANE_ALIGN; }

/* The first p >= base, less than PLANE_ALIGN floats on, where p + lead is on a 64-byte line. */
static float *align_at(float *base, size_t lead) {
    const size_t mis = ((uintptr_t)(base + lead) / sizeof(float)) % PLANE_ALIGN;
    return base + (mis ? PLANE_ALIGN - mis : 0);
}

/* e = (k - 1) / 2, how far a tap reaches into a phase plane; hq rows of wd = wo + 2 e columns per
 * phase plane (pplane floats). wd is also the pitch of the outputs (rows = ho wd positions, each
 * row's first wo kept), of dout's padded plane (ho + 2 e rows, dout from row and column e, in
 * planes dplane floats apart, a multiple of PLANE_ALIGN) and of an input-gradient phase
 * (prows = hq wd positions). */
typedef struct {
    int e, hq, wd, rows, prows;
    size_t pplane, dplane;
} phase_geom_t;

static phase_geom_t phase_geom(const conv_shape_t *s) {
    const int e = (s->k - 1) / 2, wd = s->wo + 2 * e, hq = s->ho + e;
    return (phase_geom_t){e, hq, wd, s->ho * wd, hq * wd, (size_t)hq * wd, align_up((size_t)(s->ho + 2 * e) * wd)};
}

/* The floats of the phase planes of cin channels, followed by k floats that the last outputs'
 * last taps read; or of the same transposed, (4 pplane + k positions, cin). */
static size_t phase_area(const conv_shape_t *s, const phase_geom_t *pg) {
    return (size_t)s->cin * (4 * pg->pplane + (size_t)s->k);
}

/* Whether the direct weight gradient reads its input transposed (dconv_weight_grad_t): on a
 * plane of fewer than 128 output positions, where summing each weight's lanes would cost as
 * much as its multiply-adds, when the input channels come in vectors of 16. */
static int dw_transposed(const conv_shape_t *s, int rows) {
    return rows < 128 && s->cin % DCONV_WIDE == 0;
}

/* The level of the direct kernels (dconv_level) that run convolution s's sums, or DCONV_OFF
 * (sgemms). The AVX-512 ones beat OpenBLAS on every convolution; the AVX2 ones, no wider than
 * OpenBLAS's, only on output planes of at least DIRECT_AVX2_OUT positions (README
 * "Performance"), where the positions that a plane's padding columns and its last tile waste
 * are few. Asked once per convolution: dconv_level reads the environment. */
#define DIRECT_AVX2_OUT 144
static int direct_level(const conv_shape_t *s) {
    int forced;
    const int level = dconv_level(&forced);
    if (level == DCONV_OFF || s->k * s->k > DCONV_MAX_TAPS || !(s->k == 1 || conv_is_phased(s) || conv_is_same(s)))
        return DCONV_OFF;
    return level != DCONV_AVX2 || forced || s->ho * s->wo >= DIRECT_AVX2_OUT ? level : DCONV_OFF;
}

int conv_uses_direct(const conv_shape_t *s) { return direct_level(s) != DCONV_OFF; }

/* Whether the convolution runs over the padded plane (conv_forward_shifted): always when it is
 * shifted, and with the direct kernels whenever it is 'same', down to one channel (the stem). */
static int on_planes(const conv_shape_t *s, int direct) {
    return conv_is_shifted(s) || (direct && conv_is_same(s));
}

/* The padded plane of a shifted convolution: (h + 2 pad) rows of wp = w + 2 pad columns, in planes
 * `plane` floats apart (a multiple of PLANE_ALIGN, zeros after the last row). The output is
 * computed at rows = h * wp positions, of which each row's first w are kept. */
typedef struct {
    int k, wp, rows;
    size_t plane;
} shift_geom_t;

static shift_geom_t shift_geom(const conv_shape_t *s) {
    const int wp = s->w + 2 * s->pad;
    return (shift_geom_t){s->k, wp, s->h * wp, align_up((size_t)(s->h + 2 * s->pad) * wp)};
}

/* The same for the direct kernels. */
static dconv_geom_t shift_dgeom(const shift_geom_t *g) {
    dconv_geom_t d;
    dconv_geom_same(&d, g->k, g->wp, g->rows, g->plane);
    return d;
}

/* The floats of c channels' planes, each followed by k floats that the last outputs' last taps
 * read (zeros); or of the same planes transposed, (plane + k positions, c). */
static size_t shift_area(int c, const shift_geom_t *g) {
    return (size_t)c * (g->plane + (size_t)g->k);
}

/* The output columns [*lo, *hi) whose input column ox * stride - pad + kx lies inside [0, w). */
static void valid_cols(const conv_shape_t *s, int kx, int *lo, int *hi) {
    int off = kx - s->pad, a = 0, b = s->wo;
    while (a < b && a * s->stride + off < 0) a++;
    while (b > a && (b - 1) * s->stride + off >= s->w) b--;
    *lo = a;
    *hi = b;
}

/* Zeroes n floats, n usually 0 or 1 (a row's padding columns): a store, not a call to memset. */
static inline void zero_few(float *p, int n) {
    if (n == 1) p[0] = 0.0f;
    else if (n > 1) memset(p, 0, sizeof(float) * (size_t)n);
}

/* im2col of a stride-1 convolution whose output is as wide as its input (2 pad = k - 1): the
 * valid rows of one (c, ky, kx) are one contiguous stretch of the input, copied at once, and
 * the columns that fall in the padding are zeroed after. */
static void im2col_same(float *col, const float *x, const conv_shape_t *s, int zeros) {
    const int k = s->k, w = s->w, ho = s->ho, howo = ho * w;
    for (int c = 0; c < s->cin; c++) {
        const float *xc = x + (size_t)c * s->h * w;
        for (int ky = 0; ky < k; ky++) {
            const int dy = ky - s->pad; /* input row oy + dy */
            const int oy0 = dy < 0 ? -dy : 0, oy1 = s->h - dy < ho ? s->h - dy : ho;
            for (int kx = 0; kx < k; kx++) {
                float *row = col + ((size_t)(c * k + ky) * k + kx) * howo;
                int lo, hi;
                valid_cols(s, kx, &lo, &hi);
                if (oy1 <= oy0 || lo >= hi) {
                    if (zeros) memset(row, 0, sizeof(float) * (size_t)howo);
                    continue;
                }
                const size_t a = (size_t)oy0 * w + lo, b = (size_t)(oy1 - 1) * w + hi;
                if (zeros) {
                    memset(row, 0, sizeof(float) * a);
                    memset(row + b, 0, sizeof(float) * ((size_t)howo - b));
                }
                /* the stretch also covers the padding columns between its rows */
                memcpy(row + a, xc + (ptrdiff_t)dy * w + (kx - s->pad) + a, sizeof(float) * (b - a));
                for (int oy = oy0; oy < oy1; oy++) {
                    float *r = row + (size_t)oy * w;
                    if (oy > oy0) zero_few(r, lo);
                    if (oy < oy1 - 1) zero_few(r + hi, w - hi);
                }
            }
        }
    }
}

/* col (cin*k*k, ho*wo) from one image x (cin, h, w). The bounds are worked out once per kernel
 * column, so the inner loops are plain copies that the compiler vectorises. The padding's
 * zeros sit at the same places for every image of one shape: zeros = 0 leaves them as the last
 * im2col of this shape into col wrote them, and writes only the image's values. */
static void im2col(float *col, const float *x, const conv_shape_t *s, int zeros) {
    const int k = s->k, wo = s->wo, howo = s->ho * wo, st = s->stride;
    if (st == 1 && wo == s->w) {
        im2col_same(col, x, s, zeros);
        return;
    }
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
                        if (zeros) memset(r, 0, sizeof(float) * (size_t)wo);
                        continue;
                    }
                    const float *restrict xr = xc + (size_t)iy * s->w; /* input column ox * st + off */
                    if (zeros) {
                        zero_few(r, lo);
                        zero_few(r + hi, wo - hi);
                    }
                    if (st == 1) {
                        memcpy(r + lo, xr + lo + off, sizeof(float) * (size_t)(hi - lo));
                    } else {
                        for (int ox = lo; ox < hi; ox++) r[ox] = xr[ox * st + off];
                    }
                }
            }
        }
    }
}

/* dx (cin, h, w) += col2im(dcol (cin*k*k, ho*wo)). */
HOT static void col2im_add(float *dx, const float *dcol, const conv_shape_t *s) {
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

/* A convolution's scratch: the flipped kernel, shared by the parts, then per part an im2col
 * area, one decoded image (codes only) and a partial dw. A shifted convolution's col holds its
 * planes instead (scratch_of), and its img is 0. */
typedef struct {
    size_t wt, col, img, dw;
} conv_scratch_t;

/* The room of a convolution over the padded plane: the kernel relaid out by tap, or packed for
 * the direct kernels (either way, forward or flipped); per part the padded input and dout
 * planes, each followed by its slack, and the output before cropping. */
static void plane_scratch(conv_scratch_t *sc, const conv_shape_t *s) {
    const shift_geom_t g = shift_geom(s);
    const int cmax = s->cin > s->cout ? s->cin : s->cout;
    const int k2 = s->k * s->k;
    const size_t pf = dconv_packed_size(s->cout, s->cin, k2), pb = dconv_packed_size(s->cin, s->cout, k2);
    const size_t col = shift_area(s->cin, &g) + PLANE_ALIGN + shift_area(s->cout, &g) + (size_t)cmax * g.rows;
    if (pf > sc->wt) sc->wt = pf;
    if (pb > sc->wt) sc->wt = pb;
    if (col > sc->col) sc->col = col;
}

static conv_scratch_t scratch_of(const conv_shape_t *s, int codes) {
    conv_scratch_t sc = {0, 0, 0, (size_t)s->cout * s->cin * s->k * s->k};
    if (conv_is_shifted(s)) {
        plane_scratch(&sc, s);
        return sc;
    }
    if (s->k == 1) { /* for the direct kernels, packed forward or flipped */
        const size_t pf = dconv_packed_size(s->cout, s->cin, 1), pb = dconv_packed_size(s->cin, s->cout, 1);
        sc.wt = pf > pb ? pf : pb;
    }
    if (conv_is_pointwise(s) && s->cin == s->cout) {
        sc.col = (size_t)s->cin * s->h * s->w; /* one image's dx, when dx is dout */
    } else if (!conv_is_pointwise(s)) {
        sc.col = (size_t)s->cin * s->k * s->k * s->ho * s->wo;
        if (conv_dx_is_conv(s)) {
            const size_t nd = (size_t)s->cout * s->k * s->k * s->h * s->w; /* im2col of dout */
            if (nd > sc.col) sc.col = nd;
            sc.wt = (size_t)s->cin * s->cout * s->k * s->k;
        }
    }
    if (codes) sc.img = (size_t)s->cin * s->h * s->w;
    if (conv_is_phased(s) && s->k * s->k <= DCONV_MAX_TAPS) {
        /* room for the direct kernels too: the packed kernel (all taps, forward or in the input
         * gradient's four phases), and per part the phase planes, dout's plane (each followed by
         * k floats) and the output or one input-gradient phase; codes are decoded into the
         * phase planes */
        const phase_geom_t pg = phase_geom(s);
        const int k2 = s->k * s->k;
        const size_t pf = dconv_packed_size(s->cout, s->cin, k2), pb = dconv_packed_size(s->cin, s->cout, k2);
        const size_t o = (size_t)s->cout * pg.rows > (size_t)s->cin * pg.prows ? (size_t)s->cout * pg.rows
                                                                              : (size_t)s->cin * pg.prows;
        const size_t col = phase_area(s, &pg) + PLANE_ALIGN + (size_t)s->cout * pg.dplane + (size_t)s->k + o;
        if (pf > sc.wt) sc.wt = pf;
        if (pb > sc.wt) sc.wt = pb;
        if (col > sc.col) sc.col = col;
    }
    if (conv_is_same(s) && s->k * s->k <= DCONV_MAX_TAPS) plane_scratch(&sc, s); /* the direct kernels' too */
    return sc;
}

static size_t scratch_total(const conv_scratch_t *sc) {
    return sc->wt + LAYER_PARTS * (sc->col + sc->img + sc->dw);
}

size_t conv_scratch_size(const conv_shape_t *s) {
    const conv_scratch_t sc = scratch_of(s, 0);
    return scratch_total(&sc);
}

size_t conv_scratch_size_codes(const conv_shape_t *s) {
    const conv_scratch_t sc = scratch_of(s, 1);
    return scratch_total(&sc);
}

void layer_part_range(int n, int part, int *lo, int *hi) {
    /* rounded up, so that fewer items than parts go to the first parts */
    *lo = (int)(((long)n * part + LAYER_PARTS - 1) / LAYER_PARTS);
    *hi = (int)(((long)n * (part + 1) + LAYER_PARTS - 1) / LAYER_PARTS);
}

/* One convolution, forward or backward, as the parts see it. */
typedef struct {
    const conv_shape_t *s;
    conv_scratch_t sc;
    float *scratch;
    const float *x;      /* (n, cin, h, w), or NULL with xq */
    const uint8_t *xq;   /* (n, cin, h, w) k-bit codes */
    int bits;
    float lut[256];      /* codes: each code's value (quant_act_table), for the loops whose reads are
                          * strided or whose rows are short (7 to 28 values: a vectorised division
                          * would run mostly in its scalar tail), where a load costs less than a
                          * division */
    const float *w;      /* (cout, cin, k, k) */
    float *out;          /* forward: (n, cout, ho, wo) */
    const float *dout;   /* backward: (n, cout, ho, wo) */
    float *dx, *dw;      /* backward: (n, cin, h, w) or NULL; (cout, cin, k, k) */
    const float *wt;     /* backward with dx_conv: (cin, cout, k, k); shifted: by tap, or packed */
    int acc;
    int direct;          /* the direct kernels' level (dconv.h) instead of sgemms (DCONV_OFF, 0): wt is
                          * packed for them */
} conv_job_t;

/* Image n of the input as floats: x's own, or its k-bit codes decoded into buf. */
static const float *image_at(const conv_job_t *j, int n, float *buf) {
    const size_t xsz = (size_t)j->s->cin * j->s->h * j->s->w;
    if (j->xq == NULL) return j->x + n * xsz;
    quant_act_decode(buf, j->xq + n * xsz, xsz, j->bits);
    return buf;
}

static float *part_area(const conv_job_t *j, int part) {
    return j->scratch + j->sc.wt + (size_t)part * (j->sc.col + j->sc.img + j->sc.dw);
}

/* ---- stride-1 'same' convolutions without im2col ---------------------------------------
 *
 * With one image zero-padded into planes of (h + 2 pad) x wp (wp = w + 2 pad), the input of
 * output (oy, ox) at kernel tap (ky, kx) sits at plane position oy * wp + ox + ky * wp + kx. So
 * for each tap, the inputs of all outputs form one matrix (cin, rows = h * wp) at offset
 * ky * wp + kx, rows one plane apart: the convolution is k*k sgemms of K = cin that add into an
 * output of rows columns per channel, and each of its rows keeps its first w columns. The
 * other columns read past the row's end into padding and are dropped. OpenBLAS reads the plane
 * in place, so nothing the size of an im2col matrix is written.
 *
 * The input gradient is the same over dout's padded plane with the kernel flipped and its
 * channel axes swapped (conv_dx_is_conv). The weight gradient of tap (ky, kx) is one sgemm of
 * dout, read in its plane as (cout, rows) whose extra columns are padding zeros, by that tap's
 * shifted input. */

/* dst (=) or += (acc) src, c channels of h rows of w floats: rows dpitch and spitch floats
 * apart, channels dplane and splane. */
static void copy_pitched(float *dst, int dpitch, size_t dplane, const float *src, int spitch, size_t splane, int c,
                         int h, int w, int acc) {
    for (int ch = 0; ch < c; ch++)
        for (int y = 0; y < h; y++) {
            float *restrict d = dst + ch * dplane + (size_t)y * dpitch;
            const float *restrict r = src + ch * splane + (size_t)y * spitch;
            if (acc)
                for (int e = 0; e < w; e++) d[e] += r[e];
            else
                for (int e = 0; e < w; e++) d[e] = r[e];
        }
}

/* Copies each (h, w) channel image of src into the interior of its plane in dst; the padding
 * keeps what it holds (zeros). */
static void pad_planes(float *dst, const float *src, int c, const conv_shape_t *s, const shift_geom_t *g) {
    copy_pitched(dst + (size_t)s->pad * g->wp + s->pad, g->wp, g->plane, src, s->w, (size_t)s->h * s->w, c, s->h,
                 s->w, 0);
}

/* out (c, h, w) (+)= the first w columns of each row of o (c, rows). */
static void crop_rows(float *out, const float *o, int c, const conv_shape_t *s, const shift_geom_t *g, int acc) {
    copy_pitched(out, s->w, (size_t)s->h * s->w, o, g->wp, (size_t)g->rows, c, s->h, s->w, acc);
}

/* o (m, rows) = sum over the taps t of a_t (m, kc) times the plane p (kc channels) shifted by
 * tap t; a holds the k*k matrices a_t one after the other. */
static void shifted_sgemms(float *o, const float *a, const float *p, int m, int kc, const conv_shape_t *s,
                           const shift_geom_t *g) {
    const int k2 = s->k * s->k;
    for (int t = 0; t < k2; t++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, g->rows, kc, 1.0f, a + (size_t)t * m * kc, kc,
                    p + (size_t)(t / s->k) * g->wp + t % s->k, (int)g->plane, t == 0 ? 0.0f : 1.0f, o, g->rows);
}

/* The part's scratch: the input plane xp, dout's plane dp (dout's first position on a line), the
 * uncropped output o. */
static void shift_areas(const conv_job_t *j, int part, const shift_geom_t *g, float **xp, float **dp, float **o) {
    *xp = part_area(j, part);
    *dp = align_at(*xp + shift_area(j->s->cin, g), (size_t)j->s->pad * g->wp + j->s->pad);
    *o = *xp + shift_area(j->s->cin, g) + PLANE_ALIGN + shift_area(j->s->cout, g);
}

/* Image n of the input into the plane xp; codes are decoded straight into it, row by row. With
 * transposed, into the planes transposed, (positions, cin). */
HOT static void pad_input(const conv_job_t *j, int n, float *xp, const shift_geom_t *g, int transposed) {
    const conv_shape_t *s = j->s;
    const size_t xsz = (size_t)s->cin * s->h * s->w;
    if (transposed) { /* row by row, so that a row's stores over every channel stay in L1 */
        for (int y = 0; y < s->h; y++)
            for (int ch = 0; ch < s->cin; ch++) {
                float *restrict d = xp + ((size_t)(y + s->pad) * g->wp + s->pad) * s->cin + ch;
                const size_t i = n * xsz + ((size_t)ch * s->h + y) * s->w;
                if (j->xq == NULL)
                    for (int e = 0; e < s->w; e++) d[(size_t)e * s->cin] = j->x[i + e];
                else
                    for (int e = 0; e < s->w; e++) d[(size_t)e * s->cin] = j->lut[j->xq[i + e]];
            }
        return;
    }
    if (j->xq == NULL) {
        pad_planes(xp, j->x + n * xsz, s->cin, s, g);
        return;
    }
    for (int ch = 0; ch < s->cin; ch++)
        for (int y = 0; y < s->h; y++) {
            float *restrict d = xp + ch * g->plane + (size_t)(y + s->pad) * g->wp + s->pad;
            const uint8_t *restrict q = j->xq + n * xsz + ((size_t)ch * s->h + y) * s->w;
            for (int e = 0; e < s->w; e++) d[e] = j->lut[q[e]];
        }
}

static void conv_forward_shifted(void *arg, int part) {
    const conv_job_t *j = arg;
    const conv_shape_t *s = j->s;
    const shift_geom_t g = shift_geom(s);
    int lo, hi;
    layer_part_range(s->n, part, &lo, &hi);
    if (lo == hi) return;
    float *xp, *dp, *o;
    shift_areas(j, part, &g, &xp, &dp, &o);
    const dconv_geom_t dg = shift_dgeom(&g);
    memset(xp, 0, sizeof(float) * shift_area(s->cin, &g));
    for (int n = lo; n < hi; n++) {
        pad_input(j, n, xp, &g, 0);
        if (j->direct) dconv_forward(j->direct, o, j->wt, xp, s->cout, s->cin, &dg, 0);
        else shifted_sgemms(o, j->wt, xp, s->cout, s->cin, s, &g);
        crop_rows(j->out + (size_t)n * s->cout * s->h * s->w, o, s->cout, s, &g, 0);
    }
}

/* Each part's dw goes to its own (k*k, cout, cin) area, which conv_backward_run adds into dw. */
static void conv_backward_shifted(void *arg, int part) {
    const conv_job_t *j = arg;
    const conv_shape_t *s = j->s;
    const shift_geom_t g = shift_geom(s);
    const int k2 = s->k * s->k;
    const size_t xsz = (size_t)s->cin * s->h * s->w, osz = (size_t)s->cout * s->h * s->w;
    int lo, hi;
    layer_part_range(s->n, part, &lo, &hi);
    if (lo == hi) return;
    float *xp, *dp, *o;
    shift_areas(j, part, &g, &xp, &dp, &o);
    float *dw = part_area(j, part) + j->sc.col;
    memset(xp, 0, sizeof(float) * (size_t)(o - xp)); /* and dp */
    memset(dw, 0, sizeof(float) * j->sc.dw);
    const float *dy = dp + (size_t)s->pad * g.wp + s->pad; /* dout as (cout, rows), zeros between rows */
    const int wide = j->direct && dw_transposed(s, g.rows);
    const dconv_geom_t dg = shift_dgeom(&g);
    for (int n = lo; n < hi; n++) {
        pad_input(j, n, xp, &g, wide); /* before dx is written: dx may be x */
        pad_planes(dp, j->dout + n * osz, s->cout, s, &g);
        if (wide) dconv_weight_grad_t(j->direct, dw, dy, g.plane, xp, s->cout, s->cin, &dg);
        else if (j->direct) dconv_weight_grad(j->direct, dw, dy, g.plane, xp, s->cout, s->cin, &dg);
        else
            for (int t = 0; t < k2; t++)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, s->cout, s->cin, g.rows, 1.0f, dy, (int)g.plane,
                            xp + (size_t)(t / s->k) * g.wp + t % s->k, (int)g.plane, 1.0f,
                            dw + (size_t)t * s->cout * s->cin, s->cin);
        if (j->dx == NULL) continue;
        if (j->direct) dconv_forward(j->direct, o, j->wt, dp, s->cin, s->cout, &dg, 0);
        else shifted_sgemms(o, j->wt, dp, s->cin, s->cout, s, &g);
        crop_rows(j->dx + n * xsz, o, s->cin, s, &g, j->acc);
    }
}

/* w (cout, cin, k, k) by tap into wt: forward (k*k, cout, cin); flipped, for the input
 * gradient, (k*k, cin, cout) with tap t taking w's tap k*k - 1 - t. */
static void shift_kernel(float *wt, const float *w, const conv_shape_t *s, int flipped) {
    const int k2 = s->k * s->k;
    for (int co = 0; co < s->cout; co++)
        for (int ci = 0; ci < s->cin; ci++)
            for (int t = 0; t < k2; t++) {
                const float v = w[((size_t)co * s->cin + ci) * k2 + (flipped ? k2 - 1 - t : t)];
                if (flipped) wt[((size_t)t * s->cin + ci) * s->cout + co] = v;
                else wt[((size_t)t * s->cout + co) * s->cin + ci] = v;
            }
}

/* The phased forward geometry: tap (ky, kx) reads phase plane (ky mod 2, kx mod 2) from row ky / 2,
 * column kx / 2; a channel's four phase planes are one after the other. */
static dconv_geom_t phase_forward_geom(const conv_shape_t *s, const phase_geom_t *pg) {
    dconv_geom_t d = {.taps = s->k * s->k, .rows = pg->rows, .stride = 4 * pg->pplane};
    for (int t = 0; t < d.taps; t++) {
        const int ky = t / s->k, kx = t % s->k;
        d.off[t] = (size_t)((ky % 2) * 2 + kx % 2) * pg->pplane + (size_t)(ky / 2) * pg->wd + kx / 2;
    }
    return d;
}

/* The input gradient's phase ph = 2 ry + rx, input pixels (2 i + ry - pad, 2 jj + rx - pad): the
 * taps with ky mod 2 = ry and kx mod 2 = rx (listed in tap), each reading dout's plane at row
 * i - ky / 2 + e, column jj - kx / 2 + e. */
static dconv_geom_t phase_dx_geom(const conv_shape_t *s, const phase_geom_t *pg, int ph, int *tap) {
    dconv_geom_t d = {.taps = 0, .rows = pg->prows, .stride = pg->dplane};
    for (int t = 0; t < s->k * s->k; t++) {
        const int ky = t / s->k, kx = t % s->k;
        if ((ky % 2) * 2 + kx % 2 != ph) continue;
        tap[d.taps] = t;
        d.off[d.taps++] = (size_t)(pg->e - ky / 2) * pg->wd + (size_t)(pg->e - kx / 2);
    }
    return d;
}

/* The part's scratch: the phase planes xq, dout's plane dp (dout's first position on a line), the
 * output or a phase of dx o. */
static void phase_areas(const conv_job_t *j, int part, const phase_geom_t *pg, float **xq, float **dp, float **o) {
    *xq = part_area(j, part);
    *dp = align_at(*xq + phase_area(j->s, pg), (size_t)pg->e * pg->wd + pg->e);
    *o = *xq + phase_area(j->s, pg) + PLANE_ALIGN + (size_t)j->s->cout * pg->dplane + j->s->k;
}

/* Image n of the input into its phase planes xq (cin, 4, hq, wd), zeros where a phase position
 * falls outside the image; codes are decoded on the way. With transposed, into the planes
 * transposed, (4, hq, wd, cin): zeros must be there already. */
HOT static void pad_phases(const conv_job_t *j, int n, float *xq, const phase_geom_t *pg, int transposed) {
    const conv_shape_t *s = j->s;
    const size_t xsz = (size_t)s->cin * s->h * s->w;
    if (transposed) { /* row by row, as pad_input */
        for (int y = 0; y < s->h; y++)
            for (int ch = 0; ch < s->cin; ch++) {
                const int i = (y + s->pad) / 2, ry = (y + s->pad) % 2;
                const size_t r = n * xsz + ((size_t)ch * s->h + y) * s->w;
                for (int c = 0; c < s->w; c++) {
                    const int jj = (c + s->pad) / 2, ph = 2 * ry + (c + s->pad) % 2;
                    if (i >= pg->hq || jj >= pg->wd) continue; /* a pixel no output reads */
                    xq[((ph * pg->pplane) + (size_t)i * pg->wd + jj) * s->cin + ch] =
                        j->xq != NULL ? j->lut[j->xq[r + c]] : j->x[r + c];
                }
            }
        return;
    }
    for (int ch = 0; ch < s->cin; ch++)
        for (int ph = 0; ph < 4; ph++)
            for (int i = 0; i < pg->hq; i++) {
                float *restrict d = xq + ((size_t)ch * 4 + ph) * pg->pplane + (size_t)i * pg->wd;
                const int y = 2 * i + ph / 2 - s->pad, c0 = ph % 2 - s->pad;
                if (y < 0 || y >= s->h) {
                    memset(d, 0, sizeof(float) * (size_t)pg->wd);
                    continue;
                }
                /* columns jj in [a, b) read the image's column c0 + 2 jj; the others are zeros */
                const int a = c0 < 0 ? (1 - c0) / 2 : 0;
                const int b = (s->w - c0 + 1) / 2 < pg->wd ? (s->w - c0 + 1) / 2 : pg->wd;
                const size_t r = n * xsz + ((size_t)ch * s->h + y) * s->w;
                for (int jj = 0; jj < a; jj++) d[jj] = 0.0f;
                if (j->xq != NULL) {
                    const uint8_t *restrict q = j->xq + r;
                    for (int jj = a; jj < b; jj++) d[jj] = j->lut[q[c0 + 2 * jj]];
                } else {
                    const float *restrict x = j->x + r;
                    for (int jj = a; jj < b; jj++) d[jj] = x[c0 + 2 * jj];
                }
                for (int jj = b > a ? b : a; jj < pg->wd; jj++) d[jj] = 0.0f;
            }
}

/* dx (cin, h, w) += phase ph of the input gradient, o (cin, prows). Each pixel of dx is in one
 * phase, so it gains one sum. */
static void scatter_phase(float *dx, const float *o, int ph, const conv_shape_t *s, const phase_geom_t *pg) {
    for (int ch = 0; ch < s->cin; ch++)
        for (int i = 0; i < pg->hq; i++) {
            const int y = 2 * i + ph / 2 - s->pad, c0 = ph % 2 - s->pad;
            if (y < 0 || y >= s->h) continue;
            float *restrict d = dx + ((size_t)ch * s->h + y) * s->w;
            const float *restrict r = o + (size_t)ch * pg->prows + (size_t)i * pg->wd;
            for (int jj = 0; jj < pg->wd; jj++) {
                const int c = c0 + 2 * jj;
                if (c >= 0 && c < s->w) d[c] += r[jj];
            }
        }
}

static void conv_forward_phased(void *arg, int part) {
    const conv_job_t *j = arg;
    const conv_shape_t *s = j->s;
    const phase_geom_t pg = phase_geom(s);
    const dconv_geom_t dg = phase_forward_geom(s, &pg);
    int lo, hi;
    layer_part_range(s->n, part, &lo, &hi);
    if (lo == hi) return;
    float *xq, *dp, *o;
    phase_areas(j, part, &pg, &xq, &dp, &o);
    float *slack = xq + 4 * (size_t)s->cin * pg.pplane; /* the last taps of dropped outputs read it */
    memset(slack, 0, sizeof(float) * (size_t)(dp - slack));
    for (int n = lo; n < hi; n++) {
        pad_phases(j, n, xq, &pg, 0);
        dconv_forward(j->direct, o, j->wt, xq, s->cout, s->cin, &dg, 0);
        copy_pitched(j->out + (size_t)n * s->cout * s->ho * s->wo, s->wo, (size_t)s->ho * s->wo, o, pg.wd,
                     (size_t)pg.rows, s->cout, s->ho, s->wo, 0);
    }
}

/* Each part's dw goes to its own (k*k, cout, cin) area, as a shifted convolution's does. */
static void conv_backward_phased(void *arg, int part) {
    const conv_job_t *j = arg;
    const conv_shape_t *s = j->s;
    const phase_geom_t pg = phase_geom(s);
    const dconv_geom_t dg = phase_forward_geom(s, &pg);
    const size_t xsz = (size_t)s->cin * s->h * s->w, osz = (size_t)s->cout * s->ho * s->wo;
    int lo, hi;
    layer_part_range(s->n, part, &lo, &hi);
    if (lo == hi) return;
    float *xq, *dp, *o;
    phase_areas(j, part, &pg, &xq, &dp, &o);
    float *dw = part_area(j, part) + j->sc.col;
    memset(xq, 0, sizeof(float) * (size_t)(o - xq)); /* and dp with its padding */
    memset(dw, 0, sizeof(float) * j->sc.dw);
    dconv_geom_t dxg[4];
    const float *wph[4];
    int tap[DCONV_MAX_TAPS];
    for (int ph = 0; ph < 4; ph++) {
        dxg[ph] = phase_dx_geom(s, &pg, ph, tap);
        wph[ph] = ph == 0 ? j->wt : wph[ph - 1] + dconv_packed_size(s->cin, s->cout, dxg[ph - 1].taps);
    }
    const float *dy = dp + (size_t)pg.e * pg.wd + pg.e; /* dout as (cout, rows), zeros between rows */
    const int wide = dw_transposed(s, pg.rows);
    for (int n = lo; n < hi; n++) {
        pad_phases(j, n, xq, &pg, wide); /* before dx is written: dx may be x */
        copy_pitched(dp + (size_t)pg.e * pg.wd + pg.e, pg.wd, pg.dplane, j->dout + n * osz, s->wo,
                     (size_t)s->ho * s->wo, s->cout, s->ho, s->wo, 0);
        if (wide) dconv_weight_grad_t(j->direct, dw, dy, pg.dplane, xq, s->cout, s->cin, &dg);
        else dconv_weight_grad(j->direct, dw, dy, pg.dplane, xq, s->cout, s->cin, &dg);
        if (j->dx == NULL) continue;
        float *dx = j->dx + n * xsz;
        if (!j->acc) memset(dx, 0, sizeof(float) * xsz);
        for (int ph = 0; ph < 4; ph++) {
            dconv_forward(j->direct, o, wph[ph], dp, s->cin, s->cout, &dxg[ph], 0);
            scatter_phase(dx, o, ph, s, &pg);
        }
    }
}

/* w packed for the direct kernels with every tap: forward, or (flipped) the input gradient's
 * kernel of a stride-1 convolution, channel axes swapped and taps reversed. */
static void pack_taps(float *dst, const float *w, const conv_shape_t *s, int flipped) {
    const int k2 = s->k * s->k;
    int tap[DCONV_MAX_TAPS];
    for (int t = 0; t < k2; t++) tap[t] = flipped ? k2 - 1 - t : t;
    dconv_pack(dst, w, s->cout, s->cin, k2, flipped, tap, k2);
}

/* The input gradient's kernel of a phased convolution: for each phase, its taps packed
 * transposed, one after the other. */
static void pack_phases(float *dst, const float *w, const conv_shape_t *s) {
    const phase_geom_t pg = phase_geom(s);
    for (int ph = 0; ph < 4; ph++) {
        int tap[DCONV_MAX_TAPS];
        const dconv_geom_t d = phase_dx_geom(s, &pg, ph, tap);
        dconv_pack(dst, w, s->cout, s->cin, s->k * s->k, 1, tap, d.taps);
        dst += dconv_packed_size(s->cin, s->cout, d.taps);
    }
}

/* A 1x1 convolution with stride > 1 and no padding: its im2col only picks pixels. */
static int conv_is_subsample(const conv_shape_t *s) {
    return s->k == 1 && s->stride > 1 && s->pad == 0;
}

/* The im2col of such a convolution, col (cin, ho * wo), straight from image n of the input:
 * codes are decoded through j->lut where they are picked, so that the pixels no output reads are
 * neither decoded nor read as floats. */
static void subsample(float *col, const conv_job_t *j, int n) {
    const conv_shape_t *s = j->s;
    const size_t xsz = (size_t)s->cin * s->h * s->w;
    for (int c = 0; c < s->cin; c++)
        for (int oy = 0; oy < s->ho; oy++) {
            float *restrict r = col + ((size_t)c * s->ho + oy) * s->wo;
            const size_t i = n * xsz + ((size_t)c * s->h + (size_t)oy * s->stride) * s->w;
            if (j->xq != NULL)
                for (int ox = 0; ox < s->wo; ox++) r[ox] = j->lut[j->xq[i + (size_t)ox * s->stride]];
            else
                for (int ox = 0; ox < s->wo; ox++) r[ox] = j->x[i + (size_t)ox * s->stride];
        }
}

/* Image n's im2col in col (cin*k*k, ho*wo); for a pointwise convolution, the image itself
 * (decoded into buf if it is codes). */
static const float *image_cols(const conv_job_t *j, int n, float *col, float *buf, int zeros) {
    if (conv_is_subsample(j->s)) {
        subsample(col, j, n);
        return col;
    }
    const float *b = image_at(j, n, buf);
    if (conv_is_pointwise(j->s)) return b;
    im2col(col, b, j->s, zeros);
    return col;
}

static void conv_forward_part(void *arg, int part) {
    const conv_job_t *j = arg;
    const conv_shape_t *s = j->s;
    const int kk = s->cin * s->k * s->k, howo = s->ho * s->wo;
    const size_t osz = (size_t)s->cout * howo;
    float *col = part_area(j, part), *buf = col + j->sc.col;
    int lo, hi;
    layer_part_range(s->n, part, &lo, &hi);
    for (int n = lo; n < hi; n++) {
        const float *b = image_cols(j, n, col, buf, n == lo);
        if (j->direct) {
            dconv_geom_t g;
            dconv_geom_same(&g, 1, howo, howo, (size_t)howo);
            dconv_forward(j->direct, j->out + n * osz, j->wt, b, s->cout, s->cin, &g, 0);
            continue;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s->cout, howo, kk, 1.0f, j->w, kk, b, howo,
                    0.0f, j->out + n * osz, howo);
    }
}

static void conv_forward_run(pool_t *pool, conv_job_t *j) {
    const conv_shape_t *s = j->s;
    j->direct = direct_level(s);
    if (j->direct) pack_taps(j->scratch, j->w, s, 0);
    else if (conv_is_shifted(s)) shift_kernel(j->scratch, j->w, s, 0);
    if (j->direct || conv_is_shifted(s)) j->wt = j->scratch;
    /* a direct 1x1 convolution reads the image (stride 1) or its im2col (stride 2) */
    pool_run(pool, LAYER_PARTS,
             j->direct && conv_is_phased(s) ? conv_forward_phased
             : on_planes(s, j->direct)      ? conv_forward_shifted
                                            : conv_forward_part,
             j);
}

void conv2d_forward(pool_t *pool, float *out, const float *x, const float *w, const conv_shape_t *s, float *col) {
    conv_job_t j = {.s = s, .sc = scratch_of(s, 0), .scratch = col, .x = x, .w = w, .out = out};
    conv_forward_run(pool, &j);
}

void conv2d_forward_codes(pool_t *pool, float *out, const uint8_t *x, int k, const float *w, const conv_shape_t *s,
                          float *col) {
    conv_job_t j = {.s = s, .sc = scratch_of(s, 1), .scratch = col, .xq = x, .bits = k, .w = w, .out = out};
    quant_act_table(j.lut, k);
    conv_forward_run(pool, &j);
}

/* Part 0 adds its images' dw into dw itself, the others into their own partial dw, which the
 * caller then adds in part order: the same sums on any number of threads. */
static void conv_backward_part(void *arg, int part) {
    const conv_job_t *j = arg;
    const conv_shape_t *s = j->s;
    const int kk = s->cin * s->k * s->k, howo = s->ho * s->wo;
    const size_t xsz = (size_t)s->cin * s->h * s->w, osz = (size_t)s->cout * howo;
    const int pointwise = conv_is_pointwise(s), dx_conv = !j->direct && j->wt != NULL;
    dconv_geom_t g; /* direct: the 1x1 convolution */
    dconv_geom_same(&g, 1, howo, howo, (size_t)howo);
    float *col = part_area(j, part), *buf = col + j->sc.col, *dw = j->dw;
    int lo, hi;
    layer_part_range(s->n, part, &lo, &hi);
    if (lo == hi) return;
    if (part > 0) {
        dw = buf + j->sc.img;
        memset(dw, 0, sizeof(float) * j->sc.dw);
    }
    conv_shape_t t;
    if (dx_conv) conv_dx_shape(&t, s);
    for (int n = lo; n < hi; n++) {
        const float *dy = j->dout + n * osz;
        /* with dx, col holds other values between images */
        const float *b = image_cols(j, n, col, buf, n == lo || j->dx != NULL);
        if (j->direct) dconv_weight_grad(j->direct, dw, dy, (size_t)howo, b, s->cout, s->cin, &g);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, s->cout, kk, howo, 1.0f, dy, howo, b, howo,
                        1.0f, dw, kk);
        if (j->dx == NULL) continue;
        float *dx = j->dx + n * xsz;
        if (j->direct && pointwise && dx == dy) {
            dconv_forward(j->direct, col, j->wt, dy, s->cin, s->cout, &g, 0);
            memcpy(dx, col, sizeof(float) * xsz);
        } else if (j->direct && pointwise) {
            dconv_forward(j->direct, dx, j->wt, dy, s->cin, s->cout, &g, j->acc);
        } else if (j->direct) {
            dconv_forward(j->direct, col, j->wt, dy, s->cin, s->cout, &g, 0);
            if (!j->acc) memset(dx, 0, sizeof(float) * xsz);
            col2im_add(dx, col, s);
        } else if (pointwise && dx == dy) {
            /* in place (acc = 0): this image's dout is read for the last time here */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, kk, howo, s->cout, 1.0f, j->w, kk, dy, howo,
                        0.0f, col, howo);
            memcpy(dx, col, sizeof(float) * xsz);
        } else if (pointwise) {
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, kk, howo, s->cout, 1.0f, j->w, kk, dy, howo,
                        j->acc ? 1.0f : 0.0f, dx, howo);
        } else if (dx_conv) {
            const int hw = s->h * s->w, kt = s->cout * s->k * s->k;
            im2col(col, dy, &t, 1);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s->cin, hw, kt, 1.0f, j->wt, kt, col, hw,
                        j->acc ? 1.0f : 0.0f, dx, hw);
        } else {
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, kk, howo, s->cout, 1.0f, j->w, kk, dy, howo,
                        0.0f, col, howo);
            /* one image's dx is still in cache when col2im adds into it */
            if (!j->acc) memset(dx, 0, sizeof(float) * xsz);
            col2im_add(dx, col, s);
        }
    }
}

static void conv_backward_run(pool_t *pool, conv_job_t *j) {
    const conv_shape_t *s = j->s;
    const int k2 = s->k * s->k;
    j->direct = direct_level(s);
    const int phased = j->direct && conv_is_phased(s);
    if (j->dx != NULL) {
        /* the input gradient's kernel: the direct kernels' transposed, phase by phase at stride 2;
         * the shifted sgemms' by tap */
        if (phased) pack_phases(j->scratch, j->w, s);
        else if (j->direct) pack_taps(j->scratch, j->w, s, 1);
        else if (conv_is_shifted(s)) shift_kernel(j->scratch, j->w, s, 1);
        if (j->direct || conv_is_shifted(s)) j->wt = j->scratch;
    }
    if (phased || on_planes(s, j->direct)) {
        pool_run(pool, LAYER_PARTS, phased ? conv_backward_phased : conv_backward_shifted, j);
        /* every part's (k*k, cout, cin) sums, added in part order */
        for (int part = 0; part < LAYER_PARTS; part++) {
            int lo, hi;
            layer_part_range(s->n, part, &lo, &hi);
            if (lo == hi) continue;
            const float *pdw = part_area(j, part) + j->sc.col;
            for (int co = 0; co < s->cout; co++)
                for (int ci = 0; ci < s->cin; ci++)
                    for (int t = 0; t < k2; t++)
                        j->dw[((size_t)co * s->cin + ci) * k2 + t] += pdw[((size_t)t * s->cout + co) * s->cin + ci];
        }
        return;
    }
    if (j->dx != NULL && !j->direct && !conv_is_pointwise(s) && conv_dx_is_conv(s)) {
        /* (cin, cout, k, k): w with channel axes swapped and the kernel flipped */
        float *wt = j->scratch;
        for (int co = 0; co < s->cout; co++)
            for (int ci = 0; ci < s->cin; ci++)
                for (int i = 0; i < k2; i++)
                    wt[((size_t)ci * s->cout + co) * k2 + i] = j->w[((size_t)co * s->cin + ci) * k2 + (k2 - 1 - i)];
        j->wt = wt;
    }
    pool_run(pool, LAYER_PARTS, conv_backward_part, j);
    for (int part = 1; part < LAYER_PARTS; part++) {
        int lo, hi;
        layer_part_range(s->n, part, &lo, &hi);
        if (lo == hi) continue;
        const float *pdw = part_area(j, part) + j->sc.col + j->sc.img;
        for (size_t i = 0; i < j->sc.dw; i++) j->dw[i] += pdw[i];
    }
}

void conv2d_backward(pool_t *pool, float *dx, float *dw, const float *dout, const float *x, const float *w,
                     const conv_shape_t *s, float *col, int acc) {
    conv_job_t j = {.s = s, .sc = scratch_of(s, 0), .scratch = col, .x = x, .w = w, .dout = dout, .dx = dx,
                    .dw = dw, .acc = acc};
    conv_backward_run(pool, &j);
}

void conv2d_backward_codes(pool_t *pool, float *dx, float *dw, const float *dout, const uint8_t *x, int k,
                           const float *w, const conv_shape_t *s, float *col, int acc) {
    conv_job_t j = {.s = s, .sc = scratch_of(s, 1), .scratch = col, .xq = x, .bits = k, .w = w, .dout = dout,
                    .dx = dx, .dw = dw, .acc = acc};
    quant_act_table(j.lut, k);
    conv_backward_run(pool, &j);
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

/* Row sums run in ROW_LANES float accumulators, added up in a fixed order at the end: a float
 * sum in one accumulator is a chain of dependent adds that the compiler may not reorder. */
#define ROW_LANES 8

static float lanes_total(const float *r) {
    float s = 0.0f;
    for (int l = 0; l < ROW_LANES; l++) s += r[l];
    return s;
}

/* The lanes as one vector (GCC's vector extension): the same lane-by-lane arithmetic, which GCC
 * compiles to plain vector adds, where the arrays' loops became permutes and spills. */
typedef float lanes_t __attribute__((vector_size(ROW_LANES * sizeof(float))));

/* The ROW_LANES floats at p, unaligned, as lanes_t (a macro: a function returning a 32-byte
 * vector would be another ABI in the baseline build). */
typedef float lanes_u_t __attribute__((vector_size(ROW_LANES * sizeof(float)), aligned(4), may_alias));
#define LANES_AT(p) (*(const lanes_u_t *)(const void *)(p))

/* The sum of row p (len floats), lane by lane, then lanes_total; the last len mod ROW_LANES
 * floats go to lane 0. row_sq_dev sums the squares of p - mu in the same order. */
static inline float row_sum(const float *p, int len) {
    lanes_t r = {0};
    int e = 0;
    for (; e + ROW_LANES <= len; e += ROW_LANES) r += LANES_AT(p + e);
    float t[ROW_LANES];
    memcpy(t, &r, sizeof t);
    for (; e < len; e++) t[0] += p[e];
    return lanes_total(t);
}

static inline float row_sq_dev(const float *p, int len, float mu) {
    lanes_t r = {0};
    int e = 0;
    for (; e + ROW_LANES <= len; e += ROW_LANES) {
        const lanes_t d = LANES_AT(p + e) - mu;
        r += d * d;
    }
    float t[ROW_LANES];
    memcpy(t, &r, sizeof t);
    for (; e < len; e++) t[0] += (p[e] - mu) * (p[e] - mu);
    return lanes_total(t);
}

/* One batch norm kernel's operands; the parts split the channels, each channel's work (and its
 * statistics) stays in one part. */
typedef struct bn_job bn_job_t;
struct bn_job {
    void (*channels)(const bn_job_t *j, int c0, int c1); /* the kernel on channels [c0, c1) */
    float *y;             /* (n, c, hw) */
    uint8_t *yq;          /* (n, c, hw) k-bit codes, instead of y */
    const float *x;       /* (n, c, hw) */
    const float *r;       /* (n, c, hw) residual, or NULL */
    const uint8_t *rq;    /* (n, c, hw) residual as k-bit codes, or NULL */
    const float *gamma, *beta;           /* (c) */
    float *mean_out, *rstd_out;          /* (c) the batch statistics a training forward pass saves */
    const float *mean, *rstd;            /* (c) the saved ones, for recompute and backward */
    float *rmean, *rvar;                 /* (c) running statistics */
    const float *dy;      /* (n, c, hw) */
    float *dx;            /* (n, c, hw) or NULL */
    float *dgamma, *dbeta;               /* (c) */
    int n, c, hw, training, k, acc;
    float momentum;
};

static void bn_part(void *arg, int part) {
    const bn_job_t *j = arg;
    int lo, hi;
    layer_part_range(j->c, part, &lo, &hi);
    if (lo < hi) j->channels(j, lo, hi);
}

/* Channel ch's normalisation y = x a + b: from the batch statistics in training (which it saves in
 * mean, rstd and folds into the running ones), from the running ones in evaluation. */
HOT static void bn_coefs(const bn_job_t *j, int ch, float *a, float *b) {
    const int n = j->n, c = j->c, hw = j->hw;
    const double m = (double)n * hw;
    float mu, rs;
    if (j->training) {
        /* Float sums over one row in ROW_LANES accumulators (vectorised), double across rows. */
        double sum = 0.0, sq = 0.0;
        for (int i = 0; i < n; i++) sum += row_sum(j->x + ((size_t)i * c + ch) * hw, hw);
        double dmu = sum / m;
        const float fmu = (float)dmu;
        for (int i = 0; i < n; i++) sq += row_sq_dev(j->x + ((size_t)i * c + ch) * hw, hw, fmu);
        double var = sq / m;
        mu = (float)dmu;
        rs = (float)(1.0 / sqrt(var + 1e-5));
        j->mean_out[ch] = mu;
        j->rstd_out[ch] = rs;
        double unbiased = m > 1 ? sq / (m - 1) : var;
        j->rmean[ch] = (float)((1.0 - j->momentum) * j->rmean[ch] + j->momentum * dmu);
        j->rvar[ch] = (float)((1.0 - j->momentum) * j->rvar[ch] + j->momentum * unbiased);
    } else {
        mu = j->rmean[ch];
        rs = (float)(1.0 / sqrt((double)j->rvar[ch] + 1e-5));
    }
    *a = j->gamma[ch] * rs;
    *b = j->beta[ch] - mu * *a;
}

HOT static void bn_forward_channels(const bn_job_t *j, int c0, int c1) {
    for (int ch = c0; ch < c1; ch++) {
        float a, b;
        bn_coefs(j, ch, &a, &b);
        for (int i = 0; i < j->n; i++) {
            const float *p = j->x + ((size_t)i * j->c + ch) * j->hw;
            float *q = j->y + ((size_t)i * j->c + ch) * j->hw;
            for (int e = 0; e < j->hw; e++) q[e] = p[e] * a + b;
        }
    }
}

void batchnorm_forward(pool_t *pool, float *y, const float *x, const float *gamma, const float *beta,
                       float *mean, float *rstd, float *rmean, float *rvar,
                       int n, int c, int hw, int training, float momentum) {
    bn_job_t j = {.channels = bn_forward_channels, .y = y, .x = x, .gamma = gamma, .beta = beta, .mean_out = mean,
                  .rstd_out = rstd, .rmean = rmean, .rvar = rvar, .n = n, .c = c, .hw = hw, .training = training,
                  .momentum = momentum};
    pool_run(pool, LAYER_PARTS, bn_part, &j);
}

/* The fused kernels work on one row (image, channel) at a time, in chunks of BN_CHUNK floats
 * that stay in L1. */
#define BN_CHUNK 256

/* q = p a + b + the residual, for row o: r's own floats or rq's codes decoded a chunk at a time. */
HOT static void bn_add_row(float *q, const float *p, float a, float b, const float *r, const uint8_t *rq, int k,
                           size_t o, int hw) {
    if (rq == NULL) {
        const float *u = r + o;
        for (int e = 0; e < hw; e++) q[e] = p[e] * a + b + u[e];
        return;
    }
    float t[BN_CHUNK];
    for (int e0 = 0; e0 < hw; e0 += BN_CHUNK) {
        const int len = hw - e0 < BN_CHUNK ? hw - e0 : BN_CHUNK;
        quant_act_decode(t, rq + o + e0, (size_t)len, k);
        for (int e = 0; e < len; e++) q[e0 + e] = p[e0 + e] * a + b + t[e];
    }
}

HOT static void bn_add_channels(const bn_job_t *j, int c0, int c1) {
    for (int ch = c0; ch < c1; ch++) {
        float a, b;
        bn_coefs(j, ch, &a, &b);
        for (int i = 0; i < j->n; i++) {
            const size_t o = ((size_t)i * j->c + ch) * j->hw;
            bn_add_row(j->y + o, j->x + o, a, b, j->r, j->rq, j->k, o, j->hw);
        }
    }
}

void batchnorm_add_forward(pool_t *pool, float *y, const float *x, const float *r, const float *gamma,
                           const float *beta, float *mean, float *rstd, float *rmean, float *rvar,
                           int n, int c, int hw, int training, float momentum) {
    bn_job_t j = {.channels = bn_add_channels, .y = y, .x = x, .r = r, .gamma = gamma, .beta = beta, .mean_out = mean,
                  .rstd_out = rstd, .rmean = rmean, .rvar = rvar, .n = n, .c = c, .hw = hw, .training = training,
                  .momentum = momentum};
    pool_run(pool, LAYER_PARTS, bn_part, &j);
}

void batchnorm_add_forward_codes(pool_t *pool, float *y, const float *x, const uint8_t *r, int k,
                                 const float *gamma, const float *beta, float *mean, float *rstd, float *rmean,
                                 float *rvar, int n, int c, int hw, int training, float momentum) {
    bn_job_t j = {.channels = bn_add_channels, .y = y, .x = x, .rq = r, .k = k, .gamma = gamma, .beta = beta,
                  .mean_out = mean, .rstd_out = rstd, .rmean = rmean, .rvar = rvar, .n = n, .c = c, .hw = hw,
                  .training = training, .momentum = momentum};
    pool_run(pool, LAYER_PARTS, bn_part, &j);
}

HOT static void bn_recompute_channels(const bn_job_t *j, int c0, int c1) {
    for (int ch = c0; ch < c1; ch++) {
        const float a = j->gamma[ch] * j->rstd[ch], b = j->beta[ch] - j->mean[ch] * a; /* as bn_coefs */
        for (int i = 0; i < j->n; i++) {
            const size_t o = ((size_t)i * j->c + ch) * j->hw;
            const float *p = j->x + o;
            float *q = j->y + o;
            if (j->rq != NULL || j->r != NULL) {
                bn_add_row(q, p, a, b, j->r, j->rq, j->k, o, j->hw);
            } else {
                for (int e = 0; e < j->hw; e++) q[e] = p[e] * a + b;
            }
        }
    }
}

void batchnorm_recompute(pool_t *pool, float *y, const float *x, const float *r, const uint8_t *rq, int k,
                         const float *gamma, const float *beta, const float *mean, const float *rstd, int n, int c,
                         int hw) {
    bn_job_t j = {.channels = bn_recompute_channels, .y = y, .x = x, .r = r, .rq = rq, .k = k, .gamma = gamma,
                  .beta = beta, .mean = mean, .rstd = rstd, .n = n, .c = c, .hw = hw};
    pool_run(pool, LAYER_PARTS, bn_part, &j);
}

/* The batch norm backward's two sums over one row: sdy[l] += g, sdyx[l] += g (p - mu) rs, in
 * ROW_LANES lanes. */
static inline void grad_sums(float *sdy, float *sdyx, const float *g, const float *p, int len, float mu, float rs) {
    lanes_t a = LANES_AT(sdy), b = LANES_AT(sdyx);
    int e = 0;
    for (; e + ROW_LANES <= len; e += ROW_LANES) {
        const lanes_t gv = LANES_AT(g + e);
        a += gv;
        b += gv * ((LANES_AT(p + e) - mu) * rs);
    }
    memcpy(sdy, &a, sizeof a);
    memcpy(sdyx, &b, sizeof b);
    for (; e < len; e++) {
        sdy[0] += g[e];
        sdyx[0] += g[e] * ((p[e] - mu) * rs);
    }
}

HOT static void bn_backward_channels(const bn_job_t *j, int c0, int c1) {
    const int n = j->n, c = j->c, hw = j->hw;
    const double m = (double)n * hw;
    for (int ch = c0; ch < c1; ch++) {
        const float mu = j->mean[ch], rs = j->rstd[ch];
        double sdy = 0.0, sdyx = 0.0;
        for (int i = 0; i < n; i++) {
            const float *p = j->x + ((size_t)i * c + ch) * hw;
            const float *g = j->dy + ((size_t)i * c + ch) * hw;
            float a[ROW_LANES] = {0}, b[ROW_LANES] = {0};
            grad_sums(a, b, g, p, hw, mu, rs);
            sdy += lanes_total(a);
            sdyx += lanes_total(b);
        }
        j->dgamma[ch] += (float)sdyx;
        j->dbeta[ch] += (float)sdy;
        if (j->dx == NULL) continue;
        const float k = j->gamma[ch] * rs, mdy = (float)(sdy / m), mdyx = (float)(sdyx / m);
        for (int i = 0; i < n; i++) {
            const float *p = j->x + ((size_t)i * c + ch) * hw;
            const float *g = j->dy + ((size_t)i * c + ch) * hw;
            float *d = j->dx + ((size_t)i * c + ch) * hw;
            if (j->acc)
                for (int e = 0; e < hw; e++) d[e] += k * (g[e] - mdy - (p[e] - mu) * rs * mdyx);
            else
                for (int e = 0; e < hw; e++) d[e] = k * (g[e] - mdy - (p[e] - mu) * rs * mdyx);
        }
    }
}

void batchnorm_backward(pool_t *pool, float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                        const float *gamma, const float *mean, const float *rstd, int n, int c, int hw,
                        int acc) {
    bn_job_t j = {.channels = bn_backward_channels, .dx = dx, .dgamma = dgamma, .dbeta = dbeta, .dy = dy, .x = x,
                  .gamma = gamma, .mean = mean, .rstd = rstd, .n = n, .c = c, .hw = hw,
                  .acc = acc};
    pool_run(pool, LAYER_PARTS, bn_part, &j);
}

/* In the fused batch norm + activation kernels, the batch norm output of a chunk is computed,
 * then the quantizer's own kernels run on it, so the fused path cannot drift from them. */
HOT static void bn_act_channels(const bn_job_t *j, int c0, int c1) {
    float t[BN_CHUNK];
    const int hw = j->hw;
    for (int ch = c0; ch < c1; ch++) {
        float a, b;
        bn_coefs(j, ch, &a, &b);
        for (int i = 0; i < j->n; i++) {
            const size_t o = ((size_t)i * j->c + ch) * hw;
            const float *p = j->x + o;
            for (int e0 = 0; e0 < hw; e0 += BN_CHUNK) {
                const int len = hw - e0 < BN_CHUNK ? hw - e0 : BN_CHUNK;
                if (j->yq != NULL) {
                    for (int e = 0; e < len; e++) t[e] = p[e0 + e] * a + b;
                    quant_act_encode(j->yq + o + e0, t, (size_t)len, j->k);
                    continue;
                }
                float *q = j->y + o;
                for (int e = e0; e < e0 + len; e++) q[e] = p[e] * a + b;
                quant_act_forward(q + e0, q + e0, (size_t)len, j->k);
            }
        }
    }
}

void batchnorm_act_forward(pool_t *pool, float *y, const float *x, const float *gamma, const float *beta,
                           float *mean, float *rstd, float *rmean, float *rvar,
                           int n, int c, int hw, int training, float momentum, int k) {
    bn_job_t j = {.channels = bn_act_channels, .y = y, .x = x, .gamma = gamma, .beta = beta, .mean_out = mean,
                  .rstd_out = rstd, .rmean = rmean, .rvar = rvar, .n = n, .c = c, .hw = hw, .training = training,
                  .momentum = momentum, .k = k};
    pool_run(pool, LAYER_PARTS, bn_part, &j);
}

void batchnorm_act_forward_codes(pool_t *pool, uint8_t *y, const float *x, const float *gamma, const float *beta,
                                 float *mean, float *rstd, float *rmean, float *rvar,
                                 int n, int c, int hw, int training, float momentum, int k) {
    bn_job_t j = {.channels = bn_act_channels, .yq = y, .x = x, .gamma = gamma, .beta = beta, .mean_out = mean,
                  .rstd_out = rstd, .rmean = rmean, .rvar = rvar, .n = n, .c = c, .hw = hw, .training = training,
                  .momentum = momentum, .k = k};
    pool_run(pool, LAYER_PARTS, bn_part, &j);
}

HOT static void bn_act_backward_channels(const bn_job_t *j, int c0, int c1) {
    const int n = j->n, c = j->c, hw = j->hw;
    const double m = (double)n * hw;
    float t[BN_CHUNK], g[BN_CHUNK];
    for (int ch = c0; ch < c1; ch++) {
        const float mu = j->mean[ch], rs = j->rstd[ch];
        const float a = j->gamma[ch] * rs, b = j->beta[ch] - mu * a; /* as batchnorm_forward */
        double sdy = 0.0, sdyx = 0.0;
        for (int i = 0; i < n; i++) {
            const float *p = j->x + ((size_t)i * c + ch) * hw;
            const float *d = j->dy + ((size_t)i * c + ch) * hw;
            float sa[ROW_LANES] = {0}, sb[ROW_LANES] = {0};
            for (int e0 = 0; e0 < hw; e0 += BN_CHUNK) {
                const int len = hw - e0 < BN_CHUNK ? hw - e0 : BN_CHUNK;
                const float *pp = p + e0;
                for (int e = 0; e < len; e++) t[e] = pp[e] * a + b;
                quant_act_backward(g, d + e0, t, (size_t)len, j->k, 0);
                grad_sums(sa, sb, g, pp, len, mu, rs);
            }
            sdy += lanes_total(sa);
            sdyx += lanes_total(sb);
        }
        j->dgamma[ch] += (float)sdyx;
        j->dbeta[ch] += (float)sdy;
        if (j->dx == NULL) continue;
        const float kk = j->gamma[ch] * rs, mdy = (float)(sdy / m), mdyx = (float)(sdyx / m);
        for (int i = 0; i < n; i++) {
            const float *p = j->x + ((size_t)i * c + ch) * hw;
            const float *d = j->dy + ((size_t)i * c + ch) * hw;
            float *o = j->dx + ((size_t)i * c + ch) * hw;
            for (int e0 = 0; e0 < hw; e0 += BN_CHUNK) {
                const int len = hw - e0 < BN_CHUNK ? hw - e0 : BN_CHUNK;
                for (int e = 0; e < len; e++) t[e] = p[e0 + e] * a + b;
                quant_act_backward(g, d + e0, t, (size_t)len, j->k, 0);
                float *q = o + e0;
                const float *pp = p + e0;
                if (j->acc)
                    for (int e = 0; e < len; e++) q[e] += kk * (g[e] - mdy - (pp[e] - mu) * rs * mdyx);
                else
                    for (int e = 0; e < len; e++) q[e] = kk * (g[e] - mdy - (pp[e] - mu) * rs * mdyx);
            }
        }
    }
}

void batchnorm_act_backward(pool_t *pool, float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                            const float *gamma, const float *beta, const float *mean, const float *rstd,
                            int n, int c, int hw, int k, int acc) {
    bn_job_t j = {.channels = bn_act_backward_channels, .dx = dx, .dgamma = dgamma, .dbeta = dbeta, .dy = dy,
                  .x = x, .gamma = gamma, .beta = beta, .mean = mean, .rstd = rstd, .n = n,
                  .c = c, .hw = hw, .k = k, .acc = acc};
    pool_run(pool, LAYER_PARTS, bn_part, &j);
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
