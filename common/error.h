/* error.h - the one table of AuxPS error codes, and an error value that carries a message.
 *
 * Functions return 0 on success or a negative AUXPS_E* code. Functions that can fail for a
 * reason a user must read (a file, a config line) also fill an auxps_error_t with a sentence
 * that names the culprit. */
#ifndef AUXPS_ERROR_H
#define AUXPS_ERROR_H

#include <stddef.h>

#define AUXPS_ERRNO_MAP(X)                                                   \
    X(ENOMEM, -1, "out of memory")                                           \
    X(EIO, -2, "input/output error")                                         \
    X(EFORMAT, -3, "malformed or truncated data")                            \
    X(ECONFIG, -4, "invalid configuration")                                  \
    X(EINVAL, -5, "invalid argument")                                        \
    X(ECHECKSUM, -6, "checksum mismatch")                                    \
    X(EVERSION, -7, "unsupported format version")                            \
    X(ERANGE, -8, "value out of range")

enum {
#define X(name, code, text) AUXPS_##name = code,
    AUXPS_ERRNO_MAP(X)
#undef X
};

typedef struct {
    int code;       /* 0 or an AUXPS_E* code */
    char msg[512];  /* human-readable sentence naming what failed */
} auxps_error_t;

/* Returns a static description of code; never NULL. */
const char *auxps_strerror(int code);

/* Records code and a printf-style message in err (which may be NULL) and returns code. */
int auxps_error_set(auxps_error_t *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
