/* optim.h - SGD with momentum, Nesterov and weight decay (PyTorch's semantics), and the learning
 * rate schedules. The optimizer works on a flat range of the parameter vector, so a
 * parameter-server node applies it to its own shard exactly as the single process does to all. */
#ifndef AUXPS_OPTIM_H
#define AUXPS_OPTIM_H

#include <stddef.h>

typedef struct {
    float lr;             /* base learning rate */
    float momentum;
    float weight_decay;
    int nesterov;
    int schedule;         /* SCHED_* of config.h */
    int step_epochs;      /* SCHED_STEP: lr *= step_gamma every step_epochs epochs */
    float step_gamma;
    long steps_per_epoch;
    long total_steps;     /* SCHED_COSINE decays to 0 at this step */
} optim_t;

/* Learning rate for the update made at global step (0-based). */
float optim_lr(const optim_t *o, long step);

/* One SGD update of n parameters w with gradient g and momentum buffer buf (same length). */
void optim_sgd(const optim_t *o, float lr, float *w, const float *g, float *buf, size_t n);

/* The same update written to out instead of w (out may be w): the same bits as optim_sgd. */
void optim_sgd_to(const optim_t *o, float lr, float *out, const float *w, const float *g, float *buf, size_t n);

#endif
