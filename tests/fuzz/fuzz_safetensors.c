/* Fuzz target: the safetensors reader (st_open) and every accessor on what it accepts: each
 * tensor found by name, its data read to the last byte, its dtype named. */
#include "fuzz.h"
#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_file("input.safetensors", data, size);
    StFile f;
    BpError err;
    if (st_open(&f, path, &err) != 0) return 0;
    uint64_t sum = 0;
    for (int i = 0; i < f.n; i++) {
        const StTensor *t = &f.tensors[i];
        if (st_find(&f, t->name) != t) {
            fprintf(stderr, "st_find('%s') does not find tensor %d\n", t->name, i);
            abort();
        }
        const uint8_t *p = st_data(&f, t);
        size_t bytes = t->end - t->begin;
        if (!p || (t->dtype == ST_F32 || t->dtype == ST_I32 ? 4 : 8) * st_numel(t) != bytes) abort();
        for (size_t k = 0; k < bytes; k++) sum += p[k];
        sum += strlen(st_dtype_name(t->dtype));
    }
    fuzz_sink = sum;
    st_close(&f);
    return 0;
}
