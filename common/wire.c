/* wire.c - encoder, decoder and ZeroMQ framing of the AuxPS wire protocol.
 *
 * Every message is described once, by a table of fields in wire order (MSGS below, the same
 * order and limits as the tables of docs/PROTOCOL.md). One generic routine walks a table to
 * decode and another to encode, and both call the same per-field checks and the same
 * cross-field rules (check_msg, check_payload), so the encoder cannot emit what the decoder
 * would refuse. */
#include "wire.h"

#include "hot.h"

#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Payloads are little-endian and copied with memcpy: the host must be little-endian with
 * IEEE-754 binary32 floats (PROTOCOL.md "Endianness"). */
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "AuxPS wire payloads are little-endian; this host is not"
#endif
_Static_assert(sizeof(float) == 4 && FLT_MANT_DIG == 24, "float must be IEEE-754 binary32");
_Static_assert(WIRE_MAX_PAYLOAD >= 4ull * WIRE_MAX_FLOATS, "payload limit below float limit");
_Static_assert(WIRE_MAX_PAYLOAD >= 4ull * WIRE_MAX_CHUNK, "payload limit below a LIST lease");

/* Header nesting: the header array, the shard or segment table, one entry. */
#define MAX_DEPTH 3
#define MAGIC_LEN 4

enum { K_U32, K_U64, K_F32, K_F64, K_STR, K_CONFIG, K_SHARDS, K_SEGS };
/* String classes: TOKEN = printable ASCII without space (names, endpoints); LINE = no control
 * bytes (error text); TEXT = LINE plus tab, CR and LF (the INI config). */
enum { C_NONE, C_TOKEN, C_LINE, C_TEXT };

typedef struct {
    const char *name;
    uint8_t kind, cls;
    size_t off;          /* of the value, or of the pointer for strings and tables */
    size_t off2;         /* K_SHARDS, K_SEGS: of the uint32_t entry count */
    uint64_t min, max;   /* integers: value range; strings: bytes; tables: entries */
} field_t;

typedef struct {
    const char *name;
    const field_t *f;
    int n;
} msgdef_t;

#define M(path) offsetof(wire_msg_t, path)
#define FU32(n, path, lo, hi) {n, K_U32, C_NONE, M(path), 0, lo, hi}
#define FU64(n, path, lo, hi) {n, K_U64, C_NONE, M(path), 0, lo, hi}
#define FF64(n, path) {n, K_F64, C_NONE, M(path), 0, 0, 0}
#define FSTR(n, path, cls, lo, hi) {n, K_STR, cls, M(path), 0, lo, hi}
#define ANY32 UINT32_MAX
#define ANY64 UINT64_MAX
#define VEC WIRE_MAX_VECTOR

static const field_t SHARD_FIELDS[] = {
    {"id", K_U32, C_NONE, offsetof(wire_shard_t, id), 0, 0, WIRE_MAX_SHARDS - 1},
    {"endpoint", K_STR, C_TOKEN, offsetof(wire_shard_t, endpoint), 0, 1, WIRE_MAX_ENDPOINT},
    {"offset", K_U64, C_NONE, offsetof(wire_shard_t, offset), 0, 0, VEC - 1},
    {"length", K_U64, C_NONE, offsetof(wire_shard_t, length), 0, 1, VEC},
    {"stats_offset", K_U64, C_NONE, offsetof(wire_shard_t, stats_offset), 0, 0, VEC},
    {"stats_length", K_U64, C_NONE, offsetof(wire_shard_t, stats_length), 0, 0, VEC},
};
static const field_t SEG_FIELDS[] = {
    {"length", K_U32, C_NONE, offsetof(wire_seg_t, length), 0, 1, WIRE_MAX_FLOATS},
    {"bits", K_U32, C_NONE, offsetof(wire_seg_t, bits), 0, 1, 32},
    {"lo", K_F32, C_NONE, offsetof(wire_seg_t, lo), 0, 0, 0},
    {"step", K_F32, C_NONE, offsetof(wire_seg_t, step), 0, 0, 0},
};
#define NSHARD_FIELDS ((int)(sizeof SHARD_FIELDS / sizeof SHARD_FIELDS[0]))
#define NSEG_FIELDS ((int)(sizeof SEG_FIELDS / sizeof SEG_FIELDS[0]))

static const field_t F_HELLO[] = {
    FU32("role", hello.role, WIRE_ROLE_WORKER, WIRE_ROLE_NODE),
    FSTR("name", hello.name, C_TOKEN, 1, WIRE_MAX_NAME),
    FSTR("endpoint", hello.endpoint, C_TOKEN, 0, WIRE_MAX_ENDPOINT),
    FU32("encodings", hello.encodings, 1, 7),
};
static const field_t F_WELCOME[] = {
    FU32("role", welcome.role, WIRE_ROLE_WORKER, WIRE_ROLE_NODE),
    FU32("id", welcome.id, 0, WIRE_MAX_WORKERS - 1),
    FU32("consistency", welcome.consistency, WIRE_CONS_ASYNC, WIRE_CONS_BSP),
    FU32("staleness", welcome.staleness, 0, WIRE_MAX_STALENESS),
    FU32("num_workers", welcome.num_workers, 1, WIRE_MAX_WORKERS),
    FU64("num_params", welcome.num_params, 1, VEC),
    FU64("num_stats", welcome.num_stats, 0, VEC),
    FU64("seed", welcome.seed, 0, ANY64),
    FU64("stream_seed", welcome.stream_seed, 0, ANY64),
    FU32("heartbeat_ms", welcome.heartbeat_ms, 10, 60000),
    FU32("timeout_ms", welcome.timeout_ms, 30, 3600000),
    {"shards", K_SHARDS, C_NONE, M(welcome.shards), M(welcome.nshards), 1, WIRE_MAX_SHARDS},
    {"config", K_CONFIG, C_TEXT, M(welcome.config), 0, 1, WIRE_MAX_CONFIG},
};
static const field_t F_NODE_READY[] = {
    FU32("node", node_ready.node, 0, WIRE_MAX_SHARDS - 1),
    FU64("offset", node_ready.offset, 0, VEC - 1),
    FU64("length", node_ready.length, 1, VEC),
    FU64("stats_offset", node_ready.stats_offset, 0, VEC),
    FU64("stats_length", node_ready.stats_length, 0, VEC),
    FU64("version", node_ready.version, 0, ANY64),
};
static const field_t F_LEASE_REQ[] = {
    FU32("worker", lease_req.worker, 0, WIRE_MAX_WORKERS - 1),
};
static const field_t F_LEASE[] = {
    FU32("worker", lease.worker, 0, WIRE_MAX_WORKERS - 1),
    FU32("chunk", lease.chunk, 0, ANY32),
    FU32("epoch", lease.epoch, 0, ANY32),
    FU32("mode", lease.mode, WIRE_LEASE_RANGE, WIRE_LEASE_WAIT),
    FU32("first", lease.first, 0, ANY32),
    FU32("count", lease.count, 0, WIRE_MAX_CHUNK),
    FU32("ttl_ms", lease.ttl_ms, 0, 3600000),
};
static const field_t F_CHUNK_DONE[] = {
    FU32("worker", chunk_done.worker, 0, WIRE_MAX_WORKERS - 1),
    FU32("chunk", chunk_done.chunk, 0, ANY32),
    FU32("epoch", chunk_done.epoch, 0, ANY32),
    FU32("samples", chunk_done.samples, 0, WIRE_MAX_CHUNK),
    FU64("clock", chunk_done.clock, 0, ANY64),
};
static const field_t F_PULL[] = {
    FU32("worker", pull.worker, 0, WIRE_ID_COORD),
    FU32("shard", pull.shard, 0, WIRE_MAX_SHARDS - 1),
    FU32("vec", pull.vec, WIRE_VEC_PARAMS, WIRE_VEC_STATS),
    FU64("offset", pull.offset, 0, VEC - 1),
    FU64("length", pull.length, 1, WIRE_MAX_FLOATS),
    FU64("clock", pull.clock, 0, ANY64),
    FU32("encoding", pull.encoding, WIRE_ENC_F32, WIRE_ENC_Q8),
};
static const field_t F_PULL_REP[] = {
    FU32("shard", pull_rep.shard, 0, WIRE_MAX_SHARDS - 1),
    FU32("vec", pull_rep.vec, WIRE_VEC_PARAMS, WIRE_VEC_STATS),
    FU64("offset", pull_rep.offset, 0, VEC - 1),
    FU64("length", pull_rep.length, 1, WIRE_MAX_FLOATS),
    FU64("version", pull_rep.version, 0, ANY64),
    FU64("min_clock", pull_rep.min_clock, 0, ANY64),
    FU32("encoding", pull_rep.encoding, WIRE_ENC_F32, WIRE_ENC_Q8),
    {"segs", K_SEGS, C_NONE, M(pull_rep.segs), M(pull_rep.nsegs), 0, WIRE_MAX_SEGMENTS},
};
static const field_t F_PUSH[] = {
    FU32("worker", push.worker, 0, WIRE_MAX_WORKERS - 1),
    FU32("shard", push.shard, 0, WIRE_MAX_SHARDS - 1),
    FU64("offset", push.offset, 0, VEC - 1),
    FU64("length", push.length, 1, WIRE_MAX_FLOATS),
    FU64("clock", push.clock, 0, ANY64),
    FU64("version", push.version, 0, ANY64),
    FU32("samples", push.samples, 1, WIRE_MAX_BATCH),
    FU32("encoding", push.encoding, WIRE_ENC_F32, WIRE_ENC_Q8),
    {"segs", K_SEGS, C_NONE, M(push.segs), M(push.nsegs), 0, WIRE_MAX_SEGMENTS},
};
static const field_t F_PUSH_ACK[] = {
    FU32("shard", push_ack.shard, 0, WIRE_MAX_SHARDS - 1),
    FU32("vec", push_ack.vec, WIRE_VEC_PARAMS, WIRE_VEC_STATS),
    FU64("version", push_ack.version, 0, ANY64),
    FU64("min_clock", push_ack.min_clock, 0, ANY64),
};
static const field_t F_STATS_PUSH[] = {
    FU32("worker", stats_push.worker, 0, WIRE_MAX_WORKERS - 1),
    FU32("shard", stats_push.shard, 0, WIRE_MAX_SHARDS - 1),
    FU64("offset", stats_push.offset, 0, VEC - 1),
    FU64("length", stats_push.length, 1, WIRE_MAX_FLOATS),
    FU64("clock", stats_push.clock, 0, ANY64),
    FU32("mode", stats_push.mode, WIRE_STATS_AVERAGE, WIRE_STATS_REPLACE),
    FU32("samples", stats_push.samples, 1, WIRE_MAX_BATCH),
};
static const field_t F_PROGRESS[] = {
    FU32("worker", progress.worker, 0, WIRE_MAX_WORKERS - 1),
    FU32("chunk", progress.chunk, 0, ANY32),
    FU32("epoch", progress.epoch, 0, ANY32),
    FU64("clock", progress.clock, 0, ANY64),
    FU32("samples", progress.samples, 0, WIRE_MAX_CHUNK),
    FF64("loss_sum", progress.loss_sum),
    FF64("loss_low_sum", progress.loss_low_sum),
    FU32("correct_low", progress.correct_low, 0, WIRE_MAX_CHUNK),
    FU32("correct_aux", progress.correct_aux, 0, WIRE_MAX_CHUNK),
    FU64("staleness", progress.staleness, 0, ANY64),
};
static const field_t F_HEARTBEAT[] = {
    FU32("role", heartbeat.role, WIRE_ROLE_COORD, WIRE_ROLE_NODE),
    FU32("id", heartbeat.id, 0, WIRE_ID_COORD),
};
static const field_t F_BYE[] = {
    FU32("role", bye.role, WIRE_ROLE_COORD, WIRE_ROLE_NODE),
    FU32("id", bye.id, 0, WIRE_ID_COORD),
    FU32("reason", bye.reason, 0, 65535),
};
static const field_t F_EVAL_REQ[] = {
    FU32("eval", eval_req.eval, 0, ANY32),
    FU32("epoch", eval_req.epoch, 0, ANY32),
    FU32("split", eval_req.split, WIRE_SPLIT_TEST, WIRE_SPLIT_TRAIN),
    FU32("first", eval_req.first, 0, ANY32),
    FU32("count", eval_req.count, 1, WIRE_MAX_CHUNK),
};
static const field_t F_EVAL_REP[] = {
    FU32("eval", eval_rep.eval, 0, ANY32),
    FU32("worker", eval_rep.worker, 0, WIRE_MAX_WORKERS - 1),
    FU32("samples", eval_rep.samples, 0, WIRE_MAX_CHUNK),
    FF64("loss_low_sum", eval_rep.loss_low_sum),
    FU32("correct_low", eval_rep.correct_low, 0, WIRE_MAX_CHUNK),
    FU32("correct_aux", eval_rep.correct_aux, 0, WIRE_MAX_CHUNK),
    FU64("version", eval_rep.version, 0, ANY64),
};
static const field_t F_DONE[] = {
    FU32("reason", done.reason, WIRE_DONE_FINISHED, WIRE_DONE_ABORTED),
    FU32("epoch", done.epoch, 0, ANY32),
    FU64("step", done.step, 0, ANY64),
};
/* Frozen in every version: a peer must always be able to read why it was refused. */
static const field_t F_ERROR[] = {
    FU32("code", error.code, 1, 65535),
    FSTR("text", error.text, C_LINE, 0, WIRE_MAX_TEXT),
};

static const field_t F_MEMBERSHIP[] = {
    FU32("worker", membership.worker, 0, WIRE_MAX_WORKERS - 1),
    FU32("joined", membership.joined, 0, 1),
    FU64("step", membership.step, 0, ANY64),
};

static const field_t F_NODE_STATS[] = {
    FU32("node", node_stats.node, 0, WIRE_MAX_SHARDS - 1),
    FU64("pushes", node_stats.pushes, 0, ANY64),
    FU64("version", node_stats.version, 0, ANY64),
    FU64("pulls", node_stats.pulls, 0, ANY64),
    FU64("bytes_in", node_stats.bytes_in, 0, ANY64),
    FU64("bytes_out", node_stats.bytes_out, 0, ANY64),
    FU64("refused", node_stats.refused, 0, ANY64),
    FU64("max_staleness", node_stats.max_staleness, 0, ANY64),
    FU64("checkpoint_version", node_stats.checkpoint_version, 0, ANY64),
    FU64("checkpoint_ms", node_stats.checkpoint_ms, 0, ANY64),
    FU64("malformed", node_stats.rejected[WIRE_REJECT_MALFORMED], 0, ANY64),
    FU64("bad_version", node_stats.rejected[WIRE_REJECT_BAD_VERSION], 0, ANY64),
    FU64("too_large", node_stats.rejected[WIRE_REJECT_TOO_LARGE], 0, ANY64),
    FU64("out_of_range", node_stats.rejected[WIRE_REJECT_OUT_OF_RANGE], 0, ANY64),
    FU64("unregistered", node_stats.rejected[WIRE_REJECT_UNREGISTERED], 0, ANY64),
    FU64("non_finite", node_stats.rejected[WIRE_REJECT_NON_FINITE], 0, ANY64),
};

#define DEF(T) [WIRE_##T] = {#T, F_##T, (int)(sizeof F_##T / sizeof F_##T[0])}
static const msgdef_t MSGS[WIRE_TYPE_COUNT] = {
    DEF(HELLO),    DEF(WELCOME),    DEF(NODE_READY), DEF(LEASE_REQ), DEF(LEASE),
    DEF(CHUNK_DONE), DEF(PULL),     DEF(PULL_REP),   DEF(PUSH),      DEF(PUSH_ACK),
    DEF(STATS_PUSH), DEF(PROGRESS), DEF(HEARTBEAT),  DEF(BYE),       DEF(EVAL_REQ),
    DEF(EVAL_REP), DEF(DONE),       DEF(ERROR),      DEF(MEMBERSHIP),
    DEF(NODE_STATS),
};

static const msgdef_t *msgdef(uint64_t type) {
    return type > 0 && type < WIRE_TYPE_COUNT ? &MSGS[type] : NULL;
}

const char *wire_type_name(uint32_t type) {
    const msgdef_t *d = msgdef(type);
    return d ? d->name : "?";
}

const char *wire_err_name(uint32_t code) {
    switch (code) {
#define X(name, v, text) case v: return #name;
        WIRE_ERR_MAP(X)
#undef X
    default: return "?";
    }
}

uint32_t wire_error_code(int rc) {
    switch (rc) {
    case AUXPS_EVERSION: return WIRE_ERR_VERSION;
    case AUXPS_ENOMEM:
    case AUXPS_EIO: return WIRE_ERR_INTERNAL;
    default: return WIRE_ERR_BAD_MESSAGE;
    }
}

const char *wire_reject_name(uint32_t kind) {
    switch (kind) {
#define X(name, v, text) case v: return text;
        WIRE_REJECT_MAP(X)
#undef X
    default: return "?";
    }
}

uint32_t wire_reject_kind(int rc, const wire_msg_t *m) {
    if (m == NULL) return rc == AUXPS_ERANGE ? WIRE_REJECT_TOO_LARGE : WIRE_REJECT_MALFORMED;
    if (m->reject != WIRE_REJECT_MALFORMED) return m->reject; /* decided where it failed */
    if (rc == AUXPS_EVERSION) return WIRE_REJECT_BAD_VERSION;
    return rc == AUXPS_ERANGE ? WIRE_REJECT_OUT_OF_RANGE : WIRE_REJECT_MALFORMED;
}

uint32_t wire_reject_of_code(uint32_t code) {
    switch (code) {
    case WIRE_ERR_VERSION: return WIRE_REJECT_BAD_VERSION;
    case WIRE_ERR_NOT_REGISTERED: return WIRE_REJECT_UNREGISTERED;
    case WIRE_ERR_OUT_OF_RANGE: return WIRE_REJECT_OUT_OF_RANGE;
    case WIRE_ERR_NON_FINITE: return WIRE_REJECT_NON_FINITE;
    default: return WIRE_REJECT_MALFORMED;
    }
}

wire_msg_t wire_heartbeat(uint32_t role, uint32_t id) {
    wire_msg_t m;
    memset(&m, 0, sizeof m);
    m.type = WIRE_HEARTBEAT;
    m.heartbeat = (wire_heartbeat_t){role, id};
    return m;
}

int wire_has_payload(const wire_msg_t *m) {
    switch (m->type) {
    case WIRE_LEASE: return m->lease.mode == WIRE_LEASE_LIST;
    case WIRE_PULL_REP:
    case WIRE_PUSH:
    case WIRE_STATS_PUSH: return 1;
    default: return 0;
    }
}

size_t wire_segs_bytes(const wire_seg_t *segs, uint32_t nsegs) {
    size_t total = 0;
    for (uint32_t i = 0; i < nsegs; i++)
        total += segs[i].bits == 32 ? (size_t)segs[i].length * 4
                                    : ((size_t)segs[i].length * segs[i].bits + 7) / 8;
    return total;
}

void wire_msg_clear(wire_msg_t *m) {
    if (m == NULL) return;
    free(m->mem_[0]);
    free(m->mem_[1]);
    memset(m, 0, sizeof *m);
}

/* Decoded tables and the config text live in m->mem_, freed by wire_msg_clear. */
static void *msg_alloc(wire_msg_t *m, size_t size) {
    for (int i = 0; i < 2; i++)
        if (m->mem_[i] == NULL) return m->mem_[i] = calloc(1, size ? size : 1);
    return NULL; /* no message needs more than two */
}

/* ---- per-field checks, shared by decode and encode ---------------------------------- */

/* The error rc of entry i of table `name`, whose record was checked under the message's own
 * `where` (every check's sentence starts with it): the sentence is made to name the entry,
 * "where.name[i]...". A table of 50 segments then costs no formatting unless it fails. */
static int at_entry(int rc, const char *where, const char *name, uint32_t i, auxps_error_t *err) {
    if (err == NULL) return rc; /* auxps_error_set wrote nothing */
    const size_t w = strlen(where);
    const char *rest = strncmp(err->msg, where, w) == 0 ? err->msg + w : NULL;
    const char *tail = rest != NULL ? rest : err->msg;
    char msg[sizeof err->msg];
    const int h = snprintf(msg, sizeof msg, "%s.%s[%" PRIu32 "]%s", where, name, i, rest != NULL ? "" : ": ");
    if (h < 0) return rc;
    const size_t at = (size_t)h < sizeof msg ? (size_t)h : sizeof msg - 1, tl = strnlen(tail, sizeof msg - 1 - at);
    memcpy(msg + at, tail, tl);
    msg[at + tl] = '\0';
    memcpy(err->msg, msg, sizeof msg);
    return rc;
}

static int check_uint(const char *where, const field_t *f, uint64_t v, auxps_error_t *err) {
    if (v < f->min || v > f->max)
        return auxps_error_set(err, AUXPS_ERANGE, "%s.%s = %" PRIu64 ": expected %" PRIu64
                               "..%" PRIu64, where, f->name, v, f->min, f->max);
    return 0;
}

static int check_float(const char *where, const field_t *f, double v, auxps_error_t *err) {
    if (!isfinite(v) || (f->kind == K_F32 && fabs(v) > FLT_MAX))
        return auxps_error_set(err, AUXPS_ERANGE, "%s.%s = %g: expected a finite %s", where,
                               f->name, v, f->kind == K_F32 ? "float32" : "number");
    return 0;
}

static int byte_ok(int cls, unsigned char c) {
    switch (cls) {
    case C_TOKEN: return c > 0x20 && c < 0x7f;
    case C_LINE: return c >= 0x20 && c != 0x7f;
    default: return (c >= 0x20 && c != 0x7f) || c == '\t' || c == '\n' || c == '\r';
    }
}

static int check_string(const char *where, const field_t *f, const char *s, size_t len,
                        auxps_error_t *err) {
    if (len > f->max)
        return auxps_error_set(err, AUXPS_ERANGE, "%s.%s is %s%zu bytes long: at most %" PRIu64,
                               where, f->name, len > f->max + 1 ? "" : "at least ", len, f->max);
    if (len < f->min)
        return auxps_error_set(err, AUXPS_ERANGE, "%s.%s is empty", where, f->name);
    for (size_t i = 0; i < len; i++)
        if (!byte_ok(f->cls, (unsigned char)s[i]))
            return auxps_error_set(err, AUXPS_EFORMAT, "%s.%s: byte 0x%02x at %zu is not allowed",
                                   where, f->name, (unsigned char)s[i], i);
    return 0;
}

static const char *objtype(const msgpack_object *o) {
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: return "nil";
    case MSGPACK_OBJECT_BOOLEAN: return "a boolean";
    case MSGPACK_OBJECT_POSITIVE_INTEGER: return "an unsigned integer";
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: return "a negative integer";
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: return "a float";
    case MSGPACK_OBJECT_STR: return "a string";
    case MSGPACK_OBJECT_ARRAY: return "an array";
    case MSGPACK_OBJECT_MAP: return "a map";
    case MSGPACK_OBJECT_BIN: return "a bin";
    default: return "an ext";
    }
}

static int wrong_type(const char *where, const char *name, const char *want,
                      const msgpack_object *o, auxps_error_t *err) {
    return auxps_error_set(err, AUXPS_EFORMAT, "%s.%s: expected %s, got %s", where, name, want,
                           objtype(o));
}

/* Reads an unsigned integer: another type is a format error, a negative one a range error. */
static int get_uint(const char *where, const char *name, const msgpack_object *o, uint64_t *v,
                    auxps_error_t *err) {
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        return auxps_error_set(err, AUXPS_ERANGE, "%s.%s = %" PRId64 ": must not be negative",
                               where, name, o->via.i64);
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return wrong_type(where, name, "an unsigned integer", o, err);
    *v = o->via.u64;
    return 0;
}

/* ---- decoding ------------------------------------------------------------------------ */

static uint64_t read_be(const uint8_t *p, int width) {
    uint64_t v = 0;
    for (int i = 0; i < width; i++) v = v << 8 | p[i];
    return v;
}

/* Walks one MessagePack value at p[*pos..n) without allocating, and fails unless every
 * declared length and element count fits in the bytes actually present and nesting stays
 * within MAX_DEPTH. msgpack-c sizes an array by its declared count before reading it, so
 * without this a 5-byte frame asks it for 128 GiB. */
/* scan_value's reason for a declared count or length that no header frame can hold: the
 * decoder counts it as too large rather than truncated. */
static const char WHY_HUGE[] = "it declares more than a header frame can hold";

static int scan_value(const uint8_t *p, size_t n, size_t *pos, int depth, const char **why) {
    if (*pos >= n) { *why = "it is truncated"; return -1; }
    uint8_t b = p[(*pos)++];
    int lenw = 0, fixed = 0, extra = 0, container = 0;
    uint64_t count = 0;
    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) return 0;
    if (b <= 0x8f) { count = 2u * (b & 0x0f); container = 1; }
    else if (b <= 0x9f) { count = b & 0x0f; container = 1; }
    else if (b <= 0xbf) fixed = b & 0x1f;
    else switch (b) {
    case 0xc4: case 0xd9: lenw = 1; break;
    case 0xc5: case 0xda: lenw = 2; break;
    case 0xc6: case 0xdb: lenw = 4; break;
    case 0xc7: lenw = 1; extra = 1; break;
    case 0xc8: lenw = 2; extra = 1; break;
    case 0xc9: lenw = 4; extra = 1; break;
    case 0xca: case 0xce: case 0xd2: fixed = 4; break;
    case 0xcb: case 0xcf: case 0xd3: fixed = 8; break;
    case 0xcc: case 0xd0: fixed = 1; break;
    case 0xcd: case 0xd1: fixed = 2; break;
    case 0xd4: fixed = 2; break;
    case 0xd5: fixed = 3; break;
    case 0xd6: fixed = 5; break;
    case 0xd7: fixed = 9; break;
    case 0xd8: fixed = 17; break;
    case 0xdc: lenw = 2; container = 1; break;
    case 0xdd: lenw = 4; container = 1; break;
    case 0xde: lenw = 2; container = 2; break;
    case 0xdf: lenw = 4; container = 2; break;
    default: *why = "it holds the reserved byte 0xc1"; return -1;
    }
    if (lenw) {
        if (n - *pos < (size_t)lenw) { *why = "it is truncated"; return -1; }
        uint64_t len = read_be(p + *pos, lenw);
        *pos += lenw;
        if (container) count = container == 2 ? 2 * len : len;
        else fixed = -1, count = len + extra; /* str, bin, ext: count bytes follow */
    }
    if (container) {
        if (depth >= MAX_DEPTH) { *why = "it is nested too deep"; return -1; }
        if (count > WIRE_MAX_HEADER) { *why = WHY_HUGE; return -1; }
        if (count > n - *pos) { *why = "it declares more elements than it has bytes"; return -1; }
        for (uint64_t i = 0; i < count; i++)
            if (scan_value(p, n, pos, depth + 1, why) < 0) return -1;
        return 0;
    }
    uint64_t body = fixed >= 0 ? (uint64_t)fixed : count;
    if (body > WIRE_MAX_HEADER) { *why = WHY_HUGE; return -1; }
    if (body > n - *pos) { *why = "it is truncated"; return -1; }
    *pos += body;
    return 0;
}

static int decode_table(const msgpack_object *o, const field_t *f, const char *where,
                        void *base, wire_msg_t *m, auxps_error_t *err);

/* A field that declares a size (a length or a count of values or samples): over its limit,
 * the message is too large rather than out of range. */
static int is_size(const field_t *f) {
    return strcmp(f->name, "length") == 0 || strcmp(f->name, "stats_length") == 0 ||
           strcmp(f->name, "count") == 0 || strcmp(f->name, "samples") == 0;
}

/* Decodes the fields of one record (a message body, a shard, a segment) from items. */
static int decode_record(const msgpack_object *items, const field_t *f, int n, const char *where,
                         void *base, wire_msg_t *m, auxps_error_t *err) {
    for (int i = 0; i < n; i++) {
        const msgpack_object *o = &items[i];
        char *dst = (char *)base + f[i].off;
        uint64_t u = 0;
        int rc;
        switch (f[i].kind) {
        case K_U32:
        case K_U64:
            if ((rc = get_uint(where, f[i].name, o, &u, err)) < 0) return rc;
            if ((rc = check_uint(where, &f[i], u, err)) < 0) {
                if (u > f[i].max && is_size(&f[i])) m->reject = WIRE_REJECT_TOO_LARGE;
                return rc;
            }
            if (f[i].kind == K_U32) *(uint32_t *)dst = (uint32_t)u;
            else *(uint64_t *)dst = u;
            break;
        case K_F32:
        case K_F64:
            if (o->type != MSGPACK_OBJECT_FLOAT32 && o->type != MSGPACK_OBJECT_FLOAT64)
                return wrong_type(where, f[i].name, "a float", o, err);
            if ((rc = check_float(where, &f[i], o->via.f64, err)) < 0) {
                if (!isfinite(o->via.f64)) m->reject = WIRE_REJECT_NON_FINITE;
                return rc;
            }
            if (f[i].kind == K_F32) *(float *)dst = (float)o->via.f64;
            else *(double *)dst = o->via.f64;
            break;
        case K_STR:
        case K_CONFIG:
            if (o->type != MSGPACK_OBJECT_STR) return wrong_type(where, f[i].name, "a string", o, err);
            if ((rc = check_string(where, &f[i], o->via.str.ptr, o->via.str.size, err)) < 0) {
                if (o->via.str.size > f[i].max) m->reject = WIRE_REJECT_TOO_LARGE;
                return rc;
            }
            if (f[i].kind == K_STR) {
                memcpy(dst, o->via.str.ptr, o->via.str.size);
                dst[o->via.str.size] = '\0';
            } else {
                char *s = msg_alloc(m, o->via.str.size + 1);
                if (s == NULL) return auxps_error_set(err, AUXPS_ENOMEM, "%s.%s: out of memory",
                                                      where, f[i].name);
                memcpy(s, o->via.str.ptr, o->via.str.size);
                *(const char **)dst = s;
            }
            break;
        default:
            if ((rc = decode_table(o, &f[i], where, base, m, err)) < 0) return rc;
            break;
        }
    }
    return 0;
}

/* Decodes a shard or segment table: an array of fixed-size arrays. */
static int decode_table(const msgpack_object *o, const field_t *f, const char *where,
                        void *base, wire_msg_t *m, auxps_error_t *err) {
    int shards = f->kind == K_SHARDS;
    const field_t *sub = shards ? SHARD_FIELDS : SEG_FIELDS;
    int nsub = shards ? NSHARD_FIELDS : NSEG_FIELDS;
    size_t esize = shards ? sizeof(wire_shard_t) : sizeof(wire_seg_t);
    if (o->type != MSGPACK_OBJECT_ARRAY) return wrong_type(where, f->name, "an array", o, err);
    uint32_t count = o->via.array.size;
    if (count > f->max) m->reject = WIRE_REJECT_TOO_LARGE;
    if (count < f->min || count > f->max)
        return auxps_error_set(err, AUXPS_ERANGE, "%s.%s has %" PRIu32 " entries: expected %"
                               PRIu64 "..%" PRIu64, where, f->name, count, f->min, f->max);
    char *arr = NULL;
    if (count > 0 && (arr = msg_alloc(m, count * esize)) == NULL)
        return auxps_error_set(err, AUXPS_ENOMEM, "%s.%s: out of memory", where, f->name);
    for (uint32_t i = 0; i < count; i++) {
        const msgpack_object *e = &o->via.array.ptr[i];
        if (e->type != MSGPACK_OBJECT_ARRAY || e->via.array.size != (uint32_t)nsub)
            return auxps_error_set(err, AUXPS_EFORMAT, "%s.%s[%" PRIu32 "]: expected an array of %d fields",
                                   where, f->name, i, nsub);
        int rc = decode_record(e->via.array.ptr, sub, nsub, where, arr + i * esize, m, err);
        if (rc < 0) return at_entry(rc, where, f->name, i, err);
    }
    *(const void **)((char *)base + f->off) = arr;
    *(uint32_t *)((char *)base + f->off2) = count;
    return 0;
}

/* ---- cross-field rules, shared by decode and encode ---------------------------------- */

static int check_range(const char *where, const char *what, uint64_t offset, uint64_t length,
                       uint64_t limit, auxps_error_t *err) {
    if (offset > limit || length > limit - offset)
        return auxps_error_set(err, AUXPS_ERANGE, "%s: %s offset %" PRIu64 " + length %" PRIu64
                               " exceeds %" PRIu64, where, what, offset, length, limit);
    return 0;
}

static int check_segs(const char *where, uint32_t encoding, const wire_seg_t *segs,
                      uint32_t nsegs, uint64_t length, auxps_error_t *err) {
    if (encoding == WIRE_ENC_F32) {
        if (nsegs != 0)
            return auxps_error_set(err, AUXPS_EINVAL, "%s: encoding f32 takes no segments, got %"
                                   PRIu32, where, nsegs);
        return 0;
    }
    if (nsegs == 0)
        return auxps_error_set(err, AUXPS_EINVAL, "%s: a coded payload needs segments", where);
    uint64_t sum = 0;
    for (uint32_t i = 0; i < nsegs; i++) {
        const wire_seg_t *s = &segs[i];
        if (s->bits > 8 && s->bits != 32)
            return auxps_error_set(err, AUXPS_ERANGE, "%s.segs[%" PRIu32 "].bits = %" PRIu32
                                   ": expected 1..8 or 32", where, i, s->bits);
        if (encoding == WIRE_ENC_Q8 && s->bits != 8 && s->bits != 32)
            return auxps_error_set(err, AUXPS_EINVAL, "%s.segs[%" PRIu32 "].bits = %" PRIu32
                                   ": encoding q8 allows 8 or 32", where, i, s->bits);
        if (s->bits == 32 && (s->lo != 0.0f || s->step != 0.0f))
            return auxps_error_set(err, AUXPS_EINVAL, "%s.segs[%" PRIu32 "]: a float32 segment "
                                   "must have lo = step = 0", where, i);
        sum += s->length;
    }
    if (sum != length)
        return auxps_error_set(err, AUXPS_EINVAL, "%s: segments hold %" PRIu64 " values, length is %"
                               PRIu64, where, sum, length);
    return 0;
}

static int check_samples(const char *where, uint32_t samples, uint32_t low, uint32_t aux,
                         auxps_error_t *err) {
    if (low > samples || aux > samples)
        return auxps_error_set(err, AUXPS_EINVAL, "%s: %" PRIu32 " and %" PRIu32
                               " correct out of %" PRIu32 " samples", where, low, aux, samples);
    return 0;
}

static int check_peer_id(const char *where, uint32_t role, uint32_t id, auxps_error_t *err) {
    uint32_t lo = 0, hi = WIRE_MAX_WORKERS - 1;
    if (role == WIRE_ROLE_COORD) lo = hi = WIRE_ID_COORD;
    if (role == WIRE_ROLE_NODE) hi = WIRE_MAX_SHARDS - 1;
    if (id < lo || id > hi)
        return auxps_error_set(err, AUXPS_EINVAL, "%s.id = %" PRIu32 " is not an id of role %"
                               PRIu32, where, id, role);
    return 0;
}

/* The rules of the "Rules" line under each message table of PROTOCOL.md. */
static int check_msg(const wire_msg_t *m, auxps_error_t *err) {
    const char *w = wire_type_name(m->type);
    int rc = 0;
    switch (m->type) {
    case WIRE_HELLO: {
        const wire_hello_t *h = &m->hello;
        if ((h->role == WIRE_ROLE_NODE) != (h->endpoint[0] != '\0'))
            return auxps_error_set(err, AUXPS_EINVAL, "HELLO: a node must give its endpoint, a "
                                   "worker must not");
        if (!(h->encodings & (1u << WIRE_ENC_F32)))
            return auxps_error_set(err, AUXPS_EINVAL, "HELLO.encodings = %" PRIu32
                                   " lacks f32, which every peer must support", h->encodings);
        return 0;
    }
    case WIRE_WELCOME: {
        const wire_welcome_t *x = &m->welcome;
        if (x->timeout_ms < 3 * x->heartbeat_ms)
            return auxps_error_set(err, AUXPS_EINVAL, "WELCOME: timeout_ms %" PRIu32 " is less "
                                   "than 3 heartbeats of %" PRIu32, x->timeout_ms, x->heartbeat_ms);
        if (x->consistency != WIRE_CONS_SSP && x->staleness != 0)
            return auxps_error_set(err, AUXPS_EINVAL, "WELCOME: staleness %" PRIu32 " needs "
                                   "consistency ssp", x->staleness);
        if (x->role == WIRE_ROLE_NODE && x->id >= x->nshards)
            return auxps_error_set(err, AUXPS_EINVAL, "WELCOME: node id %" PRIu32 " has no shard "
                                   "(%" PRIu32 " shards)", x->id, x->nshards);
        uint64_t end = 0, send = 0;
        for (uint32_t i = 0; i < x->nshards; i++) {
            const wire_shard_t *s = &x->shards[i];
            if (s->id != i || s->offset != end || s->stats_offset != send)
                return auxps_error_set(err, AUXPS_EINVAL, "WELCOME.shards[%" PRIu32 "]: shards "
                                       "must be in id order and tile both vectors with no gap",
                                       i);
            end += s->length;
            send += s->stats_length;
        }
        if (end != x->num_params || send != x->num_stats)
            return auxps_error_set(err, AUXPS_EINVAL, "WELCOME: shards cover %" PRIu64 " params and %"
                                   PRIu64 " stats, not %" PRIu64 " and %" PRIu64, end, send,
                                   x->num_params, x->num_stats);
        return 0;
    }
    case WIRE_NODE_READY:
        if ((rc = check_range(w, "params", m->node_ready.offset, m->node_ready.length, VEC, err)))
            return rc;
        return check_range(w, "stats", m->node_ready.stats_offset, m->node_ready.stats_length,
                           VEC, err);
    case WIRE_LEASE: {
        const wire_lease_t *l = &m->lease;
        if ((rc = check_range(w, "index", l->first, l->count, (uint64_t)UINT32_MAX + 1, err)))
            return rc;
        if ((l->mode == WIRE_LEASE_WAIT) != (l->count == 0) ||
            (l->mode == WIRE_LEASE_WAIT && l->first != 0))
            return auxps_error_set(err, AUXPS_EINVAL, "LEASE: mode %" PRIu32 " with first %" PRIu32
                                   " count %" PRIu32 " (wait has none, range and list at least one)",
                                   l->mode, l->first, l->count);
        return 0;
    }
    case WIRE_PULL:
        if ((rc = check_range(w, "vector", m->pull.offset, m->pull.length, VEC, err))) return rc;
        if (m->pull.encoding == WIRE_ENC_Q8 ||
            (m->pull.vec == WIRE_VEC_STATS && m->pull.encoding != WIRE_ENC_F32))
            return auxps_error_set(err, AUXPS_EINVAL, "PULL.encoding = %" PRIu32 " is not allowed "
                                   "(params: f32 or kbit; stats: f32)", m->pull.encoding);
        return 0;
    case WIRE_PULL_REP: {
        const wire_pull_rep_t *r = &m->pull_rep;
        if ((rc = check_range(w, "vector", r->offset, r->length, VEC, err))) return rc;
        if (r->encoding == WIRE_ENC_Q8 || (r->vec == WIRE_VEC_STATS && r->encoding != WIRE_ENC_F32))
            return auxps_error_set(err, AUXPS_EINVAL, "PULL_REP.encoding = %" PRIu32 " is not "
                                   "allowed (params: f32 or kbit; stats: f32)", r->encoding);
        return check_segs(w, r->encoding, r->segs, r->nsegs, r->length, err);
    }
    case WIRE_PUSH: {
        const wire_push_t *p = &m->push;
        if ((rc = check_range(w, "vector", p->offset, p->length, VEC, err))) return rc;
        if (p->encoding == WIRE_ENC_KBIT)
            return auxps_error_set(err, AUXPS_EINVAL, "PUSH.encoding = kbit is not allowed "
                                   "(f32 or q8)");
        return check_segs(w, p->encoding, p->segs, p->nsegs, p->length, err);
    }
    case WIRE_STATS_PUSH:
        return check_range(w, "vector", m->stats_push.offset, m->stats_push.length, VEC, err);
    case WIRE_PROGRESS:
        return check_samples(w, m->progress.samples, m->progress.correct_low,
                             m->progress.correct_aux, err);
    case WIRE_HEARTBEAT: return check_peer_id(w, m->heartbeat.role, m->heartbeat.id, err);
    case WIRE_BYE: return check_peer_id(w, m->bye.role, m->bye.id, err);
    case WIRE_EVAL_REQ:
        return check_range(w, "index", m->eval_req.first, m->eval_req.count,
                           (uint64_t)UINT32_MAX + 1, err);
    case WIRE_EVAL_REP:
        return check_samples(w, m->eval_rep.samples, m->eval_rep.correct_low,
                             m->eval_rep.correct_aux, err);
    default: return 0;
    }
}

/* Bytes the payload frame of a checked message must have. */
static size_t payload_bytes(const wire_msg_t *m) {
    switch (m->type) {
    case WIRE_LEASE: return (size_t)m->lease.count * 4;
    case WIRE_PULL_REP:
        return m->pull_rep.encoding == WIRE_ENC_F32 ? m->pull_rep.length * 4
                                                    : wire_segs_bytes(m->pull_rep.segs, m->pull_rep.nsegs);
    case WIRE_PUSH:
        return m->push.encoding == WIRE_ENC_F32 ? m->push.length * 4
                                                : wire_segs_bytes(m->push.segs, m->push.nsegs);
    case WIRE_STATS_PUSH: return m->stats_push.length * 4;
    default: return 0;
    }
}

static int check_payload(const wire_msg_t *m, int npayload, size_t size, auxps_error_t *err) {
    const char *w = wire_type_name(m->type);
    int want = wire_has_payload(m);
    if (npayload > 1)
        return auxps_error_set(err, AUXPS_EFORMAT, "%s: %d payload frames, at most 1", w, npayload);
    if (want && npayload == 0)
        return auxps_error_set(err, AUXPS_EFORMAT, "%s: the payload frame is missing", w);
    if (!want && npayload != 0)
        return auxps_error_set(err, AUXPS_EFORMAT, "%s: takes no payload frame, got %zu bytes", w,
                               size);
    if (want && size != payload_bytes(m))
        return auxps_error_set(err, AUXPS_EFORMAT, "%s: payload frame is %zu bytes, the header "
                               "declares %zu", w, size, payload_bytes(m));
    return 0;
}

static int decode_header(wire_msg_t *m, const void *hdr, size_t hdr_size, const void *payload,
                         size_t payload_size, int npayload, msgpack_unpacked *u,
                         auxps_error_t *err) {
    if (hdr == NULL || hdr_size == 0)
        return auxps_error_set(err, AUXPS_EFORMAT, "header frame is empty");
    if (hdr_size > WIRE_MAX_HEADER) {
        m->reject = WIRE_REJECT_TOO_LARGE;
        return auxps_error_set(err, AUXPS_ERANGE, "header frame is %zu bytes: at most %u",
                               hdr_size, WIRE_MAX_HEADER);
    }
    size_t pos = 0;
    const char *why = NULL;
    if (scan_value(hdr, hdr_size, &pos, 0, &why) < 0) {
        if (why == WHY_HUGE) m->reject = WIRE_REJECT_TOO_LARGE;
        return auxps_error_set(err, AUXPS_EFORMAT, "header is not MessagePack: %s", why);
    }
    if (pos != hdr_size)
        return auxps_error_set(err, AUXPS_EFORMAT, "header has %zu bytes after its value",
                               hdr_size - pos);
    size_t off = 0;
    msgpack_unpack_return ur = msgpack_unpack_next(u, hdr, hdr_size, &off);
    if (ur == MSGPACK_UNPACK_NOMEM_ERROR)
        return auxps_error_set(err, AUXPS_ENOMEM, "header: out of memory");
    if (ur != MSGPACK_UNPACK_SUCCESS || off != hdr_size)
        return auxps_error_set(err, AUXPS_EFORMAT, "header is not MessagePack");

    const msgpack_object *root = &u->data;
    if (root->type != MSGPACK_OBJECT_ARRAY || root->via.array.size < 4)
        return auxps_error_set(err, AUXPS_EFORMAT, "header is not an array of at least 4 fields");
    const msgpack_object *it = root->via.array.ptr;
    uint32_t nitems = root->via.array.size;
    if (it[0].type != MSGPACK_OBJECT_STR || it[0].via.str.size != MAGIC_LEN ||
        memcmp(it[0].via.str.ptr, WIRE_MAGIC, MAGIC_LEN) != 0)
        return auxps_error_set(err, AUXPS_EFORMAT, "header does not start with \"" WIRE_MAGIC "\"");
    if (it[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return wrong_type("header", "version", "an unsigned integer", &it[1], err);
    uint64_t version = it[1].via.u64, type = 0, rid = 0;
    m->version = version > UINT32_MAX ? UINT32_MAX : (uint32_t)version;
    /* Type and rid are read early, when they look right, so that even a refused message can
     * be named in the ERROR reply. */
    if (it[2].type == MSGPACK_OBJECT_POSITIVE_INTEGER && it[2].via.u64 <= UINT32_MAX)
        m->type = (uint32_t)(type = it[2].via.u64);
    if (it[3].type == MSGPACK_OBJECT_POSITIVE_INTEGER && it[3].via.u64 <= UINT32_MAX)
        m->rid = (uint32_t)(rid = it[3].via.u64);
    const msgdef_t *d = msgdef(type);
    int is_error = type == WIRE_ERROR && nitems == 4u + (uint32_t)MSGS[WIRE_ERROR].n;
    if (version != WIRE_VERSION && !is_error)
        return auxps_error_set(err, AUXPS_EVERSION, "header: protocol version %" PRIu64
                               ", this peer speaks %u", version, WIRE_VERSION);

    if (it[2].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return wrong_type("header", "type", "an unsigned integer", &it[2], err);
    if (d == NULL) {
        m->type = 0;
        return auxps_error_set(err, AUXPS_EFORMAT, "header: unknown message type %" PRIu64, type);
    }
    if (nitems != 4u + (uint32_t)d->n)
        return auxps_error_set(err, AUXPS_EFORMAT, "%s has %" PRIu32 " fields, expected %d",
                               d->name, nitems, 4 + d->n);
    uint64_t r = 0;
    int rc = get_uint(d->name, "rid", &it[3], &r, err);
    if (rc < 0) return rc;
    if (r > UINT32_MAX)
        return auxps_error_set(err, AUXPS_ERANGE, "%s.rid = %" PRIu64 ": expected 0..%" PRIu32,
                               d->name, r, UINT32_MAX);
    if ((rc = decode_record(it + 4, d->f, d->n, d->name, m, m, err)) < 0) return rc;
    if ((rc = check_msg(m, err)) < 0) return rc;
    if ((rc = check_payload(m, npayload, payload_size, err)) < 0) return rc;
    if (npayload) {
        m->payload = payload;
        m->payload_size = payload_size;
    }
    return 0;
}

int wire_decode(wire_msg_t *m, const void *hdr, size_t hdr_size, const void *payload,
                size_t payload_size, int npayload, auxps_error_t *err) {
    if (m == NULL) return auxps_error_set(err, AUXPS_EINVAL, "wire_decode: NULL message");
    memset(m, 0, sizeof *m);
    if (npayload < 0 || (npayload > 0 && payload == NULL && payload_size > 0))
        return auxps_error_set(err, AUXPS_EINVAL, "wire_decode: bad payload arguments");
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    int rc = decode_header(m, hdr, hdr_size, payload, payload_size, npayload, &u, err);
    msgpack_unpacked_destroy(&u);
    if (rc < 0) {
        uint32_t version = m->version, type = m->type, rid = m->rid, reject = m->reject;
        wire_msg_clear(m);
        m->version = version;
        m->type = type;
        m->rid = rid;
        m->reject = reject;
    }
    return rc;
}

/* ---- encoding ------------------------------------------------------------------------ */

static int encode_record(msgpack_packer *pk, const field_t *f, int n, const char *where,
                         const void *base, auxps_error_t *err) {
    for (int i = 0; i < n; i++) {
        const char *src = (const char *)base + f[i].off;
        int rc = 0, bad = 0;
        switch (f[i].kind) {
        case K_U32:
        case K_U64: {
            uint64_t v = f[i].kind == K_U32 ? *(const uint32_t *)src : *(const uint64_t *)src;
            if ((rc = check_uint(where, &f[i], v, err)) < 0) return rc;
            bad = msgpack_pack_uint64(pk, v);
            break;
        }
        case K_F32:
        case K_F64: {
            double v = f[i].kind == K_F32 ? *(const float *)src : *(const double *)src;
            if ((rc = check_float(where, &f[i], v, err)) < 0) return rc;
            bad = f[i].kind == K_F32 ? msgpack_pack_float(pk, (float)v) : msgpack_pack_double(pk, v);
            break;
        }
        case K_STR:
        case K_CONFIG: {
            const char *s = f[i].kind == K_STR ? src : *(const char *const *)src;
            if (s == NULL)
                return auxps_error_set(err, AUXPS_EINVAL, "%s.%s is NULL", where, f[i].name);
            size_t len = strnlen(s, f[i].max + 1);
            if ((rc = check_string(where, &f[i], s, len, err)) < 0) return rc;
            bad = msgpack_pack_str(pk, len) || msgpack_pack_str_body(pk, s, len);
            break;
        }
        default: {
            int shards = f[i].kind == K_SHARDS;
            const char *arr = *(const char *const *)src;
            uint32_t count = *(const uint32_t *)((const char *)base + f[i].off2);
            if (count < f[i].min || count > f[i].max)
                return auxps_error_set(err, AUXPS_ERANGE, "%s.%s has %" PRIu32 " entries: expected %"
                                       PRIu64 "..%" PRIu64, where, f[i].name, count, f[i].min,
                                       f[i].max);
            if (count > 0 && arr == NULL)
                return auxps_error_set(err, AUXPS_EINVAL, "%s.%s is NULL", where, f[i].name);
            const field_t *sub = shards ? SHARD_FIELDS : SEG_FIELDS;
            int nsub = shards ? NSHARD_FIELDS : NSEG_FIELDS;
            size_t esize = shards ? sizeof(wire_shard_t) : sizeof(wire_seg_t);
            if (msgpack_pack_array(pk, count)) bad = 1;
            for (uint32_t j = 0; j < count && !bad; j++) {
                if (msgpack_pack_array(pk, (size_t)nsub)) bad = 1;
                else if ((rc = encode_record(pk, sub, nsub, where, arr + j * esize, err)) < 0)
                    return at_entry(rc, where, f[i].name, j, err);
            }
            break;
        }
        }
        if (bad) return auxps_error_set(err, AUXPS_ENOMEM, "%s: out of memory while packing", where);
    }
    return 0;
}

int wire_encode(const wire_msg_t *m, void **hdr, size_t *size, auxps_error_t *err) {
    if (m == NULL || hdr == NULL || size == NULL)
        return auxps_error_set(err, AUXPS_EINVAL, "wire_encode: NULL argument");
    *hdr = NULL;
    *size = 0;
    const msgdef_t *d = msgdef(m->type);
    if (d == NULL)
        return auxps_error_set(err, AUXPS_EINVAL, "wire_encode: unknown message type %" PRIu32,
                               m->type);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    int rc = 0;
    if (msgpack_pack_array(&pk, 4 + (size_t)d->n) || msgpack_pack_str(&pk, MAGIC_LEN) ||
        msgpack_pack_str_body(&pk, WIRE_MAGIC, MAGIC_LEN) || msgpack_pack_uint32(&pk, WIRE_VERSION) ||
        msgpack_pack_uint32(&pk, m->type) || msgpack_pack_uint32(&pk, m->rid)) {
        rc = auxps_error_set(err, AUXPS_ENOMEM, "%s: out of memory while packing", d->name);
        goto fail;
    }
    if ((rc = encode_record(&pk, d->f, d->n, d->name, m, err)) < 0) goto fail;
    if ((rc = check_msg(m, err)) < 0) goto fail;
    int npayload = wire_has_payload(m) || m->payload != NULL || m->payload_size != 0;
    if ((rc = check_payload(m, npayload, m->payload_size, err)) < 0) goto fail;
    if (wire_has_payload(m) && m->payload == NULL) {
        rc = auxps_error_set(err, AUXPS_EINVAL, "%s: payload is NULL", d->name);
        goto fail;
    }
    if (sb.size > WIRE_MAX_HEADER) {
        rc = auxps_error_set(err, AUXPS_ERANGE, "%s: header would be %zu bytes: at most %u",
                             d->name, sb.size, WIRE_MAX_HEADER);
        goto fail;
    }
    *hdr = sb.data;
    *size = sb.size;
    return 0;
fail:
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

/* ---- ZeroMQ -------------------------------------------------------------------------- */

static int zmq_fail(const char *what, auxps_error_t *err) {
    int e = zmq_errno();
    auxps_error_set(err, AUXPS_EIO, "%s: %s", what, zmq_strerror(e));
    errno = e;
    return AUXPS_EIO;
}

int wire_socket_limits(void *sock) {
    int64_t max = WIRE_MAX_PAYLOAD;
    return zmq_setsockopt(sock, ZMQ_MAXMSGSIZE, &max, sizeof max) == 0 ? 0 : AUXPS_EIO;
}

void wire_free_heap(void *data, void *hint) {
    (void)hint;
    free(data);
}

int wire_send(void *sock, const void *route, size_t route_size, const wire_msg_t *m,
              wire_free_fn *ffn, void *hint, int flags, auxps_error_t *err) {
    void *hdr = NULL;
    size_t hdr_size = 0;
    zmq_msg_t hm, pm;
    int have_hm = 0, have_pm = 0, rc;
    int has_payload = m != NULL && wire_has_payload(m);
    void *payload = m != NULL ? (void *)m->payload : NULL;

    if (sock == NULL || m == NULL || (route == NULL) != (route_size == 0) ||
        route_size > WIRE_MAX_ROUTE) {
        rc = auxps_error_set(err, AUXPS_EINVAL, "wire_send: bad socket, message or route");
        goto fail;
    }
    if ((rc = wire_encode(m, &hdr, &hdr_size, err)) < 0) goto fail;
    if (zmq_msg_init_data(&hm, hdr, hdr_size, wire_free_heap, NULL) != 0) {
        rc = zmq_fail("wire_send: header", err);
        goto fail;
    }
    hdr = NULL; /* hm owns it now */
    have_hm = 1;
    if (has_payload) {
        if (ffn != NULL) {
            if (zmq_msg_init_data(&pm, payload, m->payload_size, ffn, hint) != 0) {
                rc = zmq_fail("wire_send: payload", err);
                goto fail;
            }
            ffn = NULL; /* pm owns the payload now: closing it calls ffn */
        } else {
            if (zmq_msg_init_size(&pm, m->payload_size) != 0) {
                rc = zmq_fail("wire_send: payload", err);
                goto fail;
            }
            memcpy(zmq_msg_data(&pm), m->payload, m->payload_size);
        }
        have_pm = 1;
    }
    /* Once the first frame is queued ZeroMQ accepts the rest of the message, so a failure
     * after it can only come from a terminated context. A signal (a worker's SIGTERM) may
     * interrupt a blocking send before anything is queued: it is sent again. */
    int sent;
    if (route != NULL) {
        while ((sent = zmq_send(sock, route, route_size, ZMQ_SNDMORE | flags)) < 0 && zmq_errno() == EINTR) {}
        if (sent < 0) {
            rc = zmq_fail("wire_send: route", err);
            goto fail;
        }
    }
    while ((sent = zmq_msg_send(&hm, sock, (has_payload ? ZMQ_SNDMORE : 0) | flags)) < 0 && zmq_errno() == EINTR) {}
    if (sent < 0) {
        rc = zmq_fail("wire_send: header", err);
        goto fail;
    }
    have_hm = 0;
    while (have_pm && (sent = zmq_msg_send(&pm, sock, flags)) < 0 && zmq_errno() == EINTR) {}
    if (have_pm && sent < 0) {
        rc = zmq_fail("wire_send: payload", err);
        goto fail;
    }
    if (ffn != NULL) ffn(payload, hint); /* not handed to ZeroMQ: keep "exactly once" */
    return 0;
fail: {
        int e = errno;
        if (have_hm) zmq_msg_close(&hm);
        if (have_pm) zmq_msg_close(&pm);
        free(hdr);
        if (ffn != NULL) ffn(payload, hint);
        errno = e;
        return rc;
    }
}

int wire_send_error(void *sock, const void *route, size_t route_size, uint32_t rid,
                    uint32_t code, const char *text, auxps_error_t *err) {
    wire_msg_t m;
    memset(&m, 0, sizeof m);
    m.type = WIRE_ERROR;
    m.rid = rid;
    m.error.code = code;
    size_t len = text ? strnlen(text, WIRE_MAX_TEXT) : 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        m.error.text[i] = c < 0x20 || c == 0x7f ? '?' : (char)c;
    }
    return wire_send(sock, route, route_size, &m, NULL, NULL, 0, err);
}

void wire_in_close(wire_in_t *in) {
    if (in == NULL) return;
    if (in->held & 1) zmq_msg_close(&in->hdr);
    if (in->held & 2) zmq_msg_close(&in->payload);
    in->held = 0;
    in->npayload = 0;
}

int wire_recv(void *sock, int router, wire_in_t *in, int flags, auxps_error_t *err) {
    if (sock == NULL || in == NULL)
        return auxps_error_set(err, AUXPS_EINVAL, "wire_recv: NULL argument");
    wire_in_close(in);
    in->route_size = 0;
    int rc = 0, nframes = 0, more = 1;
    while (more) {
        zmq_msg_t part;
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, sock, nframes == 0 ? flags : 0) < 0) {
            int e = zmq_errno();
            zmq_msg_close(&part);
            wire_in_close(in);
            errno = e;
            return zmq_fail(nframes == 0 ? "wire_recv" : "wire_recv: mid-message", err);
        }
        more = zmq_msg_more(&part);
        size_t size = zmq_msg_size(&part);
        int idx = nframes++ - (router ? 1 : 0); /* -1: routing id, 0: header, 1: payload */
        int keep = 0;
        if (rc < 0) {
            /* already refused: read the rest so the next message starts on frame 0 */
        } else if (idx < 0) {
            if (size == 0 || size > WIRE_MAX_ROUTE)
                rc = auxps_error_set(err, AUXPS_EFORMAT, "routing id of %zu bytes", size);
            else {
                memcpy(in->route, zmq_msg_data(&part), size);
                in->route_size = size;
            }
        } else if (idx == 0) {
            if (size > WIRE_MAX_HEADER)
                rc = auxps_error_set(err, AUXPS_ERANGE, "header frame of %zu bytes: at most %u",
                                     size, WIRE_MAX_HEADER);
            else keep = 1;
        } else if (idx == 1) {
            if (size > WIRE_MAX_PAYLOAD)
                rc = auxps_error_set(err, AUXPS_ERANGE, "payload frame of %zu bytes: at most %u",
                                     size, WIRE_MAX_PAYLOAD);
            else keep = 2;
        } else {
            rc = auxps_error_set(err, AUXPS_EFORMAT, "message has more than %d frames",
                                 router ? 3 : 2);
        }
        if (keep) {
            zmq_msg_t *dst = keep == 1 ? &in->hdr : &in->payload;
            zmq_msg_init(dst);
            zmq_msg_move(dst, &part);
            in->held |= keep;
            if (keep == 2) in->npayload = 1;
        }
        zmq_msg_close(&part);
    }
    if (rc == 0 && !(in->held & 1))
        rc = auxps_error_set(err, AUXPS_EFORMAT, "message has no header frame");
    if (rc < 0) wire_in_close(in);
    return rc;
}

int wire_decode_in(wire_in_t *in, wire_msg_t *m, auxps_error_t *err) {
    if (in == NULL || !(in->held & 1)) {
        if (m) memset(m, 0, sizeof *m);
        return auxps_error_set(err, AUXPS_EINVAL, "wire_decode_in: no message held");
    }
    const void *payload = (in->held & 2) ? zmq_msg_data(&in->payload) : NULL;
    size_t psize = (in->held & 2) ? zmq_msg_size(&in->payload) : 0;
    return wire_decode(m, zmq_msg_data(&in->hdr), zmq_msg_size(&in->hdr), payload, psize,
                       in->npayload, err);
}

/* ---- payload codecs ------------------------------------------------------------------ */

/* One segment of len k-bit codes at p (LSB first, from a byte boundary) into codes (len) when
 * it is not NULL, else their values lo + step * code into out (len). Returns the unused bits of
 * the last byte, which a valid payload has zero. unpack_any takes any k in 1..8; unpack_pow2 the
 * k that divide 8, with loops over whole bytes that GCC vectorises (k is a constant where it is
 * inlined). */
HOT_WIDE static uint32_t unpack_any(const uint8_t *p, uint32_t len, uint32_t k, uint8_t *codes, float *out, float lo,
                           float step) {
    uint64_t acc = 0;
    uint32_t nb = 0, mask = (1u << k) - 1;
    for (uint32_t i = 0; i < len; i++) {
        while (nb < k) {
            acc |= (uint64_t)*p++ << nb;
            nb += 8;
        }
        if (codes != NULL) codes[i] = (uint8_t)(acc & mask);
        else out[i] = wire_dequant(lo, step, (uint32_t)(acc & mask));
        acc >>= k;
        nb -= k;
    }
    return (uint32_t)acc;
}

/* The codes of each byte value at 1 and 2 bits, in order: a byte unpacks as one copy. */
#define UNPACK1(v) \
    {(v) & 1, (v) >> 1 & 1, (v) >> 2 & 1, (v) >> 3 & 1, (v) >> 4 & 1, (v) >> 5 & 1, (v) >> 6 & 1, (v) >> 7}
#define UNPACK2(v) {(v) & 3, (v) >> 2 & 3, (v) >> 4 & 3, (v) >> 6}
#define UNPACK_4(F, v) F(v), F((v) + 1), F((v) + 2), F((v) + 3)
#define UNPACK_16(F, v) UNPACK_4(F, v), UNPACK_4(F, (v) + 4), UNPACK_4(F, (v) + 8), UNPACK_4(F, (v) + 12)
#define UNPACK_64(F, v) UNPACK_16(F, v), UNPACK_16(F, (v) + 16), UNPACK_16(F, (v) + 32), UNPACK_16(F, (v) + 48)
#define UNPACK_256(F) UNPACK_64(F, 0), UNPACK_64(F, 64), UNPACK_64(F, 128), UNPACK_64(F, 192)
static const uint8_t unpack1[256][8] = {UNPACK_256(UNPACK1)};
static const uint8_t unpack2[256][4] = {UNPACK_256(UNPACK2)};

static inline uint32_t unpack_bytes(const uint8_t *p, uint32_t len, const uint32_t k, uint8_t *codes, float *out,
                                    float lo, float step) {
    const uint32_t per = 8 / k, mask = (1u << k) - 1, whole = len / per;
    if (codes != NULL && k <= 2) {
        const uint8_t *table = k == 1 ? unpack1[0] : unpack2[0];
        for (uint32_t b = 0; b < whole; b++) memcpy(codes + b * per, table + p[b] * per, per);
    } else if (codes != NULL) {
        for (uint32_t b = 0; b < whole; b++)
            for (uint32_t j = 0; j < per; j++) codes[b * per + j] = (uint8_t)((p[b] >> (j * k)) & mask);
    } else {
        for (uint32_t b = 0; b < whole; b++)
            for (uint32_t j = 0; j < per; j++) out[b * per + j] = wire_dequant(lo, step, (p[b] >> (j * k)) & mask);
    }
    const uint32_t rest = len - whole * per;
    return rest == 0 ? 0 : unpack_any(p + whole, rest, k, codes != NULL ? codes + whole * per : NULL,
                                      out + whole * per, lo, step);
}

HOT_WIDE static uint32_t unpack_pow2(const uint8_t *p, uint32_t len, uint32_t k, uint8_t *codes, float *out, float lo,
                            float step) {
    switch (k) {
    case 8:
        if (codes != NULL) memcpy(codes, p, len);
        else for (uint32_t i = 0; i < len; i++) out[i] = wire_dequant(lo, step, p[i]);
        return 0;
    case 4: return unpack_bytes(p, len, 4, codes, out, lo, step);
    case 2: return unpack_bytes(p, len, 2, codes, out, lo, step);
    default: return unpack_bytes(p, len, 1, codes, out, lo, step);
    }
}

/* The length, encoding and segments of m's float payload; AUXPS_EINVAL for a message without
 * one. */
static int payload_shape(const wire_msg_t *m, uint64_t *length, uint32_t *encoding, const wire_seg_t **segs,
                         uint32_t *nsegs, auxps_error_t *err) {
    *length = 0, *encoding = WIRE_ENC_F32, *segs = NULL, *nsegs = 0;
    switch (m->type) {
    case WIRE_PULL_REP:
        *length = m->pull_rep.length, *encoding = m->pull_rep.encoding;
        *segs = m->pull_rep.segs, *nsegs = m->pull_rep.nsegs;
        return 0;
    case WIRE_PUSH:
        *length = m->push.length, *encoding = m->push.encoding;
        *segs = m->push.segs, *nsegs = m->push.nsegs;
        return 0;
    case WIRE_STATS_PUSH: *length = m->stats_push.length; return 0;
    default:
        return auxps_error_set(err, AUXPS_EINVAL, "%s carries no float payload", wire_type_name(m->type));
    }
}

/* AUXPS_EFORMAT unless m's payload is want bytes. */
static int payload_size_check(const wire_msg_t *m, size_t want, auxps_error_t *err) {
    if (m->payload_size == want) return 0;
    return auxps_error_set(err, AUXPS_EFORMAT, "%s: payload is %zu bytes, expected %zu", wire_type_name(m->type),
                           m->payload_size, want);
}

int wire_payload_f32_view(const wire_msg_t *m, const float **out, auxps_error_t *err) {
    uint64_t length;
    uint32_t encoding, nsegs;
    const wire_seg_t *segs;
    *out = NULL;
    int rc = payload_shape(m, &length, &encoding, &segs, &nsegs, err);
    if (rc != 0 || encoding != WIRE_ENC_F32 || length == 0) return rc;
    if ((rc = payload_size_check(m, length * 4, err)) != 0) return rc;
    if (m->payload != NULL && (uintptr_t)m->payload % _Alignof(float) == 0) *out = (const float *)m->payload;
    return 0;
}

/* The payload of a PULL_REP, PUSH or STATS_PUSH into out (32-bit segments and f32) and, when
 * codes is non-NULL, the k-bit segments' codes into codes instead of their values into out. */
static int payload_unpack(const wire_msg_t *m, float *out, uint8_t *codes, auxps_error_t *err) {
    uint64_t length;
    uint32_t encoding, nsegs;
    const wire_seg_t *segs;
    int rc = payload_shape(m, &length, &encoding, &segs, &nsegs, err);
    if (rc != 0) return rc;
    if (out == NULL || (m->payload == NULL && m->payload_size > 0))
        return auxps_error_set(err, AUXPS_EINVAL, "%s payload: NULL buffer", wire_type_name(m->type));
    rc = encoding == WIRE_ENC_F32 ? 0 : check_segs(wire_type_name(m->type), encoding, segs, nsegs, length, err);
    if (rc < 0) return rc;
    size_t want = encoding == WIRE_ENC_F32 ? length * 4 : wire_segs_bytes(segs, nsegs);
    if ((rc = payload_size_check(m, want, err)) != 0) return rc;
    const uint8_t *p = m->payload;
    if (encoding == WIRE_ENC_F32) {
        if (want > 0) memcpy(out, p, want);
        return 0;
    }
    for (uint32_t s = 0; s < nsegs; s++) {
        uint32_t len = segs[s].length, k = segs[s].bits;
        if (k == 32) {
            memcpy(out, p, (size_t)len * 4);
            p += (size_t)len * 4;
            out += len;
            if (codes != NULL) codes += len;
            continue;
        }
        const int pad = k == 8 || k == 4 || k == 2 || k == 1
                            ? unpack_pow2(p, len, k, codes, out, segs[s].lo, segs[s].step)
                            : unpack_any(p, len, k, codes, out, segs[s].lo, segs[s].step);
        if (pad != 0)
            return auxps_error_set(err, AUXPS_EFORMAT, "%s.segs[%" PRIu32 "]: padding bits are "
                                   "not zero", wire_type_name(m->type), s);
        p += ((size_t)len * k + 7) / 8;
        out += len;
        if (codes != NULL) codes += len;
    }
    return 0;
}

int wire_payload_f32(const wire_msg_t *m, float *out, auxps_error_t *err) {
    return payload_unpack(m, out, NULL, err);
}

int wire_payload_codes(const wire_msg_t *m, float *values, uint8_t *codes, auxps_error_t *err) {
    if (codes == NULL) return auxps_error_set(err, AUXPS_EINVAL, "wire_payload_codes: NULL codes");
    return payload_unpack(m, values, codes, err);
}

/* The q8 code of x = v / a, finite and within about 127 of 0: round(x) clamped to [-127, 127],
 * plus 128. The clamp is on integers, which vectorises without the NaN cases of a float one. */
static inline int32_t q8_code(float x) {
    int32_t c = (int32_t)rintf(x);
    c = c < -127 ? -127 : c;
    c = c > 127 ? 127 : c;
    return c + 128;
}

/* The largest |v| is found on the bits (an integer max vectorises, a float one does not), and
 * the same max flags a NaN or an infinity: their bits are at least those of +inf. The value
 * sent, lo + step * code, is computed from the code converted to float, exactly. */
HOT_WIDE int wire_q8_encode(const float *g, float *resid, uint32_t n, wire_seg_t *seg, uint8_t *codes,
                   auxps_error_t *err) {
    int32_t mb = 0;
    if (resid != NULL)
        for (uint32_t i = 0; i < n; i++) {
            const float v = g[i] + resid[i];
            int32_t b;
            memcpy(&b, &v, sizeof b);
            b &= 0x7fffffff;
            mb = b > mb ? b : mb;
        }
    else
        for (uint32_t i = 0; i < n; i++) {
            int32_t b;
            memcpy(&b, &g[i], sizeof b);
            b &= 0x7fffffff;
            mb = b > mb ? b : mb;
        }
    if (mb >= 0x7f800000)
        return auxps_error_set(err, AUXPS_ERANGE, "q8: a gradient value is NaN or infinite");
    float amax;
    memcpy(&amax, &mb, sizeof amax);
    float step = amax / 127.0f;
    if (!(step >= FLT_MIN)) step = 0.0f; /* all zero, or so small that 1 / step would overflow: send 0 */
    const float inv = step > 0.0f ? 1.0f / step : 0.0f, lo = -128.0f * step;
    *seg = (wire_seg_t){n, 8, lo, step};
    if (resid != NULL)
        for (uint32_t i = 0; i < n; i++) {
            const float v = g[i] + resid[i];
            const int32_t code = q8_code(v * inv);
            codes[i] = (uint8_t)code;
            resid[i] = v - (lo + step * (float)code);
        }
    else
        for (uint32_t i = 0; i < n; i++) codes[i] = (uint8_t)q8_code(g[i] * inv);
    return 0;
}

/* len codes (each < 2^k) into ceil(len k / 8) bytes at p, LSB first; pack_bytes for the k that
 * divide 8, with a loop over whole bytes that vectorises. */
static void pack_any(uint8_t *p, const uint8_t *c, uint32_t len, uint32_t k) {
    uint64_t acc = 0;
    uint32_t nb = 0;
    for (uint32_t i = 0; i < len; i++) {
        acc |= (uint64_t)c[i] << nb;
        nb += k;
        while (nb >= 8) {
            *p++ = (uint8_t)acc;
            acc >>= 8;
            nb -= 8;
        }
    }
    if (nb > 0) *p = (uint8_t)acc;
}

static inline void pack_bytes(uint8_t *p, const uint8_t *c, uint32_t len, const uint32_t k) {
    const uint32_t per = 8 / k, whole = len / per;
    for (uint32_t b = 0; b < whole; b++) {
        uint32_t v = 0;
        for (uint32_t j = 0; j < per; j++) v |= (uint32_t)c[b * per + j] << (j * k);
        p[b] = (uint8_t)v;
    }
    if (len > whole * per) pack_any(p + whole, c + whole * per, len - whole * per, k);
}

int wire_pack_codes(const wire_seg_t *segs, uint32_t nsegs, const uint8_t *codes,
                    const float *values, void *out, size_t out_size, auxps_error_t *err) {
    if ((segs == NULL && nsegs > 0) || out == NULL)
        return auxps_error_set(err, AUXPS_EINVAL, "wire_pack_codes: NULL argument");
    for (uint32_t s = 0; s < nsegs; s++)
        if (segs[s].bits == 0 || (segs[s].bits > 8 && segs[s].bits != 32) ||
            (segs[s].bits == 32 ? values == NULL : codes == NULL))
            return auxps_error_set(err, AUXPS_EINVAL, "wire_pack_codes: segment %" PRIu32
                                   " has bits %" PRIu32 " or its input array is NULL", s,
                                   segs[s].bits);
    if (out_size != wire_segs_bytes(segs, nsegs))
        return auxps_error_set(err, AUXPS_EINVAL, "wire_pack_codes: out is %zu bytes, needs %zu",
                               out_size, wire_segs_bytes(segs, nsegs));
    uint8_t *p = out;
    size_t at = 0; /* index into codes and values */
    for (uint32_t s = 0; s < nsegs; s++) {
        uint32_t len = segs[s].length, k = segs[s].bits;
        if (k == 32) {
            memcpy(p, values + at, (size_t)len * 4);
            p += (size_t)len * 4;
            at += len;
            continue;
        }
        const uint8_t *c = codes + at;
        uint8_t any = 0; /* one vectorised pass checks the codes; a second finds the culprit */
        for (uint32_t i = 0; i < len; i++) any |= c[i];
        if (any >> k)
            for (uint32_t i = 0; i < len; i++)
                if (c[i] >> k)
                    return auxps_error_set(err, AUXPS_EINVAL, "wire_pack_codes: code %u at %zu does "
                                           "not fit in %" PRIu32 " bits", c[i], at + i, k);
        if (k == 8) memcpy(p, c, len);
        else if (k == 4) pack_bytes(p, c, len, 4);
        else if (k == 2) pack_bytes(p, c, len, 2);
        else if (k == 1) pack_bytes(p, c, len, 1);
        else pack_any(p, c, len, k);
        p += ((size_t)len * k + 7) / 8;
        at += len;
    }
    return 0;
}
