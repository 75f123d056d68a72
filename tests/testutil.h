/* testutil.h: the file fixtures the C test programs share. One test program is one translation
 * unit, so the header defines its globals and functions (static) for the program that includes it.
 *
 * A scratch directory per test, removed with everything in it afterwards:
 *
 *     #include "testutil.h"
 *     static int setup(void **state) { (void)state; return tu_dir_create("ckpt", "c.bin"); }
 *     ...
 *     cmocka_unit_test_setup_teardown(test_x, setup, tu_dir_teardown),
 *
 * Each test then has g_dir (a fresh /tmp/bp_ckpt_XXXXXX) and g_path (g_dir/c.bin; pass NULL for no
 * such file). Passed to cmocka_run_group_tests instead, the two give one directory for the group.
 * tu_path("x") names another file in g_dir; tu_write_bytes and tu_read_bytes write and read a whole
 * file and fail the test on an error (tu_write_gz writes one gzip-compressed, tu_same_bytes compares
 * two). A test whose code under test must leave nothing in g_dir but g_path (no temporary file
 * of a failed write) tears down with tu_dir_teardown_clean, as the test's own teardown: cmocka
 * (1.1) fails a test whose teardown fails, but a failed group teardown only prints an error, and
 * the program still exits 0 with every test passed.
 *
 * Converting a test file: include this header, delete its own g_dir / g_path, setup / teardown,
 * write_bytes / read_bytes and rm -rf helper; setup becomes the one line above, teardown is
 * tu_dir_teardown, write_bytes(p, b, n) is tu_write_bytes(p, b, n) (a write_bytes(b, n) that wrote
 * g_path is tu_write_bytes(g_path, b, n)), read_bytes is tu_read_bytes, snprintf(p, .., "%s/name",
 * g_dir) is tu_path("name"). */
#ifndef BP_TESTUTIL_H
#define BP_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <ftw.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "common.h"

static char g_dir[128];  /* the scratch directory */
static char g_path[256]; /* the file in it named at tu_dir_create */

/* Makes g_dir = /tmp/bp_TAG_XXXXXX and g_path = g_dir/FILE (empty when FILE is NULL); 0 or -1, as
 * a cmocka setup returns. */
static inline int tu_dir_create(const char *tag, const char *file) {
    int n = snprintf(g_dir, sizeof g_dir, "/tmp/bp_%s_XXXXXX", tag);
    if (n < 0 || (size_t)n >= sizeof g_dir || !mkdtemp(g_dir)) return -1;
    g_path[0] = '\0';
    if (!file) return 0;
    n = snprintf(g_path, sizeof g_path, "%s/%s", g_dir, file);
    return n < 0 || (size_t)n >= sizeof g_path ? -1 : 0;
}

static inline int tu_remove_entry(const char *path, const struct stat *st, int type,
                                  struct FTW *ftw) {
    (void)st, (void)type, (void)ftw;
    return remove(path);
}

/* rm -rf DIR without a shell: children first (FTW_DEPTH), links removed rather than followed. */
static inline int tu_rm_rf(const char *dir) {
    return nftw(dir, tu_remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* The cmocka teardown for tu_dir_create. */
static inline int tu_dir_teardown(void **state) {
    (void)state;
    return tu_rm_rf(g_dir);
}

/* The teardown for a test that must leave only g_path in g_dir: removes g_path, then fails, naming
 * each entry left, when g_dir is not empty (removing it all the same). */
static inline int tu_dir_teardown_clean(void **state) {
    (void)state;
    if (g_path[0]) unlink(g_path);
    if (rmdir(g_dir) == 0) return 0;
    DIR *d = opendir(g_dir);
    for (struct dirent *e; d && (e = readdir(d));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            fprintf(stderr, "left behind in %s: %s\n", g_dir, e->d_name);
    if (d) closedir(d);
    tu_rm_rf(g_dir);
    return -1;
}

/* g_dir/NAME, in one of sixteen buffers used in turn (so a test can hold several at once). */
static inline const char *tu_path(const char *name) {
    static char paths[16][320];
    static unsigned next;
    char *p = paths[next++ % 16];
    int n = snprintf(p, sizeof paths[0], "%s/%s", g_dir, name);
    if (n < 0 || (size_t)n >= sizeof paths[0]) fail_msg("path %s/%s too long", g_dir, name);
    return p;
}

/* Writes LEN bytes as the whole of PATH, as a new file: rewriting one in place makes ext4 flush it
 * on close (auto_da_alloc), and a mapping of the old file the code under test still holds keeps
 * its bytes. */
static inline void tu_write_bytes(const char *path, const void *buf, size_t len) {
    unlink(path);
    FILE *fp = fopen(path, "wb");
    if (!fp) fail_msg("cannot create %s", path);
    assert_int_equal(fwrite(buf, 1, len, fp), len);
    assert_int_equal(fclose(fp), 0);
}

/* The whole of PATH (NUL-terminated, *len bytes; free it); fails the test when it cannot be
 * read. */
static inline uint8_t *tu_read_bytes(const char *path, size_t *len) {
    BpError err = {0};
    uint8_t *buf = (uint8_t *)bp_read_file(path, len, &err);
    if (!buf) fail_msg("%s", err.msg);
    return buf;
}

/* Writes LEN bytes gzip-compressed as the whole of PATH. */
static inline void tu_write_gz(const char *path, const void *buf, size_t len) {
    gzFile g = gzopen(path, "wb");
    if (!g) fail_msg("cannot create %s", path);
    assert_int_equal(gzwrite(g, buf, (unsigned)len), (int)len);
    assert_int_equal(gzclose(g), Z_OK);
}

/* Whether files A and B hold the same bytes; fails the test when either cannot be read. */
static inline bool tu_same_bytes(const char *a, const char *b) {
    size_t na, nb;
    uint8_t *x = tu_read_bytes(a, &na), *y = tu_read_bytes(b, &nb);
    bool same = na == nb && memcmp(x, y, na) == 0;
    free(x);
    free(y);
    return same;
}

#endif
