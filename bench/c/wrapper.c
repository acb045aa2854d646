/* shimbench wrapper, without libc so that it costs little more than one execve: moves itself
 * into one cgroup, then execs the real binary with the same argv (argv[0] included) and
 * environment. Compiled per target by the bench:
 *   gcc -static -nostdlib -fno-stack-protector -fno-builtin -O2 -s \
 *       -DREAL='"/usr/bin/x"' -DPROCS='"/sys/fs/cgroup/cpuacct/g/cgroup.procs"' \
 *       [-DLOG='"/tmp/w/invocations.log"'] wrapper.c
 * The log line (pid, CLOCK_MONOTONIC time, argv) is written after the move, so it is charged to the measured
 * cgroup; the bench measures the whole wrapper cost (bench/README.md). x86_64 and aarch64;
 * wrapper_libc.c is the portable fallback. */
#if defined(__x86_64__)
#define NR_write 1
#define NR_close 3
#define NR_getpid 39
#define NR_execve 59
#define NR_exit 60
#define NR_openat 257
#define NR_clock_gettime 228
static long sys3(long n, long a, long b, long c) {
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
    return r;
}
static long sys4(long n, long a, long b, long c, long d) {
    long r;
    register long r10 __asm__("r10") = d;
    __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10) : "rcx", "r11", "memory");
    return r;
}
__asm__(".text\n.globl _start\n_start:\n mov %rsp,%rdi\n and $-16,%rsp\n call wmain\n hlt\n");
#elif defined(__aarch64__)
#define NR_write 64
#define NR_close 57
#define NR_getpid 172
#define NR_execve 221
#define NR_exit 93
#define NR_openat 56
#define NR_clock_gettime 113
static long sys4(long n, long a, long b, long c, long d) {
    register long x8 __asm__("x8") = n;
    register long x0 __asm__("x0") = a;
    register long x1 __asm__("x1") = b;
    register long x2 __asm__("x2") = c;
    register long x3 __asm__("x3") = d;
    __asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3) : "memory");
    return x0;
}
static long sys3(long n, long a, long b, long c) { return sys4(n, a, b, c, 0); }
__asm__(".text\n.globl _start\n_start:\n mov x0, sp\n bl wmain\n");
#else
#error "no raw-syscall wrapper for this architecture: use wrapper_libc.c"
#endif

#define AT_FDCWD -100
#define O_WRONLY 01
#define O_CREAT 0100
#define O_APPEND 02000
#define O_CLOEXEC 02000000

static unsigned long slen(const char *s) {
    unsigned long n = 0;
    while (s[n]) n++;
    return n;
}

static void say(const char *a, const char *b) {
    sys3(NR_write, 2, (long)a, (long)slen(a));
    sys3(NR_write, 2, (long)b, (long)slen(b));
    sys3(NR_write, 2, (long)"\n", 1);
}

__attribute__((used, noreturn)) void wmain(long *sp) {
    long argc = sp[0];
    char **argv = (char **)(sp + 1);
    char **envp = argv + argc + 1;
    char pid[24];
    int i = 23;
    long p = sys3(NR_getpid, 0, 0, 0);
    pid[i] = 0;
    do { pid[--i] = (char)('0' + p % 10); p /= 10; } while (p);
    long fd = sys4(NR_openat, AT_FDCWD, (long)PROCS, O_WRONLY | O_CLOEXEC, 0);
    if (fd < 0 || sys3(NR_write, fd, (long)(pid + i), 23 - i) != 23 - i) {
        say("shimbench wrapper: cannot join ", PROCS);
        sys3(NR_exit, 126, 0, 0);
    }
    sys3(NR_close, fd, 0, 0);
#ifdef LOG
    {
        static char line[4096];
        unsigned long len = 0;
        long ts[2] = {0, 0}; /* CLOCK_MONOTONIC, as Python's time.monotonic() */
        sys3(NR_clock_gettime, 1, (long)ts, 0);
        for (const char *s = pid + i; *s; s++) line[len++] = *s;
        line[len++] = ' ';
        char num[24];
        int k = 23;
        num[k] = 0;
        do { num[--k] = (char)('0' + ts[0] % 10); ts[0] /= 10; } while (ts[0]);
        for (const char *s = num + k; *s; s++) line[len++] = *s;
        line[len++] = '.';
        for (long div = 100000000; div; div /= 10) line[len++] = (char)('0' + (ts[1] / div) % 10);
        for (long a = 0; a < argc; a++) {
            line[len++] = ' ';
            for (const char *s = argv[a]; *s && len < sizeof line - 2; s++) line[len++] = *s;
        }
        line[len++] = '\n';
        long lf = sys4(NR_openat, AT_FDCWD, (long)LOG, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (lf >= 0) {
            sys3(NR_write, lf, (long)line, (long)len);
            sys3(NR_close, lf, 0, 0);
        }
    }
#endif
    sys3(NR_execve, (long)REAL, (long)argv, (long)envp);
    say("shimbench wrapper: cannot exec ", REAL);
    sys3(NR_exit, 127, 0, 0);
    for (;;) {}
}
