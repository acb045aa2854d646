/* burst K PROG [ARG...]: run K copies of PROG at once and time them.
 *
 * Every copy is forked first and waits on one pipe (a start gate); when all K exist, the gate
 * closes and they all exec PROG at the same moment, so the K requests are really in flight
 * together (spawning from Python under load took seconds and serialised the start). The first
 * "{}" in an argument is replaced by the copy's index (unique exec ids). Stdout goes to
 * /dev/null, stderr is inherited.
 *
 * Output on stdout, after the last copy exited:
 *   fork_ns N            time to fork the K waiting copies (before the gate opens)
 *   wall_ns N            gate open to the last exit
 *   child I RC UTIME_NS STIME_NS END_NS   per copy: exit code (128+signal when killed),
 *                        its CPU (wait4's rusage), its exit time after the gate opened
 * Exit status 0 when it could run them (whatever they returned), 1 otherwise. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static long long tv_ns(struct timeval tv) {
    return (long long)tv.tv_sec * 1000000000LL + (long long)tv.tv_usec * 1000LL;
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: burst K PROG [ARG...]\n"); return 1; }
    int k = atoi(argv[1]);
    if (k <= 0 || k > 100000) { fprintf(stderr, "burst: bad K\n"); return 1; }
    int nargs = argc - 2;
    pid_t *pids = calloc((size_t)k, sizeof *pids);
    int *rcs = calloc((size_t)k, sizeof *rcs);
    long long *ut = calloc((size_t)k, sizeof *ut), *st = calloc((size_t)k, sizeof *st),
              *end = calloc((size_t)k, sizeof *end);
    char **cargv = calloc((size_t)nargs + 1, sizeof *cargv);
    if (!pids || !rcs || !ut || !st || !end || !cargv) { perror("calloc"); return 1; }
    int gate[2];
    if (pipe(gate) < 0) { perror("pipe"); return 1; }
    long long f0 = now_ns();
    for (int i = 0; i < k; i++) {
        pid_t c = fork();
        if (c < 0) { perror("fork"); return 1; }
        if (c == 0) {
            close(gate[1]);
            char b;
            ssize_t r;
            do { r = read(gate[0], &b, 1); } while (r < 0 && errno == EINTR);
            close(gate[0]);
            int dn = open("/dev/null", O_WRONLY);
            if (dn >= 0) { dup2(dn, 1); close(dn); }
            for (int a = 0; a < nargs; a++) {
                const char *arg = argv[2 + a], *at = strstr(arg, "{}");
                cargv[a] = argv[2 + a];
                if (at) {
                    size_t len = strlen(arg) + 16;
                    char *s = malloc(len);
                    if (!s) _exit(127);
                    snprintf(s, len, "%.*s%d%s", (int)(at - arg), arg, i, at + 2);
                    cargv[a] = s;
                }
            }
            cargv[nargs] = NULL;
            execv(cargv[0], cargv);
            perror("burst: exec");
            _exit(127);
        }
        pids[i] = c;
    }
    close(gate[0]);
    long long t0 = now_ns();
    close(gate[1]); /* all copies see end of file now and exec */
    for (int n = 0; n < k; n++) {
        int status;
        struct rusage ru;
        pid_t p;
        do { p = wait4(-1, &status, 0, &ru); } while (p < 0 && errno == EINTR);
        if (p < 0) { perror("wait4"); return 1; }
        long long t = now_ns() - t0;
        for (int i = 0; i < k; i++) {
            if (pids[i] == p) {
                rcs[i] = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
                ut[i] = tv_ns(ru.ru_utime);
                st[i] = tv_ns(ru.ru_stime);
                end[i] = t;
                break;
            }
        }
    }
    long long wall = now_ns() - t0;
    printf("fork_ns %lld\nwall_ns %lld\n", t0 - f0, wall);
    for (int i = 0; i < k; i++)
        printf("child %d %d %lld %lld %lld\n", i, rcs[i], ut[i], st[i], end[i]);
    return 0;
}
