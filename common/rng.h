/* rng.h - a small deterministic random number generator (splitmix64).
 *
 * Every random choice in AuxPS (initialisation, shuffling, augmentation) draws from an rng_t
 * seeded from the config, so a run is reproducible from its seed on any machine. */
#ifndef AUXPS_RNG_H
#define AUXPS_RNG_H

#include <stdint.h>

typedef struct {
    uint64_t state;
} rng_t;

void rng_seed(rng_t *r, uint64_t seed);
uint64_t rng_next(rng_t *r);
/* Uniform in [0, 1). */
float rng_uniform(rng_t *r);
/* Uniform integer in [0, n); n > 0. */
uint32_t rng_below(rng_t *r, uint32_t n);
/* Standard normal (Box-Muller). */
float rng_normal(rng_t *r);
/* Fisher-Yates shuffle of idx[0..n). */
void rng_shuffle(rng_t *r, int *idx, int n);

#endif
