/* coded.h - the k-bit pull and q8 push codings of a params shard (docs/CLUSTER.md "Bytes per
 * step", PROTOCOL.md section 6), the one version that the node, the worker and the transport
 * bench share: the segment table of a k-bit PULL_REP, the decoding of one into weights, and a
 * PUSH's q8 encoding with error feedback.
 *
 * A shard is the range [off, off + len) of the model's parameter vector and holds whole tensors.
 * Arrays called "indexed as the params" have the model's num_params entries and are read or
 * written at the shard's offsets only. */
#ifndef AUXPS_CODED_H
#define AUXPS_CODED_H

#include <stdint.h>

#include "error.h"
#include "model.h"
#include "wire.h"

/* The segment table of a k-bit PULL_REP of shard [off, off + len) (k = 1..8): each quantized
 * tensor is one segment of k-bit DoReFa codes, lo = -1 and step = 2 / (2^k - 1) for k >= 2; for
 * k = 1 lo and step are 0 here and the sender sets them per version from e = mean|w| (lo = -e,
 * step = 2e). The runs of other tensors between them are float32 segments of at most
 * WIRE_MAX_FLOATS values. segs (max) receives the table, *nsegs its length; max =
 * model_num_tensors is always enough. Returns 0, AUXPS_ECONFIG if the shard splits a tensor or
 * leaves the vector, AUXPS_EINVAL if k is out of range or segs is too small. */
int coded_kbit_layout(const model_t *model, uint64_t off, uint64_t len, int k, wire_seg_t *segs, uint32_t max,
                      uint32_t *nsegs, auxps_error_t *err);

/* Decodes the k-bit PULL_REP m (of the params vector, as its header says) for a run of k-bit
 * weights: its float32 segments go to params, and each quantized tensor's codes (into codes,
 * scratch) are decoded into wq exactly as the quantizer does (quant_weight_decode), so that wq
 * is bit for bit what quant_weight_forward gave the node. params, wq and codes are indexed as the
 * params. Every tensor inside the range must lie in one segment: a quantized one in k-bit DoReFa
 * codes of the run's width with the lo and step above (k = 1: lo = -step / 2), any other in
 * float32. m comes from a peer: returns 0, or AUXPS_EFORMAT with the reason (also for an
 * encoding other than KBIT and a range that leaves the model), never an assertion; a hand-built
 * m whose segment table wire_decode would have refused gives that error of wire_payload_codes. */
int coded_take_kbit(const model_t *model, const wire_msg_t *m, int k, float *params, float *wq, uint8_t *codes,
                    auxps_error_t *err);

/* The q8 PUSH of shard [off, off + len) of the gradient g: one 8-bit segment per tensor
 * (wire_q8_encode), with error feedback in resid; codes and resid are indexed as the params (as
 * g). segs (max) receives the table, *nsegs its length. Returns 0, AUXPS_ERANGE naming the tensor
 * whose gradient is NaN or infinite (nothing of it is encoded; the tensors before it are),
 * AUXPS_ECONFIG if the shard splits a tensor, AUXPS_EINVAL if segs is too small. */
int coded_q8_encode(const model_t *model, uint64_t off, uint64_t len, const float *g, float *resid, uint8_t *codes,
                    wire_seg_t *segs, uint32_t max, uint32_t *nsegs, auxps_error_t *err);

#endif
