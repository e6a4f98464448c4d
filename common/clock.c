/* clock.c - the monotonic and wall clocks (clock.h). */
#include "clock.h"

#include <time.h>

static int64_t ms_of(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double s_of(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int64_t clock_now_ms(void) { return ms_of(CLOCK_MONOTONIC); }
double clock_now_s(void) { return s_of(CLOCK_MONOTONIC); }
int64_t clock_unix_ms(void) { return ms_of(CLOCK_REALTIME); }
double clock_unix_s(void) { return s_of(CLOCK_REALTIME); }
