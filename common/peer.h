/* peer.h - what every process of a cluster (coordinator, parameter-server node, worker) needs
 * around its ZeroMQ sockets: the DEALER that talks to the coordinator, ZeroMQ errors as
 * auxps errors, the name a peer gives itself in HELLO, its log lines, and the signal handlers
 * that ask it to stop. Nothing here keeps state; every buffer belongs to the caller. */
#ifndef AUXPS_PEER_H
#define AUXPS_PEER_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "curve.h"
#include "error.h"

/* Sets err to AUXPS_EIO, "what: <zmq_strerror of the last ZeroMQ error>", and returns
 * AUXPS_EIO. */
int peer_zfail(const char *what, auxps_error_t *err);

/* zmq_setsockopt of an int option; returns its result (0, or -1 with zmq_errno set). */
int peer_sockopt(void *sock, int opt, int value);

/* Creates a DEALER in ctx, sets the options of a coordinator link (linger 1 s, send timeout
 * 1 s, wire_socket_limits; CURVE client keys when cv is not NULL, curve.h) and connects it to
 * coordinator. who ("node", "worker") prefixes the error messages. Returns the socket, which
 * the caller closes, or NULL with err set: AUXPS_EIO (ZeroMQ failed) or AUXPS_EINVAL
 * (coordinator is no endpoint ZeroMQ can connect to). */
void *peer_coord_socket(void *ctx, const char *coordinator, const curve_t *cv, const char *who,
                        auxps_error_t *err);

/* A TCP port on 127.0.0.1 that was free a moment ago, for a process started next to bind.
 * Another process can still take it before then; to make that unlikely the port is drawn at
 * random below the kernel's ephemeral range (net.ipv4.ip_local_port_range), where the source
 * ports of outgoing connections never come from, and tested by binding it. Falls back to a
 * port the kernel picks (bind to port 0) when none of the draws is free. Returns -1 with errno
 * set when no socket can be bound at all. */
int peer_free_port(void);

#define PEER_MAX_SETS 64 /* --set options of auxps ps and auxps worker */

/* The CURVE keys of a node or a worker, whose run settings come from the coordinator but whose
 * keys cannot: reads the config file at path (NULL: the defaults, curve off) with config_load,
 * applies the nsets assignments sets[] (each "security.KEY=VALUE"; another section is refused
 * with AUXPS_ECONFIG, as it would be ignored), checks it, and loads role's keys (curve_load).
 * Returns 0 with *cv NULL (curve off) or a handle the caller destroys after the sockets, or a
 * negative code with err set (config_load's, config_set's and curve_load's codes). */
int peer_load_curve(const char *path, const char *const *sets, int nsets, int role, curve_t **cv,
                    auxps_error_t *err);

/* Writes "HOST:PID" into name (size bytes, at least 1): the host name cut to 40 bytes, with
 * every byte that is not printable ASCII or is a space replaced by '_', or fallback if the
 * host name cannot be read. */
void peer_hello_name(char *name, size_t size, const char *fallback);

/* Writes one log line to log (NULL: stderr) and flushes it: "ROLE ID: " when named, else
 * "ROLE: ", then the formatted text and a newline. */
void peer_vsay(FILE *log, const char *role, int named, uint32_t id, const char *fmt, va_list ap);

/* Runs fn(arg) on a thread of its own and meanwhile sends HEARTBEAT (role, id; rids from
 * *rid) on the coordinator socket coord every heartbeat_ms, so that a slow job after WELCOME
 * (loading a dataset) does not look like silence. Messages that arrive meanwhile stay queued.
 * Returns fn's result. If no thread can be started, fn runs on the calling thread, silently. */
int peer_run_beating(void *coord, uint32_t role, uint32_t id, uint32_t *rid, uint32_t heartbeat_ms,
                     int (*fn)(void *arg), void *arg);

/* Installs handler for SIGINT and SIGTERM without SA_RESTART, so that a blocking zmq_poll
 * returns EINTR and the loop can look at its stop flag. */
void peer_catch_signals(void (*handler)(int));

#endif
