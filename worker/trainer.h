/* trainer.h - training and evaluation of one model in one process: the embedded default
 * (`auxps train`), and the step a worker runs.
 *
 * The trainer owns the model, the optimizer state, the data and the batch buffers; after
 * trainer_new nothing in the training loop allocates. */
#ifndef AUXPS_TRAINER_H
#define AUXPS_TRAINER_H

#include <signal.h>
#include <stdio.h>

#include "config.h"
#include "data.h"
#include "error.h"
#include "model.h"
#include "optim.h"

#define TRAINER_MAX_EPOCHS 10000

typedef struct {
    int epochs_done;
    long steps;
    double images_per_s;        /* over the whole run, training steps only */
    float test_accuracy;        /* low-precision network (fc1) after the last epoch */
    int test_correct, test_total;
    float test_accuracy_aux;    /* auxiliary head, -1 without it */
    float epoch_accuracy[TRAINER_MAX_EPOCHS > 1000 ? 1000 : TRAINER_MAX_EPOCHS];
} train_result_t;

typedef struct trainer trainer_t;

/* Loads data and builds the model from cfg (which is copied). Returns NULL with err set. */
trainer_t *trainer_new(const auxps_config_t *cfg, auxps_error_t *err);
void trainer_destroy(trainer_t **t);
model_t *trainer_model(trainer_t *t);

/* Trains for cfg's epochs (or max_steps), printing progress to out, evaluating after every
 * epoch, then writes the exported model to cfg's train.output. A non-NULL stop flag set to
 * non-zero (from a signal handler) ends training after the current step; the model is still
 * evaluated and exported. Returns 0 or an error code with err set. */
int trainer_run(trainer_t *t, FILE *out, volatile sig_atomic_t *stop, train_result_t *res,
                auxps_error_t *err);

/* One SGD step on the batch x (n, C, H, W), y (n) at global step `step`: forward, backward,
 * update of params and momentum. Fills r. */
void trainer_step(model_t *m, const optim_t *o, float *momentum, const float *x, const int *y, int n,
                  long step, model_result_t *r);

/* Evaluates m in evaluation mode on all of ds in batches of up to `batch` (<= the model's
 * max_batch), with x (batch, C, H, W) and y (batch) as scratch. Returns the number of correct
 * low-precision predictions; *correct_aux receives the auxiliary head's, when non-NULL. */
int trainer_evaluate(model_t *m, const dataset_t *ds, const data_transform_t *tf, int batch, float *x, int *y,
                     int *correct_aux);

#endif
