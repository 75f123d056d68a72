/* Unit tests for prepare_run (prepare.c) and the text-file line reader it shares with the vocab
 * builder (textfile.c): the eval split and its guarantees, dropped sentences and documents, gzip
 * input byte-identical to plain text, a truncated .gz refused with nothing written, the 1% invalid
 * UTF-8 rule on both sides of the line, a vocab built by a failing run removed again, and the
 * reader and the vocab trainer agreeing on what a line is (CRLF, no final newline, a line longer
 * than the reader's buffer).
 *
 * The vocab: [PAD] [UNK] [CLS] [SEP] [MASK] (ids 0-4), then words "a0".."a999" (ids 5..1004), so
 * every word "aK" of the test text is exactly one token. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"
#include "config.h"
#include "prepare.h"
#include "rng.h"
#include "testutil.h"
#include "textfile.h"
#include "tokenizer.h"

#define N_WORDS 1000

static char g_vocab[192];
static Config g_cfg;
static PrepareReport g_rep;

static int group_setup(void **state) {
    (void)state;
    if (tu_dir_create("prepare", NULL) != 0) return -1;
    snprintf(g_vocab, sizeof g_vocab, "%s/vocab.txt", g_dir);
    FILE *f = fopen(g_vocab, "w");
    if (!f) return -1;
    fputs("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n", f);
    for (int i = 0; i < N_WORDS; i++) fprintf(f, "a%d\n", i);
    return fclose(f);
}

/* ------------------------------------------------------------------------------------------ */
/* helpers                                                                                     */

static bool exists(const char *path) { return access(path, F_OK) == 0; }

/* no "*.tmp.*" file left in the test directory */
static bool no_temporaries(void) {
    DIR *d = opendir(g_dir);
    assert_non_null(d);
    bool clean = true;
    for (struct dirent *e; (e = readdir(d));) clean &= strstr(e->d_name, ".tmp.") == NULL;
    closedir(d);
    return clean;
}

/* A config for prepare: the given inputs, shards "<tag>.train" / "<tag>.eval", the test vocab. */
static Config *cfg_for(const char *tag, double eval_fraction, int n_inputs, const char *const *inputs) {
    Config *c = &g_cfg;
    config_defaults(c);
    snprintf(c->data.vocab, CFG_PATH_MAX, "%s", g_vocab);
    for (int i = 0; i < n_inputs; i++) snprintf(c->data.input[i], CFG_PATH_MAX, "%s", inputs[i]);
    c->data.n_input = n_inputs;
    snprintf(c->data.train, CFG_PATH_MAX, "%s/%s.train", g_dir, tag);
    snprintf(c->data.eval, CFG_PATH_MAX, "%s/%s.eval", g_dir, tag);
    c->data.eval_fraction = eval_fraction;
    c->data.lowercase = true;
    c->training.seed = 1234;
    return c;
}

static int run_prepare(const Config *c, BpError *err) {
    PrepareOptions opt = {.progress = NULL};
    memset(err, 0, sizeof *err);
    return prepare_run(c, &opt, &g_rep, err);
}

/* A corpus of n_docs documents: document d has d % 3 + 1 sentences of d % 4 + 2 words "aK"; blank
 * lines between documents. *doc_tokens (if non-NULL) gets each document's token count. */
static size_t make_corpus(char *buf, size_t cap, int n_docs, size_t *doc_tokens) {
    size_t n = 0;
    int w = 0;
    for (int d = 0; d < n_docs; d++) {
        size_t toks = 0;
        for (int s = 0; s < d % 3 + 1; s++) {
            for (int k = 0; k < d % 4 + 2; k++, toks++)
                n += (size_t)snprintf(buf + n, cap - n, "%sa%d", k ? " " : "", w++ % N_WORDS);
            n += (size_t)snprintf(buf + n, cap - n, ".\n"); /* '.' is not in the vocab: one [UNK] */
            toks++;
        }
        if (doc_tokens) doc_tokens[d] = toks;
        n += (size_t)snprintf(buf + n, cap - n, "\n");
        assert_true(n < cap);
    }
    return n;
}

/* ------------------------------------------------------------------------------------------ */
/* the eval split                                                                              */

/* Document k goes to eval exactly when rng_u01d(rng_hash(seed, RNG_SPLIT, k, 0)) < fraction: the
 * shard's counts match that rule computed here. */
static void test_eval_split_follows_the_hash(void **state) {
    (void)state;
    static char text[1 << 16];
    const int n_docs = 60;
    size_t doc_tokens[60], total = 0;
    size_t len = make_corpus(text, sizeof text, n_docs, doc_tokens);
    const char *in = tu_path("split.txt");
    tu_write_bytes(in, text, len);
    const double frac = 0.3;
    Config *c = cfg_for("split", frac, 1, &in);
    BpError err;
    assert_int_equal(run_prepare(c, &err), 0);

    long want_eval = 0;
    size_t want_eval_tokens = 0;
    for (int k = 0; k < n_docs; k++) {
        total += doc_tokens[k];
        if (rng_u01d(rng_hash(c->training.seed, RNG_SPLIT, (uint64_t)k, 0)) < frac) {
            want_eval++;
            want_eval_tokens += doc_tokens[k];
        }
    }
    assert_true(want_eval > 0 && want_eval < n_docs); /* the rule itself picked some: no fallback */
    assert_int_equal(g_rep.documents, n_docs);
    assert_int_equal(g_rep.eval.documents, want_eval);
    assert_int_equal(g_rep.train.documents, n_docs - want_eval);
    assert_int_equal(g_rep.eval.tokens, want_eval_tokens);
    assert_int_equal(g_rep.train.tokens + g_rep.eval.tokens, total);
    assert_int_equal(g_rep.tokens, total);
    assert_int_equal(g_rep.train.sentences + g_rep.eval.sentences, (size_t)g_rep.sentences);
    assert_true(g_rep.train.bytes > 0 && g_rep.eval.bytes > 0);
    assert_true(exists(c->data.train) && exists(c->data.eval));
    assert_false(g_rep.vocab_built);
    assert_int_equal(g_rep.vocab_size, 5 + N_WORDS);
}

/* A fraction so small that no hash falls below it still holds out one document: the last one,
 * which was held back from the train shard. */
static void test_tiny_fraction_holds_out_the_last_document(void **state) {
    (void)state;
    static char text[1 << 14];
    size_t doc_tokens[7];
    size_t len = make_corpus(text, sizeof text, 7, doc_tokens);
    const char *in = tu_path("tiny.txt");
    tu_write_bytes(in, text, len);
    Config *c = cfg_for("tiny", 1e-12, 1, &in);
    for (int k = 0; k < 7; k++) /* the premise: the rule picks none */
        assert_false(rng_u01d(rng_hash(c->training.seed, RNG_SPLIT, (uint64_t)k, 0)) < 1e-12);
    BpError err;
    assert_int_equal(run_prepare(c, &err), 0);
    assert_int_equal(g_rep.eval.documents, 1);
    assert_int_equal(g_rep.train.documents, 6);
    assert_int_equal(g_rep.eval.tokens, doc_tokens[6]);
    assert_int_equal(g_rep.eval.sentences, 6 % 3 + 1);
}

/* Refused with a usage error and nothing written: one document cannot be split; a fraction that
 * sends every document to eval leaves no train shard. */
static void test_split_refusals(void **state) {
    (void)state;
    static char text[1 << 14];
    size_t len = make_corpus(text, sizeof text, 1, NULL);
    const char *one = tu_path("one.txt");
    tu_write_bytes(one, text, len);
    Config *c = cfg_for("one", 0.5, 1, &one);
    BpError err;
    assert_int_equal(run_prepare(c, &err), -1);
    assert_int_equal(err.kind, BP_ERR_USAGE);
    assert_non_null(strstr(err.msg, "the inputs hold 1 document(s)"));
    assert_non_null(strstr(err.msg, "needs at least 2"));
    assert_false(exists(c->data.train));
    assert_false(exists(c->data.eval));

    len = make_corpus(text, sizeof text, 5, NULL);
    const char *five = tu_path("five.txt");
    tu_write_bytes(five, text, len);
    c = cfg_for("all", 1.0, 1, &five); /* every u01 draw is below 1 */
    assert_int_equal(run_prepare(c, &err), -1);
    assert_int_equal(err.kind, BP_ERR_USAGE);
    assert_non_null(strstr(err.msg, "all 5 documents fell to the eval share"));
    assert_false(exists(c->data.train));
    assert_false(exists(c->data.eval));
    assert_true(no_temporaries());

    /* fraction 0: everything to train, no eval shard */
    c = cfg_for("none", 0.0, 1, &one);
    assert_int_equal(run_prepare(c, &err), 0);
    assert_int_equal(g_rep.train.documents, 1);
    assert_int_equal(g_rep.eval.path[0], '\0');
    assert_false(exists(c->data.eval));
}

/* ------------------------------------------------------------------------------------------ */
/* counting                                                                                    */

/* A line of control characters tokenizes to nothing (a dropped sentence); a document of only such
 * lines is a dropped document; whitespace-only lines end documents; a file's end ends one too. */
static void test_dropped_sentences_and_documents(void **state) {
    (void)state;
    const char a[] = "a1 a2\n\x01\x02\n a3 \n\n\x03\x04\n\x05\n \t \na4 a5 a6\n";
    const char b[] = "a7\n\x06";
    const char *in[2] = {tu_path("drop_a.txt"), tu_path("drop_b.txt")};
    tu_write_bytes(in[0], a, sizeof a - 1);
    tu_write_bytes(in[1], b, sizeof b - 1);
    Config *c = cfg_for("drop", 0.0, 2, in);
    BpError err;
    assert_int_equal(run_prepare(c, &err), 0);
    assert_int_equal(g_rep.files, 2);
    assert_int_equal(g_rep.lines, 8);             /* non-blank lines */
    assert_int_equal(g_rep.sentences, 4);         /* "a1 a2", "a3", "a4 a5 a6", "a7" */
    assert_int_equal(g_rep.sentences_dropped, 4); /* \x01\x02, \x03\x04, \x05, \x06 */
    assert_int_equal(g_rep.documents, 3);
    assert_int_equal(g_rep.documents_dropped, 1); /* \x03\x04 \x05 */
    assert_int_equal(g_rep.tokens, 7);
    assert_int_equal(g_rep.unk_tokens, 0);
    assert_int_equal(g_rep.text_bytes, sizeof a - 1 + sizeof b - 1);
    assert_int_equal(g_rep.train.documents, 3);
    assert_int_equal(g_rep.train.sentences, 4);
}

/* ------------------------------------------------------------------------------------------ */
/* gzip                                                                                        */

static void test_gzip_equals_plain_text(void **state) {
    (void)state;
    static char text[1 << 16];
    size_t len = make_corpus(text, sizeof text, 40, NULL);
    const char *txt = tu_path("g.txt"), *gz = tu_path("g.txt.gz");
    tu_write_bytes(txt, text, len);
    tu_write_gz(gz, text, len);
    BpError err;
    Config *c = cfg_for("plain", 0.25, 1, &txt);
    assert_int_equal(run_prepare(c, &err), 0);
    PrepareReport plain = g_rep;
    c = cfg_for("gz", 0.25, 1, &gz);
    assert_int_equal(run_prepare(c, &err), 0);
    assert_true(tu_same_bytes(tu_path("plain.train"), tu_path("gz.train")));
    assert_true(tu_same_bytes(tu_path("plain.eval"), tu_path("gz.eval")));
    assert_int_equal(g_rep.text_bytes, plain.text_bytes);
    assert_int_equal(g_rep.text_bytes, len);
    assert_int_equal(g_rep.tokens, plain.tokens);
    assert_int_equal(g_rep.eval.documents, plain.eval.documents);
}

/* A gzip stream cut short: an error naming the file and the offsets, nothing written, and shards of
 * an earlier run left as they were. */
static void test_truncated_gz_refused(void **state) {
    (void)state;
    static char text[1 << 16];
    size_t len = make_corpus(text, sizeof text, 40, NULL);
    const char *full = tu_path("cut_full.gz"), *cut = tu_path("cut.gz");
    tu_write_gz(full, text, len);
    size_t n;
    uint8_t *z = tu_read_bytes(full, &n);
    tu_write_bytes(cut, z, n / 2);
    free(z);
    BpError err = {0};

    const char *good = tu_path("cut_good.txt");
    tu_write_bytes(good, text, len);
    Config *c = cfg_for("cut", 0.25, 1, &good);
    assert_int_equal(run_prepare(c, &err), 0); /* an earlier run's shards */
    const char *keep = tu_path("cut_keep.train");
    assert_int_equal(rename(c->data.train, keep), 0);
    assert_int_equal(link(keep, c->data.train), 0);

    const char *in[2] = {good, cut};
    c = cfg_for("cut", 0.25, 2, in);
    assert_int_equal(run_prepare(c, &err), -1);
    assert_non_null(strstr(err.msg, cut));
    assert_non_null(strstr(err.msg, "read error after"));
    assert_non_null(strstr(err.msg, "of the file"));
    assert_true(tu_same_bytes(c->data.train, keep));
    assert_true(no_temporaries());

    c = cfg_for("cut_only", 0.0, 1, &cut); /* no earlier run: nothing at all */
    assert_int_equal(run_prepare(c, &err), -1);
    assert_false(exists(c->data.train));
    assert_true(no_temporaries());
}

/* ------------------------------------------------------------------------------------------ */
/* the 1% invalid UTF-8 rule                                                                   */

/* A 1000-byte file of lines "a1 a2 a3\xff\n" (bad of them with the \xff) padded with valid lines. */
static void write_with_invalid(const char *path, int bad) {
    char text[1000];
    size_t n = 0;
    for (int i = 0; i < bad; i++) n += (size_t)snprintf(text + n, sizeof text - n, "a1 a2 a3\xff\n");
    while (sizeof text - n > 12) n += (size_t)snprintf(text + n, sizeof text - n, "a4 a5 a6 a7\n");
    memset(text + n, ' ', sizeof text - n); /* a last line of spaces without a newline */
    tu_write_bytes(path, text, sizeof text);
}

static void test_invalid_utf8_rule(void **state) {
    (void)state;
    const char *under = tu_path("utf_under.txt"), *over = tu_path("utf_over.txt");
    write_with_invalid(under, 10); /* 10 of 1000 bytes: exactly 1%, accepted */
    write_with_invalid(over, 11);
    BpError err;
    Config *c = cfg_for("utf_under", 0.0, 1, &under);
    assert_int_equal(run_prepare(c, &err), 0);
    assert_int_equal(g_rep.invalid_utf8_lines, 10);
    assert_int_equal(g_rep.text_bytes, 1000);
    assert_int_equal(g_rep.tokens, 10 * 3 + (size_t)(g_rep.sentences - 10) * 4);

    c = cfg_for("utf_over", 0.0, 1, &over);
    assert_int_equal(run_prepare(c, &err), -1);
    assert_non_null(strstr(err.msg, over));
    assert_non_null(strstr(err.msg, "not UTF-8 text: 11 of 1000 bytes (in 11 of"));
    assert_non_null(strstr(err.msg, "the first at line 1. HINT: convert it, e.g. iconv"));
    assert_false(exists(c->data.train));

    /* the vocab builder applies the same rule through the same reader */
    const char *v = tu_path("utf_vocab.txt");
    VocabBuildOptions vo = {.size = 100, .lowercase = true, .min_count = 2};
    assert_int_equal(vocab_build_opts(&under, 1, &vo, v, &err), 0);
    assert_int_equal(vocab_build_opts(&over, 1, &vo, tu_path("utf_vocab2.txt"), &err), -1);
    assert_non_null(strstr(err.msg, "not UTF-8 text: 11 of 1000 bytes"));
    assert_false(exists(tu_path("utf_vocab2.txt")));
}

/* ------------------------------------------------------------------------------------------ */
/* the vocab                                                                                   */

/* Built when missing (and kept on success); removed again when the run fails after building it. */
static void test_vocab_built_and_removed(void **state) {
    (void)state;
    static char text[1 << 16];
    size_t len = make_corpus(text, sizeof text, 20, NULL);
    const char *good = tu_path("v_good.txt"), *blank = tu_path("v_blank.txt");
    tu_write_bytes(good, text, len);
    tu_write_bytes(blank, "\n  \n\t\n", 6);
    const char *new_vocab = tu_path("v_new_vocab.txt");

    const char *in[2] = {good, blank};
    Config *c = cfg_for("v_fail", 0.25, 2, in);
    snprintf(c->data.vocab, CFG_PATH_MAX, "%s", new_vocab);
    c->data.vocab_size = 60;
    BpError err;
    assert_int_equal(run_prepare(c, &err), -1);
    assert_non_null(strstr(err.msg, blank));
    assert_non_null(strstr(err.msg, "no text"));
    assert_false(exists(new_vocab)); /* built, then removed */
    assert_false(exists(c->data.train));
    assert_true(no_temporaries());

    c = cfg_for("v_ok", 0.25, 1, &good);
    snprintf(c->data.vocab, CFG_PATH_MAX, "%s", new_vocab);
    c->data.vocab_size = 60;
    assert_int_equal(run_prepare(c, &err), 0);
    assert_true(g_rep.vocab_built);
    assert_true(exists(new_vocab));
    assert_true(g_rep.vocab_size > 5 && g_rep.vocab_size <= 60);
    assert_string_equal(g_rep.vocab, new_vocab);

    /* a failing run with the vocab present leaves it alone */
    c = cfg_for("v_keep", 0.25, 2, in);
    snprintf(c->data.vocab, CFG_PATH_MAX, "%s", new_vocab);
    assert_int_equal(run_prepare(c, &err), -1);
    assert_true(exists(new_vocab));
}

/* ------------------------------------------------------------------------------------------ */
/* the line reader                                                                             */

typedef struct {
    char **lines;
    size_t n;
} Lines;

static Lines read_lines(const char *path, TextFileStats *st) {
    BpError err = {0};
    TextFile *tf = textfile_open(path, &err);
    assert_non_null(tf);
    Lines l = {calloc(64, sizeof(char *)), 0};
    char *line;
    size_t len;
    int got;
    while ((got = textfile_next(tf, &line, &len, &err)) > 0) {
        assert_true(l.n < 64);
        assert_int_equal(strlen(line), len); /* NUL-terminated, no NUL inside in these files */
        l.lines[l.n++] = strdup(line);
    }
    assert_int_equal(got, 0);
    assert_int_equal(textfile_next(tf, &line, &len, &err), 0); /* the end stays the end */
    assert_true(textfile_fraction_read(tf) == 1.0);
    *st = *textfile_stats(tf);
    textfile_close(tf);
    return l;
}

static void lines_free(Lines *l) {
    for (size_t i = 0; i < l->n; i++) free(l->lines[i]);
    free(l->lines);
}

static void test_reader_lines(void **state) {
    (void)state;
    const char *p = tu_path("r_lines.txt");
    const char text[] = "one\r\ntwo\n\r\n\nthree\rx\nlast";
    tu_write_bytes(p, text, sizeof text - 1);
    TextFileStats st;
    Lines l = read_lines(p, &st);
    const char *want[] = {"one", "two", "", "", "three\rx", "last"};
    assert_int_equal(l.n, 6);
    for (size_t i = 0; i < 6; i++) assert_string_equal(l.lines[i], want[i]);
    assert_int_equal(st.lines, 6);
    assert_int_equal(st.bytes, sizeof text - 1);
    assert_int_equal(st.bad_bytes, 0);
    assert_int_equal(st.first_bad_line, 0);
    lines_free(&l);

    tu_write_bytes(p, "\n", 1); /* one empty line; an empty file has none */
    l = read_lines(p, &st);
    assert_int_equal(l.n, 1);
    lines_free(&l);
    tu_write_bytes(p, "", 0);
    l = read_lines(p, &st);
    assert_int_equal(l.n, 0);
    assert_int_equal(st.bytes, 0);
    lines_free(&l);
}

/* 3 invalid bytes in 18: counted per line (the first line and byte recorded), then refused. */
static void test_reader_refuses_and_counts(void **state) {
    (void)state;
    const char *p = tu_path("r_bad.txt");
    const char bad[] = "ok\ncaf\xe9 \xff\nfine\nx\xc3\n";
    tu_write_bytes(p, bad, sizeof bad - 1);
    BpError err = {0};
    TextFile *tf = textfile_open(p, &err);
    assert_non_null(tf);
    char *line;
    size_t len;
    int got, lines = 0;
    while ((got = textfile_next(tf, &line, &len, &err)) > 0) lines++;
    assert_int_equal(got, -1);
    assert_int_equal(lines, 4);
    const TextFileStats *st = textfile_stats(tf);
    assert_int_equal(st->bad_bytes, 3);
    assert_int_equal(st->bad_lines, 2);
    assert_int_equal(st->first_bad_line, 2);
    assert_int_equal(st->first_bad_byte, 6); /* "ok\ncaf" */
    assert_non_null(strstr(err.msg, "not UTF-8 text: 3 of 18 bytes (in 2 of 4 lines)"));
    assert_non_null(strstr(err.msg, "the first at line 2"));
    char note[128];
    assert_string_equal(textfile_invalid_note(st, note, sizeof note),
                        "3 invalid UTF-8 byte(s) in 2 line(s) (the first at line 2) are dropped");
    textfile_close(tf);

    tf = textfile_open(g_dir, &err); /* a directory */
    assert_null(tf);
    assert_non_null(strstr(err.msg, "input is not a regular file"));
    assert_null(textfile_open(tu_path("r_missing.txt"), &err));
    assert_non_null(strstr(err.msg, "r_missing.txt: cannot open input: No such file"));
}

/* The whole file as far as textfile_next goes: -1 with the message in err, or 0 and the lines. */
static int read_all(const char *path, size_t *lines, BpError *err) {
    TextFile *tf = textfile_open(path, err);
    if (!tf) return -1;
    char *line;
    size_t len;
    int got;
    *lines = 0;
    while ((got = textfile_next(tf, &line, &len, err)) > 0) ++*lines;
    textfile_close(tf);
    return got;
}

static void expect_read_refused(const char *path, const char *want) {
    BpError err = {0};
    size_t lines;
    if (read_all(path, &lines, &err) == 0) fail_msg("%s: read %zu lines, expected \"%s\"", path, lines, want);
    if (!strstr(err.msg, path) || !strstr(err.msg, want)) fail_msg("message \"%s\" lacks the path or \"%s\"", err.msg, want);
}

/* What zlib's gzread accepted silently: plain text named .gz, bytes after the last gzip member;
 * and a FIFO, on which open() waited for a writer forever. Several members in a row stay valid. */
static void test_reader_hostile_files(void **state) {
    (void)state;
    const char *p = tu_path("h_plain.txt.gz");
    tu_write_bytes(p, "just text\n", 10);
    expect_read_refused(p, "named .gz but not gzip-compressed (no gzip magic 1f 8b)");
    tu_write_bytes(p, "", 0);
    expect_read_refused(p, "named .gz but not gzip-compressed (shorter than a gzip header)");

    const char *a = tu_path("h_a.gz"), *cat = tu_path("h_cat.gz");
    tu_write_gz(a, "one\ntwo\n", 8);
    size_t na;
    uint8_t *ga = tu_read_bytes(a, &na);
    uint8_t *two = malloc(2 * na + 16);
    memcpy(two, ga, na);
    memcpy(two + na, ga, na);
    tu_write_bytes(cat, two, 2 * na);
    BpError err = {0};
    size_t lines;
    if (read_all(cat, &lines, &err) != 0) fail_msg("%s", err.msg);
    assert_int_equal(lines, 4);
    memcpy(two + na, "garbage!", 8);
    tu_write_bytes(cat, two, na + 8);
    expect_read_refused(cat, "trailing data after the end of the gzip stream");
    char msg[64];
    snprintf(msg, sizeof msg, "after 8 bytes of text (at byte %zu of the file)", na);
    expect_read_refused(cat, msg);
    memset(two + na, 0, 8); /* zero padding is data all the same */
    tu_write_bytes(cat, two, na + 8);
    expect_read_refused(cat, "trailing data");
    free(ga);
    free(two);

    const char *fifo = tu_path("h_fifo");
    assert_int_equal(mkfifo(fifo, 0600), 0);
    double t0 = bp_now();
    expect_read_refused(fifo, "input is not a regular file");
    assert_true(bp_now() - t0 < 5.0);
    expect_read_refused("/dev/null", "input is not a regular file");
}

/* The same text written three ways (LF with a final newline; CRLF without one; gzip) gives the same
 * lines to the reader, the same vocab to the trainer and the same shards to prepare, also with a
 * line of 3 MB (several times the reader's buffer) whose last word carries a character seen nowhere
 * else: the vocab has it, so the trainer read the line to its end. */
static void test_reader_and_vocab_trainer_agree(void **state) {
    (void)state;
    const size_t long_words = 600000; /* "a12 " x 600000 = 2.4 MB, + "a7 zz\xc3\x9f" */
    size_t cap = long_words * 4 + 4096;
    char *lf = malloc(cap), *crlf = malloc(cap + 64);
    assert_non_null(lf);
    assert_non_null(crlf);
    const char *lines[] = {"a1 a2 a3", "a4 a5", "", "a6 a6 a6", NULL /* the long line */, "a8 a9 tail"};
    size_t n_lf = 0, n_crlf = 0;
    for (size_t i = 0; i < BP_ARRAY_LEN(lines); i++) {
        if (lines[i]) {
            n_lf += (size_t)sprintf(lf + n_lf, "%s\n", lines[i]);
            n_crlf += (size_t)sprintf(crlf + n_crlf, "%s%s", lines[i], i + 1 < BP_ARRAY_LEN(lines) ? "\r\n" : "");
            continue;
        }
        for (size_t k = 0; k < long_words; k++) {
            memcpy(lf + n_lf, "a12 ", 4);
            memcpy(crlf + n_crlf, "a12 ", 4);
            n_lf += 4;
            n_crlf += 4;
        }
        n_lf += (size_t)sprintf(lf + n_lf, "a7 zz\xc3\x9f\n");
        n_crlf += (size_t)sprintf(crlf + n_crlf, "a7 zz\xc3\x9f\r\n");
    }
    const char *p_lf = tu_path("agree_lf.txt"), *p_crlf = tu_path("agree_crlf.txt"),
               *p_gz = tu_path("agree_crlf.txt.gz");
    tu_write_bytes(p_lf, lf, n_lf);
    tu_write_bytes(p_crlf, crlf, n_crlf);
    tu_write_gz(p_gz, crlf, n_crlf);

    TextFileStats s1, s2, s3;
    Lines l1 = read_lines(p_lf, &s1), l2 = read_lines(p_crlf, &s2), l3 = read_lines(p_gz, &s3);
    assert_int_equal(l1.n, BP_ARRAY_LEN(lines));
    assert_int_equal(l2.n, l1.n);
    assert_int_equal(l3.n, l1.n);
    for (size_t i = 0; i < l1.n; i++) {
        assert_string_equal(l1.lines[i], l2.lines[i]);
        assert_string_equal(l1.lines[i], l3.lines[i]);
    }
    assert_int_equal(strlen(l1.lines[4]), long_words * 4 + strlen("a7 zz\xc3\x9f"));
    assert_string_equal(l1.lines[5], "a8 a9 tail");
    assert_int_equal(s1.bytes, n_lf);
    assert_int_equal(s2.bytes, n_crlf);
    assert_int_equal(s3.bytes, n_crlf);
    lines_free(&l1);
    lines_free(&l2);
    lines_free(&l3);

    BpError err;
    const char *v1 = tu_path("agree_v1.txt"), *v2 = tu_path("agree_v2.txt"), *v3 = tu_path("agree_v3.txt");
    VocabBuildOptions vo = {.size = 200, .lowercase = true, .min_count = 1};
    assert_int_equal(vocab_build_opts(&p_lf, 1, &vo, v1, &err), 0);
    assert_int_equal(vocab_build_opts(&p_crlf, 1, &vo, v2, &err), 0);
    assert_int_equal(vocab_build_opts(&p_gz, 1, &vo, v3, &err), 0);
    assert_true(tu_same_bytes(v1, v2));
    assert_true(tu_same_bytes(v1, v3));
    BpError e2 = {0};
    Tokenizer *t = tokenizer_load(v1, true, &e2);
    assert_non_null(t);
    assert_true(tokenizer_id(t, "##\xc3\x9f") >= 0); /* the long line's last character */
    assert_true(tokenizer_id(t, "##l") >= 0);          /* only in the unterminated last line */
    tokenizer_free(t);

    Config *c = cfg_for("agree_lf", 0.0, 1, &p_lf);
    assert_int_equal(run_prepare(c, &err), 0);
    size_t tokens = g_rep.tokens;
    assert_int_equal(g_rep.sentences, 5);
    assert_int_equal(g_rep.documents, 2);
    c = cfg_for("agree_crlf", 0.0, 1, &p_crlf);
    assert_int_equal(run_prepare(c, &err), 0);
    assert_int_equal(g_rep.tokens, tokens);
    assert_true(tu_same_bytes(tu_path("agree_lf.train"), tu_path("agree_crlf.train")));
    free(lf);
    free(crlf);
}

/* ------------------------------------------------------------------------------------------ */
/* input formats, directories and patterns, threads                                            */

typedef struct {
    char out[1024];
    int n;
} Collected;

static int collect(void *ctx, const char *s, size_t n) {
    Collected *c = ctx;
    size_t at = strlen(c->out);
    snprintf(c->out + at, sizeof c->out - at, "%s%.*s", c->n++ ? "|" : "", (int)n, s);
    return 0;
}

/* The expected sentences are what scripts/wiki_to_text.py's sentences() gives for the same text. */
static void test_sentence_rule(void **state) {
    (void)state;
    const char *t = "He paid 3.5 million. The U.S. Army won in Jan. 1990. See pp. 12 and No. 5 here. J. R. R. "
                    "Tolkien wrote it! \"Really?\" She left... (Then) it rained. Dr. Who? e.g. This. "
                    "\xc3\x89l habl\xc3\xb3. ok. 3 times";
    Collected c = {"", 0};
    assert_int_equal(text_split_sentences(t, strlen(t), collect, &c), 0);
    assert_string_equal(c.out, "He paid 3.5 million.|The U.S. Army won in Jan. 1990.|See pp. 12 and No. 5 here.|"
                               "J. R. R. Tolkien wrote it!|\"Really?\"|She left...|(Then) it rained.|"
                               "Dr. Who? e.g. This.|\xc3\x89l habl\xc3\xb3. ok.|3 times");
    Collected d = {"", 0};
    assert_int_equal(text_split_sentences("  ... !! ", 9, collect, &d), 0);
    assert_int_equal(d.n, 0); /* no letter or digit: nothing */
}

/* JSONL: escapes decoded (\u with a surrogate pair too), other keys of any shape skipped, a "text"
 * key nested in another value not taken, the text split at its newlines and by the sentence rule,
 * one record one document; the shards equal those of the same text in the lines format, and .gz
 * JSONL equals plain JSONL. */
static void test_jsonl_equals_lines(void **state) {
    (void)state;
    const char *jsonl =
        "{\"id\": 1, \"meta\": {\"text\": 5, \"x\": [1, -2.5e3, true, null, {\"a\": \"}\"}]}, \"text\": "
        "\"\\u00611 a2. A3 a4.\\nA5 \\\"a6\\\"\\ta7 \\ud83d\\ude00.\"}\n"
        "\n"
        "{\"text\": \"a8 a9 a10.\", \"text2\": \"a11\"}\r\n"
        "{\"text\": \"ignored\", \"text\": \"A12 a13. A14.\"}\n";
    const char *lines = "a1 a2.\nA3 a4.\nA5 \"a6\"\ta7 \xf0\x9f\x98\x80.\n\na8 a9 a10.\n\nA12 a13.\nA14.\n";
    const char *j = tu_path("f.jsonl"), *jgz = tu_path("f.jsonl.gz"), *l = tu_path("f.txt");
    tu_write_bytes(j, jsonl, strlen(jsonl));
    tu_write_gz(jgz, jsonl, strlen(jsonl));
    tu_write_bytes(l, lines, strlen(lines));
    BpError err;
    Config *c = cfg_for("fl", 0, 1, &l);
    assert_int_equal(run_prepare(c, &err), 0);
    assert_int_equal(g_rep.sentences, 6);
    c = cfg_for("fj", 0, 1, &j);
    c->data.input_format = TEXT_FORMAT_JSONL;
    assert_int_equal(run_prepare(c, &err), 0);
    assert_int_equal(g_rep.documents, 3);
    assert_int_equal(g_rep.sentences, 6);
    assert_int_equal(g_rep.records, 3);
    assert_int_equal(g_rep.bad_records, 0);
    assert_true(tu_same_bytes(tu_path("fl.train"), tu_path("fj.train")));
    c = cfg_for("fz", 0, 1, &jgz);
    c->data.input_format = TEXT_FORMAT_JSONL;
    assert_int_equal(run_prepare(c, &err), 0);
    assert_true(tu_same_bytes(tu_path("fj.train"), tu_path("fz.train")));
}

/* Bad records (not JSON, truncated, the field missing, the field not a string, trailing data) are
 * skipped and counted with the first one's file:line; above data.max_bad_records they are an error
 * and nothing is written. */
static void test_jsonl_bad_records(void **state) {
    (void)state;
    static char text[1 << 16];
    size_t n = 0;
    const char *bad[5] = {"not json at all", "{\"text\": \"a1 a2.\"", "{\"body\": \"a1.\"}", "{\"text\": 7}",
                          "{\"text\": \"a1.\"} x"};
    for (int r = 0; r < 200; r++) {
        if (r % 40 == 6) n += (size_t)snprintf(text + n, sizeof text - n, "%s\n", bad[r / 40]);
        else n += (size_t)snprintf(text + n, sizeof text - n, "{\"text\": \"a%d a%d.\"}\n", r, r + 1);
    }
    const char *in = tu_path("bad.jsonl");
    tu_write_bytes(in, text, n);
    BpError err;
    Config *c = cfg_for("bj", 0.1, 1, &in);
    c->data.input_format = TEXT_FORMAT_JSONL;
    c->data.max_bad_records = 0.05;
    assert_int_equal(run_prepare(c, &err), 0);
    assert_int_equal(g_rep.records, 200);
    assert_int_equal(g_rep.bad_records, 5);
    assert_int_equal(g_rep.documents, 195);
    char want[512];
    snprintf(want, sizeof want, "%s:7: not a JSON object", in);
    assert_string_equal(g_rep.first_bad, want);

    c->data.max_bad_records = 0.02; /* 5 of 200 = 2.5% */
    unlink(c->data.train);
    unlink(c->data.eval);
    assert_int_equal(run_prepare(c, &err), -1);
    assert_non_null(strstr(err.msg, "5 of 200 JSONL records are bad"));
    assert_non_null(strstr(err.msg, want));
    assert_false(exists(c->data.train) || exists(c->data.eval));
    assert_true(no_temporaries());

    /* every record bad: the file has no text, and the message says why */
    const char *all = tu_path("allbad.jsonl");
    tu_write_bytes(all, "{\"body\": \"a1.\"}\n{\"body\": \"a2.\"}\n", 32);
    c = cfg_for("ab", 0, 1, &all);
    c->data.input_format = TEXT_FORMAT_JSONL;
    assert_int_equal(run_prepare(c, &err), -1);
    assert_non_null(strstr(err.msg, "2 bad record(s)"));
    assert_non_null(strstr(err.msg, "the field is missing"));
}

/* documents_per_line: each non-blank line a document, split by the sentence rule. */
static void test_documents_per_line(void **state) {
    (void)state;
    const char *dpl = "a1 a2. A3 a4? a5 a6.\n\n  \nMr. A7 a8. J. A9 a10.\n";
    const char *lines = "a1 a2.\nA3 a4? a5 a6.\n\nMr. A7 a8.\nJ. A9 a10.\n";
    const char *d = tu_path("d.txt"), *l = tu_path("dl.txt");
    tu_write_bytes(d, dpl, strlen(dpl));
    tu_write_bytes(l, lines, strlen(lines));
    BpError err;
    Config *c = cfg_for("dl", 0, 1, &l);
    assert_int_equal(run_prepare(c, &err), 0);
    c = cfg_for("dd", 0, 1, &d);
    c->data.input_format = TEXT_FORMAT_DOCS_PER_LINE;
    assert_int_equal(run_prepare(c, &err), 0);
    assert_int_equal(g_rep.documents, 2);
    assert_int_equal(g_rep.sentences, 4);
    assert_true(tu_same_bytes(tu_path("dl.train"), tu_path("dd.train")));
}

/* A directory expands to its files recursively in byte order (hidden files and the outputs
 * skipped), a pattern to its matches in byte order: the shards equal those of the explicit list,
 * and differ from those of another order (so the order is really checked). */
static void test_directory_and_glob_inputs(void **state) {
    (void)state;
    static char text[1 << 14];
    char dir[200], sub[200], names[4][240];
    snprintf(dir, sizeof dir, "%s/in", g_dir);
    snprintf(sub, sizeof sub, "%s/in/sub", g_dir);
    assert_int_equal(mkdir(dir, 0755), 0);
    assert_int_equal(mkdir(sub, 0755), 0);
    const char *leaf[4] = {"b.txt", "a.txt", "sub/c.txt", ".hidden.txt"};
    for (int k = 0; k < 4; k++) {
        snprintf(names[k], sizeof names[k], "%s/%s", dir, leaf[k]);
        size_t n = make_corpus(text, sizeof text, 5 + k, NULL);
        tu_write_bytes(names[k], text, n);
    }
    BpError err;
    const char *d = dir;
    Config *c = cfg_for("dir", 0, 1, &d);
    snprintf(c->data.train, CFG_PATH_MAX, "%s/in/dir.train", g_dir); /* an output inside: skipped */
    assert_int_equal(run_prepare(c, &err), 0);
    assert_int_equal(g_rep.files, 3);
    assert_int_equal(run_prepare(c, &err), 0); /* again, with the shard of the first run in the directory */
    assert_int_equal(g_rep.files, 3);
    const char *sorted[3] = {names[1], names[0], names[2]};
    c = cfg_for("list", 0, 3, sorted);
    assert_int_equal(run_prepare(c, &err), 0);
    assert_true(tu_same_bytes(tu_path("in/dir.train"), tu_path("list.train")));
    const char *other[3] = {names[0], names[1], names[2]};
    c = cfg_for("other", 0, 3, other);
    assert_int_equal(run_prepare(c, &err), 0);
    assert_false(tu_same_bytes(tu_path("list.train"), tu_path("other.train")));

    char pat[240];
    snprintf(pat, sizeof pat, "%s/*.txt", dir);
    const char *p = pat;
    c = cfg_for("glob", 0, 1, &p);
    assert_int_equal(run_prepare(c, &err), 0);
    assert_int_equal(g_rep.files, 2);
    c = cfg_for("list2", 0, 2, sorted);
    assert_int_equal(run_prepare(c, &err), 0);
    assert_true(tu_same_bytes(tu_path("glob.train"), tu_path("list2.train")));

    snprintf(pat, sizeof pat, "%s/*.none", dir);
    c = cfg_for("nomatch", 0, 1, &p);
    assert_int_equal(run_prepare(c, &err), -1);
    assert_non_null(strstr(err.msg, "no file matches this pattern"));
}

/* 1, 2 and 3 threads write the same shards byte for byte, over several blocks and in every format. */
static void test_threads_same_shards(void **state) {
    (void)state;
    const int n_docs = 50000; /* about 150k lines: more than one block of lines */
    size_t cap = (size_t)64 << 20;
    char *text = malloc(cap);
    assert_non_null(text);
    size_t len = make_corpus(text, cap, n_docs, NULL);
    const char *in = tu_path("thr.txt");
    tu_write_bytes(in, text, len);
    /* the same documents as JSONL: each document's sentences joined by "\n" */
    size_t jn = 0;
    char *j = malloc(cap);
    assert_non_null(j);
    jn += (size_t)snprintf(j, cap, "{\"text\": \"");
    for (size_t i = 0; i + 1 < len; i++) {
        if (text[i] == '\n' && text[i + 1] == '\n') {
            jn += (size_t)snprintf(j + jn, cap - jn, "\"}\n{\"text\": \"");
            i++;
        } else {
            jn += (size_t)snprintf(j + jn, cap - jn, text[i] == '\n' ? "\\n" : "%c", text[i]);
        }
    }
    jn += (size_t)snprintf(j + jn, cap - jn, "\"}\n");
    const char *jin = tu_path("thr.jsonl");
    tu_write_bytes(jin, j, jn);
    free(j);
    free(text);
    BpError err;
    const char *tags[2][3] = {{"t1", "t2", "t3"}, {"j1", "j2", "j3"}};
    for (int f = 0; f < 2; f++) {
        for (int t = 0; t < 3; t++) {
            Config *c = cfg_for(tags[f][t], 0.05, 1, f ? &jin : &in);
            c->data.input_format = f ? TEXT_FORMAT_JSONL : TEXT_FORMAT_LINES;
            c->training.threads = t + 1;
            assert_int_equal(run_prepare(c, &err), 0);
            assert_int_equal(g_rep.threads, t + 1);
            assert_int_equal(g_rep.documents, n_docs);
        }
        for (int t = 1; t < 3; t++) {
            char a[64], b[64];
            snprintf(a, sizeof a, "%s.train", tags[f][0]);
            snprintf(b, sizeof b, "%s.train", tags[f][t]);
            assert_true(tu_same_bytes(tu_path(a), tu_path(b)));
            snprintf(a, sizeof a, "%s.eval", tags[f][0]);
            snprintf(b, sizeof b, "%s.eval", tags[f][t]);
            assert_true(tu_same_bytes(tu_path(a), tu_path(b)));
        }
    }
    /* the JSONL (sentences split at the newlines; each "a1 a2." has no capital after it) equals the lines */
    assert_true(tu_same_bytes(tu_path("t1.train"), tu_path("j1.train")));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_eval_split_follows_the_hash),
        cmocka_unit_test(test_tiny_fraction_holds_out_the_last_document),
        cmocka_unit_test(test_split_refusals),
        cmocka_unit_test(test_dropped_sentences_and_documents),
        cmocka_unit_test(test_gzip_equals_plain_text),
        cmocka_unit_test(test_truncated_gz_refused),
        cmocka_unit_test(test_invalid_utf8_rule),
        cmocka_unit_test(test_vocab_built_and_removed),
        cmocka_unit_test(test_reader_lines),
        cmocka_unit_test(test_reader_refuses_and_counts),
        cmocka_unit_test(test_reader_hostile_files),
        cmocka_unit_test(test_reader_and_vocab_trainer_agree),
        cmocka_unit_test(test_sentence_rule),
        cmocka_unit_test(test_jsonl_equals_lines),
        cmocka_unit_test(test_jsonl_bad_records),
        cmocka_unit_test(test_documents_per_line),
        cmocka_unit_test(test_directory_and_glob_inputs),
        cmocka_unit_test(test_threads_same_shards),
    };
    return cmocka_run_group_tests(tests, group_setup, tu_dir_teardown);
}
