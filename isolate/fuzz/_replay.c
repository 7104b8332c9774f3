/* isolate-replay.so: replays one input of a libFuzzer target without libFuzzer's driver.
 *
 * isolate.fuzz.triage preloads it (LD_PRELOAD) into a libFuzzer binary, which cannot be
 * relinked, and sets ISOLATE_REPLAY=<LLVMFuzzerTestOneInput offset>:<LLVMFuzzerInitialize
 * offset or 0>:<timeout seconds> (offsets from the executable's load address, read from its
 * ELF symbol table by triage: the functions are not in the dynamic symbol table). It
 * interposes __libc_start_main and runs its own main instead of libFuzzer's, the way LLVM's
 * StandaloneFuzzTargetMain.c does: LLVMFuzzerInitialize(&argc, &argv) if the target defines
 * it, then LLVMFuzzerTestOneInput once on an exactly sized malloc'd copy of the last
 * argument's file. libFuzzer's start (its corpus tables, dictionaries, flag parsing: ~3/4 of
 * a replay's CPU) never runs. The sanitizers run as usual: ASan/UBSan report crashes, LSan
 * checks leaks at exit, ASan's soft/hard RSS limits and max_allocation_size (ASAN_OPTIONS,
 * set by triage) stand in for libFuzzer's -rss_limit_mb/-malloc_limit_mb, and an alarm here
 * for its -timeout, reported with the stack like libFuzzer's.
 *
 * Module map: triage has the sanitizers print bare frame addresses (stack_trace_format
 * "#%n %p", print_summary=0), which spares ASan's report its module-list refresh (a
 * dl_iterate_phdr walk plus two reads of /proc/self/maps, ~10% of a crash replay's CPU). The
 * shim prints the loaded modules instead, from dl_iterate_phdr, once before the input runs
 * and again from the sanitizers' death callback, after the report (so a library the target
 * dlopen()ed is listed): one line per object, "isolate-replay: module <base> <start>-<end>...
 * <path>", with ASan's own module names, ranges and offsets (base = load bias; the main
 * program's path from /proc/self/exe). triage turns each address back into (module+offset)
 * with the last map printed before the end.
 *
 * Without ISOLATE_REPLAY it changes nothing. It removes ISOLATE_REPLAY and LD_PRELOAD from
 * the environment before the target runs, so programs the target starts do not get it.
 * Every function of its own is named isolate_replay_* (isolate.fuzz.reports drops them
 * from crash stacks, like libFuzzer's fuzzer:: frames).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ENV_NAME "ISOLATE_REPLAY"
/* isolate.fuzz.shim.RAW_FRAME_OPTIONS, which triage appends to the sanitizers' options of a
 * shim replay: the sanitizers have read them by the time the shim runs, so the shim takes
 * them out again and the target (and whatever it starts) sees the options as they were. */
#define RAW_FRAME_OPTIONS ":stack_trace_format='    #%n %p':print_summary=0"
#define MARKER "isolate-replay: running "
#define TIMEOUT_EXIT 70   /* libFuzzer's -timeout_exitcode */
#define ERROR_EXIT 77     /* libFuzzer's -error_exitcode */

typedef int (*isolate_replay_main_t)(int, char **, char **);
typedef int (*isolate_replay_test_t)(const uint8_t *, size_t);
typedef int (*isolate_replay_init_t)(int *, char ***);
typedef int (*isolate_replay_start_t)(isolate_replay_main_t, int, char **, void (*)(void), void (*)(void),
                                      void (*)(void), void *);

static isolate_replay_test_t isolate_replay_test;
static isolate_replay_init_t isolate_replay_init;
static unsigned isolate_replay_timeout;
static void (*isolate_replay_print_stack)(void);
static int (*isolate_replay_acquire)(void);

struct isolate_replay_find {
    uintptr_t test_off, init_off, base;
    int test_ok, init_ok;
};

static void isolate_replay_say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void isolate_replay_say(const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof buf)
        n = sizeof buf - 1;
    for (int off = 0; off < n;) {
        ssize_t w = write(2, buf + off, n - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        off += w;
    }
}

/* The main program is the first object dl_iterate_phdr reports: its load address, and
 * whether each offset lies in one of its executable segments. */
static int isolate_replay_phdr(struct dl_phdr_info *info, size_t size, void *data) {
    struct isolate_replay_find *f = data;
    f->base = info->dlpi_addr;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X))
            continue;
        if (f->test_off >= ph->p_vaddr && f->test_off < ph->p_vaddr + ph->p_memsz)
            f->test_ok = 1;
        if (f->init_off && f->init_off >= ph->p_vaddr && f->init_off < ph->p_vaddr + ph->p_memsz)
            f->init_ok = 1;
    }
    return 1;
}

static void isolate_replay_write(const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(2, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

static char isolate_replay_exe[4096];

struct isolate_replay_buf {
    char data[16384];
    size_t len;
    int first;
};

static void isolate_replay_put(struct isolate_replay_buf *b, const char *p, size_t n) {
    if (b->len + n > sizeof b->data) {
        isolate_replay_write(b->data, b->len);
        b->len = 0;
        if (n > sizeof b->data) {
            isolate_replay_write(p, n);
            return;
        }
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

/* One line per loaded object: "isolate-replay: module <base> <start>-<end>... <path>",
 * base its load bias and a range per PT_LOAD segment (hex), as ASan's module list has
 * them; the main program named by /proc/self/exe, objects without a name skipped. */
static int isolate_replay_module(struct dl_phdr_info *info, size_t size, void *data) {
    struct isolate_replay_buf *b = data;
    const char *name = info->dlpi_name;
    if (b->first) {
        b->first = 0;
        name = isolate_replay_exe;
    }
    if (!name || !*name || strchr(name, '\n'))
        return 0;
    char num[64];
    int n = snprintf(num, sizeof num, "isolate-replay: module 0x%lx", (unsigned long)info->dlpi_addr);
    isolate_replay_put(b, num, (size_t)n);
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD)
            continue;
        uintptr_t start = info->dlpi_addr + ph->p_vaddr;
        n = snprintf(num, sizeof num, " 0x%lx-0x%lx", (unsigned long)start, (unsigned long)(start + ph->p_memsz));
        isolate_replay_put(b, num, (size_t)n);
    }
    isolate_replay_put(b, " ", 1);
    isolate_replay_put(b, name, strlen(name));
    isolate_replay_put(b, "\n", 1);
    return 0;
}

/* The module map, in one write. */
static void isolate_replay_modules(void) {
    static struct isolate_replay_buf b;   /* not on the stack: this may run on a signal stack */
    b.len = 0;
    b.first = 1;
    dl_iterate_phdr(isolate_replay_module, &b);
    isolate_replay_write(b.data, b.len);
}

static void isolate_replay_alarm(int sig) {
    if (isolate_replay_acquire && !isolate_replay_acquire())
        return;   /* a sanitizer report is already under way */
    isolate_replay_say("==%d== ERROR: isolate-replay: timeout after %u seconds\n", (int)getpid(),
                       isolate_replay_timeout);
    if (isolate_replay_print_stack)
        isolate_replay_print_stack();
    isolate_replay_modules();
    isolate_replay_say("SUMMARY: isolate-replay: timeout\n");
    _exit(TIMEOUT_EXIT);
}

static int isolate_replay_read(const char *path, uint8_t **data, size_t *size) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    size_t cap = st.st_size > 0 ? (size_t)st.st_size : 0, n = 0;
    uint8_t *buf = malloc(cap + 1);
    if (!buf) {
        close(fd);
        return -1;
    }
    for (;;) {
        if (n == cap) {   /* the file grew: read to its end as libFuzzer does */
            uint8_t *more = realloc(buf, cap * 2 + 4096 + 1);
            if (!more) {
                free(buf);
                close(fd);
                return -1;
            }
            buf = more;
            cap = cap * 2 + 4096;
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            free(buf);
            close(fd);
            return -1;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    *data = buf;
    *size = n;
    return 0;
}

/* libFuzzer's flags that change a one-input replay: -runs=N calls the target N times on
 * the input, -max_len=N cuts the input to N bytes (the last of each wins, as in libFuzzer).
 * triage hands every other flag to libFuzzer's own main (isolate.fuzz.shim.SHIM_FLAGS). */
static void isolate_replay_flags(int argc, char **argv, long *runs, long *max_len) {
    for (int i = 1; i < argc - 1; i++) {
        if (!strncmp(argv[i], "-runs=", 6))
            *runs = strtol(argv[i] + 6, NULL, 10);
        else if (!strncmp(argv[i], "-max_len=", 9))
            *max_len = strtol(argv[i] + 9, NULL, 10);
    }
}

static int isolate_replay_main(int argc, char **argv, char **envp) {
    const char *path = argv[argc - 1];
    uint8_t *data;
    size_t size;
    long runs = 1, max_len = 0;
    isolate_replay_flags(argc, argv, &runs, &max_len);
    if (runs < 1)
        runs = 1;
    if (isolate_replay_init)
        isolate_replay_init(&argc, &argv);
    if (isolate_replay_read(path, &data, &size) < 0) {
        isolate_replay_say("isolate-replay: cannot read %s: %s\n", path, strerror(errno));
        return 1;
    }
    if (max_len > 0 && (size_t)max_len < size)
        size = (size_t)max_len;
    isolate_replay_say(MARKER "%s (%zu bytes) without libFuzzer's driver\n", path, size);
    isolate_replay_modules();
    if (isolate_replay_timeout) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = isolate_replay_alarm;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGALRM, &sa, NULL);
    }
    for (long run = 0; run < runs; run++) {
        /* An exactly sized copy, as libFuzzer's ExecuteCallback makes: a read one past the
         * end of the input is a heap-buffer-overflow. */
        uint8_t *copy = malloc(size ? size : 1);
        if (!copy)
            return 1;
        memcpy(copy, data, size);
        if (isolate_replay_timeout)
            alarm(isolate_replay_timeout);
        isolate_replay_test(copy, size);
        if (isolate_replay_timeout)
            alarm(0);
        if (size && memcmp(copy, data, size) != 0) {
            isolate_replay_say("==%d== ERROR: isolate-replay: fuzz target overwrites its const input\n",
                               (int)getpid());
            _exit(ERROR_EXIT);
        }
        free(copy);
    }
    free(data);
    isolate_replay_say("isolate-replay: done\n");
    return 0;
}

int __libc_start_main(isolate_replay_main_t main, int argc, char **argv, void (*init)(void), void (*fini)(void),
                      void (*rtld_fini)(void), void *stack_end) {
    isolate_replay_start_t real = (isolate_replay_start_t)dlsym(RTLD_NEXT, "__libc_start_main");
    if (!real)
        _exit(127);
    const char *spec = getenv(ENV_NAME);
    if (spec) {
        struct isolate_replay_find f = {0};
        unsigned long timeout = 0;
        char *end;
        errno = 0;
        f.test_off = strtoull(spec, &end, 16);
        if (*end == ':')
            f.init_off = strtoull(end + 1, &end, 16);
        if (*end == ':')
            timeout = strtoul(end + 1, &end, 10);
        if (errno || *end || !f.test_off || argc < 2) {
            isolate_replay_say("isolate-replay: bad " ENV_NAME " %s: libFuzzer's main runs instead\n", spec);
        } else {
            dl_iterate_phdr(isolate_replay_phdr, &f);
            if (!f.test_ok || (f.init_off && !f.init_ok)) {
                isolate_replay_say("isolate-replay: LLVMFuzzerTestOneInput is not at +0x%lx of this program: "
                                   "libFuzzer's main runs instead\n", (unsigned long)f.test_off);
            } else {
                isolate_replay_test = (isolate_replay_test_t)(f.base + f.test_off);
                isolate_replay_init = f.init_off ? (isolate_replay_init_t)(f.base + f.init_off) : NULL;
                isolate_replay_timeout = (unsigned)timeout;
                isolate_replay_print_stack = (void (*)(void))dlsym(RTLD_DEFAULT, "__sanitizer_print_stack_trace");
                isolate_replay_acquire = (int (*)(void))dlsym(RTLD_DEFAULT, "__sanitizer_acquire_crash_state");
                ssize_t n = readlink("/proc/self/exe", isolate_replay_exe, sizeof isolate_replay_exe - 1);
                if (n > 0)
                    isolate_replay_exe[n] = 0;
                else   /* as ASan names the program when /proc/self/exe cannot be read */
                    snprintf(isolate_replay_exe, sizeof isolate_replay_exe, "%s", argv[0]);
                /* After a sanitizer's report (Die() calls it): the modules as they are then. */
                void (*set_death)(void (*)(void)) =
                    (void (*)(void (*)(void)))dlsym(RTLD_DEFAULT, "__sanitizer_set_death_callback");
                if (set_death)
                    set_death(isolate_replay_modules);
                main = isolate_replay_main;
            }
        }
        unsetenv(ENV_NAME);
        unsetenv("LD_PRELOAD");
        /* In place (the strings the kernel put on the stack): setenv() would allocate, and
         * ASan's allocator pays page faults for every size class it first serves. */
        static const char *const names[] = {"ASAN_OPTIONS", "LSAN_OPTIONS", "UBSAN_OPTIONS"};
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
            char *v = getenv(names[i]);
            size_t n = v ? strlen(v) : 0, k = sizeof RAW_FRAME_OPTIONS - 1;
            if (n >= k && !strcmp(v + n - k, RAW_FRAME_OPTIONS))
                memset(v + n - k, 0, k);
        }
    }
    return real(main, argc, argv, init, fini, rtld_fini, stack_end);
}
