/* Fuzz target: the stored-config comparison (config_json_diff). The input is two JSON texts
 * separated by the first NUL byte (no NUL: the text against itself). Comparing a text with itself
 * must find no difference. */
#include "config_diff.h"
#include "fuzz.h"

static void count_key(const char *key, const char *old_value, const char *new_value, void *ctx) {
    fuzz_sink += strlen(key) + strlen(old_value) + strlen(new_value);
    ++*(int *)ctx;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = fuzz_strndup(data, size);
    const char *a = text, *b = text;
    size_t alen = strlen(text);
    if (alen < size) b = text + alen + 1;
    int seen = 0;
    BpError err;
    int n = config_json_diff(a, b, count_key, &seen, &err);
    if (n >= 0 && n != seen) {
        fprintf(stderr, "config_json_diff returned %d but reported %d keys\n", n, seen);
        abort();
    }
    if (config_json_diff(a, a, count_key, &seen, &err) > 0) {
        fprintf(stderr, "a text differs from itself\n");
        abort();
    }
    free(text);
    return 0;
}
