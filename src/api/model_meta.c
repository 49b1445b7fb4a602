/* model_meta.c — metadata of a loaded model for applications: the names of a
 * classifier head's outputs. */
#include "attncache.h"
#include "load/model.h"
#include "util/common.h"

#include <stdio.h>
#include <string.h>

int ac_model_cls_label(const ac_model *m, int i, char *buf, size_t cap) {
    if (!m || !buf || cap == 0) return ac_err(AC_ERR_ARG, "ac_model_cls_label: invalid argument");
    buf[0] = 0;
    if (i < 0 || i >= m->info.n_cls_out)
        return ac_err(AC_ERR_RANGE, "classifier output %d out of range [0, %d)", i, m->info.n_cls_out);
    char key[96];
    snprintf(key, sizeof key, "%s.classifier.output_labels", m->info.arch_name);
    const ac_gguf_kv *kv = NULL;
    if (!m->gguf || ac_gguf_get_arr(m->gguf, key, AC_GGUF_T_STRING, &kv, 0) != AC_OK || !kv || !kv->arr_str ||
        kv->arr_n != (uint64_t)m->info.n_cls_out)
        return ac_err(AC_ERR_UNSUPPORTED, "the model names no classifier labels (%s)", key);
    ac_gguf_str s = kv->arr_str[i];
    size_t n = s.len < cap - 1 ? (size_t)s.len : cap - 1;
    memcpy(buf, s.ptr, n);
    buf[n] = 0;
    return AC_OK;
}
