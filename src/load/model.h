/* model.h — a loaded model: the GGUF mapping, its vocab, hyper-parameters and
 * pointers to every weight (into the mapping where the type allows).
 * Owned by the forward stage (src/load/model.c); other stages rely only on
 * the fields `gguf`, `vocab` and `info`. */
#ifndef AC_MODEL_H
#define AC_MODEL_H

#include "attncache.h"
#include "gguf.h"
#include "../tokenize/tokenizer.h"

struct ac_model {
    gguf_file *gguf;     /* owned mapping */
    ac_vocab *vocab;     /* owned tokenizer */
    ac_model_info info;  /* strings owned by the model */
    /* hyper-parameters and weights: added by the forward stage */
};

#endif
