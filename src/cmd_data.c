/* cmd_data.c: `prepare` (text -> vocab if missing -> token shards) and `show-batch` (the examples
 * of a training step, decoded, and optionally their exact tensors): parse with cli_parse, call one
 * library entry point (prepare_run, dataset_step_examples), print. */
#include <inttypes.h>
#include <stdio.h>

#include "batch.h"
#include "cli.h"
#include "commands.h"
#include "prepare.h"
#include "tokenizer.h"

/* ------------------------------------------------------------------------------------------ */
/* prepare                                                                                     */

static const CliCommand PREPARE = {
    .name = "prepare",
    .usage = "prepare CONFIG.yaml [--set section.key=value ...]",
    .description =
        "Reads data.input (text files, .txt or .gz; directories and glob patterns expand to their\n"
        "files in sorted order) in data.input_format: lines (one sentence per line, a blank line between\n"
        "documents, as Google's create_pretraining_data.py), documents_per_line, or jsonl (one JSON\n"
        "object per line, its data.jsonl_field string one document; bad records are counted, and more\n"
        "than data.max_bad_records of them is an error). Every file also ends a document. Tokenizes\n"
        "every sentence with data.vocab, and writes two token shards: data.train, and data.eval with\n"
        "about a data.eval_fraction share of the documents (each document held out when a hash of\n"
        "training.seed and its number falls below the fraction; at least one document when the fraction\n"
        "is above 0; the summary gives the count). When data.vocab does not exist it is\n"
        "built first from the same inputs with data.vocab_size entries.\n"
        "\n"
        "Sentences that tokenize to nothing are dropped, and so are documents left empty. Invalid UTF-8\n"
        "bytes are dropped with a warning that counts them; a file where more than 1% of the bytes are\n"
        "invalid is refused (it is in another encoding, e.g. Latin-1, or not text), the same rule as\n"
        "the vocab builder's: both read their input with the same line reader.\n"
        "\n"
        "Outputs are written atomically: on any error (a missing, empty or unreadable input, a refused\n"
        "encoding, a truncated .gz) nothing is written, and a vocab built by this run is removed again.\n"
        "Blocks of lines are tokenized on training.threads threads (0: every core) and written in input\n"
        "order: the shards are the same byte for byte whatever the thread count. Progress (MB/s, ETA)\n"
        "goes to stderr, the summary to stdout. docs/data.md has the formats and the measured speed.\n",
    .positional = "CONFIG.yaml",
    .min_positional = 1,
    .max_positional = 1,
    .takes_sets = true,
};

static void print_prepare_report(const PrepareReport *r) {
    printf("prepare: done in %.1f s\n", r->seconds);
    static const char *const formats[] = {"lines", "documents_per_line", "jsonl"};
    printf("  inputs     %d file(s) (%s), %.1f MB of text (%.1f MB on disk), %ld non-blank lines\n", r->files,
           formats[r->input_format], r->text_bytes / 1e6, r->disk_bytes / 1e6, r->lines);
    if (r->bad_records)
        printf("  bad records %ld of %ld skipped (%.3g%%, within data.max_bad_records); the first at %s\n",
               r->bad_records, r->records, 100.0 * r->bad_records / r->records, r->first_bad);
    printf("  vocab      %s: %d entries, crc %08" PRIx32 "%s\n", r->vocab, r->vocab_size, r->vocab_crc,
           r->vocab_built ? " (built now)" : "");
    printf("  documents  %ld (%ld dropped: no sentence left after tokenizing)\n", r->documents,
           r->documents_dropped);
    printf("  sentences  %ld (%ld dropped: nothing left after tokenizing)\n", r->sentences,
           r->sentences_dropped);
    printf("  tokens     %zu, %.1f per sentence; [UNK] %zu = %.3f%%\n", r->tokens,
           r->sentences ? (double)r->tokens / r->sentences : 0.0, r->unk_tokens,
           r->tokens ? 100.0 * r->unk_tokens / r->tokens : 0.0);
    if (r->invalid_utf8_lines)
        printf("  invalid UTF-8 in %ld line(s): those bytes were dropped\n", r->invalid_utf8_lines);
    printf("  train      %s: %ld document(s), %zu sentences, %zu tokens, %.1f MB\n", r->train.path,
           r->train.documents, r->train.sentences, r->train.tokens, r->train.bytes / 1e6);
    if (r->eval.path[0])
        printf("  eval       %s: %ld document(s) (%.1f%%; data.eval_fraction %g), %zu tokens, %.1f MB\n",
               r->eval.path, r->eval.documents, 100.0 * r->eval.documents / r->documents, r->eval_fraction,
               r->eval.tokens, r->eval.bytes / 1e6);
    else
        printf("  eval       none written (data.eval_fraction is 0)\n");
    printf("  throughput %.1f MB/s, %.2fM tokens/s on %d thread(s) (whole run%s)\n", r->text_bytes / 1e6 / r->seconds,
           r->tokens / 1e6 / r->seconds, r->threads, r->vocab_built ? ", vocab build included" : "");
}

int cmd_prepare(int argc, char **argv) {
    CliArgs a;
    int rc = cli_parse(&PREPARE, argc, argv, &a);
    if (rc != CLI_OK) return rc;
    BpError err = {0};
    Config *cfg = cli_config_load(a.positional[0], &a, &err);
    if (!cfg) return cli_fail(&PREPARE, &err);
    cli_set_threads(cfg->training.threads);
    PrepareOptions opt = {.progress = stderr};
    static PrepareReport report; /* two paths of CFG_PATH_MAX and more: not on the stack */
    rc = prepare_run(cfg, &opt, &report, &err) == 0 ? 0 : cli_fail(&PREPARE, &err);
    if (rc == 0) print_prepare_report(&report);
    cli_config_free(cfg);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* show-batch                                                                                  */

static long show_step, show_phase, show_n;
static const char *show_out;
static const CliOption SHOW_OPTIONS[] = {
    {"--step", CLI_LONG, &show_step, "S", "optimizer step (default 0), global or within --phase", 0, 1L << 40},
    {"--phase", CLI_LONG, &show_phase, "P", "count S from the start of phase P", 0, 1L << 20},
    {"--n", CLI_LONG, &show_n, "N", "examples to show, the step's first (default min(4, batch_size))", 1,
     1L << 30},
    {"--out", CLI_STRING, &show_out, "B.safetensors", "also write those examples' tensors", 0, 0},
};
static const CliCommand SHOW = {
    .name = "show-batch",
    .usage = "show-batch CONFIG.yaml [--set section.key=value ...] [--step S] [--phase P] [--n N]\n"
             "                                [--out B.safetensors]",
    .description =
        "Prints the first N (default 4) examples of optimizer step S (default 0) of the training\n"
        "stream, exactly as the trainer builds them from data.train: the examples of step S are\n"
        "dataset_step_first_example(S) .. + batch_size - 1. --phase P counts S from the start of phase\n"
        "P instead of from step 0. Each example is shown as the model sees it:\n"
        "  [MASK](sat)  a masked position: the model sees [MASK], the original token was 'sat'\n"
        "  dog(~sat)    replaced by a random token: the model sees 'dog', the original was 'sat'\n"
        "  sat(=)       chosen for prediction but kept unchanged\n"
        "with the segment sizes (token types 0 = [CLS] A [SEP], 1 = B [SEP]) and the NSP label.\n"
        "--out writes those N examples' tensors (input_ids, token_type_ids, attention_mask,\n"
        "masked_lm_positions, masked_lm_ids, masked_lm_weights, next_sentence_labels; int32) to a\n"
        "safetensors file, the batch format of `bert_pretrain forward --batch`.\n",
    .positional = "CONFIG.yaml",
    .min_positional = 1,
    .max_positional = 1,
    .takes_sets = true,
    .options = SHOW_OPTIONS,
    .n_options = (int)BP_ARRAY_LEN(SHOW_OPTIONS),
};

static void print_example(const Batch *b, int i, const Tokenizer *tok, int64_t epoch) {
    const int T = b->T, P = b->P;
    const int32_t *ids = b->input_ids + (size_t)i * T, *ty = b->token_type_ids + (size_t)i * T;
    const int32_t *att = b->attention_mask + (size_t)i * T;
    const int32_t *pos = b->masked_lm_positions + (size_t)i * P, *orig = b->masked_lm_ids + (size_t)i * P;
    const int32_t *w = b->masked_lm_weights + (size_t)i * P;
    int mask_id = tokenizer_specials(tok).mask;
    int n_real = 0, n_a = 0, np = 0;
    for (int k = 0; k < T; k++) {
        n_real += att[k] != 0;
        n_a += att[k] && ty[k] == 0;
    }
    for (int k = 0; k < P; k++) np += w[k] != 0;
    int64_t index = b->example_index[i];
    printf("example %" PRId64 " (epoch %" PRId64 ")  NSP label %d (%s)  %d real tokens + %d [PAD]  "
           "%d predictions\n",
           index, epoch, b->next_sentence_labels[i],
           b->next_sentence_labels[i] ? "B is a random span" : "B continues A", n_real, T - n_real, np);
    printf("  types: 0 x %d ([CLS] A [SEP]), 1 x %d (B [SEP])\n ", n_a, n_real - n_a);
    int m = 0;
    for (int k = 0; k < n_real; k++) {
        const char *t = tokenizer_token(tok, ids[k]);
        if (!t) t = "?";
        while (m < np && pos[m] < k) m++;
        if (m < np && pos[m] == k) {
            const char *o = tokenizer_token(tok, orig[m]);
            if (!o) o = "?";
            if (ids[k] == mask_id && orig[m] != mask_id) printf(" [MASK](%s)", o);
            else if (ids[k] == orig[m]) printf(" %s(=)", t);
            else printf(" %s(~%s)", t, o);
        } else {
            printf(" %s", t);
        }
    }
    printf("\n\n");
}

static int show(const Config *cfg, BpError *err) {
    StepExamplesRequest req = {.step = show_step, .phase = show_phase, .n = show_n};
    StepExamples s;
    int rc = dataset_step_examples(cfg, &req, &s, err);
    if (rc == 0) {
        const Batch *b = &s.batch;
        printf("step %ld (phase %d, step %ld of it): examples %" PRId64 "..%" PRId64 " of the stream; "
               "seq_len %d, max_predictions %d, epoch %" PRId64 " of %s has %ld examples; showing %d\n\n",
               s.global_step, s.phase, s.phase_step, s.first_example, s.first_example + s.batch_size - 1,
               b->T, b->P, s.epoch, cfg->data.train, s.examples_per_epoch, b->B);
        for (int i = 0; i < b->B; i++)
            print_example(b, i, s.tok, dataset_example_epoch(s.dataset, &s.args, b->example_index[i]));
        if (show_out) {
            rc = batch_save_safetensors(b, show_out, err);
            if (rc == 0)
                printf("wrote %s: %d example(s) x seq_len %d, %d prediction slots, int32\n", show_out, b->B,
                       b->T, b->P);
        }
    }
    dataset_step_examples_free(&s);
    return rc;
}

int cmd_show_batch(int argc, char **argv) {
    show_step = 0;
    show_phase = show_n = -1; /* -1: global step; min(4, batch_size) */
    show_out = NULL;
    CliArgs a;
    int rc = cli_parse(&SHOW, argc, argv, &a);
    if (rc != CLI_OK) return rc;
    BpError err = {0};
    Config *cfg = cli_config_load(a.positional[0], &a, &err);
    if (!cfg) return cli_fail(&SHOW, &err);
    cli_set_threads(cfg->training.threads);
    rc = show(cfg, &err) == 0 ? 0 : cli_fail(&SHOW, &err);
    cli_config_free(cfg);
    return rc;
}
