/* bench_compute.c - `auxps bench`: training images/s of the ResNets at chosen precisions,
 * batches and threads, OpenBLAS sgemm's peak, and the table of a suite's JSON lines
 * (bench_compute.h says what is measured and how). */
#include "bench_compute.h"
#include "blas.h"

#include "clock.h"
#include "dconv.h"
#include "layers.h"
#include "model.h"
#include "optim.h"
#include "config.h"
#include "rng.h"
#include "trainer.h"

#include <cblas.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#define MAX_ROWS 1024       /* compute configurations in one table */
#define MAX_LINE 65536      /* bytes of one JSON line the table reads */

/* ---- arguments ------------------------------------------------------------------------- */

static int usage_error(const char *fmt, const char *a, const char *b) {
    fprintf(stderr, "auxps bench: ");
    fprintf(stderr, fmt, a, b);
    fprintf(stderr, "\nusage: auxps bench [--model resnet8,resnet20] [--bits 32,4,2] [--aux on,off] [--batch B,..]\n"
                    "                   [--threads T,..] [--steps N] [--seconds S] [--warmup N] [--warmup-seconds S]\n"
                    "       auxps bench --sgemm [--threads T,..] [--seconds S]\n"
                    "       auxps bench --conv [--seconds S]\n"
                    "       auxps bench --table FILE\n"
                    "       auxps bench --transport [--seconds S] [--curve] [--coded] [--workers W,..]\n"
                    "                               [--nodes S,..]\n");
    return 2;
}

/* One list item: an integer in [lo, hi], or one of names (value = its index) when names is
 * non-NULL. */
static int parse_item(const char *s, long lo, long hi, const char *const *names, int *out) {
    if (names != NULL) {
        for (int i = 0; names[i] != NULL; i++)
            if (strcmp(s, names[i]) == 0) {
                *out = i;
                return 0;
            }
        return -1;
    }
    return config_parse_int(s, lo, hi, out);
}

int bench_parse_list(const char *s, long lo, long hi, const char *const *names, bench_list_t *l) {
    char buf[256];
    if (strlen(s) >= sizeof buf) return -1;
    snprintf(buf, sizeof buf, "%s", s);
    l->n = 0;
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
        if (l->n == BENCH_MAX_LIST || parse_item(tok, lo, hi, names, &l->v[l->n]) != 0) return -1;
        l->n++;
    }
    /* strtok_r skips empty items, so "2,,4" or ",2" must be caught by counting commas. */
    int commas = 0;
    for (const char *p = s; *p; p++) commas += *p == ',';
    return l->n > 0 && commas == l->n - 1 ? 0 : -1;
}

/* Parses a decimal number of seconds in [0, BENCH_MAX_SECONDS] (0 only if allow_zero). */
static int parse_seconds(const char *s, int allow_zero, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !isfinite(v) || v < 0 || v > BENCH_MAX_SECONDS ||
        (v == 0 && !allow_zero))
        return -1;
    *out = v;
    return 0;
}

/* ---- FLOPs ------------------------------------------------------------------------------ */

/* Output side of a 3x3 convolution with padding 1, or a 1x1 one without, at stride s: both
 * give floor((h - 1) / s) + 1. */
static int out_size(int h, int stride) { return (h - 1) / stride + 1; }

double bench_flops(const model_spec_t *sp, double *fwd_macs, double *stem_macs) {
    *fwd_macs = *stem_macs = 0;
    if (sp->arch != ARCH_RESNET) return 0;
    int h = sp->in_h, w = sp->in_w, cin = sp->widths[0];
    double stem = (double)h * w * sp->widths[0] * sp->in_c * 9, macs = stem;
    if (sp->aux) macs += (double)h * w * cin * cin; /* aux start: conv1x1 of the stem output */
    for (int i = 0; i < 3; i++) {
        const int c = sp->widths[i];
        for (int j = 0; j < sp->blocks; j++) {
            const int stride = (j == 0 && i > 0) ? 2 : 1, changes = cin != c || stride != 1;
            const int ho = out_size(h, stride), wo = out_size(w, stride);
            const double px = (double)ho * wo;
            macs += px * c * cin * 9 + px * c * c * 9;   /* conv1 (strided), conv2 */
            if (changes) macs += px * c * cin;             /* shortcut conv1x1 */
            if (sp->aux) {
                macs += px * c * c;                         /* adaptor conv1x1 of o */
                if (changes) macs += px * c * cin;         /* downsample of the aux stream */
            }
            h = ho, w = wo, cin = c;
        }
    }
    macs += (double)sp->widths[2] * sp->classes * (sp->aux ? 2 : 1); /* fc1, fc2 */
    *fwd_macs = macs;
    *stem_macs = stem;
    return 6 * macs - 2 * stem;
}

/* ---- training images/s ------------------------------------------------------------------ */

static const char *const model_names[] = {"resnet8", "resnet20", NULL};
static const int model_blocks[] = {1, 3};
static const char *const aux_names[] = {"off", "on", NULL};

typedef struct {
    int warmup, min_steps;         /* steps: at least these many ... */
    double warmup_s, min_seconds;  /* ... and for at least this long */
} timing_t;

/* Times trainer_step on one batch of random data; returns images/s (with *steps, *secs and the
 * model's *arena bytes) or -1 when memory runs out. */
static double time_training(const model_spec_t *sp, int batch, int threads, const timing_t *tm, int *steps,
                            double *secs, size_t *arena) {
    model_t *m = model_new(sp, batch);
    const size_t img = (size_t)sp->in_c * sp->in_h * sp->in_w;
    float *x = malloc(sizeof(float) * img * batch), *mom = NULL;
    int *y = malloc(sizeof(int) * batch);
    double ips = -1.0;
    if (m == NULL || x == NULL || y == NULL || model_set_threads(m, threads) != 0) goto done;
    mom = calloc(model_num_params(m), sizeof(float));
    if (mom == NULL) goto done;
    *arena = model_arena_bytes(m);
    model_init(m, 1);
    rng_t r;
    rng_seed(&r, 7);
    for (size_t i = 0; i < img * batch; i++) x[i] = rng_normal(&r);
    for (int i = 0; i < batch; i++) y[i] = (int)rng_below(&r, (uint32_t)sp->classes);
    /* The recipe's optimizer (METHOD.md) at a constant rate, so every step does the same work. */
    optim_t o = {0.05f, 0.9f, 5e-4f, 1, SCHED_CONSTANT, 1, 1.0f, 1, 1};
    model_result_t res;
    long step = 0;
    const double tw = clock_now_s();
    for (int i = 0; i < tm->warmup || clock_now_s() - tw < tm->warmup_s; i++)
        trainer_step(m, &o, mom, x, y, batch, step++, &res);
    const double t0 = clock_now_s();
    double t = t0;
    int n = 0;
    while (n < tm->min_steps || t - t0 < tm->min_seconds) {
        trainer_step(m, &o, mom, x, y, batch, step++, &res);
        n++;
        t = clock_now_s();
    }
    *steps = n;
    *secs = t - t0;
    ips = (double)n * batch / *secs;
done:
    free(x);
    free(y);
    free(mom);
    model_destroy(&m);
    return ips;
}

static int run_compute(const bench_list_t *models, const bench_list_t *bits, const bench_list_t *auxs,
                       const bench_list_t *batches, const bench_list_t *threads, const timing_t *tm) {
    for (int a = 0; a < models->n; a++)
        for (int b = 0; b < bits->n; b++)
            for (int c = 0; c < auxs->n; c++)
                for (int d = 0; d < batches->n; d++)
                    for (int e = 0; e < threads->n; e++) {
                        model_spec_t sp;
                        model_spec_default(&sp);
                        sp.blocks = model_blocks[models->v[a]];
                        sp.wbits = sp.abits = bits->v[b];
                        sp.aux = auxs->v[c];
                        int steps = 0;
                        double secs = 0, macs, stem;
                        size_t arena = 0;
                        double ips = time_training(&sp, batches->v[d], threads->v[e], tm, &steps, &secs, &arena);
                        if (ips < 0) {
                            fprintf(stderr, "auxps bench: out of memory\n");
                            return 1;
                        }
                        const double flops = bench_flops(&sp, &macs, &stem);
                        /* the process's peak resident set so far: it covers every earlier line */
                        struct rusage ru;
                        const long rss = getrusage(RUSAGE_SELF, &ru) == 0 ? ru.ru_maxrss : 0;
                        printf("{\"bench\":\"compute\",\"impl\":\"auxps\",\"model\":\"%s\",\"blocks\":%d,\"wbits\":%d,"
                               "\"abits\":%d,\"aux\":%s,\"batch\":%d,\"threads\":%d,\"steps\":%d,\"seconds\":%.3f,"
                               "\"images_per_s\":%.2f,\"fwd_macs_per_image\":%.0f,\"flops_per_image\":%.0f,"
                               "\"gflops\":%.3f,\"arena_bytes\":%zu,\"peak_rss_kb\":%ld}\n",
                               model_names[models->v[a]], sp.blocks, sp.wbits, sp.abits, sp.aux ? "true" : "false",
                               batches->v[d], threads->v[e], steps, secs, ips, macs, flops, flops * ips / 1e9, arena,
                               rss);
                        fflush(stdout);
                    }
    return 0;
}

/* ---- sgemm peak ------------------------------------------------------------------------- */

static int run_sgemm(const bench_list_t *threads, double seconds) {
    const int n = BENCH_SGEMM_N;
    float *a = malloc(sizeof(float) * n * n), *b = malloc(sizeof(float) * n * n), *c = malloc(sizeof(float) * n * n);
    int rc = 1;
    if (a == NULL || b == NULL || c == NULL) {
        fprintf(stderr, "auxps bench: out of memory\n");
        goto done;
    }
    rng_t r;
    rng_seed(&r, 3);
    for (size_t i = 0; i < (size_t)n * n; i++) a[i] = rng_normal(&r), b[i] = rng_normal(&r);
    const double flop = 2.0 * n * n * n;
    for (int e = 0; e < threads->n; e++) {
        openblas_set_num_threads(threads->v[e]);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        double best = INFINITY, t0 = clock_now_s(), t = t0;
        int calls = 0;
        while (calls < 3 || t - t0 < seconds) {
            const double s = t;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
            t = clock_now_s();
            if (t - s < best) best = t - s;
            calls++;
        }
        printf("{\"bench\":\"sgemm\",\"impl\":\"openblas\",\"kernels\":\"%s\",\"threads\":%d,\"n\":%d,\"calls\":%d,"
               "\"seconds\":%.3f,\"gflops\":%.3f,\"gflops_mean\":%.3f}\n",
               blas_core(), threads->v[e], n, calls, t - t0, flop / best / 1e9, flop * calls / (t - t0) / 1e9);
        fflush(stdout);
    }
    rc = 0;
done:
    free(a);
    free(b);
    free(c);
    return rc;
}

/* ---- convolution layers ----------------------------------------------------------------- */

/* ResNet-8's convolution shapes (METHOD.md; the auxiliary module's are among the 1x1 ones):
 * cin, h, cout, k, stride, pad. */
static const int conv_layers[][6] = {
    {1, 28, 16, 3, 1, 1},  {16, 28, 16, 3, 1, 1}, {16, 28, 32, 3, 2, 1}, {32, 14, 32, 3, 1, 1},
    {32, 14, 64, 3, 2, 1}, {64, 7, 64, 3, 1, 1},  {16, 28, 16, 1, 1, 0}, {16, 28, 32, 1, 2, 0},
    {32, 14, 64, 1, 2, 0}, {64, 7, 64, 1, 1, 0},
};

/* Seconds per call (the fastest of at least 3 calls and `seconds`) of the forward pass (back =
 * 0) or of the backward pass with dx (1) of convolution s, AUXPS_DCONV as set. */
static double time_conv(const conv_shape_t *s, int back, float *x, float *w, float *y, float *dx, float *dw,
                        float *col, double seconds) {
    double best = INFINITY, t0 = clock_now_s(), t = t0;
    for (int calls = 0; calls < 3 || t - t0 < seconds; calls++) {
        const double a = t;
        if (back) conv2d_backward(NULL, dx, dw, y, x, w, s, col, 0);
        else conv2d_forward(NULL, y, x, w, s, col);
        t = clock_now_s();
        if (t - a < best) best = t - a;
    }
    return best;
}

/* Every ResNet-8 convolution at batch 128 on one thread, forward and backward, with the widest
 * direct kernels the CPU runs (dconv.h; forced, also where training would not use them) and
 * with OpenBLAS's sgemms (AUXPS_DCONV=0), one after the other; and the path training takes. */
static int run_conv(double seconds) {
    const int n = 128;
    int rc = 1;
    const char *before = getenv("AUXPS_DCONV");
    char *saved = before != NULL ? strdup(before) : NULL;
    unsetenv("AUXPS_DCONV");
    const char *kernels = dconv_kernels();
    const int direct = dconv_enabled();
    openblas_set_num_threads(1);
    for (size_t i = 0; i < sizeof conv_layers / sizeof conv_layers[0]; i++) {
        const int *c = conv_layers[i];
        conv_shape_t s;
        conv_shape_init(&s, n, c[0], c[1], c[1], c[2], c[3], c[4], c[5]);
        const size_t nx = (size_t)n * s.cin * s.h * s.w, ny = (size_t)n * s.cout * s.ho * s.wo;
        const size_t nw = (size_t)s.cout * s.cin * s.k * s.k, ncol = conv_scratch_size(&s);
        /* x and dx, y (the output, then dout), w and dw, the scratch */
        float *buf = malloc(sizeof(float) * (2 * nx + ny + 2 * nw + ncol));
        if (buf == NULL) {
            fprintf(stderr, "auxps bench: out of memory\n");
            goto done;
        }
        float *x = buf, *dx = x + nx, *y = dx + nx, *w = y + ny, *dw = w + nw, *col = dw + nw;
        rng_t r;
        rng_seed(&r, 5);
        for (size_t k = 0; k < nx; k++) x[k] = rng_normal(&r);
        for (size_t k = 0; k < nw; k++) w[k] = rng_normal(&r), dw[k] = 0.0f;
        const double flop = 2.0 * s.ho * s.wo * s.cout * s.cin * s.k * s.k * n;
        unsetenv("AUXPS_DCONV");
        const int used = conv_uses_direct(&s);
        double sec[2][2]; /* [direct][back] */
        for (int d = direct; d >= 0; d--) {
            setenv("AUXPS_DCONV", d ? kernels : "0", 1);
            for (int back = 0; back <= 1; back++) sec[d][back] = time_conv(&s, back, x, w, y, dx, dw, col, seconds);
        }
        for (int back = 0; back <= 1; back++)
            printf("{\"bench\":\"conv\",\"pass\":\"%s\",\"cin\":%d,\"h\":%d,\"cout\":%d,\"k\":%d,\"stride\":%d,"
                   "\"batch\":%d,\"threads\":1,\"sgemm_ms\":%.3f,\"direct_ms\":%.3f,\"sgemm_gflops\":%.1f,"
                   "\"direct_gflops\":%.1f,\"speedup\":%.2f,\"kernels\":\"%s\",\"training\":\"%s\"}\n",
                   back ? "backward" : "forward", s.cin, s.h, s.cout, s.k, s.stride, n, sec[0][back] * 1e3,
                   direct ? sec[1][back] * 1e3 : 0.0, flop * (back ? 2 : 1) / sec[0][back] / 1e9,
                   direct ? flop * (back ? 2 : 1) / sec[1][back] / 1e9 : 0.0,
                   direct ? sec[0][back] / sec[1][back] : 0.0, kernels, used ? "direct" : "sgemm");
        fflush(stdout);
        free(buf);
    }
    if (!direct) fprintf(stderr, "auxps bench: this CPU has neither AVX-512 nor AVX2; only the sgemm path was "
                                 "measured\n");
    rc = 0;
done:
    if (saved != NULL) setenv("AUXPS_DCONV", saved, 1);
    else unsetenv("AUXPS_DCONV");
    free(saved);
    return rc;
}

/* ---- the table -------------------------------------------------------------------------- */

/* One compute configuration and what each implementation measured for it (0 = not measured). */
typedef struct {
    char model[16];
    int wbits, abits, aux, batch, threads;
    double auxps, gflops, torch_tuned, torch_untuned;
} row_t;

typedef struct {
    row_t rows[MAX_ROWS];
    int nrows;
    double peak[257];        /* sgemm GFLOP/s by threads */
    char kernels[32];        /* OpenBLAS's kernels in the sgemm lines */
    char torch_version[32];
    double load[2];          /* 1-minute load average at the start and the end of the run */
    int load_seen[2], cpus;
    json_t *others;          /* transport, cluster and accuracy lines, in file order */
} table_t;

static int jint(const json_t *o, const char *k) { return (int)json_integer_value(json_object_get(o, k)); }
static double jnum(const json_t *o, const char *k) { return json_number_value(json_object_get(o, k)); }
static const char *jstr(const json_t *o, const char *k) {
    const char *s = json_string_value(json_object_get(o, k));
    return s != NULL ? s : "";
}

static row_t *find_row(table_t *t, const json_t *o) {
    const char *model = jstr(o, "model");
    const int wb = jint(o, "wbits"), ab = jint(o, "abits"), aux = json_is_true(json_object_get(o, "aux"));
    const int batch = jint(o, "batch"), th = jint(o, "threads");
    for (int i = 0; i < t->nrows; i++) {
        row_t *r = &t->rows[i];
        if (strcmp(r->model, model) == 0 && r->wbits == wb && r->abits == ab && r->aux == aux && r->batch == batch &&
            r->threads == th)
            return r;
    }
    if (t->nrows == MAX_ROWS) return NULL;
    row_t *r = &t->rows[t->nrows++];
    memset(r, 0, sizeof *r);
    snprintf(r->model, sizeof r->model, "%s", model);
    r->wbits = wb, r->abits = ab, r->aux = aux, r->batch = batch, r->threads = th;
    return r;
}

static void add_line(table_t *t, json_t *o) {
    const char *bench = jstr(o, "bench"), *impl = jstr(o, "impl");
    if (strcmp(bench, "compute") == 0) {
        row_t *r = find_row(t, o);
        if (r == NULL) return;
        const double ips = jnum(o, "images_per_s");
        if (strcmp(impl, "auxps") == 0) {
            r->auxps = ips;
            r->gflops = jnum(o, "gflops");
        } else if (strcmp(impl, "pytorch") == 0) {
            if (strcmp(jstr(o, "malloc"), "tuned") == 0) r->torch_tuned = ips;
            else r->torch_untuned = ips;
            snprintf(t->torch_version, sizeof t->torch_version, "%s", jstr(o, "torch"));
        }
    } else if (strcmp(bench, "sgemm") == 0) {
        const int th = jint(o, "threads");
        const double g = jnum(o, "gflops");
        if (th >= 1 && th <= 256 && g > t->peak[th]) t->peak[th] = g; /* the peak of the run */
        if (json_object_get(o, "kernels")) snprintf(t->kernels, sizeof t->kernels, "%s", jstr(o, "kernels"));
    } else if (strcmp(bench, "load") == 0) {
        const int end = strcmp(jstr(o, "when"), "end") == 0;
        t->load[end] = jnum(o, "loadavg_1min");
        t->load_seen[end] = 1;
        t->cpus = jint(o, "cpus");
    } else if (strcmp(bench, "conv") == 0 || strcmp(bench, "transport") == 0 || strcmp(bench, "cluster") == 0 ||
               strcmp(bench, "accuracy") == 0) {
        json_array_append(t->others, o);
    }
}

/* "%8.1f" of v, or dashes when v was not measured. */
static const char *fmt(char *buf, size_t len, const char *f, double v) {
    if (v > 0) snprintf(buf, len, f, v);
    else snprintf(buf, len, "-");
    return buf;
}

static void print_compute(const table_t *t) {
    if (t->nrows == 0) return;
    printf("\ncompute: training images/s (forward, backward, SGD update), one process\n");
    printf("%-8s %5s %3s %5s %3s | %9s %7s %5s | %9s %9s | %8s %8s\n", "model", "W/A", "aux", "batch", "thr",
           "AuxPS", "GFLOP/s", "peak", "PyTorch", "PyTorch", "AuxPS/", "AuxPS/");
    printf("%-8s %5s %3s %5s %3s | %9s %7s %5s | %9s %9s | %8s %8s\n", "", "", "", "", "", "img/s", "", "%", "tuned",
           "untuned", "tuned", "untuned");
    for (int i = 0; i < t->nrows; i++) {
        const row_t *r = &t->rows[i];
        char wa[16], b1[32], b2[32], b3[32], b4[32], b5[32], b6[32], b7[32];
        if (r->wbits == 32 && r->abits == 32) snprintf(wa, sizeof wa, "FP32");
        else snprintf(wa, sizeof wa, "W%dA%d", r->wbits, r->abits);
        const double peak = r->threads <= 256 ? t->peak[r->threads] : 0;
        printf("%-8s %5s %3s %5d %3d | %9s %7s %5s | %9s %9s | %8s %8s\n", r->model, wa, r->aux ? "on" : "off", r->batch,
               r->threads, fmt(b1, sizeof b1, "%.1f", r->auxps), fmt(b2, sizeof b2, "%.2f", r->gflops),
               fmt(b3, sizeof b3, "%.0f", peak > 0 ? 100 * r->gflops / peak : 0), fmt(b4, sizeof b4, "%.1f", r->torch_tuned),
               fmt(b5, sizeof b5, "%.1f", r->torch_untuned),
               fmt(b6, sizeof b6, "%.2f", r->torch_tuned > 0 ? r->auxps / r->torch_tuned : 0),
               fmt(b7, sizeof b7, "%.2f", r->torch_untuned > 0 ? r->auxps / r->torch_untuned : 0));
    }
    printf("sgemm peak (OpenBLAS%s%s%s, n = %d, fastest call of the run):", t->kernels[0] ? " " : "", t->kernels,
           t->kernels[0] ? " kernels" : "", BENCH_SGEMM_N);
    int any = 0;
    for (int th = 1; th <= 256; th++)
        if (t->peak[th] > 0) printf("%s%d thread%s %.1f GFLOP/s", any++ ? "; " : " ", th, th > 1 ? "s" : "", t->peak[th]);
    printf("%s\n", any ? "" : " not measured");
    if (t->torch_version[0]) printf("PyTorch %s; tuned = MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_ 4294967296\n",
                                    t->torch_version);
}

static void print_others(const table_t *t) {
    size_t i;
    json_t *o;
    int head = 0;
    json_array_foreach(t->others, i, o) {
        if (strcmp(jstr(o, "bench"), "conv") != 0) continue;
        const char *kern = json_object_get(o, "kernels") ? jstr(o, "kernels") : "";
        const char *used = json_object_get(o, "training") ? jstr(o, "training") : "";
        if (!head++)
            printf("\nconv: ResNet-8's convolutions, batch %d, 1 thread, ms per call (GFLOP/s); direct: the %s "
                   "kernels; *: the path training takes\n%-8s %4s %3s %4s %2s %6s %17s %17s %7s\n",
                   jint(o, "batch"), kern[0] ? kern : "direct", "pass", "cin", "h", "cout", "k", "stride", "sgemm",
                   "direct", "speedup");
        char a[48], b[48] = "-", c[32];
        snprintf(a, sizeof a, "%s%.3f (%.1f)", strcmp(used, "sgemm") ? "" : "*", jnum(o, "sgemm_ms"),
                 jnum(o, "sgemm_gflops"));
        if (jnum(o, "direct_ms") > 0)
            snprintf(b, sizeof b, "%s%.3f (%.1f)", strcmp(used, "direct") ? "" : "*", jnum(o, "direct_ms"),
                     jnum(o, "direct_gflops"));
        printf("%-8s %4d %3d %4d %2d %6d %17s %17s %7s\n", jstr(o, "pass"), jint(o, "cin"), jint(o, "h"),
               jint(o, "cout"), jint(o, "k"), jint(o, "stride"), a, b, fmt(c, sizeof c, "%.2f", jnum(o, "speedup")));
    }
    head = 0;
    json_array_foreach(t->others, i, o) {
        if (strcmp(jstr(o, "bench"), "transport") != 0) continue;
        if (!head++) printf("\ntransport: pull+push rounds/s of the %d-value vector\n%7s %5s %8s %6s %12s %14s %9s\n",
                            jint(o, "params"), "workers", "nodes", "encoding", "path", "bytes/round", "rounds/s",
                            "vs bare");
        char b[32];
        const char *enc = json_object_get(o, "encoding") ? jstr(o, "encoding") : "f32";
        const double bytes = json_object_get(o, "bytes_per_round") ? jnum(o, "bytes_per_round") : 2.0 * jnum(o, "bytes");
        printf("%7d %5d %8s %6s %12.0f %14.1f %9s\n", jint(o, "workers"), jint(o, "nodes"), enc, jstr(o, "path"), bytes,
               jnum(o, "rounds_per_s"), fmt(b, sizeof b, "%.2f", jnum(o, "ratio_to_bare")));
    }
    head = 0;
    json_array_foreach(t->others, i, o) {
        if (strcmp(jstr(o, "bench"), "cluster") != 0) continue;
        if (!head++) printf("\ncluster: end-to-end training images/s, %s\n%-8s %7s %7s %6s %10s %8s\n", jstr(o, "config"),
                            "mode", "workers", "threads", "steps", "images/s", "wall s");
        printf("%-8s %7d %7d %6d %10.1f %8.1f\n", jstr(o, "mode"), jint(o, "workers"), jint(o, "threads"),
               jint(o, "steps"), jnum(o, "images_per_s"), jnum(o, "wall_s"));
    }
    head = 0;
    json_array_foreach(t->others, i, o) {
        if (strcmp(jstr(o, "bench"), "accuracy") != 0) continue;
        if (!head++) printf("\naccuracy: wall time to reach the target test accuracy, %s\n%-8s %7s %7s %7s %6s %9s\n",
                            jstr(o, "config"), "mode", "workers", "threads", "target", "epoch", "wall s");
        const int reached = json_is_true(json_object_get(o, "reached"));
        char b[32];
        printf("%-8s %7d %7d %7.2f %6d %9s%s\n", jstr(o, "mode"), jint(o, "workers"), jint(o, "threads"),
               jnum(o, "target"), jint(o, "epoch"), fmt(b, sizeof b, "%.0f", jnum(o, "wall_s")),
               reached ? "" : " (not reached)");
    }
}

static int run_table(const char *path) {
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr, "auxps bench: %s: %s\n", path, strerror(errno));
        return 1;
    }
    table_t *t = calloc(1, sizeof *t);
    char *line = malloc(MAX_LINE);
    int rc = 1;
    if (t == NULL || line == NULL || (t->others = json_array()) == NULL) {
        fprintf(stderr, "auxps bench: out of memory\n");
        goto done;
    }
    while (fgets(line, MAX_LINE, f) != NULL) {
        json_t *o = json_loads(line, 0, NULL);
        if (json_is_object(o)) add_line(t, o);
        json_decref(o);
    }
    if (ferror(f)) {
        fprintf(stderr, "auxps bench: %s: read error\n", path);
        goto done;
    }
    if (t->cpus > 0) {
        printf("machine: %d CPUs, 1-minute load average", t->cpus);
        if (t->load_seen[0]) printf(" %.2f at the start", t->load[0]);
        if (t->load_seen[1]) printf("%s %.2f at the end", t->load_seen[0] ? "," : "", t->load[1]);
        printf("\n");
    }
    print_compute(t);
    print_others(t);
    rc = 0;
done:
    if (t != NULL) json_decref(t->others);
    free(t);
    free(line);
    fclose(f);
    return rc;
}

/* ---- the command ------------------------------------------------------------------------ */

int bench_compute(int argc, char **argv) {
    bench_list_t models = {{0}, 1}, bits = {{2}, 1}, auxs = {{1}, 1}, batches = {{128}, 1}, threads = {{1, 2}, 2};
    timing_t tm = {2, -1, 0.0, 0.0};
    int sgemm = 0, conv = 0, seconds_given = 0;
    const char *table = NULL;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--sgemm") == 0) {
            sgemm = 1;
            continue;
        }
        if (strcmp(a, "--conv") == 0) {
            conv = 1;
            continue;
        }
        if (v == NULL) return usage_error("'%s' needs a value%s", a, "");
        i++;
        if (strcmp(a, "--model") == 0) {
            if (bench_parse_list(v, 0, 0, model_names, &models) != 0) return usage_error("--model '%s': expected %s", v, "resnet8 or resnet20, comma-separated");
        } else if (strcmp(a, "--bits") == 0) {
            if (bench_parse_list(v, 1, 32, NULL, &bits) != 0) return usage_error("--bits '%s': expected %s", v, "1..8 or 32, comma-separated");
            for (int k = 0; k < bits.n; k++)
                if (bits.v[k] > 8 && bits.v[k] != 32) return usage_error("--bits '%s': expected %s", v, "1..8 or 32, comma-separated");
        } else if (strcmp(a, "--aux") == 0) {
            if (bench_parse_list(v, 0, 0, aux_names, &auxs) != 0) return usage_error("--aux '%s': expected %s", v, "on or off, comma-separated");
        } else if (strcmp(a, "--batch") == 0) {
            if (bench_parse_list(v, 1, 4096, NULL, &batches) != 0) return usage_error("--batch '%s': expected %s", v, "integers in 1..4096, comma-separated");
        } else if (strcmp(a, "--threads") == 0) {
            if (bench_parse_list(v, 1, 256, NULL, &threads) != 0) return usage_error("--threads '%s': expected %s", v, "integers in 1..256, comma-separated");
        } else if (strcmp(a, "--steps") == 0) {
            if (config_parse_int(v, 1, 1000000, &tm.min_steps) != 0) return usage_error("--steps '%s': expected %s", v, "an integer in 1..1000000");
        } else if (strcmp(a, "--warmup") == 0) {
            if (config_parse_int(v, 0, 1000, &tm.warmup) != 0) return usage_error("--warmup '%s': expected %s", v, "an integer in 0..1000");
        } else if (strcmp(a, "--warmup-seconds") == 0) {
            if (parse_seconds(v, 1, &tm.warmup_s) != 0) return usage_error("--warmup-seconds '%s': expected %s", v, "a number of seconds in [0, 3600]");
        } else if (strcmp(a, "--seconds") == 0) {
            if (parse_seconds(v, 0, &tm.min_seconds) != 0) return usage_error("--seconds '%s': expected %s", v, "a number of seconds in (0, 3600]");
            seconds_given = 1;
        } else if (strcmp(a, "--table") == 0) {
            table = v;
        } else {
            return usage_error("unknown argument '%s'%s", a, "");
        }
    }
    if (table != NULL) return run_table(table);
    if (sgemm) return run_sgemm(&threads, seconds_given ? tm.min_seconds : 1.0);
    if (conv) return run_conv(seconds_given ? tm.min_seconds : 0.5);
    if (tm.min_steps < 0) tm.min_steps = seconds_given ? 3 : 20;
    return run_compute(&models, &bits, &auxs, &batches, &threads, &tm);
}
