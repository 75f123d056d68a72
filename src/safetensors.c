/* safetensors.c: safetensors reader (mmap + libyaml event parser) and writer (see safetensors.h).
 *
 * Reading trusts nothing in the file. The JSON header goes through libyaml's event parser, which
 * keeps its own state on the heap (no recursion) and validates UTF-8; on top of it we accept only
 * the JSON shape a safetensors header has: one flow mapping of tensor entries, each a flow mapping
 * with exactly dtype (a string), shape and data_offsets (flow sequences of plain non-negative
 * integers), plus an optional "__metadata__" mapping of strings. Anything else - block syntax,
 * single quotes, anchors, aliases, tags, a second document, a nested value where a scalar belongs -
 * is refused at the first event that shows it, so nesting depth never grows past three.
 *
 * Offsets are then checked against the mapped data section, sizes against the shapes (with
 * overflow checks), names for uniqueness and tensors for overlap, all before st_open returns.
 *
 * The format lays tensors out back to back with no alignment padding (the reference reader insists
 * on contiguity), so an I64 tensor following an odd-sized I32 one is misaligned in the map. Those
 * few tensors are copied to aligned memory at open time so that st_data always returns a pointer
 * that can be read as the tensor's element type. */
#define _POSIX_C_SOURCE 200809L
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian; this reader hands out the mapped bytes as they are"
#endif

/* the reference implementation's bound on the header size */
#define ST_MAX_HEADER 100000000ull
#define ST_MAX_TENSORS (1 << 20)

static const struct {
    const char *name;
    size_t size;
} DTYPES[] = {[ST_F32] = {"F32", 4}, [ST_I32] = {"I32", 4}, [ST_I64] = {"I64", 8}};

/* dtypes the format defines that we do not read, to tell "unsupported" from "garbage" */
static const char *const OTHER_DTYPES[] = {"BOOL", "U8",  "I8",  "F8_E5M2", "F8_E4M3", "I16",
                                           "U16",  "F16", "BF16", "U32",    "F64",     "U64"};

const char *st_dtype_name(StDtype d) {
    return (unsigned)d < BP_ARRAY_LEN(DTYPES) ? DTYPES[d].name : "?";
}

static size_t dtype_size(StDtype d) { return DTYPES[d].size; }

size_t st_numel(const StTensor *t) {
    size_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

/* Copies untrusted text into out for a message: as much as fits, control bytes as '?', never
 * cutting a UTF-8 sequence in half (libyaml has already checked the encoding). */
static const char *shown(char *out, size_t out_len, const char *s, size_t len) {
    size_t cap = out_len - 4, n = len < cap ? len : cap;
    if (n < len)
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80) n--;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        out[i] = c < 0x20 || c == 0x7f ? '?' : (char)c;
    }
    if (n < len) {
        memcpy(out + n, "...", 3);
        n += 3;
    }
    out[n] = 0;
    return out;
}

/* A tensor name as messages show it (names may hold any escaped character). */
typedef struct {
    char s[ST_NAME_LEN + 4];
} ShownName;

static ShownName shown_name(const char *name) {
    ShownName r;
    shown(r.s, sizeof r.s, name, strlen(name));
    return r;
}

/* ------------------------------------------------------------------------------------------ */
/* the header parser: libyaml events, checked one at a time                                    */

typedef struct {
    yaml_parser_t parser;
    yaml_event_t ev;
    bool have_ev;
    BpError *err;
} Json;

static int js_next(Json *j) {
    if (j->have_ev) yaml_event_delete(&j->ev);
    j->have_ev = false;
    if (!yaml_parser_parse(&j->parser, &j->ev)) {
        const yaml_parser_t *p = &j->parser;
        /* reader errors (bad UTF-8, control bytes) carry an offset; the others a mark */
        size_t at = p->error == YAML_READER_ERROR ? p->problem_offset : p->problem_mark.index;
        return bp_fail(j->err, "header is not valid JSON: %s%s%s at header byte %zu",
                       p->problem ? p->problem : "parse error", p->context ? " " : "",
                       p->context ? p->context : "", at);
    }
    j->have_ev = true;
    const yaml_event_t *e = &j->ev;
    size_t at = e->start_mark.index;
    if (e->type == YAML_ALIAS_EVENT)
        return bp_fail(j->err, "YAML alias at header byte %zu: aliases are not JSON", at);
    const yaml_char_t *anchor = NULL, *tag = NULL;
    if (e->type == YAML_SCALAR_EVENT) {
        anchor = e->data.scalar.anchor;
        tag = e->data.scalar.tag;
    } else if (e->type == YAML_SEQUENCE_START_EVENT) {
        anchor = e->data.sequence_start.anchor;
        tag = e->data.sequence_start.tag;
    } else if (e->type == YAML_MAPPING_START_EVENT) {
        anchor = e->data.mapping_start.anchor;
        tag = e->data.mapping_start.tag;
    }
    if (anchor) return bp_fail(j->err, "YAML anchor at header byte %zu: anchors are not JSON", at);
    if (tag) return bp_fail(j->err, "YAML tag at header byte %zu: tags are not JSON", at);
    if (e->type == YAML_MAPPING_START_EVENT && e->data.mapping_start.style != YAML_FLOW_MAPPING_STYLE)
        return bp_fail(j->err, "YAML block mapping at header byte %zu: expected JSON", at);
    if (e->type == YAML_SEQUENCE_START_EVENT &&
        e->data.sequence_start.style != YAML_FLOW_SEQUENCE_STYLE)
        return bp_fail(j->err, "YAML block sequence at header byte %zu: expected JSON", at);
    return 0;
}

static const char *event_kind(const yaml_event_t *e) {
    switch (e->type) {
    case YAML_SCALAR_EVENT: return "a scalar";
    case YAML_SEQUENCE_START_EVENT: return "an array";
    case YAML_MAPPING_START_EVENT: return "an object";
    case YAML_MAPPING_END_EVENT: return "the end of an object";
    case YAML_SEQUENCE_END_EVENT: return "the end of an array";
    default: return "the end of the header";
    }
}

/* The current event as a JSON string (a double-quoted scalar). */
static int js_string(Json *j, const char *what, const char **s, size_t *len) {
    const yaml_event_t *e = &j->ev;
    if (e->type != YAML_SCALAR_EVENT || e->data.scalar.style != YAML_DOUBLE_QUOTED_SCALAR_STYLE)
        return bp_fail(j->err, "%s must be a JSON string, found %s at header byte %zu", what,
                       e->type == YAML_SCALAR_EVENT ? "an unquoted scalar" : event_kind(e),
                       e->start_mark.index);
    *s = (const char *)e->data.scalar.value;
    *len = e->data.scalar.length;
    return 0;
}

/* The current event as a non-negative integer (plain digits, no sign, fraction or exponent). */
static int js_size(Json *j, const char *what, size_t *out) {
    const yaml_event_t *e = &j->ev;
    if (e->type != YAML_SCALAR_EVENT || e->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return bp_fail(j->err, "%s must be a non-negative integer, found %s", what,
                       e->type == YAML_SCALAR_EVENT ? "a string" : event_kind(e));
    const char *s = (const char *)e->data.scalar.value;
    size_t len = e->data.scalar.length, v = 0;
    char buf[80];
    if (len == 0) return bp_fail(j->err, "%s must be a non-negative integer, found nothing", what);
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return bp_fail(j->err, "%s must be a non-negative integer, found '%s'", what,
                           shown(buf, sizeof buf, s, len));
        size_t d = (size_t)(s[i] - '0');
        if (v > (SIZE_MAX - d) / 10)
            return bp_fail(j->err, "%s = %s overflows a 64-bit size", what,
                           shown(buf, sizeof buf, s, len));
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

static int js_expect_sequence(Json *j, const char *what) {
    if (js_next(j) != 0) return -1;
    if (j->ev.type != YAML_SEQUENCE_START_EVENT)
        return bp_fail(j->err, "%s must be a JSON array, found %s", what, event_kind(&j->ev));
    return 0;
}

static int parse_dtype(Json *j, StDtype *out) {
    const char *s = NULL;
    size_t len = 0;
    char buf[80];
    if (js_next(j) != 0 || js_string(j, "dtype", &s, &len) != 0) return -1;
    for (size_t d = 0; d < BP_ARRAY_LEN(DTYPES); d++)
        if (strlen(DTYPES[d].name) == len && memcmp(DTYPES[d].name, s, len) == 0) {
            *out = (StDtype)d;
            return 0;
        }
    for (size_t d = 0; d < BP_ARRAY_LEN(OTHER_DTYPES); d++)
        if (strlen(OTHER_DTYPES[d]) == len && memcmp(OTHER_DTYPES[d], s, len) == 0)
            return bp_fail(j->err, "dtype %s not supported (F32, I32, I64 are)", OTHER_DTYPES[d]);
    return bp_fail(j->err, "dtype '%s' is not a safetensors dtype (this reader reads F32, I32, I64)",
                   shown(buf, sizeof buf, s, len));
}

static int parse_shape(Json *j, StTensor *t) {
    if (js_expect_sequence(j, "shape") != 0) return -1;
    for (t->ndim = 0;; t->ndim++) {
        if (js_next(j) != 0) return -1;
        if (j->ev.type == YAML_SEQUENCE_END_EVENT) return 0;
        if (t->ndim == ST_MAX_DIMS)
            return bp_fail(j->err, "shape has more than %d dimensions", ST_MAX_DIMS);
        char what[32];
        snprintf(what, sizeof what, "shape[%d]", t->ndim);
        if (js_size(j, what, &t->shape[t->ndim]) != 0) return -1;
    }
}

static int parse_offsets(Json *j, StTensor *t) {
    if (js_expect_sequence(j, "data_offsets") != 0) return -1;
    size_t v[2];
    for (int k = 0;; k++) {
        if (js_next(j) != 0) return -1;
        if (j->ev.type == YAML_SEQUENCE_END_EVENT) {
            if (k != 2) break;
            t->begin = v[0];
            t->end = v[1];
            return 0;
        }
        if (k == 2) break;
        if (js_size(j, k == 0 ? "data_offsets[0]" : "data_offsets[1]", &v[k]) != 0) return -1;
    }
    return bp_fail(j->err, "data_offsets must be [begin, end] (two integers)");
}

/* One tensor entry: exactly {"dtype", "shape", "data_offsets"} in any order, then the checks that
 * need only the entry itself. */
static int parse_entry(Json *j, StTensor *t, size_t data_len) {
    if (js_next(j) != 0) return -1;
    if (j->ev.type != YAML_MAPPING_START_EVENT)
        return bp_fail(j->err, "expected an object {dtype, shape, data_offsets}, found %s",
                       event_kind(&j->ev));
    bool seen[3] = {false, false, false};
    static const char *const KEYS[3] = {"dtype", "shape", "data_offsets"};
    for (;;) {
        if (js_next(j) != 0) return -1;
        if (j->ev.type == YAML_MAPPING_END_EVENT) break;
        const char *key = NULL;
        size_t len = 0;
        if (js_string(j, "a key", &key, &len) != 0) return -1;
        int k = 0;
        while (k < 3 && !(strlen(KEYS[k]) == len && memcmp(KEYS[k], key, len) == 0)) k++;
        if (k == 3) {
            char buf[80];
            return bp_fail(j->err, "unexpected key '%s' (an entry has dtype, shape, data_offsets)",
                           shown(buf, sizeof buf, key, len));
        }
        if (seen[k]) return bp_fail(j->err, "key '%s' given twice", KEYS[k]);
        seen[k] = true;
        int rc = k == 0 ? parse_dtype(j, &t->dtype) : k == 1 ? parse_shape(j, t) : parse_offsets(j, t);
        if (rc != 0) return -1;
    }
    for (int k = 0; k < 3; k++)
        if (!seen[k]) return bp_fail(j->err, "key '%s' missing", KEYS[k]);

    size_t numel = 1;
    for (int d = 0; d < t->ndim; d++) {
        if (t->shape[d] != 0 && numel > SIZE_MAX / t->shape[d])
            return bp_fail(j->err, "shape product overflows a 64-bit size");
        numel *= t->shape[d];
    }
    size_t esize = dtype_size(t->dtype);
    if (numel > SIZE_MAX / esize) return bp_fail(j->err, "byte size of the shape overflows");
    if (t->begin > t->end)
        return bp_fail(j->err, "data_offsets [%zu, %zu] end before they begin", t->begin, t->end);
    if (t->end > data_len)
        return bp_fail(j->err, "data_offsets [%zu, %zu] go beyond the data section (%zu bytes)",
                       t->begin, t->end, data_len);
    char dims[ST_MAX_DIMS * 24 + 4];
    size_t n = 0;
    dims[n++] = '[';
    for (int d = 0; d < t->ndim; d++)
        n += (size_t)snprintf(dims + n, sizeof dims - n, d ? ", %zu" : "%zu", t->shape[d]);
    snprintf(dims + n, sizeof dims - n, "]");
    if (numel * esize != t->end - t->begin)
        return bp_fail(j->err, "shape %s of %s needs %zu bytes but data_offsets [%zu, %zu] hold %zu",
                       dims, st_dtype_name(t->dtype), numel * esize, t->begin, t->end,
                       t->end - t->begin);
    return 0;
}

/* "__metadata__": {string: string, ...}; the contents are not used. */
static int parse_metadata(Json *j) {
    if (js_next(j) != 0) return -1;
    if (j->ev.type != YAML_MAPPING_START_EVENT)
        return bp_fail(j->err, "__metadata__ must be an object of strings, found %s",
                       event_kind(&j->ev));
    for (;;) {
        const char *s = NULL;
        size_t len = 0;
        if (js_next(j) != 0) return -1;
        if (j->ev.type == YAML_MAPPING_END_EVENT) return 0;
        if (js_string(j, "a __metadata__ key", &s, &len) != 0) return -1;
        if (js_next(j) != 0 || js_string(j, "a __metadata__ value", &s, &len) != 0) return -1;
    }
}

/* Parses the whole header into a malloc'd array (*out, *n) in file order. Messages about one
 * tensor carry "tensor 'name': ". */
static int parse_header(Json *j, size_t data_len, StTensor **out, int *n_out) {
    StTensor *ts = NULL;
    int n = 0, cap = 0;
    bool metadata_seen = false;
    if (js_next(j) != 0) goto fail; /* stream start */
    if (j->ev.data.stream_start.encoding != YAML_UTF8_ENCODING) {
        bp_fail(j->err, "header is not UTF-8");
        goto fail;
    }
    if (js_next(j) != 0) goto fail;
    if (j->ev.type != YAML_DOCUMENT_START_EVENT) {
        bp_fail(j->err, "header is empty (expected a JSON object)");
        goto fail;
    }
    if (!j->ev.data.document_start.implicit) {
        bp_fail(j->err, "header starts a YAML document ('---' or a directive): expected JSON");
        goto fail;
    }
    if (js_next(j) != 0) goto fail;
    if (j->ev.type != YAML_MAPPING_START_EVENT) {
        bp_fail(j->err, "header is not a JSON object (found %s)", event_kind(&j->ev));
        goto fail;
    }
    for (;;) {
        if (js_next(j) != 0) goto fail;
        if (j->ev.type == YAML_MAPPING_END_EVENT) break;
        const char *name = NULL;
        size_t len = 0;
        char buf[80];
        if (js_string(j, "a tensor name", &name, &len) != 0) goto fail;
        if (len == 12 && memcmp(name, "__metadata__", 12) == 0) {
            if (metadata_seen) {
                bp_fail(j->err, "__metadata__ given twice");
                goto fail;
            }
            metadata_seen = true;
            if (parse_metadata(j) != 0) goto fail;
            continue;
        }
        if (len == 0 || len >= ST_NAME_LEN || memchr(name, 0, len)) {
            bp_fail(j->err, "tensor '%s': name %s", shown(buf, sizeof buf, name, len),
                    len == 0 ? "is empty" : memchr(name, 0, len) ? "contains a NUL byte"
                                                                  : "is too long (limit 127 bytes)");
            goto fail;
        }
        if (n == cap) {
            /* far more than any model has; bounds the table a hostile header can make us build */
            if (cap >= ST_MAX_TENSORS) {
                bp_fail(j->err, "more than %d tensors", ST_MAX_TENSORS);
                goto fail;
            }
            int ncap = cap ? 2 * cap : 64;
            StTensor *nt = realloc(ts, (size_t)ncap * sizeof *nt);
            if (!nt) {
                bp_fail(j->err, "out of memory reading the tensor table");
                goto fail;
            }
            ts = nt;
            cap = ncap;
        }
        StTensor *t = &ts[n];
        memset(t, 0, sizeof *t);
        memcpy(t->name, name, len); /* copied now: the event holding it is freed by the next parse */
        if (parse_entry(j, t, data_len) != 0) {
            bp_err_prefix(j->err, "tensor '%s'", shown_name(t->name).s);
            goto fail;
        }
        n++;
    }
    if (js_next(j) != 0) goto fail; /* document end */
    if (js_next(j) != 0) goto fail;
    if (j->ev.type != YAML_STREAM_END_EVENT) {
        bp_fail(j->err, "header holds more than one document");
        goto fail;
    }
    *out = ts;
    *n_out = n;
    return 0;
fail:
    free(ts);
    return -1;
}

static int cmp_name(const void *a, const void *b) {
    return strcmp((*(const StTensor *const *)a)->name, (*(const StTensor *const *)b)->name);
}

static int cmp_begin(const void *a, const void *b) {
    const StTensor *x = *(const StTensor *const *)a, *y = *(const StTensor *const *)b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : (x->end > y->end) - (x->end < y->end);
}

/* Names unique and byte ranges disjoint (empty tensors occupy no bytes and overlap nothing). */
static int check_table(StTensor *ts, int n, BpError *err) {
    if (n < 2) return 0;
    const StTensor **idx = bp_malloc((size_t)n * sizeof *idx, "the tensor index", err);
    if (!idx) return -1;
    int rc = 0;
    for (int i = 0; i < n; i++) idx[i] = &ts[i];
    qsort(idx, (size_t)n, sizeof *idx, cmp_name);
    for (int i = 1; i < n && rc == 0; i++)
        if (strcmp(idx[i - 1]->name, idx[i]->name) == 0)
            rc = bp_fail(err, "tensor '%s': name appears twice", shown_name(idx[i]->name).s);
    qsort(idx, (size_t)n, sizeof *idx, cmp_begin);
    const StTensor *prev = NULL;
    for (int i = 0; i < n && rc == 0; i++) {
        const StTensor *t = idx[i];
        if (t->begin == t->end) continue;
        if (prev && t->begin < prev->end)
            rc = bp_fail(err, "tensors '%s' [%zu, %zu) and '%s' [%zu, %zu) overlap",
                         shown_name(prev->name).s, prev->begin, prev->end, shown_name(t->name).s,
                         t->begin, t->end);
        prev = t;
    }
    free(idx);
    return rc;
}

/* f->tensors is one block: n StTensor, then n + 1 pointers: each tensor's readable data, then the
 * aligned copy buffer (or NULL) for st_close to free. */
static const void **data_ptrs(const StFile *f) { return (const void **)(f->tensors + f->n); }

static int place_data(StFile *f, StTensor *ts, int n, BpError *err) {
    f->tensors = bp_malloc((size_t)n * sizeof(StTensor) + (size_t)(n + 1) * sizeof(void *),
                           "the tensor table", err);
    if (!f->tensors) return -1;
    if (n) memcpy(f->tensors, ts, (size_t)n * sizeof *ts);
    f->n = n;
    const void **ptrs = data_ptrs(f);
    ptrs[n] = NULL;
    size_t copy_bytes = 0;
    for (int i = 0; i < n; i++) {
        const StTensor *t = &ts[i];
        if ((uintptr_t)(f->data + t->begin) % dtype_size(t->dtype) != 0)
            copy_bytes += (t->end - t->begin + 63) / 64 * 64;
    }
    uint8_t *copies = NULL;
    if (copy_bytes) {
        copies = bp_aligned_calloc(copy_bytes, "aligned copies of misaligned tensors", err);
        if (!copies) return -1;
    }
    ptrs[n] = copies;
    size_t at = 0;
    for (int i = 0; i < n; i++) {
        const StTensor *t = &ts[i];
        const uint8_t *src = f->data + t->begin;
        if ((uintptr_t)src % dtype_size(t->dtype) == 0) {
            ptrs[i] = src;
        } else {
            memcpy(copies + at, src, t->end - t->begin);
            ptrs[i] = copies + at;
            at += (t->end - t->begin + 63) / 64 * 64;
        }
    }
    return 0;
}

static int open_checked(StFile *f, const char *path, BpError *err) {
    void *map = NULL;
    size_t size = 0;
    if (bp_map_file(path, &map, &size, NULL, err) != 0) return -1;
    f->map = map;
    f->map_len = size;
    if (size < 8)
        return bp_fail(err, "truncated: %zu bytes, not even the 8-byte header length", size);

    const uint8_t *b = map;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | b[i];
    if (hlen > ST_MAX_HEADER)
        return bp_fail(err, "header length %llu is over the %llu-byte limit (not a safetensors file?)",
                       (unsigned long long)hlen, ST_MAX_HEADER);
    if (8 + hlen > size)
        return bp_fail(err, "truncated: the header needs %llu bytes but the file has %zu",
                       (unsigned long long)(8 + hlen), size);
    f->data = b + 8 + hlen;
    f->data_len = size - 8 - (size_t)hlen;

    Json j = {.err = err};
    if (!yaml_parser_initialize(&j.parser)) return bp_fail(err, "out of memory starting libyaml");
    yaml_parser_set_input_string(&j.parser, b + 8, (size_t)hlen);
    StTensor *ts = NULL;
    int n = 0;
    int rc = parse_header(&j, f->data_len, &ts, &n);
    if (j.have_ev) yaml_event_delete(&j.ev);
    yaml_parser_delete(&j.parser);
    if (rc == 0) rc = check_table(ts, n, err);
    if (rc == 0) rc = place_data(f, ts, n, err);
    free(ts);
    return rc;
}

int st_open(StFile *f, const char *path, BpError *err) {
    memset(f, 0, sizeof *f);
    snprintf(f->path, sizeof f->path, "%s", path);
    if (open_checked(f, path, err) == 0) return 0;
    bp_err_prefix(err, "%s", path);
    st_close(f);
    return -1;
}

void st_close(StFile *f) {
    if (f->tensors) free((void *)data_ptrs(f)[f->n]);
    free(f->tensors);
    bp_unmap_file(f->map, f->map_len);
    memset(f, 0, sizeof *f);
}

const StTensor *st_find(const StFile *f, const char *name) {
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

const void *st_data(const StFile *f, const StTensor *t) {
    /* integer compare: t may come from elsewhere, and subtracting unrelated pointers is UB */
    uintptr_t at = (uintptr_t)t, lo = (uintptr_t)f->tensors;
    if (!f->tensors || at < lo || at >= lo + (size_t)f->n * sizeof *t || (at - lo) % sizeof *t) return NULL;
    return data_ptrs(f)[(at - lo) / sizeof *t];
}

/* ------------------------------------------------------------------------------------------ */
/* writer                                                                                      */

typedef struct {
    char *buf;
    size_t len, cap;
    bool oom;
} Text;

static void text_put(Text *t, const char *s, size_t n) {
    if (t->oom) return;
    if (t->len + n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 4096;
        while (cap < t->len + n + 1) cap *= 2;
        char *nb = realloc(t->buf, cap);
        if (!nb) {
            t->oom = true;
            return;
        }
        t->buf = nb;
        t->cap = cap;
    }
    memcpy(t->buf + t->len, s, n);
    t->len += n;
    t->buf[t->len] = 0;
}

static void text_printf(Text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void text_printf(Text *t, const char *fmt, ...) {
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n > 0) text_put(t, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

/* A JSON string literal of valid UTF-8. Besides what JSON requires (quotes, backslashes, bytes
 * below 0x20) it escapes the code points YAML's reader refuses to see raw (DEL, the C1 controls,
 * U+FFFE, U+FFFF) and those YAML takes for line breaks (NEL, U+2028, U+2029), so every name this
 * writes, st_open reads back. */
static void text_json_string(Text *t, const char *str) {
    const unsigned char *s = (const unsigned char *)str;
    text_put(t, "\"", 1);
    while (*s) {
        unsigned c = *s;
        int len = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
        unsigned cp = len == 1 ? c : c & (0x3Fu >> (len - 1));
        for (int k = 1; k < len; k++) cp = cp << 6 | (s[k] & 0x3Fu);
        if (cp == '"' || cp == '\\') {
            char esc[2] = {'\\', (char)cp};
            text_put(t, esc, 2);
        } else if (cp < 0x20 || (cp >= 0x7F && cp <= 0x9F) || cp == 0x2028 || cp == 0x2029 ||
                   cp == 0xFFFE || cp == 0xFFFF) {
            text_printf(t, "\\u%04x", cp);
        } else {
            text_put(t, (const char *)s, (size_t)len);
        }
        s += len;
    }
    text_put(t, "\"", 1);
}

/* Strict UTF-8 (no overlongs, surrogates or code points past U+10FFFF): a reader must be able to
 * parse the name back. */
static bool valid_utf8(const char *str) {
    const unsigned char *s = (const unsigned char *)str;
    while (*s) {
        unsigned c = *s;
        int extra = c < 0x80 ? 0 : (c & 0xE0) == 0xC0 ? 1 : (c & 0xF0) == 0xE0 ? 2 : (c & 0xF8) == 0xF0 ? 3 : -1;
        if (extra < 0) return false;
        unsigned cp = extra == 0 ? c : c & (0x3Fu >> extra);
        for (int k = 1; k <= extra; k++) {
            if ((s[k] & 0xC0) != 0x80) return false;
            cp = cp << 6 | (s[k] & 0x3Fu);
        }
        static const unsigned MIN[4] = {0, 0x80, 0x800, 0x10000};
        if (cp < MIN[extra] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
        s += extra + 1;
    }
    return true;
}

static int check_entry(const StEntry *e, int i, const StEntry *all, size_t *bytes, BpError *err) {
    if (!e->name) return bp_fail(err, "entry %d has no name", i);
    size_t len = strlen(e->name);
    if (len == 0 || len >= ST_NAME_LEN)
        return bp_fail(err, "entry %d: name '%.60s' must be 1 to %d bytes", i, e->name, ST_NAME_LEN - 1);
    if (strcmp(e->name, "__metadata__") == 0 || !valid_utf8(e->name))
        return bp_fail(err, "tensor '%s': name is reserved or not UTF-8", e->name);
    for (int k = 0; k < i; k++)
        if (strcmp(all[k].name, e->name) == 0) return bp_fail(err, "tensor '%s': name given twice", e->name);
    if ((unsigned)e->dtype >= BP_ARRAY_LEN(DTYPES))
        return bp_fail(err, "tensor '%s': unknown dtype %d", e->name, (int)e->dtype);
    if (e->ndim < 0 || e->ndim > ST_MAX_DIMS)
        return bp_fail(err, "tensor '%s': %d dimensions (0 to %d allowed)", e->name, e->ndim, ST_MAX_DIMS);
    size_t n = dtype_size(e->dtype);
    for (int d = 0; d < e->ndim; d++) {
        if (e->shape[d] != 0 && n > SIZE_MAX / e->shape[d])
            return bp_fail(err, "tensor '%s': byte size overflows", e->name);
        n *= e->shape[d];
    }
    if (n && !e->data) return bp_fail(err, "tensor '%s': no data", e->name);
    *bytes = n;
    return 0;
}

int st_write(const char *path, const StEntry *entries, int n, BpError *err) {
    if (n < 0 || (n > 0 && !entries)) {
        bp_fail(err, "no tensors given");
        bp_err_prefix(err, "%s", path);
        return -1;
    }
    size_t *bytes = bp_calloc((size_t)n, sizeof *bytes, "tensor sizes", err);
    if (!bytes) return -1;
    Text h = {0};
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) rc = check_entry(&entries[i], i, entries, &bytes[i], err);
    if (rc == 0) {
        const char *meta = "{\"__metadata__\":{\"format\":\"pt\"}";
        text_put(&h, meta, strlen(meta));
        size_t off = 0;
        for (int i = 0; i < n; i++) {
            const StEntry *e = &entries[i];
            text_put(&h, ",", 1);
            text_json_string(&h, e->name);
            text_printf(&h, ":{\"dtype\":\"%s\",\"shape\":[", st_dtype_name(e->dtype));
            for (int d = 0; d < e->ndim; d++) text_printf(&h, d ? ",%zu" : "%zu", e->shape[d]);
            text_printf(&h, "],\"data_offsets\":[%zu,%zu]}", off, off + bytes[i]);
            off += bytes[i];
        }
        text_put(&h, "}", 1);
        /* spaces up to a multiple of 8, so the data section starts 8-byte aligned */
        while (!h.oom && h.len % 8 != 0) text_put(&h, " ", 1);
        if (h.oom) rc = bp_fail(err, "out of memory building the header");
    }
    if (rc != 0) {
        bp_err_prefix(err, "%s", path);
        goto done;
    }
    AtomicFile af;
    if (bp_atomic_open(&af, path, err) != 0) {
        rc = -1;
        goto done;
    }
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)h.len >> (8 * i));
    bool ok = fwrite(len8, 1, 8, af.fp) == 8 && fwrite(h.buf, 1, h.len, af.fp) == h.len;
    for (int i = 0; i < n && ok; i++)
        ok = bytes[i] == 0 || fwrite(entries[i].data, 1, bytes[i], af.fp) == bytes[i];
    if (ok) {
        rc = bp_atomic_commit(&af, err);
    } else {
        int e = errno;
        bp_atomic_abort(&af);
        rc = bp_fail(err, "%s: write failed: %s", path, strerror(e));
    }
done:
    free(h.buf);
    free(bytes);
    return rc;
}
