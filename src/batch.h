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

#include <stdint.h>

#include "common.h"

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

#endif
