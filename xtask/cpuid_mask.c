/*
 * cpuid_mask.so: makes a process, and every process it starts, see an AVX2-only x86-64 CPU
 * (x86-64-v3: AVX2, FMA, F16C, BMI; no AVX-512 of any kind, no AVX-VNNI, no AMX), so that
 * clip-wgpu and the engines it is compared with (ONNX Runtime's MLAS, PyTorch, numpy) all pick
 * the kernels they would pick on such a CPU, on a machine that has more.
 *
 * Used by `cargo xtask bench --cpu-as avx2`, which builds it with `cc -O2 -shared -fPIC` and
 * runs the benchmark under LD_PRELOAD. Linux on x86-64 only, and only where the CPU and the
 * kernel offer CPUID faulting (`cpuid_fault` in /proc/cpuinfo; most Intel CPUs since Ivy
 * Bridge, and KVM guests on them).
 *
 * How: a constructor turns on CPUID faulting for the process (arch_prctl(ARCH_SET_CPUID, 0);
 * threads and children inherit it, an exec turns it off again and LD_PRELOAD turns it back on),
 * so each CPUID instruction raises SIGSEGV. The handler runs the real CPUID with faulting off
 * for that one instruction, clears the feature bits of the hidden instruction sets, writes the
 * result into the interrupted registers and steps over the 2-byte instruction. A SIGSEGV that is
 * not a CPUID gets the default action (the process dies as it would have).
 *
 * What it does not hide: XGETBV still reports the AVX-512 register state enabled (programs test
 * the CPUID bits as well, and those are cleared), and whatever the dynamic loader chose before
 * the constructor ran (glibc's string functions: the bench also sets
 * GLIBC_TUNABLES=glibc.cpu.hwcaps=-AVX512F,... for those). The core's other properties (its
 * ports, caches and clock) stay those of the real CPU: figures under this mask are the code an
 * AVX2-only CPU runs, on this machine's core, not those of an AVX2-only CPU.
 */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <cpuid.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

static long set_cpuid(int enabled) { return syscall(SYS_arch_prctl, ARCH_SET_CPUID, enabled); }

/* leaf 7 subleaf 0, EBX: AVX512F, DQ, IFMA, PF, ER, CD, BW, VL */
#define HIDE_7_0_EBX ((1u << 16) | (1u << 17) | (1u << 21) | (1u << 26) | (1u << 27) | (1u << 28) | (1u << 30) | (1u << 31))
/* leaf 7 subleaf 0, ECX: AVX512_VBMI, VBMI2, VNNI, BITALG, VPOPCNTDQ */
#define HIDE_7_0_ECX ((1u << 1) | (1u << 6) | (1u << 11) | (1u << 12) | (1u << 14))
/* leaf 7 subleaf 0, EDX: AVX512_4VNNIW, 4FMAPS, VP2INTERSECT, AMX-BF16, AVX512_FP16, AMX-TILE, AMX-INT8 */
#define HIDE_7_0_EDX ((1u << 2) | (1u << 3) | (1u << 8) | (1u << 22) | (1u << 23) | (1u << 24) | (1u << 25))
/* leaf 7 subleaf 1, EAX: AVX-VNNI, AVX512_BF16 */
#define HIDE_7_1_EAX ((1u << 4) | (1u << 5))

static void on_segv(int sig, siginfo_t *info, void *context) {
    (void)sig;
    (void)info;
    ucontext_t *uc = context;
    greg_t *r = uc->uc_mcontext.gregs;
    const unsigned char *ip = (const unsigned char *)r[REG_RIP];
    if (ip[0] != 0x0f || ip[1] != 0xa2) {
        /* not a CPUID: the default action, when the instruction faults again */
        signal(SIGSEGV, SIG_DFL);
        return;
    }
    unsigned leaf = (unsigned)r[REG_RAX], sub = (unsigned)r[REG_RCX], a, b, c, d;
    set_cpuid(1);
    __cpuid_count(leaf, sub, a, b, c, d);
    set_cpuid(0);
    if (leaf == 7 && sub == 0) {
        b &= ~HIDE_7_0_EBX;
        c &= ~HIDE_7_0_ECX;
        d &= ~HIDE_7_0_EDX;
    } else if (leaf == 7 && sub == 1) {
        a &= ~HIDE_7_1_EAX;
    }
    r[REG_RAX] = a;
    r[REG_RBX] = b;
    r[REG_RCX] = c;
    r[REG_RDX] = d;
    r[REG_RIP] += 2;
}

__attribute__((constructor)) static void cpuid_mask_init(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSEGV, &sa, NULL) != 0 || set_cpuid(0) != 0) {
        /* no CPUID faulting here: say so once and leave the process as it is */
        static const char msg[] = "cpuid_mask: CPUID faulting is not available (no cpuid_fault): the CPU is not masked\n";
        ssize_t ignored = write(2, msg, sizeof msg - 1);
        (void)ignored;
        signal(SIGSEGV, SIG_DFL);
    }
}
