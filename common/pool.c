/* pool.c - the kernels' threads. A job is published under the mutex with a new generation
 * number; the parts are claimed through one atomic word that holds the generation in its high
 * half and the next part in its low half, so a thread that is late from the last job can never
 * claim a part of the next one with the last job's function. Threads spin briefly before they
 * sleep, because a training step runs hundreds of short jobs back to back. */
#include "pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

/* Polls of the generation before a thread sleeps on the condition, a few hundred microseconds:
 * with the direct convolution kernels a job often takes less than a wake-up costs on a virtual
 * machine; with 20,000 polls the 2 CPUs were 11% idle during a 2-thread training step. */
#define POOL_SPIN 400000

struct pool {
    pthread_mutex_t mu;
    pthread_cond_t wake;       /* a new job, or stop */
    pthread_cond_t idle;       /* the last part of the job finished */
    pthread_t *tids;
    int nstarted;              /* threads started, the caller's not counted */
    int stop;
    uint32_t gen;              /* the job's generation, written under mu */
    atomic_uint_fast32_t pub;  /* gen, readable without mu, for the spin */
    pool_fn fn;                /* the job, written under mu */
    void *arg;
    int parts;
    atomic_uint_fast64_t claim; /* gen << 32 | next part */
    atomic_int left;            /* parts of the job not finished */
};

/* Claims and runs parts of job `gen` until none is left. */
static void run_parts(pool_t *p, uint32_t gen, pool_fn fn, void *arg, int parts) {
    uint_fast64_t v = atomic_load(&p->claim);
    for (;;) {
        if ((uint32_t)(v >> 32) != gen || (int)(v & 0xffffffffu) >= parts) return;
        if (!atomic_compare_exchange_weak(&p->claim, &v, v + 1)) continue;
        fn(arg, (int)(v & 0xffffffffu));
        if (atomic_fetch_sub(&p->left, 1) == 1) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->idle);
            pthread_mutex_unlock(&p->mu);
        }
        v = atomic_load(&p->claim);
    }
}

static void *thread_main(void *data) {
    pool_t *p = data;
    uint32_t seen = 0;
    for (;;) {
        for (int s = 0; s < POOL_SPIN && (uint32_t)atomic_load(&p->pub) == seen; s++) {
        }
        pthread_mutex_lock(&p->mu);
        while (p->gen == seen && !p->stop) pthread_cond_wait(&p->wake, &p->mu);
        if (p->stop) {
            pthread_mutex_unlock(&p->mu);
            return NULL;
        }
        seen = p->gen;
        pool_fn fn = p->fn;
        void *arg = p->arg;
        const int parts = p->parts;
        pthread_mutex_unlock(&p->mu);
        run_parts(p, seen, fn, arg, parts);
    }
}

pool_t *pool_new(int threads) {
    if (threads < 1 || threads > 256) return NULL;
    pool_t *p = calloc(1, sizeof(*p));
    if (p == NULL) return NULL;
    p->tids = calloc((size_t)threads, sizeof(pthread_t));
    if (p->tids == NULL || pthread_mutex_init(&p->mu, NULL) != 0) {
        free(p->tids);
        free(p);
        return NULL;
    }
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->idle, NULL);
    atomic_init(&p->pub, 0);
    atomic_init(&p->claim, 0);
    atomic_init(&p->left, 0);
    for (int i = 0; i < threads - 1; i++) {
        if (pthread_create(&p->tids[i], NULL, thread_main, p) != 0) {
            pool_destroy(&p);
            return NULL;
        }
        p->nstarted++;
    }
    return p;
}

void pool_destroy(pool_t **pp) {
    if (pp == NULL || *pp == NULL) return;
    pool_t *p = *pp;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->nstarted; i++) pthread_join(p->tids[i], NULL);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->idle);
    pthread_mutex_destroy(&p->mu);
    free(p->tids);
    free(p);
    *pp = NULL;
}

int pool_threads(const pool_t *p) { return p == NULL ? 1 : p->nstarted + 1; }

void pool_run(pool_t *p, int parts, pool_fn fn, void *arg) {
    if (p == NULL || p->nstarted == 0 || parts <= 1) {
        for (int i = 0; i < parts; i++) fn(arg, i);
        return;
    }
    pthread_mutex_lock(&p->mu);
    const uint32_t gen = ++p->gen;
    p->fn = fn;
    p->arg = arg;
    p->parts = parts;
    atomic_store(&p->left, parts);
    atomic_store(&p->claim, (uint_fast64_t)gen << 32);
    atomic_store(&p->pub, gen);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    run_parts(p, gen, fn, arg, parts);
    for (int s = 0; s < POOL_SPIN && atomic_load(&p->left) > 0; s++) {
    }
    pthread_mutex_lock(&p->mu);
    while (atomic_load(&p->left) > 0) pthread_cond_wait(&p->idle, &p->mu);
    pthread_mutex_unlock(&p->mu);
}
