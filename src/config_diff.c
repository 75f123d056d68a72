/* config_diff.c: flatten two JSON documents with libyaml's event stream and compare them key by key
 * through a hash index (see config_diff.h). Linear in the size of the texts: each event is handled
 * once, each key looked up once; aliases and anchors are refused (no expansion) and nesting is
 * bounded, so a hostile text costs no more than its length. */
#include "config_diff.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#define DIFF_MAX_DEPTH 64  /* a resolved config needs 3 */
#define DIFF_KEY_MAX 512   /* a flattened key */
#define DIFF_JOINED_MAX 4096 /* a list of scalars compared as one value */

typedef struct {
    char *key;
    char *value;
} FlatEntry;

typedef struct {
    FlatEntry *e;
    size_t n, cap;
    size_t *index; /* open addressing over e, 0 = empty slot, else entry + 1 */
    size_t slots;  /* a power of two, at least 2n */
} Flat;

static int flat_add(Flat *f, const char *key, const char *value) {
    if (f->n == f->cap) {
        size_t cap = f->cap ? 2 * f->cap : 64;
        FlatEntry *ne = realloc(f->e, cap * sizeof *ne);
        if (!ne) return -1;
        f->e = ne;
        f->cap = cap;
    }
    char *k = strdup(key), *v = strdup(value);
    if (!k || !v) {
        free(k);
        free(v);
        return -1;
    }
    f->e[f->n].key = k;
    f->e[f->n].value = v;
    f->n++;
    return 0;
}

static void flat_free(Flat *f) {
    for (size_t i = 0; i < f->n; i++) {
        free(f->e[i].key);
        free(f->e[i].value);
    }
    free(f->e);
    free(f->index);
}

/* Entries [first, n) are the items of a list of scalars: replace them by one "[a, b]" value. */
static int collapse_list(Flat *f, size_t first, const char *key) {
    char joined[DIFF_JOINED_MAX] = "[";
    size_t used = 1;
    for (size_t i = first; i < f->n; i++) {
        int w = snprintf(joined + used, sizeof joined - used, "%s%s", i > first ? ", " : "", f->e[i].value);
        if (w < 0 || (size_t)w >= sizeof joined - used) return -1;
        used += (size_t)w;
    }
    if (used + 2 > sizeof joined) return -1;
    memcpy(joined + used, "]", 2);
    while (f->n > first) {
        f->n--;
        free(f->e[f->n].key);
        free(f->e[f->n].value);
    }
    return flat_add(f, key, joined);
}

typedef struct {
    bool map;      /* mapping (else sequence) */
    bool want_key; /* mapping: the next scalar is a key */
    bool nested;   /* sequence: an item was a mapping or a sequence */
    size_t plen;   /* length of this container's own key in the key buffer */
    size_t first;  /* sequence: its first entry */
    long index;    /* sequence: the next item's index */
} Frame;

/* Appends ".part" (or "part" at the top) to the key of the container at plen. */
static int key_join(char *key, size_t plen, const char *part, size_t *klen) {
    int w = snprintf(key + plen, DIFF_KEY_MAX - plen, "%s%s", plen ? "." : "", part);
    if (w < 0 || (size_t)w >= DIFF_KEY_MAX - plen) return -1;
    *klen = plen + (size_t)w;
    return 0;
}

/* One event of the stream into the flat list. Mappings give "a.b" keys; sequences of scalars
 * compare as one value (e.g. exclusion patterns), other sequences give "a.0", "a.1". */
static int flatten_event(const yaml_event_t *ev, Frame *stack, int *depth, char *key, Flat *out) {
    Frame *top = *depth ? &stack[*depth - 1] : NULL;
    bool opens = ev->type == YAML_SCALAR_EVENT || ev->type == YAML_MAPPING_START_EVENT ||
                 ev->type == YAML_SEQUENCE_START_EVENT;
    size_t klen = 0;
    if (opens && top && top->map && top->want_key) {
        if (ev->type != YAML_SCALAR_EVENT) return -1; /* a key must be a name */
        top->want_key = false;
        return key_join(key, top->plen, (const char *)ev->data.scalar.value, &klen);
    }
    if (opens && top && !top->map) {
        char idx[24];
        snprintf(idx, sizeof idx, "%ld", top->index++);
        if (key_join(key, top->plen, idx, &klen) != 0) return -1;
        if (ev->type != YAML_SCALAR_EVENT) top->nested = true;
    } else if (opens && top) {
        klen = strlen(key); /* the mapping's key, set by the key event */
        top->want_key = true;
    }
    switch (ev->type) {
    case YAML_SCALAR_EVENT: return flat_add(out, key, (const char *)ev->data.scalar.value);
    case YAML_MAPPING_START_EVENT:
    case YAML_SEQUENCE_START_EVENT:
        if (*depth >= DIFF_MAX_DEPTH) return -1;
        stack[(*depth)++] = (Frame){.map = ev->type == YAML_MAPPING_START_EVENT, .want_key = true,
                                    .plen = klen, .first = out->n};
        return 0;
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT: {
        if (!top) return -1;
        Frame done = *top;
        (*depth)--;
        key[done.plen] = 0;
        if (!done.map && !done.nested) return collapse_list(out, done.first, key);
        return 0;
    }
    case YAML_ALIAS_EVENT: return -1;
    default: return 0;
    }
}

static int parse_flat(const char *json, Flat *out) {
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser)) return -1;
    yaml_parser_set_input_string(&parser, (const unsigned char *)json, strlen(json));
    Frame stack[DIFF_MAX_DEPTH];
    char key[DIFF_KEY_MAX] = "";
    int depth = 0, rc = 0;
    for (bool end = false; !end && rc == 0;) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&parser, &ev)) {
            rc = -1;
            break;
        }
        end = ev.type == YAML_STREAM_END_EVENT;
        bool anchored = (ev.type == YAML_SCALAR_EVENT && ev.data.scalar.anchor) ||
                        (ev.type == YAML_MAPPING_START_EVENT && ev.data.mapping_start.anchor) ||
                        (ev.type == YAML_SEQUENCE_START_EVENT && ev.data.sequence_start.anchor);
        rc = anchored ? -1 : flatten_event(&ev, stack, &depth, key, out);
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&parser);
    return rc;
}

/* FNV-1a */
static uint64_t hash_key(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static int flat_index(Flat *f) {
    f->slots = 16;
    while (f->slots < 2 * f->n) f->slots *= 2;
    f->index = calloc(f->slots, sizeof *f->index);
    if (!f->index) return -1;
    for (size_t i = 0; i < f->n; i++) {
        size_t s = (size_t)hash_key(f->e[i].key) & (f->slots - 1);
        /* a key given twice ({"a": 1, "a": 2}, or {"a.b": 1, "a": {"b": 2}}) is refused: a lookup
           finds only one of them, so a change could hide behind the other */
        for (; f->index[s]; s = (s + 1) & (f->slots - 1))
            if (!strcmp(f->e[f->index[s] - 1].key, f->e[i].key)) return -1;
        f->index[s] = i + 1;
    }
    return 0;
}

static const char *lookup(const Flat *f, const char *key) {
    size_t s = (size_t)hash_key(key) & (f->slots - 1);
    for (; f->index[s]; s = (s + 1) & (f->slots - 1))
        if (!strcmp(f->e[f->index[s] - 1].key, key)) return f->e[f->index[s] - 1].value;
    return NULL;
}

int config_json_diff(const char *old_json, const char *new_json, ConfigDiffFn fn, void *ctx,
                     BpError *err) {
    Flat a = {0}, b = {0};
    int differing = -1;
    if (parse_flat(old_json, &a) != 0 || flat_index(&a) != 0) {
        bp_fail_kind(err, BP_ERR_CORRUPT, "cannot parse the stored configuration");
        goto done;
    }
    if (parse_flat(new_json, &b) != 0 || flat_index(&b) != 0) {
        bp_fail(err, "cannot parse the new configuration");
        goto done;
    }
    differing = 0;
    for (size_t i = 0; i < a.n; i++) {
        const char *nv = lookup(&b, a.e[i].key);
        if (!nv || strcmp(nv, a.e[i].value)) {
            differing++;
            fn(a.e[i].key, a.e[i].value, nv ? nv : "(absent)", ctx);
        }
    }
    for (size_t i = 0; i < b.n; i++)
        if (!lookup(&a, b.e[i].key)) {
            differing++;
            fn(b.e[i].key, "(absent)", b.e[i].value, ctx);
        }
done:
    flat_free(&a);
    flat_free(&b);
    return differing;
}
