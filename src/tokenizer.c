/* tokenizer.c: placeholder until the tokenizer module lands (see tokenizer.h). */
#include "tokenizer.h"

Tokenizer *tokenizer_load(const char *vocab_path, bool lowercase, BpError *err) {
    (void)lowercase;
    bp_fail(err, "%s: the tokenizer is not built yet", vocab_path);
    return NULL;
}
void tokenizer_free(Tokenizer *tok) { (void)tok; }
int tokenizer_vocab_size(const Tokenizer *tok) { (void)tok; return 0; }
int tokenizer_id(const Tokenizer *tok, const char *token) { (void)tok; (void)token; return -1; }
const char *tokenizer_token(const Tokenizer *tok, int id) { (void)tok; (void)id; return "?"; }
bool tokenizer_is_continuation(const Tokenizer *tok, int id) { (void)tok; (void)id; return false; }
uint32_t tokenizer_vocab_crc(const Tokenizer *tok) { (void)tok; return 0; }
SpecialIds tokenizer_specials(const Tokenizer *tok) { (void)tok; SpecialIds s = {0, 0, 0, 0, 0}; return s; }
int tokenizer_encode(const Tokenizer *tok, const char *text, size_t len, int32_t **ids, size_t *n,
                     size_t *cap, BpError *err) {
    (void)tok; (void)text; (void)len; (void)ids; (void)n; (void)cap;
    return bp_fail(err, "the tokenizer is not built yet");
}
int vocab_build(const char *const *inputs, int n_inputs, int size, bool lowercase,
                const char *out_path, BpError *err) {
    (void)inputs; (void)n_inputs; (void)size; (void)lowercase;
    return bp_fail(err, "%s: the vocab builder is not built yet", out_path);
}
