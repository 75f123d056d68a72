/* Unit tests for safetensors.c: round trips, a file laid out byte by byte as the format's spec
 * says (the Python safetensors package is not installed here), and hostile files - every one must
 * be refused with a message naming the file and the problem, never a crash (run under ASan). */
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

#include "safetensors.h"
#include "testutil.h"

static int setup(void **state) {
    (void)state;
    return tu_dir_create("st", "t.safetensors");
}

/* A safetensors file from its parts: u64 LE header length, the header text as given (no padding
 * added), then data_len bytes 0, 1, 2, ... */
static void write_st_raw(const char *path, const char *header, size_t hlen, size_t data_len) {
    size_t len = 8 + hlen + data_len;
    uint8_t *buf = malloc(len);
    assert_non_null(buf);
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
    memcpy(buf + 8, header, hlen);
    for (size_t i = 0; i < data_len; i++) buf[8 + hlen + i] = (uint8_t)i;
    tu_write_bytes(path, buf, len);
    free(buf);
}

static void write_st(const char *path, const char *header, size_t data_len) {
    write_st_raw(path, header, strlen(header), data_len);
}

/* st_open must refuse the file at g_path with a message holding the path and every needle. */
static void expect_refused_file(const char *needle1, const char *needle2) {
    StFile f;
    BpError err = {0};
    int rc = st_open(&f, g_path, &err);
    if (rc == 0) {
        st_close(&f);
        fail_msg("accepted a file that should be refused (expected '%s')", needle1);
    }
    const char *needles[3] = {g_path, needle1, needle2};
    for (int i = 0; i < 3; i++)
        if (needles[i] && !strstr(err.msg, needles[i]))
            fail_msg("message lacks '%s': %s", needles[i], err.msg);
    assert_null(f.map);
    assert_null(f.tensors);
}

static void expect_refused(const char *header, size_t data_len, const char *needle1,
                           const char *needle2) {
    write_st(g_path, header, data_len);
    expect_refused_file(needle1, needle2);
}

/* ------------------------------------------------------------------------------------------ */

static void test_round_trip(void **state) {
    (void)state;
    float w[6] = {1.5f, -2.25f, 3.0f, 0.0f, -0.0f, 1e-30f};
    int32_t ids[5] = {0, -1, 2147483647, -2147483647 - 1, 42}; /* 20 bytes: the I64 after is misaligned */
    int64_t big[8] = {INT64_MAX, INT64_MIN, 0, 1, -1, 1ll << 40, 7, 8};
    float scalar = 3.25f;
    float cube[2 * 1 * 3 * 2];
    for (int i = 0; i < 12; i++) cube[i] = (float)i * 0.5f;
    StEntry es[] = {
        {"encoder.weight", ST_F32, 2, {2, 3}, w},
        {"ids", ST_I32, 1, {5}, ids},
        {"big \"quoted\" \\ name\twith tab", ST_I64, 3, {2, 2, 2}, big},
        {"scalar", ST_F32, 0, {0}, &scalar},
        {"empty", ST_F32, 2, {0, 4}, NULL},
        {"cube", ST_F32, 4, {2, 1, 3, 2}, cube},
        {"caf\xc3\xa9", ST_I32, 1, {0}, NULL},
        /* code points YAML refuses raw or reads as line breaks: the writer must escape them */
        {"del\x7f c1\xc2\x80 nel\xc2\x85 ls\xe2\x80\xa8 nonchar\xef\xbf\xbf astral\xf0\x9f\x98\x80",
         ST_I32, 1, {0}, NULL},
    };
    int n = (int)BP_ARRAY_LEN(es);
    BpError err = {0};
    assert_int_equal(st_write(g_path, es, n, &err), 0);

    StFile f;
    if (st_open(&f, g_path, &err) != 0) fail_msg("%s", err.msg);
    assert_int_equal(f.n, n);
    for (int i = 0; i < n; i++) {
        const StTensor *t = &f.tensors[i];
        assert_string_equal(t->name, es[i].name); /* file order = the order given */
        assert_ptr_equal(st_find(&f, es[i].name), t);
        assert_int_equal(t->dtype, es[i].dtype);
        assert_int_equal(t->ndim, es[i].ndim);
        size_t numel = 1;
        for (int d = 0; d < t->ndim; d++) {
            assert_int_equal(t->shape[d], es[i].shape[d]);
            numel *= es[i].shape[d];
        }
        assert_int_equal(st_numel(t), numel);
        size_t esize = t->dtype == ST_I64 ? 8 : 4;
        assert_int_equal(t->end - t->begin, numel * esize);
        const void *p = st_data(&f, t);
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % esize, 0); /* readable as its element type */
        if (numel) assert_memory_equal(p, es[i].data, numel * esize);
    }
    /* the writer lays tensors out back to back, in order, after an 8-aligned header */
    assert_int_equal(f.tensors[0].begin, 0);
    for (int i = 1; i < n; i++) assert_int_equal(f.tensors[i].begin, f.tensors[i - 1].end);
    assert_int_equal((size_t)(f.data - (const uint8_t *)f.map) % 8, 0);
    assert_int_equal(f.data_len, f.tensors[n - 1].end);
    assert_int_equal(st_numel(st_find(&f, "scalar")), 1);
    assert_true(*(const float *)st_data(&f, st_find(&f, "scalar")) == 3.25f);
    assert_null(st_find(&f, "missing"));
    assert_null(st_find(&f, "encoder.weigh"));
    assert_string_equal(st_dtype_name(ST_F32), "F32");
    assert_string_equal(st_dtype_name(ST_I32), "I32");
    assert_string_equal(st_dtype_name(ST_I64), "I64");
    st_close(&f);
    assert_null(f.map);

    /* the header is plain JSON with the metadata the format's Python tools write */
    size_t len;
    uint8_t *raw = tu_read_bytes(g_path, &len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | raw[i];
    assert_int_equal(hlen % 8, 0);
    assert_memory_equal(raw + 8, "{\"__metadata__\":{\"format\":\"pt\"},\"encoder.weight\":"
                                 "{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}",
                        84);
    assert_non_null(strstr((const char *)raw + 8, "\"big \\\"quoted\\\" \\\\ name\\u0009with tab\""));
    free(raw);
}

static void test_write_empty_file_and_rewrite(void **state) {
    (void)state;
    BpError err = {0};
    StFile f;
    assert_int_equal(st_write(g_path, NULL, 0, &err), 0);
    if (st_open(&f, g_path, &err) != 0) fail_msg("%s", err.msg);
    assert_int_equal(f.n, 0);
    assert_int_equal(f.data_len, 0);
    st_close(&f);
    /* a failed write leaves the previous file untouched and no temporary behind */
    float x = 1;
    StEntry bad[] = {{"a", ST_F32, 0, {0}, &x}, {"a", ST_F32, 0, {0}, &x}};
    assert_int_equal(st_write(g_path, bad, 2, &err), -1);
    assert_non_null(strstr(err.msg, g_path));
    assert_non_null(strstr(err.msg, "tensor 'a': name given twice"));
    if (st_open(&f, g_path, &err) != 0) fail_msg("%s", err.msg);
    assert_int_equal(f.n, 0);
    st_close(&f);
    StEntry reserved = {"__metadata__", ST_F32, 0, {0}, &x};
    assert_int_equal(st_write(g_path, &reserved, 1, &err), -1);
    StEntry bad_utf8 = {"\xff", ST_F32, 0, {0}, &x};
    assert_int_equal(st_write(g_path, &bad_utf8, 1, &err), -1);
    StEntry too_many = {"x", ST_F32, 5, {1, 1, 1, 1}, &x};
    assert_int_equal(st_write(g_path, &too_many, 1, &err), -1);
    assert_non_null(strstr(err.msg, "5 dimensions"));
    StEntry no_data = {"x", ST_F32, 1, {3}, NULL};
    assert_int_equal(st_write(g_path, &no_data, 1, &err), -1);
    assert_non_null(strstr(err.msg, "no data"));
    assert_int_equal(st_write(tu_path("no/such/dir/x.safetensors"), &reserved + 0, 0, &err), -1);
    assert_non_null(strstr(err.msg, "cannot create"));
}

/* The bytes a safetensors writer produces, laid out by hand from the spec: the header compact
 * JSON as serde_json writes it, the dtype-sorted layout of the reference writer (I64 first), the
 * header padded with spaces to a multiple of 8, the data little-endian. */
static void test_reads_spec_layout(void **state) {
    (void)state;
    const char *json =
        "{\"__metadata__\":{\"format\":\"pt\"},"
        "\"ids\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[0,16]},"
        "\"bias\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[16,28]},"
        "\"weight\":{\"shape\":[2, 3], \"dtype\":\"F32\", \"data_offsets\":[28,52]},"
        "\"a\\\"b\\u00e9\":{\"dtype\":\"I32\",\"shape\":[],\"data_offsets\":[52,56]}}";
    size_t hlen = (strlen(json) + 7) / 8 * 8;
    uint8_t buf[1024] = {0};
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)(hlen >> (8 * i));
    memset(buf + 8, ' ', hlen);
    memcpy(buf + 8, json, strlen(json));
    uint8_t *d = buf + 8 + hlen;
    /* ids = [3, -2] as little-endian int64 */
    const uint8_t ids[16] = {3, 0, 0, 0, 0, 0, 0, 0, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    memcpy(d, ids, 16);
    /* bias = [1.0, -2.0, 0.5]: IEEE-754 bit patterns 0x3f800000, 0xc0000000, 0x3f000000 */
    const uint8_t bias[12] = {0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0, 0, 0, 0, 0x3f};
    memcpy(d + 16, bias, 12);
    for (int i = 0; i < 6; i++) { /* weight[i] = i + 1 (1.0 = 0x3f800000, 2.0 = 0x40000000, ...) */
        float v = (float)(i + 1);
        memcpy(d + 28 + 4 * i, &v, 4);
    }
    const uint8_t scalar[4] = {0x39, 0x30, 0, 0}; /* 12345 */
    memcpy(d + 52, scalar, 4);
    tu_write_bytes(g_path, buf, 8 + hlen + 56);

    StFile f;
    BpError err = {0};
    if (st_open(&f, g_path, &err) != 0) fail_msg("%s", err.msg);
    assert_int_equal(f.n, 4);
    const StTensor *t = st_find(&f, "ids");
    assert_non_null(t);
    const int64_t *pi = st_data(&f, t);
    assert_true(pi[0] == 3 && pi[1] == -2);
    t = st_find(&f, "bias");
    assert_non_null(t);
    const float *pb = st_data(&f, t);
    assert_true(pb[0] == 1.0f && pb[1] == -2.0f && pb[2] == 0.5f);
    t = st_find(&f, "weight");
    assert_non_null(t);
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->shape[0], 2);
    assert_int_equal(t->shape[1], 3);
    for (int i = 0; i < 6; i++) assert_true(((const float *)st_data(&f, t))[i] == (float)(i + 1));
    t = st_find(&f, "a\"b\xc3\xa9"); /* JSON escapes decoded */
    assert_non_null(t);
    assert_int_equal(t->ndim, 0);
    assert_int_equal(st_numel(t), 1);
    assert_int_equal(*(const int32_t *)st_data(&f, t), 12345);
    st_close(&f);
}

static void test_truncated_at_every_offset(void **state) {
    (void)state;
    float w[6] = {1, 2, 3, 4, 5, 6};
    int64_t k[2] = {7, 8};
    int32_t s = 9;
    StEntry es[] = {{"w", ST_F32, 2, {3, 2}, w}, {"k", ST_I64, 1, {2}, k}, {"s", ST_I32, 0, {0}, &s}};
    BpError err = {0};
    assert_int_equal(st_write(g_path, es, 3, &err), 0);
    size_t len;
    uint8_t *full = tu_read_bytes(g_path, &len);
    for (size_t cut = 0; cut < len; cut++) {
        tu_write_bytes(g_path, full, cut);
        StFile f;
        if (st_open(&f, g_path, &err) == 0) {
            st_close(&f);
            fail_msg("a file cut to %zu of %zu bytes was accepted", cut, len);
        }
        if (!strstr(err.msg, g_path)) fail_msg("message lacks the path: %s", err.msg);
        if (cut < 8) assert_non_null(strstr(err.msg, "truncated"));
    }
    free(full);
}

/* Random single-bit flips and byte overwrites anywhere in a valid file: each result is either
 * refused with a message or opens with every tensor inside the mapping (ASan checks the reads). */
static void test_mutations_never_crash(void **state) {
    (void)state;
    float w[4] = {1, 2, 3, 4};
    int32_t i3[3] = {1, 2, 3};
    StEntry es[] = {{"layer.0.w", ST_F32, 2, {2, 2}, w}, {"i", ST_I32, 1, {3}, i3}};
    BpError err = {0};
    assert_int_equal(st_write(g_path, es, 2, &err), 0);
    size_t len;
    uint8_t *full = tu_read_bytes(g_path, &len);
    uint8_t *buf = malloc(len);
    assert_non_null(buf);
    uint64_t x = 88172645463325252ull;
    int opened = 0, refused = 0;
    for (int iter = 0; iter < 3000; iter++) {
        memcpy(buf, full, len);
        for (int m = 0; m <= iter % 3; m++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            size_t at = (size_t)(x % len);
            if (iter % 2) buf[at] ^= (uint8_t)(1u << (x >> 32) % 8);
            else buf[at] = "{}[]\",:&*!-0 9\xff\x00"[(x >> 40) % 16];
        }
        tu_write_bytes(g_path, buf, len);
        StFile f;
        if (st_open(&f, g_path, &err) == 0) {
            unsigned sum = 0;
            for (int t = 0; t < f.n; t++) {
                const uint8_t *p = st_data(&f, &f.tensors[t]);
                for (size_t b = 0; b < f.tensors[t].end - f.tensors[t].begin; b++) sum += p[b];
                assert_true(f.tensors[t].end <= f.data_len);
            }
            (void)sum;
            st_close(&f);
            opened++;
        } else {
            if (!strstr(err.msg, g_path)) fail_msg("message lacks the path: %s", err.msg);
            refused++;
        }
    }
    assert_true(refused > 1000);
    free(buf);
    free(full);
}

static void test_header_length_hostile(void **state) {
    (void)state;
    uint8_t buf[64] = {0};
    /* 2^63: far over the limit */
    buf[7] = 0x80;
    tu_write_bytes(g_path, buf, sizeof buf);
    expect_refused_file("header length 9223372036854775808 is over the 100000000-byte limit", NULL);
    /* all ones: the u64 wrap-around case */
    memset(buf, 0xff, 8);
    tu_write_bytes(g_path, buf, sizeof buf);
    expect_refused_file("over the 100000000-byte limit", NULL);
    /* within the limit but past the end of the file */
    memset(buf, 0, sizeof buf);
    buf[0] = 100;
    tu_write_bytes(g_path, buf, sizeof buf);
    expect_refused_file("truncated: the header needs 108 bytes but the file has 64", NULL);
    tu_write_bytes(g_path, buf, 5);
    expect_refused_file("truncated: 5 bytes", NULL);
    tu_write_bytes(g_path, buf, 0);
    expect_refused_file("truncated: 0 bytes", NULL);
    /* an empty header and a header of spaces hold no JSON object */
    buf[0] = 0;
    tu_write_bytes(g_path, buf, 8);
    expect_refused_file("header is empty", NULL);
    expect_refused("        ", 0, "header is empty", NULL);
}

static void test_garbage_json(void **state) {
    (void)state;
    expect_refused("{not json", 0, "a tensor name must be a JSON string", NULL);
    expect_refused("{\"__metadata__\":{\"k\":\"v\"]}", 0, "header is not valid JSON", NULL);
    expect_refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}", 4,
                   "header is not valid JSON", NULL);
    expect_refused("[1, 2, 3]", 0, "header is not a JSON object (found an array)", NULL);
    expect_refused("\"just a string\"", 0, "header is not a JSON object (found a scalar)", NULL);
    expect_refused("{\"a\": 5}", 0, "tensor 'a': expected an object", NULL);
    expect_refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}} x", 4, "header is not valid JSON", NULL);
    expect_refused("{}\n---\n{}", 0, "more than one document", NULL);
    expect_refused("---\n{}", 0, "YAML document", NULL);
    expect_refused("a: {dtype: F32}", 0, "block mapping", NULL);
    expect_refused("{a: {}}", 0, "tensor name must be a JSON string, found an unquoted scalar", NULL);
    expect_refused("{'a': {}}", 0, "must be a JSON string", NULL);
    expect_refused("{\"a\":{\"dtype\":F32,\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                   "tensor 'a': dtype must be a JSON string", NULL);
    expect_refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}}", 4,
                   "tensor 'a': shape[0] must be a non-negative integer, found a string", NULL);
    expect_refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4,
                   "shape[0] must be a non-negative integer, found '-1'", NULL);
    expect_refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]}}", 4,
                   "found '1.0'", NULL);
    expect_refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4,
                   "tensor 'a': data_offsets must be [begin, end]", NULL);
    expect_refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 8,
                   "data_offsets must be [begin, end]", NULL);
    expect_refused("{\"a\":{\"dtype\":\"F32\",\"shape\":1,\"data_offsets\":[0,4]}}", 4,
                   "shape must be a JSON array, found a scalar", NULL);
    expect_refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}", 4,
                   "tensor 'a': unexpected key 'x'", NULL);
    expect_refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "tensor 'a': key 'data_offsets' missing",
                   NULL);
    expect_refused("{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                   "key 'dtype' given twice", NULL);
    expect_refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
                   "tensor 'a': shape has more than 4 dimensions", NULL);
    expect_refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[99999999999999999999],\"data_offsets\":[0,4]}}",
                   4, "overflows a 64-bit size", NULL);
    expect_refused("{\"__metadata__\":{\"k\":1}}", 0, "__metadata__ value must be a JSON string", NULL);
    expect_refused("{\"__metadata__\":[1]}", 0, "__metadata__ must be an object", NULL);
    expect_refused("{\"__metadata__\":{},\"__metadata__\":{}}", 0, "__metadata__ given twice", NULL);
    expect_refused("{\"\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "name is empty",
                   NULL);
    expect_refused("{\"a\\u0000b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                   "contains a NUL byte", NULL);
    char longname[400];
    snprintf(longname, sizeof longname,
             "{\"%0200d\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 0);
    expect_refused(longname, 4, "name is too long", NULL);
    expect_refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}\x01", 4, "not valid JSON",
                   NULL);
}

static void test_unsupported_dtype(void **state) {
    (void)state;
    expect_refused("{\"w\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4,
                   "tensor 'w': dtype BF16 not supported (F32, I32, I64 are)", NULL);
    expect_refused("{\"w\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4,
                   "dtype F16 not supported (F32, I32, I64 are)", NULL);
    /* a name's escaped control bytes do not reach the terminal */
    expect_refused("{\"w\\u001b[2J\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4,
                   "tensor 'w?[2J': dtype BF16", NULL);
    expect_refused("{\"w\":{\"dtype\":\"Q4\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4,
                   "tensor 'w': dtype 'Q4' is not a safetensors dtype", NULL);
}

static void test_offsets_hostile(void **state) {
    (void)state;
    /* overlapping: b starts inside a */
    expect_refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                   "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}",
                   16, "tensors 'a' [0, 16) and 'b' [8, 16) overlap", NULL);
    /* the same range twice, listed in reverse order */
    expect_refused("{\"b\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[4,12]},"
                   "\"a\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[4,12]}}",
                   12, "overlap", NULL);
    /* beyond the data section */
    expect_refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 12,
                   "tensor 'a': data_offsets [0, 16] go beyond the data section (12 bytes)", NULL);
    expect_refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[18446744073709551615,"
                   "18446744073709551615]}}",
                   12, "go beyond the data section", NULL);
    expect_refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 12,
                   "data_offsets [8, 4] end before they begin", NULL);
    /* shape / size mismatch */
    expect_refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", 24,
                   "tensor 'a': shape [2, 3] of F32 needs 24 bytes but data_offsets [0, 20] hold 20",
                   NULL);
    expect_refused("{\"a\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[0,4]}}", 8,
                   "shape [] of I64 needs 8 bytes", NULL);
    /* a product that wraps to a small number must not pass as that number */
    expect_refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,0]}}",
                   0, "tensor 'a': shape product overflows", NULL);
    expect_refused("{\"a\":{\"dtype\":\"I64\",\"shape\":[4611686018427387904],\"data_offsets\":[0,0]}}", 0,
                   "byte size of the shape overflows", NULL);
    /* duplicate names */
    expect_refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                   "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                   8, "tensor 'a': name appears twice", NULL);
    /* empty tensors occupy no bytes: one sitting inside another's range is fine */
    write_st(g_path,
             "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
             "\"e\":{\"dtype\":\"F32\",\"shape\":[0, 5],\"data_offsets\":[4,4]}}",
             8);
    StFile f;
    BpError err = {0};
    if (st_open(&f, g_path, &err) != 0) fail_msg("%s", err.msg);
    assert_int_equal(st_numel(st_find(&f, "e")), 0);
    st_close(&f);
}

static void test_deep_nesting(void **state) {
    (void)state;
    size_t depth = 200000;
    char *h = malloc(5 * depth + 64);
    assert_non_null(h);
    /* nested arrays as the whole header */
    memset(h, '[', depth);
    memset(h + depth, ']', depth);
    h[2 * depth] = 0;
    expect_refused(h, 0, "header is not a JSON object", NULL);
    /* nested objects where a tensor entry belongs, never closed */
    strcpy(h, "{\"a\":{\"shape\":");
    memset(h + 14, '[', depth);
    h[14 + depth] = 0;
    expect_refused(h, 0, "tensor 'a': shape[0] must be a non-negative integer, found an array", NULL);
    strcpy(h, "{\"a\":");
    for (size_t i = 1; i <= depth; i++) memcpy(h + 5 * i, "{\"a\":", 5);
    h[5 * (depth + 1)] = 0;
    expect_refused(h, 0, "tensor 'a': unexpected key 'a'", NULL);
    memset(h, '{', depth);
    h[depth] = 0;
    expect_refused(h, 0, "must be a JSON string, found an object", NULL);
    free(h);
}

static void test_non_utf8(void **state) {
    (void)state;
    expect_refused("{\"\xff\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                   "header is not valid JSON", "UTF-8");
    expect_refused("{\"a\xc3\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "UTF-8", NULL);
    /* an overlong encoding of '"' */
    expect_refused("{\"a\xc0\xa2\":{}}", 0, "not valid JSON", NULL);
    /* a lone surrogate escape */
    expect_refused("{\"a\\ud800\":{}}", 0, "not valid JSON", NULL);
    /* UTF-16 (a BOM switches libyaml's decoder): a JSON header must be UTF-8 */
    const char utf16[] = "\xff\xfe{\0}\0";
    write_st_raw(g_path, utf16, 6, 0);
    expect_refused_file("UTF-8", NULL);
}

static void test_aliases_anchors_tags(void **state) {
    (void)state;
    expect_refused("{\"__metadata__\":&m {\"format\":\"pt\"},\"x\":*m}", 0, "anchor", NULL);
    expect_refused("{\"x\":*m}", 0, "alias", NULL);
    expect_refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,*x]}}", 4, "alias", NULL);
    expect_refused("{\"a\":!!map {\"dtype\":\"F32\"}}", 0, "tag", NULL);
    expect_refused("{\"a\":{\"dtype\":!!str \"F32\"}}", 0, "tag", NULL);
    expect_refused("&top {}", 0, "anchor", NULL);
}

static void test_open_errors(void **state) {
    (void)state;
    StFile f;
    BpError err = {0};
    const char *missing = tu_path("missing.safetensors");
    assert_int_equal(st_open(&f, missing, &err), -1);
    assert_non_null(strstr(err.msg, missing));
    assert_non_null(strstr(err.msg, "cannot open"));
    assert_int_equal(st_open(&f, g_dir, &err), -1);
    assert_non_null(strstr(err.msg, "not a regular file"));
    st_close(&f); /* closing a failed open is harmless */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip, setup, tu_dir_teardown_clean),
        cmocka_unit_test_setup_teardown(test_write_empty_file_and_rewrite, setup, tu_dir_teardown_clean),
        cmocka_unit_test_setup_teardown(test_reads_spec_layout, setup, tu_dir_teardown_clean),
        cmocka_unit_test_setup_teardown(test_truncated_at_every_offset, setup, tu_dir_teardown_clean),
        cmocka_unit_test_setup_teardown(test_mutations_never_crash, setup, tu_dir_teardown_clean),
        cmocka_unit_test_setup_teardown(test_header_length_hostile, setup, tu_dir_teardown_clean),
        cmocka_unit_test_setup_teardown(test_garbage_json, setup, tu_dir_teardown_clean),
        cmocka_unit_test_setup_teardown(test_unsupported_dtype, setup, tu_dir_teardown_clean),
        cmocka_unit_test_setup_teardown(test_offsets_hostile, setup, tu_dir_teardown_clean),
        cmocka_unit_test_setup_teardown(test_deep_nesting, setup, tu_dir_teardown_clean),
        cmocka_unit_test_setup_teardown(test_non_utf8, setup, tu_dir_teardown_clean),
        cmocka_unit_test_setup_teardown(test_aliases_anchors_tags, setup, tu_dir_teardown_clean),
        cmocka_unit_test_setup_teardown(test_open_errors, setup, tu_dir_teardown_clean),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
