/* main.c - the auxps command: train, eval, info, bench, and the processes of a distributed run
 * (coord, ps, worker, cluster). Only main exits. */
#include "bench_compute.h"
#include "bench_transport.h"
#include "blas.h"
#include "cluster.h"
#include "config.h"
#include "coord.h"
#include "curve.h"
#include "data.h"
#include "error.h"
#include "export.h"
#include "model.h"
#include "node.h"
#include "status_cli.h"
#include "trainer.h"
#include "worker.h"

#include <cblas.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define AUXPS_VERSION "0.1.0"

static volatile sig_atomic_t g_stop; /* set by SIGINT/SIGTERM; the only global, as signals need */

static void on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

static int bad_value(const char *opt, const char *val, long lo, long hi) {
    fprintf(stderr, "auxps: %s '%s': expected an integer in %ld..%ld\n", opt, val, lo, hi);
    return 2;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: auxps COMMAND [ARGS]\n"
            "  train CONFIG [--set section.key=value ...] [--dump-params FILE]\n"
            "                                               train in this process, evaluate, export\n"
            "  eval MODEL [--data DIR] [--limit N]          test accuracy of an exported model (first N test images)\n"
            "  info MODEL                                   layers, bit widths, size of an exported model\n"
            "  bench [--model M,..] [--bits K,..] [--aux on,off] [--batch B,..] [--threads T,..] [--steps N] [--seconds S]\n"
            "                                               training images/s and GFLOP/s (default ResNet-8 W2A2 + aux,\n"
            "                                               batch 128, 1 and 2 threads; JSON lines)\n"
            "  bench --sgemm [--threads T,..]               OpenBLAS sgemm's peak GFLOP/s\n"
            "  bench --conv [--seconds S]                   each ResNet-8 convolution: direct kernels vs sgemm\n"
            "  bench --table FILE                           the table of a suite's JSON lines (bench/run)\n"
            "  bench --transport [--seconds S] [--curve] [--coded] [--workers W,..] [--nodes S,..]\n"
            "                                               pull+push rounds/s through the nodes vs bare ZeroMQ,\n"
            "                                               1 and 4 workers, 1 and 2 nodes (JSON lines); --coded:\n"
            "                                               k-bit pulls and q8 pushes\n"
            "  cluster CONFIG --ps S --workers N [--set ...] a coordinator, S nodes and N workers on this machine\n"
            "  coord CONFIG --nodes S [--workers N] [--bind ENDPOINT] [--dump-params FILE] [--set ...]\n"
            "                                               the coordinator of a distributed run\n"
            "  ps --coordinator ENDPOINT [--bind ENDPOINT] [--advertise ENDPOINT] [--security CONFIG]\n"
            "                                               a parameter-server node\n"
            "  worker --coordinator ENDPOINT [--threads T] [--security CONFIG]\n"
            "                                               a training worker\n"
            "  keygen DIR [--clients N]                     CURVE keys: a server pair, N client pairs (default 1)\n"
            "                                               and authorized_keys (docs/CONFIG.md [security])\n"
            "  keygen DIR --client NAME                     one more client pair, added to DIR/authorized_keys\n"
            "  status [URL] [--json]                        a run's status from its HTTP endpoint\n"
            "                                               (default http://127.0.0.1:8080/status)\n"
            "  version\n");
}

/* Writes the parameter vector as raw little-endian float32 (`--dump-params`, for the test that
 * holds a one-worker bsp cluster to this process). */
static int dump_params(model_t *m, const char *path, auxps_error_t *err) {
    FILE *f = fopen(path, "wb");
    if (f == NULL) return auxps_error_set(err, AUXPS_EIO, "%s: %s", path, strerror(errno));
    const size_t n = model_num_params(m);
    size_t w = fwrite(model_params(m), sizeof(float), n, f);
    if (fclose(f) != 0 || w != n) return auxps_error_set(err, AUXPS_EIO, "%s: write failed", path);
    return 0;
}

static int cmd_train(int argc, char **argv) {
    if (argc < 1) {
        usage(stderr);
        return 2;
    }
    auxps_config_t cfg;
    auxps_error_t err = {0};
    const char *dump = NULL;
    if (config_load(&cfg, argv[0], &err) != 0) {
        fprintf(stderr, "auxps: %s\n", err.msg);
        return 1;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = NULL;
        if (strcmp(argv[i], "--dump-params") == 0 && i + 1 < argc) {
            dump = argv[++i];
            continue;
        }
        if (strcmp(argv[i], "--set") == 0 && i + 1 < argc) a = argv[++i];
        else if (strncmp(argv[i], "--set=", 6) == 0) a = argv[i] + 6;
        if (a == NULL) {
            fprintf(stderr, "auxps: unknown argument '%s'\n", argv[i]);
            return 2;
        }
        if (config_set(&cfg, a, &err) != 0) {
            fprintf(stderr, "auxps: %s\n", err.msg);
            return 1;
        }
    }
    if (config_check(&cfg, &err) != 0) {
        fprintf(stderr, "auxps: %s\n", err.msg);
        return 1;
    }
    signal(SIGINT, on_signal); /* before the data loads, so an early Ctrl-C still ends cleanly */
    signal(SIGTERM, on_signal);
    trainer_t *t = trainer_new(&cfg, &err);
    if (t == NULL) {
        fprintf(stderr, "auxps: %s\n", err.msg);
        return 1;
    }
    train_result_t res;
    int rc = trainer_run(t, stdout, &g_stop, &res, &err);
    if (rc == 0 && dump != NULL) rc = dump_params(trainer_model(t), dump, &err);
    trainer_destroy(&t);
    if (rc != 0) {
        fprintf(stderr, "auxps: %s\n", err.msg);
        return 1;
    }
    return g_stop ? 130 : 0;
}

static int cmd_eval(int argc, char **argv) {
    if (argc < 1) {
        usage(stderr);
        return 2;
    }
    const char *dir = DATA_DEFAULT_DIR;
    int limit = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--data") == 0 && i + 1 < argc) dir = argv[++i];
        else if (strcmp(argv[i], "--limit") == 0 && i + 1 < argc) {
            if (config_parse_int(argv[++i], 1, 10000000, &limit) != 0) return bad_value("--limit", argv[i], 1, 10000000);
        }
        else {
            fprintf(stderr, "auxps: unknown argument '%s'\n", argv[i]);
            return 2;
        }
    }
    const int batch = 256;
    auxps_error_t err = {0};
    model_t *m = NULL;
    dataset_t test = {0};
    float mean, std, *x = NULL;
    int *y = NULL, rc = 1;
    if (export_load(argv[0], batch, &m, &mean, &std, &err) != 0 || dataset_load(&test, dir, 0, limit, &err) != 0) {
        fprintf(stderr, "auxps: %s\n", err.msg);
        goto done;
    }
    const model_spec_t *sp = model_spec(m);
    if (test.c != sp->in_c || test.h != sp->in_h || test.w != sp->in_w || test.classes > sp->classes) {
        fprintf(stderr, "auxps: test data in %s does not fit the model's input or classes\n", dir);
        goto done;
    }
    x = malloc(sizeof(float) * batch * sp->in_c * sp->in_h * sp->in_w);
    y = malloc(sizeof(int) * batch);
    if (x == NULL || y == NULL) {
        fprintf(stderr, "auxps: out of memory\n");
        goto done;
    }
    data_transform_t tf = {mean, std, 0, 0};
    int correct = trainer_evaluate(m, &test, &tf, batch, x, y, NULL);
    printf("test_accuracy %.4f (%d/%d) W%dA%d %s\n", (double)correct / test.n, correct, test.n, sp->wbits,
           sp->abits, argv[0]);
    rc = 0;
done:
    free(x);
    free(y);
    dataset_free(&test);
    model_destroy(&m);
    return rc;
}

static int cmd_info(int argc, char **argv) {
    if (argc < 1) {
        usage(stderr);
        return 2;
    }
    auxps_error_t err = {0};
    if (export_info(argv[0], stdout, &err) != 0) {
        fprintf(stderr, "auxps: %s\n", err.msg);
        return 1;
    }
    return 0;
}

static int cmd_bench(int argc, char **argv) {
    for (int i = 0; i < argc; i++)
        if (strcmp(argv[i], "--transport") == 0) return bench_transport(argc, argv);
    return bench_compute(argc, argv);
}

static int cmd_keygen(int argc, char **argv) {
    if (argc < 1 || argv[0][0] == '-') {
        usage(stderr);
        return 2;
    }
    int clients = 1;
    const char *name = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--clients") == 0 && i + 1 < argc) {
            if (config_parse_int(argv[++i], 1, CURVE_MAX_CLIENTS, &clients) != 0)
                return bad_value("--clients", argv[i], 1, CURVE_MAX_CLIENTS);
        } else if (strcmp(argv[i], "--client") == 0 && i + 1 < argc) {
            name = argv[++i];
        } else {
            fprintf(stderr, "auxps: unknown argument '%s'\n", argv[i]);
            return 2;
        }
    }
    auxps_error_t err = {0};
    if (curve_keygen(argv[0], clients, name, stdout, &err) != 0) {
        fprintf(stderr, "auxps keygen: %s\n", err.msg);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    const char *better = NULL, *why = NULL;
    if (blas_select(argv, &better, &why) != 0)
        fprintf(stderr, "auxps: OpenBLAS runs its %s kernels, and restarting with OPENBLAS_CORETYPE=%s failed (%s); "
                        "training will be slower\n", blas_core(), better, why);
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "train") == 0) return cmd_train(argc - 2, argv + 2);
    if (strcmp(cmd, "eval") == 0) return cmd_eval(argc - 2, argv + 2);
    if (strcmp(cmd, "info") == 0) return cmd_info(argc - 2, argv + 2);
    if (strcmp(cmd, "bench") == 0) return cmd_bench(argc - 2, argv + 2);
    if (strcmp(cmd, "coord") == 0) return coord_main(argc - 2, argv + 2);
    if (strcmp(cmd, "ps") == 0) return node_main(argc - 2, argv + 2);
    if (strcmp(cmd, "worker") == 0) return worker_main(argc - 2, argv + 2);
    if (strcmp(cmd, "cluster") == 0) return cluster_main(argc - 2, argv + 2);
    if (strcmp(cmd, "status") == 0) return status_cli_main(argc - 2, argv + 2);
    if (strcmp(cmd, "keygen") == 0) return cmd_keygen(argc - 2, argv + 2);
    if (strcmp(cmd, "version") == 0) {
        printf("auxps %s\n%s; kernels %s\n", AUXPS_VERSION, openblas_get_config(), blas_core());
        return 0;
    }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "auxps: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
