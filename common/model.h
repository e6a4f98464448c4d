/* model.h - the networks AuxPS trains: the quantized ResNet with its optional full-precision
 * auxiliary module (METHOD.md), and a small MLP for fast tests.
 *
 * A model owns four flat float buffers: params, grads (same layout), stats (batch-norm running
 * statistics) and its activation arena sized for max_batch (docs/MODEL.md "Memory"). docs/MODEL.md
 * pins the layout of params and stats. The model never allocates after model_new. */
#ifndef AUXPS_MODEL_H
#define AUXPS_MODEL_H

#include <stddef.h>
#include <stdint.h>

enum { ARCH_RESNET = 0, ARCH_MLP = 1 };

#define MODEL_MAX_BLOCKS 16 /* per stage */

typedef struct {
    int arch;           /* ARCH_RESNET or ARCH_MLP */
    int in_c, in_h, in_w;
    int classes;
    int widths[3];      /* ResNet stage widths */
    int blocks;         /* ResNet blocks per stage, 1..MODEL_MAX_BLOCKS */
    int hidden;         /* MLP hidden width */
    int wbits;          /* weight bits: 1..8, or 32 = full precision */
    int abits;          /* activation bits: 1..8, or 32 = full precision (ReLU) */
    int aux;            /* 1: attach the auxiliary module (ResNet only) */
    float aux_lambda;   /* weight of the auxiliary loss */
} model_spec_t;

/* One named tensor of the parameter vector. */
typedef struct {
    char name[40];
    size_t offset;      /* in floats, into params / grads */
    size_t size;        /* in floats */
    int shape[4];       /* PyTorch order; unused dims are 1 */
    int ndim;
    int quantized;      /* 1 if the forward pass uses its k-bit version */
    int aux;            /* 1 if it belongs to the auxiliary module */
    int kind;           /* MODEL_T_* */
} model_tensor_t;

enum { MODEL_T_CONV = 0, MODEL_T_BN_GAMMA, MODEL_T_BN_BETA, MODEL_T_FC_W, MODEL_T_FC_B };

typedef struct {
    float loss;         /* L_low + lambda * L_aux */
    float loss_low;
    float loss_aux;     /* 0 without the auxiliary module */
    int correct_low;    /* argmax(logits_low) == y, over the batch */
    int correct_aux;
} model_result_t;

typedef struct model model_t;

/* Fills spec with the defaults of METHOD.md (ResNet-8, 1x28x28, 10 classes, W2A2, aux on). */
void model_spec_default(model_spec_t *spec);
/* Returns 0 if spec is valid, else AUXPS_ECONFIG with a sentence in msg (msglen bytes). */
int model_spec_check(const model_spec_t *spec, char *msg, size_t msglen);

/* The lengths model_num_inference_params and model_num_inference_stats would give for a model of
 * spec, without allocating its buffers: a reader checks a file's size against a spec from that
 * file with these before model_new allocates for it. Either pointer may be NULL. Returns 0,
 * AUXPS_ECONFIG (invalid spec) or AUXPS_ENOMEM. */
int model_spec_layout(const model_spec_t *spec, size_t *inference_params, size_t *inference_stats);

/* Returns a model for batches of up to max_batch images, or NULL (bad spec or no memory).
 * Parameters are zero until model_init or a load into model_params(). */
model_t *model_new(const model_spec_t *spec, int max_batch);
/* Frees the model and sets *m to NULL; safe on NULL and twice. */
void model_destroy(model_t **m);
/* Bytes of the activation arena: every activation of a training pass at max_batch and its
 * gradient, in buffers reused once nothing reads them again (model.c plans them at model_new). */
size_t model_arena_bytes(const model_t *m);
/* Bytes of the convolutions' scratch and the recomputed images, for all LAYER_PARTS parts. */
size_t model_scratch_bytes(const model_t *m);
/* Runs the model's convolutions and batch norms on `threads` threads (1..256), the caller's
 * included, and OpenBLAS one-threaded in each of them: the results are the same bits for any
 * count (layers.h). A new model runs on 1. Returns 0, AUXPS_EINVAL or AUXPS_ENOMEM (a thread
 * could not be started; the model keeps its threads). */
int model_set_threads(model_t *m, int threads);
int model_threads(const model_t *m);

const model_spec_t *model_spec(const model_t *m);
size_t model_num_params(const model_t *m);
/* Length of the prefix of params the inference network uses (no auxiliary module). */
size_t model_num_inference_params(const model_t *m);
size_t model_num_stats(const model_t *m);
/* Length of the prefix of stats the inference network's batch norms use. */
size_t model_num_inference_stats(const model_t *m);
int model_num_tensors(const model_t *m);
const model_tensor_t *model_tensor(const model_t *m, int i);
/* Batch norms in stats order: the offset of each one's mean in stats, and its width. */
int model_num_bns(const model_t *m);
void model_bn_info(const model_t *m, int i, size_t *stats_offset, int *channels);

float *model_params(model_t *m);
float *model_grads(model_t *m);
float *model_stats(model_t *m);

/* The quantized-weights buffer (params layout; only quantized tensors' ranges are used). An
 * exported model writes its decoded k-bit weights here and freezes the model, so that forward
 * passes use them as they are instead of requantizing from params. */
float *model_qweights(model_t *m);
void model_set_frozen(model_t *m, int frozen);

/* Momentum of the batch-norm running statistics in training passes (default 0.1). Setting
 * 1/(k+1) before the k-th of K passes (k = 0, 1, ...) makes them the plain average of the K
 * batches' statistics, which is how trainer_recalibrate re-estimates them. */
void model_set_bn_momentum(model_t *m, float momentum);

/* He / PyTorch-default initialisation from seed (docs/MODEL.md); resets stats. */
void model_init(model_t *m, uint64_t seed);

/* Quantizes the weights of every quantized tensor from params into the model's k-bit copy
 * (nothing when frozen). Every model_forward calls it first. */
void model_quantize_weights(model_t *m);
/* The same for tensor i alone, frozen or not; nothing if it is not quantized. */
void model_quantize_tensor(model_t *m, int i);

/* With on = 1, model_backward leaves dL/dwq, the gradient with respect to the k-bit weights the
 * forward pass used, in the grads of quantized tensors instead of applying the quantizer's
 * backward to it; dL/dw = quant_weight_backward of it with the latent weights. A worker whose
 * nodes serve k-bit weights trains this way (cluster.pull = kbit): it has no latent weights,
 * and the node applies the quantizer's backward. Off by default. */
void model_set_qgrads(model_t *m, int on);

/* Forward pass of n <= max_batch images x (n, C, H, W). y (n) may be NULL (no loss). In
 * training mode batch norms use batch statistics and update the running ones, and the pass
 * keeps what model_backward needs. Fills res when non-NULL. */
void model_forward(model_t *m, const float *x, const int *y, int n, int training, model_result_t *res);
/* Logits of the low-precision head of the last forward pass, (n, classes). */
const float *model_logits(const model_t *m);
const float *model_logits_aux(const model_t *m);

/* Backward pass of the last training forward pass (which needs y): overwrites grads with
 * dL/dparams, L = mean over the batch of L_low + lambda * L_aux. */
void model_backward(model_t *m);

/* Integer codes (quant_weight_forward) of quantized tensor i from the last quantization,
 * written to codes (size bytes); returns 0, or AUXPS_EINVAL if the tensor is not quantized. */
int model_weight_codes(const model_t *m, int i, uint8_t *codes);
/* The quantized (or, for FP tensors, plain) weights the forward pass used for tensor i. */
const float *model_weight_q(const model_t *m, int i);

#endif
