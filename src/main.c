/* main.c: command-line dispatch only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"
#include "gemm_cpu.h"
#include "kernels.h"

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

/* OpenBLAS picks its core when the library loads, before main: when it fell back to a generic core
 * on a CPU with AVX2/AVX-512 (new CPU models it does not know) and nobody set OPENBLAS_CORETYPE, set
 * the right one and start again, once (the variable is then set, so the check passes). After such a
 * restart the new core's self-test must pass, or the run stops rather than train on a broken kernel. */
static void fix_blas_core(char **argv) {
    const char *fixed_from = getenv("BP_OPENBLAS_CORE_FIXED_FROM");
    if (fixed_from) {
        double e = gemm_sgemm_selftest();
        if (!(e < 1e-5)) {
            fprintf(stderr, "bert_pretrain: OpenBLAS core %s (chosen instead of %s) fails its sgemm self-test "
                            "(error %.2g); set OPENBLAS_CORETYPE yourself\n", gemm_openblas_core(), fixed_from, e);
            exit(1);
        }
        fprintf(stderr, "bert_pretrain: OpenBLAS core %s instead of the generic %s (self-test error %.1e)\n",
                gemm_openblas_core(), fixed_from, e);
        unsetenv("BP_OPENBLAS_CORE_FIXED_FROM");
        return;
    }
    const char *core = gemm_openblas_core();
    const char *fix = gemm_openblas_core_fix(core, getenv("OPENBLAS_CORETYPE"), gemm_cpu_features());
    if (!fix) return;
    setenv("OPENBLAS_CORETYPE", fix, 1);
    setenv("BP_OPENBLAS_CORE_FIXED_FROM", core, 1);
    execv("/proc/self/exe", argv);
    fprintf(stderr, "bert_pretrain: warning: could not restart with OPENBLAS_CORETYPE=%s; fp32 products run on "
                    "OpenBLAS's generic %s kernel\n", fix, core);
    unsetenv("OPENBLAS_CORETYPE");
    unsetenv("BP_OPENBLAS_CORE_FIXED_FROM");
}

int main(int argc, char **argv) {
    fix_blas_core(argv);
    BpError err = {0};
    if (kern_isa_init(&err) != 0) {
        fprintf(stderr, "bert_pretrain: %s\n", err.msg);
        return 2;
    }
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
