/* Fuzz target: tokenizer input. The input is arbitrary bytes (one mode byte first: bit 0 = the
 * uncased tokenizer) run through tokenizer_encode, the BasicTokenizer alone, the invalid-UTF-8
 * counter and the `tokenize` stream loop, against the fixture vocab
 * tests/fixtures/tokenizer/vocab_small.txt (found beside the build directory, or $BP_FUZZ_VOCAB). */
#include <libgen.h>

#include "fuzz.h"
#include "tokenizer.h"

static Tokenizer *toks[2];

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    char path[4096];
    const char *env = getenv("BP_FUZZ_VOCAB");
    if (env) {
        snprintf(path, sizeof path, "%s", env);
    } else {
        char self[4096];
        snprintf(self, sizeof self, "%s", (*argv)[0]);
        snprintf(path, sizeof path, "%s/../tests/fixtures/tokenizer/vocab_small.txt", dirname(self));
    }
    BpError err;
    for (int lc = 0; lc < 2; lc++)
        if (!(toks[lc] = tokenizer_load(path, lc, &err))) {
            fprintf(stderr, "fuzz_tokenize: %s (set BP_FUZZ_VOCAB)\n", err.msg);
            exit(1);
        }
    return 0;
}

static int count_word(void *ctx, const char *word, size_t nbytes, size_t nchars) {
    if (strlen(word) != nbytes || nchars > nbytes || nchars == 0) abort();
    ++*(size_t *)ctx;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const Tokenizer *tok = toks[data[0] & 1];
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    BpError err;
    int n = tokenizer_vocab_size(tok);
    int32_t *ids = NULL;
    size_t n_ids = 0, cap = 0;
    if (tokenizer_encode(tok, text, len, &ids, &n_ids, &cap, &err) != 0) abort();
    for (size_t i = 0; i < n_ids; i++)
        if (ids[i] < 0 || ids[i] >= n) abort();
    free(ids);
    size_t words = 0, first_bad = 0;
    if (tokenizer_basic(text, len, tokenizer_lowercase(tok), count_word, &words, &err) != 0) abort();
    size_t bad = tokenizer_utf8_invalid(text, len, &first_bad);
    if (bad > len || (bad && first_bad >= len)) abort();

    FILE *in = fmemopen((void *)text, len ? len : 1, "r");
    char *out_buf = NULL;
    size_t out_len = 0;
    FILE *out = open_memstream(&out_buf, &out_len);
    if (!in || !out) abort();
    if (!len) fgetc(in); /* fmemopen refuses size 0: an empty stream is one read past its end */
    TokenizeStreamCounts counts;
    memset(&counts, 0, sizeof counts);
    if (tokenizer_encode_stream(tok, in, out, data[0] & 2, &counts, &err) != 0) abort();
    fclose(in);
    fclose(out);
    free(out_buf);
    return 0;
}
