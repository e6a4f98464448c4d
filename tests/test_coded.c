/* test_coded.c - the shard codings of common/coded.c on ResNet-8 W2A2 + aux and its one- and
 * two-node shard maps: the k-bit segment table tiles the shard with a segment per quantized
 * tensor; a k-bit reply built as a node builds it decodes to the quantizer's weights bit for
 * bit, and every malformed reply is refused with AUXPS_EFORMAT; the q8 encoding is
 * wire_q8_encode per tensor. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "coded.h"
#include "coord.h"
#include "quant.h"
#include "util.h"

typedef struct {
    model_t *model;
    size_t np;
    int T;
    float *w, *wq, *got_wq, *got_p;
    uint8_t *codes, *scratch;
    wire_shard_t map[3][WIRE_MAX_SHARDS];
} fix_t;

static void fix_init(fix_t *f, int wbits) {
    memset(f, 0, sizeof *f);
    model_spec_t sp;
    model_spec_default(&sp);
    sp.wbits = wbits;
    f->model = model_new(&sp, 1);
    cr_assert_not_null(f->model);
    f->np = model_num_params(f->model);
    f->T = model_num_tensors(f->model);
    f->w = malloc(f->np * sizeof(float));
    f->wq = malloc(f->np * sizeof(float));
    f->got_wq = malloc(f->np * sizeof(float));
    f->got_p = malloc(f->np * sizeof(float));
    f->codes = malloc(f->np);
    f->scratch = malloc(f->np);
    util_rng_t r = {41};
    util_fill_unif(f->w, f->np, &r, -0.3, 0.3);
    for (int S = 1; S <= 2; S++) cr_assert_eq(coord_shard_map(f->model, S, f->map[S], NULL), 0);
}

static void fix_free(fix_t *f) {
    free(f->w), free(f->wq), free(f->got_wq), free(f->got_p), free(f->codes), free(f->scratch);
    model_destroy(&f->model);
}

/* A node's k-bit reply for shard sh: the segments, and the payload in *payload (malloc'd). */
static size_t build_reply(fix_t *f, const wire_shard_t *sh, int k, wire_seg_t *segs, uint32_t *ns, uint8_t **payload) {
    cr_assert_eq(coded_kbit_layout(f->model, sh->offset, sh->length, k, segs, (uint32_t)f->T, ns, NULL), 0);
    uint32_t si = 0;
    for (int i = 0; i < f->T; i++) {
        const model_tensor_t *t = model_tensor(f->model, i);
        if (t->offset < sh->offset || t->offset >= sh->offset + sh->length || !t->quantized) continue;
        quant_weight_forward(f->wq + t->offset, f->codes + t->offset, f->w + t->offset, t->size, k);
        while (segs[si].bits == 32) si++;
        if (k == 1) {
            const float e = quant_weight_mean(f->w + t->offset, t->size);
            segs[si].lo = -e, segs[si].step = 2.0f * e;
        }
        si++;
    }
    const size_t bytes = wire_segs_bytes(segs, *ns);
    *payload = malloc(bytes + 1);
    cr_assert_eq(wire_pack_codes(segs, *ns, f->codes + sh->offset, f->w + sh->offset, *payload, bytes, NULL), 0);
    return bytes;
}

static wire_msg_t reply_msg(const wire_shard_t *sh, const wire_seg_t *segs, uint32_t ns, const void *p, size_t bytes) {
    wire_msg_t m;
    memset(&m, 0, sizeof m);
    m.type = WIRE_PULL_REP;
    m.pull_rep = (wire_pull_rep_t){sh->id, WIRE_VEC_PARAMS, sh->offset, sh->length, 1, 0, WIRE_ENC_KBIT, segs, ns};
    m.payload = p;
    m.payload_size = bytes;
    return m;
}

Test(coded, kbit_layout_tiles_the_shard_with_a_segment_per_quantized_tensor) {
    fix_t f;
    fix_init(&f, 2);
    wire_seg_t *segs = malloc(sizeof(wire_seg_t) * (size_t)f.T);
    for (int S = 1; S <= 2; S++) {
        uint64_t total = 0;
        for (int s = 0; s < S; s++) {
            const wire_shard_t *sh = &f.map[S][s];
            uint32_t ns = 0, nq = 0, want_q = 0;
            cr_assert_eq(coded_kbit_layout(f.model, sh->offset, sh->length, 2, segs, (uint32_t)f.T, &ns, NULL), 0);
            uint64_t len = 0;
            for (uint32_t i = 0; i < ns; i++) {
                len += segs[i].length;
                if (segs[i].bits == 2) {
                    nq++;
                    cr_assert(segs[i].lo == -1.0f && segs[i].step == 2.0f / 3.0f);
                } else {
                    cr_assert_eq(segs[i].bits, 32);
                    cr_assert(i == 0 || segs[i - 1].bits != 32, "two float32 runs in a row");
                }
            }
            for (int i = 0; i < f.T; i++) {
                const model_tensor_t *t = model_tensor(f.model, i);
                want_q += t->quantized && t->offset >= sh->offset && t->offset < sh->offset + sh->length;
            }
            cr_assert_eq(len, sh->length);
            cr_assert_eq(nq, want_q);
            cr_assert_gt(nq, 0);
            total += len;
        }
        cr_assert_eq(total, f.np);
    }
    uint32_t ns = 99;
    const model_tensor_t *t1 = model_tensor(f.model, 1);
    cr_assert_eq(coded_kbit_layout(f.model, 0, t1->offset + 1, 2, segs, (uint32_t)f.T, &ns, NULL), AUXPS_ECONFIG,
                 "a shard that splits a tensor");
    cr_assert_eq(ns, 0);
    cr_assert_eq(coded_kbit_layout(f.model, 0, f.np + 1, 2, segs, (uint32_t)f.T, &ns, NULL), AUXPS_ECONFIG);
    cr_assert_eq(coded_kbit_layout(f.model, 0, f.np, 2, segs, 2, &ns, NULL), AUXPS_EINVAL, "room for 2 segments");
    cr_assert_eq(coded_kbit_layout(f.model, 0, f.np, 9, segs, (uint32_t)f.T, &ns, NULL), AUXPS_EINVAL);
    free(segs);
    fix_free(&f);
}

/* What the node sends decodes to the quantizer's own weights, bit for bit, for 1 and 2 bits,
 * on each shard of the two-node map. */
Test(coded, kbit_reply_decodes_to_the_quantizers_weights_bit_for_bit) {
    static const int widths[] = {1, 2, 4};
    for (size_t wi = 0; wi < sizeof widths / sizeof widths[0]; wi++) {
        const int k = widths[wi];
        fix_t f;
        fix_init(&f, k);
        wire_seg_t *segs = malloc(sizeof(wire_seg_t) * (size_t)f.T);
        for (int s = 0; s < 2; s++) {
            const wire_shard_t *sh = &f.map[2][s];
            uint32_t ns;
            uint8_t *payload;
            const size_t bytes = build_reply(&f, sh, k, segs, &ns, &payload);
            wire_msg_t m = reply_msg(sh, segs, ns, payload, bytes);
            auxps_error_t e = {0};
            cr_assert_eq(coded_take_kbit(f.model, &m, k, f.got_p, f.got_wq, f.scratch, &e), 0, "%s", e.msg);
            for (int i = 0; i < f.T; i++) {
                const model_tensor_t *t = model_tensor(f.model, i);
                if (t->offset < sh->offset || t->offset >= sh->offset + sh->length) continue;
                if (t->quantized)
                    cr_assert(memcmp(f.got_wq + t->offset, f.wq + t->offset, t->size * sizeof(float)) == 0,
                              "k %d: %s decodes to other weights", k, t->name);
                else
                    cr_assert(memcmp(f.got_p + t->offset, f.w + t->offset, t->size * sizeof(float)) == 0,
                              "k %d: %s's floats differ", k, t->name);
            }
            free(payload);
        }
        free(segs);
        fix_free(&f);
    }
}

/* Every way a peer's k-bit reply can disagree with the run is an AUXPS_EFORMAT. */
Test(coded, a_malformed_kbit_reply_is_a_format_error) {
    fix_t f;
    fix_init(&f, 2);
    const wire_shard_t *sh = &f.map[1][0];
    wire_seg_t *segs = malloc(sizeof(wire_seg_t) * (size_t)f.T), *bad = malloc(sizeof(wire_seg_t) * (size_t)f.T);
    uint32_t ns, q = 0;
    uint8_t *payload;
    const size_t bytes = build_reply(&f, sh, 2, segs, &ns, &payload);
    while (segs[q].bits == 32) q++; /* the first quantized tensor's segment */
    auxps_error_t e = {0};
    wire_msg_t m;
    int checked = 0;
    for (int c = 0; c < 7; c++) {
        memcpy(bad, segs, sizeof(wire_seg_t) * ns);
        m = reply_msg(sh, bad, ns, payload, bytes);
        switch (c) {
        case 0: bad[q].lo = -0.5f; break;                     /* not the run's DoReFa levels */
        case 1: bad[q].step = 1.0f; break;
        case 2: m.pull_rep.encoding = WIRE_ENC_F32; break;   /* not a k-bit reply */
        case 3: m.payload_size = bytes - 1; break;           /* short payload */
        case 4: m.pull_rep.offset = f.np; break;             /* outside the model */
        case 5: /* a quantized tensor sent as float32 */
            bad[q] = (wire_seg_t){bad[q].length, 32, 0.0f, 0.0f};
            m.payload_size = wire_segs_bytes(bad, ns);
            break;
        case 6: /* one segment cut in two: the tensor spans two segments */
            memmove(bad + q + 1, bad + q, sizeof(wire_seg_t) * (ns - q));
            bad[q].length = 1, bad[q + 1].length -= 1;
            m.pull_rep.nsegs = ns + 1;
            m.payload_size = wire_segs_bytes(bad, ns + 1);
            break;
        }
        if (c >= 5) { /* payloads of the new sizes */
            uint8_t *p2 = calloc(m.payload_size, 1);
            m.payload = p2;
            cr_assert_eq(coded_take_kbit(f.model, &m, 2, f.got_p, f.got_wq, f.scratch, &e), AUXPS_EFORMAT,
                         "case %d", c);
            free(p2);
        } else {
            cr_assert_eq(coded_take_kbit(f.model, &m, 2, f.got_p, f.got_wq, f.scratch, &e), AUXPS_EFORMAT,
                         "case %d", c);
        }
        cr_assert_gt(strlen(e.msg), 0);
        checked++;
    }
    cr_assert_eq(checked, 7);
    m = reply_msg(sh, segs, ns, payload, bytes);
    cr_assert_eq(coded_take_kbit(f.model, &m, 2, f.got_p, f.got_wq, f.scratch, &e), 0, "%s", e.msg);
    cr_assert_eq(coded_take_kbit(f.model, &m, 1, f.got_p, f.got_wq, f.scratch, NULL), AUXPS_EFORMAT,
                 "2-bit codes in a 1-bit run");
    free(payload), free(segs), free(bad);
    fix_free(&f);
}

/* The q8 encoding is wire_q8_encode of each tensor of the shard, in order, with its residual;
 * a NaN names its tensor. */
Test(coded, q8_encode_is_wire_q8_per_tensor_and_names_a_bad_tensor) {
    fix_t f;
    fix_init(&f, 2);
    const wire_shard_t *sh = &f.map[2][1];
    wire_seg_t *segs = malloc(sizeof(wire_seg_t) * (size_t)f.T), one;
    float *r1 = calloc(f.np, sizeof(float)), *r2 = calloc(f.np, sizeof(float));
    uint8_t *c2 = malloc(f.np);
    uint32_t ns = 0, k = 0;
    cr_assert_eq(coded_q8_encode(f.model, sh->offset, sh->length, f.w, r1, f.codes, segs, (uint32_t)f.T, &ns, NULL), 0);
    for (int i = 0; i < f.T; i++) {
        const model_tensor_t *t = model_tensor(f.model, i);
        if (t->offset < sh->offset || t->offset >= sh->offset + sh->length) continue;
        cr_assert_eq(wire_q8_encode(f.w + t->offset, r2 + t->offset, (uint32_t)t->size, &one, c2 + t->offset, NULL), 0);
        cr_assert(k < ns && memcmp(&segs[k], &one, sizeof one) == 0, "segment %u of %s", k, t->name);
        k++;
    }
    cr_assert_eq(k, ns);
    cr_assert(memcmp(f.codes + sh->offset, c2 + sh->offset, sh->length) == 0);
    cr_assert(memcmp(r1 + sh->offset, r2 + sh->offset, sh->length * sizeof(float)) == 0);
    const model_tensor_t *last = model_tensor(f.model, f.T - 1);
    f.w[last->offset] = NAN;
    auxps_error_t e = {0};
    cr_assert_eq(coded_q8_encode(f.model, sh->offset, sh->length, f.w, r1, f.codes, segs, (uint32_t)f.T, &ns, &e),
                 AUXPS_ERANGE);
    cr_assert(strstr(e.msg, last->name) != NULL, "%s", e.msg);
    cr_assert_eq(coded_q8_encode(f.model, sh->offset, sh->length, f.w, r1, f.codes, segs, 1, &ns, &e), AUXPS_EINVAL);
    free(segs), free(r1), free(r2), free(c2);
    fix_free(&f);
}
