/* curve.h - ZeroMQ CURVE security for every link of a cluster (docs/PROTOCOL.md "Security",
 * docs/CONFIG.md [security]): the key files that `auxps keygen` writes, the socket options of a
 * CURVE server and of a CURVE client, and the ZAP handler that lets only authorised client keys
 * in.
 *
 * Who uses which key:
 *   - The coordinator and the parameter-server nodes are servers (CURVE_ROLE_SERVER): their
 *     ROUTERs serve with the cluster's server key pair and admit the client keys listed in
 *     authorized_keys plus the server public key itself. When they connect to each other (node
 *     -> coordinator, coordinator -> node for the final pull) they are clients with the same
 *     server key pair: whoever holds the server secret can impersonate a server anyway, so
 *     admitting that key gives nothing away, and a server needs no client key of its own.
 *   - Workers are clients (CURVE_ROLE_CLIENT): they need the server public key and a client key
 *     pair, never the server secret.
 *
 * Key files are text: optional '#' comment lines, then one line with the 40-character Z85 text
 * of a 32-byte key. A secret key file must be readable by its owner only (mode 0600 or
 * stricter), as ssh insists for its keys. authorized_keys holds one public key per line,
 * optionally followed by a space and a name; blank lines and '#' lines are skipped.
 *
 * A curve_t is immutable after curve_load and may be shared by any number of sockets and
 * threads; it owns the keys (the secrets are wiped at curve_destroy) and must outlive every
 * ZAP handler started from it. A curve_zap_t owns one thread and one socket of the ZeroMQ
 * context it was started in: stop it before zmq_ctx_term of that context. */
#ifndef AUXPS_CURVE_H
#define AUXPS_CURVE_H

#include <stdint.h>
#include <stdio.h>

#include "config.h"
#include "error.h"

#define CURVE_KEY_TEXT 40          /* Z85 characters of a 32-byte key */
#define CURVE_MAX_AUTHORIZED 4096  /* keys in authorized_keys */
#define CURVE_MAX_CLIENTS 1024     /* client pairs one `auxps keygen --clients N` makes */
#define CURVE_ZAP_ENDPOINT "inproc://zeromq.zap.01" /* fixed by ZeroMQ RFC 27 */
#define CURVE_ZAP_LOGGED 256       /* refused keys logged by name; later ones are only counted */

enum { CURVE_ROLE_SERVER = 1, CURVE_ROLE_CLIENT = 2 };

typedef struct curve curve_t;
typedef struct curve_zap curve_zap_t;

/* 1 if the linked libzmq has CURVE (it was built with libsodium), else 0. */
int curve_available(void);

/* Reads the keys that role needs from the files cfg->security names. Returns 0 with *cv = NULL
 * when security.curve is false, 0 with a new handle when it is true, or a negative code with
 * err set and *cv = NULL: AUXPS_ECONFIG (a key the role needs is not set; a file is not a key
 * file, holds a bad key, or a secret one is readable by others; a public key does not match
 * its secret; authorized_keys has a bad line, named FILE:LINE), AUXPS_EIO (a file cannot be
 * read), AUXPS_EINVAL (this libzmq has no CURVE), AUXPS_ENOMEM. Every message names the file
 * and the config key. */
int curve_load(const auxps_config_t *cfg, int role, curve_t **cv, auxps_error_t *err);

/* A server role handle with fresh, random keys that only this process knows: a server pair, a
 * client pair and an authorized_keys of that client; for the transport benchmark. Returns 0 or
 * AUXPS_EINVAL (no CURVE) / AUXPS_ENOMEM with err set. */
int curve_ephemeral(curve_t **cv, auxps_error_t *err);

/* Wipes the secrets and frees; safe on NULL and twice, clears *cv. */
void curve_destroy(curve_t **cv);

/* The public key a client of cv presents (its client key, or the server key of a server), as
 * Z85 text; for tests and logs. */
const char *curve_client_public(const curve_t *cv);

/* Sets the options that make sock a CURVE server with the cluster's key (call before
 * zmq_bind). With cv NULL it does nothing: the socket stays plain. Returns 0 or AUXPS_EIO. */
int curve_serve(const curve_t *cv, void *sock, auxps_error_t *err);

/* Sets the options that make sock a CURVE client of the cluster's server key (call before
 * zmq_connect): the client key pair, or for a server role the server pair. With cv NULL it
 * does nothing. Returns 0 or AUXPS_EIO. */
int curve_connect(const curve_t *cv, void *sock, auxps_error_t *err);

/* Starts the ZAP handler of ctx: a thread with a REP socket bound to CURVE_ZAP_ENDPOINT that
 * answers every ZAP request at once, 200 for a CURVE client key that cv admits and 400 for any
 * other (or a request that is not CURVE). Call before the server socket binds: without a
 * handler ZeroMQ would admit every key. who ("node", "coord") prefixes the log lines; log
 * (NULL: stderr) gets one line per refused key, the first time it is refused. Returns the
 * handle, or NULL with err set (AUXPS_EIO: the endpoint is taken or ZeroMQ failed;
 * AUXPS_ENOMEM). cv must be a server role handle. */
curve_zap_t *curve_zap_start(const curve_t *cv, void *ctx, const char *who, FILE *log, auxps_error_t *err);

/* Connection attempts refused so far (every attempt counts; safe from any thread). 0 for
 * NULL. */
uint64_t curve_zap_refused(const curve_zap_t *z);

/* Stops the thread and closes its socket; safe on NULL and twice, clears *z. */
void curve_zap_stop(curve_zap_t **z);

/* `auxps keygen`: with name NULL, makes a new key set in dir (created with mode 0700 if
 * missing): server.pub and server.key, clients client pairs client1.pub/.key ...
 * (1..CURVE_MAX_CLIENTS), and authorized_keys listing the client public keys; dir must not
 * hold server.key or authorized_keys yet. With name set (letters, digits, '-', '_', '.', at
 * most 64, not "server"), adds one client pair NAME.pub/NAME.key to the key set in dir and
 * appends its public key to authorized_keys. Secret files are created with mode 0600, public
 * ones 0644; no existing file is overwritten. Prints the files made and a [security] section
 * to out (may be NULL). Returns 0, AUXPS_EINVAL (bad arguments, no CURVE), AUXPS_EIO (a file
 * exists or cannot be written; what was already written stays) with err set. */
int curve_keygen(const char *dir, int clients, const char *name, FILE *out, auxps_error_t *err);

#endif
