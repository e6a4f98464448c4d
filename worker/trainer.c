/* trainer.c - the single-process training loop. */
#include "trainer.h"

#include "clock.h"
#include "export.h"

#include <cblas.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct trainer {
    auxps_config_t cfg;
    dataset_t train, test;
    data_transform_t tf;
    model_t *model;
    optim_t optim;
    float *momentum;    /* params layout */
    float *x;           /* (batch, C, H, W) */
    int *y;             /* (batch) */
    int *order;         /* (train.n): this epoch's sample order */
};

trainer_t *trainer_new(const auxps_config_t *cfg, auxps_error_t *err) {
    trainer_t *t = calloc(1, sizeof *t);
    if (t == NULL) {
        auxps_error_set(err, AUXPS_ENOMEM, "out of memory");
        return NULL;
    }
    t->cfg = *cfg;
    const model_spec_t *sp = &cfg->model;
    if (config_check_output(cfg->train.output, err) != 0) goto fail;
    if (dataset_load(&t->train, cfg->data.dir, 1, cfg->data.train_limit, err) != 0) goto fail;
    if (dataset_load(&t->test, cfg->data.dir, 0, cfg->data.test_limit, err) != 0) goto fail;
    if (t->train.c != sp->in_c || t->train.h != sp->in_h || t->train.w != sp->in_w ||
        t->test.c != sp->in_c || t->test.h != sp->in_h || t->test.w != sp->in_w) {
        auxps_error_set(err, AUXPS_ECONFIG, "data in %s is %dx%dx%d but the model expects %dx%dx%d",
                        cfg->data.dir, t->train.c, t->train.h, t->train.w, sp->in_c, sp->in_h, sp->in_w);
        goto fail;
    }
    if (t->train.classes > sp->classes || t->test.classes > sp->classes) {
        auxps_error_set(err, AUXPS_ECONFIG, "data in %s has %d classes but the model has %d", cfg->data.dir,
                        t->train.classes > t->test.classes ? t->train.classes : t->test.classes, sp->classes);
        goto fail;
    }
    t->tf = (data_transform_t){cfg->data.mean, cfg->data.std, cfg->data.crop_pad, cfg->data.flip};
    const int b = cfg->train.batch_size;
    t->model = model_new(sp, b);
    if (t->model == NULL) {
        auxps_error_set(err, AUXPS_ENOMEM, "cannot allocate the model for batch %d", b);
        goto fail;
    }
    model_init(t->model, cfg->train.seed);
    const size_t img = (size_t)sp->in_c * sp->in_h * sp->in_w;
    t->momentum = calloc(model_num_params(t->model), sizeof(float));
    t->x = malloc(sizeof(float) * img * b);
    t->y = malloc(sizeof(int) * b);
    t->order = malloc(sizeof(int) * (size_t)t->train.n);
    if (!t->momentum || !t->x || !t->y || !t->order) {
        auxps_error_set(err, AUXPS_ENOMEM, "out of memory");
        goto fail;
    }
    const long spe = (t->train.n + b - 1) / b;
    long total = spe * cfg->train.epochs;
    if (cfg->train.max_steps > 0 && cfg->train.max_steps < total) total = cfg->train.max_steps;
    t->optim = (optim_t){cfg->train.lr, cfg->train.momentum, cfg->train.weight_decay, cfg->train.nesterov,
                         cfg->train.schedule, cfg->train.step_epochs, cfg->train.step_gamma, spe, total};
    return t;
fail:
    trainer_destroy(&t);
    return NULL;
}

void trainer_destroy(trainer_t **tp) {
    if (tp == NULL || *tp == NULL) return;
    trainer_t *t = *tp;
    model_destroy(&t->model);
    dataset_free(&t->train);
    dataset_free(&t->test);
    free(t->momentum);
    free(t->x);
    free(t->y);
    free(t->order);
    free(t);
    *tp = NULL;
}

model_t *trainer_model(trainer_t *t) { return t->model; }

void trainer_step(model_t *m, const optim_t *o, float *momentum, const float *x, const int *y, int n,
                  long step, model_result_t *r) {
    model_forward(m, x, y, n, 1, r);
    model_backward(m);
    optim_sgd(o, optim_lr(o, step), model_params(m), model_grads(m), momentum, model_num_params(m));
}

int trainer_evaluate(model_t *m, const dataset_t *ds, const data_transform_t *tf, int batch, float *x, int *y,
                     int *correct_aux) {
    int correct = 0, caux = 0, idx[batch];
    for (int start = 0; start < ds->n; start += batch) {
        const int n = ds->n - start < batch ? ds->n - start : batch;
        for (int i = 0; i < n; i++) idx[i] = start + i;
        dataset_batch(ds, idx, n, tf, NULL, x, y);
        model_result_t r;
        model_forward(m, x, y, n, 0, &r);
        correct += r.correct_low;
        caux += r.correct_aux;
    }
    if (correct_aux != NULL) *correct_aux = caux;
    return correct;
}

/* Evaluates the exported file alone, as `auxps eval` would, and insists on the trainer's count:
 * the file must hold everything inference needs and nothing that changes its answers. */
static int trainer_check_export(trainer_t *t, FILE *out, const train_result_t *res, auxps_error_t *err) {
    model_t *m = NULL;
    float mean, std;
    int rc = export_load(t->cfg.train.output, t->cfg.train.batch_size, &m, &mean, &std, err);
    if (rc != 0) return rc;
    data_transform_t tf = {mean, std, 0, 0};
    int correct = trainer_evaluate(m, &t->test, &tf, t->cfg.train.batch_size, t->x, t->y, NULL);
    model_destroy(&m);
    fprintf(out, "exported model %s: test_accuracy %.4f (%d/%d) from the file alone\n", t->cfg.train.output,
            (double)correct / t->test.n, correct, t->test.n);
    fflush(out);
    if (correct != res->test_correct)
        return auxps_error_set(err, AUXPS_EFORMAT, "%s: the exported model scores %d/%d, the trainer %d/%d",
                               t->cfg.train.output, correct, t->test.n, res->test_correct, t->test.n);
    return 0;
}

/* Re-estimates the batch-norm running statistics under the current weights as the plain
 * average over K training batches (positions 0.. of this epoch's order, no augmentation). The
 * running averages of training lag the weights; quantized activations amplify the lag. */
static void trainer_recalibrate(trainer_t *t) {
    const int K = t->cfg.train.bn_recalibration, b = t->cfg.train.batch_size;
    for (int k = 0; k < K; k++) {
        const int start = (int)(((long)k * b) % t->train.n);
        const int n = t->train.n - start < b ? t->train.n - start : b;
        dataset_batch(&t->train, t->order + start, n, &t->tf, NULL, t->x, t->y);
        model_set_bn_momentum(t->model, 1.0f / (float)(k + 1));
        model_forward(t->model, t->x, t->y, n, 1, NULL);
    }
    model_set_bn_momentum(t->model, 0.1f);
}

static void fmt_duration(char *buf, size_t len, double s) {
    long v = (long)(s + 0.5);
    if (v >= 3600) snprintf(buf, len, "%ldh%02ldm", v / 3600, v / 60 % 60);
    else snprintf(buf, len, "%ldm%02lds", v / 60, v % 60);
}

int trainer_run(trainer_t *t, FILE *out, volatile sig_atomic_t *stop, train_result_t *res,
                auxps_error_t *err) {
    const auxps_config_t *c = &t->cfg;
    const model_spec_t *sp = &c->model;
    const int b = c->train.batch_size;
    const long spe = t->optim.steps_per_epoch, total = t->optim.total_steps;
    int threads = c->train.threads > 0 ? c->train.threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (threads < 1) threads = 1;
    if (threads > 256) threads = 256;
    if (model_set_threads(t->model, threads) != 0)
        return auxps_error_set(err, AUXPS_ENOMEM, "cannot start %d compute threads", threads);
    memset(res, 0, sizeof *res);
    res->test_accuracy_aux = -1.0f;

    fprintf(out, "auxps: %s, %s W%dA%d%s, %zu parameters (%zu at inference), %d train / %d test images, "
                 "batch %d, %d epochs, %ld steps, %d threads\n",
            c->path[0] ? c->path : "(defaults)", sp->arch == ARCH_RESNET ? "resnet" : "mlp", sp->wbits, sp->abits,
            sp->aux ? " + auxiliary module" : "", model_num_params(t->model),
            model_num_inference_params(t->model), t->train.n, t->test.n, b, c->train.epochs, total, threads);
    fflush(out);

    rng_t rng; /* augmentation only: the order comes from data_epoch_order */
    rng_seed(&rng, c->train.seed ^ 0xA5A5A5A5ull);
    long step = 0, images = 0;
    double train_time = 0.0, t_run = clock_now_s();
    int stopped = 0;
    for (int epoch = 0; epoch < c->train.epochs && step < total && !stopped; epoch++) {
        data_epoch_order(t->order, t->train.n, c->train.seed, epoch);
        double t_epoch = clock_now_s(), t_log = t_epoch, sum_low = 0.0, sum_aux = 0.0;
        long logged_images = 0, interval_steps = 0;
        for (long s = 0; s < spe && step < total; s++) {
            if (stop != NULL && *stop) {
                stopped = 1;
                break;
            }
            const int start = (int)(s * b), n = t->train.n - start < b ? t->train.n - start : b;
            dataset_batch(&t->train, t->order + start, n, &t->tf, &rng, t->x, t->y);
            model_result_t r;
            trainer_step(t->model, &t->optim, t->momentum, t->x, t->y, n, step, &r);
            step++;
            images += n;
            sum_low += r.loss_low;
            sum_aux += r.loss_aux;
            interval_steps++;
            logged_images += n;
            if (step % c->train.log_interval == 0 || step == total || s == spe - 1) {
                double now = clock_now_s(), dt = now - t_log;
                double ips = dt > 0 ? logged_images / dt : 0.0;
                char eta[32];
                fmt_duration(eta, sizeof eta, ips > 0 ? (double)(total - step) * b / ips : 0.0);
                fprintf(out, "epoch %d/%d step %ld/%ld | %.0f img/s | loss_low %.4f loss_aux %.4f | lr %.5f | eta %s\n",
                        epoch + 1, c->train.epochs, step, total, ips, sum_low / interval_steps,
                        sp->aux ? sum_aux / interval_steps : 0.0, optim_lr(&t->optim, step - 1), eta);
                fflush(out);
                t_log = now;
                sum_low = sum_aux = 0.0;
                interval_steps = logged_images = 0;
            }
        }
        double t_train = clock_now_s() - t_epoch;
        train_time += t_train;
        trainer_recalibrate(t);
        int caux = 0;
        int correct = trainer_evaluate(t->model, &t->test, &t->tf, b, t->x, t->y, &caux);
        res->test_correct = correct;
        res->test_total = t->test.n;
        res->test_accuracy = (float)correct / (float)t->test.n;
        if (sp->aux) res->test_accuracy_aux = (float)caux / (float)t->test.n;
        if (epoch < (int)(sizeof res->epoch_accuracy / sizeof *res->epoch_accuracy))
            res->epoch_accuracy[epoch] = res->test_accuracy;
        if (!stopped) res->epochs_done = epoch + 1;
        fprintf(out, "epoch %d/%d %s in %.1f s | test_accuracy %.4f (%d/%d, low-precision)", epoch + 1,
                c->train.epochs, stopped ? "stopped" : "done", t_train, res->test_accuracy, correct, t->test.n);
        if (sp->aux) fprintf(out, " | aux head %.4f", res->test_accuracy_aux);
        fprintf(out, "\n");
        fflush(out);
    }
    res->steps = step;
    res->images_per_s = train_time > 0 ? (double)images / train_time : 0.0;
    if (res->test_total == 0) { /* stopped before any evaluation: still report one */
        trainer_recalibrate(t);
        res->test_correct = trainer_evaluate(t->model, &t->test, &t->tf, b, t->x, t->y, NULL);
        res->test_total = t->test.n;
        res->test_accuracy = (float)res->test_correct / (float)t->test.n;
    }
    int rc = export_save(t->model, c->data.mean, c->data.std, c->train.output, err);
    if (rc != 0) return rc;
    fprintf(out, "done: %ld steps in %.1f s, %.0f img/s | test_accuracy %.4f (%d/%d) | model written to %s\n", step,
            clock_now_s() - t_run, res->images_per_s, res->test_accuracy, res->test_correct, res->test_total,
            c->train.output);
    fflush(out);
    return trainer_check_export(t, out, res, err);
}
