/* Compiled by tests/security (gcc -static) and run INSIDE a sandbox: makes system calls
 * through the 32-bit ABI (int $0x80) and the x32 ABI (nr | 0x40000000 via `syscall`).
 * The profiles set other_arches = "kill": the process must die with SIGSYS before the
 * call does anything.
 *
 *   abi_escape HOST_PIDNS MODE [ARG]
 *
 * Before any attack it checks that it runs in a sandbox (its pid namespace differs from
 * HOST_PIDNS, which the test read on the host; no effective capabilities; a small pid)
 * and exits 97 without attacking otherwise.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define REFUSED 97
#define X32 0x40000000L

static char buf[4096]; /* static: below 4 GiB in a non-PIE binary, as int $0x80 needs */

static void say(const char *s)
{
    (void)!write(1, s, strlen(s));
}

static int in_sandbox(const char *host_pidns)
{
    char ns[256] = {0};
    if (readlink("/proc/self/ns/pid", ns, sizeof ns - 1) <= 0 || strcmp(ns, host_pidns) == 0)
        return 0;
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return 0;
    char line[512];
    int caps_ok = 0;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "CapEff:", 7) == 0)
            caps_ok = strtoull(line + 7, NULL, 16) == 0;
    fclose(f);
    return caps_ok && getpid() < 100;
}

static long int80(long nr, long a, long b, long c)
{
    long ret;
    __asm__ volatile("int $0x80"
                     : "=a"(ret)
                     : "a"(nr), "b"(a), "c"(b), "d"(c)
                     : "r8", "r9", "r10", "r11", "memory");
    return ret;
}

static long sys64(long nr, long a, long b, long c)
{
    long ret;
    register long r10 __asm__("r10") = 0;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(nr), "D"(a), "S"(b), "d"(c), "r"(r10)
                     : "rcx", "r11", "memory");
    return ret;
}

int main(int argc, char **argv)
{
    if (argc < 3)
        return 2;
    if (!in_sandbox(argv[1])) {
        say("REFUSED not in a sandbox\n");
        return REFUSED;
    }
    const char *mode = argv[2];
    const char *arg = argc > 3 ? argv[3] : "";
    if (strlen(arg) >= sizeof buf)
        return 2;
    strcpy(buf, arg);
    long n = (long)strlen(buf);
    long r;
    say("ATTACK ");
    say(mode);
    say("\n");
    if (strcmp(mode, "native-mkdir") == 0)
        r = sys64(SYS_mkdir, (long)buf, 0755, 0);
    else if (strcmp(mode, "native-getpid") == 0)
        r = sys64(SYS_getpid, 0, 0, 0);
    else if (strcmp(mode, "int80-mkdir") == 0)
        r = int80(39, (long)buf, 0755, 0);          /* i386 mkdir */
    else if (strcmp(mode, "int80-sethostname") == 0)
        r = int80(74, (long)buf, n, 0);             /* i386 sethostname */
    else if (strcmp(mode, "int80-getpid") == 0)
        r = int80(20, 0, 0, 0);                     /* i386 getpid */
    else if (strcmp(mode, "x32-mkdir") == 0)
        r = sys64(X32 | SYS_mkdir, (long)buf, 0755, 0);
    else if (strcmp(mode, "x32-sethostname") == 0)
        r = sys64(X32 | SYS_sethostname, (long)buf, n, 0);
    else if (strcmp(mode, "x32-getpid") == 0)
        r = sys64(X32 | SYS_getpid, 0, 0, 0);
    else
        return 2;
    char out[64];
    snprintf(out, sizeof out, "SURVIVED %ld\n", r);
    say(out);
    return 0;
}
