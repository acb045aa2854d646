/* Portable fallback of wrapper.c (used on architectures without its raw-syscall start-up;
 * libc start-up makes it a few hundred microseconds costlier, which the calibration reports).
 * Same behaviour: join the cgroup, log pid, time and argv, exec the real binary with the same argv. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void say(const char *a, const char *b) {
    (void)!write(2, a, strlen(a));
    (void)!write(2, b, strlen(b));
    (void)!write(2, "\n", 1);
}

int main(int argc, char **argv) {
    char pid[24];
    int n = snprintf(pid, sizeof pid, "%d", (int)getpid());
    int fd = open(PROCS, O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, pid, (size_t)n) != n) {
        say("shimbench wrapper: cannot join ", PROCS);
        return 126;
    }
    close(fd);
#ifdef LOG
    {
        static char line[4096];
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        size_t len = (size_t)snprintf(line, sizeof line, "%s %ld.%09ld", pid, (long)ts.tv_sec, ts.tv_nsec);
        for (int i = 0; i < argc; i++) {
            line[len++] = ' ';
            for (const char *s = argv[i]; *s && len < sizeof line - 2; s++) line[len++] = *s;
        }
        line[len++] = '\n';
        int lf = open(LOG, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (lf >= 0) { (void)!write(lf, line, len); close(lf); }
    }
#endif
    execv(REAL, argv);
    say("shimbench wrapper: cannot exec ", REAL);
    return 127;
}
