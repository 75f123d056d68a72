/* Unit tests for tokenizer.c: vocab loading and its errors, BERT's BasicTokenizer and WordPiece
 * rules on hand-written examples, agreement with the Python transcription of tokenization.py
 * (tests/fixtures/tokenizer/gen_reference.py) on sentences, random strings and every code point,
 * invalid UTF-8, and the vocab builder. Run from the repository root. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "testutil.h"
#include "tokenizer.h"

#define FIX "tests/fixtures/tokenizer/"

/* A growing string: what the tokenizer produced, joined by single spaces. */
typedef struct {
    char *s;
    size_t n, cap;
} Str;

static void str_add(Str *b, const char *s, size_t n) {
    if (b->n + n + 2 > b->cap) {
        b->cap = (b->n + n + 2) * 2;
        b->s = realloc(b->s, b->cap);
        assert_non_null(b->s);
    }
    if (b->n) b->s[b->n++] = ' ';
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = '\0';
}

static int collect_word(void *ctx, const char *word, size_t nbytes, size_t nchars) {
    assert_int_equal(strlen(word), nbytes);
    assert_true(nchars >= 1 && nchars <= nbytes);
    str_add(ctx, word, nbytes);
    return 0;
}

/* The basic words of text, space-joined (caller frees). */
static char *basic_words(const char *text, size_t len, bool lower) {
    Str b = {calloc(1, 1), 0, 1};
    BpError err = {0};
    assert_int_equal(tokenizer_basic(text, len, lower, collect_word, &b, &err), 0);
    return b.s;
}

/* The WordPiece pieces of text, space-joined (caller frees). */
static char *pieces(const Tokenizer *tok, const char *text, size_t len) {
    int32_t *ids = NULL;
    size_t n = 0, cap = 0;
    BpError err = {0};
    assert_int_equal(tokenizer_encode(tok, text, len, &ids, &n, &cap, &err), 0);
    Str b = {calloc(1, 1), 0, 1};
    for (size_t i = 0; i < n; i++) {
        const char *t = tokenizer_token(tok, ids[i]);
        assert_non_null(t);
        str_add(&b, t, strlen(t));
    }
    free(ids);
    return b.s;
}

static Tokenizer *load_small(bool lower) {
    BpError err = {0};
    Tokenizer *tok = tokenizer_load(FIX "vocab_small.txt", lower, &err);
    if (!tok) fail_msg("%s", err.msg);
    return tok;
}

#define EXPECT_PIECES(tok, text, want)                                                            \
    do {                                                                                          \
        char *got_ = pieces(tok, text, strlen(text));                                             \
        if (strcmp(got_, want)) fail_msg("text \"%s\": got \"%s\", want \"%s\"", text, got_, want); \
        free(got_);                                                                               \
    } while (0)

#define EXPECT_WORDS(text, len, lower, want)                                                      \
    do {                                                                                          \
        char *got_ = basic_words(text, len, lower);                                               \
        if (strcmp(got_, want)) fail_msg("text \"%s\": got \"%s\", want \"%s\"", text, got_, want); \
        free(got_);                                                                               \
    } while (0)

/* A scratch directory for a test that writes files: g_path is g_dir/vocab.txt. */
static int setup_scratch(void **state) {
    (void)state;
    return tu_dir_create("tok", "vocab.txt");
}

/* ------------------------------------------------------------------------------------------ */

static void test_load_and_lookup(void **state) {
    (void)state;
    Tokenizer *tok = load_small(true);
    assert_int_equal(tokenizer_vocab_size(tok), 241);
    SpecialIds sp = tokenizer_specials(tok);
    assert_int_equal(sp.pad, 0);
    assert_int_equal(sp.unk, 1);
    assert_int_equal(sp.cls, 2);
    assert_int_equal(sp.sep, 3);
    assert_int_equal(sp.mask, 4);
    int hello = tokenizer_id(tok, "hello");
    assert_true(hello > 4);
    assert_string_equal(tokenizer_token(tok, hello), "hello");
    assert_int_equal(tokenizer_id(tok, "nonexistent"), -1);
    assert_int_equal(tokenizer_id(tok, "aff"), -1); /* only "##aff" is there */
    int aff = tokenizer_id(tok, "##aff");
    assert_true(aff > 0 && tokenizer_is_continuation(tok, aff));
    assert_false(tokenizer_is_continuation(tok, hello));
    assert_null(tokenizer_token(tok, -1));
    assert_null(tokenizer_token(tok, 241));
    assert_true(tokenizer_lowercase(tok));
    size_t len = 0;
    uint8_t *raw = tu_read_bytes(FIX "vocab_small.txt", &len);
    assert_int_equal(tokenizer_vocab_crc(tok), bp_crc32(0, raw, len));
    free(raw);
    tokenizer_free(tok);
}

static void expect_load_error(const char *content, const char *want1, const char *want2) {
    const char *path = g_path;
    tu_write_bytes(path, content, strlen(content));
    BpError err = {0};
    Tokenizer *tok = tokenizer_load(path, true, &err);
    if (tok) fail_msg("vocab \"%s\" loaded; want an error with \"%s\"", content, want1);
    if (!strstr(err.msg, path) || !strstr(err.msg, want1) || (want2 && !strstr(err.msg, want2)))
        fail_msg("error \"%s\" should name %s and say \"%s\"", err.msg, path, want1);
}

static void test_vocab_errors(void **state) {
    (void)state;
    expect_load_error("[PAD]\n[CLS]\n[SEP]\n[MASK]\nhello\n", "no [UNK]", NULL);
    expect_load_error("[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n", "no [MASK]", NULL);
    expect_load_error("[UNK]\n[CLS]\n[SEP]\n[MASK]\n", "no [PAD]", NULL);
    expect_load_error("[PAD]\n[UNK]\n\n[CLS]\n[SEP]\n[MASK]\n", ":3: empty line", NULL);
    expect_load_error("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nab\ncd\nab\n", ":8: duplicate token 'ab'",
                      "line 6");
    expect_load_error("", "empty vocab", NULL);
    BpError err = {0};
    /* "a\0ain" would be stored as a token that tokenizer_token shows as "a" (fuzz_vocab found it) */
    static const char with_nul[] = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\na\na\0ain\n";
    tu_write_bytes(g_path, with_nul, sizeof with_nul - 1);
    assert_null(tokenizer_load(g_path, true, &err));
    if (!strstr(err.msg, ":7: NUL byte in a token")) fail_msg("unexpected error: %s", err.msg);
    assert_null(tokenizer_load("/nonexistent/vocab.txt", true, &err));
    assert_non_null(strstr(err.msg, "/nonexistent/vocab.txt"));
}

static void test_crlf_vocab(void **state) {
    (void)state;
    const char *v = "[PAD]\r\n[UNK]\r\n[CLS]\r\n[SEP]\r\n[MASK]\r\nhello\r\n##s\r\nworld";
    tu_write_bytes(g_path, v, strlen(v));
    BpError err = {0};
    Tokenizer *tok = tokenizer_load(g_path, true, &err);
    if (!tok) fail_msg("%s", err.msg);
    assert_int_equal(tokenizer_vocab_size(tok), 8);
    assert_int_equal(tokenizer_id(tok, "hello"), 5);
    assert_int_equal(tokenizer_id(tok, "world"), 7); /* no newline at the end */
    EXPECT_PIECES(tok, "Hellos world!", "hello ##s world [UNK]");
    tokenizer_free(tok);
}

static void test_basic_rules(void **state) {
    (void)state;
    /* accents: lower-case, NFD, drop Mn; kept as they are when cased */
    EXPECT_WORDS("Héllo", strlen("Héllo"), true, "hello");
    EXPECT_WORDS("Héllo", strlen("Héllo"), false, "Héllo");
    EXPECT_WORDS("e\xcc\x81t\xc3\xa9", 6, true, "ete"); /* decomposed and precomposed */
    EXPECT_WORDS("ΆΣΤΡΟ ΟΔΟΣ.", strlen("ΆΣΤΡΟ ΟΔΟΣ."), true, "αστρο οδος ."); /* final sigma */
    EXPECT_WORDS("İ", 2, true, "i");
    EXPECT_WORDS("한", 3, true, "\xe1\x84\x92\xe1\x85\xa1\xe1\x86\xab"); /* Hangul -> jamo */
    /* punctuation: ASCII symbol ranges and Unicode P*, each its own word */
    EXPECT_WORDS("a—b «c» d…e", strlen("a—b «c» d…e"), true, "a — b « c » d … e");
    EXPECT_WORDS("$5+3=8^2", 8, false, "$ 5 + 3 = 8 ^ 2");
    EXPECT_WORDS("don't-stop", 10, false, "don ' t - stop");
    EXPECT_WORDS("€5 ©", strlen("€5 ©"), false, "€5 ©"); /* Sc and So are not punctuation */
    /* CJK ideographs are spaced out; kana and Hangul are not */
    EXPECT_WORDS("我爱ab北京", strlen("我爱ab北京"), true, "我 爱 ab 北 京");
    EXPECT_WORDS("カタカナ", strlen("カタカナ"), true, "カタカナ");
    /* control characters vanish without separating; \t \n \r, NBSP, U+3000 separate */
    EXPECT_WORDS("a\x01" "b\x7f" "c\xe2\x80\x8b" "d", 9, true, "abcd");
    EXPECT_WORDS("a\tb\nc\rd\xc2\xa0" "e\xe3\x80\x80" "f", 14, true, "a b c d e f");
    EXPECT_WORDS("a\0b", 3, true, "ab");
    EXPECT_WORDS("a\xef\xbf\xbd" "b", 5, true, "ab");
    EXPECT_WORDS("   ", 3, true, "");
    EXPECT_WORDS("", 0, true, "");
}

/* The expected pieces of a word of n 'x' under vocab_small.txt (x, ##x, ##xx, ##xxxx), by
 * tokenization.py's rules: [UNK] past max_input_chars_per_word = 200 characters; otherwise greedy
 * longest match, "x" first (no longer initial piece), then "##xxxx" while 4 or more are left, then
 * "##xx" and "##x" for a remainder of 2 or 3, "##x" for 1. */
static char *x_word_pieces(int n) {
    char *out = malloc(8 * (size_t)n + 8);
    assert_non_null(out);
    if (n > 200) return strcpy(out, "[UNK]");
    strcpy(out, "x");
    int left = n - 1;
    for (; left >= 4; left -= 4) strcat(out, " ##xxxx");
    if (left >= 2) strcat(out, " ##xx"), left -= 2;
    if (left == 1) strcat(out, " ##x");
    return out;
}

/* Words up to 200 characters are cut into pieces, longer ones are one [UNK]: tokenization.py's
 * WordpieceTokenizer (max_input_chars_per_word = 200); Hugging Face's BertTokenizer uses 100. */
static void test_long_words(void **state) {
    (void)state;
    Tokenizer *tok = load_small(true);
    const int lengths[] = {1, 2, 3, 4, 5, 100, 101, 150, 199, 200, 201, 300};
    char w[320];
    for (size_t i = 0; i < sizeof lengths / sizeof lengths[0]; i++) {
        int n = lengths[i];
        memset(w, 'x', (size_t)n);
        w[n] = '\0';
        char *want = x_word_pieces(n);
        EXPECT_PIECES(tok, w, want);
        free(want);
    }
    /* the 150-character word in full: x + 37 x ##xxxx (148) + ##x */
    memset(w, 'x', 150);
    w[150] = '\0';
    char *got = pieces(tok, w, 150);
    assert_int_equal(strlen(got), 1 + 37 * 7 + 4);
    assert_int_equal(strncmp(got, "x ##xxxx ##xxxx", 15), 0);
    assert_string_equal(got + strlen(got) - 10, "##xxxx ##x");
    free(got);
    /* the limit counts characters, not bytes: "ça" x 100 is 200 characters in 300 bytes and
     * tokenizes (the cased vocab has "ça" and "##ça"); one "x" more (201, "##x" in the vocab) is
     * one [UNK] */
    Tokenizer *cased = load_small(false);
    char ca[512] = "";
    for (int k = 0; k < 100; k++) strcat(ca, "ça");
    got = pieces(cased, ca, strlen(ca));
    assert_int_equal(strlen(got), strlen("ça") + 99 * strlen(" ##ça"));
    assert_int_equal(strncmp(got, "ça ##ça ##ça", strlen("ça ##ça ##ça")), 0);
    free(got);
    strcat(ca, "x");
    EXPECT_PIECES(cased, ca, "[UNK]");
    tokenizer_free(cased);
    tokenizer_free(tok);
}

static void test_wordpiece(void **state) {
    (void)state;
    Tokenizer *tok = load_small(true);
    /* greedy longest match: "##affa" wins over the better split "##aff" "##able" */
    EXPECT_PIECES(tok, "unaffable", "un ##affa ##ble");
    EXPECT_PIECES(tok, "running runs", "running runs");
    EXPECT_PIECES(tok, "Héllo, WORLD!", "hello , world !");
    EXPECT_PIECES(tok, "coöperate", "co ##op ##erate");
    EXPECT_PIECES(tok, "unknownword", "[UNK]");   /* no piece for 'k' after "un" */
    EXPECT_PIECES(tok, "zq hello", "[UNK] hello"); /* one [UNK] per word, not per piece */
    EXPECT_PIECES(tok, "中文ok", "中 文 ok");
    tokenizer_free(tok);
    Tokenizer *cased = load_small(false);
    /* the limit counts characters, not bytes: 60 two-byte characters are fine */
    char ca[256] = "";
    for (int i = 0; i < 30; i++) strcat(ca, "ça");
    char *got = pieces(cased, ca, strlen(ca));
    assert_int_equal(strncmp(got, "ça ##ça ##ça", strlen("ça ##ça ##ça")), 0);
    free(got);
    EXPECT_PIECES(cased, "Héllo WORLD UNAFFABLE unaffable", "Héllo WORLD UNAFFABLE un ##affa ##ble");
    tokenizer_free(cased);
}

static size_t unhex(const char *hex, char *out) {
    size_t n = 0;
    for (; hex[0] && hex[1]; hex += 2) {
        unsigned v;
        assert_int_equal(sscanf(hex, "%2x", &v), 1);
        out[n++] = (char)v;
    }
    return n;
}

/* Every sentence and random string of cases.txt gives exactly the Python reference's words and
 * pieces, lower-cased and cased. */
static void test_reference_cases(void **state) {
    (void)state;
    Tokenizer *lower = load_small(true), *cased = load_small(false);
    FILE *fp = fopen(FIX "cases.txt", "r");
    assert_non_null(fp);
    char *line = NULL;
    size_t cap = 0;
    int n_cases = 0, n_bad = 0;
    ssize_t got;
    while ((got = getline(&line, &cap, fp)) > 0) {
        if (line[got - 1] == '\n') line[--got] = '\0';
        char *rest = line;
        char *kind = strsep(&rest, "\t"), *lw = strsep(&rest, "\t"), *hex = strsep(&rest, "\t");
        char *want = strsep(&rest, "\t");
        assert_non_null(want);
        char text[4096];
        size_t len = unhex(hex, text);
        bool lc = lw[0] == '1';
        char *out = kind[0] == 'B' ? basic_words(text, len, lc) : pieces(lc ? lower : cased, text, len);
        if (strcmp(out, want)) {
            if (n_bad++ < 10)
                print_error("%s lower=%d text %s:\n  got  \"%s\"\n  want \"%s\"\n", kind, lc, hex,
                            out, want);
        }
        free(out);
        n_cases++;
    }
    free(line);
    fclose(fp);
    tokenizer_free(lower);
    tokenizer_free(cased);
    assert_true(n_cases > 4000);
    if (n_bad) fail_msg("%d of %d reference cases differ", n_bad, n_cases);
}

/* gen_reference.py's probe(c), in UTF-8. */
static size_t probe(uint32_t cp, char *out) {
    char c[4];
    size_t k = tokenizer_utf8_encode(cp, c), n = 0;
#define LIT(s) (memcpy(out + n, s, sizeof(s) - 1), n += sizeof(s) - 1)
#define CH() (memcpy(out + n, c, k), n += k)
    LIT("a"), CH(), LIT("B "), CH(), LIT(" A\xce\xa3"), CH(), LIT(" A"), CH(), LIT("\xce\xa3 \xc3\x80"),
        CH(), LIT("\xcc\x81x x"), CH(), LIT("\xf0\x9d\x85\xa5"), CH(), LIT(".");
#undef LIT
#undef CH
    return n;
}

/* Every code point of the assigned planes, in the contexts of probe(), against the CRCs of the
 * Python reference's output per block of 4096: this checks the generated Unicode tables. */
static void test_every_code_point(void **state) {
    (void)state;
    FILE *fp = fopen(FIX "codepoints.txt", "r");
    assert_non_null(fp);
    int lc;
    unsigned first, last, want;
    int n_blocks = 0, n_bad = 0;
    while (fscanf(fp, "%d %X %X %x", &lc, &first, &last, &want) == 4) {
        uint32_t crc = 0;
        for (uint32_t cp = first; cp <= last; cp++) {
            if (cp >= 0xD800 && cp < 0xE000) continue;
            char text[64];
            size_t len = probe(cp, text);
            char *out = basic_words(text, len, lc == 1);
            crc = bp_crc32(crc, out, strlen(out));
            crc = bp_crc32(crc, "\n", 1);
            free(out);
        }
        if (crc != want && n_bad++ < 10)
            print_error("code points U+%04X..U+%04X (lower=%d) differ from the reference; rerun "
                        "gen_reference.py's probe() on them to see which\n",
                        first, last, lc);
        n_blocks++;
    }
    fclose(fp);
    assert_true(n_blocks > 100);
    if (n_bad) fail_msg("%d of %d blocks differ", n_bad, n_blocks);
}

/* Random bytes, biased toward UTF-8 lead and continuation bytes: never a crash (ASan watches),
 * and every word that comes out is valid UTF-8 with no whitespace or control byte. */
static int check_word(void *ctx, const char *word, size_t nbytes, size_t nchars) {
    (void)ctx;
    size_t chars = 0;
    for (size_t i = 0; i < nbytes; i++) {
        unsigned char b = (unsigned char)word[i];
        assert_true(b > 0x20 && b != 0x7f && b != 0xC0 && b != 0xC1 && b < 0xF5);
        chars += (b & 0xC0) != 0x80;
    }
    assert_int_equal(chars, nchars);
    return 0;
}

static void test_invalid_utf8_fuzz(void **state) {
    (void)state;
    static const unsigned char interesting[] = {0x80, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF, 0xE0, 0xED,
                                                0xEF, 0xF0, 0xF4, 0xF5, 0xFF, 0xA0, 0x9F, 0x8F,
                                                'a', ' ', '.', 0x00, 0xCC, 0x81, 0xE4, 0xB8};
    Tokenizer *tok = load_small(true);
    uint64_t s = 12345;
    char buf[64];
    for (int iter = 0; iter < 20000; iter++) {
        size_t len = 0, want = 1 + iter % 63;
        while (len < want) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            unsigned r = (unsigned)(s >> 33);
            buf[len++] = (char)((r & 1) ? interesting[(r >> 1) % sizeof interesting] : (r >> 8));
        }
        BpError err = {0};
        assert_int_equal(tokenizer_basic(buf, len, iter & 1, check_word, NULL, &err), 0);
        int32_t *ids = NULL;
        size_t n = 0, cap = 0;
        assert_int_equal(tokenizer_encode(tok, buf, len, &ids, &n, &cap, &err), 0);
        for (size_t i = 0; i < n; i++) assert_true(ids[i] >= 0 && ids[i] < tokenizer_vocab_size(tok));
        free(ids);
    }
    tokenizer_free(tok);
    /* the named cases: stray continuation, truncated, overlong, surrogate, past U+10FFFF */
    EXPECT_WORDS("a\x80" "b", 3, true, "ab");
    EXPECT_WORDS("caf\xc3", 4, true, "caf");
    EXPECT_WORDS("\xe2\x82" "A", 3, true, "a");
    EXPECT_WORDS("\xf0\x9f\x98\xe2\x82\xac", 6, true, "\xe2\x82\xac");
    EXPECT_WORDS("\xc0\xaf \xe0\x80\xaf \xf0\x80\x80\xaf", 11, true, "");
    EXPECT_WORDS("\xed\xa0\x80x \xf4\x90\x80\x80y", 10, true, "x y");
    /* counting what gets dropped: a real U+FFFD is valid text */
    size_t first = 99;
    assert_int_equal(tokenizer_utf8_invalid("a\x80" "b", 3, &first), 1);
    assert_int_equal(first, 1);
    assert_int_equal(tokenizer_utf8_invalid("\xe2\x82" "A\xc0\xaf", 5, &first), 4);
    assert_int_equal(first, 0);
    assert_int_equal(tokenizer_utf8_invalid("\xe2\x82\xac \xef\xbf\xbd \xf0\x9f\x98\x80", 12, NULL), 0);
}

/* The builder gives exactly what gen_reference.py's build_vocab (recounting every pair before
 * every merge) gives, from .txt and from .gz, and the same bytes on a second run. */
static void test_vocab_build_reference(void **state) {
    (void)state;
    const char *out = g_path, *out2 = tu_path("vocab2.txt"), *gzpath = tu_path("train.txt.gz");
    BpError err = {0};
    size_t len = 0;
    uint8_t *text = tu_read_bytes(FIX "train.txt", &len);
    tu_write_gz(gzpath, text, len);
    free(text);
    const char *txt[] = {FIX "train.txt"}, *gzs[] = {gzpath};
    for (int cased = 0; cased < 2; cased++) {
        VocabBuildOptions opt = {.size = 300, .lowercase = !cased, .min_count = 2};
        if (vocab_build_opts(txt, 1, &opt, out, &err)) fail_msg("%s", err.msg);
        const char *want = cased ? FIX "vocab_built_cased.txt" : FIX "vocab_built_uncased.txt";
        if (!tu_same_bytes(out, want)) fail_msg("%s differs from %s", out, want);
        if (vocab_build_opts(gzs, 1, &opt, out2, &err)) fail_msg("%s", err.msg);
        assert_true(tu_same_bytes(out, out2));
    }
    /* stops at --size: the first entries of the full run */
    VocabBuildOptions small = {.size = 150, .lowercase = true, .min_count = 2};
    if (vocab_build_opts(txt, 1, &small, out2, &err)) fail_msg("%s", err.msg);
    size_t n2 = 0, n_full = 0;
    uint8_t *a = tu_read_bytes(out2, &n2), *b = tu_read_bytes(FIX "vocab_built_uncased.txt", &n_full);
    size_t lines = 0;
    for (size_t i = 0; i < n2; i++) lines += a[i] == '\n';
    assert_int_equal(lines, 150);
    assert_true(n2 < n_full && !memcmp(a, b, n2));
    free(a);
    free(b);
}

/* Every word of the training text tokenizes without [UNK] with the vocab built from it. */
static void test_vocab_build_covers_training_text(void **state) {
    (void)state;
    const char *out = g_path;
    BpError err = {0};
    const char *txt[] = {FIX "train.txt"};
    for (int cased = 0; cased < 2; cased++) {
        VocabBuildOptions opt = {.size = 200, .lowercase = !cased, .min_count = 1};
        if (vocab_build_opts(txt, 1, &opt, out, &err)) fail_msg("%s", err.msg);
        Tokenizer *tok = tokenizer_load(out, !cased, &err);
        if (!tok) fail_msg("%s", err.msg);
        size_t len = 0;
        char *text = (char *)tu_read_bytes(FIX "train.txt", &len);
        int32_t *ids = NULL;
        size_t n = 0, cap = 0;
        assert_int_equal(tokenizer_encode(tok, text, len, &ids, &n, &cap, &err), 0);
        assert_true(n > 200);
        int unk = tokenizer_specials(tok).unk;
        for (size_t i = 0; i < n; i++)
            if (ids[i] == unk) fail_msg("token %zu of train.txt is [UNK] (cased=%d)", i, cased);
        free(ids);
        free(text);
        tokenizer_free(tok);
    }
}

static void test_vocab_build_errors(void **state) {
    (void)state;
    const char *out = g_path, *empty = tu_path("empty.txt");
    tu_write_bytes(empty, "", 0);
    BpError err = {0};
    const char *missing[] = {FIX "train.txt", "/nonexistent/corpus.txt"};
    VocabBuildOptions opt = {.size = 300, .lowercase = true, .min_count = 2};
    assert_int_equal(vocab_build_opts(missing, 2, &opt, out, &err), -1);
    assert_non_null(strstr(err.msg, "/nonexistent/corpus.txt: cannot open"));
    assert_int_equal(access(out, F_OK), -1); /* no partial output */
    const char *emp[] = {empty};
    assert_int_equal(vocab_build_opts(emp, 1, &opt, out, &err), -1);
    assert_non_null(strstr(err.msg, "no words"));
    const char *txt[] = {FIX "train.txt"};
    opt.size = 20; /* fewer than the characters of train.txt */
    assert_int_equal(vocab_build_opts(txt, 1, &opt, out, &err), -1);
    assert_int_equal(bp_error_status(&err), BP_EXIT_USAGE);
    assert_non_null(strstr(err.msg, "--size 20 is too small"));
    assert_int_equal(access(out, F_OK), -1);
    unlink(empty); /* and nothing else is left (the teardown's check) */
}

/* tokenize's loop: one output line per input line (CRLF and an empty line included), pieces or
 * decimal ids, and the counts. */
static void test_encode_stream(void **state) {
    (void)state;
    Tokenizer *tok = load_small(true);
    static const char in_text[] = "H\xc3\xa9llo, WORLD! unaffable\n\nzq running\r\n";
    const char *want_pieces[] = {"hello", ",", "world", "!", "un", "##affa", "##ble"};
    for (int as_pieces = 0; as_pieces < 2; as_pieces++) {
        FILE *in = fmemopen((void *)in_text, sizeof in_text - 1, "r");
        char *out_text = NULL;
        size_t out_len = 0;
        FILE *out = open_memstream(&out_text, &out_len);
        assert_non_null(in);
        assert_non_null(out);
        TokenizeStreamCounts c;
        BpError err = {0};
        assert_int_equal(tokenizer_encode_stream(tok, in, out, as_pieces, &c, &err), 0);
        fclose(in);
        fclose(out);
        assert_int_equal(c.lines, 3);
        assert_int_equal(c.tokens, 9);
        assert_int_equal(c.unk, 1);
        char want[256] = "";
        for (size_t i = 0; i < BP_ARRAY_LEN(want_pieces); i++) {
            char id[16];
            snprintf(id, sizeof id, "%d", tokenizer_id(tok, want_pieces[i]));
            assert_true(tokenizer_id(tok, want_pieces[i]) >= 0);
            strcat(want, i ? " " : "");
            strcat(want, as_pieces ? want_pieces[i] : id);
        }
        char tail[64];
        if (as_pieces) snprintf(tail, sizeof tail, "\n\n[UNK] running\n");
        else snprintf(tail, sizeof tail, "\n\n%d %d\n", tokenizer_specials(tok).unk, tokenizer_id(tok, "running"));
        strcat(want, tail);
        assert_string_equal(out_text, want);
        free(out_text);
    }
    tokenizer_free(tok);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_and_lookup),
        cmocka_unit_test_setup_teardown(test_vocab_errors, setup_scratch, tu_dir_teardown),
        cmocka_unit_test_setup_teardown(test_crlf_vocab, setup_scratch, tu_dir_teardown),
        cmocka_unit_test(test_basic_rules),
        cmocka_unit_test(test_wordpiece),
        cmocka_unit_test(test_long_words),
        cmocka_unit_test(test_reference_cases),
        cmocka_unit_test(test_every_code_point),
        cmocka_unit_test(test_invalid_utf8_fuzz),
        cmocka_unit_test_setup_teardown(test_vocab_build_reference, setup_scratch, tu_dir_teardown),
        cmocka_unit_test_setup_teardown(test_vocab_build_covers_training_text, setup_scratch, tu_dir_teardown),
        cmocka_unit_test_setup_teardown(test_vocab_build_errors, setup_scratch, tu_dir_teardown_clean),
        cmocka_unit_test(test_encode_stream),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
