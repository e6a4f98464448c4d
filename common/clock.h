/* clock.h - the monotonic clock every timeout, deadline and rate of the program is measured
 * with (CLOCK_MONOTONIC: it never jumps with the wall clock). Both functions always succeed. */
#ifndef AUXPS_CLOCK_H
#define AUXPS_CLOCK_H

#include <stdint.h>

/* Milliseconds since an arbitrary fixed point. */
int64_t clock_now_ms(void);

/* Seconds since the same point, with nanosecond resolution. */
double clock_now_s(void);

#endif
