/* bench_compute.h - `auxps bench` without --transport: training images/s of the quantized
 * ResNets in this process, OpenBLAS sgemm's peak beside them, and the human table of a whole
 * suite's JSON lines (bench/run, README "Performance").
 *
 *   auxps bench [--model LIST] [--bits LIST] [--aux LIST] [--batch LIST] [--threads LIST]
 *               [--steps N] [--seconds S] [--warmup N] [--warmup-seconds W]
 *       One JSON line per configuration of the product of the lists (comma-separated):
 *       --model resnet8 | resnet20 (1 or 3 blocks per stage, widths 16/32/64, 1x28x28, 10
 *       classes: METHOD.md); --bits 1..8 | 32 (weight and activation bits alike); --aux on |
 *       off; --batch 1..4096; --threads 1..256 (OpenBLAS threads). Defaults: resnet8, 2, on,
 *       128, "1,2": the default configuration at 1 and 2 threads.
 *       A configuration builds the model for its batch (model_init seed 1), draws one batch of
 *       N(0, 1) inputs and uniform labels, warms up for at least N steps (default 2) and W
 *       seconds (default 0), then times steps of
 *       exactly trainer_step (forward, backward, SGD update with Nesterov momentum and weight
 *       decay) until at least N steps (default 20; 3 when --seconds is given) and at least S
 *       seconds (default 0) have passed:
 *         {"bench":"compute","impl":"auxps","model":"resnet8","blocks":1,"wbits":2,"abits":2,
 *          "aux":true,"batch":128,"threads":1,"steps":20,"seconds":T,"images_per_s":X,
 *          "fwd_macs_per_image":M,"flops_per_image":F,"gflops":G}
 *       images_per_s = steps * batch / T (wall clock). FLOPs of a step, per image (bench_flops):
 *       the multiply-adds M of every convolution and linear layer of the forward pass that the
 *       step runs (the auxiliary module's included when aux is on) count 2 FLOPs each in the
 *       forward pass, 2 in the weight gradient and 2 in the input gradient, except the stem,
 *       whose input needs no gradient: F = 6 M - 2 M_stem. Batch norms, quantizers, ReLUs,
 *       pooling, the losses and the update are not counted (they are O(activations), not
 *       O(MACs)). gflops = F * X / 1e9, the effective rate.
 *
 *   auxps bench --sgemm [--threads LIST] [--seconds S]
 *       OpenBLAS's peak: cblas_sgemm of two BENCH_SGEMM_N square matrices, repeated for S
 *       seconds (default 1, at least 3 calls) after one warm-up call:
 *         {"bench":"sgemm","impl":"openblas","threads":T,"n":1024,"calls":C,"seconds":S,
 *          "gflops":PEAK,"gflops_mean":MEAN}
 *       gflops is the fastest call (2 n^3 FLOPs), gflops_mean all calls over their time.
 *
 *   auxps bench --conv [--seconds S]
 *       Every convolution shape of ResNet-8 (3x3 stride 1 and 2, the stem, 1x1 stride 1 and 2)
 *       at batch 128 on one thread through layers.h: conv2d_forward, and conv2d_backward with
 *       the input gradient, each timed for S seconds (default 0.5, at least 3 calls; the
 *       fastest call counts) with OpenBLAS's sgemms (AUXPS_DCONV=0) and, where the CPU has
 *       AVX-512, with the direct kernels (dconv.h):
 *         {"bench":"conv","pass":"forward"|"backward","cin":C,"h":H,"cout":C,"k":K,"stride":S,
 *          "batch":128,"threads":1,"sgemm_ms":MS,"direct_ms":MS,"sgemm_gflops":G,
 *          "direct_gflops":G,"speedup":R}
 *       The FLOPs are 2 per multiply-add, twice the forward's for the backward pass; direct_ms,
 *       direct_gflops and speedup are 0 without the direct kernels.
 *
 *   auxps bench --table FILE
 *       Reads a suite's JSON lines (the lines above, those of --transport, bench/run's
 *       pytorch, cluster and accuracy lines; other lines are skipped) and prints the tables of
 *       README "Performance" to stdout: per compute configuration the AuxPS rate, its GFLOP/s
 *       and their share of the sgemm peak of the same threads, the PyTorch rates (tuned and
 *       untuned malloc) and the ratios AuxPS/PyTorch; then the transport, cluster and accuracy
 *       measurements.
 *
 * Every number is measured, none is assumed; nothing here asserts a speed. */
#ifndef AUXPS_BENCH_COMPUTE_H
#define AUXPS_BENCH_COMPUTE_H

#include "model.h"

#define BENCH_SGEMM_N 1024
#define BENCH_MAX_SECONDS 3600.0

/* The values of a comma-separated option (--threads 1,2; bench_transport's --workers too). */
#define BENCH_MAX_LIST 16
typedef struct {
    int v[BENCH_MAX_LIST];
    int n;
} bench_list_t;

/* Parses s, a comma-separated list of integers in [lo, hi] or, when names is non-NULL, of those
 * names (each value is the name's index), into l. Returns 0, or -1 for an empty item, a bad
 * value or more than BENCH_MAX_LIST items. */
int bench_parse_list(const char *s, long lo, long hi, const char *const *names, bench_list_t *l);

/* Multiply-adds of one image's forward pass in a training step of spec (a ResNet): the whole
 * in *fwd_macs, the stem convolution's alone in *stem_macs. Returns the FLOPs of one image's
 * training step as the header defines them, or 0 for a spec that is not a ResNet. */
double bench_flops(const model_spec_t *spec, double *fwd_macs, double *stem_macs);

/* `auxps bench ...`: argv holds the arguments after "bench" (not --transport). Returns the exit
 * status: 0 when everything was measured, 1 on a failure (a sentence on stderr), 2 on a usage
 * error. */
int bench_compute(int argc, char **argv);

#endif
