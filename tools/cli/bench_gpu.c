/* attncache bench --gpu — the prefill forward through the CUDA backend
 * (src/backends/cuda): the model uploaded once in bf16, then a warm-up and
 * REPS timed ac_cuda_forward calls on the same batch. Built with -DAC_CUDA=ON
 * only (AC_HAVE_CUDA); otherwise --gpu fails with a message saying so. */
#include "cli.h"

#include <cjson/cJSON.h>

#include <stdlib.h>

#ifdef AC_HAVE_CUDA
#include "backends/cuda/cuda_backend.h"

static int cmp_dbl(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int cli_bench_gpu_check(void) {
    if (!ac_cuda_available()) return cli_fail("--gpu: no CUDA device found (driver or GPU missing)");
    return 0;
}

int cli_bench_gpu(const ac_model *m, const ac_seq *seqs, int batch, int L, int reps, ac_cuda_model **g,
                  cJSON *results) {
    if (!*g) {
        char dev[256];
        if (ac_cuda_device_name(dev, sizeof dev) == AC_OK) printf("GPU: %s\n", dev);
        int rc = ac_cuda_model_upload(m, AC_CUDA_BF16, g);
        if (rc) return cli_api_fail("--gpu: model upload", rc);
    }
    const ac_model_info *info = NULL;
    ac_model_info mi;
    ac_model_get_info(m, &mi);
    info = &mi;
    double *t = malloc((size_t)reps * sizeof *t), *gms = malloc((size_t)reps * sizeof *gms);
    float *pooled = malloc((size_t)batch * info->n_embd * sizeof *pooled);
    int rc = 0;
    if (!t || !gms || !pooled) {
        rc = cli_fail("out of memory");
        goto done;
    }
    ac_outputs o = {0};
    o.pooled = pooled;
    o.pooling = AC_POOL_DEFAULT;
    for (int k = -1; k < reps; k++) { /* k = -1: warm-up */
        const double t0 = cli_now();
        int r = ac_cuda_forward(*g, seqs, batch, &o, NULL);
        if (r != AC_OK) {
            rc = cli_fail("L=%d (GPU): %s", L, ac_last_error());
            goto done;
        }
        if (k >= 0) t[k] = cli_now() - t0, gms[k] = ac_cuda_last_ms(*g);
    }
    qsort(t, (size_t)reps, sizeof *t, cmp_dbl);
    qsort(gms, (size_t)reps, sizeof *gms, cmp_dbl);
    const double best = (double)L * batch / t[0], med = (double)L * batch / t[reps / 2];
    printf("%6d %10.1f %10.1f  GPU %.3f ms (median, device events)\n", L, best, med, gms[reps / 2]);
    cJSON *row = results ? cJSON_CreateObject() : NULL;
    if (row) {
        cJSON_AddNumberToObject(row, "L", L);
        cJSON_AddNumberToObject(row, "tok_s_best", best);
        cJSON_AddNumberToObject(row, "tok_s_median", med);
        cJSON_AddNumberToObject(row, "gpu_ms_median", gms[reps / 2]);
        cJSON_AddItemToArray(results, row);
    }
done:
    free(t), free(gms), free(pooled);
    return rc;
}

void cli_bench_gpu_free(ac_cuda_model *g) { ac_cuda_model_free(g); }

#else

int cli_bench_gpu_check(void) {
    return cli_fail("--gpu: this attncache was built without the CUDA backend (rebuild with cmake -DAC_CUDA=ON)");
}

#endif
