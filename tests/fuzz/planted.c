/* A libFuzzer target with planted bugs, one per two-byte prefix (tests/fuzz). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <unistd.h>

static volatile int sink;

__attribute__((noinline)) static void heap_overflow_write(const uint8_t *d, size_t n) {
    char *p = malloc(8);
    p[8] = (char)n;                      /* one byte past the end */
    sink = p[0];
    free(p);
}

__attribute__((noinline)) static void use_after_free_read(void) {
    int *p = malloc(sizeof(int) * 4);
    p[1] = 7;
    free(p);
    sink = p[1];                         /* 4-byte read of freed memory */
}

__attribute__((noinline)) static void null_write(int *p) {
    *p = 1;
}

__attribute__((noinline)) static int recurse_forever(int depth) {
    volatile char buf[256];
    buf[0] = (char)depth;
    return recurse_forever(depth + 1) + buf[0];
}

__attribute__((noinline)) static int walk(const char *s, int depth, int limit) {
    /* recursion to a depth given by the input, then an out-of-bounds read */
    if (depth < limit)
        return walk(s, depth + 1, limit) + 1;
    char *p = malloc(4);
    memset(p, 0, 4);
    int v = p[4];
    free(p);
    return v;
}

__attribute__((noinline)) static int add_overflow(int a, int b) {
    return a + b;
}

__attribute__((noinline)) static void leak(size_t n) {
    char *p = malloc(64 + n);
    p[0] = 1;
    sink = p[0];
    p = 0;
}

__attribute__((noinline)) static void out_of_memory(void) {
    /* grows until libFuzzer's -rss_limit_mb thread (checks once a second) reports it: at
       most ~640 MB/s, so that one second past the limit stays below the replay's cgroup
       (limit + 1 GiB; unthrottled, a memset loop reached it first about one time in four) */
    for (;;) {
        char *p = malloc(64 << 20);
        memset(p, 1, 64 << 20);
        sink = p[4096];
        usleep(100000);
    }
}

__attribute__((noinline)) static void hang(void) {
    for (;;)
        sink = (int)((unsigned)sink + 1u);
}

static int calls;

__attribute__((noinline)) static void flaky_abort(void) {
    if (++calls == 3)    /* only on the third call in one process */
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
    if (n < 2)
        return 0;
    if (d[0] == 'H' && d[1] == 'W') heap_overflow_write(d, n);
    if (d[0] == 'U' && d[1] == 'R') use_after_free_read();
    if (d[0] == 'N' && d[1] == 'D') null_write((int *)(uintptr_t)(n > 1000 ? 8 : 0));
    if (d[0] == 'S' && d[1] == 'O') sink = recurse_forever(0);
    if (d[0] == 'A' && d[1] == 'B') abort();
    if (d[0] == 'I' && d[1] == 'O') sink = add_overflow(INT_MAX, (int)n);
    if (d[0] == 'L' && d[1] == 'K') leak(n);
    if (d[0] == 'O' && d[1] == 'M') out_of_memory();
    if (d[0] == 'T' && d[1] == 'O') hang();
    if (d[0] == 'R' && d[1] == 'C') sink = walk((const char *)d, 0, n);
    if (d[0] == 'F' && d[1] == 'L') flaky_abort();
    return 0;
}
