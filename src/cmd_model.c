/* cmd_model.c: placeholder until its issue lands: each subcommand says it is not built yet (exit 2). */
#include "commands.h"

int cmd_gradcheck(int argc, char **argv) {
    (void)argc;
    (void)argv;
    return cli_not_built("gradcheck");
}

int cmd_forward(int argc, char **argv) {
    (void)argc;
    (void)argv;
    return cli_not_built("forward");
}

int cmd_bench(int argc, char **argv) {
    (void)argc;
    (void)argv;
    return cli_not_built("bench");
}

