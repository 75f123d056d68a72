/* Hostile input for the config loader and --set: truncated and garbled YAML, deep nesting, huge
 * numbers, anchors/aliases (billion laughs), binary bytes, very long keys and values, empty and
 * non-mapping documents, oversized and special files. The loader must return an error (status 2)
 * with a message, and never crash, leak or hang: run it under `make test-asan`. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "testutil.h"

static int setup(void **state) {
    (void)state;
    return tu_dir_create("hostile", "h.yaml");
}

/* Loads g_path: either it loads (and then resolves or fails cleanly) or it fails with a message
 * and status 2. Returns the load result. */
static int load_any(BpError *err) {
    Config c;
    memset(err, 0, sizeof *err);
    int rc = config_load(&c, g_path, err);
    if (rc != 0) {
        assert_int_equal(rc, -1);
        assert_int_equal(bp_error_status(err), BP_EXIT_USAGE);
        assert_true(err->msg[0] != 0);
        assert_true(strlen(err->msg) < BP_ERR_LEN);
        return rc;
    }
    BpError e2 = {0};
    if (config_resolve(&c, &e2) != 0) assert_true(e2.msg[0] != 0);
    return 0;
}

/* The load fails and the message holds want. */
static void expect_fail(const void *buf, size_t n, const char *want) {
    tu_write_bytes(g_path, buf, n);
    BpError err;
    assert_int_equal(load_any(&err), -1);
    if (!strstr(err.msg, want)) {
        fprintf(stderr, "message '%s' lacks '%s'\n", err.msg, want);
        fail();
    }
}

static void expect_fail_str(const char *text, const char *want) { expect_fail(text, strlen(text), want); }

static const char VALID[] =
    "# a complete config\n"
    "model: {preset: bert-tiny, dropout: 0.1, gelu: erf, init_from: null}\n"
    "data:\n"
    "  vocab: data/vocab.txt\n"
    "  input: [data/a.txt, \"data/b c.txt\"]\n"
    "  train: data/shards/train\n"
    "  eval_fraction: 0.01\n"
    "  whole_word_mask: false\n"
    "optimizer: {name: lamb, beta1: 0.9, beta2: 0.999, epsilon: 1.0e-6, weight_decay: 0.01,\n"
    "            exclude_from_weight_decay: [bias, LayerNorm]}\n"
    "schedule: {lr: 5.0e-3, warmup_ratio: 0.2, decay_power: 1.0, end_lr: 0.0}\n"
    "phases:\n"
    "  - {seq_len: 128, batch_size: 256, steps: 90, max_predictions_per_seq: 20}\n"
    "  - seq_len: 512\n"
    "    batch_size: 256\n"
    "    steps: 10\n"
    "    max_predictions_per_seq: 80\n"
    "    restart_schedule: true\n"
    "    lr: 'x'\n"
    "training: {micro_batch: 8, seed: 12345, run_dir: runs/x, checkpoint_every: 100}\n";

/* Every prefix of a config: loads or fails cleanly. */
static void test_truncated(void **state) {
    (void)state;
    size_t n = strlen(VALID);
    int failures = 0;
    for (size_t len = 0; len <= n; len++) {
        tu_write_bytes(g_path, VALID, len);
        BpError err;
        failures += load_any(&err) != 0;
    }
    /* the full text fails too (lr: 'x'), as do most prefixes; the short ones with only a
       comment or a complete model line load */
    assert_true(failures > (int)n / 2);
}

static uint64_t xorshift(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Random byte replacements, insertions of structure characters, and deletions. */
static void test_garbled(void **state) {
    (void)state;
    size_t n = strlen(VALID);
    char buf[sizeof VALID + 16];
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    static const char STRUCT[] = "{}[]:,-&*!|>'\"#%@`\n\t ?";
    for (int trial = 0; trial < 1500; trial++) {
        memcpy(buf, VALID, n);
        size_t len = n;
        int edits = 1 + (int)(xorshift(&seed) % 8);
        for (int e = 0; e < edits; e++) {
            size_t at = (size_t)(xorshift(&seed) % len);
            uint64_t kind = xorshift(&seed) % 3;
            if (kind == 0) buf[at] = (char)(xorshift(&seed) & 0xff);
            else if (kind == 1) buf[at] = STRUCT[xorshift(&seed) % (sizeof STRUCT - 1)];
            else if (len > 1) {
                memmove(buf + at, buf + at + 1, len - at - 1);
                len--;
            }
        }
        tu_write_bytes(g_path, buf, len);
        BpError err;
        load_any(&err);
    }
}

static char *repeat(const char *unit, size_t times, const char *tail) {
    size_t u = strlen(unit), t = strlen(tail);
    char *s = malloc(u * times + t + 1);
    assert_non_null(s);
    for (size_t i = 0; i < times; i++) memcpy(s + i * u, unit, u);
    memcpy(s + u * times, tail, t + 1);
    return s;
}

static void test_deep_nesting(void **state) {
    (void)state;
    char *s = repeat("[", 10000, "");
    expect_fail_str(s, ":1:65: YAML nesting deeper than 64 levels");
    free(s);
    s = repeat("{a: ", 10000, "1");
    expect_fail_str(s, "YAML nesting deeper than 64 levels");
    free(s);
    s = repeat("- ", 10000, "x\n");
    expect_fail_str(s, "YAML nesting deeper than 64 levels");
    free(s);
    /* block mappings, one more indentation per level */
    size_t levels = 200, o = 0;
    char *b = malloc(levels * (2 * levels + 8));
    assert_non_null(b);
    for (size_t i = 0; i < levels; i++) {
        memset(b + o, ' ', 2 * i);
        o += 2 * i;
        memcpy(b + o, "a:\n", 3);
        o += 3;
    }
    expect_fail(b, o, "YAML nesting deeper than 64 levels");
    free(b);
    /* 64 levels are within the bound: the error is then about the content */
    s = repeat("[", 63, "");
    char *t = malloc(strlen(s) + 200);
    assert_non_null(t);
    sprintf(t, "model: %s", s);
    size_t l = strlen(t);
    for (int i = 0; i < 63; i++) t[l++] = ']';
    t[l] = 0;
    expect_fail_str(t, "model must be a mapping of keys, got a list");
    free(s);
    free(t);
}

static void test_huge_numbers(void **state) {
    (void)state;
    static const char *const KEYS[] = {
        "model: {layers: %s}", "model: {dropout: %s}", "data: {vocab_size: %s}",
        "optimizer: {beta1: %s}", "optimizer: {epsilon: %s}", "optimizer: {weight_decay: %s}",
        "schedule: {lr: %s}", "schedule: {warmup_steps: %s}", "training: {seed: %s}",
        "training: {max_memory_gb: %s}",
        "phases: [{seq_len: %s, batch_size: 8, steps: 1}]",
        "phases: [{seq_len: 8, batch_size: 8, steps: 1, restart_schedule: true, lr: %s}]"};
    static const char *const VALUES[] = {"1e400", "-1e400", "1e-400", "99999999999999999999",
                                         "-99999999999999999999", "184467440737095516160",
                                         "1e99999999999999999999", "0x10", "1_000", ".inf", "-.inf",
                                         ".nan", "1e", "--1", "+", "", "0.5.5", "1 5", "inf", "nan"};
    char text[256];
    for (size_t k = 0; k < sizeof KEYS / sizeof KEYS[0]; k++)
        for (size_t v = 0; v < sizeof VALUES / sizeof VALUES[0]; v++) {
            snprintf(text, sizeof text, KEYS[k], VALUES[v]);
            tu_write_bytes(g_path, text, strlen(text));
            BpError err;
            if (load_any(&err) == 0) {
                fprintf(stderr, "accepted: %s\n", text);
                fail();
            }
            if (!strstr(err.msg, "out of range") && !strstr(err.msg, "must be")) {
                fprintf(stderr, "%s -> %s\n", text, err.msg);
                fail();
            }
        }
}

static void test_anchors_aliases(void **state) {
    (void)state;
    /* billion laughs: refused at the first anchor, nothing expanded */
    expect_fail_str("a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n"
                    "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
                    "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
                    "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
                    "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
                    "f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
                    "g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n"
                    "h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\n"
                    "i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]\n",
                    ":1:4: YAML anchors (&a) are not supported");
    expect_fail_str("model: {layers: *undefined}\n", "YAML aliases (*undefined) are not supported");
    expect_fail_str("model: &m\n  layers: 2\ndata: *m\n", "YAML anchors (&m) are not supported");
    expect_fail_str("model: {<<: {layers: 2}}\n", "unknown key 'model.<<'");
    expect_fail_str("model: !!python/object:os.system {}\n", "YAML tags");
    expect_fail_str("%YAML 1.1\n%TAG ! tag:evil:\n---\nmodel: !x {}\n", "YAML tags");
}

static void test_binary_bytes(void **state) {
    (void)state;
    unsigned char all[256];
    for (int i = 0; i < 256; i++) all[i] = (unsigned char)i;
    expect_fail(all, sizeof all, "invalid input");
    unsigned char nul[] = {'m', 'o', 'd', 'e', 'l', ':', ' ', 0, '\n'};
    expect_fail(nul, sizeof nul, "invalid input: control characters are not allowed");
    unsigned char bom16[] = {0xff, 0xfe, 'm', 0, ':', 0, '\n', 0};
    expect_fail(bom16, sizeof bom16, "invalid input");
    expect_fail_str("model:\n  preset: caf\xc3\n", ":2:15: invalid input: invalid trailing UTF-8 octet");
    expect_fail_str("model: {preset: \xed\xa0\x80}\n", "invalid input");          /* a surrogate */
    expect_fail_str("model: {preset: \xf4\x90\x80\x80}\n", "invalid input");      /* above U+10FFFF */
    expect_fail_str("model: {preset: \xc0\xaf}\n", "invalid input");              /* overlong */
    /* random binary blobs */
    uint64_t seed = 42;
    unsigned char blob[4096];
    for (int trial = 0; trial < 200; trial++) {
        size_t n = 1 + (size_t)(xorshift(&seed) % sizeof blob);
        for (size_t i = 0; i < n; i++) blob[i] = (unsigned char)xorshift(&seed);
        tu_write_bytes(g_path, blob, n);
        BpError err;
        load_any(&err);
    }
    /* valid UTF-8 in a value is fine where text is allowed, and quoted in messages */
    expect_fail_str("model: {preset: \"b\xc3\xa9rt\\tx\"}\n", "got 'b\xc3\xa9rt\\x09x'");
}

static void test_long_keys_and_values(void **state) {
    (void)state;
    /* libyaml allows 1024 characters in a simple key; an explicit "? key" has no such limit */
    char *key = repeat("k", 100000, ": 1\n");
    expect_fail_str(key, ":1:100001: YAML syntax error: mapping values are not allowed in this context");
    free(key);
    key = repeat("k", 100000, "\n: 1\n");
    key[0] = '?';
    key[1] = ' ';
    expect_fail_str(key, ":1:3: unknown key 'kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk...' (known keys:");
    free(key);
    char *val = repeat("p", 100000, "}\n");
    char *text = malloc(strlen(val) + 64);
    assert_non_null(text);
    sprintf(text, "data: {vocab: %s", val);
    expect_fail_str(text, ":1:15: data.vocab is longer than 1023 bytes: 'pppp");
    sprintf(text, "optimizer:\n  exclude_from_weight_decay:\n    - %s", val);
    text[strlen(text) - 2] = 0;
    expect_fail_str(text, "optimizer.exclude_from_weight_decay[0] is longer than 63 bytes");
    sprintf(text, "model: {layers: %s", val);
    memset(text + 16, '9', 100000);
    expect_fail_str(text, "model.layers = 999999999999999999999999999999999999999999999999999999999999... "
                          "is out of range [1, 1024]");
    sprintf(text, "model: {dropout: 0.%s", val);
    memset(text + 19, '1', 100000);
    tu_write_bytes(g_path, text, strlen(text));
    BpError err;
    assert_int_equal(load_any(&err), 0); /* 0.111...1 with 100000 digits is a fine dropout */
    free(val);
    free(text);
    /* a path that fits only before it is joined to the file's directory */
    char *p = repeat("q", 1020, "}\n");
    char *t2 = malloc(1100);
    assert_non_null(t2);
    snprintf(t2, 1100, "data: {vocab: %s", p);
    expect_fail_str(t2, "data.vocab is longer than 1023 bytes");
    free(p);
    free(t2);
}

static void test_documents_and_files(void **state) {
    (void)state;
    expect_fail_str("", "the file is empty");
    expect_fail_str("\n\n   \n# nothing\n", "the file is empty");
    expect_fail_str("---\n", ":2:1: the top level must be a mapping of sections");
    expect_fail_str("~\n", "got a scalar");
    expect_fail_str("42\n", "got a scalar");
    expect_fail_str("[model, data]\n", "got a list");
    expect_fail_str("- model: {}\n", "got a list");
    expect_fail_str("model: {}\n...\n---\nmodel: {}\n", "a second YAML document");
    expect_fail_str("? {a: 1}\n: 2\n", "a key must be a plain name, got a mapping");
    expect_fail_str("model: {? [1]: 2}\n", "a key must be a plain name, got a list");
    expect_fail_str("model: {hidden: 1, hidden: 2}\n", "duplicate key 'model.hidden'");
    expect_fail_str("phases: [{seq_len: 8, seq_len: 9}]\n", "duplicate key 'phases[0].seq_len'");
    /* too many of a thing */
    char *many = repeat("{seq_len: 8, batch_size: 8, steps: 1},", 100, "]\n");
    char *text = malloc(strlen(many) + 16);
    assert_non_null(text);
    sprintf(text, "phases: [%s", many);
    expect_fail_str(text, "phases: at most 8 phases are supported");
    free(many);
    many = repeat("a.txt,", 100, "]}\n");
    text = realloc(text, strlen(many) + 32);
    sprintf(text, "data: {input: [%s", many);
    expect_fail_str(text, "data.input has 100 entries (at most 64)");
    free(many);
    many = repeat("1,", 300000, "1]\n");
    text = realloc(text, strlen(many) + 32);
    sprintf(text, "x: [%s", many);
    expect_fail_str(text, "more than 100000 YAML values: not a config");
    free(many);
    /* a mapping with a huge number of keys fails at its first unknown one */
    many = repeat("zz: 1\n", 40000, "");
    expect_fail_str(many, ":1:1: unknown key 'zz'");
    free(many);
    free(text);
    /* a file over 1 MiB is refused before it is parsed */
    char *big = repeat("#", 2u << 20, "\n");
    expect_fail_str(big, "more than the 1048576 a config may have");
    free(big);
    /* not regular files */
    Config c;
    BpError err = {0};
    assert_int_equal(config_load(&c, g_dir, &err), -1);
    assert_non_null(strstr(err.msg, ": cannot read the config: not a regular file"));
    assert_int_equal(config_load(&c, "/dev/zero", &err), -1);
    assert_string_equal(err.msg, "/dev/zero: cannot read the config: not a regular file");
    assert_int_equal(config_load(&c, "", &err), -1);
    assert_string_equal(err.msg, "no config file given");
    assert_int_equal(config_load(&c, NULL, &err), -1);
    assert_int_equal(bp_error_status(&err), BP_EXIT_USAGE);
    /* a path with as many segments as fit */
    char segs[CFG_PATH_MAX]; /* "/" + "a/" x 510 + "bb": 1023 bytes, 511 segments */
    size_t o = 0;
    segs[o++] = '/';
    for (int i = 0; i < 510; i++, o += 2) memcpy(segs + o, "a/", 2);
    memcpy(segs + o, "bb", 3);
    char *t = malloc(CFG_PATH_MAX + 32);
    assert_non_null(t);
    snprintf(t, CFG_PATH_MAX + 32, "data: {vocab: %s}\n", segs);
    tu_write_bytes(g_path, t, strlen(t));
    assert_int_equal(config_load(&c, g_path, &err), 0);
    assert_string_equal(c.data.vocab, segs);
    assert_int_equal(strlen(c.data.vocab), CFG_PATH_MAX - 1);
    free(t);
    /* a base that is a directory, and a base that is the file's own directory */
    expect_fail_str("base: .\n", "base file");
    expect_fail_str("base: /dev/zero\n", "base file /dev/zero cannot be read: not a regular file");
    expect_fail_str("base: \"\"\n", "base must be the path of another config, got no path");
    expect_fail_str("base: ~\n", "base must be the path of another config, got no path");
}

static void expect_set_fail(const char *assignment, const char *want) {
    Config c;
    config_defaults(&c);
    c.n_phases = 1;
    c.phases[0].seq_len = 128;
    c.phases[0].batch_size = 64;
    c.phases[0].steps = 1;
    BpError err = {0};
    assert_int_equal(config_apply_override(&c, assignment, &err), -1);
    assert_int_equal(bp_error_status(&err), BP_EXIT_USAGE);
    if (!strstr(err.msg, want)) {
        fprintf(stderr, "message '%s' lacks '%s'\n", err.msg, want);
        fail();
    }
}

static void test_hostile_overrides(void **state) {
    (void)state;
    expect_set_fail("", "expected section.key=value");
    expect_set_fail("=", "expected section.key=value");
    expect_set_fail("phases.99999999999999999999.steps=1", "phases.N.key needs a phase number N");
    expect_set_fail("phases.-1.steps=1", "phases.N.key needs a phase number N, got '-1'");
    expect_set_fail("phases..steps=1", "phases.N.key needs a phase number N, got ''");
    expect_set_fail("phases.0.steps.x=1", "unknown key 'phases[0].steps.x'");
    expect_set_fail("a.b.c.d.e=1", "unknown section 'a'");
    expect_set_fail(".=1", "unknown section ''");
    expect_set_fail("model.=1", "unknown key 'model.'");
    expect_set_fail("model.layers=&a 3", "YAML anchors (&a) are not supported");
    expect_set_fail("model.layers=\xff", "invalid input");
    expect_set_fail("model.layers=1\n---\n2", "a second YAML document");
    expect_set_fail("training.seed=99999999999999999999999", "out of range [0, 18446744073709551615]");
    expect_set_fail("phases.0={steps: [1]}", "phases[0].steps must be an integer, got a list");
    expect_set_fail("phases.0=3", "phases[0] must be a mapping");
    expect_set_fail("phases=3", "phases must be a list of mappings, got a scalar");
    expect_set_fail("model=[1]", "model must be a mapping of keys, got a list");
    /* a whole section that sets nothing was accepted and changed nothing */
    expect_set_fail("model=", "--set model=: model sets no key. HINT: --set model.KEY=VALUE");
    expect_set_fail("training=~", "training sets no key");
    expect_set_fail("optimizer={}", "optimizer sets no key");
    char *deep = repeat("[", 10000, "");
    char *a = malloc(strlen(deep) + 32);
    assert_non_null(a);
    sprintf(a, "model.layers=%s", deep);
    expect_set_fail(a, "YAML nesting deeper than 64 levels");
    free(deep);
    free(a);
    char *longkey = repeat("k", 100000, "=1");
    expect_set_fail(longkey, "the key is too long");
    free(longkey);
    char *longval = repeat("9", 100000, "");
    a = malloc(strlen(longval) + 32);
    assert_non_null(a);
    sprintf(a, "model.layers=%s", longval);
    expect_set_fail(a, "is out of range [1, 1024]");
    free(longval);
    free(a);
}

/* config_load_cli with the demo's sizes and `extra`, expected to fail with want (status 2) */
static void expect_resolve_fail(const char *extra, const char *extra2, const char *want) {
    char *sets[] = {"model.preset=bert-tiny", "phases=[{seq_len: 16, batch_size: 8, steps: 2}]",
                    "training.micro_batch=4", (char *)extra, (char *)extra2};
    Config c;
    BpError err = {0};
    assert_int_equal(config_load_cli(&c, NULL, sets, extra2 ? 5 : 4, 1, &err), -1);
    assert_int_equal(bp_error_status(&err), BP_EXIT_USAGE);
    if (!strstr(err.msg, want)) fail_msg("message '%s' lacks '%s'", err.msg, want);
}

/* Paths that name the wrong thing: the eval set that is the training set (by name or through a
 * link), a vocab that is a FIFO (reading it waited forever for a writer) or a directory. */
static void test_hostile_paths(void **state) {
    (void)state;
    char set_train[400], set_eval[400], set_vocab[400];
    snprintf(set_train, sizeof set_train, "data.train=%s", g_path);
    snprintf(set_eval, sizeof set_eval, "data.eval=%s", g_path);
    expect_resolve_fail(set_train, set_eval, "data.eval and data.train are the same file");
    tu_write_bytes(g_path, "x", 1);
    const char *link = tu_path("link.yaml");
    assert_int_equal(symlink(g_path, link), 0);
    snprintf(set_eval, sizeof set_eval, "data.eval=%s", link);
    expect_resolve_fail(set_train, set_eval, "data.eval and data.train are the same file");
    unlink(link);
    const char *fifo = tu_path("fifo");
    assert_int_equal(mkfifo(fifo, 0600), 0);
    snprintf(set_vocab, sizeof set_vocab, "data.vocab=%s", fifo);
    expect_resolve_fail(set_vocab, NULL, "is not a regular file");
    unlink(fifo);
    snprintf(set_vocab, sizeof set_vocab, "data.vocab=%s", g_dir);
    expect_resolve_fail(set_vocab, NULL, "is not a regular file");
    unlink(g_path);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_truncated, setup, tu_dir_teardown_clean),
        cmocka_unit_test_setup_teardown(test_garbled, setup, tu_dir_teardown_clean),
        cmocka_unit_test_setup_teardown(test_deep_nesting, setup, tu_dir_teardown_clean),
        cmocka_unit_test_setup_teardown(test_huge_numbers, setup, tu_dir_teardown_clean),
        cmocka_unit_test_setup_teardown(test_anchors_aliases, setup, tu_dir_teardown_clean),
        cmocka_unit_test_setup_teardown(test_binary_bytes, setup, tu_dir_teardown_clean),
        cmocka_unit_test_setup_teardown(test_long_keys_and_values, setup, tu_dir_teardown_clean),
        cmocka_unit_test_setup_teardown(test_documents_and_files, setup, tu_dir_teardown_clean),
        cmocka_unit_test_setup_teardown(test_hostile_overrides, setup, tu_dir_teardown_clean),
        cmocka_unit_test_setup_teardown(test_hostile_paths, setup, tu_dir_teardown_clean),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
