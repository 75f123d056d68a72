/* Unit tests for shard.c: round trip in both token widths, and every kind of damage a shard can
 * suffer (truncation, a flipped bit in each section, wrong magic or version, a mismatched vocab),
 * each refused with a message naming the file; a shard that changes under a reader (modified,
 * replaced, truncated while mapped) is a clear error, never a SIGBUS. */
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"
#include "rng.h"
#include "shard.h"
#include "testutil.h"

static int setup(void **state) {
    (void)state;
    return tu_dir_create("shard", "train");
}

static int count_files(const char *dir) {
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;
    while (d && (e = readdir(d)))
        if (e->d_name[0] != '.') n++;
    if (d) closedir(d);
    return n;
}

/* Writes a shard of n_docs documents with random sentence and document lengths; the ids are
 * returned in *ids (and the boundaries in *sents and *docs, with their sentinels) for comparison. */
static void write_random_shard(const char *path, int vocab, int n_docs, uint64_t seed, int32_t **ids,
                               size_t *n_ids, size_t **sents, size_t *n_sents, size_t **docs) {
    BpError err = {0};
    ShardWriter *w = shard_writer_open(path, vocab, 0xC0FFEEu, &err);
    assert_non_null(w);
    RngStream r = rng_stream(seed, RNG_TEST, 1);
    size_t cap = 1 << 16;
    *ids = malloc(cap * sizeof **ids);
    *sents = malloc(cap * sizeof **sents);
    *docs = malloc((size_t)(n_docs + 1) * sizeof **docs);
    *n_ids = *n_sents = 0;
    int32_t sent[64];
    for (int d = 0; d < n_docs; d++) {
        (*docs)[d] = *n_sents;
        int ns = 1 + (int)rng_next_below(&r, 6);
        for (int s = 0; s < ns; s++) {
            size_t len = 1 + rng_next_below(&r, 40);
            for (size_t i = 0; i < len; i++) sent[i] = (int32_t)rng_next_below(&r, (uint32_t)vocab);
            assert_int_equal(shard_writer_add_sentence(w, sent, len, &err), 0);
            (*sents)[(*n_sents)++] = *n_ids;
            memcpy(*ids + *n_ids, sent, len * sizeof *sent);
            *n_ids += len;
        }
        /* an empty document in between is not recorded */
        assert_int_equal(shard_writer_end_document(w, &err), 0);
        assert_int_equal(shard_writer_end_document(w, &err), 0);
    }
    (*docs)[n_docs] = *n_sents;
    (*sents)[*n_sents] = *n_ids;
    assert_int_equal(shard_writer_num_documents(w), (size_t)n_docs);
    assert_int_equal(shard_writer_commit(w, &err), 0);
    shard_writer_free(w);
}

/* A random shard of n_docs documents and vocab 8192, for a test that needs only the file. */
static void write_any_shard(const char *path, int n_docs, uint64_t seed) {
    int32_t *ids;
    size_t n_ids, *sents, n_sents, *docs;
    write_random_shard(path, 8192, n_docs, seed, &ids, &n_ids, &sents, &n_sents, &docs);
    free(ids);
    free(sents);
    free(docs);
}

static void round_trip(const char *path, int vocab, int expect_bytes) {
    int32_t *ids;
    size_t n_ids, *sents, n_sents, *docs;
    write_random_shard(path, vocab, 37, (uint64_t)vocab, &ids, &n_ids, &sents, &n_sents, &docs);
    Shard s;
    BpError err = {0};
    if (shard_open(&s, path, &err) != 0) fail_msg("%s", err.msg);
    assert_int_equal(s.h.token_bytes, expect_bytes);
    assert_int_equal(s.h.vocab_size, vocab);
    assert_int_equal(s.h.vocab_crc, 0xC0FFEEu);
    assert_int_equal(s.n_tokens, n_ids);
    assert_int_equal(s.n_sentences, n_sents);
    assert_int_equal(s.n_documents, 37);
    for (size_t i = 0; i < n_ids; i++) assert_int_equal(shard_token(&s, i), ids[i]);
    for (size_t i = 0; i <= n_sents; i++) assert_int_equal(s.sent_start[i], sents[i]);
    for (size_t i = 0; i <= 37; i++) assert_int_equal(s.doc_start[i], docs[i]);
    assert_int_equal((uintptr_t)s.sent_start % 8, 0);
    assert_int_equal(shard_check_vocab(&s, vocab, 0xC0FFEEu, "v.txt", &err), 0);
    shard_close(&s);
    free(ids);
    free(sents);
    free(docs);
}

static void test_round_trip_uint16(void **state) {
    (void)state;
    round_trip(g_path, 8192, 2);
    round_trip(g_path, 65536, 2); /* the largest vocab that still fits 16 bits */
    /* nothing but the shard itself is left in the directory */
    assert_int_equal(count_files(g_dir), 1);
}

static void test_round_trip_int32(void **state) {
    (void)state;
    round_trip(g_path, 70000, 4);
}

static void test_writer_rejects_bad_ids_and_abort_leaves_nothing(void **state) {
    (void)state;
    BpError err = {0};
    ShardWriter *w = shard_writer_open(g_path, 100, 1, &err);
    assert_non_null(w);
    int32_t ok[3] = {1, 2, 99}, bad[2] = {5, 100}, neg[1] = {-1};
    assert_int_equal(shard_writer_add_sentence(w, ok, 3, &err), 0);
    assert_int_equal(shard_writer_add_sentence(w, bad, 2, &err), -1);
    assert_non_null(strstr(err.msg, "token id 100 outside the vocab of 100"));
    assert_int_equal(shard_writer_add_sentence(w, neg, 1, &err), -1);
    shard_writer_free(w); /* no commit: the temporary goes away and no shard appears */
    assert_int_equal(count_files(g_dir), 0);
}

/* Writes a good shard, applies `damage`, and expects shard_open to fail with `want` in the message
 * (and the path). */
static void expect_damage(void (*damage)(const char *path, void *arg), void *arg,
                          const char *want) {
    write_any_shard(g_path, 20, 7);
    damage(g_path, arg);
    Shard s;
    BpError err = {0};
    int rc = shard_open(&s, g_path, &err);
    if (rc == 0) {
        shard_close(&s);
        fail_msg("damaged shard accepted (wanted \"%s\")", want);
    }
    if (!strstr(err.msg, want) || !strstr(err.msg, g_path))
        fail_msg("message \"%s\" lacks \"%s\" or the path", err.msg, want);
    assert_null(s.map);
}

static void truncate_to(const char *path, void *arg) {
    long keep = *(long *)arg;
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(truncate(path, keep >= 0 ? keep : st.st_size + keep), 0);
}

static void flip_bit(const char *path, void *arg) {
    long at = *(long *)arg;
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    if (at < 0) {
        fseek(f, 0, SEEK_END);
        at += ftell(f);
    }
    fseek(f, at, SEEK_SET);
    int c = fgetc(f);
    fseek(f, at, SEEK_SET);
    fputc(c ^ 0x10, f);
    fclose(f);
}

static void append_bytes(const char *path, void *arg) {
    (void)arg;
    FILE *f = fopen(path, "ab");
    fputs("extra", f);
    fclose(f);
}

static void test_truncated(void **state) {
    (void)state;
    long cut = -1;
    expect_damage(truncate_to, &cut, "truncated shard");
    cut = 100;
    expect_damage(truncate_to, &cut, "less than the 128-byte header");
    cut = 0;
    expect_damage(truncate_to, &cut, "truncated shard: 0 bytes");
    expect_damage(append_bytes, NULL, "extra");
}

static void test_bit_flips(void **state) {
    (void)state;
    long at = 0;
    expect_damage(flip_bit, &at, "wrong magic");
    at = 20; /* inside the header */
    expect_damage(flip_bit, &at, "header CRC32 mismatch");
    at = SHARD_HEADER_BYTES + 3; /* a token */
    expect_damage(flip_bit, &at, "token section CRC32 mismatch");
    at = -3; /* the last document boundary */
    expect_damage(flip_bit, &at, "document-boundary section CRC32 mismatch");
}

static void test_bad_sentence_section(void **state) {
    /* flip a bit of the first sentence boundary: offset read from the header */
    (void)state;
    write_any_shard(g_path, 5, 3);
    Shard s;
    BpError err = {0};
    assert_int_equal(shard_open(&s, g_path, &err), 0);
    long at = (long)s.h.sents_offset + 8;
    shard_close(&s);
    flip_bit(g_path, &at);
    assert_int_equal(shard_open(&s, g_path, &err), -1);
    assert_non_null(strstr(err.msg, "sentence-boundary section CRC32 mismatch"));
}

/* A consistent file (valid CRCs) whose contents break an invariant is still refused: rewrite a
 * section and re-stamp every CRC as a careless tool would. */
static void restamp(const char *path, void (*edit)(ShardHeader *h, uint8_t *file)) {
    size_t len = 0;
    uint8_t *buf = tu_read_bytes(path, &len);
    ShardHeader h;
    memcpy(&h, buf, sizeof h);
    ShardHeader o = h; /* the sections as they really are in the file */
    edit(&h, buf);
    h.tokens_crc = bp_crc32(0, buf + o.tokens_offset, o.n_tokens * o.token_bytes);
    h.sents_crc = bp_crc32(0, buf + o.sents_offset, (o.n_sentences + 1) * 8);
    h.docs_crc = bp_crc32(0, buf + o.docs_offset, (o.n_documents + 1) * 8);
    h.header_crc = bp_crc32(0, &h, offsetof(ShardHeader, header_crc));
    memcpy(buf, &h, sizeof h);
    tu_write_bytes(path, buf, len);
    free(buf);
}

static void edit_token_out_of_vocab(ShardHeader *h, uint8_t *file) {
    uint16_t big = 9000; /* vocab is 8192 */
    memcpy(file + h->tokens_offset + 2 * 5, &big, 2);
}
static void edit_sentences_not_monotone(ShardHeader *h, uint8_t *file) {
    uint64_t *s = (uint64_t *)(file + h->sents_offset);
    s[2] = s[1];
}
static void edit_version(ShardHeader *h, uint8_t *file) {
    (void)file;
    h->version = 99;
}
static void edit_counts(ShardHeader *h, uint8_t *file) {
    (void)file;
    h->n_tokens = h->n_tokens * 1000;
}

static void test_invariants_behind_valid_crcs(void **state) {
    (void)state;
    struct {
        void (*edit)(ShardHeader *, uint8_t *);
        const char *want;
    } cases[] = {
        {edit_token_out_of_vocab, "has id 9000, outside the vocab of 8192"},
        {edit_sentences_not_monotone, "sentence boundaries are not strictly increasing"},
        {edit_version, "version 99, this build reads version 1"},
        {edit_counts, "do not fit"},
    };
    for (size_t i = 0; i < BP_ARRAY_LEN(cases); i++) {
        write_any_shard(g_path, 5, 3);
        restamp(g_path, cases[i].edit);
        Shard s;
        BpError err = {0};
        assert_int_equal(shard_open(&s, g_path, &err), -1);
        if (!strstr(err.msg, cases[i].want)) fail_msg("case %zu: \"%s\"", i, err.msg);
    }
}

static void test_missing_and_vocab_mismatch(void **state) {
    (void)state;
    Shard s;
    BpError err = {0};
    assert_int_equal(shard_open(&s, "/nonexistent/shard", &err), -1);
    assert_non_null(strstr(err.msg, "/nonexistent/shard: cannot open shard"));
    assert_int_equal(shard_open(&s, g_dir, &err), -1);
    assert_non_null(strstr(err.msg, "not a regular file"));

    write_any_shard(g_path, 3, 1);
    assert_int_equal(shard_open(&s, g_path, &err), 0);
    assert_int_equal(shard_check_vocab(&s, 30522, 0x1234abcdu, "data/vocab.txt", &err), -1);
    char want[512];
    snprintf(want, sizeof want,
             "%s: built with a vocab of 8192 tokens (crc 00c0ffee) but data/vocab.txt has 30522 "
             "(crc 1234abcd)",
             g_path);
    if (strncmp(err.msg, want, strlen(want)) != 0) fail_msg("got \"%s\"", err.msg);
    /* same size, other content */
    assert_int_equal(shard_check_vocab(&s, 8192, 0xC0FFEFu, "v.txt", &err), -1);
    shard_close(&s);
}

/* A shard records which output of prepare it is; a run refuses the other role (data.train and
 * data.eval swapped), takes an older shard of unknown role for either, and a damaged role byte is
 * caught by the header CRC or, behind a valid one, by the range check. */
static void write_role_shard(const char *path, ShardRole role) {
    BpError err = {0};
    ShardWriter *w = shard_writer_open(path, 100, 7, &err);
    assert_non_null(w);
    int32_t sent[3] = {5, 6, 7};
    assert_int_equal(shard_writer_add_sentence(w, sent, 3, &err), 0);
    assert_int_equal(shard_writer_end_document(w, &err), 0);
    shard_writer_set_role(w, role);
    assert_int_equal(shard_writer_commit(w, &err), 0);
    shard_writer_free(w);
}

static void test_roles(void **state) {
    (void)state;
    BpError err = {0};
    Shard s;
    const ShardRole roles[] = {SHARD_ROLE_UNKNOWN, SHARD_ROLE_TRAIN, SHARD_ROLE_EVAL};
    for (int r = 0; r < 3; r++) {
        write_role_shard(g_path, roles[r]);
        assert_int_equal(shard_open(&s, g_path, &err), 0);
        assert_int_equal(s.h.role, (uint32_t)roles[r]);
        bool train_ok = roles[r] != SHARD_ROLE_EVAL, eval_ok = roles[r] != SHARD_ROLE_TRAIN;
        assert_int_equal(shard_check_role(&s, SHARD_ROLE_TRAIN, "data.train", &err), train_ok ? 0 : -1);
        if (!train_ok) {
            assert_int_equal(bp_error_status(&err), BP_EXIT_USAGE);
            if (!strstr(err.msg, "data.train") || !strstr(err.msg, "is the eval shard") || !strstr(err.msg, "swapped"))
                fail_msg("got \"%s\"", err.msg);
        }
        assert_int_equal(shard_check_role(&s, SHARD_ROLE_EVAL, "data.eval", &err), eval_ok ? 0 : -1);
        if (!eval_ok && !strstr(err.msg, "is the train shard")) fail_msg("got \"%s\"", err.msg);
        shard_close(&s);
    }
}

static void expect_changed(const Shard *s, const char *want) {
    BpError err = {0};
    assert_int_equal(shard_check_unchanged(s, &err), -1);
    assert_int_equal(err.kind, BP_ERR_IO);
    if (!strstr(err.msg, s->path) || !strstr(err.msg, "the shard changed on disk since this run opened it") ||
        !strstr(err.msg, want))
        fail_msg("message \"%s\" lacks the path or \"%s\"", err.msg, want);
}

static void test_changed_under_reader(void **state) {
    (void)state;
    BpError err = {0};
    Shard s;
    write_any_shard(g_path, 400, 3);
    assert_int_equal(shard_open(&s, g_path, &err), 0);
    assert_true(s.map_len > 3 * 4096);
    assert_int_equal(shard_check_unchanged(&s, &err), 0);
    /* rewritten in place with the same size: only the mtime tells */
    struct timespec ts[2] = {{0, UTIME_OMIT}, {12345, 0}};
    assert_int_equal(utimensat(AT_FDCWD, g_path, ts, 0), 0);
    expect_changed(&s, "it was modified");
    shard_close(&s);
    /* replaced by rename, as prepare does */
    assert_int_equal(shard_open(&s, g_path, &err), 0);
    write_any_shard(g_path, 400, 4);
    expect_changed(&s, "another file is at its path");
    shard_close(&s);

    /* truncated while mapped: the check says so, and a read past the new end (the race the check
     * cannot close) ends the process with a message naming the shard instead of a SIGBUS */
    assert_int_equal(shard_open(&s, g_path, &err), 0);
    assert_int_equal(truncate(g_path, 4096), 0);
    expect_changed(&s, "its size changed: ");
    const char *log = tu_path("stderr.txt");
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0 || dup2(fd, STDERR_FILENO) < 0) _exit(3);
        volatile int32_t sink = shard_token(&s, s.n_tokens - 1);
        (void)sink;
        _exit(0);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    size_t n;
    char *msg = (char *)tu_read_bytes(log, &n);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 1)
        fail_msg("reader ended with status %#x (signal %d), stderr: %.*s", status,
                 WIFSIGNALED(status) ? WTERMSIG(status) : 0, (int)n, msg);
    if (!strstr(msg, g_path) || !strstr(msg, "the shard was truncated while this run was reading it (SIGBUS"))
        fail_msg("stderr: %.*s", (int)n, msg);
    free(msg);
    shard_close(&s);
    /* a SIGBUS elsewhere is not swallowed: it still kills the process */
    fflush(NULL);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        signal(SIGBUS, SIG_DFL); /* cmocka's own handler would report and carry on */
        write_any_shard(g_path, 3, 5);
        if (shard_open(&s, g_path, &err) != 0) _exit(3);
        raise(SIGBUS);
        _exit(0);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGBUS);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip_uint16, setup, tu_dir_teardown),
        cmocka_unit_test_setup_teardown(test_round_trip_int32, setup, tu_dir_teardown),
        cmocka_unit_test_setup_teardown(test_writer_rejects_bad_ids_and_abort_leaves_nothing, setup, tu_dir_teardown),
        cmocka_unit_test_setup_teardown(test_truncated, setup, tu_dir_teardown),
        cmocka_unit_test_setup_teardown(test_bit_flips, setup, tu_dir_teardown),
        cmocka_unit_test_setup_teardown(test_bad_sentence_section, setup, tu_dir_teardown),
        cmocka_unit_test_setup_teardown(test_invariants_behind_valid_crcs, setup, tu_dir_teardown),
        cmocka_unit_test_setup_teardown(test_missing_and_vocab_mismatch, setup, tu_dir_teardown),
        cmocka_unit_test_setup_teardown(test_changed_under_reader, setup, tu_dir_teardown),
        cmocka_unit_test_setup_teardown(test_roles, setup, tu_dir_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
