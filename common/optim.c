/* optim.c - SGD and learning-rate schedules. */
#include "optim.h"

#include "config.h"
#include "hot.h"

#include <math.h>

float optim_lr(const optim_t *o, long step) {
    switch (o->schedule) {
    case SCHED_COSINE:
        if (o->total_steps <= 0 || step >= o->total_steps) return step > 0 ? 0.0f : o->lr;
        return (float)(0.5 * o->lr * (1.0 + cos(M_PI * (double)step / (double)o->total_steps)));
    case SCHED_STEP: {
        long epoch = o->steps_per_epoch > 0 ? step / o->steps_per_epoch : 0;
        return o->lr * powf(o->step_gamma, (float)(epoch / (o->step_epochs > 0 ? o->step_epochs : 1)));
    }
    default:
        return o->lr;
    }
}

HOT_WIDE void optim_sgd_to(const optim_t *o, float lr, float *out, const float *w, const float *g, float *buf,
                      size_t n) {
    const float mu = o->momentum, wd = o->weight_decay;
    for (size_t i = 0; i < n; i++) {
        float d = g[i] + wd * w[i];
        if (mu != 0.0f) {
            buf[i] = mu * buf[i] + d;
            d = o->nesterov ? d + mu * buf[i] : buf[i];
        }
        out[i] = w[i] - lr * d;
    }
}

void optim_sgd(const optim_t *o, float lr, float *w, const float *g, float *buf, size_t n) {
    optim_sgd_to(o, lr, w, w, g, buf, n);
}
