/* Unit tests for rundir.c: the directory lock (refused while held, naming the holder; a dead
 * holder's lock taken over; released lock file removed) and the sweep of dead processes'
 * temporaries (never a live process's). */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "rundir.h"
#include "testutil.h"

static int setup(void **state) {
    (void)state;
    return tu_dir_create("rundir", NULL);
}

/* A child that takes the lock of dir and waits to be killed; returns its pid once it holds it. */
static pid_t child_holding(const char *dir) {
    int pipefd[2];
    assert_int_equal(pipe(pipefd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        RunDirLock lk;
        BpError err = {0};
        char ok = rundir_lock(&lk, dir, "train", &err) == 0 ? 'y' : 'n';
        if (write(pipefd[1], &ok, 1) != 1) _exit(2);
        for (;;) pause();
    }
    char ok = 0;
    assert_int_equal(read(pipefd[0], &ok, 1), 1);
    assert_int_equal(ok, 'y');
    close(pipefd[0]);
    close(pipefd[1]);
    return pid;
}

static void test_lock_refuses_second_holder(void **state) {
    (void)state;
    const char *dir = tu_path("run");
    pid_t holder = child_holding(dir);
    RunDirLock lk;
    BpError err = {0};
    assert_int_equal(rundir_lock(&lk, dir, "export", &err), -1);
    assert_int_equal(err.kind, BP_ERR_USAGE);
    char want[64];
    snprintf(want, sizeof want, "pid %ld host ", (long)holder);
    if (!strstr(err.msg, want) || !strstr(err.msg, " train") || !strstr(err.msg, "in use by another"))
        fail_msg("message does not name the holder: %s", err.msg);

    /* killed like kill -9: its lock file stays, but blocks nobody; the message names who left it */
    kill(holder, SIGKILL);
    waitpid(holder, NULL, 0);
    char lock_path[4200];
    snprintf(lock_path, sizeof lock_path, "%s/%s", dir, RUNDIR_LOCK_NAME);
    assert_int_equal(access(lock_path, F_OK), 0);
    assert_int_equal(rundir_lock(&lk, dir, "train", &err), 0);
    assert_non_null(strstr(lk.stale_holder, want));
    rundir_unlock(&lk);
    assert_int_equal(access(lock_path, F_OK), -1); /* released: removed */
    assert_int_equal(rundir_lock(&lk, dir, "train", &err), 0);
    assert_string_equal(lk.stale_holder, "");
    rundir_unlock(&lk);
}

static void test_lock_on_a_file(void **state) {
    (void)state;
    const char *file = tu_path("plain");
    tu_write_bytes(file, "x", 1);
    RunDirLock lk;
    BpError err = {0};
    assert_int_equal(rundir_lock(&lk, file, "train", &err), -1);
    if (!strstr(err.msg, "a file of that name exists")) fail_msg("%s", err.msg);
}

static void test_sweep_only_dead_temporaries(void **state) {
    (void)state;
    pid_t dead = fork();
    assert_true(dead >= 0);
    if (dead == 0) _exit(0);
    waitpid(dead, NULL, 0);
    pid_t live = fork();
    assert_true(live >= 0);
    if (live == 0) {
        for (;;) pause();
    }
    char p_dead[512], p_live[512], p_mine[512], p_other[512];
    snprintf(p_dead, sizeof p_dead, "%s/ckpt-00000004.bin.tmp.%ld", g_dir, (long)dead);
    snprintf(p_live, sizeof p_live, "%s/ckpt-00000008.bin.tmp.%ld", g_dir, (long)live);
    snprintf(p_mine, sizeof p_mine, "%s/metrics.jsonl.tmp.%ld", g_dir, (long)getpid());
    snprintf(p_other, sizeof p_other, "%s/notes.tmp.x12", g_dir);
    const char *all[] = {p_dead, p_live, p_mine, p_other};
    for (size_t i = 0; i < BP_ARRAY_LEN(all); i++) tu_write_bytes(all[i], "x", 1);
    BpError err = {0};
    assert_int_equal(rundir_sweep_temps(g_dir, NULL, NULL, &err), 1);
    assert_int_equal(access(p_dead, F_OK), -1);
    assert_int_equal(access(p_live, F_OK), 0);
    assert_int_equal(access(p_mine, F_OK), 0);
    assert_int_equal(access(p_other, F_OK), 0);
    kill(live, SIGKILL);
    waitpid(live, NULL, 0);
    assert_int_equal(rundir_sweep_temps(g_dir, NULL, NULL, &err), 1);
    assert_int_equal(access(p_live, F_OK), -1);
    assert_int_equal(rundir_sweep_temps(tu_path("missing"), NULL, NULL, &err), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_lock_refuses_second_holder, setup, tu_dir_teardown),
        cmocka_unit_test_setup_teardown(test_lock_on_a_file, setup, tu_dir_teardown),
        cmocka_unit_test_setup_teardown(test_sweep_only_dead_temporaries, setup, tu_dir_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
