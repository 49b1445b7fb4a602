/* commands.h — the entry point of every `attncache` command, for main.c's
 * table. Each takes the arguments after the command name and returns the exit
 * status (0, 1 after an error line); main checks stdout afterwards. */
#ifndef AC_COMMANDS_H
#define AC_COMMANDS_H

int cmd_tokenize(int argc, char **argv);        /* tokenize.c */
int cmd_embed(int argc, char **argv);           /* embed.c */
int cmd_score(int argc, char **argv);           /* score.c */
int cmd_similarity(int argc, char **argv);      /* similarity.c */
int cmd_info(int argc, char **argv);            /* info.c */
int cmd_eval(int argc, char **argv);            /* eval.c */
int cmd_bench(int argc, char **argv);           /* bench.c */
int cmd_build(int argc, char **argv);           /* cache_cmds.c */
int cmd_db(int argc, char **argv);              /* cache_cmds.c */
int cmd_train_projector(int argc, char **argv); /* cache_cmds.c */
int cmd_tune(int argc, char **argv);            /* cache_cmds.c */
int cmd_serve(int argc, char **argv);           /* tools/server/serve.c */

#endif
