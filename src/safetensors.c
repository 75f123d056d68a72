/* safetensors.c: placeholder until the safetensors module lands (see safetensors.h). */
#include "safetensors.h"

int st_open(StFile *f, const char *path, BpError *err) {
    (void)f;
    return bp_fail(err, "%s: safetensors reading is not built yet", path);
}
void st_close(StFile *f) { (void)f; }
const StTensor *st_find(const StFile *f, const char *name) {
    (void)f;
    (void)name;
    return NULL;
}
const void *st_data(const StFile *f, const StTensor *t) {
    (void)f;
    (void)t;
    return NULL;
}
size_t st_numel(const StTensor *t) {
    (void)t;
    return 0;
}
const char *st_dtype_name(StDtype d) { return d == ST_F32 ? "F32" : d == ST_I32 ? "I32" : "I64"; }
int st_write(const char *path, const StEntry *entries, int n, BpError *err) {
    (void)entries;
    (void)n;
    return bp_fail(err, "%s: safetensors writing is not built yet", path);
}
