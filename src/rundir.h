/* rundir.h: a directory one process writes at a time (a run directory, an export directory).
 *
 * The lock is DIR/bert_pretrain.lock, held with flock(2) for as long as the process writes there:
 * the kernel drops it when the process dies, even by kill -9, so a stale lock file never blocks
 * (the next process takes it over and says so). The file names its holder ("pid 1234 host node7
 * train"), which is what a refused second process reports.
 *
 * Temporaries: every atomic write goes through NAME.tmp.PID (common.h). A kill -9 leaves that file
 * behind; rundir_sweep_temps removes the ones whose PID no longer runs on this host. It runs under
 * the lock, so no other bert_pretrain is writing in the directory, and it never touches a
 * temporary of a process that is alive. */
#ifndef BP_RUNDIR_H
#define BP_RUNDIR_H

#include "common.h"

#define RUNDIR_LOCK_NAME "bert_pretrain.lock"

typedef struct {
    int fd; /* -1 when not held */
    char path[4200];
    int cleanup_slot;
    char stale_holder[256]; /* what a dead holder's lock file said ("" when there was none) */
} RunDirLock;

/* Creates dir when missing, then takes its lock for `what` (a word: "train", "export"). Refused
 * (BP_ERR_USAGE, naming the holder's pid, host and command) while another process holds it; -1
 * with err filled on an OS failure. */
int rundir_lock(RunDirLock *lk, const char *dir, const char *what, BpError *err);
/* Releases and removes the lock file (a lock never taken is fine). */
void rundir_unlock(RunDirLock *lk);

/* Called for every temporary removed: its path and the dead process that wrote it. */
typedef void (*RundirSweptFn)(const char *path, long pid, void *ctx);

/* Removes dir's temporaries (regular files named *.tmp.PID) whose PID is not a live process.
 * Returns how many it removed, or -1 with err filled. */
int rundir_sweep_temps(const char *dir, RundirSweptFn fn, void *ctx, BpError *err);

#endif
