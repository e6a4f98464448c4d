/* coded.c - the k-bit pull and q8 push codings of a params shard (coded.h). */
#include "coded.h"

#include "quant.h"

#include <inttypes.h>

/* Tensor i of model relative to shard [off, off + len): 1 inside, 0 outside, or
 * AUXPS_ECONFIG if it straddles a shard edge. */
static int in_shard(const model_tensor_t *t, uint64_t off, uint64_t len, auxps_error_t *err) {
    const uint64_t a = t->offset, b = t->offset + t->size;
    if (b <= off || a >= off + len) return 0;
    if (a < off || b > off + len)
        return auxps_error_set(err, AUXPS_ECONFIG, "the shard [%" PRIu64 ", %" PRIu64 ") splits tensor %s", off,
                               off + len, t->name);
    return 1;
}

int coded_kbit_layout(const model_t *model, uint64_t off, uint64_t len, int k, wire_seg_t *segs, uint32_t max,
                      uint32_t *nsegs, auxps_error_t *err) {
    *nsegs = 0;
    if (k < 1 || k > 8) return auxps_error_set(err, AUXPS_EINVAL, "k-bit layout: %d bits", k);
    if (off + len > model_num_params(model) || off + len < off)
        return auxps_error_set(err, AUXPS_ECONFIG, "the shard [%" PRIu64 ", %" PRIu64 ") leaves the %zu params",
                               off, off + len, model_num_params(model));
    const float step = k == 1 ? 0.0f : 2.0f / (float)((1u << k) - 1), lo = k == 1 ? 0.0f : -1.0f;
    uint32_t ns = 0;
    uint64_t covered = 0;
    for (int i = 0; i < model_num_tensors(model); i++) {
        const model_tensor_t *t = model_tensor(model, i);
        const int rc = in_shard(t, off, len, err);
        if (rc < 0) return rc;
        if (rc == 0) continue;
        covered += t->size;
        wire_seg_t *last = ns > 0 ? &segs[ns - 1] : NULL;
        if (!t->quantized && last != NULL && last->bits == 32 && last->length + t->size <= WIRE_MAX_FLOATS) {
            last->length += (uint32_t)t->size;
            continue;
        }
        if (ns == max) return auxps_error_set(err, AUXPS_EINVAL, "k-bit layout: more than %" PRIu32 " segments", max);
        segs[ns++] = t->quantized ? (wire_seg_t){(uint32_t)t->size, (uint32_t)k, lo, step}
                                  : (wire_seg_t){(uint32_t)t->size, 32, 0.0f, 0.0f};
    }
    if (covered != len)
        return auxps_error_set(err, AUXPS_ECONFIG, "the shard [%" PRIu64 ", %" PRIu64 ") does not hold whole tensors",
                               off, off + len);
    *nsegs = ns;
    return 0;
}

int coded_take_kbit(const model_t *model, const wire_msg_t *m, int k, float *params, float *wq, uint8_t *codes,
                    auxps_error_t *err) {
    const wire_pull_rep_t *r = &m->pull_rep;
    if (m->type != WIRE_PULL_REP || r->encoding != WIRE_ENC_KBIT)
        return auxps_error_set(err, AUXPS_EFORMAT, "%s: not a k-bit PULL_REP", wire_type_name(m->type));
    if (r->offset > model_num_params(model) || r->length > model_num_params(model) - r->offset)
        return auxps_error_set(err, AUXPS_EFORMAT, "PULL_REP: [%" PRIu64 ", %" PRIu64 ") leaves the %zu params",
                               r->offset, r->offset + r->length, model_num_params(model));
    int rc = wire_payload_codes(m, params + r->offset, codes + r->offset, err);
    if (rc != 0) return rc;
    const float levels = (float)((1u << k) - 1);
    uint32_t si = 0;
    uint64_t spos = r->offset; /* where segment si starts */
    for (int i = 0; i < model_num_tensors(model); i++) {
        const model_tensor_t *t = model_tensor(model, i);
        if (t->offset < r->offset || t->offset + t->size > r->offset + r->length) continue;
        while (si < r->nsegs && spos + r->segs[si].length <= t->offset) spos += r->segs[si++].length;
        const wire_seg_t *g = si < r->nsegs ? &r->segs[si] : NULL;
        if (g == NULL || t->offset + t->size > spos + g->length)
            return auxps_error_set(err, AUXPS_EFORMAT, "PULL_REP: tensor %s spans two segments", t->name);
        if (!t->quantized) {
            if (g->bits != 32)
                return auxps_error_set(err, AUXPS_EFORMAT, "PULL_REP: full-precision tensor %s sent in %" PRIu32
                                       "-bit codes", t->name, g->bits);
            continue;
        }
        if (g->bits != (uint32_t)k || (k == 1 ? g->lo != -0.5f * g->step : g->lo != -1.0f || g->step != 2.0f / levels))
            return auxps_error_set(err, AUXPS_EFORMAT, "PULL_REP: tensor %s sent as %" PRIu32 "-bit codes with "
                                   "lo %g and step %g, not the run's %d-bit weights", t->name, g->bits,
                                   (double)g->lo, (double)g->step, k);
        quant_weight_decode(wq + t->offset, codes + t->offset, t->size, k, 0.5f * g->step);
    }
    return 0;
}

int coded_q8_encode(const model_t *model, uint64_t off, uint64_t len, const float *g, float *resid, uint8_t *codes,
                    wire_seg_t *segs, uint32_t max, uint32_t *nsegs, auxps_error_t *err) {
    *nsegs = 0;
    for (int i = 0; i < model_num_tensors(model); i++) {
        const model_tensor_t *t = model_tensor(model, i);
        int rc = in_shard(t, off, len, err);
        if (rc < 0) return rc;
        if (rc == 0) continue;
        if (*nsegs == max) return auxps_error_set(err, AUXPS_EINVAL, "q8: more than %" PRIu32 " segments", max);
        auxps_error_t e = {0};
        if ((rc = wire_q8_encode(g + t->offset, resid + t->offset, (uint32_t)t->size, &segs[*nsegs],
                                 codes + t->offset, &e)) != 0)
            return auxps_error_set(err, rc, "the gradient of %s: %s", t->name, e.msg);
        ++*nsegs;
    }
    return 0;
}
