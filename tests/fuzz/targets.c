/* The runner's test target: planted bugs chosen by the input's first bytes.
   Built with clang -fsanitize=fuzzer,address (libFuzzer) or afl-clang-fast (AFL++). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <dirent.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

static char *leaked;
static char *volatile kept;   /* stores the optimizer cannot drop (afl-clang-fast builds with -O3) */

static void escape(void) {
  /* Tries to write outside the sandbox; says what happened in ./escape.txt (the job's dir). */
  const char *paths[] = {ESCAPE_PATHS};
  FILE *rep = fopen("escape.txt", "w");
  for (size_t i = 0; i < sizeof paths / sizeof *paths; i++) {
    int fd = open(paths[i], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (rep) fprintf(rep, "%s %s\n", paths[i], fd >= 0 ? "written" : strerror(errno));
    if (fd >= 0) { (void)!write(fd, "escaped\n", 8); close(fd); }
  }
  /* And the network: the sandbox has only its own loopback. */
  int s = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(53)};
  a.sin_addr.s_addr = htonl(0x08080808);
  int c = s >= 0 ? connect(s, (struct sockaddr *)&a, sizeof a) : -1;
  if (rep) fprintf(rep, "net %s\n", c == 0 ? "connected" : strerror(errno));
  if (s >= 0) close(s);
#ifdef SHARE_PROBE
  /* A marker in the shared corpus named after this job (its working directory is
     OUT/jobs/<i>), then the markers it sees there. */
  char cwd[4096], marker[4200];
  if (getcwd(cwd, sizeof cwd)) {
    const char *base = strrchr(cwd, '/');
    snprintf(marker, sizeof marker, "%s/probe-job%s", SHARED_DIR, base ? base + 1 : cwd);
    int mfd = open(marker, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (mfd >= 0) { (void)!write(mfd, "m", 1); close(mfd); }
  }
  DIR *dir = opendir(SHARED_DIR);
  struct dirent *e;
  while (dir && (e = readdir(dir)))
    if (!strncmp(e->d_name, "probe-job", 9) && rep) fprintf(rep, "saw:%s yes\n", e->d_name);
  if (dir) closedir(dir);
#endif
#ifdef READ_PATHS
  /* What it can list (a shared corpus, the other jobs' directories). */
  const char *reads[] = {READ_PATHS};
  for (size_t i = 0; i < sizeof reads / sizeof *reads; i++) {
    int fd = open(reads[i], O_RDONLY | O_DIRECTORY);
    if (rep) fprintf(rep, "read:%s %s\n", reads[i], fd >= 0 ? "readable" : strerror(errno));
    if (fd >= 0) close(fd);
  }
#endif
  if (rep) fclose(rep);
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
#ifdef SAFE
  if (n < 3 || memcmp(d, "ESC", 3)) return 0;   /* only the escape attempt: nothing else to find */
#endif
  /* One planted bug per build (-DBUG_x), else all of them: libFuzzer finds any of these
     magic words in well under a second, so a test that wants one bug builds just that one. */
#if defined(BUG_OVERFLOW) || defined(ALL_BUGS)
  if (n >= 4 && !memcmp(d, "FUZZ", 4)) { char *p = malloc(4); p[n] = 1; free(p); }      /* heap overflow */
#endif
#if defined(BUG_LEAK) || defined(ALL_BUGS)
  if (n >= 4 && !memcmp(d, "LEAK", 4)) { leaked = malloc(64); memset(leaked, 1, 64); leaked = 0; }
#endif
#if defined(BUG_OOM) || defined(ALL_BUGS)
  /* 2 GiB: above -rss_limit_mb (libFuzzer's malloc limit), and ASan poisons only 256 MiB of shadow for it */
  if (n >= 4 && !memcmp(d, "OOMM", 4)) { volatile char *p = malloc((size_t)2 << 30); if (p) p[0] = 1; }
#endif
#if defined(BUG_BIGRSS) || defined(ALL_BUGS)
  if (n >= 4 && !memcmp(d, "BIGR", 4))   /* 2 GiB populated in one syscall: no engine check in between */
    mmap(0, (size_t)2 << 30, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
#endif
#if defined(BUG_HANG) || defined(ALL_BUGS)
  if (n >= 4 && !memcmp(d, "HANG", 4)) { for (volatile int i = 1; i; ) ; }
#endif
  if (n >= 3 && !memcmp(d, "ESC", 3)) escape();
  return 0;
}

#ifdef PLAIN_MAIN
#ifdef BYTE_BUG_LEAK
#include <sanitizer/lsan_interface.h>
#endif
/* Leaked blocks whose addresses stay nowhere (LeakSanitizer scans stacks and registers
   conservatively: a stale copy would hide the leak). */
__attribute__((noinline)) static void leak_some(void) {
  for (int i = 0; i < 8; i++) { char *p = malloc(64 + i); memset(p, 1, 64 + i); kept = p; }
  kept = 0;
}
__attribute__((noinline)) static void scrub(void) {
  volatile char b[8192];
  for (int i = 0; i < (int)sizeof b; i++) b[i] = 0;
}

int main(int argc, char **argv) {
  uint8_t buf[256]; FILE *f = fopen(argv[1], "rb"); if (!f) return 1;
  size_t n = fread(buf, 1, sizeof buf, f); fclose(f);
#if defined(BYTE_BUG_HANG) || defined(BYTE_BUG_OOM) || defined(BYTE_BUG_LEAK)
  /* One bug per build, for AFL++, on a first byte other than the seed's 'A': 'H' hangs,
     'M' grows until killed (one byte: havoc finds it in a few thousand execs; each costs a
     timeout or a cgroup fill, so not every input), any other byte leaks (LeakSanitizer's
     check at every exit makes each exec slow: most mutations must hit it). */
#if defined(BYTE_BUG_HANG)
  if (n >= 1 && buf[0] == 'H') for (volatile int i = 1; i; ) ;
#elif defined(BYTE_BUG_OOM)
  if (n >= 1 && buf[0] == 'M') for (;;) { char *p = malloc(16 << 20); if (p) memset(p, 1, 16 << 20); kept = p; }
#else
  /* afl-fuzz's forkserver children do not run LeakSanitizer's at-exit check: a harness asks
     for it, as AFL++'s __AFL_LEAK_CHECK() does (exit 23, the LSAN_OPTIONS exitcode afl-fuzz
     counts as a crash). */
  if (n >= 1 && buf[0] != 'A') { leak_some(); scrub(); if (__lsan_do_recoverable_leak_check()) _exit(23); }
#endif
#endif
  if (n >= 1 && buf[0] == 'C') abort();   /* one byte: AFL++'s havoc finds it in a few thousand execs */
  return LLVMFuzzerTestOneInput(buf, n);
}
#endif
