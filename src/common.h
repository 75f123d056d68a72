/* common.h: the one error-reporting path, checked allocation, atomic file output and CRC32.
 *
 * Contract: library modules never exit(); a failing function fills a BpError and returns -1 (or
 * NULL). Only main.c decides to exit. Messages name the file/key/line and what is wrong, and where
 * it helps, what to do ("HINT: ..."). */
#ifndef BP_COMMON_H
#define BP_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define BP_ERR_LEN 1024

/* What went wrong, so that a caller decides by kind (resume skips a corrupt checkpoint but stops on
 * a configuration mismatch) and the command layer maps it to an exit status. */
typedef enum {
    BP_ERR_RUNTIME = 0, /* anything else that failed at run time (out of memory, a bad batch...) */
    BP_ERR_IO,          /* the operating system refused a read, write, open, rename... */
    BP_ERR_CORRUPT,     /* a file is not what it claims: magic, version, CRC, size, structure */
    BP_ERR_USAGE,       /* the command line or the configuration is wrong */
    BP_ERR_MISMATCH,    /* a valid file that does not fit this run (config changed, other shape) */
    BP_ERR_DIVERGED,    /* training stopped: the loss or the gradients became non-finite */
} BpErrorKind;

typedef struct {
    char msg[BP_ERR_LEN];
    BpErrorKind kind;
} BpError;

#define BP_EXIT_RUNTIME 1
#define BP_EXIT_USAGE 2
#define BP_EXIT_DIVERGED 3

/* The exit status for an error: 2 for a usage error or a mismatch (the user must change what they
 * asked), 3 for a divergence (a result of the settings, not a fault: a sweep records it and goes
 * on), 1 for everything else. */
int bp_error_status(const BpError *err);

/* Fills err (if non-NULL) with a printf-style message of the given kind; returns -1 so callers can
 * write `return bp_fail(err, "...")`. bp_fail is BP_ERR_RUNTIME, bp_fail_usage BP_ERR_USAGE. */
int bp_fail_kind(BpError *err, BpErrorKind kind, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int bp_fail(BpError *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int bp_fail_usage(BpError *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Programmer errors (an invariant broken, a lookup that cannot miss missing, backward without a
 * forward): print file, line and the condition, then abort. Never for user input: that is a
 * BpError. Active in every build (the checks are cheap and a silent wrong result is worse). */
#define BP_ASSERT(cond, ...)                                                                        \
    do {                                                                                            \
        if (!(cond)) bp_assert_fail(__FILE__, __LINE__, #cond, __VA_ARGS__);                        \
    } while (0)
_Noreturn void bp_assert_fail(const char *file, int line, const char *cond, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Prepends "context: " to an existing message (e.g. the file name). */
void bp_err_prefix(BpError *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Allocation that reports failure through err (size in bytes; names what it was for). */
void *bp_malloc(size_t bytes, const char *what, BpError *err);
void *bp_calloc(size_t count, size_t size, const char *what, BpError *err);
/* 64-byte aligned, zeroed; free with free(). */
void *bp_aligned_calloc(size_t bytes, const char *what, BpError *err);

/* Atomic output: write to PATH.tmp.PID, fflush + fsync, rename over PATH, fsync the directory.
 * On any failure the temporary is removed and PATH is untouched; while it is open the temporary is
 * on the signal cleanup list (bp_cleanup_add), and a kill -9 leftover is removed by the next run
 * that sweeps the directory (rundir_sweep_temps). */
typedef struct {
    FILE *fp;
    char path[4096];
    char tmp_path[4200];
    int cleanup_slot; /* the temporary's entry in the signal cleanup list (bp_cleanup_add), or -1 */
} AtomicFile;
int bp_atomic_open(AtomicFile *af, const char *path, BpError *err);
int bp_atomic_commit(AtomicFile *af, BpError *err); /* closes, fsyncs, renames */
void bp_atomic_abort(AtomicFile *af);               /* closes and removes the temporary */

/* Reads a whole file into a malloc'd buffer (NUL-terminated; *len excludes the NUL). */
char *bp_read_file(const char *path, size_t *len, BpError *err);

/* Maps a whole regular file read-only (the readers of checkpoints, shards and safetensors validate
 * the bytes before use). An empty file succeeds with *map = NULL and *len = 0: each caller refuses
 * it with its own "truncated" message. Messages are not prefixed with the path (callers do that);
 * when open() itself fails, *open_errno (if non-NULL) receives errno, else it is set to 0. */
int bp_map_file(const char *path, void **map, size_t *len, int *open_errno, BpError *err);
void bp_unmap_file(void *map, size_t len);

/* CRC32 (zlib's polynomial) of a buffer, chainable: crc = bp_crc32(crc, buf, n), start with 0. */
uint32_t bp_crc32(uint32_t crc, const void *buf, size_t len);

/* mkdir -p; 0 on success (existing directories are fine; an existing file of that name is an
 * error that says so). */
int bp_mkdir_p(const char *path, BpError *err);

/* ---- signals ----------------------------------------------------------------------------------
 * The terminating signals a process can catch: SIGHUP SIGINT SIGQUIT SIGTERM SIGPIPE SIGALRM
 * SIGUSR1 SIGUSR2 SIGXCPU SIGXFSZ SIGVTALRM SIGPWR. Left out: SIGKILL and SIGSTOP (cannot be
 * caught), SIGPROF (profilers own it), and the faults SIGSEGV SIGBUS SIGFPE SIGILL SIGABRT SIGTRAP
 * SIGSYS (the program cannot safely continue after them). */

/* Installs handler for every signal of that list (SA_RESTART: an interrupted read or write
 * resumes), except SIGHUP and SIGPIPE where the process started with them ignored (nohup; a
 * parent that wants EPIPE). */
void bp_catch_stop_signals(void (*handler)(int sig));
/* "SIGTERM" for SIGTERM; "signal N" for one without a name here. */
const char *bp_signal_name(int sig);

/* Files a terminating signal must not leave behind (temporaries, an output not yet complete). Add
 * returns the entry's slot, or -1 when the list (32 entries) is full: the file is then left to the
 * next run's sweep. Remove forgets the entry (-1 is fine). Single-threaded use. */
int bp_cleanup_add(const char *path);
void bp_cleanup_remove(int slot);
/* Installs, for every terminating signal, the handler that removes the files on the cleanup list
 * and then dies by that signal (for commands that have nothing to save: prepare, export). */
void bp_cleanup_on_stop_signals(void);

/* Monotonic wall clock in seconds. */
double bp_now(void);

#define BP_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif
