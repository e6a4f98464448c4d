/* util.h - helpers the test binaries share (linked into each of them; not a test itself):
 * a monotonic clock, per-test temp dirs, a small deterministic generator for test data, and
 * child processes of the real program (AUXPS_BIN) with their stdout and stderr captured.
 *
 * Every helper reports a failure through a Criterion assertion, so it may only be called from
 * a test or a suite's .init/.fini. Each test runs in its own process, so the table of started
 * processes below needs no locking. */
#ifndef AUXPS_TEST_UTIL_H
#define AUXPS_TEST_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "wire.h"

#define UTIL_MAX_KIDS 48           /* processes a test may have running at once */
#define UTIL_MAX_OUTPUT (16 << 20) /* bytes of one captured stream */

/* Seconds on CLOCK_MONOTONIC. */
double util_now_s(void);

/* Under AddressSanitizer, turns its quarantine of freed memory off for the processes started
 * after the call (ASAN_OPTIONS), so that a test of resident memory measures the program's own
 * memory, not the quarantine. Does nothing in a normal build. */
void util_asan_no_quarantine(void);

/* ---- temp dirs ---- */

/* Creates a fresh directory /tmp/auxps_test_NAME_XXXXXX and writes its path into dir. */
void util_tmpdir_make(char dir[64], const char *name);
/* Removes dir and everything below it; does nothing if dir is empty or gone. */
void util_tmpdir_remove(const char *dir);

/* ---- deterministic test data ---- */

/* splitmix64: a small deterministic generator, state passed explicitly. */
typedef struct { uint64_t s; } util_rng_t;

uint64_t util_rng_next(util_rng_t *r);
/* Uniform in [lo, hi). */
double util_rng_unif(util_rng_t *r, double lo, double hi);
/* p[0..n) uniform in [lo, hi). */
void util_fill_unif(float *p, size_t n, util_rng_t *r, double lo, double hi);
/* n zeroed floats (at least one), or the test fails; free() them. */
float *util_falloc(size_t n);
/* Known, distinct, exactly representable values to pre-fill gradient buffers with. */
float util_prefill_value(size_t i);
void util_prefill(float *p, size_t n);

/* A TCP port on 127.0.0.1 that was free a moment ago (peer_free_port: drawn below the
 * ephemeral range and bound once). */
int util_free_port(void);

/* ---- messages ---- */

/* Receives one message on sock (router: a ROUTER, whose routing frame goes into in) within ms;
 * returns 0 with in and m filled in, or -1 on timeout. A message that does not decode fails the
 * test. The caller clears m and closes in. */
int util_recv_within(void *sock, int router, wire_in_t *in, wire_msg_t *m, int ms);

/* ---- hostile peers ---- */

/* A DEALER of its own context, connected to a coordinator or a node: one fake peer. */
typedef struct {
    void *ctx, *sock;
} util_peer_t;

void util_peer_open(util_peer_t *p, const char *endpoint);
void util_peer_close(util_peer_t *p);
/* Sends f0 (and f1 when not NULL) as one message. */
void util_peer_send(util_peer_t *p, const void *f0, size_t n0, const void *f1, size_t n1);
/* Waits up to ms for the reply, which must be an ERROR; returns its code, and its rid in *rid
 * (may be NULL). what names the case in a failure. */
uint32_t util_peer_expect_error(util_peer_t *p, const char *what, uint32_t *rid, int ms);
/* 1 if nothing at all arrives on p within ms (a message that was dropped, not answered). */
int util_peer_silent(util_peer_t *p, int ms);
/* wire_encode of m into buf (*n: its size in, the header's size out). */
void util_encode(const wire_msg_t *m, unsigned char *buf, size_t *n);

/* Sends the hostile messages every receiver must refuse with ERROR, each checked for its code:
 * random bytes, a truncated header, an unknown type (malformed); another protocol version
 * (bad_version); a header frame over WIRE_MAX_HEADER, an array claiming 2^32 - 1 items, a PUSH
 * declaring 2^40 values (too_large); a PUSH whose offset + length passes WIRE_MAX_VECTOR
 * (out_of_range); a PROGRESS whose loss is NaN (non_finite). Adds what it sent to
 * kinds[WIRE_REJECT_*] and returns the number of messages. who names the receiver. */
int util_send_malformed(util_peer_t *p, const char *who, uint64_t kinds[WIRE_REJECT_COUNT]);

/* ---- HTTP ---- */

/* GET path from 127.0.0.1:port with Connection: close, within 5 s. Returns the HTTP status (-1
 * if the server cannot be reached) and the body in *body (malloc'd, NUL-terminated; NULL when
 * -1), which the caller frees. */
int util_http_get(int port, const char *path, char **body);

/* ---- child processes ---- */

typedef struct {
    char *buf;                  /* always NUL-terminated once the process started */
    size_t len, cap;
    int fd;                     /* read end, -1 at EOF */
} util_stream_t;

typedef struct {
    pid_t pid;
    int slot;                   /* index in the table of started processes */
    util_stream_t out, err;
    int exited, status, signaled, termsig, timed_out; /* status: exit status, -1 if not exited */
} util_proc_t;

/* The program the process tests start: $AUXPS_BIN, or build/auxps. */
const char *util_auxps_bin(void);

/* Starts util_auxps_bin() with args (NULL-terminated, without argv[0], at most 94), stdin from
 * /dev/null, stdout and stderr into non-blocking pipes, default signal dispositions and an
 * empty signal mask, and records it for util_proc_kill_all. */
void util_proc_start(util_proc_t *p, const char *const args[]);
/* The same for another program (a path, not searched in PATH), such as /bin/sh. */
void util_proc_start_prog(util_proc_t *p, const char *prog, const char *const args[]);

/* Reads the pipes of the n processes until all are at EOF, or until the stream `which` (1
 * stdout, 2 stderr) of procs[0] holds a complete line containing `until` (when not NULL), or
 * the deadline (util_now_s time; then timed_out is set). Returns 1 if `until` was seen. */
int util_proc_pump(util_proc_t *procs[], int n, double deadline, const char *until, int which);

/* Collects the rest of the output of the n processes and their exit statuses; kills (SIGKILL)
 * any still running at the deadline and then fails the test, naming it and its output. */
void util_proc_finish(util_proc_t *procs[], int n, double deadline);

/* Starts the program with args and finishes it (util_proc_start, util_proc_finish) within
 * timeout_s seconds. */
void util_proc_run(util_proc_t *p, const char *const args[], double timeout_s);

/* Fails the test unless the process exited (no signal: no crash, no abort) with status and
 * without a sanitizer report: sanitizers exit with 1 by default, the status of an ordinary
 * error, so their reports are looked for in stderr too. */
void util_expect_exit(const util_proc_t *p, int status);

/* Frees the captured output. */
void util_proc_free(util_proc_t *p);

/* Kills (SIGKILL) and reaps every started process not yet finished: for a suite's .fini, after
 * a failed assertion left them running. */
void util_proc_kill_all(void);

/* The number under key in the JSON object o; fails the test if there is none. */
struct json_t;
double util_jnum(const struct json_t *o, const char *key);

#endif
