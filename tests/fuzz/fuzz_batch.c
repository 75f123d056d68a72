/* Fuzz target: the batch file reader (batch_load_safetensors, `forward --batch`). */
#include "batch.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_file("batch.safetensors", data, size);
    Batch b;
    memset(&b, 0, sizeof b);
    BpError err;
    if (batch_load_safetensors(&b, path, &err) == 0) {
        fuzz_sink = (uint64_t)batch_count_predictions(&b);
        batch_free(&b);
    }
    return 0;
}
