/* common.c: errors, allocation, atomic files, CRC32, small OS helpers (see common.h). */
#define _POSIX_C_SOURCE 200809L
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

static int vfail(BpError *err, BpErrorKind kind, const char *fmt, va_list ap) {
    if (err) {
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        err->kind = kind;
    }
    return -1;
}

int bp_error_status(const BpError *err) {
    if (err->kind == BP_ERR_DIVERGED) return BP_EXIT_DIVERGED;
    return err->kind == BP_ERR_USAGE || err->kind == BP_ERR_MISMATCH ? BP_EXIT_USAGE : BP_EXIT_RUNTIME;
}

int bp_fail_kind(BpError *err, BpErrorKind kind, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfail(err, kind, fmt, ap);
    va_end(ap);
    return -1;
}

int bp_fail(BpError *err, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfail(err, BP_ERR_RUNTIME, fmt, ap);
    va_end(ap);
    return -1;
}

int bp_fail_usage(BpError *err, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfail(err, BP_ERR_USAGE, fmt, ap);
    va_end(ap);
    return -1;
}

void bp_assert_fail(const char *file, int line, const char *cond, const char *fmt, ...) {
    fflush(stdout);
    fprintf(stderr, "bert_pretrain: internal error at %s:%d: %s: ", file, line, cond);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n(this is a bug in bert_pretrain, not in your input)\n");
    abort();
}

void bp_err_prefix(BpError *err, const char *fmt, ...) {
    if (!err) return;
    char joined[2 * BP_ERR_LEN + 2];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(joined, BP_ERR_LEN, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if (n >= BP_ERR_LEN) n = BP_ERR_LEN - 1;
    memcpy(joined + n, ": ", 2);
    memcpy(joined + n + 2, err->msg, BP_ERR_LEN); /* err->msg is NUL-terminated within it */
    joined[sizeof joined - 1] = 0;
    /* the message keeps its head (the context) when the whole would not fit */
    memcpy(err->msg, joined, BP_ERR_LEN - 1);
    err->msg[BP_ERR_LEN - 1] = 0;
}

void *bp_malloc(size_t bytes, const char *what, BpError *err) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) bp_fail(err, "out of memory allocating %zu bytes for %s", bytes, what);
    return p;
}

void *bp_calloc(size_t count, size_t size, const char *what, BpError *err) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) bp_fail(err, "out of memory allocating %zu x %zu bytes for %s", count, size, what);
    return p;
}

void *bp_aligned_calloc(size_t bytes, const char *what, BpError *err) {
    size_t rounded = (bytes + 63) / 64 * 64;
    void *p = aligned_alloc(64, rounded ? rounded : 64);
    if (!p) {
        bp_fail(err, "out of memory allocating %zu bytes for %s", bytes, what);
        return NULL;
    }
    memset(p, 0, rounded ? rounded : 64);
    return p;
}

int bp_atomic_open(AtomicFile *af, const char *path, BpError *err) {
    memset(af, 0, sizeof *af);
    if (strlen(path) >= sizeof af->path) return bp_fail(err, "%s: path too long", path);
    snprintf(af->path, sizeof af->path, "%s", path);
    snprintf(af->tmp_path, sizeof af->tmp_path, "%s.tmp.%ld", path, (long)getpid());
    af->cleanup_slot = -1;
    af->fp = fopen(af->tmp_path, "wb");
    if (!af->fp) return bp_fail_kind(err, BP_ERR_IO, "%s: cannot create: %s", af->tmp_path, strerror(errno));
    af->cleanup_slot = bp_cleanup_add(af->tmp_path);
    return 0;
}

void bp_atomic_abort(AtomicFile *af) {
    if (af->fp) fclose(af->fp);
    af->fp = NULL;
    if (af->tmp_path[0]) unlink(af->tmp_path);
    bp_cleanup_remove(af->cleanup_slot);
    af->cleanup_slot = -1;
}

int bp_atomic_commit(AtomicFile *af, BpError *err) {
    if (!af->fp) return bp_fail(err, "%s: not open", af->path);
    int bad = ferror(af->fp) || fflush(af->fp) != 0 || fsync(fileno(af->fp)) != 0;
    int saved = errno;
    if (fclose(af->fp) != 0 && !bad) {
        bad = 1;
        saved = errno;
    }
    af->fp = NULL;
    if (bad || rename(af->tmp_path, af->path) != 0) {
        if (!bad) saved = errno;
        unlink(af->tmp_path);
        bp_cleanup_remove(af->cleanup_slot);
        af->cleanup_slot = -1;
        return bp_fail_kind(err, BP_ERR_IO, "%s: %s failed: %s", af->path, bad ? "write" : "rename",
                            strerror(saved));
    }
    bp_cleanup_remove(af->cleanup_slot);
    af->cleanup_slot = -1;
    /* fsync the directory so the rename itself survives a crash */
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", af->path);
    int dfd = open(dirname(dir), O_RDONLY);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return 0;
}

char *bp_read_file(const char *path, size_t *len, BpError *err) {
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        bp_fail(err, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (n + 1 >= cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, fp);
        n += got;
        if (got == 0) break;
    }
    int readerr = ferror(fp);
    fclose(fp);
    if (!buf) {
        bp_fail(err, "%s: out of memory reading file", path);
        return NULL;
    }
    if (readerr) {
        free(buf);
        bp_fail(err, "%s: read error", path);
        return NULL;
    }
    buf[n] = 0;
    if (len) *len = n;
    return buf;
}

int bp_map_file(const char *path, void **map, size_t *len, int *open_errno, BpError *err) {
    *map = NULL;
    *len = 0;
    if (open_errno) *open_errno = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        if (open_errno) *open_errno = e;
        return bp_fail(err, "cannot open: %s", strerror(e));
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return bp_fail(err, "cannot stat: %s", strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return bp_fail(err, "not a regular file");
    }
    size_t size = (size_t)st.st_size;
    if (size == 0) { /* mmap refuses length 0 */
        close(fd);
        return 0;
    }
    void *m = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd); /* the mapping keeps the file */
    if (m == MAP_FAILED) return bp_fail(err, "cannot map %zu bytes: %s", size, strerror(e));
    *map = m;
    *len = size;
    return 0;
}

void bp_unmap_file(void *map, size_t len) {
    if (map) munmap(map, len);
}

uint32_t bp_crc32(uint32_t crc, const void *buf, size_t len) {
    const unsigned char *p = buf;
    /* zlib's crc32 takes uInt lengths: feed it in chunks so multi-GiB sections work */
    while (len > 0) {
        uInt chunk = len > (1u << 30) ? (1u << 30) : (uInt)len;
        crc = (uint32_t)crc32(crc, p, chunk);
        p += chunk;
        len -= chunk;
    }
    return crc;
}

/* One component of mkdir -p: EEXIST is fine only for a directory (mkdir says EEXIST for a file
 * too, and the failure would otherwise surface later as a puzzling "cannot open" inside it). */
static int mkdir_one(const char *dir, BpError *err) {
    if (mkdir(dir, 0777) == 0) return 0;
    int e = errno;
    struct stat st;
    if (e == EEXIST && stat(dir, &st) == 0 && S_ISDIR(st.st_mode)) return 0;
    if (e == EEXIST)
        return bp_fail_kind(err, BP_ERR_IO, "%s: cannot create directory: a file of that name exists", dir);
    return bp_fail_kind(err, BP_ERR_IO, "%s: cannot create directory: %s", dir, strerror(e));
}

int bp_mkdir_p(const char *path, BpError *err) {
    char buf[4096];
    if (strlen(path) >= sizeof buf) return bp_fail(err, "%s: path too long", path);
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/' || p[-1] == '/') continue;
        *p = 0;
        int rc = mkdir_one(buf, err);
        *p = '/';
        if (rc != 0) return -1;
    }
    return mkdir_one(buf, err);
}

/* ---- signals ------------------------------------------------------------------------------------ */

static const struct {
    int sig;
    const char *name;
} STOP_SIGNALS[] = {
    {SIGHUP, "SIGHUP"},   {SIGINT, "SIGINT"},   {SIGQUIT, "SIGQUIT"}, {SIGTERM, "SIGTERM"},
    {SIGPIPE, "SIGPIPE"}, {SIGALRM, "SIGALRM"}, {SIGUSR1, "SIGUSR1"}, {SIGUSR2, "SIGUSR2"},
    {SIGXCPU, "SIGXCPU"}, {SIGXFSZ, "SIGXFSZ"}, {SIGVTALRM, "SIGVTALRM"}, {SIGPWR, "SIGPWR"},
};

void bp_catch_stop_signals(void (*handler)(int sig)) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    /* one handler at a time: a second signal waits until the first one's handler returned */
    for (size_t i = 0; i < BP_ARRAY_LEN(STOP_SIGNALS); i++) sigaddset(&sa.sa_mask, STOP_SIGNALS[i].sig);
    for (size_t i = 0; i < BP_ARRAY_LEN(STOP_SIGNALS); i++) {
        int sig = STOP_SIGNALS[i].sig;
        struct sigaction old;
        /* nohup ignores SIGHUP, and a parent that ignores SIGPIPE wants EPIPE instead: both are
           choices made for this process, kept */
        if ((sig == SIGHUP || sig == SIGPIPE) && sigaction(sig, NULL, &old) == 0 && old.sa_handler == SIG_IGN)
            continue;
        sigaction(sig, &sa, NULL);
    }
}

const char *bp_signal_name(int sig) {
    for (size_t i = 0; i < BP_ARRAY_LEN(STOP_SIGNALS); i++)
        if (STOP_SIGNALS[i].sig == sig) return STOP_SIGNALS[i].name;
    static char other[32];
    snprintf(other, sizeof other, "signal %d", sig);
    return other;
}

/* The cleanup list is read by a signal handler: a slot's path is complete before its flag says
 * so, and the handler only calls unlink (async-signal-safe). */
#define CLEANUP_SLOTS 32
static struct {
    volatile sig_atomic_t used;
    char path[4200];
} cleanup_list[CLEANUP_SLOTS];

int bp_cleanup_add(const char *path) {
    if (strlen(path) >= sizeof cleanup_list[0].path) return -1;
    for (int i = 0; i < CLEANUP_SLOTS; i++) {
        if (cleanup_list[i].used) continue;
        snprintf(cleanup_list[i].path, sizeof cleanup_list[i].path, "%s", path);
        atomic_signal_fence(memory_order_seq_cst);
        cleanup_list[i].used = 1;
        return i;
    }
    return -1;
}

void bp_cleanup_remove(int slot) {
    if (slot >= 0 && slot < CLEANUP_SLOTS) cleanup_list[slot].used = 0;
}

static void cleanup_and_die(int sig) {
    for (int i = 0; i < CLEANUP_SLOTS; i++)
        if (cleanup_list[i].used) unlink(cleanup_list[i].path);
    /* die by the signal itself, so that the parent sees what ended the process */
    signal(sig, SIG_DFL);
    raise(sig);
}

void bp_cleanup_on_stop_signals(void) { bp_catch_stop_signals(cleanup_and_die); }

double bp_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
