/* batch.h: one micro-batch of masked-LM + NSP examples, and the example builder.
 *
 * Sizes: B examples, T = seq_len, P = max_predictions_per_seq. Every array is row-major int32,
 * BERT's names and meanings:
 *   input_ids (B,T), token_type_ids (B,T), attention_mask (B,T) 1 = real token, 0 = padding,
 *   masked_lm_positions (B,P), masked_lm_ids (B,P) original token at that position,
 *   masked_lm_weights (B,P) 1 = a real prediction, 0 = an unused slot (position 0, id 0),
 *   next_sentence_labels (B) 0 = B is the true continuation, 1 = B is random,
 *   example_index (B) int64: the global example index (keys dropout and masking). */
#ifndef BP_BATCH_H
#define BP_BATCH_H

#include <stdbool.h>
#include <stdint.h>

#include "common.h"
#include "config.h"
#include "shard.h"
#include "tokenizer.h"

typedef struct {
    int B, T, P;
    int32_t *input_ids;
    int32_t *token_type_ids;
    int32_t *attention_mask;
    int32_t *masked_lm_positions;
    int32_t *masked_lm_ids;
    int32_t *masked_lm_weights;
    int32_t *next_sentence_labels;
    int64_t *example_index;
    int cap_B, cap_T, cap_P; /* allocated capacity; B, T, P may be smaller */
} Batch;

/* Allocates room for (B, T, P), zeroed; sets B, T, P. */
int batch_alloc(Batch *b, int B, int T, int P, BpError *err);
void batch_free(Batch *b);
/* Number of real predictions (sum of masked_lm_weights). */
long batch_count_predictions(const Batch *b);
/* Writes the b->B examples' tensors (input_ids, token_type_ids, attention_mask,
 * masked_lm_positions, masked_lm_ids, masked_lm_weights: (B, T) or (B, P); next_sentence_labels:
 * (B); all I32) atomically to a safetensors file: the batch format batch_load_safetensors reads
 * (`bert_pretrain forward --batch`). */
int batch_save_safetensors(const Batch *b, const char *path, BpError *err);
/* Reads a batch file: those tensors (next_sentence_labels (B) or (B, 1)) and an optional int64
 * example_index (B) (else 0..B-1). Allocates b (batch_free it). */
int batch_load_safetensors(Batch *b, const char *path, BpError *err);

/* ---------------------------------------------------------------------------------------------
 * The example builder: masked-LM + next-sentence examples cut from a token shard, as BERT's
 * create_pretraining_data.py builds them, with dynamic masking.
 *
 * The stream: epochs, each cut and shuffled anew. Epoch e cuts every document as
 * create_instances_from_document does, with draws keyed by (seed, e, document): a target length
 * once per document (seq_len - 3, or with probability short_seq_prob uniform in [2, seq_len - 3]);
 * sentences gathered until they hold the target or the document ends; A = the first a_end of
 * them, a_end uniform in [1, n - 1] (1 when n = 1); B random with probability 0.5 (always when
 * n = 1), and then the n - a_end sentences B did not use go back to start the next chunk ("i -=
 * num_unused_segments"). Epoch e holds N_e chunks (N_e varies with the draws), one example each;
 * example i belongs to the epoch e with N_0 + ... + N_{e-1} <= i < N_0 + ... + N_e, at position
 * j = i - (N_0 + ... + N_{e-1}), and is built from chunk perm_e(j), perm_e a bijection of [0, N_e)
 * keyed by (seed, e): a 6-round Feistel network on the next even power of two, cycle-walked into
 * [0, N_e). Epochs play the part of BERT's dupe_factor passes (its data is cut dupe_factor times
 * with fresh draws); the sizes N_e are counted once per dataset and kept, so an example deep in
 * the stream costs one walk over the shard per earlier epoch, once.
 *
 * One example, further draws from rng streams keyed by (seed, RNG_EXAMPLE, i) and (seed, RNG_MASK, i):
 *   A = the chunk's first a_end sentences;
 *   B = the chunk's remaining sentences (label 0), or (is_random, label 1) sentences from a
 *     uniformly chosen random start sentence of a uniformly chosen other document, until
 *     target - |A| tokens (at least one sentence). A one-document shard draws "random" spans from
 *     that document.
 *   while |A| + |B| > seq_len - 3, the longer one (B on a tie) loses a token at the front or the
 *     back with probability 1/2 each;
 *   [CLS] A [SEP] B [SEP], token types 0 up to the first [SEP], 1 after; padding [PAD], type 0,
 *     attention mask 0.
 * Masking: num = min(max_predictions, max(1, round_half_even(n_real * masked_lm_prob))) with n_real
 *   counting [CLS] and both [SEP] (as BERT does; Python 3's round). Candidates: every position but
 *   [CLS] and [SEP]. With whole_word_mask a "##" piece joins the word before it in the same segment
 *   (BERT also attaches a "##" piece that begins segment B to A's last word; we do not). Candidate
 *   words are taken in uniformly random order, skipping a word that would exceed num. Each chosen
 *   position independently: 80% [MASK], 10% kept, 10% a random id uniform over the whole vocab
 *   (specials included, exactly as BERT: they are 5 of >= 8192 ids, and matching BERT keeps results
 *   comparable). Positions sorted ascending; unused slots position 0, id 0, weight 0.
 *
 * Every example is a pure function of (seed, index, args, shard): the same bytes whatever the thread
 * count, the micro-batch split or the MPI rank that builds it. */
typedef struct Dataset Dataset;

/* Maps the shard, loads the tokenizer (for special ids, whole-word grouping and show-batch) and
 * refuses a vocab that does not match the one the shard was built with. */
Dataset *dataset_open(const char *shard_path, const char *vocab_path, bool lowercase, BpError *err);
void dataset_free(Dataset *d);
/* Refuses a shard that prepare wrote as the other role (shard_check_role): key names the config key
 * that pointed at it. */
int dataset_check_role(const Dataset *d, ShardRole want, const char *key, BpError *err);
const Tokenizer *dataset_tokenizer(const Dataset *d);
long dataset_num_documents(const Dataset *d);
long dataset_num_tokens(const Dataset *d);

typedef struct {
    uint64_t seed;
    int seq_len;         /* T, >= 5 (two segment tokens and [CLS] [SEP] [SEP]) */
    int max_predictions; /* P, <= seq_len */
    double masked_lm_prob;
    double short_seq_prob;
    bool whole_word_mask;
} ExampleArgs;

/* Builds examples first_index .. first_index + count - 1 into b: b->B = count, b->T = seq_len,
 * b->P = max_predictions (b's capacity must hold them), rows padded, b->example_index set.
 * Parallel over examples with OpenMP. */
int dataset_build_batch(const Dataset *d, const ExampleArgs *a, int64_t first_index, int count,
                        Batch *b, BpError *err);
/* N_e, the number of examples of epoch `epoch` under a's seed, seq_len and short_seq_prob; -1 on
 * error. */
long dataset_epoch_examples(const Dataset *d, const ExampleArgs *a, uint64_t epoch);
/* The epoch example `index` belongs to; -1 on error. */
int64_t dataset_example_epoch(const Dataset *d, const ExampleArgs *a, int64_t index);
/* The epoch shuffle: which of the n chunks position j of epoch `epoch` uses (a bijection of
 * [0, n) for each (seed, epoch)). */
uint64_t dataset_epoch_perm(uint64_t seed, uint64_t epoch, uint64_t n, uint64_t j);

/* The example arguments of a phase of cfg: seed, its seq_len and max_predictions, data's masking. */
ExampleArgs dataset_example_args(const Config *cfg, const PhaseConfig *phase);

/* Index of the first example of a global optimizer step: the steps * batch_size examples of every
 * earlier phase, plus (step - phase.first_step) * batch_size. A step past the last phase continues
 * the last phase's stream. The trainer and show-batch both use it. -1 for a negative step. */
int64_t dataset_step_first_example(const Config *cfg, long global_step);

/* The examples of one optimizer step exactly as the trainer builds them from data.train
 * (`show-batch`): step S counts from step 0, or from the start of phase P when phase >= 0; the
 * first n examples of it (n < 0: min(4, batch_size)). */
typedef struct {
    long step;
    long phase; /* -1: step is a global step */
    long n;
} StepExamplesRequest;

typedef struct {
    Batch batch;       /* the n examples (batch.B = n, batch.example_index their stream indices) */
    Dataset *dataset;  /* data.train, open */
    const Tokenizer *tok; /* the dataset's, to decode the ids */
    long global_step;
    int phase;
    long phase_step;        /* global_step - the phase's first step */
    int64_t first_example;  /* the step's first example in the stream */
    int batch_size;         /* the step's examples (the phase's batch_size) */
    int64_t epoch;           /* of the step's first example */
    long examples_per_epoch; /* of that epoch (epochs differ in size) */
    ExampleArgs args;
} StepExamples;

/* Fills *out (free with dataset_step_examples_free, also after a failure). Usage errors for a step,
 * phase or n outside the config's run; the dataset's errors for missing or damaged shards. */
int dataset_step_examples(const Config *cfg, const StepExamplesRequest *req, StepExamples *out, BpError *err);
void dataset_step_examples_free(StepExamples *s);

#endif
