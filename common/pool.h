/* pool.h - a fixed set of threads that run the parts of one job at a time.
 *
 * The compute kernels (layers.h) cut their work into a fixed number of parts, whatever the
 * number of threads, and a pool runs those parts on its threads: the same parts in the same
 * order of reduction give the same bits on 1 thread or 8. pool_run returns when every part has
 * finished; the caller's thread runs parts too. A NULL pool runs the parts one after the other
 * in the caller, so a kernel needs no pool to be correct.
 *
 * One thread at a time may call pool_run on a pool (the model that owns it). */
#ifndef AUXPS_POOL_H
#define AUXPS_POOL_H

typedef struct pool pool_t;

/* Runs part `part` (0..parts-1) of a job; arg is the job's own data. */
typedef void (*pool_fn)(void *arg, int part);

/* A pool of `threads` threads in all, the caller's included, so threads - 1 are started;
 * threads is 1..256. NULL when a thread cannot be started or threads is out of range. */
pool_t *pool_new(int threads);
/* Stops and joins the threads; safe on NULL and twice (clears *p). */
void pool_destroy(pool_t **p);
/* Threads in the pool, the caller's included; 1 for NULL. */
int pool_threads(const pool_t *p);
/* fn(arg, i) for every i in 0..parts-1, each exactly once, spread over the pool's threads;
 * returns when all have returned. */
void pool_run(pool_t *p, int parts, pool_fn fn, void *arg);

#endif
