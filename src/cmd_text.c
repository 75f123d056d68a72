/* cmd_text.c: placeholder until its issue lands: each subcommand says it is not built yet (exit 2). */
#include "commands.h"

int cmd_vocab(int argc, char **argv) {
    (void)argc;
    (void)argv;
    return cli_not_built("vocab");
}

int cmd_tokenize(int argc, char **argv) {
    (void)argc;
    (void)argv;
    return cli_not_built("tokenize");
}

