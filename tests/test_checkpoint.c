/* Unit tests for checkpoint.c: round trip, every kind of damage refused with the right message
 * (truncation, a bit flipped anywhere, wrong magic, newer version), run-directory listing and
 * pruning, and an interrupted write that must leave the previous checkpoint as it was. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checkpoint.h"
#include "testutil.h"

static int setup(void **state) {
    (void)state;
    return tu_dir_create("ckpt", "c.bin");
}

/* ckpt_open must refuse path with an error of the given kind and a message "path: <exact>" (or
 * containing `part` when exact is NULL). */
static void expect_refused_kind(const char *path, const char *exact, const char *part, BpErrorKind kind) {
    BpError err = {0};
    CkptFile *f = ckpt_open(path, &err);
    if (f) {
        ckpt_close(f);
        fail_msg("accepted a damaged checkpoint (expected '%s')", exact ? exact : part);
    }
    if (err.kind != kind) fail_msg("reported as kind %d, not %d: %s", err.kind, kind, err.msg);
    char want[2048];
    if (exact) {
        snprintf(want, sizeof want, "%s: %s", path, exact);
        if (strcmp(err.msg, want) != 0) fail_msg("message\n  %s\nexpected\n  %s", err.msg, want);
    } else if (strncmp(err.msg, path, strlen(path)) != 0 || !strstr(err.msg, part)) {
        fail_msg("message '%s' lacks the path or '%s'", err.msg, part);
    }
}

/* damage to the bytes of a file is corruption */
static void expect_refused(const char *path, const char *exact, const char *part) {
    expect_refused_kind(path, exact, part, BP_ERR_CORRUPT);
}

/* Three sections of awkward sizes (the 13-byte one forces padding) and an empty one. */
static float g_params[37];
static double g_moments[11];
static const char g_config[] = "model: {preset: bert-tiny}\n";

static void write_sample(const char *path) {
    for (int i = 0; i < 37; i++) g_params[i] = (float)i * 0.25f - 3.0f;
    for (int i = 0; i < 11; i++) g_moments[i] = 1.0 / (i + 1);
    CkptSection s[] = {
        {.name = "config", .data = g_config, .bytes = strlen(g_config)}, /* 27 bytes */
        {.name = "params", .data = g_params, .bytes = sizeof g_params},
        {.name = "empty", .data = NULL, .bytes = 0},
        {.name = "moments", .data = g_moments, .bytes = sizeof g_moments},
    };
    BpError err = {0};
    if (ckpt_write(path, s, 4, &err) != 0) fail_msg("%s", err.msg);
}

/* byte offsets of the sample's sections, read back from its table */
typedef struct {
    size_t off, bytes;
} Span;

static Span sample_span(const uint8_t *file, int i) {
    const uint8_t *e = file + 16 + 52 * (size_t)i;
    Span s = {0, 0};
    for (int b = 7; b >= 0; b--) s.off = s.off << 8 | e[32 + b];
    for (int b = 7; b >= 0; b--) s.bytes = s.bytes << 8 | e[40 + b];
    return s;
}

static void test_round_trip(void **state) {
    (void)state;
    write_sample(g_path);
    BpError err = {0};
    CkptFile *f = ckpt_open(g_path, &err);
    if (!f) fail_msg("%s", err.msg);
    assert_int_equal(ckpt_section_count(f), 4);
    assert_string_equal(ckpt_section_name(f, 0), "config");
    assert_string_equal(ckpt_section_name(f, 3), "moments");
    assert_null(ckpt_section_name(f, 4));
    assert_null(ckpt_section_name(f, -1));
    size_t bytes = 99;
    const void *p = ckpt_section(f, "config", &bytes);
    assert_int_equal(bytes, strlen(g_config));
    assert_memory_equal(p, g_config, bytes);
    p = ckpt_section(f, "params", &bytes);
    assert_int_equal(bytes, sizeof g_params);
    assert_memory_equal(p, g_params, bytes);
    assert_int_equal((uintptr_t)p % 8, 0);
    p = ckpt_section(f, "moments", &bytes);
    assert_int_equal(bytes, sizeof g_moments);
    assert_int_equal((uintptr_t)p % 8, 0);
    assert_true(((const double *)p)[3] == 0.25);
    p = ckpt_section(f, "empty", &bytes);
    assert_non_null(p); /* present but empty: not the same as absent */
    assert_int_equal(bytes, 0);
    assert_null(ckpt_section(f, "optimizer", &bytes));
    assert_int_equal(bytes, 0);
    assert_null(ckpt_section(f, "param", NULL));
    ckpt_close(f);
    ckpt_close(NULL);

    /* the layout checkpoint.h documents */
    size_t len;
    uint8_t *raw = tu_read_bytes(g_path, &len);
    assert_memory_equal(raw, "BPCKPT01\1\0\0\0\4\0\0\0config\0", 23);
    size_t table_end = 16 + 4 * 52;
    uint32_t crc = (uint32_t)raw[table_end] | (uint32_t)raw[table_end + 1] << 8 |
                   (uint32_t)raw[table_end + 2] << 16 | (uint32_t)raw[table_end + 3] << 24;
    assert_int_equal(crc, bp_crc32(0, raw, table_end));
    Span s0 = sample_span(raw, 0), s3 = sample_span(raw, 3);
    assert_int_equal(s0.off, (table_end + 4 + 7) / 8 * 8);
    assert_int_equal(s0.bytes, 27);
    assert_int_equal(s3.off % 8, 0);
    assert_int_equal(s3.off + s3.bytes, len);
    free(raw);

    /* no sections at all is a valid (if useless) checkpoint */
    assert_int_equal(ckpt_write(g_path, NULL, 0, &err), 0);
    f = ckpt_open(g_path, &err);
    if (!f) fail_msg("%s", err.msg);
    assert_int_equal(ckpt_section_count(f), 0);
    ckpt_close(f);
}

/* A section pulled piece by piece (checkpoint.h's next) gives the same file, byte for byte, as the
 * same bytes handed whole; a producer that fails abandons the write and leaves the old file. */
typedef struct {
    const uint8_t *bytes;
    size_t len, at, piece;
    bool fail_at_second;
    int calls;
} Pieces;

static const void *next_piece(void *ctx, size_t *len) {
    Pieces *p = ctx;
    if (p->fail_at_second && ++p->calls == 2) return NULL;
    *len = p->len - p->at < p->piece ? p->len - p->at : p->piece;
    const void *at = p->bytes + p->at;
    p->at += *len;
    return at;
}

static void test_streamed_section(void **state) {
    (void)state;
    write_sample(g_path);
    size_t whole_len = 0;
    uint8_t *whole = tu_read_bytes(g_path, &whole_len);
    Pieces params = {(const uint8_t *)g_params, sizeof g_params, 0, 20, false, 0}; /* 148 bytes: 8 pieces */
    Pieces moments = {(const uint8_t *)g_moments, sizeof g_moments, 0, 88, false, 0};
    CkptSection s[] = {
        {.name = "config", .data = g_config, .bytes = strlen(g_config)},
        {.name = "params", .bytes = sizeof g_params, .next = next_piece, .ctx = &params},
        {.name = "empty", .data = NULL, .bytes = 0},
        {.name = "moments", .bytes = sizeof g_moments, .next = next_piece, .ctx = &moments},
    };
    BpError err = {0};
    const char *streamed = tu_path("streamed.bin");
    if (ckpt_write(streamed, s, 4, &err) != 0) fail_msg("%s", err.msg);
    size_t len = 0;
    uint8_t *got = tu_read_bytes(streamed, &len);
    assert_int_equal(len, whole_len);
    assert_memory_equal(got, whole, len);
    free(got);
    /* the producer fails at its second piece: an error, and the earlier file is still whole */
    Pieces failing = {(const uint8_t *)g_params, sizeof g_params, 0, 20, true, 0};
    s[1].ctx = &failing;
    moments.at = 0;
    assert_int_equal(ckpt_write(streamed, s, 4, &err), -1);
    assert_non_null(strstr(err.msg, "could not be produced"));
    got = tu_read_bytes(streamed, &len);
    assert_int_equal(len, whole_len);
    assert_memory_equal(got, whole, len);
    free(got);
    free(whole);
}

static void test_write_refuses_bad_sections(void **state) {
    (void)state;
    BpError err = {0};
    int x = 1;
    CkptSection dup[] = {{.name = "a", .data = &x, .bytes = 4}, {.name = "a", .data = &x, .bytes = 4}};
    assert_int_equal(ckpt_write(g_path, dup, 2, &err), -1);
    assert_non_null(strstr(err.msg, "section 'a' given twice"));
    assert_non_null(strstr(err.msg, g_path));
    CkptSection long_name = {.name = "abcdefghijklmnopqrstuvwxyz012345", .data = &x, .bytes = 4}; /* 32 chars */
    assert_int_equal(ckpt_write(g_path, &long_name, 1, &err), -1);
    assert_non_null(strstr(err.msg, "must be 1 to 31 characters"));
    CkptSection empty_name = {.name = "", .data = &x, .bytes = 4};
    assert_int_equal(ckpt_write(g_path, &empty_name, 1, &err), -1);
    CkptSection no_data = {.name = "a", .data = NULL, .bytes = 4};
    assert_int_equal(ckpt_write(g_path, &no_data, 1, &err), -1);
    assert_non_null(strstr(err.msg, "has no data"));
    assert_int_equal(ckpt_write(tu_path("missing/c.bin"), dup, 1, &err), -1);
    assert_non_null(strstr(err.msg, "cannot create"));
    /* 31 characters is the longest name */
    CkptSection max_name = {.name = "abcdefghijklmnopqrstuvwxyz01234", .data = &x, .bytes = 4};
    assert_int_equal(ckpt_write(g_path, &max_name, 1, &err), 0);
    CkptFile *f = ckpt_open(g_path, &err);
    assert_non_null(f);
    assert_non_null(ckpt_section(f, "abcdefghijklmnopqrstuvwxyz01234", NULL));
    ckpt_close(f);
}

static void test_truncated(void **state) {
    (void)state;
    write_sample(g_path);
    size_t len;
    uint8_t *full = tu_read_bytes(g_path, &len);
    char msg[256];
    /* inside each section: the message names it, where it ends and what the file has */
    const char *names[] = {"config", "params", "empty", "moments"};
    for (int i = 0; i < 4; i++) {
        Span s = sample_span(full, i);
        if (s.bytes == 0) continue;
        size_t cuts[] = {s.off, s.off + 1, s.off + s.bytes - 1};
        for (size_t c = 0; c < BP_ARRAY_LEN(cuts); c++) {
            tu_write_bytes(g_path, full, cuts[c]);
            snprintf(msg, sizeof msg, "truncated: section '%s' ends at byte %zu but the file has %zu",
                     names[i], s.off + s.bytes, cuts[c]);
            /* a cut exactly at a section's start may fall in the padding of the one before */
            if (c == 0 && i > 0) expect_refused(g_path, NULL, "truncated");
            else expect_refused(g_path, msg, NULL);
        }
    }
    /* in the header and the table */
    tu_write_bytes(g_path, full, 0);
    expect_refused(g_path, "truncated: the file is empty", NULL);
    tu_write_bytes(g_path, full, 5);
    expect_refused(g_path, "truncated: the header needs 16 bytes but the file has 5", NULL);
    tu_write_bytes(g_path, full, 12);
    expect_refused(g_path, "truncated: the header needs 16 bytes but the file has 12", NULL);
    tu_write_bytes(g_path, full, 100);
    expect_refused(g_path, "truncated: the table of 4 sections ends at byte 228 but the file has 100",
                   NULL);
    /* every other cut is refused too */
    for (size_t cut = 0; cut < len; cut++) {
        tu_write_bytes(g_path, full, cut);
        expect_refused(g_path, NULL, "truncated");
    }
    free(full);
}

static void test_bit_flips(void **state) {
    (void)state;
    write_sample(g_path);
    size_t len;
    uint8_t *full = tu_read_bytes(g_path, &len);
    uint8_t *buf = malloc(len);
    assert_non_null(buf);
    size_t table_end = 16 + 4 * 52;
    const char *names[] = {"config", "params", "empty", "moments"};
    char msg[128];
    /* one bit flipped in every byte of the file (a different bit each time): always refused, with
     * the message the damaged part calls for */
    for (size_t at = 0; at < len; at++) {
        memcpy(buf, full, len);
        buf[at] ^= (uint8_t)(1u << (at % 8));
        tu_write_bytes(g_path, buf, len);
        if (at < 8) {
            expect_refused(g_path, "not a bert_pretrain checkpoint (bad magic)", NULL);
        } else if (at < 12) {
            expect_refused(g_path, NULL, "version");
        } else if (at < table_end + 4) {
            /* a changed count moves where the table CRC is read: either message is right */
            BpError err = {0};
            CkptFile *f = ckpt_open(g_path, &err);
            assert_null(f);
            if (!strstr(err.msg, "header CRC mismatch (file corrupt?)") &&
                !(at < 16 && strstr(err.msg, "truncated")))
                fail_msg("flip at byte %zu: %s", at, err.msg);
        } else {
            int sec = -1;
            for (int i = 0; i < 4; i++) {
                Span s = sample_span(full, i);
                if (at >= s.off && at < s.off + s.bytes) sec = i;
            }
            if (sec >= 0) {
                snprintf(msg, sizeof msg, "section '%s' CRC mismatch (file corrupt?)", names[sec]);
                expect_refused(g_path, msg, NULL);
            } else {
                expect_refused(g_path, NULL, "padding before section");
            }
        }
    }
    free(buf);
    free(full);
}

static void test_wrong_magic_and_newer_version(void **state) {
    (void)state;
    const char text[] = "step: 100\nthis is a YAML file, not a checkpoint\n";
    tu_write_bytes(g_path, text, sizeof text - 1);
    expect_refused(g_path, "not a bert_pretrain checkpoint (bad magic)", NULL);
    tu_write_bytes(g_path, "BPCK", 4); /* a short file with the right start is truncated, not foreign */
    expect_refused(g_path, "truncated: the header needs 16 bytes but the file has 4", NULL);
    tu_write_bytes(g_path, "BPSHARD1", 8);
    expect_refused(g_path, "not a bert_pretrain checkpoint (bad magic)", NULL);

    write_sample(g_path);
    size_t len;
    uint8_t *raw = tu_read_bytes(g_path, &len);
    raw[8] = 7; /* version 7, CRC not updated: the version is judged first */
    tu_write_bytes(g_path, raw, len);
    expect_refused(g_path, "version 7 is newer than this program reads (1)", NULL);
    raw[8] = 0;
    tu_write_bytes(g_path, raw, len);
    expect_refused(g_path, "version 0 is not a checkpoint version (file corrupt?)", NULL);
    free(raw);

    /* trailing bytes after the last section */
    write_sample(g_path);
    FILE *fp = fopen(g_path, "ab");
    assert_non_null(fp);
    fputs("xx", fp);
    fclose(fp);
    expect_refused(g_path, NULL, "trailing data");

    const char *missing = tu_path("nope.bin");
    /* what the operating system refuses is not damage */
    expect_refused_kind(missing, NULL, "cannot open", BP_ERR_IO);
    expect_refused_kind(g_dir, "not a regular file", NULL, BP_ERR_IO);
}

/* A table whose CRC is right but whose content is hostile (as a buggy or malicious writer would
 * produce): names and bounds are still checked. */
static void expect_refused_recrc(uint8_t *buf, size_t len, const char *part) {
    size_t table_end = 16 + 4 * 52;
    uint32_t crc = bp_crc32(0, buf, table_end);
    for (int b = 0; b < 4; b++) buf[table_end + b] = (uint8_t)(crc >> (8 * b));
    tu_write_bytes(g_path, buf, len);
    expect_refused(g_path, NULL, part);
}

static void test_hostile_table_with_valid_crc(void **state) {
    (void)state;
    write_sample(g_path);
    size_t len;
    uint8_t *full = tu_read_bytes(g_path, &len);
    uint8_t *buf = malloc(len);
    assert_non_null(buf);
    uint8_t *sec1 = buf + 16 + 52; /* the table entry of "params" */

    memcpy(buf, full, len);
    memcpy(sec1, "config", 6);
    expect_refused_recrc(buf, len, "section 'config' appears twice");

    memcpy(buf, full, len);
    buf[16] = 0; /* empty name */
    expect_refused_recrc(buf, len, "section 0: name is not 1 to 31 characters NUL-padded");

    memcpy(buf, full, len);
    buf[16 + 20] = 'x'; /* a byte after the name's NUL */
    expect_refused_recrc(buf, len, "section 0: name is not 1 to 31 characters NUL-padded");

    memcpy(buf, full, len);
    memset(buf + 16, 'a', 32); /* no NUL at all */
    expect_refused_recrc(buf, len, "section 0: name is not 1 to 31 characters NUL-padded");

    memcpy(buf, full, len);
    buf[16 + 32] ^= 8; /* config's offset moved by 8: a gap */
    expect_refused_recrc(buf, len, "section 'config' starts at byte");

    memcpy(buf, full, len);
    sec1[32 + 7] = 0xff; /* params' offset far past the end */
    expect_refused_recrc(buf, len, "section 'params' starts at byte");

    memcpy(buf, full, len);
    sec1[40 + 7] = 0xff; /* params' size near 2^64: must not wrap */
    expect_refused_recrc(buf, len, "truncated: section 'params' ends at byte");

    memcpy(buf, full, len);
    sec1[40] = 0; /* params shorter: the next section no longer starts where params ends */
    expect_refused_recrc(buf, len, "section 'empty' starts at byte");

    /* a count so large the table cannot fit */
    memcpy(buf, full, len);
    buf[15] = 0x7f;
    tu_write_bytes(g_path, buf, len);
    expect_refused(g_path, NULL, "truncated: the table of 2130706436 sections");
    free(buf);
    free(full);
}

/* A table of more sections than CKPT_MAX_SECTIONS, every CRC valid: refused before the pairwise
 * name check, which made 50000 empty sections (2.6 MB) take 11 s to open (found by fuzzing). */
static void test_too_many_sections(void **state) {
    (void)state;
    uint32_t n = CKPT_MAX_SECTIONS + 1;
    size_t table_end = 16 + (size_t)n * 52, len = (table_end + 4 + 7) / 8 * 8;
    uint8_t *buf = calloc(1, len);
    assert_non_null(buf);
    memcpy(buf, CKPT_MAGIC, 8);
    buf[8] = CKPT_VERSION;
    for (int b = 0; b < 4; b++) buf[12 + b] = (uint8_t)(n >> (8 * b));
    for (uint32_t i = 0; i < n; i++) {
        uint8_t *e = buf + 16 + (size_t)i * 52;
        snprintf((char *)e, CKPT_NAME_LEN, "s%u", i);
        for (int b = 0; b < 8; b++) e[32 + b] = (uint8_t)(len >> (8 * b)); /* empty, at the end */
    }
    uint32_t crc = bp_crc32(0, buf, table_end);
    for (int b = 0; b < 4; b++) buf[table_end + b] = (uint8_t)(crc >> (8 * b));
    tu_write_bytes(g_path, buf, len);
    expect_refused(g_path, NULL, "1025 sections, more than the 1024 a checkpoint holds");
    free(buf);

    CkptSection *many = calloc(n, sizeof *many);
    assert_non_null(many);
    for (uint32_t i = 0; i < n; i++) many[i] = (CkptSection){.name = "x", .data = NULL, .bytes = 0};
    BpError err = {0};
    assert_int_equal(ckpt_write(tu_path("many.bin"), many, (int)n, &err), -1);
    assert_non_null(strstr(err.msg, "1025 sections, at most 1024"));
    free(many);
}

static void touch(const char *dir, const char *name) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    tu_write_bytes(p, "x", 1);
}

static void test_list_and_prune(void **state) {
    (void)state;
    const char *run = tu_path("run");
    BpError err = {0};
    assert_int_equal(ckpt_list(run, NULL, NULL, 0, &err), 0); /* no run directory yet */
    assert_int_equal(bp_mkdir_p(run, &err), 0);
    assert_int_equal(ckpt_list(run, NULL, NULL, 0, &err), 0);
    long made[] = {100, 20, 300, 123456789, 0};
    for (size_t i = 0; i < BP_ARRAY_LEN(made); i++) {
        char p[4096];
        ckpt_path(p, sizeof p, run, made[i]);
        write_sample(p);
    }
    char p[4096];
    ckpt_path(p, sizeof p, run, 42);
    char want[4096];
    snprintf(want, sizeof want, "%s/ckpt-00000042.bin", run);
    assert_string_equal(p, want);
    /* names that are not checkpoints, or not spelled the way ckpt_path spells them */
    const char *junk[] = {"ckpt-00000400.bin.tmp.1234", "ckpt-0000010.bin", "ckpt-000000100.bin",
                          "ckpt-abc.bin", "ckpt-.bin", "ckpt-00000500.bin~", "metrics.jsonl",
                          "ckpt--0000001.bin", "ckpt-99999999999999999999999.bin"};
    for (size_t i = 0; i < BP_ARRAY_LEN(junk); i++) touch(run, junk[i]);

    char paths[3][4096];
    long steps[3];
    assert_int_equal(ckpt_list(run, paths, steps, 3, &err), 5);
    assert_int_equal(steps[0], 123456789);
    assert_int_equal(steps[1], 300);
    assert_int_equal(steps[2], 100);
    snprintf(want, sizeof want, "%s/ckpt-123456789.bin", run);
    assert_string_equal(paths[0], want);
    snprintf(want, sizeof want, "%s/ckpt-00000300.bin", run);
    assert_string_equal(paths[1], want);

    assert_int_equal(ckpt_prune_before(run, 300, &err), 3);
    long all[8];
    assert_int_equal(ckpt_list(run, NULL, all, 8, &err), 2);
    assert_int_equal(all[0], 123456789);
    assert_int_equal(all[1], 300);
    for (size_t i = 0; i < BP_ARRAY_LEN(junk); i++) { /* only checkpoints are pruned */
        snprintf(p, sizeof p, "%s/%s", run, junk[i]);
        assert_int_equal(access(p, F_OK), 0);
    }
    assert_int_equal(ckpt_prune_before(run, 0, &err), 0);
    assert_int_equal(ckpt_prune_before(run, 300, &err), 0); /* the step itself stays */
    assert_int_equal(ckpt_prune_before(run, 301, &err), 1);
    assert_int_equal(ckpt_list(run, NULL, all, 8, &err), 1);
    assert_int_equal(all[0], 123456789);
    assert_int_equal(ckpt_prune_before(run, 123456790, &err), 1);
    assert_int_equal(ckpt_list(run, NULL, NULL, 0, &err), 0);
    /* a file where the run directory should be */
    assert_int_equal(ckpt_list(g_path, NULL, NULL, 0, &err), -1);
    assert_non_null(strstr(err.msg, "cannot list checkpoints"));
}

static void test_interrupted_write(void **state) {
    (void)state;
    const char *run = tu_path("run2");
    char p100[4096], p200[4096];
    BpError err = {0};
    assert_int_equal(bp_mkdir_p(run, &err), 0);
    ckpt_path(p100, sizeof p100, run, 100);
    ckpt_path(p200, sizeof p200, run, 200);
    write_sample(p100);
    size_t len;
    uint8_t *before = tu_read_bytes(p100, &len);

    /* a process killed while writing step 200: its temporary stays, never renamed */
    AtomicFile af;
    assert_int_equal(bp_atomic_open(&af, p200, &err), 0);
    fwrite("BPCKPT01\1\0\0\0", 1, 12, af.fp);
    fclose(af.fp);
    /* and one killed while rewriting step 100 in place */
    AtomicFile af2;
    assert_int_equal(bp_atomic_open(&af2, p100, &err), 0);
    fwrite("garbage", 1, 7, af2.fp);
    fclose(af2.fp);
    assert_int_equal(access(af.tmp_path, F_OK), 0);

    long steps[4];
    char paths[4][4096];
    assert_int_equal(ckpt_list(run, paths, steps, 4, &err), 1);
    assert_int_equal(steps[0], 100);
    assert_string_equal(paths[0], p100);
    size_t len2;
    uint8_t *after = tu_read_bytes(p100, &len2);
    assert_int_equal(len2, len);
    assert_memory_equal(after, before, len);
    CkptFile *f = ckpt_open(p100, &err);
    if (!f) fail_msg("%s", err.msg);
    size_t bytes;
    assert_memory_equal(ckpt_section(f, "params", &bytes), g_params, sizeof g_params);
    ckpt_close(f);
    assert_int_equal(ckpt_prune_before(run, 100, &err), 0); /* temporaries are not checkpoints */
    assert_int_equal(access(af.tmp_path, F_OK), 0);
    free(before);
    free(after);
}

/* A corrupt checkpoint set aside is out of every listing, kept under a name that says why. */
static void test_set_aside(void **state) {
    (void)state;
    const char *run = tu_path("run3");
    BpError err = {0};
    assert_int_equal(bp_mkdir_p(run, &err), 0);
    char p[4096], aside[4200], want[4200];
    ckpt_path(p, sizeof p, run, 16);
    write_sample(p);
    assert_int_equal(ckpt_list(run, NULL, NULL, 0, &err), 1);
    assert_int_equal(ckpt_set_aside(p, aside, sizeof aside, &err), 0);
    snprintf(want, sizeof want, "%s.corrupt", p);
    assert_string_equal(aside, want);
    assert_int_equal(access(aside, F_OK), 0);
    assert_int_equal(ckpt_list(run, NULL, NULL, 0, &err), 0);
    assert_int_equal(ckpt_prune_before(run, 1000, &err), 0);
    assert_int_equal(access(aside, F_OK), 0);
    assert_int_equal(ckpt_set_aside(p, aside, sizeof aside, &err), -1); /* gone already */
    assert_non_null(strstr(err.msg, "cannot rename"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_streamed_section),
        cmocka_unit_test(test_write_refuses_bad_sections),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_bit_flips),
        cmocka_unit_test(test_wrong_magic_and_newer_version),
        cmocka_unit_test(test_hostile_table_with_valid_crc),
        cmocka_unit_test(test_too_many_sections),
        cmocka_unit_test(test_list_and_prune),
        cmocka_unit_test(test_interrupted_write),
        cmocka_unit_test(test_set_aside),
    };
    return cmocka_run_group_tests(tests, setup, tu_dir_teardown);
}
