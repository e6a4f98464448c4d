/* blas.h - which OpenBLAS kernels this process runs, and choosing better ones.
 *
 * Debian's OpenBLAS (0.3.21, built with DYNAMIC_ARCH) picks its kernels from the CPU's family
 * and model numbers when the library loads. A CPU newer than the library's table (a Sapphire
 * Rapids Xeon that names itself "Intel(R) Xeon(R) Processor", for one) falls back to the
 * Prescott (SSE3) kernels, and sgemm runs at a fifth of the speed the CPU's AVX-512 gives. The
 * library makes its choice before main runs and reads only the environment variable
 * OPENBLAS_CORETYPE to override it, so the fix is to re-execute the program with that variable
 * set. A user's own OPENBLAS_CORETYPE always stands. */
#ifndef AUXPS_BLAS_H
#define AUXPS_BLAS_H

/* The name of the kernels OpenBLAS runs in this process ("Prescott", "Haswell", "SkylakeX"...).
 * Static storage; never NULL. */
const char *blas_core(void);

/* The kernels this CPU's features call for when the loaded library chose weaker ones:
 * "SkylakeX" (AVX-512 F, CD, BW, DQ and VL, with the OS saving their state) or "Haswell"
 * (AVX2 and FMA). NULL when the library's choice is as good, or when OPENBLAS_CORETYPE is set. */
const char *blas_better_core(void);

/* If blas_better_core() names kernels, sets OPENBLAS_CORETYPE to them and re-executes
 * /proc/self/exe with argv (child processes inherit the variable and are not re-executed).
 * Call first thing in main, before any thread exists. Returns 0 when there was nothing to do,
 * and -1 when the exec failed: the process then goes on with the kernels it has, its children
 * are told to run the same ones, *core names the kernels it tried and *why says what failed
 * (errno's text). */
int blas_select(char **argv, const char **core, const char **why);

#endif
