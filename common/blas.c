/* blas.c - reading and correcting OpenBLAS's choice of kernels (see blas.h). */
#include "blas.h"

#include <cblas.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* How wide the SIMD of a set of OpenBLAS kernels is: 2 for AVX-512, 1 for AVX2 with FMA, 0 for
 * anything older. Names are OpenBLAS's (dynamic.c's corename table). */
static int core_rank(const char *name) {
    static const char *const avx512[] = {"SkylakeX", "Cooperlake", "SapphireRapids"};
    static const char *const avx2[] = {"Haswell", "Zen", "Excavator"};
    for (size_t i = 0; i < sizeof avx512 / sizeof avx512[0]; i++)
        if (strcasecmp(name, avx512[i]) == 0) return 2;
    for (size_t i = 0; i < sizeof avx2 / sizeof avx2[0]; i++)
        if (strcasecmp(name, avx2[i]) == 0) return 1;
    return 0;
}

/* The rank this CPU supports. GCC's CPU feature check includes the OS's saving of the AVX and
 * AVX-512 register state (XGETBV), so a feature reported here is usable. */
static int cpu_rank(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512cd") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512vl"))
        return 2;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 1;
    return 0;
}

const char *blas_core(void) {
    const char *name = openblas_get_corename();
    return name ? name : "unknown";
}

const char *blas_better_core(void) {
    const char *set = getenv("OPENBLAS_CORETYPE");
    if (set && set[0]) return NULL;
    const int have = core_rank(blas_core()), can = cpu_rank();
    if (can <= have) return NULL;
    return can == 2 ? "SkylakeX" : "Haswell";
}

int blas_select(char **argv, const char **core, const char **why) {
    if ((*core = blas_better_core()) == NULL) return 0;
    if (setenv("OPENBLAS_CORETYPE", *core, 1) != 0) {
        *why = strerror(errno);
        return -1;
    }
    execv("/proc/self/exe", argv);
    *why = strerror(errno);
    setenv("OPENBLAS_CORETYPE", blas_core(), 1); /* children run the kernels this process runs */
    return -1;
}
