/* info.c — `attncache info`: the model's architecture and sizes, the CPU level
 * and the kernels a context would run, as one JSON object. */
#define _GNU_SOURCE
#include "cli.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *pool_name(int p) {
    switch (p) {
    case AC_POOL_NONE: return "none";
    case AC_POOL_MEAN: return "mean";
    case AC_POOL_CLS: return "cls";
    case AC_POOL_LAST: return "last";
    default: return "default";
    }
}

int cmd_info(int argc, char **argv) {
    cli_common c = {0};
    for (int i = 0; i < argc; i++) {
        int r = cli_common_opt(&c, argc, argv, &i);
        if (r < 0) return 1;
        if (r) continue;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("usage: attncache info -m MODEL\nPrints the model's architecture and sizes, the CPU level and the kernels a context\nwould run (cpu, kernels) as JSON.\n");
            return 0;
        }
        return cli_fail("info: unknown option '%s' (see --help)", argv[i]);
    }
    ac_model *m;
    ac_ctx *ctx; /* only to report the kernels it would run */
    if (cli_load(&c, &m, &ctx)) return 1;
    ac_model_info f;
    ac_model_get_info(m, &f);
    char cpu[128], kern[256];
    ac_cpu_info(cpu, sizeof cpu);
    ac_ctx_describe(ctx, kern, sizeof kern);
    ac_ctx_free(ctx);
    cJSON *o = cJSON_CreateObject();
    if (o) {
        cJSON_AddStringToObject(o, "arch", f.arch_name);
        cJSON_AddStringToObject(o, "name", f.name ? f.name : "");
        const struct {
            const char *key;
            double v;
        } num[] = {{"n_vocab", f.n_vocab},     {"n_ctx_train", f.n_ctx_train}, {"n_embd", f.n_embd},
                   {"n_layer", f.n_layer},     {"n_head", f.n_head},           {"n_head_kv", f.n_head_kv},
                   {"n_ff", f.n_ff},           {"head_dim", f.head_dim}};
        for (size_t k = 0; k < sizeof num / sizeof num[0]; k++) cJSON_AddNumberToObject(o, num[k].key, num[k].v);
        cJSON_AddBoolToObject(o, "causal", f.causal);
        cJSON_AddStringToObject(o, "pooling", pool_name(f.pooling));
        cJSON_AddBoolToObject(o, "lm_head", f.has_lm_head);
        cJSON_AddNumberToObject(o, "n_cls_out", f.n_cls_out);
        cJSON_AddNumberToObject(o, "n_params", (double)f.n_params);
        cJSON_AddNumberToObject(o, "file_bytes", (double)f.file_bytes);
        cJSON_AddNumberToObject(o, "bos", ac_token_bos(m));
        cJSON_AddNumberToObject(o, "eos", ac_token_eos(m));
        cJSON_AddStringToObject(o, "cpu", cpu);
        cJSON_AddStringToObject(o, "kernels", kern);
    }
    int rc = cli_json_write(stdout, o);
    ac_model_free(m);
    return rc;
}
