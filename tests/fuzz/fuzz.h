/* fuzz.h: what the libFuzzer targets in tests/fuzz share. One target is one translation unit, so
 * the helpers are static.
 *
 * Most parsers take a path, so fuzz_file writes the input to a file in a private scratch directory
 * (under $TMPDIR, else /dev/shm or /tmp), created on first use and removed at exit. Writing a few
 * KiB to the page cache costs microseconds, far below what a parse costs, and keeps each target
 * honest: the parser sees a real regular file, mapped or read exactly as in production.
 *
 * Checksummed formats (checkpoint, shard) would stop almost every mutation at the first CRC, so
 * their targets recompute the CRCs of a mutated file before opening it:
 * the fuzzer then reaches the structural checks behind them. The unrepaired bytes are fuzzed too
 * (one input bit chooses), so the CRC checks themselves stay covered. */
#ifndef BP_FUZZ_H
#define BP_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char fuzz_dir[4096];

static inline void fuzz_remove_dir(void) {
    if (!fuzz_dir[0]) return;
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", fuzz_dir);
    if (system(cmd) != 0) fprintf(stderr, "fuzz: could not remove %s\n", fuzz_dir);
}

/* The scratch directory (created once, removed at exit). Aborts when it cannot be made: a target
 * without it would test nothing. */
static inline const char *fuzz_scratch(void) {
    if (fuzz_dir[0]) return fuzz_dir;
    /* /dev/shm when there is one: the checkpoint writer fsyncs, which costs nothing on tmpfs */
    const char *tmp = getenv("TMPDIR");
    if (!tmp || !tmp[0]) tmp = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(fuzz_dir, sizeof fuzz_dir, "%s/bp_fuzz_XXXXXX", tmp);
    if (!mkdtemp(fuzz_dir)) {
        perror("fuzz: mkdtemp");
        abort();
    }
    atexit(fuzz_remove_dir);
    return fuzz_dir;
}

/* scratch/name; the buffer is static per call site's name length, so callers copy if they keep two */
static inline const char *fuzz_path(const char *name) {
    static char path[4200];
    snprintf(path, sizeof path, "%s/%s", fuzz_scratch(), name);
    return path;
}

/* Writes data to scratch/name (replacing it) and returns the path. */
static inline const char *fuzz_file(const char *name, const void *data, size_t size) {
    const char *path = fuzz_path(name);
    FILE *f = fopen(path, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0) {
        perror(path);
        abort();
    }
    return path;
}

/* A copy of data with a NUL after it (text APIs). */
/* For checksummed formats: data[0] bit 0 set asks that fix_crcs recompute every CRC of the rest
 * (the file) before it is written, so that mutations reach the structural checks behind them. */
static inline const char *fuzz_file_fixing_crcs(const char *name, const uint8_t *data, size_t size,
                                                void (*fix_crcs)(uint8_t *file, size_t len)) {
    size_t len = size - 1;
    uint8_t *file = malloc(len ? len : 1);
    if (!file) abort();
    memcpy(file, data + 1, len);
    if (data[0] & 1) fix_crcs(file, len);
    const char *path = fuzz_file(name, file, len);
    free(file);
    return path;
}

static inline char *fuzz_strndup(const uint8_t *data, size_t size) {
    char *s = malloc(size + 1);
    if (!s) abort();
    memcpy(s, data, size);
    s[size] = 0;
    return s;
}

static inline uint32_t fuzz_get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline void fuzz_put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint64_t fuzz_get_u64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

/* Keeps the value computed from parsed data alive so that the accessors' reads are not optimised
 * away (ASan must see every byte a caller would touch). */
static volatile uint64_t fuzz_sink;

#endif
