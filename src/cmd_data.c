/* cmd_data.c: placeholder until its issue lands: each subcommand says it is not built yet (exit 2). */
#include "commands.h"

int cmd_prepare(int argc, char **argv) {
    (void)argc;
    (void)argv;
    return cli_not_built("prepare");
}

int cmd_show_batch(int argc, char **argv) {
    (void)argc;
    (void)argv;
    return cli_not_built("show-batch");
}

