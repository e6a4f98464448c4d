/* hot.h - HOT marks an elementwise kernel to be compiled for AVX2 (x86-64-v3) beside the
 * baseline (x86-64-v2); the loader picks the one the machine runs. No floating-point contraction
 * is allowed (-std=c11 implies -ffp-contract=off) and no kernel reorders a sum, so both clones
 * give the same bits: a cluster of mixed machines trains as one machine does. `make test-clones`
 * checks it: a build with -DAUXPS_NO_CLONES (baseline only) must export the same model bytes. */
#ifndef AUXPS_HOT_H
#define AUXPS_HOT_H

/* HOT_WIDE adds an AVX-512 clone (x86-64-v4), for the kernels over a parameter vector that the
 * nodes and the workers run between two messages (the weights' quantizer, the codings, a
 * push's finiteness check, SGD): there it halved the time of most of them. The activation
 * kernels keep HOT: their AVX-512 clones made the training step about 5% slower. The same
 * rules hold, so all clones give the same bits. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(AUXPS_NO_CLONES)
#define HOT __attribute__((target_clones("arch=x86-64-v3", "default")))
#define HOT_WIDE __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define HOT
#define HOT_WIDE
#endif

#endif
