/* cli.c: the one command-line parser and the command layer's shared steps (see cli.h). */
#include "cli.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "dist.h"
#include "kernels.h"

static void vmessage(const CliCommand *cmd, const char *fmt, va_list ap) {
    fflush(stdout); /* what the command printed so far comes before its message */
    fprintf(stderr, "bert_pretrain %s: ", cmd->name);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

void cli_message(const CliCommand *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vmessage(cmd, fmt, ap);
    va_end(ap);
}

int cli_fail(const CliCommand *cmd, const BpError *err) {
    cli_message(cmd, "%s", err->msg[0] ? err->msg : "failed (no message: this is a bug)");
    return bp_error_status(err);
}

static void print_usage_line(const CliCommand *cmd, FILE *out) {
    fprintf(out, "usage: bert_pretrain %s\n", cmd->usage);
}

int cli_usage_error(const CliCommand *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vmessage(cmd, fmt, ap);
    va_end(ap);
    print_usage_line(cmd, stderr);
    fprintf(stderr, "(bert_pretrain %s --help for every option)\n", cmd->name);
    return BP_EXIT_USAGE;
}

static void print_help(const CliCommand *cmd) {
    print_usage_line(cmd, stdout);
    if (cmd->description) printf("\n%s", cmd->description);
    bool any = cmd->n_options > 0 || cmd->takes_sets;
    if (any) printf("\noptions:\n");
    if (cmd->takes_sets)
        printf("  %-26s %s\n", "--set section.key=value",
               "override one config key (repeatable), validated like the file");
    for (int i = 0; i < cmd->n_options; i++) {
        const CliOption *o = &cmd->options[i];
        char left[64];
        snprintf(left, sizeof left, "%s%s%s%s", o->name, o->metavar ? " " : "", o->metavar ? o->metavar : "",
                 o->kind == CLI_LIST ? "..." : "");
        printf("  %-26s %s\n", left, o->help ? o->help : "");
    }
    printf("  %-26s %s\n", "-h, --help", "this help");
    printf("\nExit status: 0 success, 1 runtime failure, 2 usage or configuration error, 3 training diverged.\n");
}

static bool parse_long(const char *s, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end) return false;
    *out = v;
    return true;
}

/* the option argv[i] names ("--name" or "--name=value"); *inline_value gets the part after '=' */
static const CliOption *find_option(const CliCommand *cmd, const char *arg, const char **inline_value) {
    *inline_value = NULL;
    for (int k = 0; k < cmd->n_options; k++) {
        const CliOption *o = &cmd->options[k];
        size_t n = strlen(o->name);
        if (strncmp(arg, o->name, n) != 0) continue;
        if (arg[n] == 0) return o;
        if (arg[n] == '=' && o->kind != CLI_FLAG) {
            *inline_value = arg + n + 1;
            return o;
        }
    }
    return NULL;
}

static int list_add(const CliCommand *cmd, CliList *l, const char *v, int argc) {
    if (!l->items) {
        l->items = calloc((size_t)argc, sizeof *l->items);
        if (!l->items) return cli_usage_error(cmd, "out of memory parsing the arguments");
    }
    l->items[l->n++] = v;
    return CLI_OK;
}

static int take_value(const CliCommand *cmd, const CliOption *o, const char *v, int argc) {
    switch (o->kind) {
    case CLI_FLAG:
        *(bool *)o->dest = true;
        return CLI_OK;
    case CLI_STRING:
        *(const char **)o->dest = v;
        return CLI_OK;
    case CLI_LONG: {
        long x;
        if (!parse_long(v, &x) || x < o->lo || x > o->hi)
            return cli_usage_error(cmd, "%s '%s' must be an integer in [%ld, %ld]", o->name, v, o->lo, o->hi);
        *(long *)o->dest = x;
        return CLI_OK;
    }
    case CLI_LIST:
        return list_add(cmd, (CliList *)o->dest, v, argc);
    }
    return CLI_OK;
}

static int take_set(const CliCommand *cmd, CliArgs *out, const char *v) {
    if (out->n_sets == CLI_MAX_SETS)
        return cli_usage_error(cmd, "more than %d --set options", CLI_MAX_SETS);
    if (!*v) return cli_usage_error(cmd, "--set needs section.key=value");
    out->sets[out->n_sets++] = (char *)v;
    return CLI_OK;
}

int cli_parse(const CliCommand *cmd, int argc, char **argv, CliArgs *out) {
    memset(out, 0, sizeof *out);
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            print_help(cmd);
            return 0;
        }
    int rc = CLI_OK;
    for (int i = 1; i < argc && rc == CLI_OK; i++) {
        const char *a = argv[i];
        if (cmd->takes_sets && (!strcmp(a, "--set") || !strncmp(a, "--set=", 6))) {
            if (a[5] == '=') {
                rc = take_set(cmd, out, a + 6);
            } else if (i + 1 >= argc) {
                rc = cli_usage_error(cmd, "--set needs section.key=value");
            } else {
                rc = take_set(cmd, out, argv[++i]);
            }
            continue;
        }
        const char *inline_value;
        const CliOption *o = a[0] == '-' && a[1] ? find_option(cmd, a, &inline_value) : NULL;
        if (o) {
            if (o->kind == CLI_FLAG || inline_value) {
                rc = take_value(cmd, o, inline_value, argc);
            } else if (o->kind == CLI_LIST) {
                int before = ((CliList *)o->dest)->n;
                while (rc == CLI_OK && i + 1 < argc && strncmp(argv[i + 1], "--", 2))
                    rc = take_value(cmd, o, argv[++i], argc);
                if (rc == CLI_OK && ((CliList *)o->dest)->n == before)
                    rc = cli_usage_error(cmd, "%s needs at least one %s", o->name, o->metavar ? o->metavar : "value");
            } else if (i + 1 >= argc) {
                rc = cli_usage_error(cmd, "%s needs a value (%s)", o->name, o->metavar ? o->metavar : "VALUE");
            } else {
                rc = take_value(cmd, o, argv[++i], argc);
            }
            continue;
        }
        if (a[0] == '-' && a[1]) {
            rc = cli_usage_error(cmd, "unknown option '%s'", a);
        } else if (out->n_positional >= cmd->max_positional) {
            rc = cmd->max_positional == 0
                     ? cli_usage_error(cmd, "unexpected argument '%s'", a)
                     : cli_usage_error(cmd, "unexpected argument '%s' (%s already given)", a,
                                       cmd->positional ? cmd->positional : "every argument");
        } else {
            out->positional[out->n_positional++] = a;
        }
    }
    if (rc == CLI_OK && out->n_positional < cmd->min_positional)
        rc = cli_usage_error(cmd, "missing %s", cmd->positional ? cmd->positional : "argument");
    if (rc != CLI_OK) cli_args_free(cmd);
    return rc;
}

void cli_args_free(const CliCommand *cmd) {
    for (int k = 0; k < cmd->n_options; k++) {
        const CliOption *o = &cmd->options[k];
        if (o->kind != CLI_LIST) continue;
        CliList *l = o->dest;
        free(l->items);
        l->items = NULL;
        l->n = 0;
    }
}

Config *cli_config_load(const char *path, const CliArgs *a, BpError *err) {
    return cli_config_load_ranks(path, a, dist_world_size(), err);
}

Config *cli_config_load_ranks(const char *path, const CliArgs *a, int world_size, BpError *err) {
    Config *cfg = bp_malloc(sizeof *cfg, "the configuration", err);
    if (!cfg) return NULL;
    if (config_load_cli(cfg, path, a ? a->sets : NULL, a ? a->n_sets : 0, world_size, err) != 0) {
        free(cfg);
        return NULL;
    }
    return cfg;
}

void cli_config_free(Config *cfg) { free(cfg); }

int cli_set_threads(int threads) { return kern_init_threads(threads); }

