/* cmd_text.c: `bert_pretrain vocab` (train a WordPiece vocab) and `bert_pretrain tokenize`
 * (text on stdin -> ids or pieces on stdout), thin command-line layers over tokenizer.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "tokenizer.h"

static void vocab_usage(FILE *out) {
    fprintf(out,
            "usage: bert_pretrain vocab --input FILE... --size N --out vocab.txt [--cased]\n"
            "                           [--min-count C]\n\n"
            "Trains a WordPiece vocabulary from text files (.txt, or .gz through zlib).\n"
            "The text goes through BERT's BasicTokenizer (lower-cased and accent-stripped unless\n"
            "--cased); the vocab lists [PAD] [UNK] [CLS] [SEP] [MASK], then every character seen\n"
            "(and its ## continuation form when it occurs inside a word), then merged pieces.\n\n"
            "Merge criterion: pair frequency (BPE), as Hugging Face's WordPieceTrainer: each step\n"
            "merges the adjacent pair of pieces that occurs most often in the word counts (ties\n"
            "broken by the pieces' strings, so the result is deterministic), not the likelihood\n"
            "score count(ab)/(count(a)*count(b)), which favours rare pairs.\n\n"
            "options:\n"
            "  --input FILE...   one or more text files (or repeat --input)\n"
            "  --size N          number of vocab entries (specials included); the vocab is smaller\n"
            "                    when no pair is left that occurs --min-count times\n"
            "  --out PATH        where to write vocab.txt (atomically)\n"
            "  --cased           keep case and accents (for a cased model)\n"
            "  --min-count C     stop merging below C occurrences (default 2)\n\n"
            "Exit status: 0 success, 1 runtime failure, 2 usage error.\n");
}

static int parse_int(const char *opt, const char *s, int lo, int *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < lo || v > 1000000000) {
        fprintf(stderr, "bert_pretrain vocab: %s '%s' must be an integer >= %d\n", opt, s, lo);
        return -1;
    }
    *out = (int)v;
    return 0;
}

int cmd_vocab(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) {
        vocab_usage(stdout);
        return 0;
    }
    const char **inputs = calloc((size_t)argc, sizeof *inputs);
    if (!inputs) return 1;
    int n_inputs = 0, size = 0, rc = 2;
    const char *out = NULL;
    VocabBuildOptions opt = {.lowercase = true, .min_count = 2};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--input")) {
            int before = n_inputs;
            while (i + 1 < argc && strncmp(argv[i + 1], "--", 2)) inputs[n_inputs++] = argv[++i];
            if (n_inputs == before) {
                fprintf(stderr, "bert_pretrain vocab: --input needs at least one file\n");
                goto usage;
            }
        } else if (!strcmp(a, "--size") && i + 1 < argc) {
            if (parse_int("--size", argv[++i], 5, &size)) goto usage;
        } else if (!strcmp(a, "--min-count") && i + 1 < argc) {
            if (parse_int("--min-count", argv[++i], 1, &opt.min_count)) goto usage;
        } else if (!strcmp(a, "--out") && i + 1 < argc) {
            out = argv[++i];
        } else if (!strcmp(a, "--cased")) {
            opt.lowercase = false;
        } else {
            fprintf(stderr, "bert_pretrain vocab: unknown or incomplete option '%s'\n", a);
            goto usage;
        }
    }
    if (!n_inputs || !size || !out) {
        fprintf(stderr, "bert_pretrain vocab: --input, --size and --out are required\n");
        goto usage;
    }
    opt.size = size;
    BpError err = {0};
    if (vocab_build_opts(inputs, n_inputs, &opt, out, &err)) {
        fprintf(stderr, "bert_pretrain vocab: %s\n", err.msg);
        rc = bp_error_status(&err);
    } else {
        rc = 0;
    }
    free(inputs);
    return rc;
usage:
    vocab_usage(stderr);
    free(inputs);
    return 2;
}

static void tokenize_usage(FILE *out) {
    fprintf(out,
            "usage: bert_pretrain tokenize --vocab V [--ids|--pieces] [--cased]\n\n"
            "Reads UTF-8 text on stdin and writes one line per input line: its BERT tokens\n"
            "(BasicTokenizer, then WordPiece with vocab V), space-separated, as ids (default) or\n"
            "as pieces. Lower-cases and strips accents unless --cased. Invalid UTF-8 bytes are\n"
            "dropped.\n\n"
            "Exit status: 0 success, 1 runtime failure (unreadable or invalid vocab), 2 usage error.\n");
}

int cmd_tokenize(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) {
        tokenize_usage(stdout);
        return 0;
    }
    const char *vocab = NULL;
    bool pieces = false, lowercase = true;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--vocab") && i + 1 < argc) {
            vocab = argv[++i];
        } else if (!strcmp(argv[i], "--ids")) {
            pieces = false;
        } else if (!strcmp(argv[i], "--pieces")) {
            pieces = true;
        } else if (!strcmp(argv[i], "--cased")) {
            lowercase = false;
        } else {
            fprintf(stderr, "bert_pretrain tokenize: unknown or incomplete option '%s'\n", argv[i]);
            tokenize_usage(stderr);
            return 2;
        }
    }
    if (!vocab) {
        fprintf(stderr, "bert_pretrain tokenize: --vocab is required\n");
        tokenize_usage(stderr);
        return 2;
    }
    BpError err = {0};
    Tokenizer *tok = tokenizer_load(vocab, lowercase, &err);
    if (!tok) {
        fprintf(stderr, "bert_pretrain tokenize: %s\n", err.msg);
        return bp_error_status(&err);
    }
    static char outbuf[1 << 16];
    setvbuf(stdout, outbuf, _IOFBF, sizeof outbuf);
    char *line = NULL;
    size_t line_cap = 0, n = 0, cap = 0;
    int32_t *ids = NULL;
    ssize_t len;
    int rc = 0;
    while ((len = getline(&line, &line_cap, stdin)) >= 0) {
        n = 0;
        if (tokenizer_encode(tok, line, (size_t)len, &ids, &n, &cap, &err)) {
            fprintf(stderr, "bert_pretrain tokenize: %s\n", err.msg);
            rc = 1;
            break;
        }
        for (size_t i = 0; i < n; i++) {
            if (i) putchar(' ');
            if (pieces) {
                fputs(tokenizer_token(tok, ids[i]), stdout);
            } else {
                char num[16];
                int k = 0;
                uint32_t v = (uint32_t)ids[i];
                do num[k++] = (char)('0' + v % 10);
                while (v /= 10);
                while (k) putchar(num[--k]);
            }
        }
        putchar('\n');
    }
    if (rc == 0 && ferror(stdin)) {
        fprintf(stderr, "bert_pretrain tokenize: error reading stdin\n");
        rc = 1;
    }
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "bert_pretrain tokenize: error writing stdout\n");
        rc = 1;
    }
    free(line);
    free(ids);
    tokenizer_free(tok);
    return rc;
}
