/* spawnloop CGPROCS N PROG [ARG...]: join the cgroup whose cgroup.procs is CGPROCS, then
 * fork+exec PROG N times, waiting for each. Used to measure the wrapper's own cost: the bench
 * compares the cgroup's CPU for PROG run directly and through a wrapper. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: spawnloop CGPROCS N PROG [ARG...]\n"); return 2; }
    int fd = open(argv[1], O_WRONLY);
    char pid[24];
    int n = snprintf(pid, sizeof pid, "%d", (int)getpid());
    if (fd < 0 || write(fd, pid, (size_t)n) != n) { perror("join cgroup"); return 1; }
    close(fd);
    long count = atol(argv[2]);
    for (long i = 0; i < count; i++) {
        pid_t c = fork();
        if (c < 0) { perror("fork"); return 1; }
        if (c == 0) { execv(argv[3], argv + 3); _exit(127); }
        int st;
        if (waitpid(c, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr, "spawnloop: child failed (%d)\n", st);
            return 1;
        }
    }
    return 0;
}
