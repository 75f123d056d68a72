/* cmd_train.c: placeholder until its issue lands: each subcommand says it is not built yet (exit 2). */
#include "commands.h"

int cmd_train(int argc, char **argv) {
    (void)argc;
    (void)argv;
    return cli_not_built("train");
}

int cmd_eval(int argc, char **argv) {
    (void)argc;
    (void)argv;
    return cli_not_built("eval");
}

int cmd_export(int argc, char **argv) {
    (void)argc;
    (void)argv;
    return cli_not_built("export");
}

