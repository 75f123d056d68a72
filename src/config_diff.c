/* config_diff.c: flatten two JSON documents with libyaml and compare them (see config_diff.h). */
#include "config_diff.h"

#include <stdlib.h>
#include <string.h>
#include <yaml.h>

typedef struct {
    char *key;
    char *value;
} FlatEntry;

typedef struct {
    FlatEntry *e;
    size_t n, cap;
} Flat;

static int flat_add(Flat *f, const char *key, const char *value) {
    if (f->n == f->cap) {
        size_t cap = f->cap ? 2 * f->cap : 64;
        FlatEntry *ne = realloc(f->e, cap * sizeof *ne);
        if (!ne) return -1;
        f->e = ne;
        f->cap = cap;
    }
    f->e[f->n].key = strdup(key);
    f->e[f->n].value = strdup(value);
    if (!f->e[f->n].key || !f->e[f->n].value) return -1;
    f->n++;
    return 0;
}

static void flat_free(Flat *f) {
    for (size_t i = 0; i < f->n; i++) {
        free(f->e[i].key);
        free(f->e[i].value);
    }
    free(f->e);
}

/* Walks the node tree; lists are flattened with their index as a key component, except lists of
 * scalars, which compare as one value (e.g. exclusion patterns). */
static int flatten(yaml_document_t *doc, yaml_node_t *node, const char *prefix, Flat *out,
                   int depth) {
    char key[512];
    if (!node || depth > 32) return -1;
    if (node->type == YAML_SCALAR_NODE) return flat_add(out, prefix, (const char *)node->data.scalar.value);
    if (node->type == YAML_MAPPING_NODE) {
        for (yaml_node_pair_t *p = node->data.mapping.pairs.start; p < node->data.mapping.pairs.top; p++) {
            yaml_node_t *k = yaml_document_get_node(doc, p->key);
            if (!k || k->type != YAML_SCALAR_NODE) return -1;
            snprintf(key, sizeof key, "%s%s%s", prefix, prefix[0] ? "." : "", (const char *)k->data.scalar.value);
            if (flatten(doc, yaml_document_get_node(doc, p->value), key, out, depth + 1) != 0) return -1;
        }
        return 0;
    }
    /* sequence */
    int all_scalars = 1;
    for (yaml_node_item_t *it = node->data.sequence.items.start; it < node->data.sequence.items.top; it++) {
        yaml_node_t *c = yaml_document_get_node(doc, *it);
        if (!c || c->type != YAML_SCALAR_NODE) all_scalars = 0;
    }
    if (all_scalars) {
        char joined[2048] = "[";
        for (yaml_node_item_t *it = node->data.sequence.items.start; it < node->data.sequence.items.top; it++) {
            yaml_node_t *c = yaml_document_get_node(doc, *it);
            size_t used = strlen(joined);
            snprintf(joined + used, sizeof joined - used, "%s%s", used > 1 ? ", " : "", (const char *)c->data.scalar.value);
        }
        size_t used = strlen(joined);
        snprintf(joined + used, sizeof joined - used, "]");
        return flat_add(out, prefix, joined);
    }
    int idx = 0;
    for (yaml_node_item_t *it = node->data.sequence.items.start; it < node->data.sequence.items.top; it++, idx++) {
        snprintf(key, sizeof key, "%s.%d", prefix, idx);
        if (flatten(doc, yaml_document_get_node(doc, *it), key, out, depth + 1) != 0) return -1;
    }
    return 0;
}

static int parse_flat(const char *json, Flat *out) {
    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser)) return -1;
    yaml_parser_set_input_string(&parser, (const unsigned char *)json, strlen(json));
    int rc = -1;
    if (yaml_parser_load(&parser, &doc)) {
        yaml_node_t *root = yaml_document_get_root_node(&doc);
        rc = root ? flatten(&doc, root, "", out, 0) : -1;
        yaml_document_delete(&doc);
    }
    yaml_parser_delete(&parser);
    return rc;
}

static const char *lookup(const Flat *f, const char *key) {
    for (size_t i = 0; i < f->n; i++)
        if (!strcmp(f->e[i].key, key)) return f->e[i].value;
    return NULL;
}

int config_json_diff(const char *old_json, const char *new_json, ConfigDiffFn fn, void *ctx,
                     BpError *err) {
    Flat a = {0}, b = {0};
    int differing = -1;
    if (parse_flat(old_json, &a) != 0) {
        bp_fail(err, "cannot parse the stored configuration");
        goto done;
    }
    if (parse_flat(new_json, &b) != 0) {
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
