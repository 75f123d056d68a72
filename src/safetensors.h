/* safetensors.h: read and write safetensors files (8-byte little-endian header length, a JSON
 * header {"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}, then
 * the raw little-endian data). The header is parsed with libyaml (JSON is YAML flow syntax).
 *
 * The reader maps the file and validates everything before anyone touches the data: header size
 * (bounded, inside the file), dtype, shape (product * dtype size == end - begin), offsets inside
 * the data section and not overlapping, names unique. A hostile file gives an error naming the
 * file and what is wrong, never a crash. */
#ifndef BP_SAFETENSORS_H
#define BP_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

#define ST_NAME_LEN 128
#define ST_MAX_DIMS 4

typedef enum { ST_F32 = 0, ST_I32 = 1, ST_I64 = 2 } StDtype;

typedef struct {
    char name[ST_NAME_LEN];
    StDtype dtype;
    int ndim;
    size_t shape[ST_MAX_DIMS];
    size_t begin, end; /* byte offsets into the data section */
} StTensor;

typedef struct {
    char path[1024];
    void *map;
    size_t map_len;
    const uint8_t *data; /* start of the data section */
    size_t data_len;
    StTensor *tensors;
    int n;
} StFile;

int st_open(StFile *f, const char *path, BpError *err);
void st_close(StFile *f);
const StTensor *st_find(const StFile *f, const char *name); /* NULL when absent */
const void *st_data(const StFile *f, const StTensor *t);
size_t st_numel(const StTensor *t);
const char *st_dtype_name(StDtype d); /* "F32", "I32", "I64" */

/* One tensor to write; data holds numel * dtype-size bytes (host order = little-endian here). */
typedef struct {
    const char *name;
    StDtype dtype;
    int ndim;
    size_t shape[ST_MAX_DIMS];
    const void *data;
} StEntry;

/* Writes atomically (temporary + rename); tensors laid out in the given order; metadata
 * {"format": "pt"}. */
int st_write(const char *path, const StEntry *entries, int n, BpError *err);

#endif
