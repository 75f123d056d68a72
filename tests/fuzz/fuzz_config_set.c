/* Fuzz target: --set overrides (config_apply_override). Each input line is one "section.key=value"
 * assignment, applied in order to the defaults, then config_resolve. */
#include "config.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = fuzz_strndup(data, size);
    static Config cfg;
    BpError err;
    config_defaults(&cfg);
    int ok = 1;
    for (char *line = text, *next; line && ok; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = 0;
        ok = config_apply_override(&cfg, line, &err) == 0;
    }
    if (ok) (void)config_resolve(&cfg, &err);
    free(text);
    return 0;
}
