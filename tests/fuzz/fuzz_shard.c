/* Fuzz target: the token shard reader (shard_open) and reading every token and boundary of what it
 * accepts.
 *
 * Input: one mode byte, then the shard file. Mode bit 0 set: before the file is written, the three
 * section CRCs (where the header's offsets put a section inside the file) and then the header CRC
 * are recomputed, so mutations get past the checksums to the structural checks. */
#include "fuzz.h"
#include "shard.h"

/* crc of [off, off + bytes) into the u32 at `at`, when that range lies inside the file */
static void fix_section(uint8_t *m, size_t len, size_t at, uint64_t off, uint64_t n, uint64_t width) {
    if (off > len || n > (len - off) / width) return;
    fuzz_put_u32(m + at, bp_crc32(0, m + off, (size_t)(n * width)));
}

static void fix_crcs(uint8_t *m, size_t len) {
    if (len < SHARD_HEADER_BYTES) return;
    ShardHeader h;
    memcpy(&h, m, sizeof h);
    uint64_t width = h.token_bytes ? h.token_bytes : 1;
    fix_section(m, len, offsetof(ShardHeader, tokens_crc), h.tokens_offset, h.n_tokens, width);
    if (h.n_sentences < UINT64_MAX)
        fix_section(m, len, offsetof(ShardHeader, sents_crc), h.sents_offset, h.n_sentences + 1, 8);
    if (h.n_documents < UINT64_MAX)
        fix_section(m, len, offsetof(ShardHeader, docs_crc), h.docs_offset, h.n_documents + 1, 8);
    fuzz_put_u32(m + offsetof(ShardHeader, header_crc), bp_crc32(0, m, offsetof(ShardHeader, header_crc)));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const char *path = fuzz_file_fixing_crcs("shard", data, size, fix_crcs);
    Shard s;
    BpError err;
    if (shard_open(&s, path, &err) != 0) return 0;
    uint64_t sum = 0;
    for (size_t i = 0; i < s.n_tokens; i++) sum += (uint64_t)shard_token(&s, i);
    for (size_t i = 0; i <= s.n_sentences; i++) sum += s.sent_start[i];
    for (size_t i = 0; i <= s.n_documents; i++) sum += s.doc_start[i];
    /* every sentence of every document is a valid token range */
    for (size_t d = 0; d < s.n_documents; d++)
        for (uint64_t k = s.doc_start[d]; k < s.doc_start[d + 1]; k++)
            if (k >= s.n_sentences || s.sent_start[k + 1] > s.n_tokens) abort();
    fuzz_sink = sum;
    (void)shard_check_vocab(&s, (int)s.h.vocab_size, s.h.vocab_crc, "vocab.txt", &err);
    shard_close(&s);
    return 0;
}
