/* cmd_text.c: `bert_pretrain vocab` (train a WordPiece vocab) and `bert_pretrain tokenize`
 * (text on stdin -> ids or pieces on stdout): parse with cli_parse, call tokenizer.h, report. */
#include <stdio.h>

#include "cli.h"
#include "commands.h"
#include "textfile.h"
#include "tokenizer.h"

static CliList vocab_inputs;
static long vocab_size, vocab_min_count;
static const char *vocab_out;
static bool vocab_cased;
static const CliOption VOCAB_OPTIONS[] = {
    {"--input", CLI_LIST, &vocab_inputs, "FILE", "text files, .txt or .gz (one or more; --input repeats)", 0, 0},
    {"--size", CLI_LONG, &vocab_size, "N",
     "vocab entries, specials included (required); fewer when no pair occurs --min-count times",
     5, 1000000000},
    {"--out", CLI_STRING, &vocab_out, "PATH", "where to write vocab.txt, atomically (required)", 0, 0},
    {"--cased", CLI_FLAG, &vocab_cased, NULL, "keep case and accents (for a cased model)", 0, 0},
    {"--min-count", CLI_LONG, &vocab_min_count, "C", "stop merging below C occurrences (default 2)", 1,
     1000000000},
};
static const CliCommand VOCAB = {
    .name = "vocab",
    .usage = "vocab --input FILE... --size N --out vocab.txt [--cased] [--min-count C]",
    .description =
        "Trains a WordPiece vocabulary from text files (.txt, or .gz through zlib), read line by line\n"
        "exactly as `prepare` reads them: a file with more than 1% invalid UTF-8 bytes is refused,\n"
        "fewer are dropped with a warning.\n"
        "The text goes through BERT's BasicTokenizer (lower-cased and accent-stripped unless\n"
        "--cased); the vocab lists [PAD] [UNK] [CLS] [SEP] [MASK], then every character seen\n"
        "(and its ## continuation form when it occurs inside a word), then merged pieces.\n\n"
        "Merge criterion: pair frequency (BPE), as Hugging Face's WordPieceTrainer: each step\n"
        "merges the adjacent pair of pieces that occurs most often in the word counts (ties\n"
        "broken by the pieces' strings, so the result is deterministic), not the likelihood\n"
        "score count(ab)/(count(a)*count(b)), which favours rare pairs.\n"
        "Progress and a summary go to stderr.\n",
    .options = VOCAB_OPTIONS,
    .n_options = (int)BP_ARRAY_LEN(VOCAB_OPTIONS),
};

int cmd_vocab(int argc, char **argv) {
    vocab_size = 0;
    vocab_min_count = 2;
    vocab_out = NULL;
    vocab_cased = false;
    CliArgs a;
    int rc = cli_parse(&VOCAB, argc, argv, &a);
    if (rc != CLI_OK) return rc;
    if (!vocab_inputs.n || !vocab_size || !vocab_out) {
        rc = cli_usage_error(&VOCAB, "--input, --size and --out are required");
    } else {
        VocabBuildOptions opt = {.size = (int)vocab_size,
                                 .lowercase = !vocab_cased,
                                 .min_count = (int)vocab_min_count,
                                 .progress = stderr};
        BpError err = {0};
        rc = vocab_build_opts(vocab_inputs.items, vocab_inputs.n, &opt, vocab_out, &err) == 0
                 ? 0
                 : cli_fail(&VOCAB, &err);
    }
    cli_args_free(&VOCAB);
    return rc;
}

static const char *tok_vocab;
static bool tok_ids, tok_pieces, tok_cased;
static const CliOption TOKENIZE_OPTIONS[] = {
    {"--vocab", CLI_STRING, &tok_vocab, "V", "the vocab.txt to tokenize with (required)", 0, 0},
    {"--ids", CLI_FLAG, &tok_ids, NULL, "write token ids (the default)", 0, 0},
    {"--pieces", CLI_FLAG, &tok_pieces, NULL, "write the pieces instead of their ids", 0, 0},
    {"--cased", CLI_FLAG, &tok_cased, NULL, "keep case and accents (a cased vocab)", 0, 0},
};
static const CliCommand TOKENIZE = {
    .name = "tokenize",
    .usage = "tokenize --vocab V [--ids|--pieces] [--cased]",
    .description = "Reads UTF-8 text on stdin and writes one line per input line: its BERT tokens\n"
                   "(BasicTokenizer, then WordPiece with vocab V), space-separated, as ids (default) or\n"
                   "as pieces. Lower-cases and strips accents unless --cased. Invalid UTF-8 bytes are\n"
                   "dropped.\n",
    .options = TOKENIZE_OPTIONS,
    .n_options = (int)BP_ARRAY_LEN(TOKENIZE_OPTIONS),
};

int cmd_tokenize(int argc, char **argv) {
    tok_vocab = NULL;
    tok_ids = tok_pieces = tok_cased = false;
    CliArgs a;
    int rc = cli_parse(&TOKENIZE, argc, argv, &a);
    if (rc != CLI_OK) return rc;
    if (!tok_vocab) return cli_usage_error(&TOKENIZE, "--vocab is required");
    if (tok_ids && tok_pieces) return cli_usage_error(&TOKENIZE, "--ids and --pieces exclude each other");
    BpError err = {0};
    Tokenizer *tok = tokenizer_load(tok_vocab, !tok_cased, &err);
    if (!tok) return cli_fail(&TOKENIZE, &err);
    static char outbuf[1 << 16]; /* one write per 64 KiB, not per line */
    setvbuf(stdout, outbuf, _IOFBF, sizeof outbuf);
    TokenizeStreamCounts counts;
    rc = tokenizer_encode_stream(tok, stdin, stdout, tok_pieces, &counts, &err) == 0 ? 0 : cli_fail(&TOKENIZE, &err);
    if (counts.bad_bytes) {
        TextFileStats st = {.bad_bytes = counts.bad_bytes, .bad_lines = counts.bad_lines,
                            .first_bad_line = counts.first_bad_line};
        char note[160];
        cli_message(&TOKENIZE, "warning: %s", textfile_invalid_note(&st, note, sizeof note));
    }
    tokenizer_free(tok);
    return rc;
}
