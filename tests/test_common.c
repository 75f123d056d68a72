/* Unit tests for common.c and rng.h: error messages, atomic files, CRC32, counter-based RNG. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "rng.h"

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
    char dir[] = "/tmp/bp_test_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/out.txt", dir);
    BpError err = {0};
    AtomicFile af;
    assert_int_equal(bp_atomic_open(&af, path, &err), 0);
    fputs("first", af.fp);
    assert_int_equal(bp_atomic_commit(&af, &err), 0);
    /* an aborted rewrite leaves the old content and no temporary behind */
    assert_int_equal(bp_atomic_open(&af, path, &err), 0);
    fputs("second", af.fp);
    bp_atomic_abort(&af);
    size_t len = 0;
    char *text = bp_read_file(path, &len, &err);
    assert_non_null(text);
    assert_string_equal(text, "first");
    assert_int_equal(access(af.tmp_path, F_OK), -1);
    free(text);
    unlink(path);
    rmdir(dir);
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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_error_prefix),
        cmocka_unit_test(test_atomic_file),
        cmocka_unit_test(test_read_missing_file),
        cmocka_unit_test(test_crc32_known_value),
        cmocka_unit_test(test_rng_is_pure_and_uniform),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
