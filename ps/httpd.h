/* httpd.h - the status endpoint's HTTP/1.1 server (docs/STATUS.md): GET /status, /history,
 * /metrics, /healthz, the dashboard at / and the chart library it uses, served from a libuv loop
 * of its own in a thread of its own, so that serving never waits for training and training
 * never waits for a client.
 *
 * The training side hands data over with two calls, each a short copy under a mutex and never
 * a wait for a client: httpd_publish (the whole snapshot; the server keeps a copy) and
 * httpd_history_add (one point of the time series). The server thread copies the latest of
 * both under the same mutex when a request needs them and renders outside it. Nothing the
 * caller passes is kept: every pointer stays the caller's.
 *
 * Clients are hostile: a request whose head exceeds max_header_bytes gets 431, a URL over 2 KiB
 * 414, a malformed request 400, a body 400, a method other than GET and HEAD 405 (with Allow),
 * an HTTP major version other than 1 505; each of those closes the connection. An unknown path
 * gets 404 and the connection stays open. A connection must deliver each request head within
 * timeout_ms of its accept or of the previous response, else it gets 408 (when it sent part of
 * a request) and is closed; slow clients cost one connection slot each and never delay others.
 * Beyond max_connections a new connection gets 503 and is closed. Keep-alive and pipelining
 * follow HTTP/1.1; a client that half-closes after its requests still gets every response.
 * The server thread blocks every signal, so that SIGINT and SIGTERM still reach the thread
 * that polls for them. */
#ifndef AUXPS_HTTPD_H
#define AUXPS_HTTPD_H

#include "error.h"
#include "status.h"

#define HTTPD_DEFAULT_ADDR "127.0.0.1"
#define HTTPD_DEFAULT_PORT 8080
#define HTTPD_DYGRAPHS_DIR "/usr/share/javascript/dygraphs" /* Debian's libjs-dygraphs */

typedef struct {
    const char *addr;        /* IPv4 or IPv6 literal to bind; NULL = HTTPD_DEFAULT_ADDR */
    int port;                /* 0..65535; 0 = a free port chosen by the system (httpd_port) */
    int timeout_ms;          /* 100..600000; default 10000 */
    int max_connections;     /* 1..10000; default 256 */
    int max_header_bytes;    /* request line + headers, 1024..1048576; default 8192 */
    int history_capacity;    /* points, 4..1<<20; default STATUS_HISTORY_CAP */
    const char *dygraphs_dir;/* NULL = HTTPD_DYGRAPHS_DIR */
} httpd_options_t;

typedef struct httpd httpd_t;

/* Fills o with the defaults above (port HTTPD_DEFAULT_PORT). */
void httpd_options_default(httpd_options_t *o);

/* Binds, listens and starts the server thread. Before the first httpd_publish /status shows a
 * run that has not started (status_snapshot_init). Reads dygraph.min.js and dygraph.min.css
 * from dygraphs_dir once: when they are missing the server still starts, the dashboard shows
 * the tables without charts, and httpd_warning says what to install. Returns NULL with err set:
 * AUXPS_EINVAL (an option out of range, addr not an IP literal), AUXPS_EIO (bind or listen
 * failed: the address and the system's reason), AUXPS_ENOMEM. */
httpd_t *httpd_start_with(const httpd_options_t *opt, auxps_error_t *err);

/* httpd_start_with the defaults but addr (NULL = HTTPD_DEFAULT_ADDR) and port. */
httpd_t *httpd_start(const char *addr, int port, auxps_error_t *err);

/* The port the server listens on (the chosen one after port 0). */
int httpd_port(const httpd_t *h);

/* NULL, or a sentence about a missing optional file (the chart library). */
const char *httpd_warning(const httpd_t *h);

/* Replaces the snapshot the server shows with a copy of s (only its used prefix is copied,
 * status_snapshot_used). Returns 0, or AUXPS_EINVAL / AUXPS_ERANGE (status_snapshot_check: the
 * snapshot is refused and the previous one stays). Cheap enough for every progress report. */
int httpd_publish(httpd_t *h, const status_snapshot_t *s);

/* Appends a copy of p to the history /history serves. Returns 0 or AUXPS_EINVAL. */
int httpd_history_add(httpd_t *h, const status_point_t *p);

/* Stops the loop, closes every connection, joins the thread and frees everything; sets *h to
 * NULL. Safe on NULL and twice. */
void httpd_destroy(httpd_t **h);

#endif
