/* test_pool.c - the kernels' thread pool: every part of every job runs exactly once, on more
 * than one thread when the pool has them, and the pool starts and stops cleanly. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "pool.h"

#define MAX_PARTS 9

typedef struct {
    atomic_int runs[MAX_PARTS];
    pthread_t who[MAX_PARTS];
    volatile double sink;
} job_t;

static void count_part(void *arg, int part) {
    job_t *j = arg;
    atomic_fetch_add(&j->runs[part], 1);
    j->who[part] = pthread_self();
    double s = 0.0; /* a little work, so that the other threads get a part */
    for (int i = 0; i < 2000; i++) s += (double)i * part;
    j->sink = s;
}

Test(pool, every_part_of_every_job_runs_exactly_once) {
    for (int threads = 1; threads <= 4; threads++) {
        pool_t *p = pool_new(threads);
        cr_assert_not_null(p);
        cr_assert_eq(pool_threads(p), threads);
        for (int job = 0; job < 3000; job++) {
            const int parts = job % (MAX_PARTS + 1);
            job_t j;
            memset(&j, 0, sizeof j);
            pool_run(p, parts, count_part, &j);
            for (int i = 0; i < MAX_PARTS; i++)
                cr_assert_eq(atomic_load(&j.runs[i]), i < parts ? 1 : 0, "threads %d, job %d, part %d ran %d times",
                             threads, job, i, atomic_load(&j.runs[i]));
        }
        pool_destroy(&p);
        cr_assert_null(p);
        pool_destroy(&p);
    }
}

Test(pool, a_null_pool_runs_the_parts_in_the_caller) {
    job_t j;
    memset(&j, 0, sizeof j);
    pool_run(NULL, 4, count_part, &j);
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(atomic_load(&j.runs[i]), 1);
        cr_assert(pthread_equal(j.who[i], pthread_self()));
    }
    cr_assert_eq(pool_threads(NULL), 1);
}

static void slow_part(void *arg, int part) {
    job_t *j = arg;
    j->who[part] = pthread_self();
    struct timespec ts = {0, 20 * 1000 * 1000};
    nanosleep(&ts, NULL);
    atomic_fetch_add(&j->runs[part], 1);
}

/* Parts that sleep leave the other thread time to claim one: two threads share the job. */
Test(pool, the_parts_are_shared_between_threads) {
    pool_t *p = pool_new(2);
    cr_assert_not_null(p);
    job_t j;
    memset(&j, 0, sizeof j);
    pool_run(p, 4, slow_part, &j);
    int others = 0;
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(atomic_load(&j.runs[i]), 1);
        others += !pthread_equal(j.who[i], pthread_self());
    }
    cr_assert(others > 0 && others < 4, "%d of 4 parts ran on the pool's thread", others);
    pool_destroy(&p);
}

Test(pool, counts_out_of_range_are_refused) {
    cr_assert_null(pool_new(0));
    cr_assert_null(pool_new(-1));
    cr_assert_null(pool_new(257));
}
