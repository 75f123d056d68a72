/* cli.c: small helpers shared by the subcommands (see commands.h). */
#include <stdio.h>
#include <string.h>

#include "commands.h"

int cli_wants_help(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) return 1;
    return 0;
}

int cli_not_built(const char *name) {
    fprintf(stderr, "bert_pretrain %s: not built yet (see the open issues); nothing was done\n", name);
    return 2;
}
