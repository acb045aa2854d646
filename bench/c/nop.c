/* A static program that only exits, without libc: the exec target for the wrapper-overhead
 * measurement (so the measurement is not dominated by libc start-up). */
#if defined(__x86_64__)
__asm__(".text\n.globl _start\n_start:\n mov $60,%eax\n xor %edi,%edi\n syscall\n");
#elif defined(__aarch64__)
__asm__(".text\n.globl _start\n_start:\n mov x0, #0\n mov x8, #93\n svc 0\n");
#else
int main(void) { return 0; }
#endif
