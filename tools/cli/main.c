/* main.c — the `attncache` command: dispatches argv[1] to its command through
 * the table below (name, function, one-line help) and checks stdout at the
 * end. Nothing else: the commands live in their own files (commands.h), their
 * shared helpers in common.c (cli.h), the evaluation tasks in tasks.c. */
#include "attncache.h"
#include "cli.h"
#include "commands.h"

#include <stdio.h>
#include <string.h>

static const struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help;
} COMMANDS[] = {
    {"tokenize", cmd_tokenize, "token ids of each input line"},
    {"embed", cmd_embed, "pooled embeddings (JSON lines)"},
    {"score", cmd_score, "prompt-based classification by label log-probabilities"},
    {"similarity", cmd_similarity, "cosine similarity of the input lines' embeddings"},
    {"info", cmd_info, "model architecture and sizes"},
    {"eval", cmd_eval, "accuracy on real data sets (sst2, stsb, agnews-fewshot, trec)"},
    {"build", cmd_build, "record an attention cache over a corpus"},
    {"db", cmd_db, "stats|verify|repair of an attention cache"},
    {"train-projector", cmd_train_projector, "train the cache's feature projector"},
    {"tune", cmd_tune, "choose the layers to reuse from measured sensitivity"},
    {"bench", cmd_bench, "prefill throughput and per-stage time split"},
    {"serve", cmd_serve, "HTTP server: OpenAI/TEI embeddings, predict, score, metrics"},
};
#define N_COMMANDS (sizeof COMMANDS / sizeof COMMANDS[0])

static void usage(FILE *f) {
    fprintf(f,
            "attncache %d.%d — prefill-only transformer engine with an attention cache\n\n"
            "usage: attncache <command> [options]   (attncache <command> --help)\n\n"
            "commands:\n",
            AC_VERSION_MAJOR, AC_VERSION_MINOR);
    for (size_t k = 0; k < N_COMMANDS; k++) fprintf(f, "  %-15s %s\n", COMMANDS[k].name, COMMANDS[k].help);
}

int main(int argc, char **argv) {
    cli_wrap_stdout();
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *name = argv[1];
    if (!strcmp(name, "-h") || !strcmp(name, "--help") || !strcmp(name, "help")) {
        usage(stdout);
        return cli_finish_stdout(0);
    }
    for (size_t k = 0; k < N_COMMANDS; k++)
        if (!strcmp(name, COMMANDS[k].name))
            /* every command's stdout is checked at the end: a failed write
             * (full disk, /dev/full) is an error and a non-zero exit, never a
             * silent cut */
            return cli_finish_stdout(COMMANDS[k].run(argc - 2, argv + 2));
    cli_fail("unknown command '%s'", name);
    usage(stderr);
    return 2;
}
