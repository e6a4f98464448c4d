/* error.c - error code table and message helper. */
#include "error.h"

#include <stdarg.h>
#include <stdio.h>

const char *auxps_strerror(int code) {
    switch (code) {
    case 0: return "success";
#define X(name, c, text) case c: return text;
        AUXPS_ERRNO_MAP(X)
#undef X
    default: return "unknown error";
    }
}

int auxps_error_set(auxps_error_t *err, int code, const char *fmt, ...) {
    if (err == NULL) return code;
    err->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return code;
}
