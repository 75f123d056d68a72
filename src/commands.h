/* commands.h: the subcommands main.c dispatches to. Each takes the arguments after its name
 * (argv[0] is the subcommand name) and returns the process exit status: 0 success, 1 runtime
 * failure, 2 usage or configuration error, 3 training diverged (BpError kinds map to these through
 * bp_error_status). */
#ifndef BP_COMMANDS_H
#define BP_COMMANDS_H

int cmd_train(int argc, char **argv);      /* cmd_train.c: CONFIG [--set] [--resume] [--dry-run] */
int cmd_eval(int argc, char **argv);       /* cmd_train.c */
int cmd_export(int argc, char **argv);     /* cmd_train.c */
int cmd_prepare(int argc, char **argv);    /* cmd_data.c */
int cmd_show_batch(int argc, char **argv); /* cmd_data.c */
int cmd_vocab(int argc, char **argv);      /* cmd_text.c */
int cmd_tokenize(int argc, char **argv);   /* cmd_text.c */
int cmd_gradcheck(int argc, char **argv);  /* cmd_model.c */
int cmd_forward(int argc, char **argv);    /* cmd_model.c */
int cmd_bench(int argc, char **argv);      /* cmd_bench.c */


#endif
