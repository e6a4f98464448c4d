/* wire.h - the AuxPS wire protocol (docs/PROTOCOL.md): one struct per message, encode and
 * decode functions that mirror the document field by field, and send/receive of whole
 * multipart messages on ZeroMQ sockets.
 *
 * A message is frame 0, a MessagePack array header ["AXPS", version, type, rid, fields...],
 * and at most one payload frame of raw little-endian data (float32 values, packed k-bit codes
 * or uint32 sample indices). On a ROUTER socket a routing-id frame comes first; there is no
 * empty delimiter frame.
 *
 * Everything a peer sends is hostile: wire_decode checks every type, count, length, range and
 * cross-field rule of the document and the payload size before it fills the struct, and
 * returns one of
 *   AUXPS_EFORMAT   the shape is wrong: a frame is missing or extra, the header is not one
 *                   complete MessagePack array, bad magic, unknown type, wrong field count, a
 *                   field of the wrong MessagePack type, a string with a forbidden byte, or a
 *                   payload frame whose size differs from what the header declares;
 *   AUXPS_ERANGE    a value is outside its limit (negative where unsigned, too large, an
 *                   offset + length beyond WIRE_MAX_VECTOR, a string too long, a non-finite
 *                   float);
 *   AUXPS_EINVAL    every field is valid alone but they contradict each other (shards that do
 *                   not tile the vector, segments that do not sum to length, an encoding not
 *                   allowed in this message);
 *   AUXPS_EVERSION  the header's version is not WIRE_VERSION;
 *   AUXPS_ENOMEM    no memory;
 * with a sentence in err->msg that names the message and field ("PUSH.offset = ..."). It
 * never asserts and never reads outside the frames it is given. wire_error_code maps these
 * to the code of the ERROR reply.
 *
 * Ownership, in one place:
 *   - A decoded wire_msg_t owns its shard table, segment table and config text (freed by
 *     wire_msg_clear); its payload pointer borrows the payload frame it was decoded from.
 *   - A wire_msg_t filled for sending borrows everything: wire_encode and wire_send read the
 *     caller's shards, segments, config and payload and free none of them, except a payload
 *     given to wire_send with a free function (see wire_send).
 *   - Payload bytes received from ZeroMQ may be unaligned: read them with memcpy,
 *     wire_payload_f32, or the pointer wire_payload_f32_view gives only when they are not. */
#ifndef AUXPS_WIRE_H
#define AUXPS_WIRE_H

#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

#include "error.h"

#define WIRE_MAGIC "AXPS"
#define WIRE_VERSION 3u

/* Limits (PROTOCOL.md "Limits"). */
#define WIRE_MAX_HEADER 65536u          /* bytes of frame 0 */
#define WIRE_MAX_PAYLOAD (1u << 26)     /* bytes of a payload frame (WIRE_MAX_FLOATS floats) */
#define WIRE_MAX_FLOATS (1u << 24)      /* length of one PULL, PULL_REP, PUSH, STATS_PUSH */
#define WIRE_MAX_VECTOR (1u << 30)      /* num_params, num_stats, any offset + length */
#define WIRE_MAX_WORKERS 1024u          /* worker ids are 0..WIRE_MAX_WORKERS-1 */
#define WIRE_ID_COORD WIRE_MAX_WORKERS  /* the coordinator's id (PULL.worker, HEARTBEAT.id) */
#define WIRE_MAX_SHARDS 64u             /* node ids are 0..WIRE_MAX_SHARDS-1 */
#define WIRE_MAX_SEGMENTS 1024u         /* segments of a KBIT or Q8 payload */
#define WIRE_MAX_CHUNK (1u << 20)       /* samples in a lease, an eval request, a report */
#define WIRE_MAX_BATCH 65536u           /* samples behind one PUSH or STATS_PUSH */
#define WIRE_MAX_STALENESS 1000u
#define WIRE_MAX_NAME 63u               /* HELLO.name */
#define WIRE_MAX_ENDPOINT 255u          /* HELLO.endpoint, shard endpoints */
#define WIRE_MAX_TEXT 255u              /* ERROR.text */
#define WIRE_MAX_CONFIG 16384u          /* WELCOME.config, the run's INI text */
#define WIRE_MAX_ROUTE 255u             /* bytes of a ZeroMQ routing id */
#define WIRE_DEFAULT_HEARTBEAT_MS 1000u /* used until WELCOME says otherwise */
#define WIRE_DEFAULT_TIMEOUT_MS 10000u

/* Message types. Values are on the wire: they only grow at the end. */
#define WIRE_TYPE_MAP(X)                                      \
    X(HELLO, 1)  X(WELCOME, 2)   X(NODE_READY, 3)             \
    X(LEASE_REQ, 4) X(LEASE, 5)  X(CHUNK_DONE, 6)             \
    X(PULL, 7)   X(PULL_REP, 8)  X(PUSH, 9) X(PUSH_ACK, 10)   \
    X(STATS_PUSH, 11) X(PROGRESS, 12) X(HEARTBEAT, 13)        \
    X(BYE, 14)   X(EVAL_REQ, 15) X(EVAL_REP, 16) X(DONE, 17)  \
    X(ERROR, 18) X(MEMBERSHIP, 19) X(NODE_STATS, 20)

enum {
#define X(name, v) WIRE_##name = v,
    WIRE_TYPE_MAP(X)
#undef X
    WIRE_TYPE_COUNT = 21 /* one more than the largest type */
};

/* ERROR codes (PROTOCOL.md "Errors"). Receivers must accept codes they do not know. */
#define WIRE_ERR_MAP(X)                                                              \
    X(BAD_MESSAGE, 1, "malformed message")                                           \
    X(VERSION, 2, "unsupported protocol version")                                    \
    X(NOT_REGISTERED, 3, "sender is not registered")                                 \
    X(OUT_OF_RANGE, 4, "shard, range or id does not belong to the receiver")         \
    X(ENCODING, 5, "encoding not supported")                                         \
    X(STALE, 6, "lease or request is no longer valid")                               \
    X(FULL, 7, "no room for another peer")                                           \
    X(CONFIG, 8, "configuration rejected")                                           \
    X(INTERNAL, 9, "internal error")                                                 \
    X(SHUTTING_DOWN, 10, "training is over")                                         \
    X(NON_FINITE, 11, "a value is NaN or infinite")

enum {
#define X(name, v, text) WIRE_ERR_##name = v,
    WIRE_ERR_MAP(X)
#undef X
};

/* Kinds of refused messages, which nodes and the coordinator count (PROTOCOL.md "Rejected
 * messages"; NODE_STATS carries a node's counts in this order). Values only grow at the end. */
#define WIRE_REJECT_MAP(X)                                                                   \
    X(MALFORMED, 0, "malformed")       /* no message of this protocol, or not for this peer */ \
    X(BAD_VERSION, 1, "bad_version")   /* another protocol version */                         \
    X(TOO_LARGE, 2, "too_large")       /* a frame or a declared length over its limit */      \
    X(OUT_OF_RANGE, 3, "out_of_range") /* a value over its limit, or not the receiver's */    \
    X(UNREGISTERED, 4, "unregistered") /* from a sender the receiver does not know */         \
    X(NON_FINITE, 5, "non_finite")     /* NaN or infinity in a float field or payload */

enum {
#define X(name, v, text) WIRE_REJECT_##name = v,
    WIRE_REJECT_MAP(X)
#undef X
    WIRE_REJECT_COUNT = 6
};

enum { WIRE_ROLE_COORD = 0, WIRE_ROLE_WORKER = 1, WIRE_ROLE_NODE = 2 };
enum { WIRE_ENC_F32 = 0, WIRE_ENC_KBIT = 1, WIRE_ENC_Q8 = 2 };
enum { WIRE_VEC_PARAMS = 0, WIRE_VEC_STATS = 1 };
enum { WIRE_CONS_ASYNC = 0, WIRE_CONS_SSP = 1, WIRE_CONS_BSP = 2 };
enum { WIRE_LEASE_RANGE = 0, WIRE_LEASE_LIST = 1, WIRE_LEASE_WAIT = 2 };
enum { WIRE_STATS_AVERAGE = 0, WIRE_STATS_REPLACE = 1 };
enum { WIRE_SPLIT_TEST = 0, WIRE_SPLIT_TRAIN = 1 };
enum { WIRE_DONE_FINISHED = 0, WIRE_DONE_ABORTED = 1 };

/* One node's share of the two vectors (WELCOME.shards). */
typedef struct {
    uint32_t id;                              /* equals its index in the table */
    char endpoint[WIRE_MAX_ENDPOINT + 1];     /* where workers connect their DEALER */
    uint64_t offset, length;                  /* in params, floats; length >= 1 */
    uint64_t stats_offset, stats_length;      /* in stats, floats; length may be 0 */
} wire_shard_t;

/* A run of consecutive values in a KBIT or Q8 payload: value = lo + step * code, code an
 * unsigned bits-bit integer packed LSB first; bits = 32 means raw float32 (lo = step = 0). */
typedef struct {
    uint32_t length;                          /* 1..WIRE_MAX_FLOATS values */
    uint32_t bits;                            /* 1..8 or 32 */
    float lo, step;                           /* finite */
} wire_seg_t;

/* Field order is wire order; PROTOCOL.md has one table per struct. */
typedef struct {
    uint32_t role;                            /* WIRE_ROLE_WORKER or WIRE_ROLE_NODE */
    char name[WIRE_MAX_NAME + 1];             /* for logs, e.g. "host:pid" */
    char endpoint[WIRE_MAX_ENDPOINT + 1];     /* node: its ROUTER endpoint; worker: "" */
    uint32_t encodings;                       /* bit (1 << WIRE_ENC_*) per supported encoding */
} wire_hello_t;

typedef struct {
    uint32_t role, id;
    uint32_t consistency, staleness, num_workers;
    uint64_t num_params, num_stats;
    uint64_t seed, stream_seed;
    uint32_t heartbeat_ms, timeout_ms;
    const wire_shard_t *shards;               /* nshards entries */
    uint32_t nshards;
    const char *config;                       /* the run's INI text, NUL-terminated */
} wire_welcome_t;

typedef struct {
    uint32_t node;
    uint64_t offset, length, stats_offset, stats_length;
    uint64_t version;
} wire_node_ready_t;

typedef struct {
    uint32_t worker;
} wire_lease_req_t;

typedef struct {
    uint32_t worker, chunk, epoch, mode, first, count, ttl_ms;
} wire_lease_t;                               /* mode LIST: payload = count uint32 indices */

typedef struct {
    uint32_t worker, chunk, epoch, samples;
    uint64_t clock;
} wire_chunk_done_t;

typedef struct {
    uint32_t worker, shard, vec;
    uint64_t offset, length, clock;
    uint32_t encoding;                        /* requested: F32 or KBIT */
} wire_pull_t;

typedef struct {
    uint32_t shard, vec;
    uint64_t offset, length, version, min_clock;
    uint32_t encoding;                        /* F32 or KBIT */
    const wire_seg_t *segs;                   /* nsegs = 0 for F32 */
    uint32_t nsegs;
} wire_pull_rep_t;

typedef struct {
    uint32_t worker, shard;
    uint64_t offset, length, clock, version;
    uint32_t samples, encoding;               /* F32 or Q8 */
    const wire_seg_t *segs;
    uint32_t nsegs;
} wire_push_t;

typedef struct {
    uint32_t shard, vec;
    uint64_t version, min_clock;
} wire_push_ack_t;

typedef struct {
    uint32_t worker, shard;
    uint64_t offset, length, clock;
    uint32_t mode, samples;
} wire_stats_push_t;

typedef struct {
    uint32_t worker, chunk, epoch;
    uint64_t clock;
    uint32_t samples;
    double loss_sum, loss_low_sum;
    uint32_t correct_low, correct_aux;
    uint64_t staleness;       /* version 2: the staleness of the last push (largest over shards) */
} wire_progress_t;

typedef struct {
    uint32_t role, id;
} wire_heartbeat_t;

typedef struct {
    uint32_t role, id, reason;                /* reason: 0 or a WIRE_ERR_* code */
} wire_bye_t;

typedef struct {
    uint32_t eval, epoch, split, first, count;
} wire_eval_req_t;

typedef struct {
    uint32_t eval, worker, samples;
    double loss_low_sum;
    uint32_t correct_low, correct_aux;
    uint64_t version;
} wire_eval_rep_t;

typedef struct {
    uint32_t reason, epoch;
    uint64_t step;
} wire_done_t;

/* Node -> coordinator (version 2), every heartbeat interval: the node's counters. */
typedef struct {
    uint32_t node;
    uint64_t pushes, version, pulls, bytes_in, bytes_out, refused, max_staleness;
    uint64_t checkpoint_version, checkpoint_ms; /* the newest checkpoint; 0 = none; unix ms */
    uint64_t rejected[WIRE_REJECT_COUNT];       /* version 3: refusals by kind, WIRE_REJECT_* */
} wire_node_stats_t;

/* Coordinator -> node (version 2, async runs): worker id joined the run, or left it (its id
 * may then be given to a new worker). */
typedef struct {
    uint32_t worker;
    uint32_t joined;          /* 1 joined, 0 left */
    uint64_t step;
} wire_membership_t;

typedef struct {
    uint32_t code;                            /* WIRE_ERR_*, or a newer code */
    char text[WIRE_MAX_TEXT + 1];
} wire_error_msg_t;

typedef struct {
    uint32_t version;       /* decode: the header's; encode always writes WIRE_VERSION */
    uint32_t type;          /* WIRE_HELLO .. WIRE_NODE_STATS */
    uint32_t rid;           /* request id: chosen by the requester, echoed by the reply */
    union {
        wire_hello_t hello;
        wire_welcome_t welcome;
        wire_node_ready_t node_ready;
        wire_lease_req_t lease_req;
        wire_lease_t lease;
        wire_chunk_done_t chunk_done;
        wire_pull_t pull;
        wire_pull_rep_t pull_rep;
        wire_push_t push;
        wire_push_ack_t push_ack;
        wire_stats_push_t stats_push;
        wire_progress_t progress;
        wire_heartbeat_t heartbeat;
        wire_bye_t bye;
        wire_eval_req_t eval_req;
        wire_eval_rep_t eval_rep;
        wire_done_t done;
        wire_error_msg_t error;
        wire_membership_t membership;
        wire_node_stats_t node_stats;
    };
    const void *payload;    /* the payload frame (NULL if none); possibly unaligned */
    size_t payload_size;
    void *mem_[2];          /* private: what decode allocated */
    uint32_t reject;        /* after a failed decode: its WIRE_REJECT_* kind (wire_reject_kind) */
} wire_msg_t;

/* "HELLO", ..., or "?" for an unknown type. */
const char *wire_type_name(uint32_t type);
/* "BAD_MESSAGE", ..., or "?" for an unknown code. */
const char *wire_err_name(uint32_t code);
/* The ERROR code to answer a message that failed with AUXPS_E* rc: VERSION for
 * AUXPS_EVERSION, INTERNAL for AUXPS_ENOMEM and AUXPS_EIO, BAD_MESSAGE otherwise. */
uint32_t wire_error_code(int rc);

/* "malformed", ..., or "?": the kind's name in logs, /status and /metrics. */
const char *wire_reject_name(uint32_t kind);
/* The WIRE_REJECT_* kind of a refused message: of a wire_recv failure (m NULL: AUXPS_ERANGE is
 * a frame over its limit, anything else malformed), or of a wire_decode failure (m the message
 * it failed on: version, a header or declared length over its limit, a length or count field
 * over its limit, a non-finite float, another value out of range, or malformed). */
uint32_t wire_reject_kind(int rc, const wire_msg_t *m);
/* The kind of a refusal the receiver decided itself, from the ERROR code it answers:
 * NOT_REGISTERED, OUT_OF_RANGE, NON_FINITE and VERSION have their own kinds; every other code
 * counts as malformed. */
uint32_t wire_reject_of_code(uint32_t code);

/* 1 if a message of this type (and, for LEASE, this mode) carries a payload frame. */
int wire_has_payload(const wire_msg_t *m);

/* A HEARTBEAT from role (WIRE_ROLE_*) with id, rid 0: the sender sets the rid. */
wire_msg_t wire_heartbeat(uint32_t role, uint32_t id);
/* Bytes of a KBIT/Q8 payload with these segments (no validation; no overflow for valid
 * tables, whose total length is at most WIRE_MAX_FLOATS). */
size_t wire_segs_bytes(const wire_seg_t *segs, uint32_t nsegs);

/* Zeroes m (to fill it for sending) after freeing what a decode allocated; safe twice. */
void wire_msg_clear(wire_msg_t *m);

/* Checks m against the document (the same rules wire_decode applies, payload size included)
 * and packs its header. On success *hdr is a malloc'd buffer the caller frees with free() and
 * *size its length. Returns 0 or AUXPS_EFORMAT / ERANGE / EINVAL (m would be rejected by its
 * receiver; nothing is allocated), AUXPS_ENOMEM. A program never sends what its peer would
 * refuse. */
int wire_encode(const wire_msg_t *m, void **hdr, size_t *size, auxps_error_t *err);

/* Decodes a header frame and the payload frames that followed it (npayload is 0 or 1; more
 * is AUXPS_EFORMAT) into m, which is overwritten (wire_msg_clear it first if it held a
 * decoded message). Errors as at the top of this file. On failure m owns nothing, but
 * m->type, m->rid and m->version are set when the header got that far (0 otherwise), so the
 * caller can name the request in its ERROR reply. An ERROR message is decoded whatever its
 * version, since its layout never changes. On success m->payload points into payload. */
int wire_decode(wire_msg_t *m, const void *hdr, size_t hdr_size, const void *payload,
                size_t payload_size, int npayload, auxps_error_t *err);

/* ---- ZeroMQ ---------------------------------------------------------------------------- */

/* Sets ZMQ_MAXMSGSIZE so that ZeroMQ drops a peer that sends a frame larger than
 * WIRE_MAX_PAYLOAD before buffering it. Call on every socket before bind/connect.
 * Returns 0 or AUXPS_EIO. */
int wire_socket_limits(void *sock);

/* Called once with the payload pointer and hint when ZeroMQ no longer needs a zero-copy
 * payload; runs on a ZeroMQ I/O thread, possibly after wire_send returned. */
typedef void wire_free_fn(void *data, void *hint);
/* A wire_free_fn that calls free(data). */
void wire_free_heap(void *data, void *hint);

/* Sends m as one multipart message: [route] header [payload]. route/route_size: the peer's
 * routing id on a ROUTER socket, NULL/0 on a DEALER. flags: 0 or ZMQ_DONTWAIT.
 * Payload ownership:
 *   ffn == NULL: the payload is copied; the caller keeps its buffer.
 *   ffn != NULL: zero copy. wire_send takes the buffer whatever happens: ffn(payload, hint)
 *     is called exactly once, when ZeroMQ is done with it, when wire_send fails, or at once
 *     if the message has no payload frame. The bytes MUST NOT change until then (a parameter
 *     server sends a snapshot, not its live vector).
 * Returns 0, an encode error (see wire_encode), or AUXPS_EIO with errno as ZeroMQ set it
 * (EAGAIN: would block; EHOSTUNREACH: unknown route with ZMQ_ROUTER_MANDATORY; ETERM). */
int wire_send(void *sock, const void *route, size_t route_size, const wire_msg_t *m,
              wire_free_fn *ffn, void *hint, int flags, auxps_error_t *err);

/* Sends ERROR {code, text} (text cut to WIRE_MAX_TEXT bytes, forbidden bytes replaced by
 * '?') answering request rid. Never send an ERROR in answer to an ERROR. */
int wire_send_error(void *sock, const void *route, size_t route_size, uint32_t rid,
                    uint32_t code, const char *text, auxps_error_t *err);

/* One received multipart message. Zero it before first use; wire_recv closes what it held. */
typedef struct {
    unsigned char route[WIRE_MAX_ROUTE];      /* routing id (ROUTER sockets) */
    size_t route_size;                        /* 0 on a DEALER */
    zmq_msg_t hdr, payload;
    int held;                                 /* private: bit 0 hdr, bit 1 payload */
    int npayload;                             /* payload frames received (0 or 1) */
} wire_in_t;

/* Receives one whole multipart message. router = 1 on a ROUTER socket (frame 0 is the routing
 * id). Enforces the frame limits: a routing id of 1..WIRE_MAX_ROUTE bytes, then a header of
 * 1..WIRE_MAX_HEADER bytes, then at most one payload frame of at most WIRE_MAX_PAYLOAD bytes.
 * A message that breaks them is read to its last frame (the socket stays in step) and
 * rejected with AUXPS_EFORMAT or AUXPS_ERANGE, with in->route still set so that the caller can
 * answer ERROR. flags: 0 or ZMQ_DONTWAIT. Returns 0, that, or AUXPS_EIO with errno as ZeroMQ
 * set it (EAGAIN: nothing to read or ZMQ_RCVTIMEO expired; EINTR; ETERM). */
int wire_recv(void *sock, int router, wire_in_t *in, int flags, auxps_error_t *err);
/* wire_decode of a received message; m->payload borrows in's payload frame, so keep in open
 * while using it. */
int wire_decode_in(wire_in_t *in, wire_msg_t *m, auxps_error_t *err);
/* Closes the frames in holds; safe twice. */
void wire_in_close(wire_in_t *in);

/* ---- payload codecs -------------------------------------------------------------------- */

/* Writes the values of a decoded or checked PULL_REP, PUSH or STATS_PUSH to out (length
 * floats): F32 payloads are copied, KBIT and Q8 payloads dequantized (lo + step * code).
 * Returns 0, AUXPS_EFORMAT (a segment's unused padding bits are not zero, or the payload
 * size is wrong), AUXPS_EINVAL (a message without float payload, NULL out) or the error of
 * an invalid segment table (a hand-built m). */
int wire_payload_f32(const wire_msg_t *m, float *out, auxps_error_t *err);

/* The F32 payload of a decoded PULL_REP, PUSH or STATS_PUSH read in place: *out points into
 * m's payload frame (valid as long as that frame is) when the payload is F32, not empty, and
 * aligned for floats; otherwise *out is NULL, and wire_payload_f32 copies the values out.
 * Returns 0, AUXPS_EFORMAT (an F32 payload of the wrong size) or AUXPS_EINVAL (a message
 * without float payload). */
int wire_payload_f32_view(const wire_msg_t *m, const float **out, auxps_error_t *err);

/* As wire_payload_f32, but the codes of the k-bit segments (bits 1..8) go to codes (length
 * bytes, indexed as out) and their values are not written; 32-bit segments and f32 payloads are
 * written to values as before. A worker decodes DoReFa weights from the codes itself, exactly
 * as the quantizer does (quant_weight_decode), instead of through lo + step * code. */
int wire_payload_codes(const wire_msg_t *m, float *values, uint8_t *codes, auxps_error_t *err);

/* The value of code c in a segment: lo + step * c, computed exactly as every decoder does. */
static inline float wire_dequant(float lo, float step, uint32_t c) { return lo + step * (float)c; }

/* Encodes n (1..WIRE_MAX_FLOATS) gradient values as one q8 segment (PROTOCOL.md section 6):
 * v = g + resid, scale a = max|v| / 127, code = round(v / a) + 128 in 1..255, so that the value
 * sent is a (code - 128) = lo + step * code with lo = -128 a, step = a; a tensor whose a is 0
 * or below FLT_MIN sends zeros (a = 0, every code 128). With resid non-NULL
 * (error feedback) resid becomes v minus the value sent; NULL sends g alone. Fills seg and
 * codes (n). Returns 0, or AUXPS_ERANGE if a value is NaN or infinite (nothing is sent). */
int wire_q8_encode(const float *g, float *resid, uint32_t n, wire_seg_t *seg, uint8_t *codes,
                   auxps_error_t *err);

/* Packs a KBIT/Q8 payload: for each segment in order, bits = 32 copies values[i] as float32,
 * else packs codes[i] (< 2^bits) in bits bits, LSB first, each segment starting on a byte.
 * codes and values are indexed over the whole message (sum of segment lengths); either may be
 * NULL if no segment needs it. out_size must equal wire_segs_bytes. Returns 0 or AUXPS_EINVAL
 * (a code too large, a missing array, a wrong out_size). */
int wire_pack_codes(const wire_seg_t *segs, uint32_t nsegs, const uint8_t *codes,
                    const float *values, void *out, size_t out_size, auxps_error_t *err);

#endif
