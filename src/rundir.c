/* rundir.c: the directory lock and the sweep of dead processes' temporaries (see rundir.h). */
#include "rundir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* The holder line a lock file holds, without its newline; "" when empty or unreadable. */
static void read_holder(int fd, char *out, size_t len) {
    ssize_t n = pread(fd, out, len - 1, 0);
    out[n > 0 ? n : 0] = 0;
    out[strcspn(out, "\n")] = 0;
}

static int write_holder(int fd, const char *what) {
    char host[256] = "?";
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = 0;
    char line[512];
    int n = snprintf(line, sizeof line, "pid %ld host %s %s\n", (long)getpid(), host, what);
    if (ftruncate(fd, 0) != 0) return -1;
    return pwrite(fd, line, (size_t)n, 0) == n ? 0 : -1;
}

/* One attempt: 1 when the lock is ours, 0 when the file was replaced meanwhile (try again), -1 on
 * refusal or failure. */
static int try_lock(RunDirLock *lk, const char *dir, const char *what, BpError *err) {
    int fd = open(lk->path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return bp_fail_kind(err, BP_ERR_IO, "%s: cannot create the lock file: %s", lk->path, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        char holder[256];
        read_holder(fd, holder, sizeof holder);
        close(fd);
        if (e != EWOULDBLOCK)
            return bp_fail_kind(err, BP_ERR_IO, "%s: cannot lock: %s", lk->path, strerror(e));
        return bp_fail_usage(err,
                             "%s is in use by another bert_pretrain (%s). Two processes writing one "
                             "directory would mix their metrics and replace each other's checkpoints. "
                             "HINT: wait for it to finish, stop it (SIGTERM saves a checkpoint), or "
                             "choose another directory",
                             dir, holder[0] ? holder : "its lock file names no holder yet");
    }
    /* the holder before us removes the file as it lets go: a lock on that unlinked file is no lock */
    struct stat a, b;
    if (fstat(fd, &a) != 0 || stat(lk->path, &b) != 0 || a.st_ino != b.st_ino || a.st_dev != b.st_dev) {
        close(fd);
        return 0;
    }
    read_holder(fd, lk->stale_holder, sizeof lk->stale_holder);
    if (write_holder(fd, what) != 0) {
        int e = errno;
        close(fd);
        unlink(lk->path);
        return bp_fail_kind(err, BP_ERR_IO, "%s: cannot write the lock file: %s", lk->path, strerror(e));
    }
    lk->fd = fd;
    return 1;
}

int rundir_lock(RunDirLock *lk, const char *dir, const char *what, BpError *err) {
    memset(lk, 0, sizeof *lk);
    lk->fd = -1;
    lk->cleanup_slot = -1;
    if (bp_mkdir_p(dir, err) != 0) return -1;
    int w = snprintf(lk->path, sizeof lk->path, "%s/%s", dir, RUNDIR_LOCK_NAME);
    if (w < 0 || (size_t)w >= sizeof lk->path) return bp_fail(err, "%s: path too long", dir);
    for (int attempt = 0; attempt < 100; attempt++) {
        int rc = try_lock(lk, dir, what, err);
        if (rc < 0) return -1;
        if (rc == 1) {
            lk->cleanup_slot = bp_cleanup_add(lk->path);
            return 0;
        }
    }
    return bp_fail_kind(err, BP_ERR_IO, "%s: the lock file keeps being replaced", lk->path);
}

void rundir_unlock(RunDirLock *lk) {
    if (lk->fd < 0) return;
    bp_cleanup_remove(lk->cleanup_slot);
    unlink(lk->path); /* before letting go: see try_lock */
    close(lk->fd);
    lk->fd = -1;
}

/* The PID of a temporary's name (NAME.tmp.PID, NAME not empty), or -1. */
static long temp_pid(const char *name) {
    const char *t = strstr(name, ".tmp.");
    if (!t || t == name) return -1;
    for (const char *next; (next = strstr(t + 1, ".tmp.")) != NULL;) t = next;
    const char *p = t + 5;
    if (*p < '1' || *p > '9') return -1;
    long pid = 0;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (pid > (LONG_MAX - 9) / 10) return -1;
        pid = pid * 10 + (*p - '0');
    }
    return *p ? -1 : pid;
}

static bool process_alive(long pid) {
    if (pid <= 0 || pid > INT_MAX) return false;
    return kill((pid_t)pid, 0) == 0 || errno == EPERM; /* EPERM: alive, another user's */
}

int rundir_sweep_temps(const char *dir, RundirSweptFn fn, void *ctx, BpError *err) {
    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOENT) return 0;
        return bp_fail_kind(err, BP_ERR_IO, "%s: cannot list: %s", dir, strerror(errno));
    }
    int removed = 0, rc = 0;
    struct dirent *de;
    char path[4600];
    while (rc == 0 && (de = readdir(d)) != NULL) {
        long pid = temp_pid(de->d_name);
        if (pid < 0 || process_alive(pid)) continue;
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        struct stat st;
        if (lstat(path, &st) != 0 || !S_ISREG(st.st_mode)) continue;
        if (unlink(path) == 0) {
            removed++;
            if (fn) fn(path, pid, ctx);
        } else if (errno != ENOENT) {
            rc = bp_fail_kind(err, BP_ERR_IO, "%s: cannot remove a stale temporary: %s", path, strerror(errno));
        }
    }
    closedir(d);
    return rc < 0 ? -1 : removed;
}
