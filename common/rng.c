/* rng.c - splitmix64 and the distributions AuxPS needs. */
#include "rng.h"

#include <math.h>

void rng_seed(rng_t *r, uint64_t seed) {
    r->state = seed ^ 0x9E3779B97F4A7C15ull;
}

uint64_t rng_next(rng_t *r) {
    uint64_t z = (r->state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

float rng_uniform(rng_t *r) {
    return (float)(rng_next(r) >> 40) * (1.0f / 16777216.0f);
}

uint32_t rng_below(rng_t *r, uint32_t n) {
    /* Multiply-shift: bias is below 2^-32 for the sizes used here. */
    return (uint32_t)(((rng_next(r) >> 32) * (uint64_t)n) >> 32);
}

float rng_normal(rng_t *r) {
    double u1 = ((double)(rng_next(r) >> 11) + 1.0) * (1.0 / 9007199254740993.0);
    double u2 = (double)(rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

void rng_shuffle(rng_t *r, int *idx, int n) {
    for (int i = n - 1; i > 0; i--) {
        int j = (int)rng_below(r, (uint32_t)(i + 1));
        int t = idx[i];
        idx[i] = idx[j];
        idx[j] = t;
    }
}
