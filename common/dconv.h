/* dconv.h - direct convolution kernels over a zero-padded plane, for CPUs with AVX-512.
 *
 * The stride-1 "same" convolutions of layers.c (conv_is_shifted) read each image from a padded
 * plane of (h + 2 pad) rows of wp = w + 2 pad columns per channel, and compute the output at
 * rows = h * wp positions per channel, of which each row's first w are kept. Output position p
 * reads, at tap t = (ky, kx), plane position p + ky * wp + kx. layers.c runs that as k*k sgemms;
 * these kernels run it directly, with the k*k taps and all input channels summed in registers
 * for a tile of 8 output channels by 32 positions, so that no output is loaded and stored once
 * per tap and nothing is packed. OpenBLAS may be held to narrower kernels than the CPU runs
 * (OPENBLAS_CORETYPE); these use AVX-512 whenever the CPU has it.
 *
 * The sums run in a fixed order that does not depend on the thread or the part, but differs
 * from the sgemms', so results differ from the sgemm path in the last bits. */
#ifndef AUXPS_DCONV_H
#define AUXPS_DCONV_H

#include <stddef.h>

/* Output channels per register tile: a packed kernel holds ceil(m / DCONV_BLOCK) blocks. */
#define DCONV_BLOCK 8

/* Positions of one register tile; a plane is read up to DCONV_TILE - 1 floats past the last
 * output position's last tap, and those reads only reach outputs that are not kept. */
#define DCONV_TILE 32

/* The geometry of one padded image: k x k kernel, wp columns, rows output positions, plane
 * floats per channel. */
typedef struct {
    int k, wp, rows;
    size_t plane;
} dconv_geom_t;

/* 1 when the CPU runs AVX-512 (F) and the environment does not turn the kernels off
 * (AUXPS_DCONV=0, for tests and benchmarks of the sgemm path); else 0. */
int dconv_enabled(void);

/* Floats of a packed kernel with m outputs and kc inputs per output. */
size_t dconv_packed_size(int m, int kc, int k);

/* Packs w (cout, cin, k, k) for dconv_forward: flipped = 0 gives m = cout outputs over kc = cin
 * input channels; flipped = 1 gives the input gradient's kernel, m = cin outputs over kc = cout
 * channels with the taps reversed. dst holds dconv_packed_size(m, kc, k) floats; output channels
 * past m are zero. */
void dconv_pack(float *dst, const float *w, int cout, int cin, int k, int flipped);

/* o (m, rows) = the convolution of the planes p (kc, plane) with the packed kernel wpk.
 * p must be readable for DCONV_TILE + k floats past its last plane. */
void dconv_forward(float *o, const float *wpk, const float *p, int m, int kc, const dconv_geom_t *g);

/* dw (k*k, cout, cin) += for every tap t, sum over the positions q < rows of dy(co, q) x(ci, q +
 * ky wp + kx). dy is read as (cout, rows) rows one plane apart (dout in its plane: the extra
 * columns are the padding's zeros); x is the input planes (cin, plane). */
void dconv_weight_grad(float *dw, const float *dy, const float *x, int cout, int cin, const dconv_geom_t *g);

/* The same, with the input planes transposed: xt (plane + DCONV_TILE + k positions, cin), cin a
 * multiple of DCONV_WIDE. For wide layers on small planes, where dconv_weight_grad's
 * reduction of each weight's lanes costs as much as its multiply-adds. */
#define DCONV_WIDE 64
void dconv_weight_grad_t(float *dw, const float *dy, const float *xt, int cout, int cin, const dconv_geom_t *g);

#endif
