/* Unit tests for common.c and rng.h: error messages, atomic files, CRC32, counter-based RNG; and
 * the rm -rf of tests/testutil.h, which must not reach outside its directory. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"
#include "rng.h"
#include "testutil.h"

static int setup(void **state) {
    (void)state;
    return tu_dir_create("common", "out.txt");
}

static void test_error_prefix(void **state) {
    (void)state;
    BpError err = {0};
    assert_int_equal(bp_fail_usage(&err, "key '%s' unknown", "lrr"), -1);
    assert_int_equal(bp_error_status(&err), BP_EXIT_USAGE);
    bp_err_prefix(&err, "%s:%d", "a.yaml", 3);
    assert_string_equal(err.msg, "a.yaml:3: key 'lrr' unknown");
}

static void test_atomic_file(void **state) {
    (void)state;
    BpError err = {0};
    AtomicFile af;
    assert_int_equal(bp_atomic_open(&af, g_path, &err), 0);
    fputs("first", af.fp);
    assert_int_equal(bp_atomic_commit(&af, &err), 0);
    /* an aborted rewrite leaves the old content and no temporary behind */
    assert_int_equal(bp_atomic_open(&af, g_path, &err), 0);
    fputs("second", af.fp);
    bp_atomic_abort(&af);
    size_t len = 0;
    char *text = bp_read_file(g_path, &len, &err);
    assert_non_null(text);
    assert_string_equal(text, "first");
    assert_int_equal(access(af.tmp_path, F_OK), -1);
    free(text);
}

static void test_read_missing_file(void **state) {
    (void)state;
    BpError err = {0};
    assert_null(bp_read_file("/nonexistent/x.yaml", NULL, &err));
    assert_non_null(strstr(err.msg, "/nonexistent/x.yaml: cannot open"));
}

static void test_crc32_known_value(void **state) {
    (void)state;
    /* the standard check value of CRC-32/ISO-HDLC */
    assert_int_equal(bp_crc32(0, "123456789", 9), 0xCBF43926u);
    uint32_t chained = bp_crc32(bp_crc32(0, "1234", 4), "56789", 5);
    assert_int_equal(chained, 0xCBF43926u);
}

static void test_rng_is_pure_and_uniform(void **state) {
    (void)state;
    assert_true(rng_hash(1, 2, 3, 4) == rng_hash(1, 2, 3, 4));
    assert_true(rng_hash(1, 2, 3, 4) != rng_hash(1, 2, 3, 5));
    assert_true(rng_hash(1, 2, 3, 4) != rng_hash(2, 2, 3, 4));
    RngStream s = rng_stream(42, RNG_TEST, 0);
    double sum = 0, sumsq = 0;
    int n = 200000, below[10] = {0};
    for (int i = 0; i < n; i++) {
        double u = rng_next_u01(&s);
        assert_true(u >= 0.0 && u < 1.0);
        below[(int)(u * 10)]++;
        double z = rng_next_normal(&s);
        sum += z;
        sumsq += z * z;
    }
    for (int k = 0; k < 10; k++) assert_in_range(below[k], n / 10 - 1000, n / 10 + 1000);
    assert_true(sum / n > -0.01 && sum / n < 0.01);
    assert_true(sumsq / n > 0.98 && sumsq / n < 1.02);
}

/* The fixtures' rm -rf empties nested directories and removes a link without following it. */
static void test_rm_rf_stays_inside(void **state) {
    (void)state;
    char outside[] = "/tmp/bp_common_outside_XXXXXX", kept[64];
    assert_non_null(mkdtemp(outside));
    snprintf(kept, sizeof kept, "%s/kept", outside);
    tu_write_bytes(kept, "k", 1);
    assert_int_equal(mkdir(tu_path("a"), 0700), 0);
    assert_int_equal(mkdir(tu_path("a/b"), 0700), 0);
    tu_write_bytes(tu_path("a/b/f"), "f", 1);
    assert_int_equal(symlink(outside, tu_path("a/link")), 0);
    assert_int_equal(tu_rm_rf(tu_path("a")), 0);
    assert_int_equal(access(tu_path("a"), F_OK), -1);
    size_t len = 0;
    uint8_t *k = tu_read_bytes(kept, &len);
    assert_int_equal(len, 1);
    free(k);
    assert_int_equal(tu_rm_rf(outside), 0);
}

/* A terminating signal (SIGHUP, SIGPIPE, SIGTERM...) in a process that has nothing to save removes
 * the temporaries of its open atomic files and the other files on the cleanup list, and the
 * process still dies by that signal; a committed file stays. */
static void test_signal_cleanup(void **state) {
    (void)state;
    const int sigs[] = {SIGTERM, SIGHUP, SIGPIPE, SIGINT};
    for (size_t i = 0; i < BP_ARRAY_LEN(sigs); i++) {
        char tmp_path[4200] = "", listed[512], kept[512];
        snprintf(listed, sizeof listed, "%s/built-%zu.txt", g_dir, i);
        snprintf(kept, sizeof kept, "%s/kept-%zu.txt", g_dir, i);
        int pipefd[2];
        assert_int_equal(pipe(pipefd), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            bp_cleanup_on_stop_signals();
            BpError err = {0};
            AtomicFile done, open_one;
            if (bp_atomic_open(&done, kept, &err) || bp_atomic_commit(&done, &err)) _exit(3);
            if (bp_atomic_open(&open_one, g_path, &err)) _exit(3);
            fputs("half", open_one.fp);
            fflush(open_one.fp);
            FILE *f = fopen(listed, "w");
            if (!f) _exit(3);
            fclose(f);
            bp_cleanup_add(listed);
            if (write(pipefd[1], open_one.tmp_path, strlen(open_one.tmp_path) + 1) < 0) _exit(3);
            for (;;) pause();
        }
        close(pipefd[1]);
        assert_true(read(pipefd[0], tmp_path, sizeof tmp_path) > 0);
        close(pipefd[0]);
        assert_int_equal(access(tmp_path, F_OK), 0);
        kill(pid, sigs[i]);
        int status = 0;
        waitpid(pid, &status, 0);
        assert_true(WIFSIGNALED(status));
        assert_int_equal(WTERMSIG(status), sigs[i]);
        assert_int_equal(access(tmp_path, F_OK), -1);
        assert_int_equal(access(listed, F_OK), -1);
        assert_int_equal(access(kept, F_OK), 0);
    }
    assert_string_equal(bp_signal_name(SIGHUP), "SIGHUP");
    assert_string_equal(bp_signal_name(SIGKILL), "signal 9");
}

/* mkdir -p over a file says so instead of succeeding (EEXIST) and failing later inside it. */
static void test_mkdir_over_a_file(void **state) {
    (void)state;
    BpError err = {0};
    tu_write_bytes(g_path, "x", 1);
    assert_int_equal(bp_mkdir_p(g_path, &err), -1);
    if (!strstr(err.msg, "a file of that name exists")) fail_msg("%s", err.msg);
    char below[600];
    snprintf(below, sizeof below, "%s/run", g_path);
    assert_int_equal(bp_mkdir_p(below, &err), -1);
    if (!strstr(err.msg, "a file of that name exists") && !strstr(err.msg, "Not a directory"))
        fail_msg("%s", err.msg);
    snprintf(below, sizeof below, "%s//a//b/", g_dir);
    assert_int_equal(bp_mkdir_p(below, &err), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_error_prefix),
        cmocka_unit_test_setup_teardown(test_atomic_file, setup, tu_dir_teardown),
        cmocka_unit_test(test_read_missing_file),
        cmocka_unit_test(test_crc32_known_value),
        cmocka_unit_test(test_rng_is_pure_and_uniform),
        cmocka_unit_test_setup_teardown(test_rm_rf_stays_inside, setup, tu_dir_teardown),
        cmocka_unit_test_setup_teardown(test_signal_cleanup, setup, tu_dir_teardown),
        cmocka_unit_test_setup_teardown(test_mkdir_over_a_file, setup, tu_dir_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
