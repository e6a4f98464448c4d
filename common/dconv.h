/* dconv.h - direct convolution kernels, for CPUs with AVX-512 or AVX2.
 *
 * The stride-1 "same" convolutions of layers.c (conv_is_shifted) read each image from a padded
 * plane of (h + 2 pad) rows of wp = w + 2 pad columns per channel, and compute the output at
 * rows = h * wp positions per channel, of which each row's first w are kept. Output position p
 * reads, at tap t = (ky, kx), plane position p + ky * wp + kx. layers.c can run that as k*k
 * sgemms; these kernels run it directly, with every tap and input channel summed in registers
 * for a tile of 8 output channels by 32 positions, so that no output is loaded and stored once
 * per tap and nothing is packed. A 1x1 convolution is the case of one tap over the image
 * itself, and a stride-2 one that of taps spread over four phase planes (layers.c). OpenBLAS
 * may be held to narrower kernels than the CPU runs (OPENBLAS_CORETYPE); these use AVX-512
 * whenever the CPU has it, else AVX2 with FMA; plain C references (slow, for tests) stand
 * beside them.
 *
 * The sums run in a fixed order that does not depend on the thread or the part, but differs
 * from the sgemms', so results differ from the sgemm path in the last bits. dconv_forward and
 * dconv_weight_grad_t sum every output in the same order on every kernel set, so AVX-512 and
 * AVX2 give the same bits; dconv_weight_grad sums lanes, 16 or 8, and differs between them. */
#ifndef AUXPS_DCONV_H
#define AUXPS_DCONV_H

#include <stddef.h>

/* Output channels per register tile: a packed kernel holds ceil(m / DCONV_BLOCK) blocks. */
#define DCONV_BLOCK 8

/* Positions of one register tile. */
#define DCONV_TILE 32

/* The most taps a kernel may have (5 x 5). */
#define DCONV_MAX_TAPS 25

/* What one call reads. Output position q (of rows per channel) reads, at tap t, input
 * position q + off[t]; input channels are stride floats apart. A stride-1 convolution over
 * padded planes of wp columns has off[ky k + kx] = ky wp + kx (dconv_geom_same); layers.c
 * lays a stride-2 one's input out in phase planes so that it is one of these too. */
typedef struct {
    int taps, rows;
    size_t stride;
    size_t off[DCONV_MAX_TAPS];
} dconv_geom_t;

/* The geometry of a k x k stride-1 convolution over planes of wp columns and plane floats,
 * computed at rows positions. */
void dconv_geom_same(dconv_geom_t *g, int k, int wp, int rows, size_t plane);

/* The kernel sets, narrowest first. */
enum { DCONV_OFF, DCONV_C, DCONV_AVX2, DCONV_AVX512 };

/* The kernels that run: the widest this CPU has (AVX-512 F, or AVX2 with FMA; DCONV_OFF
 * without either), unless AUXPS_DCONV names others, for tests and benchmarks: "0" none (the
 * sgemm paths), "c" the plain C references, "avx2" or "avx512" (if the CPU runs it); another
 * value counts as unset. *forced (may be NULL) is 1 when the variable named the kernels: then
 * layers.c runs them on every convolution they can run, not only where they pay. Reads the
 * environment and the CPU at every call: a caller asks once per convolution and hands the
 * level to the kernels below. */
int dconv_level(int *forced);

/* dconv_level(NULL) != DCONV_OFF. */
int dconv_enabled(void);

/* The name of dconv_level(NULL): "off", "c", "avx2" or "avx512" (a static string). */
const char *dconv_kernels(void);

/* Floats of a packed kernel with m outputs, kc inputs per output and the given taps. */
size_t dconv_packed_size(int m, int kc, int taps);

/* Packs taps tap[0 .. ntaps) of w (cout, cin, k2) for dconv_forward: transposed = 0 gives
 * m = cout outputs over kc = cin input channels, transposed = 1 m = cin outputs over kc = cout
 * (an input gradient's kernel). dst holds dconv_packed_size(m, kc, ntaps) floats; output
 * channels past m are zero. */
void dconv_pack(float *dst, const float *w, int cout, int cin, int k2, int transposed, const int *tap, int ntaps);

/* The kernels below run the set `level` names: a dconv_level() other than DCONV_OFF. */

/* o (m, rows) = (acc = 0) or += (acc = 1) the convolution of the input p (kc channels) with the
 * packed kernel wpk, taps as in g. */
void dconv_forward(int level, float *o, const float *wpk, const float *p, int m, int kc, const dconv_geom_t *g,
                   int acc);

/* dw (taps, cout, cin) += for every tap t, the sum over the positions q < rows of dy(co, q)
 * x(ci, q + off[t]). dy's channels are dy_stride floats apart; where an output is not kept
 * (a plane's extra columns), dy must be zero. */
void dconv_weight_grad(int level, float *dw, const float *dy, size_t dy_stride, const float *x, int cout, int cin,
                       const dconv_geom_t *g);

/* The same, with the input transposed: xt (positions, cin), cin a multiple of DCONV_WIDE; g's
 * stride is not used. For small planes, where dconv_weight_grad's reduction of each weight's
 * lanes costs as much as its multiply-adds. */
#define DCONV_WIDE 16
void dconv_weight_grad_t(int level, float *dw, const float *dy, size_t dy_stride, const float *xt, int cout, int cin,
                         const dconv_geom_t *g);

#endif
