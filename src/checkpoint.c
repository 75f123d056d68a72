/* checkpoint.c: the checkpoint container (see checkpoint.h for the layout and what is verified).
 *
 * Reading maps the file and verifies it completely at open, in the order that gives the most
 * useful message: magic (is it ours at all), version (a newer layout must not be judged by this
 * one's rules), the table's extent and CRC, then each section's bounds and finally its CRC. */
#define _POSIX_C_SOURCE 200809L
#include "checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CKPT_FIXED 16                       /* magic, version, count */
#define CKPT_ENTRY (CKPT_NAME_LEN + 8 + 8 + 4) /* one table entry */
#define CKPT_ALIGN 8

/* a u32 section count times the entry size must not wrap */
_Static_assert(sizeof(size_t) >= 8, "checkpoint offsets need a 64-bit size_t");

typedef struct {
    char name[CKPT_NAME_LEN];
    size_t offset, bytes;
} CkptEntry;

struct CkptFile {
    uint8_t *map;
    size_t len;
    int n;
    CkptEntry *sec;
};

static size_t align_up(size_t x) { return (x + CKPT_ALIGN - 1) / CKPT_ALIGN * CKPT_ALIGN; }

static void put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

/* ------------------------------------------------------------------------------------------ */
/* writing                                                                                     */

static int check_sections(const CkptSection *s, int n, BpError *err) {
    if (n < 0 || (n > 0 && !s)) return bp_fail(err, "no sections given");
    if (n > CKPT_MAX_SECTIONS) return bp_fail(err, "%d sections, at most %d", n, CKPT_MAX_SECTIONS);
    for (int i = 0; i < n; i++) {
        if (!s[i].name || !s[i].name[0] || strlen(s[i].name) >= CKPT_NAME_LEN)
            return bp_fail(err, "section %d: name '%.40s' must be 1 to %d characters", i,
                           s[i].name ? s[i].name : "(null)", CKPT_NAME_LEN - 1);
        for (int k = 0; k < i; k++)
            if (strcmp(s[k].name, s[i].name) == 0)
                return bp_fail(err, "section '%s' given twice", s[i].name);
        if (s[i].bytes && !s[i].data && !s[i].next) return bp_fail(err, "section '%s' has no data", s[i].name);
    }
    return 0;
}

static void slow_down_for_tests(void) {
    const char *ms = getenv("BERT_PRETRAIN_SLOW_CKPT_MS");
    long n = ms ? strtol(ms, NULL, 10) : 0;
    if (n <= 0) return;
    struct timespec ts = {.tv_sec = n / 1000, .tv_nsec = n % 1000 * 1000000L};
    nanosleep(&ts, NULL);
}

/* One section's bytes to the file, its CRC accumulated on the way: from data, or pulled from next()
 * until they add up to bytes. 0, or -1 with *failed_next when the producer failed (else errno is
 * the write's). */
static int write_section(FILE *fp, const CkptSection *sec, uint32_t *crc, bool *failed_next) {
    *crc = 0;
    if (!sec->next) {
        *crc = bp_crc32(0, sec->data, sec->bytes);
        return sec->bytes && fwrite(sec->data, 1, sec->bytes, fp) != sec->bytes ? -1 : 0;
    }
    for (size_t done = 0; done < sec->bytes;) {
        size_t len = 0;
        const void *piece = sec->next(sec->ctx, &len);
        if (!piece || len == 0 || len > sec->bytes - done) {
            *failed_next = true;
            return -1;
        }
        *crc = bp_crc32(*crc, piece, len);
        if (fwrite(piece, 1, len, fp) != len) return -1;
        done += len;
    }
    return 0;
}

int ckpt_write(const char *path, const CkptSection *sections, int n, BpError *err) {
    if (check_sections(sections, n, err) != 0) {
        bp_err_prefix(err, "%s", path);
        return -1;
    }
    size_t table_end = CKPT_FIXED + (size_t)n * CKPT_ENTRY;
    size_t head_len = table_end + 4;
    uint8_t *head = bp_calloc(1, head_len, "the checkpoint header", err);
    if (!head) return -1;
    memcpy(head, CKPT_MAGIC, 8);
    put_u32(head + 8, CKPT_VERSION);
    put_u32(head + 12, (uint32_t)n);
    size_t off = align_up(head_len);
    for (int i = 0; i < n; i++) {
        uint8_t *e = head + CKPT_FIXED + (size_t)i * CKPT_ENTRY;
        memcpy(e, sections[i].name, strlen(sections[i].name)); /* calloc'd: NUL-padded */
        put_u64(e + CKPT_NAME_LEN, off);
        put_u64(e + CKPT_NAME_LEN + 8, sections[i].bytes);
        off = align_up(off + sections[i].bytes);
    }

    AtomicFile af;
    if (bp_atomic_open(&af, path, err) != 0) {
        err->kind = BP_ERR_IO;
        free(head);
        return -1;
    }
    /* The sections first (their CRCs are known only once written: a streamed section is never
       whole in memory), then the header over the zeros left for it. The file is a temporary until
       bp_atomic_commit renames it, so no reader ever sees the zeros. */
    static const uint8_t zeros[CKPT_ALIGN] = {0};
    size_t at = head_len;
    bool failed_next = false;
    bool ok = fwrite(head, 1, head_len, af.fp) == head_len;
    for (int i = 0; i < n && ok; i++) {
        size_t pad = align_up(at) - at;
        ok = fwrite(zeros, 1, pad, af.fp) == pad;
        at += pad;
        uint32_t crc = 0;
        if (ok) ok = write_section(af.fp, &sections[i], &crc, &failed_next) == 0;
        put_u32(head + CKPT_FIXED + (size_t)i * CKPT_ENTRY + CKPT_NAME_LEN + 16, crc);
        at += sections[i].bytes;
        slow_down_for_tests();
    }
    put_u32(head + table_end, bp_crc32(0, head, table_end));
    if (ok) ok = fseek(af.fp, 0, SEEK_SET) == 0 && fwrite(head, 1, head_len, af.fp) == head_len;
    free(head);
    if (!ok) {
        int e = errno;
        bp_atomic_abort(&af);
        if (failed_next) return bp_fail(err, "%s: a section's data could not be produced", path);
        return bp_fail_kind(err, BP_ERR_IO, "%s: write failed: %s", path, strerror(e));
    }
    if (bp_atomic_commit(&af, err) != 0) {
        err->kind = BP_ERR_IO;
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* reading                                                                                     */

static int verify(CkptFile *f, BpError *err) {
    const uint8_t *m = f->map;
    size_t len = f->len;
    if (memcmp(m, CKPT_MAGIC, len < 8 ? len : 8) != 0)
        return bp_fail_kind(err, BP_ERR_CORRUPT, "not a bert_pretrain checkpoint (bad magic)");
    if (len < CKPT_FIXED)
        return bp_fail_kind(err, BP_ERR_CORRUPT, "truncated: the header needs %d bytes but the file has %zu", CKPT_FIXED,
                       len);
    uint32_t version = get_u32(m + 8);
    if (version > CKPT_VERSION)
        return bp_fail_kind(err, BP_ERR_CORRUPT, "version %u is newer than this program reads (%d)", version, CKPT_VERSION);
    if (version < 1) return bp_fail_kind(err, BP_ERR_CORRUPT, "version 0 is not a checkpoint version (file corrupt?)");
    uint32_t n = get_u32(m + 12);
    size_t table_end = CKPT_FIXED + (size_t)n * CKPT_ENTRY;
    if (table_end + 4 > len)
        return bp_fail_kind(err, BP_ERR_CORRUPT, "truncated: the table of %u sections ends at byte %zu but the file has %zu",
                       n, table_end + 4, len);
    if (n > CKPT_MAX_SECTIONS)
        return bp_fail_kind(err, BP_ERR_CORRUPT, "%u sections, more than the %d a checkpoint holds", n,
                            CKPT_MAX_SECTIONS);
    if (bp_crc32(0, m, table_end) != get_u32(m + table_end))
        return bp_fail_kind(err, BP_ERR_CORRUPT, "header CRC mismatch (file corrupt?)");

    f->sec = bp_calloc(n, sizeof *f->sec, "the section table", err);
    if (!f->sec) return -1;
    f->n = (int)n; /* n entries fit in the file, so far fewer than INT_MAX */
    size_t prev_end = table_end + 4;
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *e = m + CKPT_FIXED + (size_t)i * CKPT_ENTRY;
        CkptEntry *s = &f->sec[i];
        size_t name_len = strnlen((const char *)e, CKPT_NAME_LEN);
        bool padded = name_len > 0 && name_len < CKPT_NAME_LEN;
        for (size_t k = name_len; padded && k < CKPT_NAME_LEN; k++) padded = e[k] == 0;
        if (!padded) return bp_fail_kind(err, BP_ERR_CORRUPT, "section %u: name is not 1 to 31 characters NUL-padded", i);
        memcpy(s->name, e, name_len);
        for (uint32_t k = 0; k < i; k++)
            if (strcmp(f->sec[k].name, s->name) == 0)
                return bp_fail_kind(err, BP_ERR_CORRUPT, "section '%s' appears twice", s->name);
        uint64_t off = get_u64(e + CKPT_NAME_LEN), bytes = get_u64(e + CKPT_NAME_LEN + 8);
        if (off != align_up(prev_end))
            return bp_fail_kind(err, BP_ERR_CORRUPT, "section '%s' starts at byte %llu, not at %zu (the 8-byte boundary "
                           "after what precedes it)", s->name, (unsigned long long)off,
                           align_up(prev_end));
        if (off > len || bytes > len - off)
            return bp_fail_kind(err, BP_ERR_CORRUPT, "truncated: section '%s' ends at byte %llu but the file has %zu",
                           s->name, (unsigned long long)(off + bytes), len);
        for (size_t k = prev_end; k < off; k++)
            if (m[k] != 0)
                return bp_fail_kind(err, BP_ERR_CORRUPT, "padding before section '%s' is not zero (file corrupt?)", s->name);
        s->offset = off;
        s->bytes = bytes;
        prev_end = off + bytes;
    }
    if (prev_end != len)
        return bp_fail_kind(err, BP_ERR_CORRUPT, "the file has %zu bytes but its last section ends at byte %zu "
                       "(trailing data: file corrupt?)", len, prev_end);
    for (uint32_t i = 0; i < n; i++) {
        const CkptEntry *s = &f->sec[i];
        uint32_t want = get_u32(m + CKPT_FIXED + (size_t)i * CKPT_ENTRY + CKPT_NAME_LEN + 16);
        if (bp_crc32(0, m + s->offset, s->bytes) != want)
            return bp_fail_kind(err, BP_ERR_CORRUPT, "section '%s' CRC mismatch (file corrupt?)", s->name);
    }
    return 0;
}

static int map_file(CkptFile *f, const char *path, BpError *err) {
    void *map = NULL;
    if (bp_map_file(path, &map, &f->len, NULL, err) != 0) {
        err->kind = BP_ERR_IO;
        return -1;
    }
    if (f->len == 0) return bp_fail_kind(err, BP_ERR_CORRUPT, "truncated: the file is empty");
    f->map = map;
    return 0;
}

CkptFile *ckpt_open(const char *path, BpError *err) {
    CkptFile *f = bp_calloc(1, sizeof *f, "a checkpoint", err);
    if (!f) return NULL;
    if (map_file(f, path, err) == 0 && verify(f, err) == 0) return f;
    bp_err_prefix(err, "%s", path);
    ckpt_close(f);
    return NULL;
}

const void *ckpt_section(const CkptFile *f, const char *name, size_t *bytes) {
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->sec[i].name, name) == 0) {
            if (bytes) *bytes = f->sec[i].bytes;
            return f->map + f->sec[i].offset;
        }
    if (bytes) *bytes = 0;
    return NULL;
}

int ckpt_section_count(const CkptFile *f) { return f->n; }

const char *ckpt_section_name(const CkptFile *f, int i) {
    return i >= 0 && i < f->n ? f->sec[i].name : NULL;
}

void ckpt_close(CkptFile *f) {
    if (!f) return;
    bp_unmap_file(f->map, f->len);
    free(f->sec);
    free(f);
}

/* ------------------------------------------------------------------------------------------ */
/* run directories                                                                             */

void ckpt_path(char *out, size_t out_len, const char *run_dir, long step) {
    snprintf(out, out_len, "%s/ckpt-%08ld.bin", run_dir, step);
}

/* The step a canonical checkpoint name encodes ("ckpt-" digits ".bin", exactly as ckpt_path
 * spells it), or -1. */
static long name_step(const char *name) {
    if (strncmp(name, "ckpt-", 5) != 0) return -1;
    const char *p = name + 5;
    long step = 0;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (step > (LONG_MAX - 9) / 10) return -1;
        step = step * 10 + (*p - '0');
    }
    if (strcmp(p, ".bin") != 0) return -1;
    char canon[64];
    snprintf(canon, sizeof canon, "ckpt-%08ld.bin", step);
    return strcmp(canon, name) == 0 ? step : -1;
}

static int cmp_step_desc(const void *a, const void *b) {
    long x = *(const long *)a, y = *(const long *)b;
    return (x < y) - (x > y);
}

int ckpt_list(const char *run_dir, char (*paths)[4096], long *steps, int max, BpError *err) {
    DIR *d = opendir(run_dir);
    if (!d) {
        if (errno == ENOENT) return 0;
        return bp_fail_kind(err, BP_ERR_IO, "%s: cannot list checkpoints: %s", run_dir, strerror(errno));
    }
    long *found = NULL;
    int n = 0, cap = 0;
    struct dirent *de;
    errno = 0;
    while ((de = readdir(d)) != NULL) {
        long step = name_step(de->d_name);
        if (step < 0) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            long *nf = realloc(found, (size_t)cap * sizeof *nf);
            if (!nf) {
                free(found);
                closedir(d);
                return bp_fail(err, "%s: out of memory listing checkpoints", run_dir);
            }
            found = nf;
        }
        found[n++] = step;
    }
    int rd_err = errno;
    closedir(d);
    if (rd_err) {
        free(found);
        return bp_fail_kind(err, BP_ERR_IO, "%s: cannot list checkpoints: %s", run_dir, strerror(rd_err));
    }
    if (n) qsort(found, (size_t)n, sizeof *found, cmp_step_desc);
    for (int i = 0; i < n && i < max; i++) {
        if (steps) steps[i] = found[i];
        if (paths) {
            int w = snprintf(paths[i], sizeof paths[i], "%s/ckpt-%08ld.bin", run_dir, found[i]);
            if (w < 0 || (size_t)w >= sizeof paths[i]) {
                free(found);
                return bp_fail(err, "%s: path too long", run_dir);
            }
        }
    }
    free(found);
    return n;
}

int ckpt_prune_before(const char *run_dir, long before, BpError *err) {
    int n = ckpt_list(run_dir, NULL, NULL, 0, err);
    if (n <= 0) return n;
    char (*paths)[4096] = bp_malloc((size_t)n * sizeof *paths, "checkpoint paths", err);
    long *steps = bp_malloc((size_t)n * sizeof *steps, "checkpoint steps", err);
    int removed = 0, rc = 0;
    /* the directory may have changed since the count: use what the second listing filled */
    int now = paths && steps ? ckpt_list(run_dir, paths, steps, n, err) : -1;
    for (int i = 0; i < now && i < n && rc == 0; i++) {
        if (steps[i] >= before) continue;
        if (unlink(paths[i]) == 0) removed++;
        else if (errno != ENOENT) rc = bp_fail_kind(err, BP_ERR_IO, "%s: cannot remove: %s", paths[i], strerror(errno));
    }
    free(paths);
    free(steps);
    return now < 0 || rc < 0 ? -1 : removed;
}

int ckpt_set_aside(const char *path, char *aside, size_t aside_len, BpError *err) {
    int w = snprintf(aside, aside_len, "%s.corrupt", path);
    if (w < 0 || (size_t)w >= aside_len) return bp_fail(err, "%s: path too long", path);
    if (rename(path, aside) != 0)
        return bp_fail_kind(err, BP_ERR_IO, "%s: cannot rename to %s: %s", path, aside, strerror(errno));
    return 0;
}
