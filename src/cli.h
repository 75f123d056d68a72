/* cli.h: the one command-line parser of every subcommand, and the command layer's shared steps
 * (messages, loading a Config, the thread policy). Only main.c, cli.c and cmd_*.c include it: the
 * library (everything else) never sees argv.
 *
 * A command declares its options in a table (CliOption) and its shape in a CliCommand; cli_parse
 * fills the destinations, the positional arguments and the --set list, answers --help, and prints
 * every usage error as "bert_pretrain CMD: ..." followed by the usage. Every option takes
 * "--name VALUE" and "--name=VALUE"; every command that has a CONFIG takes "--set k=v" and
 * "--set=k=v" (at most CLI_MAX_SETS). */
#ifndef BP_CLI_H
#define BP_CLI_H

#include <stdbool.h>
#include <stdio.h>

#include "common.h"
#include "config.h"

#define CLI_MAX_SETS 64
#define CLI_MAX_POSITIONAL 4

typedef enum {
    CLI_FLAG,   /* no value; dest is bool*, set to true */
    CLI_STRING, /* one value; dest is const char ** */
    CLI_LONG,   /* one integer value in [lo, hi]; dest is long * */
    CLI_LIST,   /* one or more values up to the next option (--input a b c); dest is CliList * */
} CliKind;

typedef struct {
    const char **items; /* points into argv; allocated by cli_parse, freed by cli_args_free */
    int n;
} CliList;

typedef struct {
    const char *name; /* "--resume" */
    CliKind kind;
    void *dest;
    const char *metavar; /* shown in the help: "auto|PATH" */
    const char *help;    /* one line */
    long lo, hi;         /* CLI_LONG: accepted range */
} CliOption;

typedef struct {
    const char *name;        /* "prepare": messages read "bert_pretrain prepare: ..." */
    const char *usage;       /* the synopsis after "usage: bert_pretrain " */
    const char *description; /* paragraphs printed by --help after the synopsis */
    const char *positional;  /* names of the positional arguments for messages: "CONFIG.yaml" */
    int min_positional, max_positional;
    bool takes_sets; /* --set k=v */
    const CliOption *options;
    int n_options;
} CliCommand;

typedef struct {
    const char *positional[CLI_MAX_POSITIONAL];
    int n_positional;
    char *sets[CLI_MAX_SETS];
    int n_sets;
} CliArgs;

/* What cli_parse found: go on, or stop with an exit status (help printed: 0, usage error: 2). */
enum { CLI_OK = -1 };

/* Parses argv[1..argc) (argv[0] is the command name). Returns CLI_OK, or the exit status to return
 * after it printed the help (0) or a usage error (2). Destinations not named keep their values, so
 * the caller sets defaults before. */
int cli_parse(const CliCommand *cmd, int argc, char **argv, CliArgs *out);
/* Frees what cli_parse allocated for CLI_LIST options. */
void cli_args_free(const CliCommand *cmd);

/* "bert_pretrain CMD: " + message on stderr (one message prefix for every command). */
void cli_message(const CliCommand *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints the error through cli_message and returns its exit status (bp_error_status). */
int cli_fail(const CliCommand *cmd, const BpError *err);
/* A usage error found after parsing (two options that exclude each other...): the message, the
 * usage line, exit status 2. */
int cli_usage_error(const CliCommand *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The one way a command gets a Config: defaults, the file (NULL: defaults only), each --set in
 * order, the world size, config_resolve. Returns a malloc'd Config, or NULL with err filled (out of
 * memory included). Free with cli_config_free. */
Config *cli_config_load(const char *path, const CliArgs *a, BpError *err);
/* The same for a world of world_size ranks instead of this job's (a plan: train --dry-run --ranks N). */
Config *cli_config_load_ranks(const char *path, const CliArgs *a, int world_size, BpError *err);
void cli_config_free(Config *cfg);

/* The thread policy's one owner: sets the worker threads (0 = all cores) for the whole process.
 * Commands call it once, before any library work, with training.threads of their config. */
int cli_set_threads(int threads);

#endif
