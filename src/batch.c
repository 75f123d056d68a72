/* batch.c: micro-batch storage (see batch.h). The masked-LM example builder is added here by the
 * data engineer. */
#include "batch.h"

#include <stdlib.h>
#include <string.h>

int batch_alloc(Batch *b, int B, int T, int P, BpError *err) {
    memset(b, 0, sizeof *b);
    if (B <= 0 || T <= 0 || P < 0)
        return bp_fail(err, "batch_alloc: invalid sizes B=%d T=%d P=%d", B, T, P);
    size_t bt = (size_t)B * (size_t)T, bp = (size_t)B * (size_t)(P > 0 ? P : 1);
    b->input_ids = bp_calloc(bt, sizeof(int32_t), "batch input_ids", err);
    b->token_type_ids = bp_calloc(bt, sizeof(int32_t), "batch token_type_ids", err);
    b->attention_mask = bp_calloc(bt, sizeof(int32_t), "batch attention_mask", err);
    b->masked_lm_positions = bp_calloc(bp, sizeof(int32_t), "batch masked_lm_positions", err);
    b->masked_lm_ids = bp_calloc(bp, sizeof(int32_t), "batch masked_lm_ids", err);
    b->masked_lm_weights = bp_calloc(bp, sizeof(int32_t), "batch masked_lm_weights", err);
    b->next_sentence_labels = bp_calloc((size_t)B, sizeof(int32_t), "batch next_sentence_labels", err);
    b->example_index = bp_calloc((size_t)B, sizeof(int64_t), "batch example_index", err);
    if (!b->input_ids || !b->token_type_ids || !b->attention_mask || !b->masked_lm_positions ||
        !b->masked_lm_ids || !b->masked_lm_weights || !b->next_sentence_labels || !b->example_index) {
        batch_free(b);
        return -1;
    }
    b->B = b->cap_B = B;
    b->T = b->cap_T = T;
    b->P = b->cap_P = P;
    return 0;
}

void batch_free(Batch *b) {
    free(b->input_ids);
    free(b->token_type_ids);
    free(b->attention_mask);
    free(b->masked_lm_positions);
    free(b->masked_lm_ids);
    free(b->masked_lm_weights);
    free(b->next_sentence_labels);
    free(b->example_index);
    memset(b, 0, sizeof *b);
}

long batch_count_predictions(const Batch *b) {
    long n = 0;
    for (size_t i = 0; i < (size_t)b->B * (size_t)b->P; i++) n += b->masked_lm_weights[i] != 0;
    return n;
}
