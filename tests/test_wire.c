/* test_wire.c - the wire protocol module: every message round-trips field for field, every
 * malformed header or frame set is refused with the code PROTOCOL.md gives, random and mutated
 * input never crashes the decoder, the k-bit payload codec packs bits as documented, and a
 * real DEALER -> ROUTER exchange over TCP carries an 87,044-float PUSH intact, zero-copy. */
#include <criterion/criterion.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <msgpack.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "util.h"
#include "wire.h"

/* ---- sample messages ------------------------------------------------------------------- */

#define NVALUES 1000

typedef struct {
    wire_msg_t m;
    wire_shard_t shards[3];
    wire_seg_t segs[3];
    uint8_t codes[NVALUES];
    float values[NVALUES];
    uint8_t packed[NVALUES * 4];
    uint32_t idx[5];
    char config[80];
} sample_t;

/* A valid message of each type, with every field away from its default. */
static void sample(uint32_t type, sample_t *s) {
    memset(s, 0, sizeof *s);
    wire_msg_t *m = &s->m;
    m->type = type;
    m->rid = 1000 + type;
    for (int i = 0; i < NVALUES; i++) {
        s->values[i] = (float)i * 0.25f - 100.0f;
        s->codes[i] = (uint8_t)(i % 4);
    }
    switch (type) {
    case WIRE_HELLO:
        m->hello = (wire_hello_t){.role = WIRE_ROLE_NODE, .encodings = 7};
        strcpy(m->hello.name, "node-a:1234");
        strcpy(m->hello.endpoint, "tcp://10.0.0.2:5555");
        break;
    case WIRE_WELCOME: {
        const uint64_t len[3] = {30000, 30000, 27044}, slen[3] = {400, 0, 300};
        uint64_t off = 0, soff = 0;
        for (int i = 0; i < 3; i++) {
            s->shards[i] = (wire_shard_t){.id = (uint32_t)i, .offset = off, .length = len[i],
                                          .stats_offset = soff, .stats_length = slen[i]};
            snprintf(s->shards[i].endpoint, sizeof s->shards[i].endpoint, "tcp://node%d:555%d", i, i);
            off += len[i];
            soff += slen[i];
        }
        strcpy(s->config, "[model]\narch = resnet\nweight_bits = 2\n[train]\nepochs = 10\n");
        m->welcome = (wire_welcome_t){
            .role = WIRE_ROLE_NODE, .id = 1, .consistency = WIRE_CONS_SSP, .staleness = 2,
            .num_workers = 4, .num_params = 87044, .num_stats = 700, .seed = UINT64_MAX,
            .stream_seed = 42, .heartbeat_ms = 1000, .timeout_ms = 10000, .shards = s->shards,
            .nshards = 3, .config = s->config};
        break;
    }
    case WIRE_NODE_READY:
        m->node_ready = (wire_node_ready_t){2, 60000, 27044, 400, 300, 5};
        break;
    case WIRE_LEASE_REQ: m->lease_req.worker = 3; break;
    case WIRE_LEASE:
        m->lease = (wire_lease_t){.worker = 3, .chunk = 77, .epoch = 2, .mode = WIRE_LEASE_LIST,
                                  .first = 0, .count = 5, .ttl_ms = 60000};
        for (int i = 0; i < 5; i++) s->idx[i] = 59999u - (uint32_t)i * 7;
        m->payload = s->idx;
        m->payload_size = sizeof s->idx;
        break;
    case WIRE_CHUNK_DONE: m->chunk_done = (wire_chunk_done_t){3, 77, 2, 1280, 12345}; break;
    case WIRE_PULL:
        m->pull = (wire_pull_t){WIRE_ID_COORD, 1, WIRE_VEC_PARAMS, 30000, 30000, 7, WIRE_ENC_KBIT};
        break;
    case WIRE_PULL_REP: {
        s->segs[0] = (wire_seg_t){100, 2, -1.0f, 2.0f / 3.0f};
        s->segs[1] = (wire_seg_t){10, 32, 0.0f, 0.0f};
        s->segs[2] = (wire_seg_t){50, 1, -0.5f, 1.0f};
        m->pull_rep = (wire_pull_rep_t){.shard = 1, .vec = WIRE_VEC_PARAMS, .offset = 30000,
                                        .length = 160, .version = 99, .min_clock = 6,
                                        .encoding = WIRE_ENC_KBIT, .segs = s->segs, .nsegs = 3};
        for (int i = 110; i < 160; i++) s->codes[i] = (uint8_t)(i % 2);
        size_t bytes = wire_segs_bytes(s->segs, 3);
        cr_assert_eq(bytes, 25 + 40 + 7);
        cr_assert_eq(wire_pack_codes(s->segs, 3, s->codes, s->values, s->packed, bytes, NULL), 0);
        m->payload = s->packed;
        m->payload_size = bytes;
        break;
    }
    case WIRE_PUSH:
        m->push = (wire_push_t){.worker = 3, .shard = 0, .offset = 0, .length = NVALUES,
                                .clock = 7, .version = 98, .samples = 128, .encoding = WIRE_ENC_F32};
        m->payload = s->values;
        m->payload_size = sizeof s->values;
        break;
    case WIRE_PUSH_ACK: m->push_ack = (wire_push_ack_t){0, WIRE_VEC_PARAMS, 99, 6}; break;
    case WIRE_STATS_PUSH:
        m->stats_push = (wire_stats_push_t){3, 0, 16, 16, 7, WIRE_STATS_AVERAGE, 128};
        m->payload = s->values;
        m->payload_size = 16 * 4;
        break;
    case WIRE_PROGRESS:
        m->progress = (wire_progress_t){3, 77, 2, 12, 640, 1234.5, 1000.25, 500, 480, 2};
        break;
    case WIRE_HEARTBEAT: m->heartbeat = (wire_heartbeat_t){WIRE_ROLE_COORD, WIRE_ID_COORD}; break;
    case WIRE_BYE: m->bye = (wire_bye_t){WIRE_ROLE_WORKER, 5, WIRE_ERR_SHUTTING_DOWN}; break;
    case WIRE_EVAL_REQ: m->eval_req = (wire_eval_req_t){4, 2, WIRE_SPLIT_TEST, 5000, 2500}; break;
    case WIRE_EVAL_REP: m->eval_rep = (wire_eval_rep_t){4, 3, 2500, 1500.5, 2100, 2150, 410}; break;
    case WIRE_DONE: m->done = (wire_done_t){WIRE_DONE_FINISHED, 10, 4690}; break;
    case WIRE_MEMBERSHIP: m->membership = (wire_membership_t){3, 1, 1234}; break;
    case WIRE_NODE_STATS:
        m->node_stats = (wire_node_stats_t){1, 4690, 4690, 9380, 1u << 30, 3u << 29, 2, 3, 4500, 1795000000000ull,
                                            {7, 1, 2, 3, 4, 5}};
        break;
    case WIRE_ERROR:
        m->error.code = WIRE_ERR_OUT_OF_RANGE;
        strcpy(m->error.text, "PULL.offset 90000 is outside shard 1 [30000, 60000)");
        break;
    default: cr_assert_fail("no sample for type %u", type);
    }
}

static void encode_ok(const wire_msg_t *m, void **hdr, size_t *size) {
    auxps_error_t e = {0};
    int rc = wire_encode(m, hdr, size, &e);
    cr_assert_eq(rc, 0, "%s: encode failed: %s", wire_type_name(m->type), e.msg);
}

static int decode_for(const sample_t *s, const void *hdr, size_t size, wire_msg_t *out,
                      auxps_error_t *e) {
    return wire_decode(out, hdr, size, s->m.payload, s->m.payload_size, wire_has_payload(&s->m), e);
}

#define UNION_SIZE (offsetof(wire_msg_t, payload) - offsetof(wire_msg_t, hello))

/* ---- round trips ----------------------------------------------------------------------- */

Test(wire, every_message_round_trips_field_for_field) {
    for (uint32_t t = 1; t < WIRE_TYPE_COUNT; t++) {
        sample_t s;
        sample(t, &s);
        void *hdr;
        size_t size;
        encode_ok(&s.m, &hdr, &size);
        cr_assert(size <= WIRE_MAX_HEADER);
        wire_msg_t d;
        auxps_error_t e = {0};
        int rc = decode_for(&s, hdr, size, &d, &e);
        cr_assert_eq(rc, 0, "%s: %s", wire_type_name(t), e.msg);
        cr_assert_eq(d.version, WIRE_VERSION);
        cr_assert_eq(d.type, t);
        cr_assert_eq(d.rid, 1000 + t);
        /* Tables and strings first; then, with those pointers made equal, every other byte. */
        wire_msg_t cmp = d;
        if (t == WIRE_WELCOME) {
            cr_assert_eq(d.welcome.nshards, 3);
            cr_assert(memcmp(d.welcome.shards, s.shards, sizeof s.shards) == 0);
            cr_assert_str_eq(d.welcome.config, s.config);
            cr_assert(d.welcome.config != s.config, "the decoded config must be a copy");
            cmp.welcome.shards = s.shards;
            cmp.welcome.config = s.config;
        }
        if (t == WIRE_PULL_REP || t == WIRE_PUSH) {
            const wire_seg_t *segs = t == WIRE_PUSH ? d.push.segs : d.pull_rep.segs;
            uint32_t n = t == WIRE_PUSH ? d.push.nsegs : d.pull_rep.nsegs;
            cr_assert_eq(n, t == WIRE_PUSH ? 0u : 3u);
            if (n) cr_assert(memcmp(segs, s.segs, n * sizeof *segs) == 0);
            if (t == WIRE_PUSH) cmp.push.segs = s.m.push.segs;
            else cmp.pull_rep.segs = s.segs;
        }
        cr_assert(memcmp(&cmp.hello, &s.m.hello, UNION_SIZE) == 0, "%s: fields differ",
                  wire_type_name(t));
        cr_assert_eq(d.payload_size, s.m.payload_size);
        cr_assert(d.payload == s.m.payload, "%s: the payload must be borrowed, not copied",
                  wire_type_name(t));
        /* A decoded message encodes back to the same bytes. */
        void *hdr2;
        size_t size2;
        encode_ok(&d, &hdr2, &size2);
        cr_assert_eq(size2, size);
        cr_assert(memcmp(hdr, hdr2, size) == 0, "%s: re-encoding differs", wire_type_name(t));
        free(hdr);
        free(hdr2);
        wire_msg_clear(&d);
        wire_msg_clear(&d); /* safe twice */
    }
}

Test(wire, variants_round_trip_range_lease_q8_push_and_stats_pull) {
    sample_t s;
    void *hdr;
    size_t size;
    wire_msg_t d;
    auxps_error_t e = {0};

    sample(WIRE_LEASE, &s);
    s.m.lease.mode = WIRE_LEASE_RANGE;
    s.m.lease.first = 4096;
    s.m.lease.count = 1280;
    s.m.payload = NULL;
    s.m.payload_size = 0;
    encode_ok(&s.m, &hdr, &size);
    cr_assert_eq(wire_decode(&d, hdr, size, NULL, 0, 0, &e), 0, "%s", e.msg);
    cr_assert_eq(d.lease.first, 4096);
    cr_assert_eq(d.lease.count, 1280);
    free(hdr);

    sample(WIRE_PUSH, &s);
    s.segs[0] = (wire_seg_t){600, 8, -1.28f, 0.01f};
    s.segs[1] = (wire_seg_t){400, 32, 0, 0};
    s.m.push.encoding = WIRE_ENC_Q8;
    s.m.push.segs = s.segs;
    s.m.push.nsegs = 2;
    for (int i = 0; i < 600; i++) s.codes[i] = (uint8_t)(i * 7);
    size_t bytes = wire_segs_bytes(s.segs, 2);
    cr_assert_eq(bytes, 600 + 1600);
    cr_assert_eq(wire_pack_codes(s.segs, 2, s.codes, s.values, s.packed, bytes, &e), 0, "%s", e.msg);
    s.m.payload = s.packed;
    s.m.payload_size = bytes;
    encode_ok(&s.m, &hdr, &size);
    cr_assert_eq(decode_for(&s, hdr, size, &d, &e), 0, "%s", e.msg);
    float out[NVALUES];
    cr_assert_eq(wire_payload_f32(&d, out, &e), 0, "%s", e.msg);
    for (int i = 0; i < 600; i++)
        cr_assert_float_eq(out[i], -1.28f + 0.01f * (float)(uint8_t)(i * 7), 1e-6f, "q8 value %d", i);
    cr_assert(memcmp(out + 600, s.values + 600, 400 * sizeof(float)) == 0);
    wire_msg_clear(&d);
    free(hdr);

    sample(WIRE_PULL, &s);
    s.m.pull.vec = WIRE_VEC_STATS;
    s.m.pull.encoding = WIRE_ENC_F32;
    encode_ok(&s.m, &hdr, &size);
    cr_assert_eq(decode_for(&s, hdr, size, &d, &e), 0, "%s", e.msg);
    cr_assert_eq(d.pull.vec, WIRE_VEC_STATS);
    free(hdr);
}

/* ---- header surgery -------------------------------------------------------------------- */

static msgpack_object U(uint64_t v) {
    msgpack_object o = {.type = MSGPACK_OBJECT_POSITIVE_INTEGER};
    o.via.u64 = v;
    return o;
}
static msgpack_object I(int64_t v) {
    msgpack_object o = {.type = MSGPACK_OBJECT_NEGATIVE_INTEGER};
    o.via.i64 = v;
    return o;
}
static msgpack_object F(double v) {
    msgpack_object o = {.type = MSGPACK_OBJECT_FLOAT64};
    o.via.f64 = v;
    return o;
}
static msgpack_object S(const char *p, size_t n) {
    msgpack_object o = {.type = MSGPACK_OBJECT_STR};
    o.via.str.ptr = p;
    o.via.str.size = (uint32_t)n;
    return o;
}
static msgpack_object NIL(void) { return (msgpack_object){.type = MSGPACK_OBJECT_NIL}; }


typedef struct {
    const int *path; /* array indices from the root, ended by -1 */
    msgpack_object v;
} edit_t;

enum { EDIT_SET, EDIT_DROP_LAST, EDIT_APPEND };
#define PATH(...) ((const int[]){__VA_ARGS__, -1})

/* Encodes the sample, edits its header (op EDIT_SET applies the n edits; EDIT_DROP_LAST drops
 * the last field; EDIT_APPEND appends edits[0].v), packs it again and decodes that with the
 * sample's payload. */
static int decode_edited(const sample_t *s, int op, const edit_t *edits, int n, wire_msg_t *out,
                         auxps_error_t *e) {
    void *hdr;
    size_t size, off = 0;
    encode_ok(&s->m, &hdr, &size);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    cr_assert_eq(msgpack_unpack_next(&u, hdr, size, &off), MSGPACK_UNPACK_SUCCESS);
    msgpack_object *root = &u.data;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    if (op == EDIT_SET) {
        for (int i = 0; i < n; i++) {
            msgpack_object *o = root;
            for (int d = 0; edits[i].path[d] >= 0; d++) {
                cr_assert(o->type == MSGPACK_OBJECT_ARRAY &&
                          (uint32_t)edits[i].path[d] < o->via.array.size, "bad test path");
                o = &o->via.array.ptr[edits[i].path[d]];
            }
            *o = edits[i].v;
        }
        cr_assert_eq(msgpack_pack_object(&pk, *root), 0);
    } else {
        uint32_t have = root->via.array.size, want = op == EDIT_DROP_LAST ? have - 1 : have + 1;
        cr_assert_eq(msgpack_pack_array(&pk, want), 0);
        for (uint32_t i = 0; i < have && i < want; i++)
            cr_assert_eq(msgpack_pack_object(&pk, root->via.array.ptr[i]), 0);
        if (op == EDIT_APPEND) cr_assert_eq(msgpack_pack_object(&pk, edits[0].v), 0);
    }
    int rc = decode_for(s, sb.data, sb.size, out, e);
    msgpack_sbuffer_destroy(&sb);
    msgpack_unpacked_destroy(&u);
    free(hdr);
    return rc;
}

/* One edit of a fresh sample of type t must be refused with code. */
static void expect_set(uint32_t t, const int *path, msgpack_object v, int code) {
    sample_t s;
    sample(t, &s);
    wire_msg_t d;
    auxps_error_t e = {0};
    edit_t ed = {path, v};
    int rc = decode_edited(&s, EDIT_SET, &ed, 1, &d, &e);
    cr_assert_eq(rc, code, "%s [%d%s]: rc %d (%s), expected %d", wire_type_name(t), path[0],
                 path[1] >= 0 ? ".." : "", rc, e.msg, code);
    if (code < 0) {
        cr_assert_eq(e.code, code);
        cr_assert(e.msg[0] != '\0', "a refusal must say why");
        cr_assert(d.mem_[0] == NULL && d.mem_[1] == NULL, "a failed decode owns nothing");
    }
    wire_msg_clear(&d);
}

static void expect_set2(uint32_t t, const int *p1, msgpack_object v1, const int *p2,
                        msgpack_object v2, int code) {
    sample_t s;
    sample(t, &s);
    wire_msg_t d;
    auxps_error_t e = {0};
    edit_t ed[2] = {{p1, v1}, {p2, v2}};
    int rc = decode_edited(&s, EDIT_SET, ed, 2, &d, &e);
    cr_assert_eq(rc, code, "%s: rc %d (%s), expected %d", wire_type_name(t), rc, e.msg, code);
    wire_msg_clear(&d);
}

/* The header of a fresh sample, unpacked, to look at the MessagePack type of each field. */
static uint32_t sample_fields(uint32_t t, msgpack_object_type *types) {
    sample_t s;
    sample(t, &s);
    void *hdr;
    size_t size, off = 0;
    encode_ok(&s.m, &hdr, &size);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    cr_assert_eq(msgpack_unpack_next(&u, hdr, size, &off), MSGPACK_UNPACK_SUCCESS);
    uint32_t n = u.data.via.array.size;
    for (uint32_t i = 0; i < n; i++) types[i] = u.data.via.array.ptr[i].type;
    msgpack_unpacked_destroy(&u);
    free(hdr);
    return n;
}

/* ---- malformed headers ----------------------------------------------------------------- */

Test(wire, a_field_of_the_wrong_type_is_a_format_error) {
    int checked = 0;
    for (uint32_t t = 1; t < WIRE_TYPE_COUNT; t++) {
        msgpack_object_type types[32];
        uint32_t n = sample_fields(t, types);
        for (uint32_t i = 0; i < n; i++) {
            msgpack_object other = types[i] == MSGPACK_OBJECT_STR ? U(7) : S("x", 1);
            expect_set(t, PATH((int)i), other, AUXPS_EFORMAT);
            expect_set(t, PATH((int)i), NIL(), AUXPS_EFORMAT);
            if (types[i] == MSGPACK_OBJECT_POSITIVE_INTEGER)
                expect_set(t, PATH((int)i), F(1.0), AUXPS_EFORMAT);
            if (types[i] == MSGPACK_OBJECT_FLOAT32 || types[i] == MSGPACK_OBJECT_FLOAT64)
                expect_set(t, PATH((int)i), U(1), AUXPS_EFORMAT);
            checked++;
        }
    }
    cr_assert_eq(checked, 18 * 4 + 4 + 13 + 6 + 1 + 7 + 5 + 7 + 8 + 9 + 4 + 7 + 9 + 2 + 3 + 5 + 7 + 3 + 2 + 4 + 3 + 1 + 4 + 16);
    /* Inside the tables too. */
    for (int k = 0; k < 6; k++) expect_set(WIRE_WELCOME, PATH(15, 1, k), NIL(), AUXPS_EFORMAT);
    expect_set(WIRE_WELCOME, PATH(15, 1), U(3), AUXPS_EFORMAT);
    for (int k = 0; k < 4; k++) expect_set(WIRE_PULL_REP, PATH(11, 2, k), S("x", 1), AUXPS_EFORMAT);
    expect_set(WIRE_PULL_REP, PATH(11, 0, 2), U(1), AUXPS_EFORMAT);
}

Test(wire, a_negative_value_in_an_unsigned_field_is_out_of_range) {
    for (uint32_t t = 1; t < WIRE_TYPE_COUNT; t++) {
        msgpack_object_type types[32];
        uint32_t n = sample_fields(t, types);
        for (uint32_t i = 3; i < n; i++)
            if (types[i] == MSGPACK_OBJECT_POSITIVE_INTEGER)
                expect_set(t, PATH((int)i), I(-1), AUXPS_ERANGE);
    }
    expect_set(WIRE_WELCOME, PATH(15, 1, 2), I(-30000), AUXPS_ERANGE);
    expect_set(WIRE_PULL_REP, PATH(11, 0, 0), I(-100), AUXPS_ERANGE);
}

/* Fields whose range is every uint64 (PROTOCOL.md tables); 2^32 is valid there. */
static int any64(uint32_t t, uint32_t i) {
    static const struct { uint32_t t, i; } list[] = {
        {WIRE_WELCOME, 11}, {WIRE_WELCOME, 12}, {WIRE_NODE_READY, 9}, {WIRE_CHUNK_DONE, 8},
        {WIRE_PULL, 9}, {WIRE_PULL_REP, 8}, {WIRE_PULL_REP, 9}, {WIRE_PUSH, 8}, {WIRE_PUSH, 9},
        {WIRE_PUSH_ACK, 6}, {WIRE_PUSH_ACK, 7}, {WIRE_STATS_PUSH, 8}, {WIRE_PROGRESS, 7},
        {WIRE_EVAL_REP, 10}, {WIRE_DONE, 6}, {WIRE_MEMBERSHIP, 6}, {WIRE_PROGRESS, 13},
        {WIRE_NODE_STATS, 5}, {WIRE_NODE_STATS, 6}, {WIRE_NODE_STATS, 7}, {WIRE_NODE_STATS, 8}, {WIRE_NODE_STATS, 9},
        {WIRE_NODE_STATS, 10}, {WIRE_NODE_STATS, 11}, {WIRE_NODE_STATS, 12}, {WIRE_NODE_STATS, 13},
        {WIRE_NODE_STATS, 14}, {WIRE_NODE_STATS, 15}, {WIRE_NODE_STATS, 16}, {WIRE_NODE_STATS, 17},
        {WIRE_NODE_STATS, 18}, {WIRE_NODE_STATS, 19}};
    for (size_t k = 0; k < sizeof list / sizeof list[0]; k++)
        if (list[k].t == t && list[k].i == i) return 1;
    return 0;
}

Test(wire, an_unsigned_field_above_its_limit_is_out_of_range) {
    int valid = 0;
    for (uint32_t t = 1; t < WIRE_TYPE_COUNT; t++) {
        msgpack_object_type types[32];
        uint32_t n = sample_fields(t, types);
        for (uint32_t i = 3; i < n; i++) {
            if (types[i] != MSGPACK_OBJECT_POSITIVE_INTEGER) continue;
            int ok = any64(t, i);
            valid += ok;
            expect_set(t, PATH((int)i), U(1ull << 32), ok ? 0 : AUXPS_ERANGE);
            expect_set(t, PATH((int)i), U(UINT64_MAX), ok ? 0 : AUXPS_ERANGE);
        }
    }
    cr_assert_eq(valid, 32, "every uint64-wide field was visited");
    expect_set(WIRE_MEMBERSHIP, PATH(4), U(WIRE_MAX_WORKERS), AUXPS_ERANGE);
    expect_set(WIRE_MEMBERSHIP, PATH(5), U(2), AUXPS_ERANGE);
    expect_set(WIRE_PULL, PATH(6), U(2), AUXPS_ERANGE);          /* vec */
    expect_set(WIRE_PULL, PATH(10), U(3), AUXPS_ERANGE);         /* encoding */
    expect_set(WIRE_PULL, PATH(4), U(WIRE_ID_COORD + 1), AUXPS_ERANGE);
    expect_set(WIRE_PUSH, PATH(4), U(WIRE_ID_COORD), AUXPS_ERANGE);
    expect_set(WIRE_PUSH, PATH(10), U(WIRE_MAX_BATCH + 1), AUXPS_ERANGE);
    expect_set(WIRE_PUSH, PATH(10), U(0), AUXPS_ERANGE);
    expect_set(WIRE_PULL_REP, PATH(11, 0, 1), U(33), AUXPS_ERANGE);
    expect_set(WIRE_PULL_REP, PATH(11, 0, 1), U(9), AUXPS_ERANGE);
    expect_set(WIRE_PULL_REP, PATH(11, 0, 1), U(0), AUXPS_ERANGE);
    expect_set(WIRE_WELCOME, PATH(13), U(9), AUXPS_ERANGE);      /* heartbeat_ms */
    expect_set(WIRE_ERROR, PATH(4), U(0), AUXPS_ERANGE);
}

Test(wire, a_missing_or_extra_field_is_a_format_error) {
    for (uint32_t t = 1; t < WIRE_TYPE_COUNT; t++) {
        sample_t s;
        sample(t, &s);
        wire_msg_t d;
        auxps_error_t e = {0};
        edit_t ed = {NULL, NIL()};
        cr_assert_eq(decode_edited(&s, EDIT_DROP_LAST, NULL, 0, &d, &e), AUXPS_EFORMAT,
                     "%s without its last field: %s", wire_type_name(t), e.msg);
        cr_assert_eq(decode_edited(&s, EDIT_APPEND, &ed, 1, &d, &e), AUXPS_EFORMAT,
                     "%s with an extra nil: %s", wire_type_name(t), e.msg);
        ed.v = U(0);
        cr_assert_eq(decode_edited(&s, EDIT_APPEND, &ed, 1, &d, &e), AUXPS_EFORMAT,
                     "%s with an extra 0: %s", wire_type_name(t), e.msg);
    }
}

Test(wire, another_protocol_version_is_refused_but_its_error_is_read) {
    for (uint32_t t = 1; t < WIRE_TYPE_COUNT; t++) {
        if (t == WIRE_ERROR) continue;
        sample_t s;
        sample(t, &s);
        wire_msg_t d;
        auxps_error_t e = {0};
        edit_t ed = {PATH(1), U(WIRE_VERSION + 1)};
        cr_assert_eq(decode_edited(&s, EDIT_SET, &ed, 1, &d, &e), AUXPS_EVERSION, "%s: %s",
                     wire_type_name(t), e.msg);
        cr_assert_eq(d.version, WIRE_VERSION + 1);
        cr_assert_eq(d.type, t, "the refused message is still named");
        cr_assert_eq(d.rid, 1000 + t);
        expect_set(t, PATH(1), U(0), AUXPS_EVERSION);
        expect_set(t, PATH(1), U(UINT64_MAX), AUXPS_EVERSION);
    }
    /* An ERROR keeps its layout in every version, so a v1 peer reads a v7 peer's refusal. */
    sample_t s;
    sample(WIRE_ERROR, &s);
    wire_msg_t d;
    auxps_error_t e = {0};
    edit_t ed = {PATH(1), U(7)};
    cr_assert_eq(decode_edited(&s, EDIT_SET, &ed, 1, &d, &e), 0, "%s", e.msg);
    cr_assert_eq(d.version, 7);
    cr_assert_eq(d.error.code, WIRE_ERR_OUT_OF_RANGE);
    cr_assert_str_eq(d.error.text, s.m.error.text);
    expect_set(WIRE_ERROR, PATH(4), U(4000), 0); /* a code from the future is accepted */
}

Test(wire, an_unknown_type_or_a_foreign_header_is_a_format_error) {
    const uint64_t types[] = {0, WIRE_TYPE_COUNT, 99, 1ull << 40};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        expect_set(WIRE_PULL, PATH(2), U(types[i]), AUXPS_EFORMAT);
    expect_set(WIRE_PULL, PATH(0), S("AXPT", 4), AUXPS_EFORMAT);
    expect_set(WIRE_PULL, PATH(0), S("AXP", 3), AUXPS_EFORMAT);
    expect_set(WIRE_PULL, PATH(0), S("AXPSX", 5), AUXPS_EFORMAT);
    /* A type that exists but with another type's fields. */
    expect_set(WIRE_PULL, PATH(2), U(WIRE_PUSH), AUXPS_EFORMAT);
    static const uint8_t not_array[] = {0x01};
    static const uint8_t a_map[] = {0x81, 0x01, 0x02};
    static const uint8_t three[] = {0x93, 0xa4, 'A', 'X', 'P', 'S', 0x01, 0x05};
    static const uint8_t delimiter[] = {0};
    wire_msg_t d;
    auxps_error_t e = {0};
    cr_assert_eq(wire_decode(&d, not_array, sizeof not_array, NULL, 0, 0, &e), AUXPS_EFORMAT);
    cr_assert_eq(wire_decode(&d, a_map, sizeof a_map, NULL, 0, 0, &e), AUXPS_EFORMAT);
    cr_assert_eq(wire_decode(&d, three, sizeof three, NULL, 0, 0, &e), AUXPS_EFORMAT);
    cr_assert_eq(wire_decode(&d, delimiter, 0, NULL, 0, 0, &e), AUXPS_EFORMAT);
    cr_assert_eq(wire_decode(&d, NULL, 0, NULL, 0, 0, &e), AUXPS_EFORMAT);
}

Test(wire, a_truncated_or_padded_header_is_a_format_error) {
    for (uint32_t t = 1; t < WIRE_TYPE_COUNT; t++) {
        sample_t s;
        sample(t, &s);
        void *hdr;
        size_t size;
        encode_ok(&s.m, &hdr, &size);
        wire_msg_t d;
        auxps_error_t e = {0};
        for (size_t cut = 0; cut < size; cut++) {
            /* A copy of exactly cut bytes, so that ASan sees any read past the end. */
            uint8_t *p = malloc(cut ? cut : 1);
            memcpy(p, hdr, cut);
            cr_assert_eq(decode_for(&s, p, cut, &d, &e), AUXPS_EFORMAT, "%s cut at %zu: %s",
                         wire_type_name(t), cut, e.msg);
            free(p);
        }
        uint8_t *p = malloc(size + 1);
        memcpy(p, hdr, size);
        p[size] = 0xc0;
        cr_assert_eq(decode_for(&s, p, size + 1, &d, &e), AUXPS_EFORMAT);
        cr_assert(strstr(e.msg, "after") != NULL, "%s", e.msg);
        free(p);
        free(hdr);
    }
}

/* Decodes the sample's header with another payload frame set. */
static int decode_payload(uint32_t t, size_t size_delta_or_abs, int absolute, int npayload) {
    sample_t s;
    sample(t, &s);
    void *hdr;
    size_t size;
    encode_ok(&s.m, &hdr, &size);
    static uint8_t big[NVALUES * 4 + 64];
    size_t psize = absolute ? size_delta_or_abs : s.m.payload_size + size_delta_or_abs;
    cr_assert(psize <= sizeof big);
    wire_msg_t d;
    auxps_error_t e = {0};
    int rc = wire_decode(&d, hdr, size, big, psize, npayload, &e);
    wire_msg_clear(&d);
    free(hdr);
    return rc;
}

Test(wire, a_payload_frame_of_the_wrong_size_or_count_is_a_format_error) {
    const uint32_t with[] = {WIRE_PUSH, WIRE_PULL_REP, WIRE_STATS_PUSH, WIRE_LEASE};
    for (size_t i = 0; i < 4; i++) {
        uint32_t t = with[i];
        cr_assert_eq(decode_payload(t, 0, 0, 1), 0, "%s as sent", wire_type_name(t));
        cr_assert_eq(decode_payload(t, (size_t)-1, 0, 1), AUXPS_EFORMAT, "%s", wire_type_name(t));
        cr_assert_eq(decode_payload(t, 1, 0, 1), AUXPS_EFORMAT);
        cr_assert_eq(decode_payload(t, 4, 0, 1), AUXPS_EFORMAT);
        cr_assert_eq(decode_payload(t, (size_t)-4, 0, 1), AUXPS_EFORMAT);
        cr_assert_eq(decode_payload(t, 0, 1, 1), AUXPS_EFORMAT, "an empty frame");
        cr_assert_eq(decode_payload(t, 0, 1, 0), AUXPS_EFORMAT, "no frame");
        cr_assert_eq(decode_payload(t, 0, 0, 2), AUXPS_EFORMAT, "two frames");
    }
    const uint32_t without[] = {WIRE_PULL, WIRE_HELLO, WIRE_PUSH_ACK, WIRE_ERROR};
    for (size_t i = 0; i < 4; i++) {
        cr_assert_eq(decode_payload(without[i], 0, 1, 0), 0);
        cr_assert_eq(decode_payload(without[i], 8, 1, 1), AUXPS_EFORMAT);
        cr_assert_eq(decode_payload(without[i], 0, 1, 1), AUXPS_EFORMAT, "even an empty frame");
    }
    /* A range lease takes no frame; a list lease needs one. */
    expect_set(WIRE_LEASE, PATH(7), U(WIRE_LEASE_RANGE), AUXPS_EFORMAT);
}

Test(wire, a_huge_declared_length_is_refused_before_anything_is_allocated) {
    expect_set(WIRE_PUSH, PATH(7), U(WIRE_MAX_FLOATS + 1), AUXPS_ERANGE);
    expect_set(WIRE_PUSH, PATH(7), U(1ull << 40), AUXPS_ERANGE);
    /* Within the limit, but the frame is smaller than declared: the frame size wins. */
    expect_set(WIRE_PUSH, PATH(7), U(WIRE_MAX_FLOATS), AUXPS_EFORMAT);
    expect_set(WIRE_LEASE, PATH(9), U(WIRE_MAX_CHUNK + 1), AUXPS_ERANGE);
    expect_set(WIRE_LEASE, PATH(9), U(WIRE_MAX_CHUNK), AUXPS_EFORMAT);

    /* MessagePack lengths larger than the frame: msgpack-c would allocate by the declared
     * count (a 2^32-element array is 128 GiB) if the decoder let it see these. */
    static const uint8_t arr32[] = {0xdd, 0xff, 0xff, 0xff, 0xff};
    static const uint8_t arr16[] = {0xdc, 0xff, 0xff, 0xc0};
    static const uint8_t map32[] = {0xdf, 0x7f, 0xff, 0xff, 0xff};
    static const uint8_t str32[] = {0x94, 0xdb, 0xff, 0xff, 0xff, 0xff, 'A'};
    static const uint8_t bin32[] = {0xc6, 0xff, 0xff, 0xff, 0xf0, 0x00};
    static const uint8_t ext32[] = {0xc9, 0x00, 0x00, 0x00, 0x01, 0x05};
    static const uint8_t deep[] = {0x91, 0x91, 0x91, 0x91, 0x00};
    static const uint8_t reserved[] = {0x91, 0xc1};
    const struct { const uint8_t *p; size_t n; } cases[] = {
        {arr32, sizeof arr32}, {arr16, sizeof arr16}, {map32, sizeof map32}, {str32, sizeof str32},
        {bin32, sizeof bin32}, {ext32, sizeof ext32}, {deep, sizeof deep},
        {reserved, sizeof reserved}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        wire_msg_t d;
        auxps_error_t e = {0};
        cr_assert_eq(wire_decode(&d, cases[i].p, cases[i].n, NULL, 0, 0, &e), AUXPS_EFORMAT,
                     "case %zu: %s", i, e.msg);
    }
    /* A header frame over the limit is refused by size alone. */
    uint8_t *big = calloc(1, WIRE_MAX_HEADER + 1);
    wire_msg_t d;
    auxps_error_t e = {0};
    cr_assert_eq(wire_decode(&d, big, WIRE_MAX_HEADER + 1, NULL, 0, 0, &e), AUXPS_ERANGE);
    free(big);

    /* Tables longer than their limit. */
    sample_t s;
    sample(WIRE_WELCOME, &s);
    msgpack_object shards[WIRE_MAX_SHARDS + 1];
    void *hdr;
    size_t size, off = 0;
    encode_ok(&s.m, &hdr, &size);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    cr_assert_eq(msgpack_unpack_next(&u, hdr, size, &off), MSGPACK_UNPACK_SUCCESS);
    for (size_t i = 0; i <= WIRE_MAX_SHARDS; i++) shards[i] = u.data.via.array.ptr[15].via.array.ptr[0];
    msgpack_object table = {.type = MSGPACK_OBJECT_ARRAY};
    table.via.array.size = WIRE_MAX_SHARDS + 1;
    table.via.array.ptr = shards;
    expect_set(WIRE_WELCOME, PATH(15), table, AUXPS_ERANGE);
    table.via.array.size = 0;
    expect_set(WIRE_WELCOME, PATH(15), table, AUXPS_ERANGE);
    msgpack_unpacked_destroy(&u);
    free(hdr);

    static msgpack_object segs[WIRE_MAX_SEGMENTS + 1];
    sample(WIRE_PULL_REP, &s);
    encode_ok(&s.m, &hdr, &size);
    msgpack_unpacked_init(&u);
    off = 0;
    cr_assert_eq(msgpack_unpack_next(&u, hdr, size, &off), MSGPACK_UNPACK_SUCCESS);
    for (size_t i = 0; i <= WIRE_MAX_SEGMENTS; i++) segs[i] = u.data.via.array.ptr[11].via.array.ptr[1];
    table.via.array.size = WIRE_MAX_SEGMENTS + 1;
    table.via.array.ptr = segs;
    expect_set(WIRE_PULL_REP, PATH(11), table, AUXPS_ERANGE);
    msgpack_unpacked_destroy(&u);
    free(hdr);
}

Test(wire, a_negative_or_overflowing_offset_is_out_of_range) {
    expect_set(WIRE_PULL, PATH(7), I(-1), AUXPS_ERANGE);
    expect_set(WIRE_PULL, PATH(7), I(INT64_MIN), AUXPS_ERANGE);
    expect_set(WIRE_PULL, PATH(7), U(UINT64_MAX), AUXPS_ERANGE);
    expect_set(WIRE_PULL, PATH(7), U(WIRE_MAX_VECTOR), AUXPS_ERANGE);
    /* Each value is within its own limit, but the sum runs past the end of any vector. */
    expect_set2(WIRE_PULL, PATH(7), U(WIRE_MAX_VECTOR - 1), PATH(8), U(2), AUXPS_ERANGE);
    expect_set2(WIRE_PULL, PATH(7), U(WIRE_MAX_VECTOR - 2), PATH(8), U(2), 0);
    expect_set2(WIRE_STATS_PUSH, PATH(6), U(WIRE_MAX_VECTOR - 1), PATH(7), U(2), AUXPS_ERANGE);
    expect_set2(WIRE_STATS_PUSH, PATH(6), U(WIRE_MAX_VECTOR - 2), PATH(7), U(2), AUXPS_EFORMAT);
    expect_set2(WIRE_NODE_READY, PATH(7), U(WIRE_MAX_VECTOR), PATH(8), U(1), AUXPS_ERANGE);
    expect_set2(WIRE_LEASE, PATH(8), U(UINT32_MAX), PATH(9), U(2), AUXPS_ERANGE);
    expect_set2(WIRE_EVAL_REQ, PATH(7), U(UINT32_MAX), PATH(8), U(2), AUXPS_ERANGE);
    expect_set2(WIRE_EVAL_REQ, PATH(7), U(UINT32_MAX), PATH(8), U(1), 0);
    expect_set(WIRE_PULL, PATH(3), I(-5), AUXPS_ERANGE); /* rid */

    /* The encoder applies the same sum check. */
    sample_t s;
    sample(WIRE_PUSH, &s);
    s.m.push.offset = WIRE_MAX_VECTOR - 1;
    void *hdr = (void *)1;
    size_t size = 1;
    auxps_error_t e = {0};
    cr_assert_eq(wire_encode(&s.m, &hdr, &size, &e), AUXPS_ERANGE, "%s", e.msg);
    cr_assert(hdr == NULL && size == 0, "a refused encode leaves nothing to free");
}

Test(wire, a_string_too_long_empty_or_with_a_forbidden_byte_is_refused) {
    static char buf[WIRE_MAX_CONFIG + 2];
    memset(buf, 'a', sizeof buf);
    expect_set(WIRE_HELLO, PATH(5), S(buf, WIRE_MAX_NAME), 0);
    expect_set(WIRE_HELLO, PATH(5), S(buf, WIRE_MAX_NAME + 1), AUXPS_ERANGE);
    expect_set(WIRE_HELLO, PATH(5), S(buf, 0), AUXPS_ERANGE);
    expect_set(WIRE_HELLO, PATH(6), S(buf, WIRE_MAX_ENDPOINT + 1), AUXPS_ERANGE);
    expect_set(WIRE_HELLO, PATH(5), S("a b", 3), AUXPS_EFORMAT);
    expect_set(WIRE_HELLO, PATH(5), S("a\nb", 3), AUXPS_EFORMAT);
    expect_set(WIRE_HELLO, PATH(5), S("a\0b", 3), AUXPS_EFORMAT);
    expect_set(WIRE_HELLO, PATH(5), S("a\x7f", 2), AUXPS_EFORMAT);
    expect_set(WIRE_WELCOME, PATH(16), S(buf, WIRE_MAX_CONFIG), 0);
    expect_set(WIRE_WELCOME, PATH(16), S(buf, WIRE_MAX_CONFIG + 1), AUXPS_ERANGE);
    expect_set(WIRE_WELCOME, PATH(16), S("", 0), AUXPS_ERANGE);
    expect_set(WIRE_WELCOME, PATH(16), S("[a]\r\n\tb = 1\n", 12), 0);
    expect_set(WIRE_WELCOME, PATH(16), S("[a]\0", 4), AUXPS_EFORMAT);
    expect_set(WIRE_WELCOME, PATH(16), S("[a]\x1b", 4), AUXPS_EFORMAT);
    expect_set(WIRE_WELCOME, PATH(15, 0, 1), S(buf, WIRE_MAX_ENDPOINT + 1), AUXPS_ERANGE);
    expect_set(WIRE_WELCOME, PATH(15, 0, 1), S("", 0), AUXPS_ERANGE);
    expect_set(WIRE_ERROR, PATH(5), S(buf, WIRE_MAX_TEXT), 0);
    expect_set(WIRE_ERROR, PATH(5), S(buf, WIRE_MAX_TEXT + 1), AUXPS_ERANGE);
    expect_set(WIRE_ERROR, PATH(5), S("", 0), 0);
    expect_set(WIRE_ERROR, PATH(5), S("caf\xc3\xa9 ok", 8), 0);
    expect_set(WIRE_ERROR, PATH(5), S("two\nlines", 9), AUXPS_EFORMAT);

    /* The encoder refuses a name that fills its array without a terminator. */
    sample_t s;
    sample(WIRE_HELLO, &s);
    memset(s.m.hello.name, 'n', sizeof s.m.hello.name);
    void *hdr;
    size_t size;
    auxps_error_t e = {0};
    cr_assert_eq(wire_encode(&s.m, &hdr, &size, &e), AUXPS_ERANGE, "%s", e.msg);
    sample(WIRE_WELCOME, &s);
    s.m.welcome.config = buf; /* not terminated within WIRE_MAX_CONFIG + 1 bytes */
    cr_assert_eq(wire_encode(&s.m, &hdr, &size, &e), AUXPS_ERANGE, "%s", e.msg);
}

Test(wire, fields_that_contradict_each_other_are_invalid) {
    /* WELCOME: the shard table must tile both vectors in id order. */
    expect_set(WIRE_WELCOME, PATH(15, 1, 2), U(30001), AUXPS_EINVAL);
    expect_set(WIRE_WELCOME, PATH(15, 2, 0), U(1), AUXPS_EINVAL);
    expect_set(WIRE_WELCOME, PATH(15, 2, 4), U(401), AUXPS_EINVAL);
    expect_set(WIRE_WELCOME, PATH(9), U(87045), AUXPS_EINVAL);
    expect_set(WIRE_WELCOME, PATH(10), U(699), AUXPS_EINVAL);
    expect_set(WIRE_WELCOME, PATH(14), U(2999), AUXPS_EINVAL);      /* timeout < 3 heartbeats */
    expect_set(WIRE_WELCOME, PATH(6), U(WIRE_CONS_BSP), AUXPS_EINVAL); /* staleness 2 */
    expect_set2(WIRE_WELCOME, PATH(6), U(WIRE_CONS_BSP), PATH(7), U(0), 0);
    expect_set(WIRE_WELCOME, PATH(5), U(3), AUXPS_EINVAL);          /* node 3 of 3 shards */
    expect_set2(WIRE_WELCOME, PATH(4), U(WIRE_ROLE_WORKER), PATH(5), U(900), 0);
    /* HELLO: nodes give an endpoint, workers do not; everyone speaks f32. */
    expect_set(WIRE_HELLO, PATH(6), S("", 0), AUXPS_EINVAL);
    expect_set(WIRE_HELLO, PATH(4), U(WIRE_ROLE_WORKER), AUXPS_EINVAL);
    expect_set2(WIRE_HELLO, PATH(4), U(WIRE_ROLE_WORKER), PATH(6), S("", 0), 0);
    expect_set(WIRE_HELLO, PATH(7), U(6), AUXPS_EINVAL);
    /* Segment tables. */
    expect_set(WIRE_PULL_REP, PATH(11, 0, 0), U(99), AUXPS_EINVAL);  /* sum 159 != 160 */
    expect_set(WIRE_PULL_REP, PATH(11, 1, 2), F(1.0), AUXPS_EINVAL); /* f32 segment with lo */
    expect_set(WIRE_PULL_REP, PATH(11, 0, 2), F(NAN), AUXPS_ERANGE);
    expect_set(WIRE_PULL_REP, PATH(11, 0, 3), F(INFINITY), AUXPS_ERANGE);
    expect_set(WIRE_PULL_REP, PATH(11, 0, 3), F(1e39), AUXPS_ERANGE); /* beyond float32 */
    expect_set(WIRE_PULL_REP, PATH(10), U(WIRE_ENC_F32), AUXPS_EINVAL); /* f32 with segments */
    expect_set(WIRE_PULL_REP, PATH(10), U(WIRE_ENC_Q8), AUXPS_EINVAL);  /* q8 is for pushes */
    expect_set(WIRE_PULL_REP, PATH(5), U(WIRE_VEC_STATS), AUXPS_EINVAL); /* stats are f32 */
    msgpack_object empty = {.type = MSGPACK_OBJECT_ARRAY};
    expect_set(WIRE_PULL_REP, PATH(11), empty, AUXPS_EINVAL);        /* kbit without segments */
    expect_set(WIRE_PUSH, PATH(11), U(WIRE_ENC_KBIT), AUXPS_EINVAL);
    expect_set(WIRE_PULL, PATH(10), U(WIRE_ENC_Q8), AUXPS_EINVAL);
    expect_set(WIRE_PULL, PATH(6), U(WIRE_VEC_STATS), AUXPS_EINVAL);
    /* Leases, reports, ids. */
    expect_set(WIRE_LEASE, PATH(7), U(WIRE_LEASE_WAIT), AUXPS_EINVAL);  /* wait with count 5 */
    expect_set(WIRE_LEASE, PATH(9), U(0), AUXPS_EINVAL);                /* list of none */
    expect_set(WIRE_PROGRESS, PATH(11), U(641), AUXPS_EINVAL);          /* 641 of 640 right */
    expect_set(WIRE_PROGRESS, PATH(9), F(NAN), AUXPS_ERANGE);
    expect_set(WIRE_PROGRESS, PATH(10), F(-INFINITY), AUXPS_ERANGE);
    expect_set(WIRE_EVAL_REP, PATH(9), U(2501), AUXPS_EINVAL);
    expect_set(WIRE_HEARTBEAT, PATH(5), U(3), AUXPS_EINVAL);            /* coordinator is 1024 */
    expect_set2(WIRE_BYE, PATH(4), U(WIRE_ROLE_NODE), PATH(5), U(WIRE_MAX_SHARDS), AUXPS_EINVAL);
}

Test(wire, the_encoder_refuses_what_the_decoder_would_refuse) {
    sample_t s;
    void *hdr;
    size_t size;
    auxps_error_t e = {0};
#define REFUSE(code) do { \
        hdr = (void *)1; \
        int rc_ = wire_encode(&s.m, &hdr, &size, &e); \
        cr_assert_eq(rc_, code, "line %d: rc %d (%s)", __LINE__, rc_, e.msg); \
        cr_assert(hdr == NULL); \
    } while (0)
    sample(WIRE_WELCOME, &s); s.shards[1].offset++; REFUSE(AUXPS_EINVAL);
    sample(WIRE_WELCOME, &s); s.m.welcome.config = NULL; REFUSE(AUXPS_EINVAL);
    sample(WIRE_WELCOME, &s); s.m.welcome.shards = NULL; REFUSE(AUXPS_EINVAL);
    sample(WIRE_WELCOME, &s); s.m.welcome.nshards = 0; REFUSE(AUXPS_ERANGE);
    sample(WIRE_HELLO, &s); s.m.hello.role = WIRE_ROLE_WORKER; REFUSE(AUXPS_EINVAL);
    sample(WIRE_HELLO, &s); s.m.hello.role = 7; REFUSE(AUXPS_ERANGE);
    sample(WIRE_PULL_REP, &s); s.segs[2].length = 49; REFUSE(AUXPS_EINVAL);
    sample(WIRE_PULL_REP, &s); s.m.pull_rep.segs = NULL; REFUSE(AUXPS_EINVAL);
    sample(WIRE_PULL_REP, &s); s.segs[0].lo = NAN; REFUSE(AUXPS_ERANGE);
    sample(WIRE_PUSH, &s); s.m.push.encoding = WIRE_ENC_KBIT; REFUSE(AUXPS_EINVAL);
    sample(WIRE_PUSH, &s);
    s.segs[0] = (wire_seg_t){NVALUES, 4, 0, 1};
    s.m.push.encoding = WIRE_ENC_Q8, s.m.push.segs = s.segs, s.m.push.nsegs = 1;
    REFUSE(AUXPS_EINVAL); /* q8 allows 8 or 32 bits */
    sample(WIRE_PUSH, &s); s.m.payload = NULL; REFUSE(AUXPS_EINVAL);
    sample(WIRE_PUSH, &s); s.m.payload_size -= 4; REFUSE(AUXPS_EFORMAT);
    sample(WIRE_PUSH, &s); s.m.payload_size = 0; REFUSE(AUXPS_EFORMAT);
    sample(WIRE_PULL, &s); s.m.payload = s.values; s.m.payload_size = 4; REFUSE(AUXPS_EFORMAT);
    sample(WIRE_PROGRESS, &s); s.m.progress.loss_sum = INFINITY; REFUSE(AUXPS_ERANGE);
    sample(WIRE_PROGRESS, &s); s.m.progress.correct_aux = 641; REFUSE(AUXPS_EINVAL);
    sample(WIRE_HEARTBEAT, &s); s.m.heartbeat.id = 0; REFUSE(AUXPS_EINVAL);
    sample(WIRE_ERROR, &s); s.m.type = 0; REFUSE(AUXPS_EINVAL);
    sample(WIRE_ERROR, &s); s.m.type = WIRE_TYPE_COUNT; REFUSE(AUXPS_EINVAL);
    sample(WIRE_ERROR, &s); s.m.error.code = 0; REFUSE(AUXPS_ERANGE);
#undef REFUSE
    cr_assert_eq(wire_encode(NULL, &hdr, &size, &e), AUXPS_EINVAL);
}

/* A refused entry of a segment or shard table is named with its index, decoding and encoding
 * (wire.c at_entry formats the name only when a check fails), and a caller may pass no error. */
Test(wire, a_refused_table_entry_is_named_with_its_index) {
    sample_t s;
    sample(WIRE_PULL_REP, &s);
    wire_msg_t d;
    auxps_error_t e = {0};
    edit_t ed = {PATH(11, 2, 1), U(33)};
    cr_assert_eq(decode_edited(&s, EDIT_SET, &ed, 1, &d, &e), AUXPS_ERANGE);
    cr_assert_str_eq(e.msg, "PULL_REP.segs[2].bits = 33: expected 1..32");
    wire_msg_clear(&d);
    sample(WIRE_PULL_REP, &s);
    ed = (edit_t){PATH(11, 1), U(5)};
    cr_assert_eq(decode_edited(&s, EDIT_SET, &ed, 1, &d, &e), AUXPS_EFORMAT);
    cr_assert_str_eq(e.msg, "PULL_REP.segs[1]: expected an array of 4 fields");
    wire_msg_clear(&d);
    void *hdr;
    size_t size;
    sample(WIRE_PULL_REP, &s);
    s.segs[1].lo = NAN;
    cr_assert_eq(wire_encode(&s.m, &hdr, &size, &e), AUXPS_ERANGE);
    cr_assert_str_eq(e.msg, "PULL_REP.segs[1].lo = nan: expected a finite float32");
    cr_assert_eq(wire_encode(&s.m, &hdr, &size, NULL), AUXPS_ERANGE, "a NULL error is allowed, and stays untouched");
}

Test(wire, a_refused_message_is_still_named_for_the_error_reply) {
    sample_t s;
    sample(WIRE_PULL, &s);
    wire_msg_t d;
    auxps_error_t e = {0};
    edit_t ed = {PATH(7), U(1ull << 40)};
    cr_assert_eq(decode_edited(&s, EDIT_SET, &ed, 1, &d, &e), AUXPS_ERANGE);
    cr_assert_eq(d.type, WIRE_PULL);
    cr_assert_eq(d.rid, 1000 + WIRE_PULL);
    cr_assert(d.payload == NULL);
    cr_assert(strstr(e.msg, "PULL.offset") != NULL, "%s", e.msg);
    cr_assert_eq(wire_error_code(AUXPS_ERANGE), WIRE_ERR_BAD_MESSAGE);
    cr_assert_eq(wire_error_code(AUXPS_EFORMAT), WIRE_ERR_BAD_MESSAGE);
    cr_assert_eq(wire_error_code(AUXPS_EINVAL), WIRE_ERR_BAD_MESSAGE);
    cr_assert_eq(wire_error_code(AUXPS_EVERSION), WIRE_ERR_VERSION);
    cr_assert_eq(wire_error_code(AUXPS_ENOMEM), WIRE_ERR_INTERNAL);
    cr_assert_str_eq(wire_type_name(WIRE_STATS_PUSH), "STATS_PUSH");
    cr_assert_str_eq(wire_type_name(0), "?");
    cr_assert_str_eq(wire_type_name(WIRE_TYPE_COUNT), "?");
    cr_assert_str_eq(wire_err_name(WIRE_ERR_SHUTTING_DOWN), "SHUTTING_DOWN");
    cr_assert_str_eq(wire_err_name(4000), "?");
}

/* The kind (WIRE_REJECT_*) of a refused edit of a fresh sample of type t. */
static uint32_t kind_of_set(uint32_t t, const int *path, msgpack_object v) {
    sample_t s;
    sample(t, &s);
    wire_msg_t d;
    auxps_error_t e = {0};
    edit_t ed = {path, v};
    int rc = decode_edited(&s, EDIT_SET, &ed, 1, &d, &e);
    cr_assert_lt(rc, 0, "%s: the edit was not refused", wire_type_name(t));
    uint32_t kind = wire_reject_kind(rc, &d);
    wire_msg_clear(&d);
    return kind;
}

static uint32_t kind_of_bytes(const void *hdr, size_t n) {
    wire_msg_t d;
    auxps_error_t e = {0};
    int rc = wire_decode(&d, hdr, n, NULL, 0, 0, &e);
    cr_assert_lt(rc, 0);
    return wire_reject_kind(rc, &d);
}

Test(wire, a_refused_message_is_counted_as_one_kind) {
    cr_assert_eq(kind_of_set(WIRE_PUSH, PATH(1), U(WIRE_VERSION + 1)), WIRE_REJECT_BAD_VERSION);
    cr_assert_eq(kind_of_set(WIRE_PUSH, PATH(7), U(1ull << 40)), WIRE_REJECT_TOO_LARGE);   /* length */
    cr_assert_eq(kind_of_set(WIRE_LEASE, PATH(9), U(WIRE_MAX_CHUNK + 1)), WIRE_REJECT_TOO_LARGE); /* count */
    static char name[WIRE_MAX_NAME + 1];
    memset(name, 'a', sizeof name);
    cr_assert_eq(kind_of_set(WIRE_HELLO, PATH(5), S(name, sizeof name)), WIRE_REJECT_TOO_LARGE);
    cr_assert_eq(kind_of_set(WIRE_PUSH, PATH(4), U(WIRE_MAX_WORKERS)), WIRE_REJECT_OUT_OF_RANGE); /* worker */
    cr_assert_eq(kind_of_set(WIRE_PUSH, PATH(6), U(WIRE_MAX_VECTOR)), WIRE_REJECT_OUT_OF_RANGE);  /* offset */
    cr_assert_eq(kind_of_set(WIRE_PUSH, PATH(4), I(-1)), WIRE_REJECT_OUT_OF_RANGE);
    cr_assert_eq(kind_of_set(WIRE_PROGRESS, PATH(9), F(NAN)), WIRE_REJECT_NON_FINITE);
    cr_assert_eq(kind_of_set(WIRE_PROGRESS, PATH(9), F(-INFINITY)), WIRE_REJECT_NON_FINITE);
    cr_assert_eq(kind_of_set(WIRE_PUSH, PATH(4), S("x", 1)), WIRE_REJECT_MALFORMED);       /* wrong type */
    cr_assert_eq(kind_of_set(WIRE_PUSH, PATH(2), U(99)), WIRE_REJECT_MALFORMED);           /* unknown type */

    /* Declared lengths no header frame can hold are too large; shorter ones are truncation. */
    static const uint8_t arr32[] = {0xdd, 0xff, 0xff, 0xff, 0xff};
    static const uint8_t str32[] = {0x94, 0xdb, 0x00, 0x01, 0x00, 0x01, 'A'};
    static const uint8_t arr_short[] = {0x94, 0xa4, 'A', 'X'};
    static const uint8_t garbage[] = {0xc1, 0x17, 0x42};
    cr_assert_eq(kind_of_bytes(arr32, sizeof arr32), WIRE_REJECT_TOO_LARGE);
    cr_assert_eq(kind_of_bytes(str32, sizeof str32), WIRE_REJECT_TOO_LARGE);
    cr_assert_eq(kind_of_bytes(arr_short, sizeof arr_short), WIRE_REJECT_MALFORMED);
    cr_assert_eq(kind_of_bytes(garbage, sizeof garbage), WIRE_REJECT_MALFORMED);
    uint8_t *big = calloc(1, WIRE_MAX_HEADER + 1);
    cr_assert_not_null(big);
    cr_assert_eq(kind_of_bytes(big, WIRE_MAX_HEADER + 1), WIRE_REJECT_TOO_LARGE);
    free(big);

    /* wire_recv's refusals: a frame over its limit, or frames out of shape. */
    cr_assert_eq(wire_reject_kind(AUXPS_ERANGE, NULL), WIRE_REJECT_TOO_LARGE);
    cr_assert_eq(wire_reject_kind(AUXPS_EFORMAT, NULL), WIRE_REJECT_MALFORMED);
    /* The receiver's own refusals, by the ERROR code they get. */
    cr_assert_eq(wire_reject_of_code(WIRE_ERR_NOT_REGISTERED), WIRE_REJECT_UNREGISTERED);
    cr_assert_eq(wire_reject_of_code(WIRE_ERR_OUT_OF_RANGE), WIRE_REJECT_OUT_OF_RANGE);
    cr_assert_eq(wire_reject_of_code(WIRE_ERR_NON_FINITE), WIRE_REJECT_NON_FINITE);
    cr_assert_eq(wire_reject_of_code(WIRE_ERR_VERSION), WIRE_REJECT_BAD_VERSION);
    cr_assert_eq(wire_reject_of_code(WIRE_ERR_ENCODING), WIRE_REJECT_MALFORMED);
    cr_assert_str_eq(wire_reject_name(WIRE_REJECT_TOO_LARGE), "too_large");
    cr_assert_str_eq(wire_reject_name(WIRE_REJECT_NON_FINITE), "non_finite");
    cr_assert_str_eq(wire_reject_name(WIRE_REJECT_COUNT), "?");
    cr_assert_str_eq(wire_err_name(WIRE_ERR_NON_FINITE), "NON_FINITE");
}

/* ---- fuzz ------------------------------------------------------------------------------ */

static uint64_t xorshift(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static msgpack_object random_object(uint64_t *r, char *strbuf) {
    switch (xorshift(r) % 7) {
    case 0: return U(xorshift(r) % 4);
    case 1: return U(xorshift(r) >> (xorshift(r) % 64));
    case 2: return I(-(int64_t)(xorshift(r) % 1000) - 1);
    case 3: return F((double)(int64_t)xorshift(r) / 1e9);
    case 4: {
        size_t n = xorshift(r) % 8;
        for (size_t i = 0; i < n; i++) strbuf[i] = (char)(0x20 + xorshift(r) % 0x60);
        return S(strbuf, n);
    }
    case 5: return NIL();
    default: {
        msgpack_object o = {.type = MSGPACK_OBJECT_ARRAY};
        return o;
    }
    }
}

Test(wire, random_and_mutated_input_never_crashes, .timeout = 120) {
    enum { ITERATIONS = 20000 };
    uint64_t r = 0x9E3779B97F4A7C15ull;
    sample_t samples[WIRE_TYPE_COUNT];
    void *hdrs[WIRE_TYPE_COUNT];
    size_t sizes[WIRE_TYPE_COUNT];
    for (uint32_t t = 1; t < WIRE_TYPE_COUNT; t++) {
        sample(t, &samples[t]);
        encode_ok(&samples[t].m, &hdrs[t], &sizes[t]);
    }
    static uint8_t buf[WIRE_MAX_HEADER], junk[512];
    int counts[4][2] = {{0}};
    for (int it = 0; it < ITERATIONS; it++) {
        int kind = it % 4;
        uint32_t t = 1 + (uint32_t)(xorshift(&r) % (WIRE_TYPE_COUNT - 1));
        const sample_t *s = &samples[t];
        size_t n = 0;
        const void *payload = s->m.payload;
        size_t psize = s->m.payload_size;
        int np = wire_has_payload(&s->m);
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        if (kind == 0) { /* random bytes, sometimes behind a plausible first byte */
            n = xorshift(&r) % 96;
            for (size_t i = 0; i < n; i++) buf[i] = (uint8_t)xorshift(&r);
            if (n && it % 8 == 0) buf[0] = (uint8_t)(0x90 + xorshift(&r) % 16);
        } else if (kind == 1) { /* a valid header with bytes changed */
            n = sizes[t];
            memcpy(buf, hdrs[t], n);
            for (int k = 1 + (int)(xorshift(&r) % 3); k > 0; k--)
                buf[xorshift(&r) % n] = (uint8_t)xorshift(&r);
        } else if (kind == 2) { /* a valid header cut short or with a byte inserted */
            n = sizes[t];
            memcpy(buf, hdrs[t], n);
            size_t at = xorshift(&r) % n;
            if (xorshift(&r) % 2) n = at;
            else {
                memmove(buf + at + 1, buf + at, n - at);
                buf[at] = (uint8_t)xorshift(&r);
                n++;
            }
        } else { /* a valid header with fields replaced by random objects */
            size_t off = 0;
            msgpack_unpacked u;
            msgpack_unpacked_init(&u);
            cr_assert_eq(msgpack_unpack_next(&u, hdrs[t], sizes[t], &off), MSGPACK_UNPACK_SUCCESS);
            char strs[3][8];
            for (int k = 0; k < 1 + (int)(xorshift(&r) % 3); k++) {
                uint32_t i = (uint32_t)(xorshift(&r) % u.data.via.array.size);
                u.data.via.array.ptr[i] = random_object(&r, strs[k]);
            }
            msgpack_packer pk;
            msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
            cr_assert_eq(msgpack_pack_object(&pk, u.data), 0);
            msgpack_unpacked_destroy(&u);
            n = sb.size;
            memcpy(buf, sb.data, n);
            if (xorshift(&r) % 4 == 0) { /* and a random payload frame */
                np = (int)(xorshift(&r) % 2);
                psize = xorshift(&r) % sizeof junk;
                for (size_t i = 0; i < psize; i++) junk[i] = (uint8_t)xorshift(&r);
                payload = junk;
            }
        }
        msgpack_sbuffer_destroy(&sb);
        /* Decode an exact-size copy, so that ASan catches any read past the frame. */
        uint8_t *frame = malloc(n ? n : 1);
        memcpy(frame, buf, n);
        wire_msg_t d;
        auxps_error_t e = {0};
        int rc = wire_decode(&d, frame, n, payload, np ? psize : 0, np, &e);
        cr_assert(rc == 0 || rc == AUXPS_EFORMAT || rc == AUXPS_ERANGE || rc == AUXPS_EINVAL ||
                  rc == AUXPS_EVERSION, "iteration %d: rc %d", it, rc);
        if (rc == 0) {
            /* Whatever the decoder accepts, the encoder can send. */
            void *again;
            size_t again_size;
            int rc2 = wire_encode(&d, &again, &again_size, &e);
            cr_assert_eq(rc2, 0, "iteration %d: decoded %s does not re-encode: %s", it,
                         wire_type_name(d.type), e.msg);
            free(again);
        } else {
            cr_assert(e.msg[0] != '\0');
        }
        counts[kind][rc == 0]++;
        wire_msg_clear(&d);
        free(frame);
    }
    for (uint32_t t = 1; t < WIRE_TYPE_COUNT; t++) free(hdrs[t]);
    cr_log_info("fuzz: ok/refused random %d/%d, flipped %d/%d, cut %d/%d, fields %d/%d",
                counts[0][1], counts[0][0], counts[1][1], counts[1][0], counts[2][1], counts[2][0],
                counts[3][1], counts[3][0]);
    cr_assert_eq(counts[0][1] + counts[0][0] + counts[1][1] + counts[1][0] + counts[2][1] +
                 counts[2][0] + counts[3][1] + counts[3][0], ITERATIONS);
    cr_assert(counts[1][0] > 0 && counts[3][0] > 0, "mutations must be refused sometimes");
    cr_assert(counts[1][1] > 0 && counts[3][1] > 0, "some mutations stay valid, and are accepted");
}

/* ---- payload codecs -------------------------------------------------------------------- */

Test(wire, kbit_codes_pack_lsb_first_and_unpack_to_lo_plus_step_times_code) {
    const wire_seg_t segs[3] = {{4, 2, -1.0f, 0.5f}, {2, 32, 0, 0}, {3, 3, 0.0f, 0.25f}};
    const uint8_t codes[9] = {1, 2, 3, 0, 0, 0, 7, 0, 5};
    const float values[9] = {0, 0, 0, 0, 1.5f, -2.0f, 0, 0, 0};
    uint8_t out[11];
    auxps_error_t e = {0};
    cr_assert_eq(wire_segs_bytes(segs, 3), 11);
    cr_assert_eq(wire_pack_codes(segs, 3, codes, values, out, sizeof out, &e), 0, "%s", e.msg);
    cr_assert_eq(out[0], 0x39, "2-bit codes 1,2,3,0 LSB first: 0b00111001");
    float f[2];
    memcpy(f, out + 1, 8);
    cr_assert(f[0] == 1.5f && f[1] == -2.0f, "float32 segments are raw little-endian");
    cr_assert_eq(out[9], 0x47, "3-bit codes 7,0,5: 0b1_000_111 then 0b1");
    cr_assert_eq(out[10], 0x01);

    wire_msg_t m;
    memset(&m, 0, sizeof m);
    m.type = WIRE_PULL_REP;
    m.pull_rep = (wire_pull_rep_t){.length = 9, .encoding = WIRE_ENC_KBIT, .segs = segs, .nsegs = 3};
    uint8_t unaligned[12];
    memcpy(unaligned + 1, out, sizeof out); /* ZeroMQ does not align payloads */
    m.payload = unaligned + 1;
    m.payload_size = sizeof out;
    float got[9];
    cr_assert_eq(wire_payload_f32(&m, got, &e), 0, "%s", e.msg);
    const float want[9] = {-0.5f, 0.0f, 0.5f, -1.0f, 1.5f, -2.0f, 1.75f, 0.0f, 1.25f};
    for (int i = 0; i < 9; i++) cr_assert(got[i] == want[i], "value %d: %g != %g", i, got[i], want[i]);

    unaligned[11] |= 0x80; /* a padding bit of the last 3-bit segment */
    cr_assert_eq(wire_payload_f32(&m, got, &e), AUXPS_EFORMAT);
    m.payload_size = 10;
    cr_assert_eq(wire_payload_f32(&m, got, &e), AUXPS_EFORMAT);

    const uint8_t too_big[9] = {4};
    cr_assert_eq(wire_pack_codes(segs, 3, too_big, values, out, sizeof out, &e), AUXPS_EINVAL);
    cr_assert_eq(wire_pack_codes(segs, 3, codes, values, out, 10, &e), AUXPS_EINVAL);
    cr_assert_eq(wire_pack_codes(segs, 3, codes, NULL, out, sizeof out, &e), AUXPS_EINVAL);

    m.type = WIRE_HELLO;
    cr_assert_eq(wire_payload_f32(&m, got, &e), AUXPS_EINVAL);
}

Test(wire, one_bit_codes_fill_bytes_exactly) {
    wire_seg_t seg = {16, 1, -0.75f, 1.5f};
    uint8_t codes[16], out[2];
    for (int i = 0; i < 16; i++) codes[i] = (uint8_t)((0xA5C3 >> i) & 1);
    cr_assert_eq(wire_pack_codes(&seg, 1, codes, NULL, out, 2, NULL), 0);
    cr_assert_eq(out[0], 0xC3);
    cr_assert_eq(out[1], 0xA5);
}

Test(wire, payload_codes_gives_the_codes_of_k_bit_segments_and_the_floats_of_the_rest) {
    const wire_seg_t segs[3] = {{4, 2, -1.0f, 0.5f}, {2, 32, 0, 0}, {3, 3, 0.0f, 0.25f}};
    const uint8_t codes[9] = {1, 2, 3, 0, 0, 0, 7, 0, 5};
    const float values[9] = {0, 0, 0, 0, 1.5f, -2.0f, 0, 0, 0};
    uint8_t out[11];
    auxps_error_t e = {0};
    cr_assert_eq(wire_pack_codes(segs, 3, codes, values, out, sizeof out, &e), 0, "%s", e.msg);
    wire_msg_t m;
    memset(&m, 0, sizeof m);
    m.type = WIRE_PULL_REP;
    m.pull_rep = (wire_pull_rep_t){.length = 9, .encoding = WIRE_ENC_KBIT, .segs = segs, .nsegs = 3};
    m.payload = out;
    m.payload_size = sizeof out;
    float got[9] = {9, 9, 9, 9, 9, 9, 9, 9, 9};
    uint8_t gc[9] = {0};
    cr_assert_eq(wire_payload_codes(&m, got, gc, &e), 0, "%s", e.msg);
    for (int i = 0; i < 9; i++)
        if (i == 4 || i == 5) cr_assert(got[i] == values[i], "float %d", i);
        else cr_assert(gc[i] == codes[i] && got[i] == 9.0f, "code %d: %u (value %g untouched?)", i, gc[i], got[i]);
    cr_assert_eq(wire_payload_codes(&m, got, NULL, &e), AUXPS_EINVAL);
}

/* The fast packers (whole bytes for k = 1, 2, 4, 8) and the general one agree with a plain
 * LSB-first bit writer, for every width and for lengths with and without a partial last byte;
 * unpacking gives the codes and lo + step * code back, and a set padding bit is refused. */
Test(wire, kbit_pack_and_unpack_match_a_plain_bit_writer_for_every_width_and_length) {
    static const uint32_t lens[] = {1, 3, 7, 8, 13, 64, 101, 1000};
    enum { MAXN = 1000 };
    static uint8_t codes[MAXN], out[MAXN + 1], want[MAXN + 1], got[MAXN];
    static float vals[MAXN];
    util_rng_t r = {31};
    auxps_error_t e = {0};
    for (uint32_t k = 1; k <= 8; k++)
        for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
            const uint32_t n = lens[li];
            const wire_seg_t seg = {n, k, -1.5f, 0.125f};
            const size_t bytes = wire_segs_bytes(&seg, 1);
            for (uint32_t i = 0; i < n; i++) codes[i] = (uint8_t)(util_rng_next(&r) & ((1u << k) - 1));
            memset(want, 0, sizeof want);
            for (uint32_t i = 0; i < n; i++)
                for (uint32_t b = 0; b < k; b++)
                    if (codes[i] >> b & 1) want[(i * k + b) / 8] |= (uint8_t)(1u << ((i * k + b) % 8));
            cr_assert_eq(wire_pack_codes(&seg, 1, codes, NULL, out, bytes, &e), 0, "k %u n %u: %s", k, n, e.msg);
            cr_assert(memcmp(out, want, bytes) == 0, "k %u n %u: packed bytes differ", k, n);
            wire_msg_t m;
            memset(&m, 0, sizeof m);
            m.type = WIRE_PULL_REP;
            m.pull_rep = (wire_pull_rep_t){.length = n, .encoding = WIRE_ENC_KBIT, .segs = &seg, .nsegs = 1};
            m.payload = out;
            m.payload_size = bytes;
            cr_assert_eq(wire_payload_codes(&m, vals, got, &e), 0, "k %u n %u: %s", k, n, e.msg);
            cr_assert(memcmp(got, codes, n) == 0, "k %u n %u: unpacked codes differ", k, n);
            cr_assert_eq(wire_payload_f32(&m, vals, &e), 0, "k %u n %u: %s", k, n, e.msg);
            for (uint32_t i = 0; i < n; i++)
                cr_assert(vals[i] == wire_dequant(-1.5f, 0.125f, codes[i]), "k %u n %u: value %u", k, n, i);
            if ((n * k) % 8 != 0) {
                out[bytes - 1] |= 0x80;
                cr_assert_eq(wire_payload_codes(&m, vals, got, &e), AUXPS_EFORMAT, "k %u n %u", k, n);
                cr_assert_eq(wire_payload_f32(&m, vals, &e), AUXPS_EFORMAT, "k %u n %u", k, n);
            }
            codes[n - 1] = (uint8_t)(k < 8 ? 1u << k : 0);
            if (k < 8) cr_assert_eq(wire_pack_codes(&seg, 1, codes, NULL, out, bytes, &e), AUXPS_EINVAL);
        }
}

/* wire_q8_encode gives the bits of the plain two-pass loop (a float max, a branch per value),
 * with and without error feedback, on values that exercise the clamp and exact halves. */
Test(wire, q8_encoding_matches_the_plain_loop_bit_for_bit) {
    enum { N = 517 };
    static float g[N], r1[N], r2[N];
    static uint8_t c1[N], c2[N];
    util_rng_t r = {32};
    util_fill_unif(g, N, &r, -3.0, 3.0);
    util_fill_unif(r1, N, &r, -0.01, 0.01);
    g[5] = -3.5f, g[6] = 0.0f, g[7] = -0.0f;
    for (int fb = 0; fb < 2; fb++) {
        memcpy(r2, r1, sizeof r1);
        wire_seg_t seg;
        cr_assert_eq(wire_q8_encode(g, fb ? r2 : NULL, N, &seg, c2, NULL), 0);
        float amax = 0.0f;
        for (int i = 0; i < N; i++) {
            const float a = fabsf(fb ? g[i] + r1[i] : g[i]);
            if (a > amax) amax = a;
        }
        const float step = amax / 127.0f, inv = 1.0f / step, lo = -128.0f * step;
        cr_assert(seg.step == step && seg.lo == lo && seg.bits == 8 && seg.length == N);
        for (int i = 0; i < N; i++) {
            const float v = fb ? g[i] + r1[i] : g[i];
            float c = rintf(v * inv);
            if (c < -127.0f) c = -127.0f;
            if (c > 127.0f) c = 127.0f;
            c1[i] = (uint8_t)(c + 128.0f);
            cr_assert_eq(c2[i], c1[i], "feedback %d, value %d: code %u, want %u", fb, i, c2[i], c1[i]);
            if (fb) {
                const float want = v - wire_dequant(lo, step, c1[i]);
                cr_assert(memcmp(&want, &r2[i], sizeof want) == 0, "value %d: residual %a, want %a", i,
                          (double)r2[i], (double)want);
            }
        }
    }
    g[100] = NAN;
    wire_seg_t seg;
    cr_assert_eq(wire_q8_encode(g, NULL, N, &seg, c2, NULL), AUXPS_ERANGE);
    g[100] = -INFINITY;
    cr_assert_eq(wire_q8_encode(g, r1, N, &seg, c2, NULL), AUXPS_ERANGE);
}

/* q8 with error feedback: every code in 1..255, each value sent within half a step of g + r,
 * and over many pushes the values sent plus the residual add up to the gradients' sum. */
Test(wire, q8_encoding_keeps_the_sum_through_error_feedback) {
    enum { N = 1000, STEPS = 50 };
    float *g = malloc(N * sizeof(float)), *r = calloc(N, sizeof(float));
    double *sum_g = calloc(N, sizeof(double)), *sum_sent = calloc(N, sizeof(double));
    uint8_t *codes = malloc(N);
    uint32_t seed = 12345;
    auxps_error_t e = {0};
    for (int t = 0; t < STEPS; t++) {
        for (int i = 0; i < N; i++) {
            seed = seed * 1664525u + 1013904223u;
            g[i] = ((float)(seed >> 8) / 16777216.0f - 0.5f) * (i == 7 ? 100.0f : 1e-3f); /* one outlier */
            sum_g[i] += g[i];
        }
        float before[N];
        for (int i = 0; i < N; i++) before[i] = g[i] + r[i];
        wire_seg_t seg;
        cr_assert_eq(wire_q8_encode(g, r, N, &seg, codes, &e), 0, "%s", e.msg);
        cr_assert_eq(seg.bits, 8);
        cr_assert_eq(seg.length, N);
        cr_assert(seg.lo == -128.0f * seg.step && seg.step > 0.0f);
        for (int i = 0; i < N; i++) {
            cr_assert(codes[i] >= 1, "code 0 is never used: the range is symmetric");
            const float sent = wire_dequant(seg.lo, seg.step, codes[i]);
            cr_assert_leq(fabsf(before[i] - sent), 0.5001f * seg.step, "step %d value %d", t, i);
            cr_assert_eq(r[i], before[i] - sent, "the residual is what was not sent");
            sum_sent[i] += sent;
        }
    }
    /* Small values are far below the outlier's step, so most pushes send 0 for them; the
     * feedback still delivers their sum, up to one step. */
    for (int i = 0; i < N; i++)
        cr_assert(fabs(sum_sent[i] + r[i] - sum_g[i]) < 1e-4, "value %d: sent %g + residual %g, gradients %g", i,
                  sum_sent[i], (double)r[i], sum_g[i]);
    /* All zero: step 0, every code 128, nothing left over. */
    memset(g, 0, N * sizeof(float));
    memset(r, 0, N * sizeof(float));
    wire_seg_t seg;
    cr_assert_eq(wire_q8_encode(g, r, N, &seg, codes, &e), 0);
    cr_assert(seg.step == 0.0f && seg.lo == 0.0f && codes[0] == 128 && r[0] == 0.0f);
    /* Subnormal: a / 127 would be below FLT_MIN; zeros are sent, and the values stay in the
     * residual for a later push. */
    g[0] = 1e-39f, g[1] = -3e-40f;
    cr_assert_eq(wire_q8_encode(g, r, N, &seg, codes, &e), 0);
    cr_assert(seg.step == 0.0f && codes[0] == 128 && codes[1] == 128 && r[0] == 1e-39f && r[1] == -3e-40f);
    memset(r, 0, N * sizeof(float));
    g[0] = g[1] = 0.0f;
    /* A NaN is refused and the residual left as it was. */
    g[3] = NAN;
    r[5] = 0.25f;
    cr_assert_eq(wire_q8_encode(g, r, N, &seg, codes, &e), AUXPS_ERANGE);
    cr_assert(r[5] == 0.25f);
    free(g), free(r), free(sum_g), free(sum_sent), free(codes);
}

/* ---- ZeroMQ ---------------------------------------------------------------------------- */

static void *g_ctx, *g_router, *g_dealer;
static atomic_int g_freed;

static void count_free(void *data, void *hint) {
    free(data);
    atomic_fetch_add((atomic_int *)hint, 1);
}

static void zmq_up(void) {
    g_ctx = zmq_ctx_new();
    cr_assert(g_ctx != NULL);
    g_router = zmq_socket(g_ctx, ZMQ_ROUTER);
    g_dealer = zmq_socket(g_ctx, ZMQ_DEALER);
    cr_assert(g_router != NULL && g_dealer != NULL);
    int linger = 0, timeo = 5000;
    void *socks[2] = {g_router, g_dealer};
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(zmq_setsockopt(socks[i], ZMQ_LINGER, &linger, sizeof linger), 0);
        cr_assert_eq(zmq_setsockopt(socks[i], ZMQ_RCVTIMEO, &timeo, sizeof timeo), 0);
        cr_assert_eq(zmq_setsockopt(socks[i], ZMQ_SNDTIMEO, &timeo, sizeof timeo), 0);
        cr_assert_eq(wire_socket_limits(socks[i]), 0);
    }
    cr_assert_eq(zmq_bind(g_router, "tcp://127.0.0.1:*"), 0, "%s", zmq_strerror(zmq_errno()));
    char endpoint[256];
    size_t len = sizeof endpoint;
    cr_assert_eq(zmq_getsockopt(g_router, ZMQ_LAST_ENDPOINT, endpoint, &len), 0);
    cr_assert_eq(zmq_connect(g_dealer, endpoint), 0, "%s", zmq_strerror(zmq_errno()));
}

static void zmq_down(void) {
    if (g_dealer) zmq_close(g_dealer);
    if (g_router) zmq_close(g_router);
    if (g_ctx) zmq_ctx_term(g_ctx);
    g_dealer = g_router = g_ctx = NULL;
}

static void wait_for_freed(int n) {
    for (int i = 0; i < 5000 && atomic_load(&g_freed) < n; i++)
        nanosleep(&(struct timespec){0, 1000000}, NULL);
}

#define NGRAD 87044 /* the ResNet-8 with its auxiliary module */

TestSuite(wire_zmq, .init = zmq_up, .fini = zmq_down, .timeout = 30);

/* The in-place view of an f32 payload: the frame itself when aligned, NULL (copy it out) when
 * not or when the payload is coded, and the size and type checks of wire_payload_f32. */
Test(wire, an_f32_payload_is_viewed_in_place_only_when_aligned) {
    float buf[9] = {0};
    unsigned char *bytes = (unsigned char *)buf;
    wire_msg_t m;
    memset(&m, 0, sizeof m);
    m.type = WIRE_PUSH;
    m.push = (wire_push_t){.worker = 1, .length = 8, .samples = 1, .encoding = WIRE_ENC_F32};
    m.payload = bytes;
    m.payload_size = 32;
    auxps_error_t e = {0};
    const float *v = (const float *)1;
    cr_assert_eq(wire_payload_f32_view(&m, &v, &e), 0, "%s", e.msg);
    cr_assert_eq(v, buf);
    m.payload = bytes + 1; /* as a frame may sit in ZeroMQ's receive buffer */
    cr_assert_eq(wire_payload_f32_view(&m, &v, &e), 0, "%s", e.msg);
    cr_assert_null(v, "an unaligned payload is not read through a float pointer");
    m.payload = bytes;
    m.payload_size = 28;
    cr_assert_eq(wire_payload_f32_view(&m, &v, &e), AUXPS_EFORMAT);
    cr_assert_null(v);
    cr_assert(strstr(e.msg, "28 bytes") != NULL, "%s", e.msg);
    m.payload_size = 8; /* a q8 push of 8 one-byte codes: decoded, never viewed */
    wire_seg_t seg = {.length = 8, .bits = 8, .lo = -1.0f, .step = 1.0f / 128};
    m.push.encoding = WIRE_ENC_Q8, m.push.segs = &seg, m.push.nsegs = 1;
    cr_assert_eq(wire_payload_f32_view(&m, &v, &e), 0, "%s", e.msg);
    cr_assert_null(v);
    m.type = WIRE_HEARTBEAT;
    cr_assert_eq(wire_payload_f32_view(&m, &v, &e), AUXPS_EINVAL);
    cr_assert_null(v);
}

Test(wire_zmq, a_push_of_87044_floats_crosses_tcp_intact_without_a_copy) {
    float *grad = malloc(NGRAD * sizeof(float)), *expect = malloc(NGRAD * sizeof(float));
    cr_assert(grad && expect);
    for (int i = 0; i < NGRAD; i++) grad[i] = (float)i * 1e-3f - 43.0f;
    grad[0] = -0.0f;
    grad[1] = 1e-45f; /* denormal */
    grad[2] = FLT_MAX;
    memcpy(expect, grad, NGRAD * sizeof(float));

    wire_msg_t m;
    memset(&m, 0, sizeof m);
    m.type = WIRE_PUSH;
    m.rid = 0xDEADBEEF;
    m.push = (wire_push_t){.worker = 7, .shard = 0, .offset = 0, .length = NGRAD, .clock = 3,
                           .version = 2, .samples = 128, .encoding = WIRE_ENC_F32};
    m.payload = grad;
    m.payload_size = NGRAD * sizeof(float);
    auxps_error_t e = {0};
    atomic_store(&g_freed, 0);
    cr_assert_eq(wire_send(g_dealer, NULL, 0, &m, count_free, &g_freed, 0, &e), 0, "%s", e.msg);
    grad = NULL; /* owned by ZeroMQ until count_free runs */

    wire_in_t in = {0};
    cr_assert_eq(wire_recv(g_router, 1, &in, 0, &e), 0, "%s", e.msg);
    cr_assert(in.route_size > 0, "a ROUTER learns the peer's routing id");
    cr_assert_eq(in.npayload, 1);
    wire_msg_t d;
    cr_assert_eq(wire_decode_in(&in, &d, &e), 0, "%s", e.msg);
    cr_assert_eq(d.type, WIRE_PUSH);
    cr_assert_eq(d.rid, 0xDEADBEEF);
    cr_assert_eq(d.push.worker, 7);
    cr_assert_eq(d.push.length, NGRAD);
    cr_assert_eq(d.push.clock, 3);
    cr_assert_eq(d.push.version, 2);
    cr_assert_eq(d.push.samples, 128);
    cr_assert_eq(d.payload_size, (size_t)NGRAD * 4);
    cr_assert(memcmp(d.payload, expect, d.payload_size) == 0, "payload bytes changed in transit");
    float *out = malloc(NGRAD * sizeof(float));
    cr_assert_eq(wire_payload_f32(&d, out, &e), 0, "%s", e.msg);
    cr_assert(memcmp(out, expect, NGRAD * sizeof(float)) == 0);
    cr_assert(signbit(out[0]) && out[1] == 1e-45f && out[2] == FLT_MAX);
    /* ZeroMQ gives a frame this large its own allocation, so the node reads it in place. */
    const float *view = NULL;
    cr_assert_eq(wire_payload_f32_view(&d, &view, &e), 0, "%s", e.msg);
    cr_assert_eq((const void *)view, d.payload, "an aligned f32 payload is read in place");

    /* The node answers on the route it learned; the worker matches the reply by rid. */
    wire_msg_t ack;
    memset(&ack, 0, sizeof ack);
    ack.type = WIRE_PUSH_ACK;
    ack.rid = d.rid;
    ack.push_ack = (wire_push_ack_t){0, WIRE_VEC_PARAMS, 3, 3};
    cr_assert_eq(wire_send(g_router, in.route, in.route_size, &ack, NULL, NULL, 0, &e), 0, "%s",
                 e.msg);
    wire_in_t in2 = {0};
    wire_msg_t d2;
    cr_assert_eq(wire_recv(g_dealer, 0, &in2, 0, &e), 0, "%s", e.msg);
    cr_assert_eq(in2.route_size, 0);
    cr_assert_eq(wire_decode_in(&in2, &d2, &e), 0, "%s", e.msg);
    cr_assert_eq(d2.type, WIRE_PUSH_ACK);
    cr_assert_eq(d2.rid, 0xDEADBEEF);
    cr_assert_eq(d2.push_ack.version, 3);

    wait_for_freed(1);
    cr_assert_eq(atomic_load(&g_freed), 1, "the zero-copy payload is freed exactly once");
    wire_msg_clear(&d);
    wire_msg_clear(&d2);
    wire_in_close(&in);
    wire_in_close(&in);
    wire_in_close(&in2);
    free(out);
    free(expect);
}

Test(wire_zmq, a_copied_payload_may_change_after_send) {
    sample_t s;
    sample(WIRE_STATS_PUSH, &s);
    float before[16];
    memcpy(before, s.values, sizeof before);
    auxps_error_t e = {0};
    cr_assert_eq(wire_send(g_dealer, NULL, 0, &s.m, NULL, NULL, 0, &e), 0, "%s", e.msg);
    for (int i = 0; i < 16; i++) s.values[i] = 12345.0f;
    wire_in_t in = {0};
    wire_msg_t d;
    cr_assert_eq(wire_recv(g_router, 1, &in, 0, &e), 0, "%s", e.msg);
    cr_assert_eq(wire_decode_in(&in, &d, &e), 0, "%s", e.msg);
    cr_assert(memcmp(d.payload, before, sizeof before) == 0);
    wire_msg_clear(&d);
    wire_in_close(&in);
}

/* Sends raw frames from the dealer. */
static void send_raw(const void *const *frames, const size_t *sizes, int n) {
    for (int i = 0; i < n; i++)
        cr_assert(zmq_send(g_dealer, frames[i], sizes[i], i + 1 < n ? ZMQ_SNDMORE : 0) >= 0);
}

/* The router must refuse the next message with code, answer ERROR, and stay in step. */
static void expect_refused_then_in_step(int code) {
    auxps_error_t e = {0};
    wire_in_t in = {0};
    int rc = wire_recv(g_router, 1, &in, 0, &e);
    cr_assert_eq(rc, code, "rc %d (%s)", rc, e.msg);
    cr_assert(in.route_size > 0, "the route survives a refusal, for the ERROR reply");
    cr_assert_eq(wire_send_error(g_router, in.route, in.route_size, 0, wire_error_code(rc), e.msg,
                                 &e), 0, "%s", e.msg);
    wire_msg_t d;
    cr_assert_eq(wire_recv(g_dealer, 0, &in, 0, &e), 0, "%s", e.msg);
    cr_assert_eq(wire_decode_in(&in, &d, &e), 0, "%s", e.msg);
    cr_assert_eq(d.type, WIRE_ERROR);
    cr_assert_eq(d.error.code, WIRE_ERR_BAD_MESSAGE);
    wire_in_close(&in);

    sample_t s;
    sample(WIRE_HEARTBEAT, &s);
    cr_assert_eq(wire_send(g_dealer, NULL, 0, &s.m, NULL, NULL, 0, &e), 0, "%s", e.msg);
    cr_assert_eq(wire_recv(g_router, 1, &in, 0, &e), 0, "%s", e.msg);
    cr_assert_eq(wire_decode_in(&in, &d, &e), 0, "%s", e.msg);
    cr_assert_eq(d.type, WIRE_HEARTBEAT, "the next message starts on its own first frame");
    wire_in_close(&in);
}

Test(wire_zmq, a_message_breaking_frame_limits_is_drained_and_answered) {
    sample_t s;
    sample(WIRE_PULL, &s);
    void *hdr;
    size_t size;
    encode_ok(&s.m, &hdr, &size);
    const void *four[4] = {hdr, "a", "b", "c"};
    const size_t four_sizes[4] = {size, 1, 1, 1};
    send_raw(four, four_sizes, 4);
    expect_refused_then_in_step(AUXPS_EFORMAT);

    uint8_t *big = calloc(1, WIRE_MAX_HEADER + 1);
    const void *one[1] = {big};
    const size_t one_size[1] = {WIRE_MAX_HEADER + 1};
    send_raw(one, one_size, 1);
    expect_refused_then_in_step(AUXPS_ERANGE);
    free(big);
    free(hdr);

    /* An empty delimiter frame (what a REQ socket sends first) is received, then refused by
     * the decoder as an empty header. */
    const void *delim[1] = {""};
    const size_t delim_size[1] = {0};
    send_raw(delim, delim_size, 1);
    auxps_error_t e = {0};
    wire_in_t in = {0};
    wire_msg_t d;
    cr_assert_eq(wire_recv(g_router, 1, &in, 0, &e), 0, "%s", e.msg);
    cr_assert_eq(wire_decode_in(&in, &d, &e), AUXPS_EFORMAT);
    wire_in_close(&in);
}

Test(wire_zmq, a_failed_send_still_frees_the_zero_copy_payload_once) {
    atomic_store(&g_freed, 0);
    sample_t s;
    sample(WIRE_PUSH, &s);
    float *p = malloc(NVALUES * sizeof(float));
    memcpy(p, s.values, NVALUES * sizeof(float));
    s.m.payload = p;
    s.m.payload_size = NVALUES * sizeof(float) - 4; /* the header declares more */
    auxps_error_t e = {0};
    cr_assert_eq(wire_send(g_dealer, NULL, 0, &s.m, count_free, &g_freed, 0, &e), AUXPS_EFORMAT);
    cr_assert_eq(atomic_load(&g_freed), 1);

    /* An unknown route on a ROUTER with ZMQ_ROUTER_MANDATORY fails in ZeroMQ itself. */
    int mandatory = 1;
    cr_assert_eq(zmq_setsockopt(g_router, ZMQ_ROUTER_MANDATORY, &mandatory, sizeof mandatory), 0);
    p = malloc(NVALUES * sizeof(float));
    memcpy(p, s.values, NVALUES * sizeof(float));
    s.m.payload = p;
    s.m.payload_size = NVALUES * sizeof(float);
    int rc = wire_send(g_router, "nobody", 6, &s.m, count_free, &g_freed, 0, &e);
    cr_assert_eq(rc, AUXPS_EIO, "%s", e.msg);
    cr_assert_eq(errno, EHOSTUNREACH, "errno is ZeroMQ's: %s", e.msg);
    cr_assert_eq(atomic_load(&g_freed), 2);

    /* A message without a payload frame still consumes the callback. */
    sample(WIRE_PUSH_ACK, &s);
    cr_assert_eq(wire_send(g_dealer, NULL, 0, &s.m, count_free, &g_freed, 0, &e), 0, "%s", e.msg);
    cr_assert_eq(atomic_load(&g_freed), 3);
}
