/* Fuzz target: the vocab file loader (tokenizer_load) and the tokenizer a hostile vocab makes:
 * every id maps back to itself, and the vocab's own text goes through WordPiece with it. */
#include "fuzz.h"
#include "tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_file("vocab.txt", data, size);
    BpError err;
    Tokenizer *tok = tokenizer_load(path, size & 1, &err);
    if (!tok) return 0;
    int n = tokenizer_vocab_size(tok);
    for (int id = 0; id < n; id++) {
        const char *t = tokenizer_token(tok, id);
        if (!t || tokenizer_id(tok, t) != id) {
            fprintf(stderr, "token %d does not map back to its id\n", id);
            abort();
        }
        fuzz_sink += tokenizer_is_continuation(tok, id);
    }
    if (tokenizer_token(tok, n) || tokenizer_token(tok, -1)) abort();
    SpecialIds sp = tokenizer_specials(tok);
    if (sp.pad < 0 || sp.unk < 0 || sp.cls < 0 || sp.sep < 0 || sp.mask < 0) abort();
    int32_t *ids = NULL;
    size_t n_ids = 0, cap = 0;
    if (tokenizer_encode(tok, (const char *)data, size, &ids, &n_ids, &cap, &err) == 0)
        for (size_t i = 0; i < n_ids; i++)
            if (ids[i] < 0 || ids[i] >= n) abort();
    free(ids);
    tokenizer_free(tok);
    return 0;
}
