/* dashboard.h - the status endpoint's dashboard page (docs/STATUS.md "Dashboard"): a static
 * HTML page with its script, compiled into the program. It always succeeds. */
#ifndef AUXPS_DASHBOARD_H
#define AUXPS_DASHBOARD_H

#include <stddef.h>

/* The page, NUL-terminated, static (never freed); *len (when len is not NULL) is its length
 * without the NUL. */
const char *dashboard_html(size_t *len);

#endif
