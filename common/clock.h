/* clock.h - the monotonic clock every timeout, deadline and rate of the program is measured
 * with (CLOCK_MONOTONIC: it never jumps with the wall clock), and the wall clock for the few
 * times a person reads (a checkpoint's time, the status endpoint). They always succeed. */
#ifndef AUXPS_CLOCK_H
#define AUXPS_CLOCK_H

#include <stdint.h>

/* Milliseconds since an arbitrary fixed point. */
int64_t clock_now_ms(void);

/* Seconds since the same point, with nanosecond resolution. */
double clock_now_s(void);

/* Wall-clock time: milliseconds and seconds since the Unix epoch (CLOCK_REALTIME). */
int64_t clock_unix_ms(void);
double clock_unix_s(void);

#endif
