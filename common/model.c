/* model.c - the quantized ResNet with its auxiliary module, and the small MLP.
 *
 * model_new lays out the parameter vector (docs/MODEL.md), the statistics vector and one arena
 * for the activations of a pass at max_batch and their gradients, planned from the lifetimes of
 * its buffers (docs/MODEL.md "Memory"): quantized activations are kept as codes, and o, the last
 * block's a_out, s, the stem's output and the shortcuts' and the auxiliary module's 1x1
 * convolution outputs are recomputed by the backward pass instead of kept. Forward and
 * backward are written out layer by layer so that the backward pass reads as the forward pass
 * in reverse. Activations nobody reads again are not stored: a block's
 * o = BN2(c2) + shortcut is written in one pass onto the shortcut's BN output (or from x), the
 * auxiliary stream's ReLU(adaptor BN + D(a)) likewise, and A(BN1(c1)) is fused so that BN1's
 * output is never kept (its backward pass recomputes the quantizer's mask). */
#include "model.h"

#include "error.h"
#include "layers.h"
#include "quant.h"
#include "rng.h"

#include <assert.h>
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_RES_BLOCKS (3 * MODEL_MAX_BLOCKS)
/* The tables hold the largest model model_spec_check accepts: a ResNet with MODEL_MAX_BLOCKS
 * blocks per stage and the auxiliary module. A block has at most five convolutions (conv1,
 * conv2, the shortcut, and the auxiliary adaptor and down-sampling ones), each followed by a
 * batch norm with gamma and beta: 15 tensors and 5 batch norms. Outside the blocks come the stem
 * and the auxiliary start (a convolution and a batch norm each) and two fc layers (weight and
 * bias). The MLP needs 7 tensors and 2 batch norms. */
#define MAX_TENSORS (15 * MAX_RES_BLOCKS + 2 * 3 + 2 * 2)
#define MAX_BNS (5 * MAX_RES_BLOCKS + 2)
/* Activations: fourteen per block (c1, h, c2, o, scc, out, adc, a_out, dnc and the recomputed
 * ob, sccb, sccg, adb and dnb) and thirteen outside the blocks (in, sc0, s, x0, asc, a0, pool,
 * logits, apool, alogits, the recomputed scb, sb and ascb); the MLP has seven. */
#define MAX_ACTS (14 * MAX_RES_BLOCKS + 13)
#define MAX_VARS (2 * MAX_ACTS)

/* One buffer of the arena: activation t is var 2t, its gradient var 2t + 1. */
typedef struct {
    size_t len;         /* values per image */
    int coded;          /* stored as k-bit activation codes, one byte per value (quant_act_encode) */
    int first, last;    /* the first and last step of the schedule that use it; -1: unused */
    int root;           /* the var whose storage it shares (an in-place kernel), or itself */
} var_t;

typedef struct {
    conv_shape_t s;     /* s.n is max_batch; the pass sets the real n */
    size_t w;           /* weight offset in params */
    int quantized;
} conv_t;

typedef struct {
    int c, hw;
    size_t p;           /* gamma offset in params; beta follows */
    size_t st;          /* running mean offset in stats; var follows */
    size_t save;        /* batch mean offset in the saved-statistics buffer; rstd follows */
} bn_t;

typedef struct {
    int has_sc, has_dn, last;
    conv_t conv1, conv2, sc, ad, dn;
    bn_t bn1, bn2, bnsc, bnad, bndn;
    /* activation ids (act_alloc); x_in is the previous block's out, a_in its a_out */
    size_t x_in, c1, h, c2, o, scc, out;
    size_t a_in, adc, a_out, dnc;
    size_t ob;          /* o as the backward pass recomputes it */
    size_t sccb, sccg;  /* scc as the backward pass recomputes it, for o and for its gradient */
    size_t adb, dnb;    /* adc and dnc as the backward pass recomputes them */
    size_t out_len, a_len;  /* per image, floats */
} block_t;

struct model {
    model_spec_t spec;
    int max_batch, n;           /* n: batch of the last forward pass */
    int trained;                /* the last forward pass was in training mode with labels */
    int frozen;                 /* wq was loaded directly: do not requantize from params */
    int qgrads;                 /* backward leaves dL/dwq in the quantized tensors' grads */
    float bn_momentum;          /* of the running statistics; 0.1 as PyTorch */

    model_tensor_t tensors[MAX_TENSORS];
    int ntensors;
    size_t nparams, ninfer, nstats, ninfer_stats, nsave;
    bn_t *bns[MAX_BNS];
    int nbns;

    float *params, *grads, *stats;
    float *wq, *dwq;            /* quantized weights and dL/dwq, params layout */
    uint8_t *codes;             /* k-bit codes, params layout */
    float *save;                /* batch mean / rstd of every batch norm */
    /* Activations and their gradients share one arena, laid out by plan_arena from their
     * lifetimes over the schedule of a pass: a buffer is reused once its last reader is done. */
    var_t vars[MAX_VARS];
    int nacts;
    size_t off_train[MAX_VARS];  /* float offsets of every var: forward and backward */
    size_t off_eval[MAX_VARS];   /* forward alone, for evaluation */
    const size_t *off;          /* the plan of the last forward pass */
    float *arena;
    size_t narena;              /* floats */
    float *col;                 /* the convolutions' scratch (conv_scratch_size_codes) */
    size_t ncol;
    float *img;                 /* one image of the last block's a_out, recomputed, per part */
    size_t nimg;                /* floats of one part's image */
    pool_t *threads;            /* the kernels' threads (model_set_threads), or NULL */
    int *y;

    /* ResNet */
    conv_t stem;
    bn_t stem_bn, as_bn;
    conv_t as;
    block_t blocks[MAX_RES_BLOCKS];
    int nblocks;
    size_t in, sc0, s, x0, asc, a0;
    size_t scb, sb;     /* sc0 and s as the backward pass recomputes them */
    size_t ascb;        /* asc as the backward pass recomputes it */
    size_t pool, logits, apool, alogits;
    int feat, hw_last;
    size_t p_fc1, p_fc2;

    /* MLP */
    size_t p_in, p_mid;
    bn_t mbn1, mbn2;
    size_t z1, h1, z2, b2, h2;
};

/* ---- layout ---- */

static size_t add_tensor(model_t *m, const char *name, int kind, int quantized, int aux,
                         int d0, int d1, int d2, int d3, int ndim) {
    assert(m->ntensors < MAX_TENSORS); /* MAX_TENSORS covers every valid spec */
    model_tensor_t *t = &m->tensors[m->ntensors++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->shape[0] = d0; t->shape[1] = d1; t->shape[2] = d2; t->shape[3] = d3;
    t->ndim = ndim;
    t->size = (size_t)d0 * d1 * d2 * d3;
    t->offset = m->nparams;
    t->quantized = quantized;
    t->aux = aux;
    t->kind = kind;
    m->nparams += t->size;
    return t->offset;
}

/* Declares an activation of per_image floats per image and returns its id; plan_arena gives it
 * and its gradient their place. */
static size_t act_alloc(model_t *m, size_t per_image) {
    assert(m->nacts < MAX_ACTS); /* MAX_ACTS covers every valid spec */
    const size_t t = (size_t)m->nacts++;
    m->vars[2 * t].len = per_image;
    m->vars[2 * t + 1].len = per_image;
    return t;
}

/* An activation quantizer's output: stored as its codes when they fit a byte. Only convolutions
 * and the identity shortcut read these, and they decode them. */
static size_t act_alloc_codes(model_t *m, size_t per_image) {
    const size_t t = act_alloc(m, per_image);
    m->vars[2 * t].coded = m->spec.abits <= QUANT_CODE_MAX_BITS;
    return t;
}

static void conv_make(model_t *m, conv_t *cv, const char *name, int aux, int quant,
                      int cin, int h, int w, int cout, int k, int stride) {
    conv_shape_init(&cv->s, m->max_batch, cin, h, w, cout, k, stride, k / 2);
    cv->quantized = quant && m->spec.wbits < 32;
    cv->w = add_tensor(m, name, MODEL_T_CONV, cv->quantized, aux, cout, cin, k, k, 4);
    size_t col = conv_scratch_size_codes(&cv->s);
    if (col > m->ncol) m->ncol = col;
}

static void bn_make(model_t *m, bn_t *bn, const char *prefix, int aux, int c, int hw) {
    char name[40];
    bn->c = c;
    bn->hw = hw;
    snprintf(name, sizeof name, "%s.gamma", prefix);
    bn->p = add_tensor(m, name, MODEL_T_BN_GAMMA, 0, aux, c, 1, 1, 1, 1);
    snprintf(name, sizeof name, "%s.beta", prefix);
    add_tensor(m, name, MODEL_T_BN_BETA, 0, aux, c, 1, 1, 1, 1);
    bn->st = m->nstats;
    m->nstats += 2 * (size_t)c;
    bn->save = m->nsave;
    m->nsave += 2 * (size_t)c;
    assert(m->nbns < MAX_BNS);
    m->bns[m->nbns++] = bn;
}

static size_t fc_make(model_t *m, const char *prefix, int aux, int in, int out) {
    char name[40];
    snprintf(name, sizeof name, "%s.w", prefix);
    size_t off = add_tensor(m, name, MODEL_T_FC_W, 0, aux, out, in, 1, 1, 2);
    snprintf(name, sizeof name, "%s.b", prefix);
    add_tensor(m, name, MODEL_T_FC_B, 0, aux, out, 1, 1, 1, 1);
    return off;
}

static void build_resnet(model_t *m) {
    const model_spec_t *sp = &m->spec;
    int c = sp->widths[0], h = sp->in_h, w = sp->in_w;
    char name[40];

    conv_make(m, &m->stem, "stem.conv.w", 0, 0, sp->in_c, h, w, c, 3, 1);
    bn_make(m, &m->stem_bn, "stem.bn", 0, c, h * w);
    m->in = act_alloc(m, (size_t)sp->in_c * h * w);
    m->sc0 = act_alloc(m, (size_t)c * h * w);
    m->s = act_alloc(m, (size_t)c * h * w);
    m->x0 = act_alloc_codes(m, (size_t)c * h * w);
    m->scb = act_alloc(m, (size_t)c * h * w);
    m->sb = act_alloc(m, (size_t)c * h * w);

    size_t x = m->x0;
    for (int st = 0; st < 3; st++) {
        for (int j = 0; j < sp->blocks; j++) {
            block_t *b = &m->blocks[m->nblocks++];
            const int cout = sp->widths[st], stride = (st > 0 && j == 0) ? 2 : 1;
            const int cin = c;
            b->has_sc = cin != cout || stride != 1;
            b->has_dn = b->has_sc;
            b->last = st == 2 && j == sp->blocks - 1;
            snprintf(name, sizeof name, "s%d.b%d.conv1.w", st, j);
            conv_make(m, &b->conv1, name, 0, 1, cin, h, w, cout, 3, stride);
            const int ho = b->conv1.s.ho, wo = b->conv1.s.wo, hw = ho * wo;
            snprintf(name, sizeof name, "s%d.b%d.bn1", st, j);
            bn_make(m, &b->bn1, name, 0, cout, hw);
            snprintf(name, sizeof name, "s%d.b%d.conv2.w", st, j);
            conv_make(m, &b->conv2, name, 0, 1, cout, ho, wo, cout, 3, 1);
            snprintf(name, sizeof name, "s%d.b%d.bn2", st, j);
            bn_make(m, &b->bn2, name, 0, cout, hw);
            if (b->has_sc) {
                snprintf(name, sizeof name, "s%d.b%d.sc.conv.w", st, j);
                conv_make(m, &b->sc, name, 0, 1, cin, h, w, cout, 1, stride);
                snprintf(name, sizeof name, "s%d.b%d.sc.bn", st, j);
                bn_make(m, &b->bnsc, name, 0, cout, hw);
            }
            const size_t len = (size_t)cout * hw;
            b->x_in = x;
            b->c1 = act_alloc(m, len);
            b->h = act_alloc_codes(m, len);
            b->c2 = act_alloc(m, len);
            b->o = act_alloc(m, len);
            if (b->has_sc) {
                b->scc = act_alloc(m, len);
                b->sccb = act_alloc(m, len);
                b->sccg = act_alloc(m, len);
            }
            b->out = b->last ? act_alloc(m, len) : act_alloc_codes(m, len);
            b->ob = act_alloc(m, len);
            b->out_len = len;
            x = b->out;
            c = cout; h = ho; w = wo;
        }
    }
    m->feat = c;
    m->hw_last = h * w;
    m->pool = act_alloc(m, (size_t)c);
    m->logits = act_alloc(m, (size_t)sp->classes);
    m->p_fc1 = fc_make(m, "fc1", 0, c, sp->classes);
    m->ninfer = m->nparams;
    m->ninfer_stats = m->nstats;
    if (!sp->aux) return;

    /* The auxiliary module comes after the inference network in the vector. */
    c = sp->widths[0]; h = sp->in_h; w = sp->in_w;
    conv_make(m, &m->as, "aux.start.conv.w", 1, 0, c, h, w, c, 1, 1);
    bn_make(m, &m->as_bn, "aux.start.bn", 1, c, h * w);
    m->asc = act_alloc(m, (size_t)c * h * w);
    m->a0 = act_alloc(m, (size_t)c * h * w);
    m->ascb = act_alloc(m, (size_t)c * h * w);
    size_t a = m->a0;
    for (int i = 0; i < m->nblocks; i++) {
        block_t *b = &m->blocks[i];
        const int st = i / sp->blocks, j = i % sp->blocks;
        const int cout = b->conv1.s.cout, ho = b->conv1.s.ho, wo = b->conv1.s.wo, hw = ho * wo;
        const size_t len = (size_t)cout * hw;
        if (b->has_dn) {
            snprintf(name, sizeof name, "aux.s%d.b%d.dn.conv.w", st, j);
            conv_make(m, &b->dn, name, 1, 0, c, h, w, cout, 1, b->conv1.s.stride);
            snprintf(name, sizeof name, "aux.s%d.b%d.dn.bn", st, j);
            bn_make(m, &b->bndn, name, 1, cout, hw);
            b->dnc = act_alloc(m, len);
            b->dnb = act_alloc(m, len);
        }
        snprintf(name, sizeof name, "aux.s%d.b%d.ad.conv.w", st, j);
        conv_make(m, &b->ad, name, 1, 0, cout, ho, wo, cout, 1, 1);
        snprintf(name, sizeof name, "aux.s%d.b%d.ad.bn", st, j);
        bn_make(m, &b->bnad, name, 1, cout, hw);
        b->a_in = a;
        b->adc = act_alloc(m, len);
        b->adb = act_alloc(m, len);
        b->a_out = act_alloc(m, len);
        if (b->last) m->nimg = len;
        b->a_len = len;
        a = b->a_out;
        c = cout; h = ho; w = wo;
    }
    m->apool = act_alloc(m, (size_t)c);
    m->alogits = act_alloc(m, (size_t)sp->classes);
    m->p_fc2 = fc_make(m, "fc2", 1, c, sp->classes);
}

static void build_mlp(model_t *m) {
    const model_spec_t *sp = &m->spec;
    const int d = sp->in_c * sp->in_h * sp->in_w, hd = sp->hidden;
    m->p_in = fc_make(m, "fc_in", 0, d, hd);
    bn_make(m, &m->mbn1, "bn1", 0, hd, 1);
    m->p_mid = add_tensor(m, "fc_mid.w", MODEL_T_FC_W, sp->wbits < 32, 0, hd, hd, 1, 1, 2);
    bn_make(m, &m->mbn2, "bn2", 0, hd, 1);
    m->p_fc1 = fc_make(m, "fc_out", 0, hd, sp->classes);
    m->ninfer = m->nparams;
    m->ninfer_stats = m->nstats;
    m->in = act_alloc(m, (size_t)d);
    m->z1 = act_alloc(m, (size_t)hd);
    m->h1 = act_alloc(m, (size_t)hd);
    m->z2 = act_alloc(m, (size_t)hd);
    m->b2 = act_alloc(m, (size_t)hd);
    m->h2 = act_alloc(m, (size_t)hd);
    m->logits = act_alloc(m, (size_t)sp->classes);
}

/* ---- the arena's plan ----
 * The schedules below list, step by step, which buffers each kernel of resnet_forward and
 * resnet_backward (mlp_*) reads or writes, in the same order; a buffer lives from its first to
 * its last step, and plan_arena places buffers whose lifetimes overlap at disjoint offsets.
 * Buffers used in the same step never share storage, except where share() says so: the kernel
 * there works in place (layers.h), and the comment says why the old contents are dead. A buffer
 * the schedule forgets is placed at offset 0, over others: the golden tests and
 * model_memory.the_arena_plan_changes_no_result catch such a drift. */

typedef struct {
    model_t *m;
    int step;
    int backward;       /* 0: the plan of an evaluation pass, forward alone */
} sched_t;

static void use(sched_t *q, size_t v) {
    var_t *x = &q->m->vars[v];
    if (x->first < 0) x->first = q->step;
    x->last = q->step;
}

static int var_root(const model_t *m, int v) {
    while (m->vars[v].root != v) v = m->vars[v].root;
    return v;
}

/* Var b takes the storage of var a. */
static void share(sched_t *q, size_t a, size_t b) {
    model_t *m = q->m;
    if (!q->backward) return;
    const int ra = var_root(m, (int)a), rb = var_root(m, (int)b);
    assert(m->vars[ra].len == m->vars[rb].len && m->vars[ra].coded == m->vars[rb].coded);
    m->vars[rb].root = ra;
}

#define UA(t) use(q, 2 * (t))
#define UG(t) use(q, 2 * (t) + 1)
#define VA(t) (2 * (t))
#define VG(t) (2 * (t) + 1)
#define STEP() (q->step++)

static void sched_resnet(sched_t *q) {
    model_t *m = q->m;
    const int aux = m->spec.aux;
    const block_t *lb = &m->blocks[m->nblocks - 1];

    UA(m->in); STEP(); /* model_forward copies the batch in */
    UA(m->in); UA(m->sc0); STEP();
    UA(m->sc0); UA(m->s); STEP();
    UA(m->s); UA(m->x0); STEP();
    if (aux) {
        UA(m->s); UA(m->asc); STEP();
        UA(m->asc); UA(m->a0); STEP();
    }
    for (int i = 0; i < m->nblocks; i++) {
        const block_t *b = &m->blocks[i];
        UA(b->x_in); UA(b->c1); STEP();
        UA(b->c1); UA(b->h); STEP();
        UA(b->h); UA(b->c2); STEP();
        if (b->has_sc) {
            UA(b->x_in); UA(b->scc); STEP();
            UA(b->scc); UA(b->o); STEP();
            UA(b->c2); UA(b->o); STEP();
        } else {
            UA(b->c2); UA(b->x_in); UA(b->o); STEP();
        }
        UA(b->o); UA(b->out); STEP();
        if (aux) {
            UA(b->o); UA(b->adc); STEP();
            if (b->has_dn) {
                UA(b->a_in); UA(b->dnc); STEP();
                UA(b->dnc); UA(b->a_out); STEP();
                UA(b->adc); UA(b->a_out); STEP();
            } else {
                UA(b->adc); UA(b->a_in); UA(b->a_out); STEP();
            }
        }
    }
    UA(lb->out); UA(m->pool); STEP();
    UA(m->pool); UA(m->logits); STEP();
    if (aux) {
        UA(lb->a_out); UA(m->apool); STEP();
        UA(m->apool); UA(m->alogits); STEP();
    }
    if (q->backward) {
        UA(m->logits); UG(m->logits); STEP();
        UG(m->logits); UA(m->pool); UG(m->pool); STEP();
        UG(m->pool); UG(lb->out); STEP();
        if (aux) {
            UA(m->alogits); UG(m->alogits); STEP();
            UG(m->alogits); UA(m->apool); UG(m->apool); STEP();
            UG(m->apool); UG(lb->a_out); STEP();
        }
        for (int i = m->nblocks - 1; i >= 0; i--) {
            const block_t *b = &m->blocks[i];
            /* the mask of a_out: a kept one first, the last block's once it is recomputed */
            if (aux && !b->last) {
                UA(b->a_out); UG(b->a_out); STEP();
            }
            if (b->has_sc) {
                UA(b->x_in); UA(b->sccb); STEP();
            }
            UA(b->c2); UA(b->has_sc ? b->sccb : b->x_in); UA(b->ob); STEP();
            if (aux) {
                UA(b->ob); UA(b->adb); STEP();
                if (b->last) {
                    if (b->has_dn) {
                        UA(b->a_in); UA(b->dnb); STEP();
                    }
                    UA(b->adb); UA(b->has_dn ? b->dnb : b->a_in); UG(b->a_out); STEP();
                }
                share(q, VA(b->adb), VG(b->adb));
                UA(b->adb); UG(b->a_out); UG(b->adb); STEP();
                /* the adaptor (1x1, w -> w) writes o's gradient over its output's, image by image */
                share(q, VG(b->adb), VG(b->o));
                UA(b->ob); UG(b->adb); UG(b->o); STEP();
            }
            UA(b->ob); UG(b->out); UG(b->o); STEP(); /* the last block's ReLU mask is read from o */
            if (aux && b->has_dn) {
                if (!b->last) {
                    UA(b->a_in); UA(b->dnb); STEP();
                }
                /* a batch norm's input is read by nothing else: its gradient overwrites it */
                share(q, VA(b->dnb), VG(b->dnb));
                UA(b->dnb); UG(b->a_out); UG(b->dnb); STEP();
            } else if (aux) {
                /* D is the identity: a_in's gradient is a_out's, with no copy */
                share(q, VG(b->a_out), VG(b->a_in));
                UG(b->a_out); UG(b->a_in); STEP();
            }
            if (!b->has_sc) {
                /* the identity shortcut: x_in's gradient starts as o's, with no copy; o's is
                 * read once more by BN2, before conv1 adds to x_in's */
                share(q, VG(b->o), VG(b->x_in));
                UG(b->o); UG(b->x_in); STEP();
            }
            share(q, VA(b->c2), VG(b->c2));
            UA(b->c2); UG(b->o); UG(b->c2); STEP();
            /* conv2 reads each image of h before it writes that image's gradient */
            if (!m->vars[VA(b->h)].coded) share(q, VA(b->h), VG(b->h));
            UA(b->h); UG(b->c2); UG(b->h); STEP();
            share(q, VA(b->c1), VG(b->c1));
            UA(b->c1); UG(b->h); UG(b->c1); STEP();
            if (b->has_sc) {
                /* the shortcut once the block's own buffers are gone */
                UA(b->x_in); UA(b->sccg); STEP();
                share(q, VA(b->sccg), VG(b->sccg));
                UA(b->sccg); UG(b->o); UG(b->sccg); STEP();
                UA(b->x_in); UG(b->sccg); UG(b->x_in); STEP();
            }
            UA(b->x_in); UG(b->c1); UG(b->x_in); STEP();
            /* D's input gradient last, when the block's own buffers are gone */
            if (aux && b->has_dn) {
                UA(b->a_in); UG(b->dnb); UG(b->a_in); STEP();
            }
        }
        UA(m->in); UA(m->scb); STEP();
        UA(m->scb); UA(m->sb); STEP();
        UA(m->sb); UG(m->x0); UG(m->s); STEP();
        if (aux) {
            UA(m->sb); UA(m->ascb); STEP();
            share(q, VA(m->ascb), VG(m->ascb));
            UA(m->ascb); UG(m->a0); UG(m->ascb); STEP();
            UA(m->sb); UG(m->ascb); UG(m->s); STEP();
        }
        share(q, VA(m->scb), VG(m->scb));
        UA(m->scb); UG(m->s); UG(m->scb); STEP();
        UA(m->in); UG(m->scb); STEP();
    }
    /* the logits outlive the pass: model_logits reads them */
    UA(m->logits);
    if (aux) UA(m->alogits);
    STEP();
}

static void sched_mlp(sched_t *q) {
    model_t *m = q->m;
    UA(m->in); STEP();
    UA(m->in); UA(m->z1); STEP();
    UA(m->z1); UA(m->h1); STEP();
    UA(m->h1); UA(m->z2); STEP();
    UA(m->z2); UA(m->b2); STEP();
    UA(m->b2); UA(m->h2); STEP();
    UA(m->h2); UA(m->logits); STEP();
    if (q->backward) {
        UA(m->logits); UG(m->logits); STEP();
        UG(m->logits); UA(m->h2); UG(m->h2); STEP();
        UG(m->h2); UA(m->h2); UG(m->b2); STEP();
        share(q, VA(m->z2), VG(m->z2));
        UA(m->z2); UG(m->b2); UG(m->z2); STEP();
        UG(m->z2); UA(m->h1); UG(m->h1); STEP();
        share(q, VA(m->z1), VG(m->z1));
        UA(m->z1); UG(m->h1); UG(m->z1); STEP();
        UG(m->z1); UA(m->in); STEP();
    }
    UA(m->logits); STEP();
}

#undef UA
#undef UG
#undef VA
#undef VG
#undef STEP

/* Offsets of every var for one schedule: the largest buffers first, each at the lowest offset
 * where it overlaps no placed buffer that is alive at the same time. Returns the floats used. */
static size_t plan_arena(model_t *m, int backward, size_t *off) {
    const int nv = 2 * m->nacts;
    for (int v = 0; v < nv; v++) {
        m->vars[v].first = m->vars[v].last = -1;
        m->vars[v].root = v;
    }
    sched_t q = {m, 0, backward};
    if (m->spec.arch == ARCH_RESNET) sched_resnet(&q);
    else sched_mlp(&q);

    /* A root's lifetime covers its members'. Sizes are in floats, rounded to 64 bytes. */
    const int unused = -1;
    int first[MAX_VARS], last[MAX_VARS], order[MAX_VARS], live[MAX_VARS], nroots = 0;
    size_t size[MAX_VARS];
    for (int v = 0; v < nv; v++) {
        first[v] = last[v] = unused;
        const size_t vals = m->vars[v].len * (size_t)m->max_batch;
        size[v] = ((m->vars[v].coded ? (vals + 3) / 4 : vals) + 15) & ~(size_t)15;
    }
    for (int v = 0; v < nv; v++) {
        const var_t *x = &m->vars[v];
        if (x->first < 0) continue;
        const int r = var_root(m, v);
        if (first[r] == unused || x->first < first[r]) first[r] = x->first;
        if (x->last > last[r]) last[r] = x->last;
    }
    for (int v = 0; v < nv; v++) {
        if (first[v] == unused) continue;
        int j = nroots++;
        while (j > 0 && (size[order[j - 1]] < size[v] ||
                         (size[order[j - 1]] == size[v] && first[order[j - 1]] > first[v]))) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = v;
    }
    size_t total = 0;
    for (int i = 0; i < nroots; i++) {
        const int r = order[i];
        /* the placed buffers alive with r, by offset */
        int nl = 0;
        for (int k = 0; k < i; k++) {
            const int p = order[k];
            if (first[p] > last[r] || last[p] < first[r]) continue;
            int j = nl++;
            while (j > 0 && off[live[j - 1]] > off[p]) {
                live[j] = live[j - 1];
                j--;
            }
            live[j] = p;
        }
        size_t at = 0;
        for (int k = 0; k < nl; k++) {
            const int p = live[k];
            if (off[p] >= at + size[r]) break;
            if (off[p] + size[p] > at) at = off[p] + size[p];
        }
        off[r] = at;
        if (at + size[r] > total) total = at + size[r];
    }
    for (int v = 0; v < nv; v++) {
        const int r = var_root(m, v);
        off[v] = first[r] == unused ? 0 : off[r];
    }
    return total;
}

/* ---- construction ---- */

void model_spec_default(model_spec_t *sp) {
    memset(sp, 0, sizeof *sp);
    sp->arch = ARCH_RESNET;
    sp->in_c = 1; sp->in_h = 28; sp->in_w = 28;
    sp->classes = 10;
    sp->widths[0] = 16; sp->widths[1] = 32; sp->widths[2] = 64;
    sp->blocks = 1;
    sp->hidden = 256;
    sp->wbits = 2; sp->abits = 2;
    sp->aux = 1;
    sp->aux_lambda = 1.0f;
}

static int bits_ok(int k) { return (k >= 1 && k <= 8) || k == 32; }

int model_spec_check(const model_spec_t *sp, char *msg, size_t msglen) {
#define BAD(...) do { if (msg) snprintf(msg, msglen, __VA_ARGS__); return AUXPS_ECONFIG; } while (0)
    if (sp->arch != ARCH_RESNET && sp->arch != ARCH_MLP) BAD("unknown architecture %d", sp->arch);
    if (sp->in_c < 1 || sp->in_h < 1 || sp->in_w < 1 || sp->in_c > 4096 || sp->in_h > 4096 || sp->in_w > 4096)
        BAD("input shape %dx%dx%d out of range 1..4096", sp->in_c, sp->in_h, sp->in_w);
    if ((size_t)sp->in_c * sp->in_h * sp->in_w > (1u << 24)) BAD("input larger than 2^24 values");
    if (sp->classes < 2 || sp->classes > 1000) BAD("classes %d out of range 2..1000", sp->classes);
    if (!bits_ok(sp->wbits)) BAD("weight bits %d: expected 1..8 or 32", sp->wbits);
    if (!bits_ok(sp->abits)) BAD("activation bits %d: expected 1..8 or 32", sp->abits);
    if (!(sp->aux_lambda >= 0.0f && sp->aux_lambda <= 100.0f)) BAD("aux_lambda out of range [0, 100]");
    if (sp->arch == ARCH_RESNET) {
        for (int i = 0; i < 3; i++)
            if (sp->widths[i] < 1 || sp->widths[i] > 1024) BAD("width %d out of range 1..1024", sp->widths[i]);
        if (sp->blocks < 1 || sp->blocks > MODEL_MAX_BLOCKS)
            BAD("blocks %d out of range 1..%d", sp->blocks, MODEL_MAX_BLOCKS);
        if (sp->in_h < 4 || sp->in_w < 4) BAD("ResNet input must be at least 4x4");
    } else {
        if (sp->hidden < 1 || sp->hidden > 65536) BAD("hidden %d out of range 1..65536", sp->hidden);
        if (sp->aux) BAD("the auxiliary module needs arch = resnet");
    }
    return 0;
#undef BAD
}

int model_spec_layout(const model_spec_t *spec, size_t *inference_params, size_t *inference_stats) {
    if (spec == NULL || model_spec_check(spec, NULL, 0) != 0) return AUXPS_ECONFIG;
    /* The same builder as model_new, so the counts cannot drift from the real layout; it only
     * adds up offsets, and no buffer is allocated. */
    model_t *m = calloc(1, sizeof *m);
    if (m == NULL) return AUXPS_ENOMEM;
    m->spec = *spec;
    m->max_batch = 1;
    if (spec->arch == ARCH_RESNET) build_resnet(m);
    else build_mlp(m);
    if (inference_params) *inference_params = m->ninfer;
    if (inference_stats) *inference_stats = m->ninfer_stats;
    free(m);
    return 0;
}

model_t *model_new(const model_spec_t *spec, int max_batch) {
    if (spec == NULL || max_batch < 1 || max_batch > 65536 || model_spec_check(spec, NULL, 0) != 0)
        return NULL;
    model_t *m = calloc(1, sizeof *m);
    if (m == NULL) return NULL;
    m->spec = *spec;
    m->max_batch = max_batch;
    m->bn_momentum = 0.1f;
    if (spec->arch == ARCH_RESNET) build_resnet(m);
    else build_mlp(m);

    m->params = calloc(m->nparams, sizeof(float));
    m->grads = calloc(m->nparams, sizeof(float));
    m->wq = calloc(m->nparams, sizeof(float));
    m->dwq = calloc(m->nparams, sizeof(float));
    m->codes = calloc(m->nparams, 1);
    m->stats = calloc(m->nstats, sizeof(float));
    m->save = calloc(m->nsave, sizeof(float));
    const size_t ntrain = plan_arena(m, 1, m->off_train), neval = plan_arena(m, 0, m->off_eval);
    m->narena = ntrain > neval ? ntrain : neval;
    m->off = m->off_train;
    m->arena = calloc(m->narena, sizeof(float));
    m->col = calloc(m->ncol ? m->ncol : 1, sizeof(float));
    m->img = calloc(m->nimg ? m->nimg * LAYER_PARTS : 1, sizeof(float));
    m->y = calloc((size_t)max_batch, sizeof(int));
    if (!m->params || !m->grads || !m->wq || !m->dwq || !m->codes || !m->stats || !m->save ||
        !m->arena || !m->col || !m->img || !m->y) {
        model_destroy(&m);
        return NULL;
    }
    for (int i = 0; i < m->nbns; i++)
        for (int ch = 0; ch < m->bns[i]->c; ch++) m->stats[m->bns[i]->st + m->bns[i]->c + ch] = 1.0f;
    return m;
}

void model_destroy(model_t **mp) {
    if (mp == NULL || *mp == NULL) return;
    model_t *m = *mp;
    free(m->params); free(m->grads); free(m->wq); free(m->dwq); free(m->codes);
    free(m->stats); free(m->save); free(m->arena); free(m->col); free(m->img); free(m->y);
    pool_destroy(&m->threads);
    free(m);
    *mp = NULL;
}

const model_spec_t *model_spec(const model_t *m) { return &m->spec; }
size_t model_num_params(const model_t *m) { return m->nparams; }
size_t model_num_inference_params(const model_t *m) { return m->ninfer; }
size_t model_num_stats(const model_t *m) { return m->nstats; }
size_t model_num_inference_stats(const model_t *m) { return m->ninfer_stats; }
int model_num_tensors(const model_t *m) { return m->ntensors; }
const model_tensor_t *model_tensor(const model_t *m, int i) {
    return (i >= 0 && i < m->ntensors) ? &m->tensors[i] : NULL;
}
int model_num_bns(const model_t *m) { return m->nbns; }
void model_bn_info(const model_t *m, int i, size_t *stats_offset, int *channels) {
    *stats_offset = m->bns[i]->st;
    *channels = m->bns[i]->c;
}
float *model_params(model_t *m) { return m->params; }
float *model_grads(model_t *m) { return m->grads; }
float *model_stats(model_t *m) { return m->stats; }
float *model_qweights(model_t *m) { return m->wq; }
void model_set_frozen(model_t *m, int frozen) { m->frozen = frozen; }
void model_set_bn_momentum(model_t *m, float momentum) { m->bn_momentum = momentum; }

void model_init(model_t *m, uint64_t seed) {
    rng_t r;
    rng_seed(&r, seed);
    for (int i = 0; i < m->ntensors; i++) {
        const model_tensor_t *t = &m->tensors[i];
        float *p = m->params + t->offset;
        float bound;
        switch (t->kind) {
        case MODEL_T_CONV: {
            const float std = sqrtf(2.0f / (float)(t->shape[0] * t->shape[2] * t->shape[3]));
            for (size_t j = 0; j < t->size; j++) p[j] = std * rng_normal(&r);
            break;
        }
        case MODEL_T_BN_GAMMA:
            for (size_t j = 0; j < t->size; j++) p[j] = 1.0f;
            break;
        case MODEL_T_BN_BETA:
            memset(p, 0, t->size * sizeof(float));
            break;
        case MODEL_T_FC_W:
        case MODEL_T_FC_B:
            /* a bias takes the fan-in of the weight just before it */
            bound = 1.0f / sqrtf((float)(t->kind == MODEL_T_FC_W ? t->shape[1] : t[-1].shape[1]));
            for (size_t j = 0; j < t->size; j++) p[j] = bound * (2.0f * rng_uniform(&r) - 1.0f);
            break;
        }
    }
    for (int i = 0; i < m->nbns; i++) {
        float *st = m->stats + m->bns[i]->st;
        for (int ch = 0; ch < m->bns[i]->c; ch++) {
            st[ch] = 0.0f;
            st[m->bns[i]->c + ch] = 1.0f;
        }
    }
    m->frozen = 0;
}

void model_quantize_tensor(model_t *m, int i) {
    const model_tensor_t *t = &m->tensors[i];
    if (!t->quantized) return;
    quant_weight_forward(m->wq + t->offset, m->codes + t->offset, m->params + t->offset, t->size, m->spec.wbits);
}

void model_quantize_weights(model_t *m) {
    if (m->frozen) return;
    for (int i = 0; i < m->ntensors; i++) model_quantize_tensor(m, i);
}

void model_set_qgrads(model_t *m, int on) { m->qgrads = on; }

int model_weight_codes(const model_t *m, int i, uint8_t *codes) {
    const model_tensor_t *t = model_tensor(m, i);
    if (t == NULL || !t->quantized) return AUXPS_EINVAL;
    memcpy(codes, m->codes + t->offset, t->size);
    return 0;
}

const float *model_weight_q(const model_t *m, int i) {
    const model_tensor_t *t = model_tensor(m, i);
    if (t == NULL) return NULL;
    return (t->quantized ? m->wq : m->params) + t->offset;
}

size_t model_arena_bytes(const model_t *m) { return m->narena * sizeof(float); }
size_t model_scratch_bytes(const model_t *m) { return (m->ncol + m->nimg * LAYER_PARTS) * sizeof(float); }

int model_set_threads(model_t *m, int threads) {
    if (threads < 1 || threads > 256) return AUXPS_EINVAL;
    pool_t *p = NULL;
    if (threads > 1 && (p = pool_new(threads)) == NULL) return AUXPS_ENOMEM;
    pool_destroy(&m->threads);
    m->threads = p;
    /* the kernels call sgemm from each of the pool's threads, one-threaded */
    openblas_set_num_threads(1);
    return 0;
}

int model_threads(const model_t *m) { return pool_threads(m->threads); }

const float *model_logits(const model_t *m) { return m->arena + m->off[2 * m->logits]; }
const float *model_logits_aux(const model_t *m) {
    return m->spec.aux ? m->arena + m->off[2 * m->alogits] : NULL;
}

/* ---- forward ---- */

/* The activation t and its gradient, in the plan of the current pass */
#define A(t) (m->arena + m->off[2 * (t)])
#define G(t) (m->arena + m->off[2 * (t) + 1])
#define P(off) (m->params + (off))
#define CODED(t) (m->vars[2 * (t)].coded)
#define AQ(t) ((uint8_t *)A(t))

static const float *conv_weight(const model_t *m, const conv_t *cv) {
    return (cv->quantized ? m->wq : m->params) + cv->w;
}

static void conv_fwd(model_t *m, conv_t *cv, size_t in, size_t out) {
    cv->s.n = m->n;
    if (CODED(in)) conv2d_forward_codes(m->threads, A(out), AQ(in), m->spec.abits, conv_weight(m, cv), &cv->s, m->col);
    else conv2d_forward(m->threads, A(out), A(in), conv_weight(m, cv), &cv->s, m->col);
}

static void bn_fwd(model_t *m, const bn_t *bn, size_t in, size_t out, int training) {
    batchnorm_forward(m->threads, A(out), A(in), P(bn->p), P(bn->p + bn->c), m->save + bn->save,
                      m->save + bn->save + bn->c, m->stats + bn->st, m->stats + bn->st + bn->c,
                      m->n, bn->c, bn->hw, training, m->bn_momentum);
}

/* out = BN(in) + A(res); res may be out. */
static void bn_add_fwd(model_t *m, const bn_t *bn, size_t in, size_t res, size_t out, int training) {
    if (CODED(res)) {
        batchnorm_add_forward_codes(m->threads, A(out), A(in), AQ(res), m->spec.abits, P(bn->p), P(bn->p + bn->c),
                                    m->save + bn->save, m->save + bn->save + bn->c, m->stats + bn->st,
                                    m->stats + bn->st + bn->c, m->n, bn->c, bn->hw, training, m->bn_momentum);
        return;
    }
    batchnorm_add_forward(m->threads, A(out), A(in), A(res), P(bn->p), P(bn->p + bn->c), m->save + bn->save,
                          m->save + bn->save + bn->c, m->stats + bn->st, m->stats + bn->st + bn->c,
                          m->n, bn->c, bn->hw, training, m->bn_momentum);
}

/* out = A(BN(in)) when nothing else reads the batch norm's output: it is not stored. */
static void bn_act_fwd(model_t *m, const bn_t *bn, size_t in, size_t out, int training) {
    if (CODED(out)) {
        batchnorm_act_forward_codes(m->threads, AQ(out), A(in), P(bn->p), P(bn->p + bn->c), m->save + bn->save,
                                    m->save + bn->save + bn->c, m->stats + bn->st, m->stats + bn->st + bn->c,
                                    m->n, bn->c, bn->hw, training, m->bn_momentum, m->spec.abits);
        return;
    }
    batchnorm_act_forward(m->threads, A(out), A(in), P(bn->p), P(bn->p + bn->c), m->save + bn->save,
                          m->save + bn->save + bn->c, m->stats + bn->st, m->stats + bn->st + bn->c,
                          m->n, bn->c, bn->hw, training, m->bn_momentum, m->spec.abits);
}

/* An elementwise step of len values on the kernels' threads, cut into LAYER_PARTS ranges of
 * whole cache lines, so that the other threads need not wait through it. Each value's result
 * depends on that value alone: the same bits on any number of threads. */
typedef enum { EW_RELU, EW_ENCODE, EW_QUANT, EW_QUANT_BWD } ew_op_t;

typedef struct {
    ew_op_t op;
    float *y;      /* RELU, QUANT: the output; QUANT_BWD: dx */
    uint8_t *q;    /* ENCODE: the codes */
    const float *x, *dy;
    size_t len;
    int k, acc;
} ew_job_t;

static void ew_part(void *arg, int part) {
    const ew_job_t *j = arg;
    const size_t per = (j->len / LAYER_PARTS + 15) & ~(size_t)15; /* the last part takes the rest */
    const size_t lo = per * (size_t)part < j->len ? per * (size_t)part : j->len;
    const size_t hi = part == LAYER_PARTS - 1 || lo + per > j->len ? j->len : lo + per, n = hi - lo;
    switch (j->op) {
    case EW_RELU: relu_forward(j->y + lo, j->x + lo, n); break;
    case EW_ENCODE: quant_act_encode(j->q + lo, j->x + lo, n, j->k); break;
    case EW_QUANT: quant_act_forward(j->y + lo, j->x + lo, n, j->k); break;
    case EW_QUANT_BWD: quant_act_backward(j->y + lo, j->dy + lo, j->x + lo, n, j->k, j->acc); break;
    }
}

static void elementwise(model_t *m, ew_job_t j) {
    pool_run(m->threads, LAYER_PARTS, ew_part, &j);
}

static void act_fwd(model_t *m, size_t in, size_t out, size_t len) {
    if (CODED(out))
        elementwise(m, (ew_job_t){.op = EW_ENCODE, .q = AQ(out), .x = A(in), .len = len * m->n, .k = m->spec.abits});
    else
        elementwise(m, (ew_job_t){.op = EW_QUANT, .y = A(out), .x = A(in), .len = len * m->n, .k = m->spec.abits});
}

static void relu_fwd(model_t *m, float *y, const float *x, size_t len) {
    elementwise(m, (ew_job_t){.op = EW_RELU, .y = y, .x = x, .len = len});
}

static void resnet_forward(model_t *m, int training) {
    const int aux = m->spec.aux;
    const size_t slen = (size_t)m->spec.widths[0] * m->spec.in_h * m->spec.in_w;
    conv_fwd(m, &m->stem, m->in, m->sc0);
    bn_fwd(m, &m->stem_bn, m->sc0, m->s, training);
    act_fwd(m, m->s, m->x0, slen);
    if (aux) {
        conv_fwd(m, &m->as, m->s, m->asc);
        bn_fwd(m, &m->as_bn, m->asc, m->a0, training);
    }
    for (int i = 0; i < m->nblocks; i++) {
        block_t *b = &m->blocks[i];
        const size_t len = b->out_len * m->n;
        conv_fwd(m, &b->conv1, b->x_in, b->c1);
        bn_act_fwd(m, &b->bn1, b->c1, b->h, training);
        conv_fwd(m, &b->conv2, b->h, b->c2);
        /* o = BN2(c2) + shortcut, with the shortcut's batch norm written into o first */
        if (b->has_sc) {
            conv_fwd(m, &b->sc, b->x_in, b->scc);
            bn_fwd(m, &b->bnsc, b->scc, b->o, training);
            bn_add_fwd(m, &b->bn2, b->c2, b->o, b->o, training);
        } else {
            bn_add_fwd(m, &b->bn2, b->c2, b->x_in, b->o, training);
        }
        if (b->last) relu_fwd(m, A(b->out), A(b->o), len);
        else act_fwd(m, b->o, b->out, b->out_len);
        if (aux) {
            conv_fwd(m, &b->ad, b->o, b->adc);
            if (b->has_dn) {
                conv_fwd(m, &b->dn, b->a_in, b->dnc);
                bn_fwd(m, &b->bndn, b->dnc, b->a_out, training);
                bn_add_fwd(m, &b->bnad, b->adc, b->a_out, b->a_out, training);
            } else {
                bn_add_fwd(m, &b->bnad, b->adc, b->a_in, b->a_out, training);
            }
            relu_fwd(m, A(b->a_out), A(b->a_out), len);
        }
    }
    const block_t *lb = &m->blocks[m->nblocks - 1];
    avgpool_forward(A(m->pool), A(lb->out), m->n, m->feat, m->hw_last);
    linear_forward(A(m->logits), A(m->pool), P(m->p_fc1), P(m->p_fc1 + (size_t)m->spec.classes * m->feat),
                   m->n, m->feat, m->spec.classes);
    if (aux) {
        avgpool_forward(A(m->apool), A(lb->a_out), m->n, m->feat, m->hw_last);
        linear_forward(A(m->alogits), A(m->apool), P(m->p_fc2),
                       P(m->p_fc2 + (size_t)m->spec.classes * m->feat), m->n, m->feat, m->spec.classes);
    }
}

static void mlp_forward(model_t *m, int training) {
    const model_spec_t *sp = &m->spec;
    const int d = sp->in_c * sp->in_h * sp->in_w, hd = sp->hidden;
    const float *wmid = (sp->wbits < 32 ? m->wq : m->params) + m->p_mid;
    linear_forward(A(m->z1), A(m->in), P(m->p_in), P(m->p_in + (size_t)hd * d), m->n, d, hd);
    bn_act_fwd(m, &m->mbn1, m->z1, m->h1, training);
    linear_forward(A(m->z2), A(m->h1), wmid, NULL, m->n, hd, hd);
    bn_fwd(m, &m->mbn2, m->z2, m->b2, training);
    relu_forward(A(m->h2), A(m->b2), (size_t)hd * m->n);
    linear_forward(A(m->logits), A(m->h2), P(m->p_fc1), P(m->p_fc1 + (size_t)sp->classes * hd), m->n, hd,
                   sp->classes);
}

void model_forward(model_t *m, const float *x, const int *y, int n, int training, model_result_t *res) {
    const model_spec_t *sp = &m->spec;
    if (n > m->max_batch) n = m->max_batch; /* the caller's invariant; never overrun the arena */
    m->n = n;
    m->off = training ? m->off_train : m->off_eval;
    memcpy(A(m->in), x, sizeof(float) * (size_t)n * sp->in_c * sp->in_h * sp->in_w);
    model_quantize_weights(m);
    if (sp->arch == ARCH_RESNET) resnet_forward(m, training);
    else mlp_forward(m, training);

    m->trained = training && y != NULL;
    model_result_t r = {0};
    if (y != NULL) {
        memcpy(m->y, y, sizeof(int) * (size_t)n);
        r.loss_low = softmax_xent(A(m->logits), y, n, sp->classes, NULL, 0.0f, &r.correct_low);
        if (sp->aux) r.loss_aux = softmax_xent(A(m->alogits), y, n, sp->classes, NULL, 0.0f, &r.correct_aux);
        r.loss = r.loss_low + sp->aux_lambda * r.loss_aux;
    }
    if (res != NULL) *res = r;
}

/* ---- backward ----
 * The gradient arena is never zeroed: the first writer of each activation's gradient overwrites
 * it (acc = 0) and only a second consumer of the same activation accumulates (acc = 1). The
 * comments at each acc = 1 name the first writer. */

/* The input is read from activation x, its gradient written to G(in): x is in itself, or in as
 * the backward pass recomputed it. */
static void conv_bwd_from(model_t *m, conv_t *cv, size_t x, size_t in, size_t out, int need_dx, int acc) {
    float *dw = (cv->quantized ? m->dwq : m->grads) + cv->w;
    if (CODED(x)) {
        conv2d_backward_codes(m->threads, need_dx ? G(in) : NULL, dw, G(out), AQ(x), m->spec.abits, conv_weight(m, cv),
                              &cv->s, m->col, acc);
        return;
    }
    conv2d_backward(m->threads, need_dx ? G(in) : NULL, dw, G(out), A(x), conv_weight(m, cv), &cv->s, m->col, acc);
}

static void conv_bwd(model_t *m, conv_t *cv, size_t in, size_t out, int need_dx, int acc) {
    conv_bwd_from(m, cv, in, in, out, need_dx, acc);
}

/* dy is the gradient of the BN's output, which may live at another offset (in-place sums). Every
 * BN input is a convolution output with no other consumer, so dx is always overwritten. */
static void bn_bwd(model_t *m, const bn_t *bn, size_t in, const float *dy) {
    batchnorm_backward(m->threads, G(in), m->grads + bn->p, m->grads + bn->p + bn->c, dy, A(in), P(bn->p),
                       m->save + bn->save, m->save + bn->save + bn->c, m->n, bn->c, bn->hw, 0);
}

static void bn_act_bwd(model_t *m, const bn_t *bn, size_t in, size_t out) {
    batchnorm_act_backward(m->threads, G(in), m->grads + bn->p, m->grads + bn->p + bn->c, G(out), A(in), P(bn->p),
                           P(bn->p + bn->c), m->save + bn->save, m->save + bn->save + bn->c, m->n, bn->c,
                           bn->hw, m->spec.abits, 0);
}

/* The quantizer's mask is read from activation x: in itself, or in recomputed. */
static void act_bwd(model_t *m, size_t x, size_t in, size_t out, size_t len, int acc) {
    elementwise(m, (ew_job_t){.op = EW_QUANT_BWD, .y = G(in), .dy = G(out), .x = A(x), .len = len * m->n,
                              .k = m->spec.abits, .acc = acc});
}

/* A(out) = BN(in) (+ A(res) when res is not NO_RES) as the forward pass computed it. */
#define NO_RES ((size_t)-1)
static void bn_recompute(model_t *m, const bn_t *bn, size_t in, size_t res, size_t out) {
    const int coded = res != NO_RES && CODED(res);
    batchnorm_recompute(m->threads, A(out), A(in), res == NO_RES || coded ? NULL : A(res), coded ? AQ(res) : NULL,
                        m->spec.abits, P(bn->p), P(bn->p + bn->c), m->save + bn->save,
                        m->save + bn->save + bn->c, m->n, bn->c, bn->hw);
}

/* y = BN(in) (+ r) for image j alone, r already at image j. */
static void bn_recompute_image(const model_t *m, const bn_t *bn, size_t in, const float *r, float *y, int j) {
    batchnorm_recompute(NULL, y, A(in) + (size_t)j * bn->c * bn->hw, r, NULL, m->spec.abits, P(bn->p),
                        P(bn->p + bn->c), m->save + bn->save, m->save + bn->save + bn->c, 1, bn->c, bn->hw);
}

/* Image j of the last block's a_out into y, by the forward pass's own steps from the batch norm
 * inputs the backward pass recomputed (adb, dnb) or a_in, which the arena keeps. */
static void aux_recompute_last(const model_t *m, float *y, int j) {
    const block_t *b = &m->blocks[m->nblocks - 1];
    if (b->has_dn) {
        bn_recompute_image(m, &b->bndn, b->dnb, NULL, y, j);
        bn_recompute_image(m, &b->bnad, b->adb, y, y, j);
    } else {
        bn_recompute_image(m, &b->bnad, b->adb, A(b->a_in) + (size_t)j * b->a_len, y, j);
    }
    relu_forward(y, y, b->a_len);
}

/* The mask of block i's a_out over images, in the kernels' parts: each part recomputes the last
 * block's images into its own m->img; the other blocks' a_out is kept. */
typedef struct {
    const model_t *m;
    int i;          /* the block */
    float *ga;      /* (n, a_len) the gradient of block i's a_out */
} aux_job_t;

/* ga *= (a_out > 0) */
static void aux_mask_part(void *arg, int part) {
    const aux_job_t *job = arg;
    const model_t *m = job->m;
    const block_t *b = &m->blocks[job->i];
    const size_t len = b->a_len;
    float *buf = m->img + (size_t)part * m->nimg;
    int lo, hi;
    layer_part_range(m->n, part, &lo, &hi);
    for (int j = lo; j < hi; j++) {
        const float *y = A(b->a_out) + (size_t)j * len;
        if (b->last) {
            aux_recompute_last(m, buf, j);
            y = buf;
        }
        float *g = job->ga + (size_t)j * len;
        for (size_t e = 0; e < len; e++) g[e] = y[e] > 0.0f ? g[e] : 0.0f;
    }
}

static void resnet_backward(model_t *m) {
    const model_spec_t *sp = &m->spec;
    const int aux = sp->aux, k = sp->classes;
    const block_t *lb = &m->blocks[m->nblocks - 1];

    softmax_xent(A(m->logits), m->y, m->n, k, G(m->logits), 1.0f, NULL);
    linear_backward(G(m->pool), m->grads + m->p_fc1, m->grads + m->p_fc1 + (size_t)k * m->feat,
                    G(m->logits), A(m->pool), P(m->p_fc1), m->n, m->feat, k, 0);
    avgpool_backward(G(lb->out), G(m->pool), m->n, m->feat, m->hw_last, 0);
    if (aux) {
        softmax_xent(A(m->alogits), m->y, m->n, k, G(m->alogits), sp->aux_lambda, NULL);
        linear_backward(G(m->apool), m->grads + m->p_fc2, m->grads + m->p_fc2 + (size_t)k * m->feat,
                        G(m->alogits), A(m->apool), P(m->p_fc2), m->n, m->feat, k, 0);
        avgpool_backward(G(lb->a_out), G(m->apool), m->n, m->feat, m->hw_last, 0);
    }
    for (int i = m->nblocks - 1; i >= 0; i--) {
        block_t *b = &m->blocks[i];
        const size_t len = b->out_len * m->n;
        /* The arena does not keep o, s and the auxiliary module's convolution outputs past the
         * forward pass: they are recomputed, bit-exact, from what it keeps (the batch norms'
         * inputs, the codes, every a_out but the last) just before their first use. */
        /* a_out = ReLU(sum): its gradient is masked in place, and is then d(sum) */
        float *ga = aux ? G(b->a_out) : NULL;
        aux_job_t job = {m, i, ga};
        if (aux && !b->last) pool_run(m->threads, LAYER_PARTS, aux_mask_part, &job);
        /* ob = BN2(c2) + shortcut */
        if (b->has_sc) {
            conv_fwd(m, &b->sc, b->x_in, b->sccb);
            bn_recompute(m, &b->bnsc, b->sccb, NO_RES, b->ob);
            bn_recompute(m, &b->bn2, b->c2, b->ob, b->ob);
        } else {
            bn_recompute(m, &b->bn2, b->c2, b->x_in, b->ob);
        }
        if (aux) {
            conv_fwd(m, &b->ad, b->ob, b->adb);
            if (b->last) {
                if (b->has_dn) conv_fwd(m, &b->dn, b->a_in, b->dnb);
                pool_run(m->threads, LAYER_PARTS, aux_mask_part, &job);
            }
            bn_bwd(m, &b->bnad, b->adb, ga);
            conv_bwd_from(m, &b->ad, b->ob, b->o, b->adb, 1, 0);
        }
        /* o's gradient: the adaptor wrote it first when there is one */
        if (b->last) relu_backward(G(b->o), G(b->out), A(b->ob), len, aux); /* o > 0 where out > 0 */
        else act_bwd(m, b->ob, b->o, b->out, b->out_len, aux);
        /* D's batch norm once o's buffers are gone; its input gradient comes at the end */
        if (aux && b->has_dn) {
            if (!b->last) conv_fwd(m, &b->dn, b->a_in, b->dnb);
            bn_bwd(m, &b->bndn, b->dnb, ga);
        } else if (aux && G(b->a_in) != ga) {
            memcpy(G(b->a_in), ga, sizeof(float) * len);
        }
        /* o = BN2(c2) + shortcut: G(o) is the gradient of both terms. x_in's consumers are the
         * shortcut (first) and conv1. */
        if (!b->has_sc && G(b->x_in) != G(b->o)) memcpy(G(b->x_in), G(b->o), sizeof(float) * len);
        bn_bwd(m, &b->bn2, b->c2, G(b->o));
        conv_bwd(m, &b->conv2, b->h, b->c2, 1, 0);
        bn_act_bwd(m, &b->bn1, b->c1, b->h);
        if (b->has_sc) {
            /* the shortcut's 1x1 convolution once more, rather than keep its output alive: its
             * backward pass comes once the block's own buffers are gone */
            conv_fwd(m, &b->sc, b->x_in, b->sccg);
            bn_bwd(m, &b->bnsc, b->sccg, G(b->o));
            conv_bwd(m, &b->sc, b->x_in, b->sccg, 1, 0);
        }
        conv_bwd(m, &b->conv1, b->x_in, b->c1, 1, 1);
        /* D's input gradient last, when the block's own buffers are gone */
        if (aux && b->has_dn) conv_bwd(m, &b->dn, b->a_in, b->dnb, 1, 0);
    }
    const size_t slen = (size_t)sp->widths[0] * sp->in_h * sp->in_w;
    /* The stem's convolution, with one input channel, costs little: its output is recomputed
     * rather than kept. s's consumers: the quantizer (first) and the auxiliary start. */
    conv_fwd(m, &m->stem, m->in, m->scb);
    bn_recompute(m, &m->stem_bn, m->scb, NO_RES, m->sb);
    act_bwd(m, m->sb, m->s, m->x0, slen, 0);
    if (aux) {
        conv_fwd(m, &m->as, m->sb, m->ascb);
        bn_bwd(m, &m->as_bn, m->ascb, G(m->a0));
        conv_bwd_from(m, &m->as, m->sb, m->s, m->ascb, 1, 1);
    }
    bn_bwd(m, &m->stem_bn, m->scb, G(m->s));
    conv_bwd(m, &m->stem, m->in, m->scb, 0, 0);
}

static void mlp_backward(model_t *m) {
    const model_spec_t *sp = &m->spec;
    const int d = sp->in_c * sp->in_h * sp->in_w, hd = sp->hidden, k = sp->classes;
    const float *wmid = (sp->wbits < 32 ? m->wq : m->params) + m->p_mid;
    float *dwmid = (sp->wbits < 32 ? m->dwq : m->grads) + m->p_mid;
    softmax_xent(A(m->logits), m->y, m->n, k, G(m->logits), 1.0f, NULL);
    linear_backward(G(m->h2), m->grads + m->p_fc1, m->grads + m->p_fc1 + (size_t)k * hd, G(m->logits),
                    A(m->h2), P(m->p_fc1), m->n, hd, k, 0);
    relu_backward(G(m->b2), G(m->h2), A(m->h2), (size_t)hd * m->n, 0);
    bn_bwd(m, &m->mbn2, m->z2, G(m->b2));
    linear_backward(G(m->h1), dwmid, NULL, G(m->z2), A(m->h1), wmid, m->n, hd, hd, 0);
    bn_act_bwd(m, &m->mbn1, m->z1, m->h1);
    linear_backward(NULL, m->grads + m->p_in, m->grads + m->p_in + (size_t)hd * d, G(m->z1), A(m->in),
                    P(m->p_in), m->n, d, hd, 0);
}

void model_backward(model_t *m) {
    if (!m->trained) return;
    memset(m->grads, 0, m->nparams * sizeof(float));
    memset(m->dwq, 0, m->nparams * sizeof(float));
    if (m->spec.arch == ARCH_RESNET) resnet_backward(m);
    else mlp_backward(m);
    for (int i = 0; i < m->ntensors; i++) {
        const model_tensor_t *t = &m->tensors[i];
        if (!t->quantized) continue;
        if (m->qgrads) /* the grads of a quantized tensor are all from dwq (its FP path is unused) */
            memcpy(m->grads + t->offset, m->dwq + t->offset, t->size * sizeof(float));
        else
            quant_weight_backward(m->grads + t->offset, m->dwq + t->offset, m->params + t->offset, t->size,
                                  m->spec.wbits);
    }
}
