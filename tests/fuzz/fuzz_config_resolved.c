/* Fuzz target: the resolved-config JSON loader (config_load_resolved), the one a checkpoint's
 * config.json goes through. What it accepts must write back to JSON that loads again to the same
 * text (the checkpoint reader compares the stored text with exactly that). */
#include "config.h"
#include "fuzz.h"

static char *to_json(const Config *cfg, size_t *len) {
    char *json = NULL;
    FILE *f = open_memstream(&json, len);
    if (!f) abort();
    config_write_json(cfg, f);
    fclose(f);
    return json;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static Config cfg, back;
    BpError err;
    if (config_load_resolved(&cfg, (const char *)data, size, "fuzz", &err) != 0) return 0;
    size_t len = 0, len2 = 0;
    char *json = to_json(&cfg, &len);
    if (config_load_resolved(&back, json, len, "rewritten", &err) != 0) {
        fprintf(stderr, "accepted config does not load back: %s\n%s\n", err.msg, json);
        abort();
    }
    char *json2 = to_json(&back, &len2);
    if (len != len2 || memcmp(json, json2, len) != 0) {
        fprintf(stderr, "resolved JSON is not a fixed point:\n%s\n---\n%s\n", json, json2);
        abort();
    }
    free(json);
    free(json2);
    return 0;
}
