/* main.c: command-line dispatch only. */
#include <stdio.h>
#include <string.h>

#include "commands.h"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *usage;
} Subcommand;

static const Subcommand SUBCOMMANDS[] = {
    {"prepare", cmd_prepare, "prepare CONFIG.yaml          text (.txt/.gz) -> token shards (+ vocab if missing)"},
    {"vocab", cmd_vocab, "vocab --input F... --size N --out V   build a WordPiece vocab from text"},
    {"tokenize", cmd_tokenize, "tokenize --vocab V [--ids|--pieces]    text on stdin -> tokens on stdout"},
    {"show-batch", cmd_show_batch, "show-batch CONFIG.yaml [--step S] [--n N] [--out B.safetensors]"},
    {"eval", cmd_eval, "eval CONFIG.yaml --checkpoint PATH   held-out MLM loss/accuracy, NSP accuracy"},
    {"export", cmd_export, "export CHECKPOINT OUT_DIR    model.safetensors (HF names), config.json, vocab.txt"},
    {"gradcheck", cmd_gradcheck, "gradcheck CONFIG.yaml [--set k=v]   finite-difference check of every tensor"},
    {"forward", cmd_forward, "forward --weights W --batch B [--grads G]   loss and gradients on given tensors"},
    {"bench", cmd_bench, "bench [CONFIG.yaml] [--set k=v]   tokens/s, GFLOP/s, share of the sgemm rate"},
    {"train", cmd_train, "train CONFIG.yaml            same as `bert_pretrain CONFIG.yaml`"},
};

static void usage(FILE *out) {
    fprintf(out,
            "bert_pretrain: pretrain BERT (masked LM + next sentence) on CPUs and compare LAMB, LARS,\n"
            "Adam and AdamW.\n\n"
            "usage:\n"
            "  bert_pretrain CONFIG.yaml [--set section.key=value ...] [--resume auto|PATH] [--dry-run]\n"
            "  bert_pretrain SUBCOMMAND [args]   (SUBCOMMAND --help for its options)\n\n"
            "subcommands:\n");
    for (size_t i = 0; i < sizeof SUBCOMMANDS / sizeof SUBCOMMANDS[0]; i++)
        fprintf(out, "  %s\n", SUBCOMMANDS[i].usage);
    fprintf(out, "\nExit status: 0 success, 1 runtime failure, 2 usage or configuration error, 3 training diverged.\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof SUBCOMMANDS / sizeof SUBCOMMANDS[0]; i++)
        if (!strcmp(argv[1], SUBCOMMANDS[i].name)) return SUBCOMMANDS[i].run(argc - 1, argv + 1);
    if (argv[1][0] == '-') {
        fprintf(stderr, "bert_pretrain: unknown option '%s'\n", argv[1]);
        usage(stderr);
        return 2;
    }
    /* anything else is a config file: `bert_pretrain CONFIG.yaml ...` trains */
    return cmd_train(argc, argv); /* argv[0] stands in for the subcommand name */
}
