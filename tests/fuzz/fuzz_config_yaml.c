/* Fuzz target: the YAML config loader (config_load) on a file, then config_resolve.
 *
 * The input is the config file. A valid base file sits beside it (base.yaml), so `base: base.yaml`
 * exercises includes and `base: input.yaml` a cycle; anything else a mutation names is simply not
 * found. */
#include "config.h"
#include "fuzz.h"

static const char BASE_YAML[] =
    "model: {preset: bert-tiny, max_position: 64}\n"
    "data: {vocab: vocab.txt, train: shards/train, eval: shards/eval}\n"
    "phases:\n  - {seq_len: 32, batch_size: 16, steps: 12, max_predictions_per_seq: 5}\n"
    "training: {micro_batch: 8, seed: 7, run_dir: run}\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int have_base;
    if (!have_base) {
        fuzz_file("base.yaml", BASE_YAML, sizeof BASE_YAML - 1);
        have_base = 1;
    }
    const char *path = fuzz_file("input.yaml", data, size);
    static Config cfg; /* static: Config holds ~100 KiB of path buffers */
    BpError err;
    config_defaults(&cfg);
    if (config_load(&cfg, path, &err) == 0 && config_resolve(&cfg, &err) == 0) {
        char *json = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&json, &len);
        if (!f) abort();
        config_write_json(&cfg, f);
        fclose(f);
        /* what the loader accepted must load back from its resolved JSON (a checkpoint relies on it) */
        static Config back;
        if (config_load_resolved(&back, json, len, "resolved", &err) != 0) {
            fprintf(stderr, "accepted config does not load back: %s\n%s\n", err.msg, json);
            abort();
        }
        free(json);
    }
    return 0;
}
